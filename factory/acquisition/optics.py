"""Image formation on projections: depth-resolved projection, depth-dependent PSF and motion blur,
sample motion between projections (shifts, axis misalignment, shrinkage), Beer–Lambert counts.

Projections are ``(n_angles, Y, det)`` float32 tensors; detector pixel pitch = one voxel.

Depth-dependent blur model
--------------------------
At angle θ the beam runs along ``(cos θ, sin θ)`` in ``(z, x)``, so a voxel's depth along the beam
is ``s = zc·cos θ + xc·sin θ`` (voxels, 0 on the tilt axis). The line integrals are split into ``K``
depth slabs with hat (linear interpolation) weights centred at ``c_k`` spanning ``[−R, R]``
(``R`` = half the slice diagonal): ``p = Σ_k p_k`` exactly. Each slab projection is blurred by the
detector-plane kernel of its depth before summing:

- defocus: a 2D Gaussian with ``σ(Δ) = σ_f·sqrt(1 + (2Δ/DOF)²)``, ``Δ = c_k − focal offset``
  (Gaussian-beam growth: σ_f in focus, linear growth ``2σ_f/DOF`` per unit depth far from focus;
  for zone-plate optics the DOF is about ±λ/(2·NA²), Attwood, *Soft X-Rays and Extreme Ultraviolet
  Radiation*, 2nd ed., 2017, ch. 9);
- rotation during the exposure by ``Δθ``: a voxel at depth ``s`` moves ``s·Δθ`` (radians) along the
  detector, a box of that width along the detector axis;
- translation during the exposure (drift): a box of length ``d`` along a direction in (Y, det), the
  same for every depth.

The blur is applied in Fourier space (replicate-padded), one forward FFT per slab and one inverse.
"""

from __future__ import annotations

import math

import numpy as np
import torch
import torch.nn.functional as F


def _projector_matrix(projector) -> torch.Tensor:
    """The projector's forward CSR matrix A (rows: angle·det + pixel, columns: z·nx + x)."""
    return projector.matrix("A", torch.float32)


def _column_padding(n_cols: int, nz: int, nx: int) -> int:
    """Ghost voxels on each side of the projector's column grid: ``A`` has ``(nz + 2p)(nx + 2p)``
    columns (row-major z, x), ``p = 0`` for an unpadded grid."""
    for p in range(0, 9):
        if (nz + 2 * p) * (nx + 2 * p) == n_cols:
            return p
    raise RuntimeError(  # pragma: no cover - guards against a layout change in factory.tomo
        f"factory.tomo's matrix A has {n_cols} columns; expected a (padded) {nz}x{nx} voxel grid"
    )


def slab_centres(shape_zx: tuple[int, int], n_slabs: int) -> np.ndarray:
    """Depth of the ``n_slabs`` slab centres (voxels along the beam), evenly over ``[−R, R]``."""
    r = 0.5 * math.hypot(*shape_zx)
    return np.linspace(-r, r, n_slabs)


def depth_slab_projections(volume: torch.Tensor, projector, n_slabs: int) -> torch.Tensor:
    """Line integrals split into depth slabs: ``(K, n_angles, Y, det)`` whose sum over K equals
    ``projector.forward(volume)`` (hat weights in depth, see the module docstring).

    ``volume`` (Z, Y, X) float32 on the projector's device; ``projector`` a
    :class:`factory.tomo.ParallelProjector` of the (true) angles.
    """
    nz, nx = projector.shape
    det, na = projector.det_count, projector.n_angles
    ny = volume.shape[1]
    dev = volume.device
    a = _projector_matrix(projector)
    crow, col, val = a.crow_indices().to(torch.int64), a.col_indices(), a.values()
    rows = crow.numel() - 1
    # drop the matrix's zero padding once, keeping entries grouped by row
    nz_idx = torch.nonzero(val).squeeze(1)
    cs = torch.zeros(val.numel() + 1, dtype=torch.int64, device=dev)
    torch.cumsum(val != 0, 0, out=cs[1:])
    crow = cs[crow]
    col, val = col[nz_idx], val[nz_idx]
    row = torch.repeat_interleave(torch.arange(rows, device=dev), crow[1:] - crow[:-1])
    del nz_idx, cs
    # depth along the beam of every entry: s = zc·cos θ + xc·sin θ (tables, no per-entry division)
    f32 = dict(dtype=torch.float32, device=dev)
    theta = torch.tensor(np.deg2rad(projector.geometry.angles_deg), **f32)
    pad = _column_padding(a.shape[1], nz, nx)
    pz, px = nz + 2 * pad, nx + 2 * pad
    zc_tab = (torch.arange(pz, **f32) - pad - (nz - 1) / 2.0)[:, None].expand(pz, px).reshape(-1)
    xc_tab = (torch.arange(px, **f32) - pad - (nx - 1) / 2.0)[None, :].expand(pz, px).reshape(-1)
    ang_row = torch.arange(na, device=dev).repeat_interleave(det)
    cos_e = torch.cos(theta)[ang_row][row]
    sin_e = torch.sin(theta)[ang_row][row]
    col64 = col.to(torch.int64)
    s = zc_tab[col64] * cos_e + xc_tab[col64] * sin_e
    del cos_e, sin_e, row, col64
    centres = slab_centres((nz, nx), n_slabs)
    spacing = float(centres[1] - centres[0])
    u = ((s - float(centres[0])) / spacing).clamp_(0.0, n_slabs - 1 - 1e-6)
    del s
    k0f = torch.floor(u)
    frac = u.sub_(k0f)
    k0 = k0f.to(torch.int16)
    del k0f
    w_lo = val * (1.0 - frac)  # weight of slab k0
    w_hi = val * frac  # weight of slab k0 + 1
    del frac
    operand = volume.new_zeros((pz, px, ny))  # zero ghost voxels around, as the projector has
    operand[pad : pad + nz, pad : pad + nx] = volume.permute(0, 2, 1)
    operand = operand.view(pz * px, ny)
    out = torch.empty((n_slabs, na, det, ny), **f32)
    csk = torch.zeros(val.numel() + 1, dtype=torch.int64, device=dev)
    idt = col.dtype
    for k in range(n_slabs):
        lo, hi = k0 == k, k0 == k - 1  # entries whose slab k is their lower / upper node
        m = lo | hi
        torch.cumsum(m, 0, out=csk[1:])
        crow_k = csk[crow]
        idx = torch.nonzero(m).squeeze(1)
        w = torch.where(lo[idx], w_lo[idx], w_hi[idx])
        mat = torch.sparse_csr_tensor(
            crow_k.to(idt), col[idx], w, size=a.shape, check_invariants=False
        )
        torch.mm(mat, operand, out=out[k].view(na * det, ny))
    return out.permute(0, 1, 3, 2)  # a view: (K, n_angles, Y, det)


def _pad_size(n: int) -> int:
    """A length ≥ n with only small prime factors (fast FFTs)."""
    m = n
    while True:
        r = m
        for p in (2, 3, 5):
            while r % p == 0:
                r //= p
        if r == 1:
            return m
        m += 1


def blur_and_sum(
    slabs: torch.Tensor,
    sigma_px: torch.Tensor,
    sweep_px: torch.Tensor | None = None,
    drift_yt_px: torch.Tensor | None = None,
) -> torch.Tensor:
    """Blur every slab by its own detector-plane kernel and sum the slabs.

    Parameters
    ----------
    slabs : torch.Tensor, (K, n, Y, det)
        Slab projections (K may be 1).
    sigma_px : torch.Tensor, (K, n)
        Gaussian sd in pixels (isotropic in Y and det), 0 for none.
    sweep_px : torch.Tensor, (K, n), optional
        Width of a box along the detector axis in pixels (rotation during exposure).
    drift_yt_px : torch.Tensor, (n, 2), optional
        Drift vector (Y, det) in pixels; a box along it.

    Returns
    -------
    torch.Tensor, float32, (n, Y, det)
        The blurred slabs, summed.
    """
    k, n, ny, nt = slabs.shape
    dev = slabs.device
    reach = float(3.0 * sigma_px.max()) if sigma_px.numel() else 0.0
    if sweep_px is not None:
        reach += 0.5 * float(sweep_px.max())
    if drift_yt_px is not None:
        reach += 0.5 * float(drift_yt_px.abs().max())
    pad = int(math.ceil(reach)) + 2
    py = _pad_size(ny + 2 * pad)
    pt = _pad_size(nt + 2 * pad)
    pad_y0, pad_t0 = (py - ny) // 2, (pt - nt) // 2
    fy = torch.fft.fftfreq(py, device=dev, dtype=torch.float32)[:, None]
    ft = torch.fft.rfftfreq(pt, device=dev, dtype=torch.float32)[None, :]
    common = None
    if drift_yt_px is not None:
        d = drift_yt_px.to(dev, torch.float32)
        common = torch.sinc(d[:, 0, None, None] * fy + d[:, 1, None, None] * ft)  # (n, py, pt/2+1)
    f2 = (fy**2 + ft**2)[None]
    acc = None
    for i in range(k):
        x = F.pad(
            slabs[i][:, None],
            (pad_t0, pt - nt - pad_t0, pad_y0, py - ny - pad_y0),
            mode="replicate",
        )[:, 0]
        spec = torch.fft.rfft2(x)
        sig = sigma_px[i].to(dev, torch.float32)[:, None, None]
        h = torch.exp(-2.0 * math.pi**2 * sig**2 * f2)
        if sweep_px is not None:
            h = h * torch.sinc(sweep_px[i].to(dev, torch.float32)[:, None, None] * ft[None])
        if common is not None:
            h = h * common
        spec = spec * h
        acc = spec if acc is None else acc + spec
    out = torch.fft.irfft2(acc, s=(py, pt))
    return out[:, pad_y0 : pad_y0 + ny, pad_t0 : pad_t0 + nt].contiguous()


def warp_projections(
    proj: torch.Tensor,
    scale: np.ndarray,
    shift_yt_px: np.ndarray,
    axis_angle_deg: float = 0.0,
) -> torch.Tensor:
    """Move each projection as the sample moved: ``O(q) = s·P(R⁻¹(q − b)/s)``.

    ``s`` (per projection) scales the sample about the detector centre (isotropic shrinkage: paths
    shrink by ``s`` too), ``R`` rotates by the in-plane tilt-axis angle, ``b = (b_y, b_t)`` shifts
    (pixels). Bilinear, edges replicated. ``proj`` ``(n, Y, det)``.
    """
    n, ny, nt = proj.shape
    dev = proj.device
    a = math.radians(axis_angle_deg)
    rinv = torch.tensor(
        [[math.cos(a), math.sin(a)], [-math.sin(a), math.cos(a)]], dtype=torch.float64
    )  # R⁻¹ in (t, y) order
    s = torch.as_tensor(np.asarray(scale, dtype=np.float64))
    b = torch.as_tensor(np.asarray(shift_yt_px, dtype=np.float64))[:, [1, 0]]  # (t, y) order
    amat = rinv[None] / s[:, None, None]  # (n, 2, 2)
    c = -(amat @ b[:, :, None])[:, :, 0]
    d = torch.tensor([nt / 2.0, ny / 2.0], dtype=torch.float64)
    theta = torch.empty((n, 2, 3), dtype=torch.float64)
    theta[:, :, :2] = amat * d[None, None, :] / d[None, :, None]
    theta[:, :, 2] = c / d[None, :]
    grid = F.affine_grid(theta.to(torch.float32).to(dev), (n, 1, ny, nt), align_corners=False)
    out = F.grid_sample(
        proj[:, None], grid, mode="bilinear", padding_mode="border", align_corners=False
    )[:, 0]
    return out * torch.as_tensor(scale, dtype=torch.float32, device=dev)[:, None, None]
