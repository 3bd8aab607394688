"""Axis order of a reconstructed tomogram: which array axis is the beam and which the tilt axis.

The factory's convention is ``(Z, Y, X)``: Z along the beam at 0° tilt, **Y the tilt axis**
(:mod:`factory.tomo.geometry`). A network trained on the factory's data slices along those axes
and the field-of-view cylinder of normalisation runs around Y, so a real tomogram stored in
another order must be transposed first. Files from other software often are: IMOD's ``tilt``
writes sections perpendicular to the tilt axis, an array ``(Y, Z, X)``, until ``trimvol -rx``
(or ``clip rotx``) turns them into ``(Z, Y, X)``; a tilt axis along the file's X gives
``(Z, X, Y)``.

An axis order is written as the three letters of the convention in the order of the file's array
axes: ``"ZYX"`` (the factory's own files), ``"YZX"`` (IMOD before ``-rx``), and so on.

:func:`detect_axes` infers it from the volume alone, from two signatures of single-axis
tomography (each measured on a block-averaged copy of at most 96 voxels per axis):

1. **Missing wedge** (a grid: tilts within ±60-70°). No projection samples the Fourier
   directions near the beam, so a narrow cone around the beam axis holds almost no power; the
   empty wedge extends along the tilt axis' frequency, which tells the tilt axis from the third.
2. **Cylinder** (a capillary, full rotation). The glass wall, the medium and a masked field of
   view are the same in every plane across the tilt axis and circularly symmetric about it: the
   mean along the tilt axis keeps a ring pattern about the plane's centre, the mean along any
   other axis stripes. The beam direction of a full rotation is arbitrary; the other two axes keep
   their file order. (A grid tomogram of one centred cell shows a weaker ring along the beam,
   which is why the wedge is tested first.)

Neither clear (a thin volume, a sample with neither, an isotropic test object): no guess, and
callers keep the file's order (``"ZYX"``) and say so.

References: Kak & Slaney, *Principles of Computerized Tomographic Imaging*, ch. 3 (the Fourier
slice theorem); Kremer, Mastronarde & McIntosh (1996) J. Struct. Biol. 116:71 (IMOD).
"""

from __future__ import annotations

import itertools
from dataclasses import dataclass

import numpy as np

from factory.errors import UserError

CONVENTION = "ZYX"
ORDERS = tuple("".join(p) for p in itertools.permutations(CONVENTION))
AUTO = "auto"

_MAX_SIDE = 96  # detection runs on a block-averaged copy at most this large per axis
_MIN_SIDE = 24  # below this (per axis) no detection is tried
_CONE_DEG = 10.0  # half-angle of the cone / wedge probed around the beam axis
_SHELL = (0.15, 0.45)  # |k| range of the probed Fourier shell, cycles per (binned) voxel
_WEDGE_MAX = 0.35  # beam cone power / shell power below this: a missing wedge
_WEDGE_MARGIN = 0.3  # ... and below this fraction of the other two axes' cone power
_TILT_MARGIN = 0.6  # wedge extent along the tilt axis / along the third axis: at most this
_CYL_MIN = 0.05  # circularly symmetric variance of the mean along the cylinder axis: at least
_CYL_MARGIN = 4.0  # ... and this many times that of any other axis


@dataclass(frozen=True)
class AxesGuess:
    """What :func:`detect_axes` found: ``axes`` (None: no clear signature), the signature used
    (``"missing wedge"``, ``"missing wedge (beam only)"``, ``"cylinder"`` or ``"none"``) and the
    scores behind it."""

    axes: str | None
    signature: str
    scores: dict


def parse_axes(text: str, param: str = "axes") -> str:
    """``"auto"`` or one of :data:`ORDERS` (case-insensitive); :class:`UserError` otherwise."""
    value = str(text).strip()
    if value.lower() == AUTO:
        return AUTO
    if value.upper() in ORDERS:
        return value.upper()
    raise UserError(
        f"expected 'auto' or an order of the letters Z, Y, X (the file's array axes as beam Z, "
        f"tilt axis Y and X, e.g. ZYX or YZX), got {text!r}",
        param=param,
    )


def _permutation(axes: str) -> tuple[int, int, int]:
    """File axis holding each of Z, Y, X."""
    return tuple(axes.index(c) for c in CONVENTION)


def to_zyx(volume: np.ndarray, axes: str) -> np.ndarray:
    """View of a ``volume`` stored in order ``axes`` (its last three axes) as ``(..., Z, Y, X)``."""
    lead = volume.ndim - 3
    perm = tuple(range(lead)) + tuple(lead + p for p in _permutation(axes))
    return volume.transpose(perm)


def from_zyx(volume: np.ndarray, axes: str) -> np.ndarray:
    """Inverse of :func:`to_zyx`: a ``(..., Z, Y, X)`` array back in the file's order ``axes``."""
    lead = volume.ndim - 3
    inverse = tuple(lead + int(i) for i in np.argsort(_permutation(axes)))
    return volume.transpose(tuple(range(lead)) + inverse)


def file_shape(zyx_shape, axes: str) -> list[int]:
    """The shape, in the file's order ``axes``, of a ``(Z, Y, X)`` shape."""
    return [int(zyx_shape[CONVENTION.index(c)]) for c in axes]


def _binned(volume: np.ndarray) -> np.ndarray:
    """Block means (float64) down to at most :data:`_MAX_SIDE` voxels per axis, robustly scaled:
    clipped at the 0.5 / 99.5 percentiles (fiducials, glass), zero mean, unit variance."""
    f = [max(1, -(-n // _MAX_SIDE)) for n in volume.shape]
    m = [n // k for n, k in zip(volume.shape, f, strict=True)]
    v = np.asarray(volume[: m[0] * f[0], : m[1] * f[1], : m[2] * f[2]], dtype=np.float32)
    v = v.reshape(m[0], f[0], m[1], f[1], m[2], f[2]).mean(axis=(1, 3, 5), dtype=np.float64)
    lo, hi = np.percentile(v, [0.5, 99.5])
    v = np.clip(v, lo, hi)
    sd = v.std()
    return (v - v.mean()) / sd if sd > 0 else v - v.mean()


def _power_spectrum(v: np.ndarray) -> tuple[np.ndarray, list[np.ndarray], np.ndarray]:
    """``(|FFT|² of the Hann-windowed v, per-axis frequency grids, |k|)``, cycles per voxel."""
    w = 1.0
    for ax, n in enumerate(v.shape):
        shape = [1, 1, 1]
        shape[ax] = n
        w = w * np.hanning(n).reshape(shape)
    p = np.abs(np.fft.fftn(v * w)) ** 2
    k = np.meshgrid(*[np.fft.fftfreq(n) for n in v.shape], indexing="ij")
    return p, k, np.sqrt(k[0] ** 2 + k[1] ** 2 + k[2] ** 2)


def wedge_scores(v: np.ndarray) -> tuple[list[float], dict[tuple[int, int], float]]:
    """Missing-wedge signature of a scaled volume ``v`` (axes as stored).

    Returns ``(cone, extent)``: ``cone[a]`` is the mean power in the cone of half-angle
    :data:`_CONE_DEG` around frequency axis ``a``, over the shell's mean (about 1 without a
    wedge, near 0 around the beam of a grid tomogram); ``extent[(b, t)]`` the mean power, over the
    shell's, of the wedge around beam ``b`` that extends along ``t`` (``|k_o| < |k_b| tan α``, ``o``
    the third axis) less the part shared with the one that extends along ``o``: inside the missing
    wedge, near 0, when ``t`` is the tilt axis; partly sampled when ``o`` is. (A narrow wedge near
    the beam, so that an in-plane rotation of the tilt axis by a few degrees does not matter.)
    """
    p, k, r = _power_spectrum(v)
    shell = (r > _SHELL[0]) & (r < _SHELL[1])
    base = float(p[shell].mean())
    tan = np.tan(np.radians(_CONE_DEG))
    cone = []
    for a in range(3):
        c = shell & (np.abs(k[a]) > r * np.cos(np.radians(_CONE_DEG)))
        cone.append(float(p[c].mean()) / base if c.any() else 1.0)
    extent = {}
    for b, t in itertools.permutations(range(3), 2):
        o = 3 - b - t
        region = shell & (np.abs(k[o]) < np.abs(k[b]) * tan) & ~(np.abs(k[t]) < np.abs(k[b]) * tan)
        extent[(b, t)] = float(p[region].mean()) / base if region.any() else 1.0
    return cone, extent


def cylinder_scores(v: np.ndarray) -> list[float]:
    """Per axis ``a`` (as stored) of a scaled volume ``v``: the variance of the circularly
    symmetric part of the mean along ``a`` (its average over rings about the plane's centre,
    where the rotation axis of a reconstruction lies), as a fraction of ``v``'s variance. Large
    only along the axis of a capillary or a masked field of view."""
    out = []
    for a in range(3):
        mean = v.mean(axis=a)
        i, j = np.indices(mean.shape)
        ring = np.hypot(i - (mean.shape[0] - 1) / 2, j - (mean.shape[1] - 1) / 2).astype(int)
        counts = np.bincount(ring.ravel())
        profile = np.bincount(ring.ravel(), mean.ravel()) / np.maximum(counts, 1)
        out.append(float(((profile[ring] - mean.mean()) ** 2).mean()))
    return out


def _order(beam: int, tilt: int) -> str:
    letters = ["X"] * 3
    letters[beam], letters[tilt] = "Z", "Y"
    return "".join(letters)


def detect_axes(volume: np.ndarray) -> AxesGuess:
    """Infer the axis order (:data:`ORDERS`) of a reconstructed ``volume`` from its missing wedge
    or its cylinder (module docstring); ``axes`` None when neither signature is clear.

    A clear wedge whose extent does not single out the tilt axis (small volumes, where the
    window's leakage fills the wedge) gives the beam only, and the first of the other two file
    axes is taken as the tilt axis: right for both ``ZYX`` and IMOD's ``YZX``.
    """
    if volume.ndim != 3 or min(volume.shape) < _MIN_SIDE:
        return AxesGuess(None, "none", {"reason": f"shape {tuple(volume.shape)} too small"})
    v = _binned(volume)
    if not v.any():
        return AxesGuess(None, "none", {"reason": "constant volume"})
    cone, extent = wedge_scores(v)
    scores: dict = {"cone": [round(c, 4) for c in cone]}
    beam = int(np.argmin(cone))
    others = [a for a in range(3) if a != beam]
    if cone[beam] < _WEDGE_MAX and cone[beam] < _WEDGE_MARGIN * min(cone[a] for a in others):
        e = [extent[(beam, t)] for t in others]
        scores["extent"] = {_order(beam, t): round(x, 4) for t, x in zip(others, e, strict=True)}
        if min(e) <= _TILT_MARGIN * max(e):
            return AxesGuess(_order(beam, others[int(np.argmin(e))]), "missing wedge", scores)
        return AxesGuess(_order(beam, others[0]), "missing wedge (beam only)", scores)
    cyl = cylinder_scores(v)
    scores["cylinder"] = [round(c, 4) for c in cyl]
    tilt = int(np.argmax(cyl))
    runner_up = max(c for a, c in enumerate(cyl) if a != tilt)
    if cyl[tilt] >= _CYL_MIN and cyl[tilt] >= _CYL_MARGIN * runner_up:
        beam = min(a for a in range(3) if a != tilt)  # full rotation: keep the file's order
        return AxesGuess(_order(beam, tilt), "cylinder", scores)
    return AxesGuess(None, "none", scores)


def resolve_axes(volume: np.ndarray, axes: str, param: str = "axes") -> tuple[str, dict]:
    """``(axis order, record)`` for ``axes`` as given (``"auto"`` or an order): ``"auto"`` runs
    :func:`detect_axes` and falls back to ``"ZYX"`` without a clear signature. The record goes
    into the caller's report: ``given``, ``axes``, ``source`` (``"given"``, ``"detected"`` or
    ``"default"``) and, when detected, the ``signature`` and ``scores``."""
    given = parse_axes(axes, param)
    if given != AUTO:
        return given, {"given": given, "axes": given, "source": "given"}
    guess = detect_axes(volume)
    return guess.axes or CONVENTION, {
        "given": AUTO,
        "axes": guess.axes or CONVENTION,
        "source": "detected" if guess.axes else "default",
        "signature": guess.signature,
        "scores": guess.scores,
    }


def describe(record: dict) -> str:
    """One short phrase for a log line, e.g. ``"axes YZX (detected: cylinder)"``."""
    how = {
        "detected": f"detected: {record.get('signature')}",
        "default": "default: no missing wedge or cylinder found",
    }.get(record["source"], record["source"])
    return f"axes {record['axes']} ({how})"
