"""Volume-level effects, applied to the LAC volume (Z, Y, X) in 1/µm before projection.

In the reference's order: 3D Gaussian blur, gold fiducials, ice cracks, background texture. The
fiducials, cracks and texture go into the background (label 0) only.
"""

from __future__ import annotations

import math

import numpy as np
import torch


def gaussian_kernel1d(sigma: float, kernel_size: int | None = None) -> torch.Tensor:
    """Normalised 1D Gaussian, float32 ``(k,)``; ``k`` defaults to ``2·ceil(3σ) + 1``."""
    if kernel_size is None:
        kernel_size = 2 * math.ceil(3.0 * sigma) + 1
    r = (kernel_size - 1) / 2.0
    x = torch.arange(kernel_size, dtype=torch.float64) - r
    k = torch.exp(-(x**2) / (2.0 * max(sigma, 1e-6) ** 2))
    return (k / k.sum()).to(torch.float32)


def gaussian_blur3d(
    volume: torch.Tensor, sigma: float, kernel_size: int | None = 5
) -> torch.Tensor:
    """Separable 3D Gaussian blur with edge-replicate padding.

    With ``kernel_size=5`` this equals the reference's normalised 5×5×5 kernel (a normalised 3D
    Gaussian is the product of normalised 1D ones). ``volume`` (Z, Y, X) float32; same shape out.
    """
    if sigma <= 0:
        return volume.clone()
    k = gaussian_kernel1d(sigma, kernel_size).tolist()
    pad = (len(k) - 1) // 2
    out = volume
    for dim in range(3):
        n = out.shape[dim]
        idx = torch.arange(-pad, n + pad, device=volume.device).clamp_(0, n - 1)  # edge replicate
        padded = out.index_select(dim, idx)
        acc = padded.narrow(dim, 0, n) * k[0]
        for j in range(1, len(k)):
            acc.add_(padded.narrow(dim, j, n), alpha=k[j])
        out = acc
    return out.contiguous()


def cylinder_mask(shape: tuple[int, int, int], inset: float, device=None) -> torch.Tensor:
    """Boolean (Z, 1, X) mask of the field-of-view cylinder around the tilt axis (Y).

    Radius ``min(Z, X) / 2 − inset`` about the centre ``((Z − 1)/2, (X − 1)/2)``.
    """
    nz, _, nx = shape
    z = torch.arange(nz, dtype=torch.float32, device=device) - (nz - 1) / 2.0
    x = torch.arange(nx, dtype=torch.float32, device=device) - (nx - 1) / 2.0
    r = min(nz, nx) / 2.0 - inset
    return ((z[:, None] ** 2 + x[None, :] ** 2) <= r * r)[:, None, :]


def place_fiducials(
    volume: torch.Tensor,
    free: torch.Tensor,
    radii: np.ndarray,
    lac: float,
    rng: np.random.Generator,
    max_tries: int = 2000,
) -> list[dict]:
    """Paint gold beads (solid spheres of LAC ``lac``) into ``volume`` in place, background only.

    A bead's centre is drawn uniformly (rejection sampling) among voxels whose cube of half-width
    ``ceil(r) + 1`` is wholly free (``free``: background and not yet a bead), so a bead never
    touches an object or another bead. ``free`` is updated in place. Beads that find no room
    after ``max_tries`` draws are skipped (recorded as placed = False).

    Returns:
        One dict per bead: ``centre_zyx`` (voxels), ``radius_vox``, ``placed``.
    """
    shape = volume.shape
    out = []
    for r in radii:
        r = float(r)
        ri = int(math.ceil(r)) + 1
        lo = np.array([ri, ri, ri])
        hi = np.array(shape) - ri - 1
        centre = None
        if np.all(hi >= lo):
            for _ in range(max_tries):
                c = rng.integers(lo, hi + 1)
                box = tuple(slice(int(ci) - ri, int(ci) + ri + 1) for ci in c)
                if bool(free[box].all()):
                    centre = c
                    break
        if centre is None:
            out.append({"centre_zyx": None, "radius_vox": r, "placed": False})
            continue
        sl = tuple(slice(int(ci) - ri, int(ci) + ri + 1) for ci in centre)
        g = torch.arange(-ri, ri + 1, dtype=torch.float32, device=volume.device)
        ball = (g[:, None, None] ** 2 + g[None, :, None] ** 2 + g[None, None, :] ** 2) <= r * r
        volume[sl] = torch.where(ball, torch.full_like(volume[sl], lac), volume[sl])
        free[sl] &= ~ball
        out.append({"centre_zyx": [int(c) for c in centre], "radius_vox": r, "placed": True})
    return out


def crack_sheets(
    shape: tuple[int, int, int],
    centres: np.ndarray,
    normals: np.ndarray,
    extents: np.ndarray,
    widths: np.ndarray,
    warp: torch.Tensor | None = None,
    device=None,
) -> torch.Tensor:
    """A crack map in [0, 1] (Z, Y, X): thin, gently curved sheets.

    Crack ``k`` is the plane through ``centres[k]`` (voxels, zyx) with unit normal ``normals[k]``,
    displaced along its normal by ``warp`` (a smooth field in voxels, or none), with a Gaussian
    profile of sd ``widths[k]`` across it and a soft disk edge of radius ``extents[k]`` along it.
    The map is the maximum over cracks.
    """
    nz, ny, nx = shape
    f32 = dict(dtype=torch.float32, device=device)
    z = torch.arange(nz, **f32)[:, None, None]
    y = torch.arange(ny, **f32)[None, :, None]
    x = torch.arange(nx, **f32)[None, None, :]
    out = torch.zeros(shape, **f32)
    flat = out.view(-1)
    for c, n, ext, w in zip(centres, normals, extents, widths, strict=True):
        c, n, ext, w = [float(v) for v in c], [float(v) for v in n], float(ext), float(w)
        d = (z - c[0]) * n[0] + (y - c[1]) * n[1]
        d = d + (x - c[2]) * n[2]
        if warp is not None:
            d = d + warp
        # The Gaussian profile is below 4e-6 beyond 5 sd: evaluate the sheet only near its plane.
        idx = torch.nonzero((d.abs() <= 5.0 * w).view(-1)).squeeze(1)
        if idx.numel() == 0:
            continue
        ds = d.view(-1)[idx]
        iz = torch.div(idx, ny * nx, rounding_mode="floor")
        rem = idx - iz * (ny * nx)
        iy = torch.div(rem, nx, rounding_mode="floor")
        dz, dy, dx = iz.float() - c[0], iy.float() - c[1], (rem - iy * nx).float() - c[2]
        r2 = dz * dz + dy * dy + dx * dx - ds * ds
        sheet = torch.exp(-0.5 * (ds / w) ** 2) * torch.sigmoid((ext * ext - r2) / (8.0 * ext))
        flat[idx] = torch.maximum(flat[idx], sheet)
    return out


def unit_vectors(rng: np.random.Generator, n: int) -> np.ndarray:
    """``n`` isotropic random unit vectors (n, 3)."""
    v = rng.normal(size=(n, 3))
    return v / np.maximum(np.linalg.norm(v, axis=1, keepdims=True), 1e-12)
