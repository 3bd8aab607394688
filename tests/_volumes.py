"""Analytic test volumes for the acquisition and reconstruction tests: a 48³ grid at 50 nm, a
config of that grid, and phantoms (``lac`` float32 1/µm, ``labels`` uint8) made of one ellipsoid
or one bead."""

from __future__ import annotations

from types import SimpleNamespace

import numpy as np
import torch

from factory.config import parse_config

N = 48
VOXEL_NM = 50.0


def make_config(acquisition: dict | None = None, reconstruction: dict | None = None, n: int = N):
    """A config of an ``n``³ grid at :data:`VOXEL_NM`; no normalisation, ramp filter by default."""
    data = {
        "name": "test",
        "grid": {"shape": [n, n, n], "voxel_nm": VOXEL_NM},
        "acquisition": acquisition or {},
        "reconstruction": reconstruction or {"normalize": "none", "filter": "ramp"},
    }
    return parse_config(data)


def _phantom(inside: np.ndarray, lac: float) -> SimpleNamespace:
    vol = np.where(inside, lac, 0.0).astype(np.float32)
    return SimpleNamespace(
        lac=torch.from_numpy(vol), labels=torch.from_numpy(inside.astype(np.uint8))
    )


def _grid(n: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Voxel-centre coordinates (Z, Y, X) of an ``n``³ grid, 0 at its centre."""
    c = (np.arange(n) - (n - 1) / 2.0).astype(np.float32)
    return np.meshgrid(c, c, c, indexing="ij")


def ellipsoid_phantom(n: int = N, lac: float = 0.35, radii=(14, 18, 10), centre=(0, 0, 0)):
    """A uniform ellipsoid of LAC ``lac`` with semi-axes ``radii`` (Z, Y, X) voxels."""
    z, y, x = _grid(n)
    inside = (
        ((z - centre[0]) / radii[0]) ** 2
        + ((y - centre[1]) / radii[1]) ** 2
        + ((x - centre[2]) / radii[2]) ** 2
    ) <= 1.0
    return _phantom(inside, lac)


def bead_phantom(n: int = N, centre=(0.0, 0.0, 0.0), radius: float = 2.0, lac: float = 1.0):
    """A uniform ball of LAC ``lac`` and ``radius`` voxels at ``centre`` (Z, Y, X) voxels."""
    z, y, x = _grid(n)
    inside = (z - centre[0]) ** 2 + (y - centre[1]) ** 2 + (x - centre[2]) ** 2 <= radius**2
    return _phantom(inside, lac)
