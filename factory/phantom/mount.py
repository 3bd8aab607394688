"""The capillary mount in the phantom: glass wall, medium in the lumen, cells packed along the axis.

A capillary is a cylinder along the tilt axis Y (the XM-2 geometry: the capillary is the rotation
axis), so its cross-section is one (Z, X) annulus repeated on every Y row: glass between the outer
radius and the lumen radius, medium (water ice plus a buffer absorption) in the lumen wherever no
cell is. Cells are bounded by spheres (:class:`~factory.phantom.plan.CellPlan.bound`) and placed
end to end along Y, each at a uniform point of the lumen's cross-section, at least a gap apart.

Draw order (the phantom's ``mount`` stream, :class:`factory.rng.PhantomStreams`): outer diameter,
wall thickness, medium absorption, axis offset (Z, X); during the layout (the ``layout`` stream,
after the two jitters) one cross-section point and one spacing per cell. Every drawn value is rounded once (4 decimals) so that the recorded meta reproduces the
painted geometry exactly (the acquisition rebuilds the capillary from it).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
import torch

import schemas
from factory.phantom.config import CapillaryMount


@dataclass(frozen=True)
class CapillaryPlan:
    """One drawn capillary, in voxels of the grid unless a name says otherwise.

    ``axis_zx`` is the offset of the capillary axis from the rotation axis (the grid centre
    ``((Z-1)/2, (X-1)/2)``), (z, x); LACs in 1/µm.
    """

    outer_radius_vox: float
    wall_vox: float
    axis_zx: tuple[float, float]
    glass_lac: float
    medium_lac: float
    medium_extra_lac: float
    voxel_nm: float

    @property
    def inner_radius_vox(self) -> float:
        return self.outer_radius_vox - self.wall_vox

    def to_meta(self) -> dict:
        um = self.voxel_nm * 1e-3
        return {
            "kind": "capillary",
            "outer_diameter_vox": round(2 * self.outer_radius_vox, 4),
            "outer_diameter_um": round(2 * self.outer_radius_vox * um, 4),
            "wall_thickness_vox": self.wall_vox,
            "wall_thickness_um": round(self.wall_vox * um, 4),
            "axis_offset_zx_vox": list(self.axis_zx),
            "glass_lac_per_um": self.glass_lac,
            "medium_lac_per_um": self.medium_lac,
            "medium_extra_lac_per_um": self.medium_extra_lac,
        }

    @classmethod
    def from_meta(cls, meta: dict, voxel_nm: float) -> CapillaryPlan:
        """Rebuild the plan from :meth:`to_meta` (used by the acquisition stage)."""
        return cls(
            outer_radius_vox=meta["outer_diameter_vox"] / 2.0,
            wall_vox=meta["wall_thickness_vox"],
            axis_zx=tuple(meta["axis_offset_zx_vox"]),
            glass_lac=meta["glass_lac_per_um"],
            medium_lac=meta["medium_lac_per_um"],
            medium_extra_lac=meta["medium_extra_lac_per_um"],
            voxel_nm=voxel_nm,
        )


def _r4(x: float) -> float:
    return round(float(x), 4)


def draw_capillary(
    mount: CapillaryMount, rng: np.random.Generator, shape, voxel_nm: float, energy_ev: float
) -> CapillaryPlan:
    """Draw a capillary for a grid of ``shape`` (Z, Y, X) at ``voxel_nm`` and ``energy_ev``.

    Glass: borosilicate, medium: water ice (both xraylib at ``energy_ev``, :mod:`factory.materials`)
    plus the drawn buffer absorption ``medium_extra_lac_per_um``.
    """
    from factory.materials import lac

    outer = _r4(mount.outer_diameter_fov.sample(rng) * shape[2] / 2.0)
    wall = _r4(mount.wall_thickness_um.sample(rng) * 1e3 / voxel_nm)
    extra = _r4(mount.medium_extra_lac_per_um.sample(rng))
    axis = (_r4(mount.axis_offset_vox.sample(rng)), _r4(mount.axis_offset_vox.sample(rng)))
    return CapillaryPlan(
        outer_radius_vox=outer,
        wall_vox=min(wall, _r4(outer - 0.5)),
        axis_zx=axis,
        glass_lac=round(lac("borosilicate_glass", energy_ev), 6),
        medium_lac=round(lac("water_ice", energy_ev) + extra, 6),
        medium_extra_lac=extra,
        voxel_nm=float(voxel_nm),
    )


def capillary_masks(plan: CapillaryPlan, shape, device=None) -> tuple[torch.Tensor, torch.Tensor]:
    """Boolean (Z, X) masks of the glass ring and of the lumen (voxel centres), on ``device``."""
    nz, _, nx = shape
    z = torch.arange(nz, dtype=torch.float64, device=device) - ((nz - 1) / 2.0 + plan.axis_zx[0])
    x = torch.arange(nx, dtype=torch.float64, device=device) - ((nx - 1) / 2.0 + plan.axis_zx[1])
    r2 = z[:, None] ** 2 + x[None, :] ** 2
    lumen = r2 <= plan.inner_radius_vox**2
    ring = (r2 <= plan.outer_radius_vox**2) & ~lumen
    return ring, lumen


def capillary_slice(plan: CapillaryPlan, shape, device=None) -> torch.Tensor:
    """float32 (Z, X) LAC (1/µm) of the empty capillary: glass in the ring, medium in the lumen."""
    ring, lumen = capillary_masks(plan, shape, device)
    out = torch.zeros(ring.shape, dtype=torch.float32, device=device)
    out.masked_fill_(ring, plan.glass_lac).masked_fill_(lumen, plan.medium_lac)
    return out


def paint_capillary(
    plan: CapillaryPlan, lac: torch.Tensor, labels: torch.Tensor
) -> tuple[int, int]:
    """Write glass and medium into ``lac`` (Z, Y, X, 1/µm) and ``labels`` (uint8, full table)
    wherever no cell is (label 0). Returns the (glass, medium) voxel counts."""
    ring, lumen = capillary_masks(plan, tuple(lac.shape), lac.device)
    free = labels == schemas.BACKGROUND
    glass = free & ring[:, None, :]
    medium = free & lumen[:, None, :]
    lac.masked_fill_(glass, plan.glass_lac).masked_fill_(medium, plan.medium_lac)
    labels.masked_fill_(glass, schemas.CAPILLARY).masked_fill_(medium, schemas.MEDIUM)
    return int(glass.sum()), int(medium.sum())


def _in_grid(centre: np.ndarray, bound: float, shape) -> bool:
    """True if the bounding box of a ball meets the grid on every axis (cut cells are kept)."""
    hi = np.asarray(shape, float) - 1.0
    return bool(np.all(centre + bound >= 0.0) and np.all(centre - bound <= hi))


def layout_in_capillary(
    bounds: list[float],
    plan: CapillaryPlan,
    shape,
    rng: np.random.Generator,
    *,
    gap: float,
    spacing,
    wall_gap: float,
    y_offset: float,
) -> list[np.ndarray | None]:
    """Centres (z, y, x) of cells packed along the capillary (Y), or None for a cell left out.

    Each cell takes a uniform point of the lumen's cross-section that keeps its bounding sphere
    ``wall_gap`` clear of the glass, then the smallest Y after the previous cells at which its
    sphere clears every placed one by ``gap`` (exact for spheres: no overlap), plus a drawn extra
    ``spacing`` (a :class:`~factory.params.Dist`, >= 0). The chain is centred on the grid in Y,
    shifted by ``y_offset``; cells wholly outside the grid are left out (cut ones are kept).
    """
    mid = (np.asarray(shape, float) - 1.0) / 2.0
    axis = np.array([mid[0] + plan.axis_zx[0], mid[2] + plan.axis_zx[1]])
    placed: list[tuple[int, np.ndarray, float]] = []  # (cell, [z, y_rel, x], bound)
    for i, rho in enumerate(bounds):
        room = plan.inner_radius_vox - rho - wall_gap
        if room < 0:
            continue
        phi, rad = rng.uniform(0.0, 2.0 * math.pi), room * math.sqrt(rng.uniform())
        zx = axis + rad * np.array([math.sin(phi), math.cos(phi)])
        extra = float(spacing.sample(rng))
        y = 0.0
        for _, q, rq in placed:
            d2 = (zx[0] - q[0]) ** 2 + (zx[1] - q[2]) ** 2
            y = max(y, q[1] + math.sqrt(max(0.0, (rho + rq + gap) ** 2 - d2)))
        if placed:
            y += extra
        placed.append((i, np.array([zx[0], y, zx[1]]), rho))
    out: list[np.ndarray | None] = [None] * len(bounds)
    if not placed:
        return out
    lo = min(p[1] - r for _, p, r in placed)
    hi = max(p[1] + r for _, p, r in placed)
    shift = mid[1] + y_offset - (lo + hi) / 2.0
    for i, p, r in placed:
        c = p + np.array([0.0, shift, 0.0])
        if _in_grid(c, r, shape):
            out[i] = c
    return out
