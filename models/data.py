"""The training input pipeline: shards → volumes → random slice stacks → augmented batches.

Volumes are (Z, Y, X); a *stack* is the ``window`` slices around a centre index along ``axis``
(default 1, the tilt axis Y), moved to the front: (window, H, W) float32, with the centre slice's
labels (H, W) int64 (−1 = unannotated). Near the volume ends the stack is mirrored (reflect), the
same as at inference, so every slice can be a centre.

Streaming: each Ray Train worker reads its share of the manifest's shards (:func:`shards_for_rank`,
never a directory listing) through :func:`factory.dataset.manifest.iter_samples` (sha256 checked),
keeps ``mix_volumes`` volumes in memory and draws stacks across them in random order (each slice
once per pass), drops background-only stacks with probability ``1 − background_keep`` (the reference
drops 98 %), optionally mixes in annotated slices of a real tomogram (few-shot, with probability
``real_ratio``), and augments whole batches at once (:func:`augment_batch`).
"""

from __future__ import annotations

import math
import queue
import threading
from collections.abc import Callable, Iterator

import numpy as np
import torch
import torch.nn.functional as F

from factory.errors import UserError
from schemas import IGNORE_INDEX

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
    """Slice indices of the stack around ``centre`` in a volume of ``n`` slices (reflected ends)."""
    half = window // 2
    idx = np.arange(centre - half, centre + half + 1)
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


def is_background_only(lab: np.ndarray) -> bool:
    """True if no pixel of the slice carries a class > 0 (background or unannotated only)."""
    return not bool((lab > 0).any())


def volume_stacks(
    recon: np.ndarray,
    labels: np.ndarray,
    *,
    axis: int,
    window: int,
    rng: np.random.Generator,
    background_keep: float = 1.0,
) -> Iterator[tuple[np.ndarray, np.ndarray]]:
    """Every slice of a volume once, in random order, as (stack, labels); background-only slices
    are kept with probability ``background_keep``, slices without any annotation are skipped."""
    for c in rng.permutation(recon.shape[axis]):
        lab = label_slice(labels, int(c), axis)
        if not bool((lab != IGNORE_INDEX).any()):
            continue
        if is_background_only(lab) and rng.random() >= background_keep:
            continue
        yield slice_stack(recon, int(c), axis, window), lab


def crop_or_pad(
    x: np.ndarray, y: np.ndarray, size: int, rng: np.random.Generator
) -> tuple[np.ndarray, np.ndarray]:
    """A random ``size``×``size`` in-plane crop of a stack (S, H, W) and labels (H, W); sides
    shorter than ``size`` are padded (image 0, labels −1)."""
    h, w = y.shape
    ph, pw = max(0, size - h), max(0, size - w)
    if ph or pw:
        x = np.pad(x, ((0, 0), (0, ph), (0, pw)))
        y = np.pad(y, ((0, ph), (0, pw)), constant_values=IGNORE_INDEX)
        h, w = y.shape
    i = int(rng.integers(0, h - size + 1))
    j = int(rng.integers(0, w - size + 1))
    return x[:, i : i + size, j : j + size], y[i : i + size, j : j + size]


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

    ``x`` (B, S, H, W) float32, ``y`` (B, H, W) int64; ``cfg`` an
    :class:`~models.config.AugmentConfig`.
    """
    if not cfg.enabled:
        return x, y
    b, s, h, w = x.shape

    def coin(p: float) -> torch.Tensor:
        return torch.rand(b, generator=gen) < p

    def unif(lo: float, hi: float) -> torch.Tensor:
        return lo + (hi - lo) * torch.rand(b, generator=gen)

    for dim, flip in ((-1, coin(cfg.flip_p)), (-2, coin(cfg.flip_p))):
        if flip.any():
            x = torch.where(flip[:, None, None, None], x.flip(dim), x)
            y = torch.where(flip[:, None, None], y.flip(dim), y)

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
        yf = F.grid_sample(
            y[:, None].float(), grid, mode="nearest", padding_mode="border", align_corners=True
        )
        y = yf[:, 0].round().long()

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


def shards_for_rank(shards: list[dict], rank: int, world: int) -> list[dict]:
    """This rank's share of ``shards`` (round robin); with fewer shards than ranks, ranks share."""
    if not shards:
        return []
    mine = shards[rank::world]
    return mine if mine else [shards[rank % len(shards)]]


def iter_volumes(
    dataset_url: str,
    shards: list[dict],
    *,
    endpoint_url: str | None = None,
    fields: dict | None = None,
    num_classes: int | None = None,
    allow_bad_shards: bool = False,
    on_bad: Callable[[str, str], None] | None = None,
    input_field: str = "recon",
) -> Iterator[tuple[np.ndarray, np.ndarray, dict]]:
    """Yield ``(recon float32, labels uint8, meta)`` of every sample of ``shards`` in order.

    A shard that fails its checks raises :class:`~factory.dataset.manifest.DatasetError` naming it,
    or with ``allow_bad_shards`` is skipped (``on_bad(url, reason)`` is called).
    """
    from factory.dataset.manifest import DatasetError, iter_samples

    for rec in shards:
        try:
            root = rec.get("root", dataset_url)  # a mixture: each shard names its dataset
            for s in iter_samples(root, rec, endpoint_url=endpoint_url, fields=fields):
                if input_field not in s or "labels" not in s:
                    raise DatasetError(
                        f"shard {rec['url']} sample {s['__key__']}: no {input_field!r} or "
                        "'labels' field"
                    )
                lab = s["labels"]
                if num_classes is not None and lab.size and int(lab.max()) >= num_classes:
                    raise DatasetError(
                        f"shard {rec['url']} sample {s['__key__']}: label {int(lab.max())} "
                        f"outside the manifest's {num_classes} classes"
                    )
                yield s[input_field].astype(np.float32), lab, s.get("meta", {})
        except DatasetError as err:
            if not allow_bad_shards:
                raise
            if on_bad is not None:
                on_bad(rec["url"], str(err))


class StackStream:
    """Endless stream of (stack, labels) from one worker's shards (see module docstring).

    Args:
        dataset_url: dataset root (local or ``s3://``).
        shards: this worker's shard records (from the manifest).
        cfg: :class:`~models.config.TrainConfig`.
        rng: numpy Generator driving the order, drops and crops.
        real: optional ``(volume, labels)`` of a real tomogram (already normalised; labels −1 where
            unannotated) mixed in with probability ``cfg.real_ratio``.
        passes: stop after this many passes over the shards (None: endless).
    """

    def __init__(
        self,
        dataset_url: str,
        shards: list[dict],
        cfg,
        rng: np.random.Generator,
        *,
        endpoint_url: str | None = None,
        fields: dict | None = None,
        num_classes: int | None = None,
        real: tuple[np.ndarray, np.ndarray] | None = None,
        passes: int | None = None,
    ):
        self.url, self.shards, self.cfg, self.rng = dataset_url, list(shards), cfg, rng
        self.endpoint_url, self.fields, self.num_classes = endpoint_url, fields, num_classes
        self.passes = passes
        self.bad_shards: dict[str, str] = {}
        self.volumes_read = 0
        self.real = real
        self.real_centres = None
        if real is not None:
            vol, lab = real
            check_window(vol.shape, cfg.axis, cfg.window, "real volume")
            if vol.shape != lab.shape:
                raise UserError(
                    f"real labels: shape {lab.shape} differs from the real volume's {vol.shape}"
                )
            other = tuple(i for i in range(3) if i != cfg.axis)
            annotated = (lab != IGNORE_INDEX).any(axis=other)
            self.real_centres = np.flatnonzero(annotated)
            if self.real_centres.size == 0:
                raise UserError("real labels: no annotated slice (every voxel is −1)")

    def note_bad_shard(self, url: str, reason: str) -> None:
        """Record a shard skipped under ``allow_bad_shards`` (also for validation reads)."""
        self.bad_shards[url] = reason

    def _volumes(self) -> Iterator[tuple[np.ndarray, np.ndarray, dict]]:
        n = 0
        while self.passes is None or n < self.passes:
            order = self.rng.permutation(len(self.shards))
            got = 0
            for vol in iter_volumes(
                self.url,
                [self.shards[i] for i in order],
                endpoint_url=self.endpoint_url,
                fields=self.fields,
                num_classes=self.num_classes,
                allow_bad_shards=self.cfg.allow_bad_shards,
                on_bad=self.note_bad_shard,
            ):
                got += 1
                self.volumes_read += 1
                yield vol
            if got == 0:
                raise UserError(
                    "data: no usable sample in this worker's shards "
                    f"{[s['url'] for s in self.shards]} (bad shards: {self.bad_shards})"
                )
            n += 1

    def _synthetic(self) -> Iterator[tuple[np.ndarray, np.ndarray]]:
        cfg = self.cfg
        source = self._volumes()
        live: list[Iterator] = []
        exhausted = False
        while True:
            while not exhausted and len(live) < cfg.mix_volumes:
                try:
                    recon, lab, _ = next(source)
                except StopIteration:
                    exhausted = True
                    break
                check_window(recon.shape, cfg.axis, cfg.window, "dataset volume")
                live.append(
                    volume_stacks(
                        recon,
                        lab,
                        axis=cfg.axis,
                        window=cfg.window,
                        rng=self.rng,
                        background_keep=cfg.background_keep,
                    )
                )
            if not live:
                return
            k = int(self.rng.integers(len(live)))
            try:
                yield next(live[k])
            except StopIteration:
                live.pop(k)

    def _real(self) -> tuple[np.ndarray, np.ndarray]:
        vol, lab = self.real
        c = int(self.rng.choice(self.real_centres))
        x = slice_stack(vol, c, self.cfg.axis, self.cfg.window)
        y = np.take(lab, c, axis=self.cfg.axis).astype(np.int64)
        return x, y

    def __iter__(self) -> Iterator[tuple[np.ndarray, np.ndarray]]:
        synth = self._synthetic()
        ratio = self.cfg.real_ratio if self.real is not None else 0.0
        while True:
            if ratio > 0 and self.rng.random() < ratio:
                x, y = self._real()
            else:
                try:
                    x, y = next(synth)
                except StopIteration:
                    return
            if self.cfg.patch is not None:
                x, y = crop_or_pad(x, y, self.cfg.patch, self.rng)
            yield x, y

    def batches(
        self, batch_size: int, gen: torch.Generator | None = None, augment: bool = True
    ) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
        """Augmented batches (B, S, H, W) float32 and (B, H, W) int64; stacks of different in-plane
        sizes are not mixed in one batch (a partial batch is flushed first)."""
        gen = (
            gen if gen is not None else torch.Generator().manual_seed(int(self.rng.integers(2**62)))
        )
        xs, ys = [], []
        for x, y in self:
            if xs and x.shape != xs[0].shape:
                yield self._collate(xs, ys, gen, augment)
                xs, ys = [], []
            xs.append(x)
            ys.append(y)
            if len(xs) == batch_size:
                yield self._collate(xs, ys, gen, augment)
                xs, ys = [], []
        if xs:
            yield self._collate(xs, ys, gen, augment)

    def _collate(self, xs, ys, gen, augment):
        x = torch.from_numpy(np.stack(xs))
        y = torch.from_numpy(np.stack(ys))
        if augment:
            x, y = augment_batch(x, y, self.cfg.augment, gen)
        return x, y


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
