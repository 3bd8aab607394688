"""The training input pipeline: shards → volumes → random slice stacks → augmented batches.

Volumes are (Z, Y, X); a *stack* is the ``window`` slices around a centre index along ``axis``
(default 1, the tilt axis Y), moved to the front: (window, H, W) float32, with the centre slice's
labels (H, W) int64 (−1 = unannotated), or a dense model's (``unet3d``) labels of every slice
(window, H, W). Near the volume ends the stack is mirrored (reflect), the same as at inference, so
every slice can be a centre.

Streaming: every rank reads the training samples in the run's global order
(:mod:`models.order`), a block of ``mix_volumes`` samples at a time, each sample by seeking to its
byte span in its shard (:class:`SampleSource`; the shard's sha256 is checked in one sequential pass
the first time the worker touches it), and draws the block's kept slices across its volumes in
random order (each slice once per epoch); background-only stacks are dropped with probability
``1 − background_keep`` (the reference drops 98 %), annotated slices of a real tomogram are mixed
in with probability ``real_ratio`` (few-shot), and whole batches are augmented at once
(:func:`augment_batch`). Every draw derives from the seed and the position it is drawn for, so a
stream restarted at a saved position continues exactly (:class:`StackStream`).
"""

from __future__ import annotations

import math
import queue
import threading
from collections import OrderedDict
from collections.abc import Callable, Iterator
from typing import TYPE_CHECKING, Any

import numpy as np
import torch
import torch.nn.functional as F

from factory.errors import UserError
from schemas import IGNORE_INDEX

if TYPE_CHECKING:  # pydantic is not needed to augment or stack slices (bench/gpu.py's machine)
    from factory.dataset.storage import Store
    from schemas.dataset import FieldSpec, ShardRecord
    from schemas.sample import SampleMeta

# --- stacks ---------------------------------------------------------------------------------------


def check_window(shape: tuple[int, ...], axis: int, window: int, what: str = "volume") -> None:
    """Raise :class:`UserError` unless a (Z, Y, X) volume can hold a ``window``-slice stack."""
    if len(shape) != 3:
        raise UserError(f"{what}: expected a 3D (Z, Y, X) volume, got shape {tuple(shape)}")
    if shape[axis] < window:
        raise UserError(
            f"{what}: {shape[axis]} slices along axis {axis} (shape {tuple(shape)}) is fewer than "
            f"the model's window of {window} slices"
        )
    if min(shape) < 2:
        raise UserError(f"{what}: shape {tuple(shape)} is too small to segment")


def stack_indices(n: int, centre: int, window: int) -> np.ndarray:
    """Slice indices of the stack around ``centre`` in a volume of ``n`` slices (reflected ends):
    ``centre − window//2`` to ``centre − window//2 + window − 1`` (±window//2 for odd windows)."""
    half = window // 2
    idx = np.arange(centre - half, centre - half + window)
    if n == 1:
        return np.zeros_like(idx)
    period = 2 * (n - 1)
    idx = np.mod(idx, period)
    return np.where(idx >= n, period - idx, idx)


def slice_stack(volume: np.ndarray, centre: int, axis: int, window: int) -> np.ndarray:
    """The (window, H, W) float32 stack of ``volume`` around slice ``centre`` along ``axis``."""
    idx = stack_indices(volume.shape[axis], centre, window)
    return np.ascontiguousarray(np.moveaxis(np.take(volume, idx, axis=axis), axis, 0), np.float32)


def label_slice(labels: np.ndarray, centre: int, axis: int) -> np.ndarray:
    """The (H, W) int64 labels of slice ``centre`` along ``axis``."""
    return np.take(labels, centre, axis=axis).astype(np.int64)


def label_stack(labels: np.ndarray, centre: int, axis: int, window: int) -> np.ndarray:
    """The (window, H, W) int64 labels of the stack around ``centre`` (a dense model's target)."""
    idx = stack_indices(labels.shape[axis], centre, window)
    return np.ascontiguousarray(np.moveaxis(np.take(labels, idx, axis=axis), axis, 0), np.int64)


def stack_target(labels: np.ndarray, centre: int, axis: int, window: int, dense: bool):
    """What a model learns from the stack at ``centre``: its labels (window, H, W) if ``dense``,
    else the centre slice's (H, W)."""
    if dense:
        return label_stack(labels, centre, axis, window)
    return label_slice(labels, centre, axis)


def is_background_only(lab: np.ndarray) -> bool:
    """True if no pixel of the slice carries a class > 0 (background or unannotated only)."""
    return not bool((lab > 0).any())


def kept_centres(
    labels: np.ndarray,
    *,
    axis: int,
    rng: np.random.Generator,
    background_keep: float = 1.0,
    window: int = 1,
) -> list[int]:
    """Every slice index along ``axis`` once, in random order; centres whose ``window`` slices
    (1: the centre slice alone; a dense model's whole stack) are background-only kept with
    probability ``background_keep``, those without any annotation left out."""
    out = []
    n = labels.shape[axis]
    for c in rng.permutation(n):
        if window == 1:
            lab = np.take(labels, int(c), axis=axis)
        else:
            lab = np.take(labels, np.unique(stack_indices(n, int(c), window)), axis=axis)
        if not bool((lab != IGNORE_INDEX).any()):
            continue
        if is_background_only(lab) and rng.random() >= background_keep:
            continue
        out.append(int(c))
    return out


def volume_stacks(
    recon: np.ndarray,
    labels: np.ndarray,
    *,
    axis: int,
    window: int,
    rng: np.random.Generator,
    background_keep: float = 1.0,
) -> Iterator[tuple[np.ndarray, np.ndarray]]:
    """The (stack, labels) of :func:`kept_centres`."""
    for c in kept_centres(labels, axis=axis, rng=rng, background_keep=background_keep):
        yield slice_stack(recon, c, axis, window), label_slice(labels, c, axis)


def crop_or_pad(
    x: np.ndarray, y: np.ndarray, size: int, rng: np.random.Generator
) -> tuple[np.ndarray, np.ndarray]:
    """A random ``size``×``size`` in-plane crop of a stack (S, H, W) and labels (H, W) or (S, H,
    W); sides shorter than ``size`` are padded (image 0, labels −1)."""
    h, w = y.shape[-2:]
    ph, pw = max(0, size - h), max(0, size - w)
    if ph or pw:
        x = np.pad(x, ((0, 0), (0, ph), (0, pw)))
        lead = ((0, 0),) * (y.ndim - 2)
        y = np.pad(y, (*lead, (0, ph), (0, pw)), constant_values=IGNORE_INDEX)
        h, w = y.shape[-2:]
    i = int(rng.integers(0, h - size + 1))
    j = int(rng.integers(0, w - size + 1))
    return x[:, i : i + size, j : j + size], y[..., i : i + size, j : j + size]


# --- augmentation ---------------------------------------------------------------------------------


def _gauss_kernels(sigmas: torch.Tensor, radius: int) -> torch.Tensor:
    t = torch.arange(-radius, radius + 1, dtype=torch.float32)
    k = torch.exp(-0.5 * (t[None, :] / sigmas[:, None].clamp_min(1e-3)) ** 2)
    return k / k.sum(dim=1, keepdim=True)


def _blur(x: torch.Tensor, sigmas: torch.Tensor) -> torch.Tensor:
    """Per-sample in-plane Gaussian blur of (B, S, H, W) with sigma (B,) pixels."""
    b, s, h, w = x.shape
    radius = max(1, int(math.ceil(3 * float(sigmas.max()))))
    radius = min(radius, (min(h, w) - 1) // 2) or 1
    k = _gauss_kernels(sigmas, radius).repeat_interleave(s, dim=0)  # (B*S, K)
    xx = x.reshape(1, b * s, h, w)
    mode = "reflect" if min(h, w) > radius else "replicate"
    xx = F.pad(xx, (radius, radius, 0, 0), mode=mode)
    xx = F.conv2d(xx, k[:, None, None, :], groups=b * s)
    xx = F.pad(xx, (0, 0, radius, radius), mode=mode)
    xx = F.conv2d(xx, k[:, None, :, None], groups=b * s)
    return xx.reshape(b, s, h, w)


def augment_batch(
    x: torch.Tensor, y: torch.Tensor, cfg, gen: torch.Generator
) -> tuple[torch.Tensor, torch.Tensor]:
    """The reference's augmentations, drawn per sample: flips, random resized crop and elastic
    deformation (one resampling: bilinear for images, nearest for labels), brightness, contrast,
    Gaussian blur (sigma 0.1–2 px), Gaussian noise, intensity inversion.

    ``x`` (B, S, H, W) float32, ``y`` (B, H, W) int64 or, for a dense model, (B, S, H, W); ``cfg``
    an :class:`~models.config.AugmentConfig`. The geometric draws apply alike to every slice.
    """
    if not cfg.enabled:
        return x, y
    b, s, h, w = x.shape
    ylead = (None,) * (y.ndim - 1)  # broadcasts a per-sample draw over y's other axes

    def coin(p: float) -> torch.Tensor:
        return torch.rand(b, generator=gen) < p

    def unif(lo: float, hi: float) -> torch.Tensor:
        return lo + (hi - lo) * torch.rand(b, generator=gen)

    for dim, flip in ((-1, coin(cfg.flip_p)), (-2, coin(cfg.flip_p))):
        if flip.any():
            x = torch.where(flip[:, None, None, None], x.flip(dim), x)
            y = torch.where(flip[(slice(None), *ylead)], y.flip(dim), y)

    crop, elastic = coin(cfg.crop_p), coin(cfg.elastic_p)
    if crop.any() or elastic.any():
        # normalised sampling grid (B, H, W, 2) in [-1, 1], (x, y) order
        gy = torch.linspace(-1, 1, h)
        gx = torch.linspace(-1, 1, w)
        base = torch.stack(torch.meshgrid(gx, gy, indexing="xy"), dim=-1)  # (H, W, 2)
        grid = base.expand(b, h, w, 2).clone()
        if crop.any():
            area = unif(*cfg.crop_scale)
            logr = unif(math.log(3 / 4), math.log(4 / 3))
            ratio = torch.exp(logr)
            sx = torch.sqrt(area * ratio).clamp(max=1.0)
            sy = torch.sqrt(area / ratio).clamp(max=1.0)
            cx = unif(-1.0, 1.0) * (1 - sx)
            cy = unif(-1.0, 1.0) * (1 - sy)
            sx, sy = torch.where(crop, sx, 1.0), torch.where(crop, sy, 1.0)
            cx, cy = torch.where(crop, cx, 0.0), torch.where(crop, cy, 0.0)
            grid = grid * torch.stack([sx, sy], -1)[:, None, None, :]
            grid = grid + torch.stack([cx, cy], -1)[:, None, None, :]
        if elastic.any() and cfg.elastic_alpha_px > 0:
            ch = max(2, int(math.ceil(h / cfg.elastic_sigma_px)) + 1)
            cw = max(2, int(math.ceil(w / cfg.elastic_sigma_px)) + 1)
            coarse = torch.randn(b, 2, ch, cw, generator=gen)
            disp = F.interpolate(coarse, size=(h, w), mode="bicubic", align_corners=True)
            disp = disp * cfg.elastic_alpha_px  # pixels
            scale = torch.tensor([2.0 / max(w - 1, 1), 2.0 / max(h - 1, 1)])
            disp = disp.permute(0, 2, 3, 1) * scale
            grid = grid + disp * elastic[:, None, None, None]
        x = F.grid_sample(x, grid, mode="bilinear", padding_mode="border", align_corners=True)
        y3 = y if y.ndim == 4 else y[:, None]  # label slices as channels
        yf = F.grid_sample(
            y3.float(), grid, mode="nearest", padding_mode="border", align_corners=True
        )
        y = (yf if y.ndim == 4 else yf[:, 0]).round().long()

    if cfg.contrast_p > 0:
        on = coin(cfg.contrast_p)
        f = torch.where(on, unif(*cfg.contrast), 1.0)
        x = x * f[:, None, None, None]
    if cfg.brightness_p > 0:
        on = coin(cfg.brightness_p)
        d = torch.where(on, unif(-cfg.brightness, cfg.brightness), 0.0)
        x = x + d[:, None, None, None]
    blur = coin(cfg.blur_p)
    if blur.any():
        sig = unif(*cfg.blur_sigma)
        x = torch.where(blur[:, None, None, None], _blur(x, sig), x)
    noise = coin(cfg.noise_p)
    if noise.any():
        sd = torch.where(noise, unif(*cfg.noise_sd), 0.0)
        x = x + sd[:, None, None, None] * torch.randn(x.shape, generator=gen)
    inv = coin(cfg.invert_p)
    if inv.any():
        x = torch.where(inv[:, None, None, None], -x, x)
    return x.contiguous(), y.contiguous()


# --- streaming from shards ------------------------------------------------------------------------


def iter_volumes(
    dataset: str | Store,
    shards: list[ShardRecord],
    *,
    fields: dict[str, FieldSpec] | None = None,
    num_classes: int | None = None,
    allow_bad_shards: bool = False,
    on_bad: Callable[[str, str], None] | None = None,
    input_field: str = "recon",
) -> Iterator[tuple[np.ndarray, np.ndarray, SampleMeta | None]]:
    """Yield ``(recon float32, labels uint8, meta: SampleMeta)`` of every sample of ``shards``, in order.

    A shard that fails its checks raises :class:`~factory.dataset.manifest.DatasetError` naming it,
    or with ``allow_bad_shards`` is skipped (``on_bad(url, reason)`` is called). Records given as
    dicts are validated first (:func:`~factory.dataset.manifest.as_shard`).
    """
    from factory.dataset.manifest import (
        DatasetError,
        as_fields,
        as_shard,
        dataset_store,
        iter_samples,
        shard_store,
    )

    fields, dataset = as_fields(fields), dataset_store(dataset)
    for raw in shards:
        rec = raw
        try:
            rec = as_shard(raw)
            for s in iter_samples(shard_store(dataset, rec), rec, fields=fields):
                yield *training_pair(s, rec, input_field, num_classes), s.get("meta")
        except DatasetError as err:
            if not allow_bad_shards:
                raise
            if on_bad is not None:
                on_bad(_url_of(rec), str(err))


def _url_of(rec) -> str:
    """A shard's url for messages (``rec`` may be a record refused before it was typed)."""
    return str(rec.get("url") if isinstance(rec, dict) else rec.url)


def training_pair(
    s: dict, rec: ShardRecord, input_field: str = "recon", num_classes: int | None = None
) -> tuple[np.ndarray, np.ndarray]:
    """``(input float32, labels)`` of a decoded sample; a missing field or a label outside the
    ``num_classes`` classes is a :class:`~factory.dataset.manifest.DatasetError` naming it."""
    from factory.dataset.manifest import DatasetError

    where = f"shard {rec.url} sample {s['__key__']}"
    if input_field not in s or "labels" not in s:
        raise DatasetError(f"{where}: no {input_field!r} or 'labels' field")
    lab = s["labels"]
    if num_classes is not None and lab.size and int(lab.max()) >= num_classes:
        raise DatasetError(
            f"{where}: label {int(lab.max())} outside the manifest's {num_classes} classes"
        )
    return s[input_field].astype(np.float32), lab


class SampleSource:
    """The training samples ``0 … n−1`` (manifest order over ``shards``), each read on its own.

    The first read of a shard makes one sequential pass over it (size and sha256 checked, the
    byte span of each sample noted: :func:`~factory.dataset.manifest.shard_spans`); every read
    after that seeks to the sample's span (a range request on object storage), with every member
    check. A shard failing its checks raises :class:`~factory.dataset.manifest.DatasetError`, or
    with ``allow_bad_shards`` its samples read as None (``on_bad(url, reason)`` is called once).
    """

    def __init__(
        self,
        dataset: str | Store,
        shards: list[ShardRecord],
        *,
        fields: dict[str, FieldSpec] | None = None,
        num_classes: int | None = None,
        allow_bad_shards: bool = False,
        on_bad: Callable[[str, str], None] | None = None,
        input_field: str = "recon",
    ):
        from factory.dataset.manifest import as_fields, as_shard, dataset_store

        self.dataset = dataset_store(dataset)
        self.shards = [as_shard(s) for s in shards]  # dicts validated (urls stay in the root)
        self.fields, self.num_classes = as_fields(fields), num_classes
        self.input_field = input_field
        self.allow_bad_shards, self.on_bad = allow_bad_shards, on_bad
        self._ends = np.cumsum([s.nsamples for s in self.shards])
        self._spans: dict[int, dict | None] = {}
        self._open: OrderedDict[int, Any] = OrderedDict()  # the last few shards read, kept open

    @property
    def n(self) -> int:
        return int(self._ends[-1]) if len(self._ends) else 0

    def locate(self, i: int) -> tuple[ShardRecord, int, int]:
        """``(shard record, sample index in its dataset, shard position)`` of training sample
        ``i``."""
        j = int(np.searchsorted(self._ends, i, side="right"))
        rec = self.shards[j]
        return rec, rec.first_index + i - (int(self._ends[j]) - rec.nsamples), j

    def key(self, i: int) -> str:
        """A name of sample ``i`` unique across a mixture: ``[root/]shard-url#index``."""
        rec, idx, _ = self.locate(i)
        root = getattr(rec, "root", None)  # a RootedShard names its dataset
        return f"{root + '/' if root else ''}{rec.url}#{idx}"

    def read(self, i: int) -> tuple[np.ndarray, np.ndarray] | None:
        """``(recon float32, labels)`` of sample ``i``; None if its shard was skipped as bad."""
        from factory.dataset.manifest import DatasetError, read_sample, shard_spans

        rec, idx, j = self.locate(i)
        try:
            if j not in self._spans:
                self._spans[j] = shard_spans(self.dataset, rec)
            spans = self._spans[j]
            if spans is None:
                return None
            s = read_sample(
                self.dataset, rec, idx, spans[idx], fields=self.fields, fh=self._file(j, rec),
            )  # fmt: skip
            return training_pair(s, rec, self.input_field, self.num_classes)
        except DatasetError as err:
            if not self.allow_bad_shards:
                raise
            self._spans[j] = None
            if self.on_bad is not None:
                self.on_bad(rec.url, str(err))
            return None

    def _file(self, j: int, rec: ShardRecord, keep: int = 8):
        """Shard ``j`` open for random access; at most ``keep`` stay open (least recent closed)."""
        from factory.dataset.manifest import open_shard

        if j in self._open:
            self._open.move_to_end(j)
            return self._open[j]
        fh = self._open[j] = open_shard(self.dataset, rec)
        while len(self._open) > keep:
            self._open.popitem(last=False)[1].close()
        return fh


class StackStream:
    """One rank's endless stream of slice stacks in the run's global order (exactly resumable).

    Which blocks of samples this rank consumes, and from which stack, is
    :class:`~models.order.StreamState`'s; the stacks of a block (the kept centres of each of its
    volumes, drawn from ``(seed, epoch, sample)``, in an order drawn from ``(seed, epoch,
    block)``), their crops, the real-data slots and the augmentation of a step are drawn from
    ``(seed, …)`` and their own position alone, never from what was drawn before, so the stream
    continues from any position with the same stacks it would have given.

    Parameters
    ----------
    source : SampleSource
        The training samples.
    cfg : TrainConfig
        Stack, batch and augmentation settings; ``cfg.seed`` seeds every draw.
    state : StreamState
        The global order and this rank's position (``state.positions[rank]``).
    rank : int
        This rank.
    real : tuple of ndarray, optional
        ``(volume, labels)`` of a real tomogram (normalised; labels −1 where unannotated), each
        batch slot drawn from it with probability ``cfg.real_ratio``.
    """

    def __init__(self, source: SampleSource, cfg, state, rank: int, *, real=None):
        from models.unet import is_dense

        self.source, self.cfg, self.state, self.rank = source, cfg, state, rank
        self.dense = is_dense(cfg.model)
        self.bad_shards: dict[str, str] = {}
        if source.on_bad is None:
            source.on_bad = self.note_bad_shard
        self.real, self.real_centres = real, None
        if real is not None:
            self.real_centres = _annotated_centres(real, cfg)

    def note_bad_shard(self, url: str, reason: str) -> None:
        """Record a shard skipped under ``allow_bad_shards`` (also for validation reads)."""
        self.bad_shards[url] = reason

    def _block(self, epoch: int, block: int) -> list[tuple]:
        """The block's stacks in drawn order: ``(sample, volume, labels, centre)``."""
        from models.order import MIX, STACKS, rng

        cfg, out = self.cfg, []
        for i in self.state.block_samples(epoch, block):
            got = self.source.read(int(i))
            if got is None:
                continue
            recon, lab = got
            check_window(recon.shape, cfg.axis, cfg.window, "dataset volume")
            g = rng(cfg.seed, STACKS, epoch, int(i))
            win = cfg.window if self.dense else 1
            for c in kept_centres(
                lab, axis=cfg.axis, rng=g, background_keep=cfg.background_keep, window=win
            ):
                out.append((int(i), recon, lab, c))
        order = rng(cfg.seed, MIX, epoch, block).permutation(len(out))
        return [out[j] for j in order]

    def stacks(self) -> Iterator[tuple[np.ndarray, np.ndarray, tuple]]:
        """``(stack, labels, (k, offset, epoch, sample, centre))`` from this rank's position on;
        ``(k, offset)`` is the position *after* the stack."""
        from models.order import CROP, rng

        cfg, state = self.cfg, self.state
        k, off = state.positions[self.rank]
        empty = 0
        while True:
            it = state.item(self.rank, k)
            block = self._block(it.epoch, it.block)
            for j in range(off, len(block)):
                i, recon, lab, c = block[j]
                x = slice_stack(recon, c, cfg.axis, cfg.window)
                y = stack_target(lab, c, cfg.axis, cfg.window, self.dense)
                if cfg.patch is not None:
                    x, y = crop_or_pad(x, y, cfg.patch, rng(cfg.seed, CROP, it.epoch, i, c))
                yield x, y, (k, j + 1, it.epoch, i, c)
            empty = empty + 1 if not block else 0
            if empty > state.n_blocks:
                raise UserError(
                    f"data: no usable training stack in {empty} blocks of this worker "
                    f"(bad shards: {self.bad_shards})"
                )
            k += 1
            off = state.item(self.rank, k).start

    def batches(
        self, first_step: int = 0, augment: bool = True
    ) -> Iterator[tuple[torch.Tensor, torch.Tensor, dict]]:
        """Augmented batches (B, S, H, W) float32 and (B, H, W) int64 ((B, S, H, W) for a dense
        model) with ``{"position": [k, offset], "stacks": [(epoch, sample, centre), …]}``
        (synthetic stacks only); the batch of
        step ``t`` is drawn from ``(seed, rank, t)``. Stacks of different in-plane sizes are not
        mixed in one batch (a shorter batch goes first)."""
        from models.order import AUGMENT, REAL, rng

        cfg, synth = self.cfg, self.stacks()
        pending, pos = None, list(self.state.positions[self.rank])
        step = first_step
        while True:
            g = rng(cfg.seed, REAL, self.rank, step)
            xs, ys, seen = [], [], []
            while len(xs) < cfg.batch_size:
                if self.real is not None and cfg.real_ratio > 0 and g.random() < cfg.real_ratio:
                    x, y, where = *self._real(g), None
                else:
                    x, y, where = pending if pending is not None else next(synth)
                    pending = None
                if xs and x.shape != xs[0].shape:
                    pending = (x, y, where) if where is not None else None
                    break
                xs.append(x)
                ys.append(y)
                if where is not None:
                    pos = [where[0], where[1]]
                    seen.append(where[2:])
            x, y = torch.from_numpy(np.stack(xs)), torch.from_numpy(np.stack(ys))
            if augment:
                gen = torch.Generator().manual_seed(
                    int(rng(cfg.seed, AUGMENT, self.rank, step).integers(2**62))
                )
                x, y = augment_batch(x, y, cfg.augment, gen)
            yield x, y, {"position": list(pos), "stacks": seen}
            step += 1

    def _real(self, g: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
        vol, lab = self.real
        c = int(g.choice(self.real_centres))
        x = slice_stack(vol, c, self.cfg.axis, self.cfg.window)
        y = stack_target(lab, c, self.cfg.axis, self.cfg.window, self.dense)
        if self.cfg.patch is not None:
            x, y = crop_or_pad(x, y, self.cfg.patch, g)
        return x, y


def _annotated_centres(real: tuple[np.ndarray, np.ndarray], cfg) -> np.ndarray:
    """Slice indices along ``cfg.axis`` of a real tomogram with at least one labelled voxel."""
    vol, lab = real
    check_window(vol.shape, cfg.axis, cfg.window, "real volume")
    if vol.shape != lab.shape:
        raise UserError(
            f"real labels: shape {lab.shape} differs from the real volume's {vol.shape}"
        )
    other = tuple(i for i in range(3) if i != cfg.axis)
    centres = np.flatnonzero((lab != IGNORE_INDEX).any(axis=other))
    if centres.size == 0:
        raise UserError("real labels: no annotated slice (every voxel is −1)")
    return centres


class Prefetcher:
    """Run an iterator in a background thread, ``depth`` items ahead (exceptions re-raised).

    zlib inflation, file/S3 reads and torch kernels release the GIL, so reading and decoding the
    next shard overlaps with the training step.
    """

    _DONE = object()

    def __init__(self, iterator: Iterator, depth: int = 4):
        self._q: queue.Queue = queue.Queue(maxsize=max(1, depth))
        self._stop = threading.Event()
        self._it = iterator
        self._thread = threading.Thread(target=self._run, daemon=True, name="simaq-prefetch")
        self._thread.start()

    def _put(self, item) -> bool:
        while not self._stop.is_set():
            try:
                self._q.put(item, timeout=0.1)
                return True
            except queue.Full:
                continue
        return False

    def _run(self) -> None:
        try:
            for item in self._it:
                if not self._put((True, item)):
                    return
            self._put((True, self._DONE))
        except BaseException as err:  # noqa: BLE001 - handed to the consumer
            self._put((False, err))

    def __iter__(self):
        return self

    def __next__(self):
        ok, item = self._q.get()
        if not ok:
            raise item
        if item is self._DONE:
            raise StopIteration
        return item

    def close(self) -> None:
        self._stop.set()
        self._thread.join(timeout=5)
