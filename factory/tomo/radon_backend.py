"""torch-radon backend (CUDA only) for forward projection and FBP.

torch-radon (M. Ronchetti, https://github.com/matteo-ronchetti/torch-radon) is a CUDA extension that
is not on the package index: users build it or take a conda build. When it is importable,
:func:`factory.tomo.forward_project` and :func:`factory.tomo.fbp` use it for CUDA tensors whose
geometry it can express: square slices (Z = X, a multiple of 16 for torch-radon 1.x), no
rotation-centre offset, float32, and no gradient wanted (autograd goes through the pure-PyTorch
backend, whose back-projection is the exact adjoint). ``back_project`` and ``sirt`` always use the
pure-PyTorch backend for the same reason.

Its back-projector is pixel-driven linear interpolation, like our FBP back-projector, and FBP uses
our filter and angle weights, so FBP results agree to interpolation precision. Its forward projector
samples rays with bilinear interpolation; on sharp phantoms it differs from our distance-driven one
by about 1 % (both are within a few % of exact line integrals).

Conventions are checked, not assumed: torch-radon 1.x negates the angles internally and 2.x does
not, so at first use per (size, detector, device) the backend projects an off-centre voxel and
compares it with the pure-PyTorch projector for both angle signs and both image orientations; if
none matches to 0.25 pixel the backend disables itself with a warning. ``SIMAQ_TOMO_BACKEND=torch``
(or the :func:`disabled` context manager) turns it off.
"""

from __future__ import annotations

import contextlib
import functools
import importlib.util
import os
import threading
import warnings

import numpy as np
import torch

from factory.tomo.geometry import Geometry
from factory.tomo.projector import ParallelProjector

_state = threading.local()
_calibration: dict[tuple, tuple[int, bool] | None] = {}
_ops: dict[tuple, object] = {}
_lock = threading.Lock()


@functools.cache
def available() -> bool:
    """Whether ``torch_radon`` is importable (it only works with CUDA)."""
    return importlib.util.find_spec("torch_radon") is not None


def enabled() -> bool:
    """Whether the backend may be used (not switched off by env var or :func:`disabled`)."""
    if getattr(_state, "disabled", 0):
        return False
    return os.environ.get("SIMAQ_TOMO_BACKEND", "auto").lower() not in ("torch", "pytorch")


@contextlib.contextmanager
def disabled():
    """Use the pure-PyTorch backend inside this block (this thread)."""
    _state.disabled = getattr(_state, "disabled", 0) + 1
    try:
        yield
    finally:
        _state.disabled -= 1


def expressible(x: torch.Tensor, geom: Geometry) -> bool:
    """Whether torch-radon can compute this call with our conventions (before calibration)."""
    nz, nx = geom.shape
    return (
        x.is_cuda
        and x.dtype == torch.float32
        and not (torch.is_grad_enabled() and x.requires_grad)
        and nz == nx
        and nx % 16 == 0
        and geom.center_offset == 0.0
    )


def usable(x: torch.Tensor, geom: Geometry) -> bool:
    """Whether ``forward_project``/``fbp`` should route this call to torch-radon."""
    if not (available() and enabled() and expressible(x, geom)):
        return False
    return _calibrate(x.device, geom.shape[1], geom.det_count) is not None


def _make(n: int, det: int, angles_rad: np.ndarray, device: torch.device):
    import torch_radon

    angles = torch.tensor(np.asarray(angles_rad, dtype=np.float32), device=device)
    if hasattr(torch_radon, "ParallelBeam"):  # torch-radon 2.x
        return torch_radon.ParallelBeam(det_count=det, angles=angles, volume=n)
    return torch_radon.Radon(n, angles, det_count=det)  # torch-radon 1.x


def _operator(n: int, det: int, angles_deg: tuple, device: torch.device):
    sign, _ = _calibration[(str(device), n, det)]
    key = (str(device), n, det, angles_deg)
    with _lock:
        op = _ops.get(key)
        if op is None:
            if len(_ops) >= 4:
                _ops.pop(next(iter(_ops)))
            op = _ops[key] = _make(n, det, sign * np.deg2rad(angles_deg), device)
    return op


def _calibrate(device: torch.device, n: int, det: int) -> tuple[int, bool] | None:
    """Find torch-radon's angle sign and image orientation relative to ours (cached)."""
    key = (str(device), n, det)
    if key in _calibration:
        return _calibration[key]
    result = None
    try:
        angles = np.array([0.0, 30.0, 75.0, 120.0])
        img = torch.zeros(n, n, device=device)
        img[n // 4, (3 * n) // 4 - 1] = 1.0
        with disabled():
            ref = ParallelProjector((n, n), angles, det, device=device).forward(img)
        t = torch.arange(det, device=device, dtype=torch.float32)
        ref_c = (ref * t).sum(1) / ref.sum(1)
        for sign in (1, -1):
            op = _make(n, det, sign * np.deg2rad(angles), device)
            for transpose in (False, True):
                x = (img.t() if transpose else img).contiguous()[None]
                out = op.forward(x)[0].float()
                mass = out.sum(1)
                if not torch.allclose(mass, ref.sum(1), rtol=0.05):
                    continue
                cen = (out * t).sum(1) / mass
                if float((cen - ref_c).abs().max()) < 0.25:
                    ones = torch.ones(1, angles.size, det, device=device)
                    bp = op.backprojection(ones)[0]
                    if abs(float(bp[n // 2, n // 2]) - angles.size) < 0.05 * angles.size:
                        result = (sign, transpose)
                        break
            if result is not None:
                break
    except Exception as err:  # noqa: BLE001 - any failure means: do not use it
        warnings.warn(f"torch-radon backend disabled: {err}", RuntimeWarning, stacklevel=3)
        result = None
    else:
        if result is None:
            warnings.warn(
                "torch-radon backend disabled: its geometry did not match ours in the "
                "self-check (angle sign, orientation, detector centre or scale)",
                RuntimeWarning,
                stacklevel=3,
            )
    _calibration[key] = result
    return result


def _to_images(vol: torch.Tensor, transpose: bool) -> torch.Tensor:
    """``(Z, [Y,] X)`` → ``(Y, Z, X)`` images (``(Y, X, Z)`` when torch-radon is transposed)."""
    v = vol[:, None, :] if vol.ndim == 2 else vol
    imgs = v.permute(1, 0, 2)
    return (imgs.transpose(1, 2) if transpose else imgs).contiguous()


def forward(vol: torch.Tensor, geom: Geometry) -> torch.Tensor:
    """torch-radon forward projection with our conventions: ``(Z, [Y,] X)`` → ``(A, [Y,] det)``."""
    n, det = geom.shape[1], geom.det_count
    _, transpose = _calibration[(str(vol.device), n, det)]
    op = _operator(n, det, geom.angles_deg, vol.device)
    sino = op.forward(_to_images(vol, transpose))  # (Y, A, det)
    out = sino.permute(1, 0, 2)
    return out[:, 0, :].contiguous() if vol.ndim == 2 else out.contiguous()


def fbp(sino: torch.Tensor, geom: Geometry, filter_name: str = "ramp") -> torch.Tensor:
    """Our filter and angle weights, torch-radon's back-projection: → ``(Z, [Y,] X)``."""
    n, det = geom.shape[1], geom.det_count
    _, transpose = _calibration[(str(sino.device), n, det)]
    helper = ParallelProjector(geom.shape, geom.angles_deg, det, 0.0, sino.device)  # no matrices
    filtered = helper.filter_sinogram(sino, filter_name)
    w = helper.angle_weights(filtered.dtype) * 0.5
    filtered = filtered * (w[:, None] if sino.ndim == 2 else w[:, None, None])
    f3 = filtered[:, None, :] if sino.ndim == 2 else filtered
    op = _operator(n, det, geom.angles_deg, sino.device)
    imgs = op.backprojection(f3.permute(1, 0, 2).contiguous())  # (Y, n, n)
    if transpose:
        imgs = imgs.transpose(1, 2)
    out = imgs.permute(1, 0, 2)
    return out[:, 0, :].contiguous() if sino.ndim == 2 else out.contiguous()
