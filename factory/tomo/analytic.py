"""Ellipse phantoms with exact parallel-beam line integrals, for accuracy tests and benchmarks.

An ellipse is a row ``(density, zc, xc, semi_x, semi_z, phi_deg)`` in centred voxel coordinates (the
conventions of :mod:`factory.tomo.geometry`): before rotation its ``semi_x`` axis lies along x and
its ``semi_z`` axis along z; ``phi_deg`` turns it from x towards z. Densities add where ellipses
overlap. The line integral of one ellipse (Kak & Slaney, *Principles of Computerized Tomographic
Imaging*, 1988, §3.1, eq. 5) is ``2 ρ A B / h² · sqrt(h² − τ²)`` with ``h`` its half-width along the
detector axis.
"""

from __future__ import annotations

import numpy as np

# A Shepp–Logan-like head (Shepp & Logan, IEEE TNS 21, 21, 1974, contrast-enhanced densities), in
# units of the inscribed radius: (density, zc, xc, semi_x, semi_z, phi_deg).
SHEPP_LOGAN = np.array(
    [
        [1.0, 0.0, 0.0, 0.69, 0.92, 0.0],
        [-0.8, 0.0184, 0.0, 0.6624, 0.874, 0.0],
        [-0.2, 0.0, 0.22, 0.11, 0.31, -18.0],
        [-0.2, 0.0, -0.22, 0.16, 0.41, 18.0],
        [0.1, -0.35, 0.0, 0.21, 0.25, 0.0],
        [0.1, -0.1, 0.0, 0.046, 0.046, 0.0],
        [0.1, 0.1, 0.0, 0.046, 0.046, 0.0],
        [0.1, 0.605, -0.08, 0.046, 0.023, 0.0],
        [0.1, 0.606, 0.0, 0.023, 0.023, 0.0],
        [0.1, 0.605, 0.06, 0.023, 0.046, 0.0],
    ]
)


def scaled(ellipses: np.ndarray, radius: float) -> np.ndarray:
    """Scale unit-radius ellipses (centres and semi-axes) to ``radius`` voxels."""
    e = np.array(ellipses, dtype=np.float64)
    e[:, 1:5] *= radius
    return e


def _axes(phi_deg):
    phi = np.deg2rad(phi_deg)
    # unit vectors (z, x) of the semi_x and semi_z axes
    u1 = np.stack([np.sin(phi), np.cos(phi)], axis=-1)
    u2 = np.stack([np.cos(phi), -np.sin(phi)], axis=-1)
    return u1, u2


def ellipse_image(ellipses: np.ndarray, shape: tuple[int, int], supersample: int = 4) -> np.ndarray:
    """Rasterise ellipses on a ``(Z, X)`` grid: each voxel's mean density over ``s×s`` samples."""
    nz, nx = shape
    s = int(supersample)
    off = (np.arange(s) + 0.5) / s - 0.5
    zc = (np.arange(nz)[:, None] + off[None, :]).reshape(-1) - (nz - 1) / 2.0
    xc = (np.arange(nx)[:, None] + off[None, :]).reshape(-1) - (nx - 1) / 2.0
    img = np.zeros((nz * s, nx * s))
    for rho, z0, x0, a, b, phi in np.asarray(ellipses, dtype=np.float64):
        u1, u2 = _axes(phi)
        dz, dx = zc[:, None] - z0, xc[None, :] - x0
        p1 = (dz * u1[0] + dx * u1[1]) / a
        p2 = (dz * u2[0] + dx * u2[1]) / b
        img += rho * (p1 * p1 + p2 * p2 <= 1.0)
    return img.reshape(nz, s, nx, s).mean(axis=(1, 3)).astype(np.float32)


def ellipse_sinogram(
    ellipses: np.ndarray, angles_deg, det_count: int, center_offset: float = 0.0
) -> np.ndarray:
    """Exact line integrals ``(n_angles, det)``, voxel units, at the detector pixel centres."""
    theta = np.deg2rad(np.asarray(angles_deg, dtype=np.float64))[:, None]
    t = (np.arange(det_count) - (det_count - 1) / 2.0 - center_offset)[None, :]
    n = (-np.sin(theta), np.cos(theta))  # detector axis in (z, x)
    out = np.zeros((theta.shape[0], det_count))
    for rho, z0, x0, a, b, phi in np.asarray(ellipses, dtype=np.float64):
        u1, u2 = _axes(phi)
        h2 = (a * (n[0] * u1[0] + n[1] * u1[1])) ** 2 + (b * (n[0] * u2[0] + n[1] * u2[1])) ** 2
        tau = t - (n[0] * z0 + n[1] * x0)
        out += np.where(
            tau * tau < h2, 2.0 * rho * a * b / h2 * np.sqrt(np.clip(h2 - tau * tau, 0, None)), 0.0
        )
    return out.astype(np.float32)
