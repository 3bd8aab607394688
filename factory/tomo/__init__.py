"""The tomography core: parallel-beam projection, back-projection, FBP and SIRT on PyTorch.

Arrays are ``(Z, X)`` slices or ``(Z, Y, X)`` volumes with **Y the tilt axis**; sinograms are
``(n_angles, det)`` or ``(n_angles, Y, det)``; angles in degrees; line integrals in voxel units.
See :mod:`factory.tomo.geometry` for the coordinate conventions.
"""

from factory.tomo import radon_backend
from factory.tomo.functional import (
    back_project,
    clear_cache,
    fbp,
    forward_project,
    get_projector,
    sirt,
)
from factory.tomo.geometry import FILTERS, Geometry, angle_weights
from factory.tomo.projector import ParallelProjector

__all__ = [
    "FILTERS",
    "Geometry",
    "ParallelProjector",
    "angle_weights",
    "radon_backend",
    "back_project",
    "clear_cache",
    "fbp",
    "forward_project",
    "get_projector",
    "sirt",
]
