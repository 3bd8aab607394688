"""The phantom stage: yeast cells with organelles as LAC (1/µm) and label volumes (Z, Y, X).

``generate_phantom(config, seed, index=, device=, threads=)`` → :class:`Phantom`. Geometry is
drawn in numpy (:mod:`.plan`, :mod:`.placement`), then voxelised per cell with torch
(:mod:`.voxelize`).
"""

from factory.phantom.config import PhantomConfig
from factory.phantom.generate import Phantom, generate_phantom

__all__ = ["Phantom", "PhantomConfig", "generate_phantom"]
