"""Draw a phantom's geometry and absorption values (numpy only; no voxels).

Every part of the phantom draws from its own numpy stream (:class:`factory.rng.PhantomStreams`):
the cell count, each cell's shape, and per cell each organelle kind (nucleus, vacuoles, lipid
droplets, mitochondria), so switching a part on or off never shifts another part's stream (what a
part places may still depend on what an earlier one placed: vacuoles avoid the nucleus, droplets
both). The result is a list of :class:`CellPlan` (local-frame organelles) that
:mod:`factory.phantom.voxelize` turns into volumes.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass, field

import numpy as np

from factory.phantom import placement as geo
from factory.phantom.config import PhantomConfig


@dataclass
class Ellipsoid:
    """An axis-aligned ellipsoid in a cell's local frame (voxels); ``lac`` in 1/µm."""

    cls: str
    centre: np.ndarray
    radii: np.ndarray
    lac: float
    extra: dict = field(default_factory=dict)

    @property
    def bound(self) -> float:
        return float(np.max(self.radii))


@dataclass
class CellPlan:
    """One cell: pose, shape, draws, and its organelles in the local frame."""

    index: int
    radii: np.ndarray  # outer radii of the mother (local axes), voxels
    wall: float
    rotation: np.ndarray  # columns: local axes in grid (z, y, x) coordinates
    lac: float
    wall_lac: float
    deform_amp: float
    deform_scale: float
    bound: float  # bounding radius about centre + R @ offset (bud and warp pad included)
    pad: float  # max displacement of the deformation + 1 voxel
    z_offset: float
    offset: np.ndarray = field(default_factory=lambda: np.zeros(3))  # bounding centre, local
    bud: dict | None = None  # {"centre": local (3,), "radii": (3,)}
    centre: np.ndarray | None = None  # the mother's centre in the grid (z, y, x)

    @property
    def bound_centre(self) -> np.ndarray:
        """Centre of the bounding sphere in the grid (z, y, x)."""
        return self.centre + self.rotation @ self.offset

    nucleus: Ellipsoid | None = None
    nucleolus: Ellipsoid | None = None
    vacuoles: list[Ellipsoid] = field(default_factory=list)
    droplets: list[Ellipsoid] = field(default_factory=list)
    mito_lac: float = 0.0
    mito_segments: np.ndarray | None = None  # (n, 2, 3) local frame
    mito_radius: np.ndarray | None = None  # (n,) tube radius per segment
    mito_networks: list[dict] = field(default_factory=list)
    drawn: dict = field(default_factory=dict)  # requested counts and failures

    @property
    def inner(self) -> np.ndarray:
        """Radii of the cell interior (cytoplasm side of the wall), local axes: the outer radii less
        the wall, so the wall is ``wall`` thick along every axis (as in the SimAQ reference)."""
        return inner_radii(self.radii, self.wall)


def inner_radii(radii: np.ndarray, wall: float) -> np.ndarray:
    """Interior radii of an ellipsoid of outer ``radii`` with a wall ``wall`` thick (voxels)."""
    radii = np.asarray(radii, float)
    return np.maximum(radii - wall, 0.05 * radii)


@dataclass(frozen=True)
class Ctx:
    """Per-phantom constants: radius scale (``scale`` x fit), fit factor, LAC energy ratio."""

    radius_scale: float
    fit: float
    lac_ratio: float


def _count(dist, rng) -> int:
    return max(0, dist.sample_int(rng))


def draw_cells(
    cfg: PhantomConfig,
    count_rng: np.random.Generator,
    cell_rng: Callable[[int], np.random.Generator],
    ctx: Ctx,
) -> list[CellPlan]:
    """Draw the cells' shapes and poses (before layout): the count from ``count_rng``, cell ``i``
    from its own stream ``cell_rng(i)`` (so cell ``i`` does not depend on the count)."""
    c = cfg.cells
    n = _count(c.count, count_rng)
    cells = []
    for i in range(n):
        rng = cell_rng(i)
        radii = np.array([c.radius_vox.sample(rng) for _ in range(3)]) * ctx.radius_scale
        wall = float(c.wall_thickness_vox.sample(rng))
        wall = max(wall * ctx.fit, min(wall, 1.0))  # a fitted wall stays a closed voxel shell
        rot = geo.random_rotation(rng) if c.orientation == "random" else np.eye(3)
        lac = c.lac.sample(rng) * ctx.lac_ratio
        wall_lac = c.wall_lac.sample(rng) * ctx.lac_ratio
        d = c.deformation
        amp = d.amplitude_vox.sample(rng) * ctx.fit if d.enabled else 0.0
        dscale = d.scale_vox.sample(rng) * ctx.fit if d.enabled else 0.0
        pad = math.sqrt(3.0) * amp + 1.0 if d.enabled else 0.0
        extent = float(radii.max())
        offset = np.zeros(3)
        bud = None
        b = c.budding
        if b.probability > 0 and rng.uniform() < b.probability:
            ratio = b.size_ratio.sample(rng)
            neck = b.neck.sample(rng)
            v = geo.random_unit(rng)
            bradii = radii * ratio
            rm, rd = geo.extent_along(radii, v), geo.extent_along(bradii, v)
            dist = rm + rd * (1.0 - 2.0 * neck)
            bud = {"centre": v * dist, "radii": bradii, "size_ratio": ratio, "neck": neck}
            # Bounding sphere of mother + bud, centred between them along the bud axis.
            shift = max(0.0, (dist + float(bradii.max()) - extent) / 2.0)
            offset = v * shift
            extent = extent + shift
        z_off = float(c.z_jitter_vox.sample(rng))
        cells.append(
            CellPlan(
                index=i,
                radii=radii,
                wall=wall,
                rotation=rot,
                lac=lac,
                wall_lac=wall_lac,
                deform_amp=amp,
                deform_scale=dscale,
                bound=extent + pad,
                pad=pad,
                offset=offset,
                z_offset=z_off,
                bud=bud,
            )
        )
    return cells


def _feasible_point(rng, inner: np.ndarray, r: float, margin: float = 1.0) -> np.ndarray | None:
    """A candidate centre for a ball of radius ``r`` inside the interior ``inner`` x ``margin``.

    Drawn uniformly in the ellipsoid of radii ``inner x margin - r`` (which holds every feasible
    centre) and kept if the ball fits (exact test); None otherwise. Accepted points are uniform over
    the feasible region, as with rejection sampling from the whole interior, at a far better rate.
    """
    box = inner * margin - r
    if np.any(box <= 0):
        return None
    p = geo.uniform_in_ball(rng) * box
    return p if geo.sphere_inside(p, r, np.zeros(3), inner, margin) else None


def _farthest_inside(u: np.ndarray, inner: np.ndarray, r: float, margin: float) -> float:
    """Largest ``t`` in [0, 1] with the ball (``t * u * (inner x margin - r)``, ``r``) inside the
    interior (the feasible centres form a convex set holding 0: bisection along the ray)."""
    d = u * (inner * margin - r)
    lo, hi = 0.0, 1.0
    for _ in range(30):
        mid = 0.5 * (lo + hi)
        if geo.sphere_inside(mid * d, r, np.zeros(3), inner, margin):
            lo = mid
        else:
            hi = mid
    return lo


def _place_nucleus(cfg: PhantomConfig, cell: CellPlan, rng, ctx: Ctx) -> None:
    nc = cfg.nucleus
    inner = cell.inner
    r = nc.radius_vox.sample(rng) * ctx.radius_scale
    radii = r * (1.0 + rng.uniform(-nc.axis_jitter, nc.axis_jitter, 3))
    lac = nc.lac.sample(rng) * ctx.lac_ratio
    cell.drawn["nucleus"] = 1
    # Off-centre, as in yeast (the vacuole takes the other side): the centre lies along a random
    # direction at ``offset`` x the farthest distance that keeps the nucleus inside.
    rb = float(radii.max())
    if np.any(inner * nc.margin - rb <= 0):
        cell.drawn["nucleus_failed"] = 1
        return
    u = geo.random_unit(rng)
    t = _farthest_inside(u, inner, rb, nc.margin) * nc.offset.sample(rng)
    p = t * u * (inner * nc.margin - rb)
    cell.nucleus = Ellipsoid("nucleus", p, radii, lac)
    nl = nc.nucleolus
    if nl.enabled:
        rmin = float(radii.min())
        rn = nl.radius_fraction.sample(rng) * rmin
        off = geo.random_unit(rng) * rng.uniform(0.2, 0.8) * (rmin - rn)
        lac_nl = nl.lac.sample(rng) * ctx.lac_ratio
        cell.nucleolus = Ellipsoid("nucleolus", p + off, np.full(3, rn), lac_nl)


def _place_vacuoles(cfg: PhantomConfig, cell: CellPlan, rng, ctx: Ctx) -> None:
    vc = cfg.vacuoles
    inner = cell.inner
    n = _count(vc.count, rng)
    cell.drawn["vacuoles"] = n
    placed: list[Ellipsoid] = []
    failed = 0
    for _ in range(n):
        base = vc.radius_vox.sample(rng)
        if vc.divide_by_count:
            base /= max(n, 1)
        radii = base * (1.0 + rng.uniform(-vc.axis_jitter, vc.axis_jitter, 3))
        if vc.radius_clamp_vox is not None:
            radii = np.clip(radii, *vc.radius_clamp_vox)
        radii = radii * ctx.radius_scale
        lac = vc.lac.sample(rng) * ctx.lac_ratio
        rb = float(radii.max())
        others = [(v.centre, v.bound) for v in placed]
        if cell.nucleus is not None:
            others.append((cell.nucleus.centre, cell.nucleus.bound))
        for _ in range(vc.tries):
            p = _feasible_point(rng, inner, rb, vc.margin)
            if p is None:
                continue
            if all(np.linalg.norm(p - q) >= rb + rq + vc.gap_vox for q, rq in others):
                placed.append(Ellipsoid("vacuole", p, radii, lac))
                break
        else:
            failed += 1
    cell.drawn["vacuoles_failed"] = failed
    # Fragmentation into a depth-1 Apollonian packing (SIMAQ.md): fragments keep the vacuole's LAC;
    # small kept fragments may become lipid droplets.
    fr = vc.fragmentation
    out: list[Ellipsoid] = []
    ld_frag: list[Ellipsoid] = []
    n_frag = 0
    for k, v in enumerate(placed):
        if fr.probability > 0 and rng.uniform() < fr.probability:
            n_frag += 1
            centres, rads = geo.apollonian_depth1()
            rot = geo.random_rotation(rng)
            for cu, ru in zip(centres @ rot.T, rads, strict=True):
                if rng.uniform() >= fr.keep_probability:
                    continue
                fc = v.centre + v.radii * cu
                frad = v.radii * ru * fr.fill
                if (
                    float(frad.mean()) < fr.ld_radius_max_vox * ctx.radius_scale
                    and rng.uniform() < fr.ld_probability
                ):
                    lac = cfg.lipid_droplets.lac.sample(rng) * ctx.lac_ratio
                    extra = {"fragment_of": k, "in_vacuole": False}
                    ld_frag.append(Ellipsoid("lipid_droplet", fc, frad, lac, extra))
                else:
                    out.append(Ellipsoid("vacuole", fc, frad, v.lac, {"fragment_of": k}))
        else:
            out.append(Ellipsoid("vacuole", v.centre, v.radii, v.lac, {"fragment_of": None}))
    cell.vacuoles = out
    cell.droplets = ld_frag
    cell.drawn["vacuoles_fragmented"] = n_frag


def _place_droplets(cfg: PhantomConfig, cell: CellPlan, rng, ctx: Ctx) -> None:
    lc = cfg.lipid_droplets
    inner = cell.inner
    n = _count(lc.count, rng)
    cell.drawn["lipid_droplets"] = n
    failed = 0
    for _ in range(n):
        r = lc.radius_vox.sample(rng) * ctx.radius_scale
        lac = lc.lac.sample(rng) * ctx.lac_ratio
        ok = None
        for _ in range(lc.tries):
            p = _feasible_point(rng, inner, r)
            if p is None:
                continue
            if any(np.linalg.norm(p - d.centre) < r + d.bound + lc.gap_vox for d in cell.droplets):
                continue
            if cell.nucleus is not None and not geo.sphere_outside(
                p, r + lc.gap_vox, cell.nucleus.centre, cell.nucleus.radii
            ):
                continue
            host = None
            for j, v in enumerate(cell.vacuoles):
                # Inside: clear of the vacuole's boundary by the gap too, so that "wholly
                # inside" survives voxelisation (never a droplet on the vacuole's edge).
                if geo.sphere_inside(p, r + lc.gap_vox, v.centre, v.radii):
                    host = j
                elif not geo.sphere_outside(p, r + lc.gap_vox, v.centre, v.radii):
                    host = -1  # straddles the vacuole boundary
                    break
            if host == -1:
                continue
            ok = (p, host)
            break
        if ok is None:
            failed += 1
            continue
        p, host = ok
        extra = {"fragment_of": None, "in_vacuole": host is not None}
        cell.droplets.append(Ellipsoid("lipid_droplet", p, np.full(3, r), lac, extra))
    cell.drawn["lipid_droplets_failed"] = failed


def _place_mitochondria(cfg: PhantomConfig, cell: CellPlan, rng, ctx: Ctx) -> None:
    mc = cfg.mitochondria
    cell.mito_lac = mc.lac.sample(rng) * ctx.lac_ratio
    n = _count(mc.networks, rng)
    cell.drawn["mitochondria"] = n
    segs, rads = [], []
    for _ in range(n):
        r = mc.radius_vox.sample(rng) * ctx.radius_scale
        s = geo.tube_network(
            rng,
            cell.inner,
            steps=max(1, _count(mc.steps, rng)),
            step_len=mc.step_factor * r,
            turn_sd=math.radians(mc.turn_deg),
            shell=mc.shell,
            branch_probability=mc.branch_probability,
            branch_steps=lambda: max(1, _count(mc.branch_steps, rng)),
        )
        segs.append(s)
        rads.append(np.full(len(s), r))
        length = float(np.linalg.norm(s[:, 1] - s[:, 0], axis=1).sum()) if len(s) else 0.0
        cell.mito_networks.append({"segments": len(s), "radius_vox": r, "length_vox": length})
    if segs:
        cell.mito_segments = np.concatenate(segs)
        cell.mito_radius = np.concatenate(rads)


#: The organelle kinds in the order they are placed (later kinds avoid earlier ones); each kind
#: draws from its own stream, named as in :data:`factory.rng.PHANTOM_STREAM_ID`.
ORGANELLE_KINDS = ("nucleus", "vacuoles", "lipid_droplets", "mitochondria")
_PLACE = {
    "nucleus": _place_nucleus,
    "vacuoles": _place_vacuoles,
    "lipid_droplets": _place_droplets,
    "mitochondria": _place_mitochondria,
}


def draw_organelles(
    cfg: PhantomConfig, cell: CellPlan, rng_of: Callable[[str], np.random.Generator], ctx: Ctx
) -> None:
    """Place one cell's organelles in its local frame: nucleus, vacuoles, droplets, mitochondria,
    each kind drawn from its own stream ``rng_of(kind)`` (asked only for the kinds enabled)."""
    for kind in ORGANELLE_KINDS:
        if getattr(cfg, kind).enabled:
            _PLACE[kind](cfg, cell, rng_of(kind), ctx)
