"""The public functions: numpy in → numpy out, torch in → torch out on the same device.

Each call finds (or builds and caches) the :class:`~factory.tomo.projector.ParallelProjector` of its
geometry; a worker that reuses one geometry many times can hold a projector itself. On a CUDA
tensor, when ``torch_radon`` is importable and the geometry is one it can express, the torch-radon
backend (:mod:`factory.tomo.radon_backend`) is used instead.
"""

from __future__ import annotations

import threading
from collections import OrderedDict

import numpy as np
import torch

from factory.tomo import radon_backend
from factory.tomo.geometry import Geometry, check_filter, check_positive_int, check_shape
from factory.tomo.projector import ParallelProjector

CACHE_SIZE = 2  # a 256²-voxel, 100-angle geometry holds ~0.3 GB of matrices
_cache: OrderedDict[tuple, ParallelProjector] = OrderedDict()
_lock = threading.Lock()


def get_projector(shape, angles_deg, det_count=None, center_offset=0.0, device="cpu"):
    """Return the cached :class:`ParallelProjector` of a geometry (built lazily, LRU of size 2)."""
    geom = Geometry.make(shape, angles_deg, det_count, center_offset)
    dev = torch.device(device)
    key = (geom.key, str(dev))
    with _lock:
        proj = _cache.get(key)
        if proj is not None:
            _cache.move_to_end(key)
            return proj
        proj = ParallelProjector(
            geom.shape, geom.angles_deg, geom.det_count, geom.center_offset, dev
        )
        _cache[key] = proj
        while len(_cache) > CACHE_SIZE:
            _cache.popitem(last=False)[1].release()
        return proj


def _projector(shape, angles, det_count, center_offset, device, cache: bool):
    """The cached projector of a geometry, or (``cache=False``) a private one to release after."""
    if cache:
        return get_projector(shape, angles, det_count, center_offset, device)
    return ParallelProjector(shape, angles, det_count, center_offset, device)


def clear_cache() -> None:
    """Drop every cached projector (frees their matrices)."""
    with _lock:
        for proj in _cache.values():
            proj.release()
        _cache.clear()


def _as_tensor(x, name: str) -> tuple[torch.Tensor, bool]:
    """Convert an array-like to a float tensor; return it and whether the caller gave numpy."""
    if isinstance(x, torch.Tensor):
        if x.is_complex():
            raise ValueError(f"{name} must be real; got dtype {x.dtype}")
        if x.dtype not in (torch.float32, torch.float64):
            x = x.to(torch.float32)
        return x, False
    arr = np.asarray(x)
    if arr.dtype == object or not (
        np.issubdtype(arr.dtype, np.floating)
        or np.issubdtype(arr.dtype, np.integer)
        or arr.dtype == np.bool_
    ):
        raise ValueError(f"{name} must be a real numeric array; got dtype {arr.dtype}")
    return torch.from_numpy(np.ascontiguousarray(arr, dtype=np.float32)), True


def _out(t: torch.Tensor, numpy: bool):
    return t.detach().cpu().numpy() if numpy else t


def _check_ndim(t: torch.Tensor, name: str, axes: str) -> None:
    if t.ndim not in (2, 3):
        raise ValueError(f"{name} must be {axes}; got shape {tuple(t.shape)}")
    if 0 in t.shape:
        raise ValueError(f"{name} must not be empty; got shape {tuple(t.shape)}")


def _check_sinogram(sino: torch.Tensor, n_angles: int) -> None:
    _check_ndim(sino, "sinogram", "(n_angles, det) or (n_angles, Y, det)")
    if sino.shape[0] != n_angles:
        raise ValueError(
            f"sinogram has {sino.shape[0]} angles (shape {tuple(sino.shape)}) but angles_deg has "
            f"{n_angles}"
        )


def _slice_shape(shape, sino: torch.Tensor, name: str = "shape") -> tuple[int, int]:
    shape = check_shape(shape, name)
    if len(shape) == 3:
        if sino.ndim != 3 or sino.shape[1] != shape[1]:
            ny = sino.shape[1] if sino.ndim == 3 else "none (2-D sinogram)"
            raise ValueError(f"{name}={shape} has Y={shape[1]} but the sinogram's Y is {ny}")
    return shape[0], shape[-1]


def forward_project(volume, angles_deg, *, det_count=None, center_offset=0.0):
    """Parallel-beam line integrals of a slice or volume, in voxel units.

    Parameters
    ----------
    volume : numpy.ndarray or torch.Tensor, (Z, X) or (Z, Y, X)
        A slice or a volume (Y = tilt axis).
    angles_deg : array_like, (n_angles,)
        Projection angles in degrees; any set (limited, jittered, wedges).
    det_count : int, optional
        Detector pixels (default X), pitch = one voxel.
    center_offset : float
        Rotation-axis position relative to the detector middle, in detector pixels.

    Returns
    -------
    numpy.ndarray or torch.Tensor, float32, (n_angles, det) or (n_angles, Y, det)
        Same type and device as ``volume``. At 0° and ``det_count == X`` this equals
        ``volume.sum(axis=0)``.
    """
    vol, numpy = _as_tensor(volume, "volume")
    _check_ndim(vol, "volume", "(Z, X) or (Z, Y, X)")
    geom = Geometry.make(vol.shape, angles_deg, det_count, center_offset)
    if radon_backend.usable(vol, geom):
        return _out(radon_backend.forward(vol, geom), numpy)
    proj = get_projector(
        geom.shape, geom.angles_deg, geom.det_count, geom.center_offset, vol.device
    )
    return _out(proj.forward(vol), numpy)


def back_project(sinogram, angles_deg, *, shape, center_offset=0.0):
    """Exact adjoint of :func:`forward_project` (unfiltered back-projection; always pure PyTorch).

    Parameters
    ----------
    sinogram : numpy.ndarray or torch.Tensor, (n_angles, det) or (n_angles, Y, det)
        The projections.
    angles_deg : array_like, (n_angles,)
        The sinogram's angles in degrees.
    shape : tuple of int
        The volume shape ``(Z, X)`` or ``(Z, Y, X)`` (Y must match the sinogram's).
    center_offset : float
        As in :func:`forward_project`.

    Returns
    -------
    numpy.ndarray or torch.Tensor, (Z, X) or (Z, Y, X)
        ``(Z, X)`` for a 2-D sinogram, else ``(Z, Y, X)``; same type as ``sinogram``.
    """
    sino, numpy = _as_tensor(sinogram, "sinogram")
    geom = Geometry.make(check_shape(shape), angles_deg, None, center_offset)
    _check_sinogram(sino, geom.n_angles)
    nz, nx = _slice_shape(shape, sino)
    geom = Geometry.make((nz, nx), geom.angles_deg, sino.shape[-1], center_offset)
    proj = get_projector((nz, nx), geom.angles_deg, geom.det_count, geom.center_offset, sino.device)
    return _out(proj.adjoint(sino), numpy)


def fbp(sinogram, angles_deg, *, filter="ramp", shape=None, center_offset=0.0, cache=True):
    """Filtered back-projection with a zero-padded ramp-family filter.

    Parameters
    ----------
    sinogram : numpy.ndarray or torch.Tensor, (n_angles, det) or (n_angles, Y, det)
        Line integrals (voxel units).
    angles_deg : array_like, (n_angles,)
        The sinogram's angles in degrees.
    filter : str
        ``ramp``, ``shepp-logan``, ``cosine``, ``hamming`` or ``hann``.
    shape : tuple of int, optional
        Output ``(Z, X)`` or ``(Z, Y, X)``; default ``(det, det)``.
    center_offset : float
        Rotation-axis position relative to the detector middle, in detector pixels.
    cache : bool
        Keep the geometry's projector in the cache (for repeated calls); ``False`` builds a
        private one and releases its matrix on return (a one-off geometry, e.g. one sample's
        angles: ~0.3 GB at 512² and 80 angles that would otherwise stay cached).

    Returns
    -------
    numpy.ndarray or torch.Tensor, (Z, X) or (Z, Y, X)
        The reconstruction in the units of the volume that was projected:
        ``fbp(forward_project(v))`` ≈ ``v`` for a full 180° set. Angles are weighted by the arc each
        represents (:func:`factory.tomo.geometry.angle_weights`).
    """
    name = check_filter(filter)
    sino, numpy = _as_tensor(sinogram, "sinogram")
    angles = Geometry.make((1, 1), angles_deg).angles_deg
    _check_sinogram(sino, len(angles))
    det = sino.shape[-1]
    nz, nx = (det, det) if shape is None else _slice_shape(shape, sino)
    geom = Geometry.make((nz, nx), angles, det, center_offset)
    if radon_backend.usable(sino, geom):
        return _out(radon_backend.fbp(sino, geom, name), numpy)
    proj = _projector((nz, nx), angles, det, geom.center_offset, sino.device, cache)
    out = proj.fbp(sino, name)
    if not cache:
        proj.release()
    return _out(out, numpy)


def sirt(sinogram, angles_deg, *, iterations, shape, nonneg=True, center_offset=0.0, cache=True):
    """SIRT reconstruction (see :meth:`ParallelProjector.sirt`), starting from zero.

    Parameters
    ----------
    sinogram, angles_deg
        As in :func:`fbp`.
    iterations : int
        Number of SIRT updates (≥ 1).
    shape : tuple of int
        Output ``(Z, X)`` or ``(Z, Y, X)``.
    nonneg : bool
        Clip negative values after each update.
    center_offset : float
        As in :func:`forward_project`.
    cache : bool
        As in :func:`fbp`.

    Returns
    -------
    numpy.ndarray or torch.Tensor, (Z, X) or (Z, Y, X)
        The reconstruction, same type as ``sinogram``.
    """
    iterations = check_positive_int(iterations, "iterations")
    sino, numpy = _as_tensor(sinogram, "sinogram")
    angles = Geometry.make((1, 1), angles_deg).angles_deg
    _check_sinogram(sino, len(angles))
    nz, nx = _slice_shape(shape, sino)
    proj = _projector((nz, nx), angles, sino.shape[-1], center_offset, sino.device, cache)
    out = proj.sirt(sino, iterations, nonneg=bool(nonneg))
    if not cache:
        proj.release()
    return _out(out, numpy)
