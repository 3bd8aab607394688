"""Parallel-beam geometry: angles, detector, volume grid and rotation-centre offset.

Conventions (fixed for the whole project):

- A slice is indexed ``(z, x)``; a volume ``(z, y, x)`` where **y is the tilt axis**, so every y-row
  is an independent 2D parallel-beam problem.
- Centred coordinates: ``zc = iz - (nz - 1) / 2`` and ``xc = ix - (nx - 1) / 2`` (voxel units).
- At angle θ (degrees in the API) the beam runs along ``(cos θ, sin θ)`` in ``(z, x)``; at 0° it
  runs along z, so the projection equals ``volume.sum(axis=0)`` inside the field of view.
- A voxel at ``(zc, xc)`` lands at detector coordinate ``t = xc·cos θ − zc·sin θ + center_offset``;
  detector pixel ``j`` is centred at ``t_j = j − (det − 1) / 2``. ``center_offset`` (detector
  pixels) is where the rotation axis projects, relative to the detector middle: an axis at column
  ``c`` of a ``det``-pixel detector has ``center_offset = c − (det − 1) / 2``.
"""

from __future__ import annotations

import math
import numbers
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import torch

FILTERS = ("ramp", "shepp-logan", "cosine", "hamming", "hann")


def _to_numpy_1d(values, name: str) -> np.ndarray:
    if isinstance(values, torch.Tensor):
        arr = values.detach().cpu().numpy()
    else:
        try:
            arr = np.asarray(values)
        except (TypeError, ValueError) as err:
            raise ValueError(f"{name} must be a 1-D sequence of numbers; got {values!r}") from err
    if arr.dtype == object or not (
        np.issubdtype(arr.dtype, np.floating) or np.issubdtype(arr.dtype, np.integer)
    ):
        raise ValueError(f"{name} must be real numbers; got dtype {arr.dtype}")
    return arr


def check_angles(angles_deg, name: str = "angles_deg") -> np.ndarray:
    """Validate projection angles (degrees) and return them as a float64 numpy array (n_angles,)."""
    arr = _to_numpy_1d(angles_deg, name)
    if arr.ndim != 1:
        raise ValueError(f"{name} must be 1-D (n_angles,); got shape {tuple(arr.shape)}")
    if arr.size == 0:
        raise ValueError(f"{name} is empty: at least one projection angle is needed")
    arr = arr.astype(np.float64)
    if not np.all(np.isfinite(arr)):
        bad = arr[~np.isfinite(arr)][:3].tolist()
        raise ValueError(f"{name} must be finite; got non-finite values {bad}")
    return arr


def check_positive_int(value, name: str) -> int:
    """Return ``value`` as an int > 0 or raise a ValueError naming ``name``."""
    if isinstance(value, bool) or not isinstance(value, numbers.Integral) or int(value) <= 0:
        raise ValueError(f"{name} must be a positive integer; got {value!r}")
    return int(value)


def check_offset(value, name: str = "center_offset") -> float:
    """Return a finite float rotation-centre offset (detector pixels)."""
    if isinstance(value, bool) or not isinstance(value, numbers.Real):
        raise ValueError(f"{name} must be a real number (detector pixels); got {value!r}")
    value = float(value)
    if not math.isfinite(value):
        raise ValueError(f"{name} must be finite; got {value!r}")
    return value


def check_shape(shape, name: str = "shape") -> tuple[int, ...]:
    """Validate a volume shape ``(Z, X)`` or ``(Z, Y, X)`` of positive ints."""
    if not isinstance(shape, Sequence) or isinstance(shape, str) or len(shape) not in (2, 3):
        raise ValueError(f"{name} must be (Z, X) or (Z, Y, X); got {shape!r}")
    return tuple(check_positive_int(s, f"{name}[{i}]") for i, s in enumerate(shape))


def check_filter(name) -> str:
    """Validate an FBP filter name (one of :data:`FILTERS`)."""
    if not isinstance(name, str) or name.lower() not in FILTERS:
        raise ValueError(f"filter must be one of {', '.join(FILTERS)}; got {name!r}")
    return name.lower()


@dataclass(frozen=True)
class Geometry:
    """One 2D parallel-beam geometry, shared by every y-row of a volume.

    Attributes
    ----------
    shape : tuple of int, (nz, nx)
        Slice shape in voxels.
    angles_deg : tuple of float, (n_angles,)
        Projection angles in degrees, float64 (any order, any range).
    det_count : int
        Number of detector pixels (pixel pitch = voxel size).
    center_offset : float
        Rotation-axis position relative to the detector middle, in detector pixels.
    """

    shape: tuple[int, int]
    angles_deg: tuple[float, ...]
    det_count: int
    center_offset: float = 0.0

    @classmethod
    def make(cls, shape, angles_deg, det_count=None, center_offset=0.0) -> Geometry:
        """Validated constructor; ``det_count`` defaults to ``nx`` and ``shape`` may be 3-D."""
        shape = check_shape(shape)
        nz, nx = shape[0], shape[-1]
        angles = check_angles(angles_deg)
        det = nx if det_count is None else check_positive_int(det_count, "det_count")
        return cls((nz, nx), tuple(angles.tolist()), det, check_offset(center_offset))

    @property
    def n_angles(self) -> int:
        return len(self.angles_deg)

    @property
    def key(self) -> tuple:
        return (self.shape, self.angles_deg, self.det_count, self.center_offset)


def angle_weights(angles_deg: np.ndarray) -> np.ndarray:
    """Angular quadrature weights (radians) for filtered back-projection of any angle set.

    Each angle gets half the gap to each neighbour in sorted order (the two end angles get their
    single gap), so dropped or jittered angles are weighted by the arc they actually represent. If
    the weights total more than π (sets spanning more than 180°, e.g. 0–359°, measure each line
    twice) they are scaled to total π. For ``n`` equally spaced angles over 180° every weight is
    ``π / n``, which with the ``½`` of the FBP formula gives scikit-image's ``π / (2 n)`` scale. A
    single angle gets ``π``. Limited tilt ranges keep their true step, so the missing wedge is
    missing, not smeared.
    """
    ang = np.asarray(angles_deg, dtype=np.float64)
    n = ang.size
    if n == 1:
        return np.array([math.pi])
    order = np.argsort(ang, kind="stable")
    gaps = np.diff(ang[order])
    w_sorted = np.empty(n)
    w_sorted[1:-1] = 0.5 * (gaps[:-1] + gaps[1:])
    w_sorted[0] = gaps[0]
    w_sorted[-1] = gaps[-1]
    total = w_sorted.sum()
    if total > 180.0:
        w_sorted *= 180.0 / total
    if total <= 0.0:  # all angles equal: they share one 180° coverage
        w_sorted[:] = 180.0 / n
    w = np.empty(n)
    w[order] = w_sorted
    return np.deg2rad(w)


def fourier_filter(size: int, name: str) -> np.ndarray:
    """Real FBP filter (float64) on the ``rfft`` frequencies of a zero-padded row of ``size``.

    The ramp is the Fourier transform of the band-limited spatial ramp kernel (Kak & Slaney,
    *Principles of Computerized Tomographic Imaging*, 1988, eq. 61), which avoids the DC offset of a
    sampled ``|f|``; the windows follow scikit-image's ``iradon`` so results are comparable.
    """
    n = np.concatenate(
        (
            np.arange(1, size // 2 + 1, 2, dtype=np.int64),
            np.arange(size // 2 - 1, 0, -2, dtype=np.int64),
        )
    )
    f = np.zeros(size)
    f[0] = 0.25
    f[1::2] = -1.0 / (np.pi * n) ** 2
    filt = 2.0 * np.real(np.fft.fft(f))
    if name == "ramp":
        pass
    elif name == "shepp-logan":
        omega = np.pi * np.fft.fftfreq(size)[1:]
        filt[1:] *= np.sin(omega) / omega
    elif name == "cosine":
        freq = np.linspace(0, np.pi, size, endpoint=False)
        filt *= np.fft.fftshift(np.sin(freq))
    elif name == "hamming":
        filt *= np.fft.fftshift(np.hamming(size))
    elif name == "hann":
        filt *= np.fft.fftshift(np.hanning(size))
    else:  # pragma: no cover - names are validated by check_filter
        raise ValueError(f"filter must be one of {', '.join(FILTERS)}; got {name!r}")
    # The windows are not exactly even on the FFT grid; scikit-image keeps the real part of the
    # inverse FFT, which is the same as filtering with the even part used here on rfft frequencies.
    even = 0.5 * (filt + np.roll(filt[::-1], 1))
    return even[: size // 2 + 1].copy()


def padded_size(det_count: int) -> int:
    """Zero-padded FFT length: the next power of two ≥ 2·det_count, at least 64."""
    return max(64, 1 << (2 * det_count - 1).bit_length())
