"""Voxelise planned cells into LAC and label volumes with vectorised torch ops (CPU or CUDA).

Each cell is evaluated only over its bounding box. A (optionally deformed) coordinate field
``q = R.T @ (x + D(x) - centre)`` gives every voxel's position in the cell's local frame; every
shape of the cell (wall, cytoplasm, bud, organelles) is an inequality on ``q`` evaluated over the
shape's own sub-box. Because all shapes see the same warped coordinates, nesting and non-overlap
in the plan hold exactly in the voxels. Later writes win: wall, cytoplasm, nucleus (nucleolus),
vacuoles, lipid droplets; mitochondria only replace cytoplasm.

Two coordinate representations, chosen per cell:

* *separable* (no deformation, or a 2D field that is the same on every Y slice, as in the SimAQ
  reference): ``q_k = R[1, k] * y + P_k(z, x)``, so an ellipsoid's squared norm is
  ``alpha y^2 + 2 y beta(z, x) + gamma(z, x)``: two full-size passes and no (3, Z, Y, X) field;
* *full* (3D displacement field): ``q`` is materialised over the box, (3, bz, by, bx).
"""

from __future__ import annotations

import math

import numpy as np
import torch

import schemas
from factory.noise import fractal_noise, perlin_noise
from factory.phantom.plan import CellPlan, Ellipsoid, inner_radii

#: Upper bound on voxels evaluated per batch of tube segments (memory cap).
_SEG_BATCH_VOXELS = 1_000_000


class _CellBox:
    """A cell's bounding box in the grid and its local coordinates ``q`` (see module docstring)."""

    def __init__(self, cell: CellPlan, shape, generator, device, mode: str):
        self.cell = cell
        c = cell.centre
        bc = cell.bound_centre
        lo = np.maximum(np.floor(bc - cell.bound).astype(int), 0)
        hi = np.minimum(np.ceil(bc + cell.bound).astype(int), np.asarray(shape) - 1)
        self.lo, self.hi = lo, hi
        self.shape = tuple(int(h - lo_ + 1) for lo_, h in zip(lo, hi, strict=True))
        self.slices = tuple(slice(int(lo_), int(h) + 1) for lo_, h in zip(lo, hi, strict=True))
        f32 = dict(dtype=torch.float32, device=device)
        axes = [
            torch.arange(int(lo_), int(h) + 1, **f32) - float(cc)
            for lo_, h, cc in zip(lo, hi, c, strict=True)
        ]
        self.rot = [[float(v) for v in row] for row in cell.rotation]
        rot = self.rot
        self.pad = 1.0  # max |displacement| in this box + 1 voxel (sub-boxes grow by it)
        amp = cell.deform_amp
        self.separable = amp == 0 or mode == "2d"
        if self.separable:
            bz, bx = self.shape[0], self.shape[2]
            rz, rx = axes[0].view(-1, 1), axes[2].view(1, -1)
            if amp > 0:  # one (Z, X) field for every Y slice
                dz, dx = (
                    perlin_noise(
                        (bz, bx), scale=cell.deform_scale, generator=generator, device=device
                    )
                    for _ in range(2)
                )
                self.pad = amp * math.hypot(float(dz.abs().amax()), float(dx.abs().amax())) + 1.0
                rz, rx = dz.mul_(amp).add_(rz), dx.mul_(amp).add_(rx)
            self.u = axes[1]  # (by,)
            self.p = torch.stack([rz * rot[0][k] + rx * rot[2][k] for k in range(3)])  # (3,bz,bx)
            self.q = None
        else:
            views = [axes[0].view(-1, 1, 1), axes[1].view(1, -1, 1), axes[2].view(1, 1, -1)]
            rel, peak = [], []
            for j in range(3):
                d = perlin_noise(
                    self.shape, scale=cell.deform_scale, generator=generator, device=device
                )
                peak.append(float(d.abs().amax()) * amp)
                rel.append(d.mul_(amp).add_(views[j]))
            self.pad = math.sqrt(sum(m * m for m in peak)) + 1.0
            q = torch.empty((3, *self.shape), **f32)
            for k in range(3):  # q_k = sum_j R[j, k] rel_j
                torch.mul(rel[0], rot[0][k], out=q[k])
                q[k].add_(rel[1], alpha=rot[1][k]).add_(rel[2], alpha=rot[2][k])
            self.q = q

    def sub(self, centre_local: np.ndarray, bound: float) -> tuple[slice, ...]:
        """Slices (within this box) that hold every voxel of a shape of ``bound`` about a point."""
        g = self.cell.centre + self.cell.rotation @ np.asarray(centre_local)
        r = bound + self.pad
        lo = np.maximum(np.floor(g - r).astype(int) - self.lo, 0)
        hi = np.minimum(np.ceil(g + r).astype(int) - self.lo, np.asarray(self.shape) - 1)
        return tuple(
            slice(int(lo_), int(max(h, lo_ - 1)) + 1) for lo_, h in zip(lo, hi, strict=True)
        )

    def norm2(self, centre, radii, sl=None) -> torch.Tensor:
        """``|(q - centre) / radii|^2`` over the sub-box ``sl`` (default: the whole box)."""
        sl = sl if sl is not None else (slice(None),) * 3
        w = [1.0 / float(r) ** 2 for r in radii]
        if self.separable:
            pk = [self.p[k][sl[0], sl[2]] - float(centre[k]) for k in range(3)]  # (bz, bx)
            r1 = self.rot[1]
            alpha = sum(w[k] * r1[k] ** 2 for k in range(3))
            beta2 = sum(pk[k] * (2.0 * w[k] * r1[k]) for k in range(3))
            gamma = sum(pk[k].square() * w[k] for k in range(3))
            u = self.u[sl[1]].view(1, -1, 1)
            f = (u * u).mul_(alpha) + gamma.unsqueeze(1)  # (bz, by, bx)
            return f.addcmul_(beta2.unsqueeze(1), u)
        q = self.q[(slice(None), *sl)]
        f = None
        for k in range(3):
            t = q[k] - float(centre[k]) if centre[k] else q[k]
            f = (t * t).mul_(w[k]) if f is None else f.addcmul_(t, t, value=w[k])
        return f

    def ellipsoid(self, centre, radii, sl=None) -> torch.Tensor:
        """Boolean mask of ``|(q - centre) / radii| <= 1`` over ``sl`` (default: the whole box)."""
        return self.norm2(centre, radii, sl) <= 1.0

    def shell(self, centre, radii, inner) -> tuple[torch.Tensor, torch.Tensor]:
        """Masks of an ellipsoid (``radii``) and of its interior (radii ``inner``), whole box."""
        return self.norm2(centre, radii) <= 1.0, self.norm2(centre, inner) <= 1.0

    def gather(self, iz, iy, ix) -> torch.Tensor:
        """Local coordinates at broadcastable box indices: (3, *broadcast shape)."""
        if self.separable:
            pg = self.p[:, iz, ix]  # (3, S, Bz, 1, Bx)
            r1 = torch.tensor(self.rot[1], dtype=pg.dtype, device=pg.device)
            return pg + r1.view(3, *([1] * (pg.dim() - 1))) * self.u[iy].unsqueeze(0)
        return self.q[:, iz, iy, ix]


def _tube_mask(box: _CellBox, segs: np.ndarray, radius: np.ndarray) -> torch.Tensor:
    """Union of tubes (segment ``segs[i]`` swept with ``radius[i]``) over the cell box (bool).

    Each segment is tested over its own sub-box (grown by the box's displacement bound), batched:
    the voxels' local coordinates are gathered, the point-segment distance is computed for the
    whole batch, and hits are scattered into the mask (idempotent writes).
    """
    dev = box.u.device if box.separable else box.q.device
    mask = torch.zeros(box.shape, dtype=torch.bool, device=dev)
    if segs is None or len(segs) == 0:
        return mask
    cell = box.cell
    g = cell.centre + segs @ cell.rotation.T  # (n, 2, 3) grid coordinates
    reach = (radius + box.pad)[:, None]
    lo = np.maximum(np.floor(g.min(axis=1) - reach).astype(int) - box.lo, 0)
    hi = np.minimum(np.ceil(g.max(axis=1) + reach).astype(int) - box.lo, np.asarray(box.shape) - 1)
    keep = np.all(hi >= lo, axis=1)
    segs, radius, lo, hi = segs[keep], radius[keep], lo[keep], hi[keep]
    if len(segs) == 0:
        return mask
    # Batches of segments of similar box size (sorted by volume) waste little padding.
    order = np.argsort(np.prod(hi - lo + 1, axis=1), kind="stable")
    mflat = mask.view(-1)
    sy, sx = box.shape[1] * box.shape[2], box.shape[2]
    f32 = dict(dtype=torch.float32, device=dev)
    s0 = 0
    while s0 < len(order):
        bsize = hi[order[s0]] - lo[order[s0]] + 1
        s1 = s0 + 1
        while s1 < len(order):
            nb = np.maximum(bsize, hi[order[s1]] - lo[order[s1]] + 1)
            if (s1 - s0 + 1) * int(np.prod(nb)) > _SEG_BATCH_VOXELS:
                break
            bsize, s1 = nb, s1 + 1
        idx = order[s0:s1]
        lo_t = torch.as_tensor(lo[idx], device=dev)
        hi_t = torch.as_tensor(hi[idx], device=dev)
        ax = [lo_t[:, k : k + 1] + torch.arange(int(bsize[k]), device=dev) for k in range(3)]
        ok = [ax[k] <= hi_t[:, k : k + 1] for k in range(3)]
        ax = [torch.minimum(ax[k], hi_t[:, k : k + 1]) for k in range(3)]
        iz, iy, ix = ax[0][:, :, None, None], ax[1][:, None, :, None], ax[2][:, None, None, :]
        valid = ok[0][:, :, None, None] & ok[1][:, None, :, None] & ok[2][:, None, None, :]
        q = box.gather(iz, iy, ix)  # (3, S, Bz, By, Bx)
        a = torch.as_tensor(segs[idx, 0], **f32).T[:, :, None, None, None]
        ab = torch.as_tensor(segs[idx, 1] - segs[idx, 0], **f32).T[:, :, None, None, None]
        inv_len2 = 1.0 / (ab * ab).sum(0).clamp_min(1e-12)
        d = q.sub_(a)
        t = (d * ab).sum(0).mul_(inv_len2).clamp_(0.0, 1.0)
        d.addcmul_(t.unsqueeze(0), ab, value=-1.0)
        r2 = torch.as_tensor(radius[idx] ** 2, **f32)[:, None, None, None]
        hit = (d.square_().sum(0) <= r2) & valid
        flat = (iz * sy + iy * sx + ix).expand(hit.shape)
        mflat[flat[hit]] = True
        s0 = s1
    return mask


def voxelize_cell(
    cell: CellPlan,
    lac: torch.Tensor,
    labels: torch.Tensor,
    *,
    texture: dict | None,
    deformation_generator: torch.Generator,
    texture_generator: torch.Generator,
    deformation_mode: str = "3d",
) -> list[int]:
    """Write one planned cell into the grid volumes ``lac`` (float32) and ``labels`` (uint8).

    ``texture``: ``{"amplitude", "scale_vox", "octaves", "persistence"}`` or None;
    ``deformation_mode``: ``"3d"`` (a 3D field) or ``"2d"`` (one (Z, X) field on every Y slice).
    The deformation fields and the texture field are drawn from their own generators (the cell's
    ``deformation_field`` and ``texture_field`` streams, :class:`factory.rng.PhantomStreams`).
    The cell's LAC is painted straight into ``lac``'s box (cells never overlap); labels go through
    a local box merged with an element-wise maximum. Returns the voxel count per label id of the
    full table inside this cell (7 ints).
    """
    dev = lac.device
    box = _CellBox(cell, lac.shape, deformation_generator, dev, deformation_mode)
    outer, inner = box.shell(np.zeros(3), cell.radii, cell.inner)
    if cell.bud is not None:
        bud_inner_radii = inner_radii(cell.bud["radii"], cell.wall)
        bud_outer, bud_inner = box.shell(cell.bud["centre"], cell.bud["radii"], bud_inner_radii)
        outer |= bud_outer
        inner |= bud_inner
        del bud_outer, bud_inner
    lab = outer.to(torch.uint8).mul_(schemas.CELL_WALL)
    # No other cell has a voxel where this one's mask is set, so the grid box can be painted
    # directly (its other non-zero voxels belong to neighbours and are never under a mask here).
    val = lac[box.slices]
    val.masked_fill_(outer, cell.wall_lac)
    del outer
    tex = None
    if texture is not None:
        tex = fractal_noise(
            box.shape,
            scale=texture["scale_vox"],
            octaves=texture["octaves"],
            persistence=texture["persistence"],
            generator=texture_generator,
            device=dev,
        )
        tex.mul_(texture["amplitude"]).add_(1.0)  # relative modulation, mean ~1

    def paint(sl, mask, label: int, value: float, textured: bool = False):
        lab[sl].masked_fill_(mask, label)
        v = val[sl]
        if textured and tex is not None:
            v.copy_(torch.where(mask, tex[sl] * value, v))
        else:
            v.masked_fill_(mask, value)

    full = (slice(None),) * 3
    paint(full, inner, schemas.CYTOPLASM, cell.lac, textured=True)
    del inner

    def paint_ellipsoid(e: Ellipsoid, label: int, textured: bool = False):
        sl = box.sub(e.centre, e.bound)
        if any(s.stop <= s.start for s in sl):
            return
        paint(sl, box.ellipsoid(e.centre, e.radii, sl), label, e.lac, textured)

    if cell.nucleus is not None:
        paint_ellipsoid(cell.nucleus, schemas.NUCLEUS, textured=True)
        if cell.nucleolus is not None:
            paint_ellipsoid(cell.nucleolus, schemas.NUCLEUS, textured=True)
    for v in cell.vacuoles:
        paint_ellipsoid(v, schemas.VACUOLE)
    for d in cell.droplets:
        paint_ellipsoid(d, schemas.LIPID_DROPLET)
    if cell.mito_segments is not None:
        tubes = _tube_mask(box, cell.mito_segments, cell.mito_radius)
        tubes &= lab == schemas.CYTOPLASM
        paint(full, tubes, schemas.MITOCHONDRION, cell.mito_lac)

    glab = labels[box.slices]
    torch.maximum(glab, lab, out=glab)
    return torch.bincount(lab.view(-1), minlength=7).tolist()


def bounding_box(cell: CellPlan, shape) -> tuple[list[int], list[int]]:
    """Inclusive (lo, hi) voxel indices of a placed cell's bounding box."""
    bc = cell.bound_centre
    lo = np.maximum(np.floor(bc - cell.bound).astype(int), 0)
    hi = np.minimum(np.ceil(bc + cell.bound).astype(int), np.asarray(shape) - 1)
    return lo.tolist(), hi.tolist()
