"""Pure-PyTorch parallel-beam projector: one sparse system matrix shared by every y-row of a volume.

The model is distance-driven (De Man & Basu, "Distance-driven projection and backprojection in three
dimensions", Phys. Med. Biol. 49, 2463, 2004) specialised to parallel beams: along the axis the ray
runs closest to (z for |cos θ| ≥ |sin θ|, else x), a voxel is a strip of width
``c = max(|cos θ|, |sin θ|)`` on the detector axis with path length ``1 / c``; its weight in
detector pixel ``j`` is the overlap of that strip with the pixel, divided by ``c``. Hence

- at most two detector pixels per voxel and angle, every voxel's weights sum to exactly 1 (mass is
  conserved at every angle), and at 0° a volume on an aligned detector projects to ``sum(axis=0)``;
- the transpose ``Aᵀ`` (:meth:`ParallelProjector.adjoint`, SIRT, gradients) is a box-interpolating
  back-projector whose weights sum to 1, and it is the exact adjoint: both matrices are built from
  one table of pixel edges, so their weights are bit-identical.

Filtered back-projection uses a third matrix ``B``, linear interpolation at each voxel centre like
the reference implementations (see :func:`_build_interp`).

The matrix ``A`` (rows: angle·det + pixel, columns: z·nx + x) is built ray-driven and ``Aᵀ``
voxel-driven, both straight into CSR form without any sort, so set-up costs about as much as one
projection. A volume ``(Z, Y, X)`` is projected as one sparse × dense product with a ``(Z·X, Y)``
operand.
"""

from __future__ import annotations

import threading
import warnings

import numpy as np
import torch

from factory.tomo.geometry import (
    Geometry,
    angle_weights,
    check_filter,
    fourier_filter,
    padded_size,
)


def _csr(crow, col, val, size) -> torch.Tensor:
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message="Sparse CSR tensor support is in beta state")
        return torch.sparse_csr_tensor(crow, col, val, size=size, check_invariants=False)


def _index_dtype(nnz: int) -> torch.dtype:
    return torch.int32 if nnz < 2**31 - 1 else torch.int64


class _Tables:
    """The lower edge of every detector pixel on every voxel line, shared by both builders.

    Along the major axis of angle ``a`` (rows ``iz`` if ``|cos| ≥ |sin|``, else columns ``ix``),
    line ``l`` is a row of voxels indexed by the minor coordinate ``m`` (voxel ``m`` spans
    ``[m - ½, m + ½]``). Detector pixel ``j`` covers the minor interval ``[lo, lo + 1/c]`` with
    ``lo = j·p[a] + q[a, l]``. The weight of voxel ``(l, m)`` in pixel ``j`` is the overlap length
    of the two intervals (the distance-driven weight: overlap on the detector axis over ``c`` equals
    overlap in minor units), so both builders read ``lo`` from one table and produce bit-identical
    weights.
    """

    def __init__(self, geom: Geometry, device: torch.device):
        nz, nx = geom.shape
        det = geom.det_count
        theta = np.deg2rad(np.asarray(geom.angles_deg, dtype=np.float64))
        cos, sin = np.cos(theta), np.sin(theta)
        zmaj = np.abs(cos) >= np.abs(sin)
        c = np.maximum(np.abs(cos), np.abs(sin))
        shift = (det - 1) / 2.0 + geom.center_offset
        self.lines = n_lines = max(nz, nx)
        lidx = np.arange(n_lines, dtype=np.float64)
        zc = np.minimum(lidx, nz - 1) - (nz - 1) / 2.0
        xc = np.minimum(lidx, nx - 1) - (nx - 1) / 2.0
        with np.errstate(divide="ignore", invalid="ignore"):
            # z-major: t = xc·cos − zc·sin + shift solved for xc, pixel j's centre at t = j.
            p = np.where(zmaj, 1.0 / cos, -1.0 / sin)
            q_z = (zc[None, :] * sin[:, None] - shift) / cos[:, None] + (nx - 1) / 2.0
            q_x = (xc[None, :] * cos[:, None] + shift) / sin[:, None] + (nz - 1) / 2.0
        q = np.where(zmaj[:, None], q_z, q_x) - 0.5 / c[:, None]
        f32 = dict(dtype=torch.float32, device=device)
        self.zmajor = torch.tensor(zmaj, device=device)
        self.inv_c = torch.tensor(1.0 / c, **f32)
        self.p = torch.tensor(p, **f32)
        self.q = torch.tensor(q, **f32)  # (na, L)
        jf = torch.arange(det, **f32)
        # lo[a, j, l]: lower edge of pixel j on line l, minor-axis voxel units.
        self.lo = torch.addcmul(self.q[:, None, :], jf[None, :, None], self.p[:, None, None])


# Ghost cells: columns of A that fall outside the volume point at zero "ghost" voxels of a padded
# grid (3 on each side of each axis), and B's that fall off the detector at 2 ghost pixels on each
# side, so the hot builders need no validity masks. The operators pad their operands with zeros.
VOX_PAD = (3, 3)
BIN_PAD = 2


class _BufferPool:
    """Recycled CPU buffers for the matrices and their build scratch.

    Every simulated sample has its own angles, so a worker builds a new geometry per sample; fresh
    100-MB allocations are page-faulted in by the kernel, which costs more than computing the
    weights. Buffers of discarded projectors (never exposed through
    :meth:`ParallelProjector.matrix`) and build scratch come back here and are reused by the next
    build of the same size.

    Buffers over ``max_buffer_bytes`` are not kept (issue 13): at that size (a 512² geometry's
    ~0.5 GB matrix) the page faults are a small part of a build, and idle buffers would hold their
    memory through the rest of the sample (its reconstruction, the next phantom).
    """

    def __init__(self, max_bytes: int = 1 << 30, max_buffer_bytes: int = 64 << 20):
        self.max_bytes = max_bytes
        self.max_buffer_bytes = max_buffer_bytes
        self._free: dict[tuple, list[torch.Tensor]] = {}
        self._bytes = 0
        self._lock = threading.Lock()

    def take(self, shape, dtype, device) -> torch.Tensor:
        numel = int(np.prod(shape))
        key = (numel, dtype, torch.device(device))
        with self._lock:
            bufs = self._free.get(key)
            if bufs:
                buf = bufs.pop()
                self._bytes -= buf.numel() * buf.element_size()
                return buf.view(shape)
        return torch.empty(shape, dtype=dtype, device=device)

    def give(self, *tensors: torch.Tensor) -> None:
        for t in tensors:
            if t is None or t.device.type != "cpu" or not t.is_contiguous():
                continue  # CUDA has its own caching allocator
            nbytes = t.numel() * t.element_size()
            if nbytes > self.max_buffer_bytes:
                continue
            with self._lock:
                if self._bytes + nbytes > self.max_bytes:
                    continue
                self._free.setdefault((t.numel(), t.dtype, t.device), []).append(t.view(-1))
                self._bytes += nbytes

    def clear(self) -> None:
        with self._lock:
            self._free.clear()
            self._bytes = 0


POOL = _BufferPool()


def _dd_weights(lo, hi, out=None):
    """Distance-driven weights of the three voxels a pixel span ``[lo, hi]`` can overlap.

    With ``m0 = floor(lo + ½)`` the voxel holding ``lo`` and ``e = m0 + ½`` its upper edge, the
    overlaps of voxels ``m0``, ``m0 + 1`` and ``m0 + 2`` are ``min(e, hi) − lo``,
    ``clamp(hi − e, 0, 1)`` and ``clamp(hi − e − 1, 0)`` (the span is at most √2 long). Both
    builders evaluate exactly these expressions on the same ``lo``, so A and Aᵀ hold bit-identical
    weights.
    """
    m0 = torch.add(lo, 0.5).floor_()
    e = torch.add(m0, 0.5)
    w0, w1, w2 = out if out is not None else (None, None, None)
    w0 = torch.minimum(e, hi, out=w0).sub_(lo)
    d = torch.sub(hi, e, out=e)
    w1 = torch.clamp(d, 0.0, 1.0, out=w1)
    w2 = torch.sub(d, 1.0, out=w2).clamp_min_(0.0)
    return m0, (w0, w1, w2)


def _build_forward(geom: Geometry, tab: _Tables) -> torch.Tensor:
    """A as CSR (n_angles·det, padded voxels), ray-driven: 3 candidate voxels per ray and line.

    Row ``a·det + j`` holds its entries in the order (candidate k, line l).
    """
    nz, nx = geom.shape
    det, na, n_lines = geom.det_count, geom.n_angles, tab.lines
    device = tab.lo.device
    pz, px = nz + sum(VOX_PAD), nx + sum(VOX_PAD)
    lo = tab.lo
    shape = lo.shape
    hi = torch.add(lo, tab.inv_c[:, None, None], out=POOL.take(shape, torch.float32, device))
    val = POOL.take((na, det, 3, n_lines), torch.float32, device)
    m0 = POOL.take(shape, torch.float32, device)
    e = POOL.take(shape, torch.float32, device)
    torch.add(lo, 0.5, out=m0).floor_()
    torch.add(m0, 0.5, out=e)
    w0, w1, w2 = val.unbind(2)  # the same expressions as _dd_weights, into pooled buffers
    torch.minimum(e, hi, out=w0).sub_(lo)
    d = torch.sub(hi, e, out=e)
    torch.clamp(d, 0.0, 1.0, out=w1)
    torch.sub(d, 1.0, out=w2).clamp_min_(0.0)
    zmaj = tab.zmajor[:, None, None]
    n_line = torch.where(zmaj, nz, nx).to(torch.int32)
    n_minor = torch.where(zmaj, nx, nz).to(torch.int32)
    line = torch.arange(n_lines, device=device, dtype=torch.int32)[None, None, :]
    line = torch.minimum(line, n_line)  # lines past the volume (non-square grids) go to a ghost
    # padded voxel index = (l + 3)·sl + (m + 3)·sm; (sl, sm) = (px, 1) on z-major lines else (1, px)
    sl = torch.where(zmaj, px, 1).to(torch.int32)
    sm = torch.where(zmaj, 1, px).to(torch.int32)
    base = (line + VOX_PAD[0]) * sl + VOX_PAD[0] * sm
    # a pixel wholly outside the volume gets m0 clamped so all three candidates are ghosts
    m0.clamp_(min=torch.full_like(n_minor, -3, dtype=torch.float32), max=n_minor.float())
    m0i = POOL.take(shape, torch.int32, device)
    m0i.copy_(m0)
    POOL.give(hi, m0, e)
    idt = _index_dtype(max(val.numel(), pz * px))
    col = POOL.take((na, det, 3, n_lines), idt, device)
    c0, c1, c2 = col.unbind(2)
    torch.addcmul(base, m0i, sm, out=c0)
    torch.add(c0, sm, out=c1)
    torch.add(c1, sm, out=c2)
    POOL.give(m0i)
    crow = torch.arange(0, na * det + 1, device=device, dtype=torch.int64).mul_(n_lines * 3)
    return _csr(crow.to(idt), col.view(-1), val.view(-1), (na * det, pz * px))


def _build_adjoint(geom: Geometry, tab: _Tables) -> torch.Tensor:
    """Aᵀ as CSR (Z·X, n_angles·det), voxel-driven: two candidate pixels per voxel and angle."""
    nz, nx = geom.shape
    det, na, n_lines = geom.det_count, geom.n_angles, tab.lines
    device = tab.lo.device
    zmaj = tab.zmajor[None, None, :]
    iz = torch.arange(nz, device=device, dtype=torch.int32)[:, None, None]
    ix = torch.arange(nx, device=device, dtype=torch.int32)[None, :, None]
    a = torch.arange(na, device=device, dtype=torch.int32)[None, None, :]
    line = torch.where(zmaj, iz, ix)  # (nz, nx, na)
    m = torch.where(zmaj, ix, iz).to(torch.float32)
    q = tab.q.reshape(-1)[a * n_lines + line]
    p = tab.p[None, None, :]
    inv_c = tab.inv_c[None, None, :]
    # pixel j overlaps voxel m iff j·p + q ∈ (m − ½ − 1/c, m + ½): at most two integers j
    edge = torch.where(p > 0, -0.5 - inv_c, torch.full_like(inv_c, 0.5))
    j0 = torch.floor((m + edge - q) / p) + 1.0
    lo_flat = tab.lo.reshape(-1)
    idt = _index_dtype(max(nz * nx * na * 2, na * det))
    val = torch.empty((nz, nx, 2, na), dtype=torch.float32, device=device)
    col = torch.empty((nz, nx, 2, na), dtype=idt, device=device)
    for k in (0, 1):
        j = (j0 + k).clamp_(-1, det)
        ok = (j >= 0) & (j <= det - 1)
        ji = j.clamp_(0, det - 1).to(torch.int32)
        lo = lo_flat[(a * det + ji) * n_lines + line]
        m0, (w0, w1, w2) = _dd_weights(lo, lo + inv_c)
        kk = m - m0  # which of the pixel's three candidates this voxel is
        w = torch.where(kk == 0, w0, torch.where(kk == 1, w1, torch.where(kk == 2, w2, 0.0)))
        val[:, :, k, :] = torch.where(ok, w, 0.0)
        col[:, :, k, :] = a * det + ji
    crow = torch.arange(0, nz * nx + 1, device=device, dtype=torch.int64).mul_(2 * na)
    return _csr(crow.to(idt), col.view(-1), val.view(-1), (nz * nx, na * det))


def _build_interp(geom: Geometry, device: torch.device) -> torch.Tensor:
    """FBP back-projector as CSR (Z·X, padded pixels): linear interpolation at each voxel centre.

    This is the pixel-driven back-projector of the reference implementations (scikit-image
    ``iradon``, torch-radon): filtered projections are sampled at ``t`` with weights ``(1 − f, f)``.
    Its smoother kernel suits the ramp filter better than the distance-driven transpose, and FBP
    needs no adjoint. Row entries are ordered (k, angle).
    """
    nz, nx = geom.shape
    det, na = geom.det_count, geom.n_angles
    theta = np.deg2rad(np.asarray(geom.angles_deg, dtype=np.float64))
    shift = (det - 1) / 2.0 + geom.center_offset
    f32 = dict(dtype=torch.float32, device=device)
    xcos = torch.tensor((np.arange(nx) - (nx - 1) / 2.0)[:, None] * np.cos(theta)[None, :], **f32)
    zs = torch.tensor(
        (np.arange(nz) - (nz - 1) / 2.0)[:, None] * np.sin(theta)[None, :] - shift, **f32
    )
    shape = (nz, nx, na)
    u = POOL.take(shape, torch.float32, device)
    torch.sub(xcos[None, :, :], zs[:, None, :], out=u)  # detector pixel-index units
    j0 = POOL.take(shape, torch.float32, device)
    torch.floor(u, out=j0)
    val = POOL.take((nz, nx, 2, na), torch.float32, device)
    torch.sub(u, j0, out=val[:, :, 1, :])
    torch.sub(1.0, val[:, :, 1, :], out=val[:, :, 0, :])
    stride = det + 2 * BIN_PAD
    idt = _index_dtype(max(val.numel(), na * stride))
    abase = torch.arange(na, device=device, dtype=torch.int32) * stride + BIN_PAD
    col = POOL.take((nz, nx, 2, na), idt, device)
    c0, c1 = col.unbind(2)
    ji = POOL.take(shape, torch.int32, device)
    ji.copy_(j0.clamp_(-2, det))
    torch.add(ji, abase, out=c0)
    torch.add(c0, 1, out=c1)
    POOL.give(u, j0, ji)
    crow = torch.arange(0, nz * nx + 1, device=device, dtype=torch.int64).mul_(2 * na)
    return _csr(crow.to(idt), col.view(-1), val.view(-1), (nz * nx, na * stride))


def _sort_rows(mat: torch.Tensor) -> torch.Tensor:
    """Sort the column indices of a fixed-row-length CSR matrix (cuSPARSE prefers sorted rows)."""
    crow, col, val = mat.crow_indices(), mat.col_indices(), mat.values()
    n_rows = crow.numel() - 1
    per = col.numel() // max(n_rows, 1)
    col2, order = col.view(n_rows, per).to(torch.int64).sort(dim=1)
    val2 = val.view(n_rows, per).gather(1, order)
    return _csr(crow, col2.reshape(-1).to(col.dtype), val2.reshape(-1), mat.shape)


#: Bytes of operand plus result per chunk of Y rows in ``forward``, ``adjoint`` and ``fbp``: a
#: 512² slice takes ~1.2 MB a row, so chunks of ~48 rows instead of two extra 512³ volumes.
CHUNK_BYTES = 64 << 20


def _flatten_rows(x: torch.Tensor) -> torch.Tensor:
    """``(R, C, Y)`` → ``(R·C, Y)`` operand (a copy when ``x`` is a permuted view)."""
    return x.reshape(x.shape[0] * x.shape[1], x.shape[2])


class _Apply(torch.autograd.Function):
    """``M @ x`` for one projector matrix; the gradient is ``Mᵀ @ g`` with a prebuilt transpose.

    Operands are ``(rows, Y)``: ``A`` takes ghost-padded voxels and gives pixels, ``AT`` takes
    pixels and gives voxels, ``B`` takes ghost-padded pixels and gives voxels.
    """

    @staticmethod
    def forward(ctx, x, proj, kind):
        ctx.proj, ctx.kind = proj, kind
        return proj._matrix(kind, x.dtype) @ x

    @staticmethod
    def backward(ctx, g):
        proj, g = ctx.proj, g.contiguous()
        if ctx.kind == "A":  # gradient on the padded voxels: Aᵀ g inside, zero on the ghosts
            inner = proj._matrix("AT", g.dtype) @ g
            return proj._pad_voxels(inner.view(*proj.shape, g.shape[1])), None, None
        if ctx.kind == "AT":
            return (
                proj._matrix("A", g.dtype) @ proj._pad_voxels(g.view(*proj.shape, g.shape[1])),
                None,
                None,
            )
        return proj._matrix("BT", g.dtype) @ g, None, None


class ParallelProjector:
    """Reusable parallel-beam operator for one geometry; set up once, apply to many volumes.

    Parameters
    ----------
    shape : tuple of int
        Slice shape ``(Z, X)`` (a 3-D ``(Z, Y, X)`` is accepted; Y is free per call).
    angles_deg : array_like, (n_angles,)
        Projection angles in degrees.
    det_count : int, optional
        Detector pixels (default ``X``).
    center_offset : float
        Rotation-axis position relative to the detector middle, in detector pixels.
    device : str or torch.device
        Torch device for the matrices (and for the results).

    Notes
    -----
    ``forward`` maps ``(Z, X)``/``(Z, Y, X)`` to ``(n_angles, det)``/``(n_angles, Y, det)`` line
    integrals in voxel units; ``adjoint`` is its exact transpose; ``fbp`` and ``sirt`` reconstruct.
    All accept torch tensors on ``device`` (float32, or float64 for gradient checks) and are
    differentiable through autograd. Matrices are built on first use: ``A`` (forward), ``AT``
    (adjoint, SIRT) and ``B`` (FBP back-projection); :meth:`build` builds them now.
    """

    def __init__(self, shape, angles_deg, det_count=None, center_offset=0.0, device="cpu"):
        self.geometry = Geometry.make(shape, angles_deg, det_count, center_offset)
        self.device = torch.device(device)
        self._mats: dict[tuple[str, torch.dtype], torch.Tensor] = {}
        self._weights: dict[torch.dtype, torch.Tensor] = {}
        self._filters: dict[tuple[str, torch.dtype], torch.Tensor] = {}
        self._sirt_norm: dict[torch.dtype, tuple[torch.Tensor, torch.Tensor]] = {}
        self._tables: _Tables | None = None
        self._exposed = False  # a matrix handed out must never be recycled

    @property
    def shape(self) -> tuple[int, int]:
        """Slice shape ``(Z, X)``."""
        return self.geometry.shape

    @property
    def det_count(self) -> int:
        return self.geometry.det_count

    @property
    def n_angles(self) -> int:
        return self.geometry.n_angles

    def matrix(self, kind: str, dtype: torch.dtype = torch.float32) -> torch.Tensor:
        """The sparse CSR matrix ``A``, ``AT``, ``B`` or ``BT`` (built and cached on first use).

        ``A`` maps ghost-padded voxels ``(Z + 6)·(X + 6)`` to pixels, ``B`` ghost-padded pixels
        ``n_angles·(det + 4)`` to voxels (see ``VOX_PAD``/``BIN_PAD``); ``AT`` is unpadded.
        """
        self._exposed = True
        return self._matrix(kind, dtype)

    def release(self) -> None:
        """Drop the matrices, recycling their CPU buffers for the next geometry's build.

        The projector stays usable (matrices are rebuilt on demand). Call it when a geometry is done
        with; the functional API does so when it evicts a projector from its cache.
        """
        mats, self._mats = self._mats, {}
        if self._tables is not None:
            POOL.give(self._tables.lo)
            self._tables = None
        if self._exposed:
            return
        for (_, dtype), m in mats.items():
            if dtype == torch.float32 and m.layout == torch.sparse_csr:
                POOL.give(m.col_indices(), m.values())

    def _matrix(self, kind: str, dtype: torch.dtype = torch.float32) -> torch.Tensor:
        key = (kind, dtype)
        if key in self._mats:
            return self._mats[key]
        base_key = (kind, torch.float32)
        if base_key not in self._mats:
            with torch.no_grad():
                if kind in ("A", "AT"):
                    if self._tables is None:
                        self._tables = _Tables(self.geometry, self.device)
                    build = _build_forward if kind == "A" else _build_adjoint
                    mat = build(self.geometry, self._tables)
                    if ("A" if kind == "AT" else "AT", torch.float32) in self._mats:
                        POOL.give(self._tables.lo)  # only needed to build A and AT
                        self._tables = None
                elif kind == "B":
                    mat = _build_interp(self.geometry, self.device)
                elif kind == "BT":  # only for gradients through fbp
                    mat = self._matrix("B").t().to_sparse_csr()
                else:
                    raise ValueError(f"kind must be one of A, AT, B, BT; got {kind!r}")
                if self.device.type == "cuda" and kind != "BT":
                    mat = _sort_rows(mat)
            self._mats[base_key] = mat
        if dtype != torch.float32:
            m = self._mats[base_key]
            self._mats[key] = _csr(m.crow_indices(), m.col_indices(), m.values().to(dtype), m.shape)
        return self._mats[key]

    def build(self, kinds=("A", "AT", "B")) -> ParallelProjector:
        """Build the given matrices now (otherwise each is built on first use)."""
        for kind in kinds:
            self._matrix(kind)
        return self

    def memory_bytes(self) -> int:
        """Bytes held by the built matrices."""
        total = 0
        for m in self._mats.values():
            for t in (m.crow_indices(), m.col_indices(), m.values()):
                total += t.numel() * t.element_size()
        return total

    # -- operators --
    def _check(
        self, x: torch.Tensor, name: str, expect: tuple[int, int]
    ) -> tuple[torch.Tensor, bool]:
        if not isinstance(x, torch.Tensor):
            raise ValueError(f"{name} must be a torch tensor; got {type(x).__name__}")
        if x.device.type != self.device.type or (
            self.device.index is not None and x.device.index != self.device.index
        ):
            raise ValueError(f"{name} is on {x.device} but the projector is on {self.device}")
        if x.is_complex():
            raise ValueError(f"{name} must be real; got dtype {x.dtype}")
        if x.dtype not in (torch.float32, torch.float64):
            x = x.to(torch.float32)
        if x.ndim not in (2, 3):
            raise ValueError(f"{name} must be 2-D or 3-D; got shape {tuple(x.shape)}")
        first, last = expect
        if x.shape[0] != first or x.shape[-1] != last:
            raise ValueError(
                f"{name} has shape {tuple(x.shape)} but the geometry needs ({first}, [Y,] {last})"
            )
        return x, x.ndim == 2

    def _to_rows(self, x: torch.Tensor, flat: bool) -> torch.Tensor:
        """``(R, [Y,] C)`` → ``(R·C, Y)`` operand."""
        x3 = x[:, None, :] if flat else x
        return x3.permute(0, 2, 1).reshape(x3.shape[0] * x3.shape[2], x3.shape[1])

    def _pad_voxels(self, x: torch.Tensor) -> torch.Tensor:
        """``(Z, X, Y)`` → ``(padded Z·X, Y)`` with zero ghost voxels around (one strided copy)."""
        nz, nx = self.shape
        lo = VOX_PAD[0]
        out = x.new_zeros((nz + sum(VOX_PAD), nx + sum(VOX_PAD), x.shape[-1]))
        out[lo : lo + nz, lo : lo + nx] = x
        return out.view(-1, x.shape[-1])

    def _pad_pixels(self, y: torch.Tensor) -> torch.Tensor:
        """``(n_angles, det, Y)`` → ``(n_angles·(det + 4), Y)`` with zero ghost pixels."""
        det = self.det_count
        out = y.new_zeros((self.n_angles, det + 2 * BIN_PAD, y.shape[-1]))
        out[:, BIN_PAD : BIN_PAD + det] = y
        return out.view(-1, y.shape[-1])

    @staticmethod
    def _from_rows(y: torch.Tensor, first: int, last: int, flat: bool) -> torch.Tensor:
        out = y.view(first, last, y.shape[1]).permute(0, 2, 1)
        return out[:, 0, :].contiguous() if flat else out.contiguous()

    def _apply_by_y(
        self, x3: torch.Tensor, kind: str, to_rows, out_first: int, out_last: int
    ) -> torch.Tensor:
        """``M @ to_rows(x)`` for ``x3`` ``(R, Y, C)`` → ``(out_first, Y, out_last)``, Y in chunks.

        Every Y row is an independent 2D problem, and a sparse × dense product gives each column
        the same sums whatever the number of columns, so the result is bit-identical to one
        product; the operand and result then take one chunk's memory, not two whole volumes
        (issue 13). ``to_rows`` maps ``(R, C, y)`` to the ``(rows, y)`` operand. With autograd
        recording (``x3.requires_grad``) it is one product, as the gradient needs; on CUDA too
        (cuSPARSE picks its algorithm by size, so chunks might round differently).
        """
        ny = x3.shape[1]
        in_rows = x3.shape[0] * x3.shape[2] if kind != "A" else self._padded_voxels()
        per_y = (in_rows + out_first * out_last) * x3.element_size()
        step = max(8, CHUNK_BYTES // per_y // 8 * 8)
        whole = x3.device.type != "cpu" or (torch.is_grad_enabled() and x3.requires_grad)
        if step >= ny or whole:
            out = _Apply.apply(to_rows(x3.permute(0, 2, 1)), self, kind)
            return self._from_rows(out, out_first, out_last, False)
        out = x3.new_empty((out_first, ny, out_last))
        for y0 in range(0, ny, step):
            part = _Apply.apply(to_rows(x3[:, y0 : y0 + step].permute(0, 2, 1)), self, kind)
            out[:, y0 : y0 + part.shape[1]] = part.view(out_first, out_last, -1).permute(0, 2, 1)
            del part
        return out

    def _padded_voxels(self) -> int:
        nz, nx = self.shape
        return (nz + sum(VOX_PAD)) * (nx + sum(VOX_PAD))

    def forward(self, volume: torch.Tensor) -> torch.Tensor:
        """Line integrals (voxel units): ``(Z, [Y,] X)`` → ``(n_angles, [Y,] det)``."""
        vol, flat = self._check(volume, "volume", self.shape)
        if flat:
            out = _Apply.apply(self._pad_voxels(vol[:, None, :].permute(0, 2, 1)), self, "A")
            return self._from_rows(out, self.n_angles, self.det_count, flat)
        return self._apply_by_y(vol, "A", self._pad_voxels, self.n_angles, self.det_count)

    def adjoint(self, sinogram: torch.Tensor) -> torch.Tensor:
        """Exact transpose of :meth:`forward`: ``(n_angles, [Y,] det)`` → ``(Z, [Y,] X)``."""
        sino, flat = self._check(sinogram, "sinogram", (self.n_angles, self.det_count))
        if flat:
            out = _Apply.apply(self._to_rows(sino, flat), self, "AT")
            return self._from_rows(out, *self.shape, flat)
        return self._apply_by_y(sino, "AT", _flatten_rows, *self.shape)

    # -- reconstruction --
    def angle_weights(self, dtype=torch.float32) -> torch.Tensor:
        """FBP quadrature weights per angle, radians (see ``geometry.angle_weights``)."""
        if dtype not in self._weights:
            w = angle_weights(np.asarray(self.geometry.angles_deg))
            self._weights[dtype] = torch.tensor(w, dtype=dtype, device=self.device)
        return self._weights[dtype]

    def filter_sinogram(self, sinogram: torch.Tensor, filter: str = "ramp") -> torch.Tensor:
        """Apply the FBP filter along the detector axis with zero padding; shape is kept."""
        name = check_filter(filter)
        sino, _ = self._check(sinogram, "sinogram", (self.n_angles, self.det_count))
        det = self.det_count
        size = padded_size(det)
        key = (name, sino.dtype)
        if key not in self._filters:
            f = fourier_filter(size, name)
            self._filters[key] = torch.tensor(f, dtype=sino.dtype, device=self.device)
        spec = torch.fft.rfft(sino, n=size, dim=-1) * self._filters[key]
        return torch.fft.irfft(spec, n=size, dim=-1)[..., :det]

    def fbp(self, sinogram: torch.Tensor, filter: str = "ramp") -> torch.Tensor:
        """Filtered back-projection ``(n_angles, [Y,] det)`` → ``(Z, [Y,] X)``, volume units.

        ``f = ½ Σ_a w_a (p_a * h)(t)``: ramp-family filter ``h`` (Kak & Slaney 1988, ch. 3) with
        zero padding, linear interpolation at ``t`` (matrix ``B``) and the angular quadrature
        weights ``w_a`` of :meth:`angle_weights`; for n equally spaced angles over 180° the scale is
        scikit-image's ``π / (2 n)``.
        """
        filtered = self.filter_sinogram(sinogram, filter)
        flat = filtered.ndim == 2
        w = self.angle_weights(filtered.dtype) * 0.5
        filtered = filtered * (w[:, None] if flat else w[:, None, None])
        if flat:
            out = _Apply.apply(self._pad_pixels(filtered[:, None, :].permute(0, 2, 1)), self, "B")
            return self._from_rows(out, *self.shape, flat)
        return self._apply_by_y(filtered, "B", self._pad_pixels, *self.shape)

    def sirt(self, sinogram: torch.Tensor, iterations: int, nonneg: bool = True) -> torch.Tensor:
        """SIRT (Gregor & Benson, IEEE TMI 27, 918, 2008): ``x ← x + C Aᵀ R (b − A x)``, x₀ = 0.

        ``R`` and ``C`` are the inverse row and column sums of A; with ``nonneg`` the iterate is
        clipped at 0 after every update.
        """
        sino, flat = self._check(sinogram, "sinogram", (self.n_angles, self.det_count))
        dtype = sino.dtype
        if dtype not in self._sirt_norm:
            with torch.no_grad():
                a, at = self._matrix("A", dtype), self._matrix("AT", dtype)
                ones = torch.ones(*self.shape, 1, dtype=dtype, device=self.device)
                rs = a @ self._pad_voxels(ones)
                cs = at @ torch.ones(at.shape[1], 1, dtype=dtype, device=self.device)
                r_inv = torch.where(rs > 1e-6, 1.0 / rs, torch.zeros_like(rs))
                c_inv = torch.where(cs > 1e-6, 1.0 / cs, torch.zeros_like(cs))
            self._sirt_norm[dtype] = (r_inv, c_inv)
        r_inv, c_inv = self._sirt_norm[dtype]
        b = self._to_rows(sino, flat)
        x = torch.zeros(self.shape[0] * self.shape[1], b.shape[1], dtype=dtype, device=self.device)
        for _ in range(int(iterations)):
            xp = self._pad_voxels(x.view(*self.shape, x.shape[1]))
            resid = (b - _Apply.apply(xp, self, "A")) * r_inv
            x = x + c_inv * _Apply.apply(resid, self, "AT")
            if nonneg:
                x = x.clamp_min(0.0)
        return self._from_rows(x, *self.shape, flat)

    def __repr__(self) -> str:
        g = self.geometry
        return (
            f"ParallelProjector(shape={g.shape}, n_angles={g.n_angles}, det_count={g.det_count}, "
            f"center_offset={g.center_offset}, device={self.device})"
        )
