"""The sample mount in the projections: a capillary beyond the grid, a grid's support film and bars.

All three are added to the line integrals analytically (they are larger than the field of view):

* **capillary**: the phantom holds the glass and medium inside the grid only. A capillary wider
  than the grid still absorbs outside it (interior tomography), so the projections get the exact
  line integrals of the whole capillary (two discs, Kak & Slaney 1988 §3.1 via
  :func:`factory.tomo.analytic.ellipse_sinogram`) minus the projection of its voxelised (Z, X)
  cross-section (what the grid already holds). Uniform along Y, so both are one row per angle.
* **film**: a flat amorphous-carbon layer of thickness ``t`` in the slab plane: ``t µ_C / |cos θ|``.
* **bars**: two metal bars parallel to the tilt axis in the slab plane, at ``edge_distance`` and
  ``hole - edge_distance`` from the axis on either side; their chord lengths are exact for
  rectangles (slab intersection), averaged over 4 sub-positions per detector pixel.

Detector convention of :mod:`factory.tomo`: pixel ``j`` at ``τ = j - (det - 1)/2`` (voxels) sees the
ray ``τ·n + u·r`` with ``n = (-sin θ, cos θ)`` and ``r = (cos θ, sin θ)`` in (z, x).
"""

from __future__ import annotations

import numpy as np
import torch

from factory.phantom.config import GridMount
from factory.phantom.mount import CapillaryPlan, capillary_slice

#: Sub-positions per detector pixel for the bars' partial-pixel coverage.
_BAR_SUBSAMPLES = 4
#: Cap of the flat layers' 1/|cos θ| (at 89.5°), so an edge-on film stays finite.
_MAX_INV_COS = 1.0 / np.cos(np.deg2rad(89.5))


def capillary_exterior(
    plan: CapillaryPlan, shape, projector, angles_deg: np.ndarray, clip: torch.Tensor | None
) -> torch.Tensor:
    """Line integrals (LAC·voxels) of the capillary outside what the grid holds, ``(n, 1, det)``.

    Parameters
    ----------
    plan : CapillaryPlan
        The drawn capillary (voxels, 1/µm).
    shape : tuple of int
        The grid (Z, Y, X).
    projector : factory.tomo.ParallelProjector
        The projector of the true angles (det = X).
    angles_deg : numpy.ndarray
        ``(n,)`` true angles, degrees.
    clip : torch.Tensor or None
        The (Z, 1, X) field-of-view mask the volume was clipped with, if any.
    """
    from factory.tomo.analytic import ellipse_sinogram

    zc, xc = plan.axis_zx
    ro, ri = plan.outer_radius_vox, plan.inner_radius_vox
    discs = np.array(
        [
            [plan.glass_lac, zc, xc, ro, ro, 0.0],
            [plan.medium_lac - plan.glass_lac, zc, xc, ri, ri, 0.0],
        ]
    )
    exact = ellipse_sinogram(discs, angles_deg, det_count=shape[2])  # (n, det)
    section = capillary_slice(plan, shape, device=projector_device(projector))[:, None, :]
    if clip is not None:
        section = section * clip
    inside = projector.forward(section)  # (n, 1, det)
    exact_t = torch.as_tensor(exact, dtype=inside.dtype, device=inside.device)
    return exact_t[:, None, :] - inside


def projector_device(projector) -> torch.device:
    """The device of a :class:`~factory.tomo.ParallelProjector` (CPU if it does not say)."""
    return torch.device(getattr(projector, "device", "cpu"))


def draw_grid_mount(mount: GridMount, rng: np.random.Generator, energy_ev: float) -> dict:
    """Draw the film and bars of a grid mount (µm, 1/µm), in this order; JSON-safe."""
    from factory.materials import lac

    out: dict = {"kind": "grid"}
    if mount.film.enabled:
        t_nm = float(mount.film.thickness_nm.sample(rng))
        out["film"] = {
            "material": "amorphous_carbon",
            "thickness_nm": t_nm,
            "lac_per_um": lac("amorphous_carbon", energy_ev),
        }
    if mount.bars.enabled:
        b = mount.bars
        out["bars"] = {
            "material": b.material,
            "lac_per_um": lac(b.material, energy_ev),
            "hole_um": float(b.hole_um.sample(rng)),
            "width_um": float(b.width_um.sample(rng)),
            "thickness_um": float(b.thickness_um.sample(rng)),
            "edge_distance_um": float(b.edge_distance_um.sample(rng)),
            "near_side": int(rng.choice([-1, 1])),  # the nearest bar is at +x or -x
        }
    return out


def film_optical_depth(film: dict, angles_deg: np.ndarray) -> np.ndarray:
    """``(n,)`` optical depth of a flat film, ``t µ / |cos θ|`` (capped at 89.5°)."""
    inv_cos = np.minimum(1.0 / np.abs(np.cos(np.deg2rad(angles_deg))), _MAX_INV_COS)
    return film["thickness_nm"] * 1e-3 * film["lac_per_um"] * inv_cos


def _box_chord(tau, theta, lo, hi) -> np.ndarray:
    """Chord length of the rays ``(θ, τ)`` through the box ``lo <= (z, x) <= hi`` (same units).

    ``tau`` (1, m) detector positions, ``theta`` (n, 1) radians; exact slab intersection."""
    tau, theta = np.broadcast_arrays(tau, theta)
    n_vec = (-np.sin(theta), np.cos(theta))
    r_vec = (np.cos(theta), np.sin(theta))
    u_lo = np.full(tau.shape, -np.inf)
    u_hi = np.full(tau.shape, np.inf)
    for k in range(2):
        p0 = tau * n_vec[k]
        rk = r_vec[k]
        par = np.abs(rk) < 1e-12
        with np.errstate(divide="ignore", invalid="ignore"):
            a, b = (lo[k] - p0) / rk, (hi[k] - p0) / rk
        a, b = np.where(par, -np.inf, np.minimum(a, b)), np.where(par, np.inf, np.maximum(a, b))
        outside = par & ((p0 < lo[k]) | (p0 > hi[k]))
        a, b = np.where(outside, np.inf, a), np.where(outside, -np.inf, b)
        u_lo, u_hi = np.maximum(u_lo, a), np.minimum(u_hi, b)
    return np.clip(u_hi - u_lo, 0.0, None)


def bars_optical_depth(bars: dict, angles_deg: np.ndarray, det: int, vox_um: float) -> np.ndarray:
    """``(n, det)`` optical depth of the two grid bars (uniform along Y), at the given angles."""
    s = _BAR_SUBSAMPLES
    sub = (np.arange(s) + 0.5) / s - 0.5
    tau = ((np.arange(det) - (det - 1) / 2.0)[:, None] + sub[None, :]).reshape(1, -1) * vox_um
    theta = np.deg2rad(np.asarray(angles_deg, dtype=np.float64))[:, None]
    half_t, w, d = bars["thickness_um"] / 2.0, bars["width_um"], bars["edge_distance_um"]
    side = bars["near_side"]
    chord = np.zeros((theta.shape[0], tau.shape[1]))
    for x0 in (side * d, -side * (bars["hole_um"] - d)):  # inner edges of the two bars
        x1 = x0 + np.sign(x0) * w
        lo, hi = (-half_t, min(x0, x1)), (half_t, max(x0, x1))
        chord += _box_chord(tau, theta, lo, hi)
    return bars["lac_per_um"] * chord.reshape(theta.shape[0], det, s).mean(axis=2)
