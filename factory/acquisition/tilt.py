"""Tilt schemes: range (symmetric or shifted), step, dropped projections, angle errors, order.

The nominal angles are what the reconstruction assumes; the true angles (nominal + error) are where
the projections were actually taken. Projections are stored sorted by nominal angle; ``series_pos``
says when each one was acquired (dose-symmetric order: Hagen, Wim J. H. et al., "Implementation of a
cryo-electron tomography tilt-scheme optimized for high resolution subtomogram averaging",
J. Struct. Biol. 197 (2017) 191–198).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from factory.acquisition.config import TiltConfig


@dataclass(frozen=True)
class TiltScheme:
    """One drawn tilt series (angles in degrees, sorted by nominal angle).

    Attributes
    ----------
    nominal_deg : numpy.ndarray, float64, (n,)
        Nominal angles of the kept projections (used for reconstruction).
    true_deg : numpy.ndarray, float64, (n,)
        Angles the projections were taken at (nominal + error).
    series_pos : numpy.ndarray, int64, (n,)
        Position of each projection in the acquisition order (0 = first).
    range_deg : float
        Drawn total range θ.
    shift_deg : float
        Drawn shift of the range (0: not applied).
    planned_deg : numpy.ndarray, float64, (m,)
        Every nominal angle before dropping.
    dropped : numpy.ndarray, int64
        Indices into ``planned_deg`` of the dropped projections.
    order : str
        Acquisition order: ``sequential`` or ``dose-symmetric``.
    bad : numpy.ndarray of int64 or None
        Indices into ``nominal_deg`` of the bad projections (None: off).
    """

    nominal_deg: np.ndarray
    true_deg: np.ndarray
    series_pos: np.ndarray
    range_deg: float
    shift_deg: float
    planned_deg: np.ndarray
    dropped: np.ndarray
    order: str
    bad: np.ndarray | None = None  # indices into nominal_deg of the bad projections (None: off)

    @property
    def n(self) -> int:
        return int(self.nominal_deg.size)

    @property
    def error_deg(self) -> np.ndarray:
        return self.true_deg - self.nominal_deg

    @property
    def sequence(self) -> np.ndarray:
        """Indices of the projections in acquisition order."""
        return np.argsort(self.series_pos, kind="stable")

    def to_meta(self) -> dict:
        return {
            "range_deg": float(self.range_deg),
            "shift_deg": float(self.shift_deg),
            "step_deg": float(self.planned_deg[1] - self.planned_deg[0])
            if self.planned_deg.size > 1
            else None,
            "n_planned": int(self.planned_deg.size),
            "n_projections": self.n,
            "order": self.order,
            "nominal_deg": self.nominal_deg.tolist(),
            "true_deg": self.true_deg.tolist(),
            "angle_error_deg": self.error_deg.tolist(),
            "series_pos": self.series_pos.tolist(),
            "dropped_indices": self.dropped.tolist(),
            "dropped_deg": self.planned_deg[self.dropped].tolist(),
            **({} if self.bad is None else {"bad_indices": self.bad.tolist()}),
        }


def planned_angles(range_deg: float, step_deg: float, shift_deg: float = 0.0) -> np.ndarray:
    """``-θ/2 + shift + k·step`` for ``k = 0 .. floor(θ/step) − 1`` (end excluded), float64."""
    n = max(1, int(np.floor(range_deg / step_deg + 1e-9)))
    return -0.5 * range_deg + shift_deg + step_deg * np.arange(n, dtype=np.float64)


def dose_symmetric_order(angles_deg: np.ndarray, group_size: int = 1) -> np.ndarray:
    """Acquisition positions for Hagen's dose-symmetric scheme.

    Starts at the angle closest to 0°, then alternates ``group_size`` projections on the positive
    side and on the negative side, moving outwards; when one side is exhausted the other continues.

    Returns
    -------
    pos : numpy.ndarray, int64, (n,)
        ``pos[i]`` is the acquisition position of ``angles_deg[i]``.
    """
    a = np.asarray(angles_deg, dtype=np.float64)
    start = int(np.argmin(np.abs(a)))
    pos_side = [i for i in np.argsort(a, kind="stable") if a[i] > a[start]]
    neg_side = [i for i in np.argsort(-a, kind="stable") if a[i] < a[start]]
    seq = [start]
    sides = [pos_side, neg_side]
    turn = 0
    while pos_side or neg_side:
        side = sides[turn] if sides[turn] else sides[1 - turn]
        take, side[:] = side[:group_size], side[group_size:]
        seq.extend(take)
        turn = 1 - turn
    seq += [i for i in range(a.size) if i not in set(seq)]  # equal angles, if any
    pos = np.empty(a.size, dtype=np.int64)
    pos[np.asarray(seq, dtype=np.int64)] = np.arange(a.size)
    return pos


def acquisition_order(angles_deg: np.ndarray, order: str, group_size: int = 1) -> np.ndarray:
    """Position of each projection in the acquisition order: ``sequential`` (low to high angle, as
    ``angles_deg`` is sorted) or ``dose-symmetric`` (:func:`dose_symmetric_order`)."""
    if order == "sequential":
        return np.arange(np.asarray(angles_deg).size, dtype=np.int64)
    return dose_symmetric_order(angles_deg, group_size)


def draw_tilt_scheme(cfg: TiltConfig, rng: np.random.Generator) -> TiltScheme:
    """Draw a tilt series from ``cfg`` with ``rng`` (draw order: range, shift, drops, errors, then
    bad projections when ``bad_fraction`` can be > 0)."""
    range_deg = float(cfg.range_deg.sample(rng))
    shift = float(cfg.shift_deg.sample(rng))
    if range_deg >= cfg.shift_below_deg:
        shift = 0.0
    planned = planned_angles(range_deg, cfg.step_deg, shift)
    frac = float(cfg.drop_fraction.sample(rng))
    n_drop = min(int(planned.size * frac), planned.size - 1)
    dropped = (
        np.sort(rng.choice(planned.size, size=n_drop, replace=False))
        if n_drop
        else np.zeros(0, dtype=np.int64)
    )
    keep = np.setdiff1d(np.arange(planned.size), dropped)
    nominal = planned[keep]
    error = cfg.angle_error_deg.sample(rng, size=nominal.size)
    bad = None
    if cfg.bad_fraction.bounds[1] > 0:
        n_bad = int(nominal.size * float(cfg.bad_fraction.sample(rng)))
        bad = np.sort(rng.choice(nominal.size, size=n_bad, replace=False)).astype(np.int64)
        error[bad] += cfg.bad_error_deg.sample(rng, size=n_bad)
    return TiltScheme(
        nominal_deg=nominal,
        true_deg=nominal + error,
        series_pos=acquisition_order(nominal, cfg.order, cfg.group_size),
        range_deg=range_deg,
        shift_deg=shift,
        planned_deg=planned,
        dropped=dropped.astype(np.int64),
        order=cfg.order,
        bad=bad,
    )
