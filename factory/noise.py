"""Procedural gradient (Perlin) and fractal noise in torch, seeded from a ``torch.Generator``.

Any number of dimensions (1-D, 2-D images, 3-D volumes (Z, Y, X)), any size, CPU or CUDA. Values
lie in [-1, 1] (classic Perlin noise with unit gradients peaks at ``sqrt(n)/2``; it is rescaled by
``2/sqrt(n)``). The noise is exactly Perlin's improved gradient noise (quintic fade) [1]_, evaluated
*separably*: with axis-aligned sample points, the sum over the 2^n lattice corners factorises into
n passes of a two-tap interpolation along one axis at a time, so the cost is a few gathers per
output voxel and no (2^n x N) corner tensors are ever formed.

Scale convention: ``scale`` is the lattice spacing in voxels (the size of one noise "cell", i.e.
roughly the feature size); ``periods`` is the alternative: the number of lattice cells across each
axis. A random sub-cell offset per axis is drawn so that the lattice zeros do not line up with voxel
0 of every map.

References
----------
.. [1] K. Perlin, "Improving noise", ACM Trans. Graph. 21(3), 681-682 (2002).
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import torch

__all__ = ["perlin_noise", "fractal_noise"]


def _as_shape(shape) -> tuple[int, ...]:
    if isinstance(shape, int):
        shape = (shape,)
    try:
        out = tuple(int(n) for n in shape)
    except TypeError:
        raise ValueError(f"shape: must be an int or a sequence of ints, got {shape!r}") from None
    if (
        not 1 <= len(out) <= 4
        or any(n < 1 for n in out)
        or any(n != s for n, s in zip(out, shape, strict=True))
    ):
        raise ValueError(f"shape: need 1 to 4 positive integer sizes, got {shape!r}")
    return out


def _per_axis(value, ndim: int, name: str) -> tuple[float, ...]:
    vals = (value,) * ndim if not isinstance(value, Sequence) else tuple(value)
    if len(vals) != ndim:
        raise ValueError(f"{name}: need one value or {ndim} values, got {value!r}")
    try:
        vals = tuple(float(v) for v in vals)
    except (TypeError, ValueError):
        raise ValueError(f"{name}: must be numbers, got {value!r}") from None
    if not all(math.isfinite(v) and v > 0 for v in vals):
        raise ValueError(f"{name}: must be finite and > 0, got {value!r}")
    return vals


def _spacing(shape: tuple[int, ...], scale, periods) -> tuple[float, ...]:
    """Lattice spacing per axis, from ``scale=`` (voxels) or ``periods=`` (cells across an axis)."""
    if (scale is None) == (periods is None):
        raise ValueError(f"give exactly one of scale= or periods= (got {scale=}, {periods=})")
    if scale is not None:
        return _per_axis(scale, len(shape), "scale")
    periods = _per_axis(periods, len(shape), "periods")
    return tuple(n / p for n, p in zip(shape, periods, strict=True))


def _resolve_device(generator: torch.Generator | None, device) -> torch.device:
    if device is not None:
        return torch.device(device)
    return generator.device if generator is not None else torch.device("cpu")


def _fade(t: torch.Tensor) -> torch.Tensor:
    return t * t * t * (t * (t * 6.0 - 15.0) + 10.0)


def _axis_taps(n: int, scale: float, offset: float, device) -> tuple[torch.Tensor, ...]:
    """Per-axis lattice index and tap weights for ``n`` samples at spacing ``scale`` voxels.

    Returns ``(i0, a0, a1, b0, b1)``: lower lattice node, fade weights of the two nodes (``a``) and
    fade weights times the signed distance to each node (``b``, the gradient-component factor).
    """
    p = torch.arange(n, dtype=torch.float64, device=device) / scale + offset
    i0 = torch.floor(p)
    f = p - i0
    s = _fade(f)
    a0, a1 = 1.0 - s, s
    b0, b1 = a0 * f, a1 * (f - 1.0)
    return (i0.long(), *(w.to(torch.float32) for w in (a0, a1, b0, b1)))


def _lerp_axis(t: torch.Tensor, dim: int, i0, w0, w1) -> torch.Tensor:
    """Two-tap interpolation of ``t`` along ``dim``: ``w0 * t[i0] + w1 * t[i0 + 1]``."""
    shape = [1] * t.dim()
    shape[dim] = -1
    lo = t.index_select(dim, i0)
    hi = t.index_select(dim, i0 + 1)
    return lo.mul_(w0.view(shape)).add_(hi.mul_(w1.view(shape)))


def _final_pass(part_a, part_b, taps, shape) -> torch.Tensor:
    """Interpolate along axis 0: ``a``-weights for ``part_a`` and ``b``-weights for ``part_b``.

    Loops over lattice cells (slabs of samples sharing the lower node), each slab one fused
    broadcast; this avoids materialising gathered full-size copies (memory-bound at 512^3).
    """
    i0, a0, a1, b0, b1 = taps
    out = torch.empty(shape, dtype=torch.float32, device=part_b.device)
    bshape = (-1,) + (1,) * (len(shape) - 1)
    nodes, counts = torch.unique_consecutive(i0, return_counts=True)
    start = 0
    for node, count in zip(nodes.tolist(), counts.tolist(), strict=True):
        stop = start + count
        sl = out[start:stop]
        torch.mul(part_b[node], b0[start:stop].view(bshape), out=sl)
        sl.addcmul_(part_b[node + 1], b1[start:stop].view(bshape))
        if part_a is not None:
            sl.addcmul_(part_a[node], a0[start:stop].view(bshape))
            sl.addcmul_(part_a[node + 1], a1[start:stop].view(bshape))
        start = stop
    return out


def perlin_noise(
    shape: int | Sequence[int],
    *,
    scale: float | Sequence[float] | None = None,
    periods: float | Sequence[float] | None = None,
    generator: torch.Generator | None = None,
    device: str | torch.device | None = None,
) -> torch.Tensor:
    """One octave of Perlin gradient noise.

    Parameters
    ----------
    shape : int or sequence of int
        Output shape, 1 to 4 axes, e.g. (Z, Y, X) for a volume or (Y, X) for an image.
    scale : float or sequence of float, optional
        Lattice spacing in voxels (feature size), one value or one per axis.
    periods : float or sequence of float, optional
        Alternatively, the number of lattice cells across each axis (``scale = n / periods``).
    generator : torch.Generator, optional
        Source of randomness (gradients and lattice offsets). The same generator state gives the
        same map; CPU draws are bit-identical across machines.
    device : str or torch.device, optional
        Where to compute; defaults to the generator's device (else CPU).

    Returns
    -------
    torch.Tensor
        float32 tensor of ``shape`` on ``device`` with values in [-1, 1] (zero mean in expectation).
    """
    shape = _as_shape(shape)
    nd = len(shape)
    scales = _spacing(shape, scale, periods)
    dev = _resolve_device(generator, device)
    gdev = generator.device if generator is not None else dev

    # Random sub-cell offsets, then unit gradients on the lattice that covers the samples.
    offsets = torch.rand(nd, generator=generator, device=gdev, dtype=torch.float64).tolist()
    lattice = tuple(
        int(math.floor((n - 1) / s + o)) + 2 for n, s, o in zip(shape, scales, offsets, strict=True)
    )
    if math.prod(lattice) > 8 * math.prod(shape) + (1 << 20):
        raise ValueError(f"scale: lattice spacing {scales} is too fine for shape {shape}")
    grads = torch.randn((nd, *lattice), generator=generator, device=gdev, dtype=torch.float32)
    grads = grads / grads.norm(dim=0, keepdim=True).clamp_min(1e-12)
    grads = grads.to(dev)
    taps = [_axis_taps(n, s, o, dev) for n, s, o in zip(shape, scales, offsets, strict=True)]

    # Component c of the gradient pairs with the signed distance along axis c ("b" taps) and with
    # fade weights only ("a" taps) along every other axis. Interpolate along axes nd-1..1 first
    # (small tensors); components 1.. share the axis-0 weights, so they are summed before the
    # final, full-size pass along axis 0.
    part_a = part_b = None
    for c in range(nd):
        t = grads[c]
        for axis in range(nd - 1, 0, -1):
            i0, a0, a1, b0, b1 = taps[axis]
            w0, w1 = (b0, b1) if axis == c else (a0, a1)
            t = _lerp_axis(t, axis, i0, w0, w1)
        if c == 0:
            part_b = t
        else:
            part_a = t if part_a is None else part_a.add_(t)
    out = _final_pass(part_a, part_b, taps[0], shape)
    return out.mul_(2.0 / math.sqrt(nd)).clamp_(-1.0, 1.0)


def fractal_noise(
    shape: int | Sequence[int],
    *,
    scale: float | Sequence[float] | None = None,
    periods: float | Sequence[float] | None = None,
    octaves: int = 1,
    persistence: float = 0.5,
    lacunarity: float = 2.0,
    generator: torch.Generator | None = None,
    device: str | torch.device | None = None,
) -> torch.Tensor:
    """Fractal (fBm) Perlin noise: a weighted sum of ``octaves`` independent Perlin maps.

    Octave ``k`` has lattice spacing ``scale / lacunarity**k`` and amplitude ``persistence**k``;
    the sum is divided by the total amplitude, so values stay in [-1, 1]. ``octaves=1`` is
    :func:`perlin_noise`. Other arguments as in :func:`perlin_noise` (``scale`` in voxels is the
    coarsest octave's spacing). Returns float32 of ``shape``.
    """
    if isinstance(octaves, bool) or not isinstance(octaves, int) or not 1 <= octaves <= 16:
        raise ValueError(f"octaves: must be an integer in [1, 16], got {octaves!r}")
    if not (isinstance(persistence, (int, float)) and 0.0 < persistence <= 1.0):
        raise ValueError(f"persistence: must be in (0, 1], got {persistence!r}")
    if not (isinstance(lacunarity, (int, float)) and lacunarity >= 1.0):
        raise ValueError(f"lacunarity: must be >= 1, got {lacunarity!r}")
    shape = _as_shape(shape)
    base = _spacing(shape, scale, periods)
    out = None
    total = 0.0
    for k in range(octaves):
        amp = persistence**k
        s = tuple(b / lacunarity**k for b in base)
        layer = perlin_noise(shape, scale=s, generator=generator, device=device)
        out = layer.mul_(amp) if out is None else out.add_(layer, alpha=amp)
        total += amp
    return out.div_(total)
