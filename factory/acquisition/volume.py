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


#: Slices per chunk of the blur and crack passes: the temporaries of one chunk are a few tens of
#: MB at 512², where whole-volume temporaries would be several 512³ copies (issue 13).
CHUNK_SLICES = 32


def _blur_axis(
    src: torch.Tensor, dst: torch.Tensor, dim: int, k: list[float], chunk_dim: int
) -> None:
    """``dst = src`` blurred along ``dim`` by the 1D kernel ``k`` (edge replicate), in chunks of
    :data:`CHUNK_SLICES` along ``chunk_dim`` (≠ ``dim``). ``dst`` may be ``src``: the blur mixes
    voxels along ``dim`` only, and each chunk is copied (padded) before it is overwritten.

    Every voxel sees the same float32 operations in the same order as a whole-volume pass
    (``k[0]·x₀``, then ``+= k[j]·x_j``), so the result is bit-identical to one.
    """
    n = src.shape[dim]
    pad = (len(k) - 1) // 2
    idx = torch.arange(-pad, n + pad, device=src.device).clamp_(0, n - 1)  # edge replicate
    for c0 in range(0, src.shape[chunk_dim], CHUNK_SLICES):
        c = min(CHUNK_SLICES, src.shape[chunk_dim] - c0)
        padded = src.narrow(chunk_dim, c0, c).index_select(dim, idx)
        acc = padded.narrow(dim, 0, n) * k[0]
        for j in range(1, len(k)):
            acc.add_(padded.narrow(dim, j, n), alpha=k[j])
        dst.narrow(chunk_dim, c0, c).copy_(acc)
        del padded, acc


def gaussian_blur3d(
    volume: torch.Tensor, sigma: float, kernel_size: int | None = 5
) -> torch.Tensor:
    """Separable 3D Gaussian blur with edge-replicate padding.

    With ``kernel_size=5`` this equals the reference's normalised 5×5×5 kernel (a normalised 3D
    Gaussian is the product of normalised 1D ones). ``volume`` (Z, Y, X) float32; same shape out,
    a new tensor (``volume`` is not modified).

    Memory: the output plus one chunk of temporaries; the Z and X passes run in chunks along Y,
    the Y pass in chunks along Z, the last two in place.
    """
    if sigma <= 0:
        return volume.clone()
    k = gaussian_kernel1d(sigma, kernel_size).tolist()
    out = torch.empty(volume.shape, dtype=volume.dtype, device=volume.device)
    _blur_axis(volume, out, 0, k, chunk_dim=1)
    _blur_axis(out, out, 1, k, chunk_dim=0)
    _blur_axis(out, out, 2, k, chunk_dim=1)
    return out


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

    Returns
    -------
    list of dict
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
        idx, ds = _near_plane((z, y, x), c, n, 5.0 * w, warp)
        if idx.numel() == 0:
            continue
        iz = torch.div(idx, ny * nx, rounding_mode="floor")
        rem = idx - iz * (ny * nx)
        iy = torch.div(rem, nx, rounding_mode="floor")
        dz, dy, dx = iz.float() - c[0], iy.float() - c[1], (rem - iy * nx).float() - c[2]
        r2 = dz * dz + dy * dy + dx * dx - ds * ds
        sheet = torch.exp(-0.5 * (ds / w) ** 2) * torch.sigmoid((ext * ext - r2) / (8.0 * ext))
        flat[idx] = torch.maximum(flat[idx], sheet)
    return out


def _near_plane(
    zyx: tuple[torch.Tensor, torch.Tensor, torch.Tensor],
    c: list[float],
    n: list[float],
    reach: float,
    warp: torch.Tensor | None,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Voxels within ``reach`` of a (warped) plane: flat indices (ascending, int64) and signed
    distances (voxels, float32).

    The plane passes through ``c`` (zyx, voxels) with unit normal ``n``; ``zyx`` are the
    broadcastable voxel coordinates (Z, 1, 1), (1, Y, 1), (1, 1, X); ``warp`` (Z, Y, X) displaces
    it along its normal. Evaluated in chunks of :data:`CHUNK_SLICES` Z slices (a whole-volume
    distance field and its temporaries are several 512³ copies); each voxel's distance takes the
    same float32 operations as in one pass, so the result is bit-identical to one.
    """
    z, y, x = zyx
    nz, ny, nx = z.shape[0], y.shape[1], x.shape[2]
    idx_parts, ds_parts = [], []
    for z0 in range(0, nz, CHUNK_SLICES):
        zc = z[z0 : z0 + CHUNK_SLICES]
        d = (zc - c[0]) * n[0] + (y - c[1]) * n[1]
        d = d + (x - c[2]) * n[2]
        if warp is not None:
            d.add_(warp[z0 : z0 + CHUNK_SLICES])
        # The Gaussian profile is below 4e-6 beyond 5 sd: evaluate the sheet only near its plane.
        loc = torch.nonzero((d.abs() <= reach).view(-1)).squeeze(1)
        if loc.numel():
            ds_parts.append(d.view(-1)[loc])
            idx_parts.append(loc.add_(z0 * ny * nx))
        del d
    if not idx_parts:
        empty = torch.zeros(0, dtype=torch.int64, device=z.device)
        return empty, empty.to(z.dtype)
    return torch.cat(idx_parts), torch.cat(ds_parts)


def unit_vectors(rng: np.random.Generator, n: int) -> np.ndarray:
    """``n`` isotropic random unit vectors (n, 3)."""
    v = rng.normal(size=(n, 3))
    return v / np.maximum(np.linalg.norm(v, axis=1, keepdims=True), 1e-12)
