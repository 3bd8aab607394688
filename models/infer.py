"""Checkpoints (save / find / load) and sliding-window inference shared by training, evaluation and
segmentation.

A checkpoint is a directory (local or ``s3://``) holding ``model.pt`` (the network's state dict,
loaded with ``weights_only=True``), ``optimizer.pt`` and ``state.json``: the architecture, the label
scheme and the training dataset's ``content_sha256`` (from its manifest), the input normalisation,
the training config, the epoch/step and the metrics history.
"""

from __future__ import annotations

import io
import json
import posixpath
from typing import TYPE_CHECKING

import numpy as np
import torch

from factory.errors import UserError
from models.data import check_window, slice_stack

if TYPE_CHECKING:
    from factory.dataset.storage import Store

CKPT_FORMAT = "simaq-model-v1"
STATE_NAME = "state.json"
MODEL_NAME = "model.pt"
OPTIM_NAME = "optimizer.pt"


# --- label tables ---------------------------------------------------------------------------------


def labels_signature(labels: dict) -> dict:
    """The parts of a manifest's ``labels`` entry that define the label table."""
    return {
        "scheme": labels.get("scheme"),
        "classes": [(int(c["id"]), str(c["name"])) for c in labels.get("classes", [])],
        "map_from_full": _trim_background(list(labels.get("map_from_full") or [])),
    }


def _trim_background(lut: list[int]) -> list[int]:
    """``lut`` without trailing entries mapping to background (0).

    Label table 2 added classes (``capillary``, ``medium``) that ``full`` and ``simaq4`` map to
    background; a table-1 map, which lacks them, means the same thing.
    """
    while len(lut) > 1 and lut[-1] == 0:
        lut = lut[:-1]
    return lut


def check_same_labels(ckpt_labels: dict, data_labels: dict, what: str) -> None:
    """Raise :class:`UserError` unless a checkpoint and a dataset use the same label table."""
    a, b = labels_signature(ckpt_labels), labels_signature(data_labels)
    if a != b:
        names_a = [n for _, n in a["classes"]]
        names_b = [n for _, n in b["classes"]]
        raise UserError(
            f"{what}: the checkpoint's label table (scheme {a['scheme']!r}, classes {names_a}) "
            f"differs from the dataset's (scheme {b['scheme']!r}, classes {names_b})"
        )


# --- save / find / load ---------------------------------------------------------------------------


def save_checkpoint(
    directory: str, model: torch.nn.Module, optimizer, state: dict, fault=None
) -> None:
    """Write a checkpoint into a local ``directory`` (created by the caller); ``fault`` is called
    between the files (a test's fault injection)."""
    import os

    net = model.module if hasattr(model, "module") else model
    torch.save(net.state_dict(), os.path.join(directory, MODEL_NAME))
    if fault is not None:
        fault()
    if optimizer is not None:
        torch.save(optimizer.state_dict(), os.path.join(directory, OPTIM_NAME))
    with open(os.path.join(directory, STATE_NAME), "w", encoding="utf-8") as fh:
        json.dump({"format": CKPT_FORMAT, **state}, fh, indent=1)


def _store(where: str | Store) -> Store:
    """A checkpoint location as a Store (see :func:`factory.dataset.storage.as_store`)."""
    from factory.dataset.storage import as_store

    return as_store(where)


def _read_state(store: Store, sub: str = "") -> dict | None:
    p = store.join(sub, STATE_NAME)
    if not store.is_file(posixpath.join(sub, STATE_NAME)):
        return None
    try:
        state = json.loads(store.read_bytes(posixpath.join(sub, STATE_NAME)))
    except (UnicodeDecodeError, json.JSONDecodeError) as err:
        raise UserError(f"checkpoint: {p} is not valid JSON ({err})") from None
    if not isinstance(state, dict) or state.get("format") != CKPT_FORMAT:
        raise UserError(f"checkpoint: {p} is not a {CKPT_FORMAT} checkpoint")
    return state


def find_checkpoint(url: str | Store) -> tuple[str, dict] | None:
    """``(path, state)`` of the checkpoint at ``url``: the directory itself if it holds
    ``state.json``, else the latest (highest step) checkpoint under it (a run directory); None if
    there is none. ``path`` is inside the store's file system."""
    found = _find_in(_store(url))
    return None if found is None else (found[0].path, found[1])


def _find_in(store: Store) -> tuple[Store, dict] | None:
    state = _read_state(store)
    if state is not None:
        return store, state
    best = None
    for info in store.list(recursive=True):
        if info.base_name == STATE_NAME and "checkpoint_" in info.path:
            d = posixpath.relpath(posixpath.dirname(info.path), store.path)
            if not store.is_file(posixpath.join(d, MODEL_NAME)):
                continue  # a checkpoint whose upload was cut (a killed run): not a checkpoint
            st = _read_state(store, d)
            key = (int(st.get("step", 0)), int(st.get("epoch", 0)), store.join(d))
            if best is None or key > best[0]:
                best = (key, d, st)
    return (store.child(best[1]), best[2]) if best else None


def _load_tensor_file(ckpt: Store, name: str, map_location):
    path = ckpt.join(name)
    try:
        return torch.load(
            io.BytesIO(ckpt.read_bytes(name)), map_location=map_location, weights_only=True
        )
    except FileNotFoundError:
        raise UserError(f"checkpoint: {path} is missing") from None
    except Exception as err:  # noqa: BLE001 - unpickling errors of many kinds
        raise UserError(f"checkpoint: cannot load {path} ({type(err).__name__}: {err})") from None


def resolve_model_path(url: str | Store, *, what: str = "`model`") -> tuple[str, dict]:
    """``(checkpoint directory, state)`` of a ``--model`` argument.

    ``url`` (local or ``s3://``) may be a run directory (its latest checkpoint is used), a
    checkpoint directory (``RUN/ray/checkpoint_000001``) or the checkpoint's ``model.pt``;
    anything else raises :class:`UserError` with one line naming the path and what was expected.
    The directory is a path inside the store's file system.
    """
    ckpt, state = _resolve_checkpoint(_store(url), what)
    return ckpt.path, state


def _resolve_checkpoint(store: Store, what: str) -> tuple[Store, dict]:
    from factory.dataset.storage import safe_url

    expected = (
        "expected a run directory, a checkpoint directory (RUN/ray/checkpoint_NNNNNN) "
        f"or its {MODEL_NAME}"
    )
    shown = safe_url(store)
    if not store.exists():
        raise UserError(f"{what}: no such file or directory {shown!r} ({expected})")
    if store.is_file():
        if store.name != MODEL_NAME or _read_state(store.parent()) is None:
            raise UserError(f"{what}: {shown!r} is a file, not a checkpoint ({expected})")
        store = store.parent()
    found = _find_in(store)
    if found is None:
        raise UserError(f"{what}: no checkpoint in {shown!r} ({expected})")
    return found


def load_checkpoint(
    url: str | Store,
    *,
    map_location="cpu",
    with_optimizer: bool = False,
    what: str = "`model`",
):
    """Load ``(model, state[, optimizer_state])`` (eval mode) from a run directory, a checkpoint
    directory or a checkpoint's ``model.pt`` (see :func:`resolve_model_path`)."""
    from models.unet import build_model

    ckpt, state = _resolve_checkpoint(_store(url), what)
    path = ckpt.path
    try:
        arch = state["arch"]
        model = build_model(
            arch["model"],
            int(state["num_classes"]),
            window=int(arch["window"]),
            features=int(arch["features"]),
            depth=int(arch["depth"]),
        )
    except (KeyError, TypeError, ValueError) as err:
        raise UserError(f"checkpoint: {path}/{STATE_NAME} has a bad architecture ({err})") from None
    sd = _load_tensor_file(ckpt, MODEL_NAME, map_location)
    try:
        model.load_state_dict(sd)
    except RuntimeError as err:
        raise UserError(f"checkpoint: weights do not match the architecture ({err})") from None
    model.eval()
    state = {**state, "path": path}
    if with_optimizer:
        has_opt = ckpt.is_file(OPTIM_NAME)
        opt = _load_tensor_file(ckpt, OPTIM_NAME, map_location) if has_opt else None
        return model, state, opt
    return model, state


# --- normalisation and sliding-window inference ---------------------------------------------------


def normalize_volume(volume: np.ndarray, normalization: dict | None) -> np.ndarray:
    """Normalise a raw (Z, Y, X) tomogram as the training data were.

    Parameters
    ----------
    volume : ndarray, shape (Z, Y, X)
        Raw tomogram (LAC in 1/µm, or any monotonic intensity); never modified (read-only and
        memory-mapped arrays are fine).
    normalization : dict or None
        The checkpoint's ``normalization``: ``{"method": "quantile", "fov_inset_px": k,
        "fov": "cylinder"|"all"}`` (the default) or ``{"method": "none"}``.

    Returns
    -------
    ndarray, shape (Z, Y, X), float32
        ``quantile``: the values inside the field-of-view cylinder around Y (radius
        min(Z, X)/2 − k voxels) rank-mapped onto standard normal quantiles, 0 outside (see
        :func:`factory.acquisition.recon.quantile_normalize`); ``none``: the volume as float32.

    Notes
    -----
    The statistics come from the sample region only (the FOV cylinder, where the
    reconstruction is valid), not from the corners of the field. Being a rank mapping, it is
    robust to extreme values: a gold fiducial or a bright capillary wall takes only its share of
    the top ranks (at most ``ndtri(1 − 0.5/n)`` ≈ 5 σ) whatever its LAC, so it neither
    compresses nor shifts the values of the cells, unlike a mean/std or min/max scaling.
    """
    from factory.acquisition.recon import quantile_normalize
    from factory.acquisition.volume import cylinder_mask

    # torch.from_numpy needs a writable array (mrcfile and np.load(mmap) give read-only ones)
    vol = np.require(volume, dtype=np.float32, requirements=["C", "W"])
    norm = normalization or {"method": "quantile", "fov_inset_px": 5, "fov": "cylinder"}
    method = norm.get("method", "quantile")
    if method == "none":
        return vol
    if method != "quantile":
        raise UserError(f"normalization: unknown method {method!r} (quantile or none)")
    t = torch.from_numpy(vol)
    if norm.get("fov", "cylinder") == "all":
        mask = torch.ones((1, 1, 1), dtype=torch.bool)
    else:
        mask = cylinder_mask(vol.shape, float(norm.get("fov_inset_px", 5)))
        if not bool(mask.any()):
            raise UserError(
                f"volume: shape {vol.shape} leaves no field of view with inset "
                f"{norm.get('fov_inset_px', 5)} px (use fov 'all')"
            )
    return quantile_normalize(t, mask).numpy()


def resample(volume: np.ndarray, shape: tuple[int, ...]) -> np.ndarray:
    """Resample a (Z, Y, X) volume, or each channel of a (C, Z, Y, X) one, onto a grid of
    ``shape`` (Z', Y', X') covering the same field (voxel centres, ``align_corners`` False).

    An axis that shrinks is first averaged over each output voxel's footprint (area, i.e.
    adaptive average pooling), then every axis is interpolated trilinearly onto ``shape`` (a
    no-op where the pooling already gave it). Trilinear interpolation alone would pick one input
    voxel in (1/zoom)³ around each output voxel: a tomogram four times finer than the model's
    grid would keep the noise of its own voxels, aliased, where a reconstruction at the coarser
    voxel size averages it (binned detector pixels). Returns float32; the input itself when the
    shape is unchanged.
    """
    shape = tuple(int(s) for s in shape)
    if tuple(volume.shape[-3:]) == shape:
        return np.asarray(volume, dtype=np.float32)
    t = torch.from_numpy(np.require(volume, dtype=np.float32, requirements=["C", "W"]))
    t = t[None, None] if t.ndim == 3 else t[None]
    pooled = tuple(min(n, s) for n, s in zip(t.shape[-3:], shape, strict=True))
    out = []
    for c in range(t.shape[1]):  # one channel at a time bounds the peak memory
        r = t[:, c : c + 1]
        if pooled != tuple(r.shape[-3:]):
            r = torch.nn.functional.adaptive_avg_pool3d(r, pooled)
        if pooled != shape:
            r = torch.nn.functional.interpolate(
                r, size=shape, mode="trilinear", align_corners=False
            )
        out.append(r[0, 0].numpy())
    return out[0] if volume.ndim == 3 else np.stack(out)


def available_memory() -> int | None:
    """Bytes of memory available to a new allocation (Linux ``MemAvailable``), None if unknown."""
    try:
        with open("/proc/meminfo", encoding="ascii") as fh:
            for line in fh:
                if line.startswith("MemAvailable:"):
                    return int(line.split()[1]) * 1024
    except (OSError, ValueError, IndexError):
        return None
    return None


def inference_bytes(input_shape, model_shape, num_classes: int) -> int:
    """Rough peak bytes of :func:`classify_at_model_scale`: on the model grid the float32 volume,
    its normalised copy, the class probabilities and the rank sort's int64 indices; on the input
    grid a float32 copy of the tomogram and the uint8 classes."""
    n_model = int(np.prod(model_shape, dtype=np.int64))
    n_input = int(np.prod(input_shape, dtype=np.int64))
    return n_model * (4 * (num_classes + 2) + 8) + n_input * 5


def check_memory(input_shape, model_shape, num_classes: int, what: str) -> None:
    """Raise :class:`UserError` when inference would need more memory than is available: most
    often a wrong voxel size (a header's, or ``voxel_nm``) that blows the model's grid up."""
    need, have = inference_bytes(input_shape, model_shape, num_classes), available_memory()
    if have is None or need <= have:
        return
    gib = 2.0**30
    raise UserError(
        f"{what}: segmenting {tuple(input_shape)} on the model's grid {tuple(model_shape)} "
        f"needs about {need / gib:.1f} GiB, more than the {have / gib:.1f} GiB available; "
        f"check the voxel size (the file header's, or `voxel_nm`)"
    )


def _linear_taps(n_in: int, n_out: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Source indices ``i0, i1`` and weight ``w1`` of linear resampling from ``n_in`` to ``n_out``
    samples over the same field (``align_corners`` False, as :func:`torch.nn.functional.interpolate`
    computes them): ``out[j] = (1 − w1[j]) · in[i0[j]] + w1[j] · in[i1[j]]``."""
    src = np.maximum((np.arange(n_out) + 0.5) * (n_in / n_out) - 0.5, 0.0)
    i0 = np.minimum(np.floor(src).astype(np.int64), n_in - 1)
    i1 = np.minimum(i0 + 1, n_in - 1)
    return i0, i1, (src - i0).astype(np.float32)


def nearest_index(n_in: int, n_out: int) -> np.ndarray:
    """Source index of each of ``n_out`` samples resampled by nearest neighbour from ``n_in``
    over the same field (voxel centres)."""
    return np.minimum(((np.arange(n_out) + 0.5) * (n_in / n_out)).astype(np.int64), n_in - 1)


def _trilinear_planes(volume: torch.Tensor, shape: tuple[int, int, int], planes: int):
    """Yield ``(slice of output Z planes, (k, C, Y, X) tensor)``: a (C, Z', Y', X') volume
    resampled trilinearly onto ``shape`` (as :func:`resample`), ``planes`` Z planes at a time
    (linear along Z, then bilinear in each plane: trilinear interpolation is separable)."""
    i0, i1, w1 = _linear_taps(volume.shape[1], shape[0])
    for start in range(0, shape[0], planes):
        sl = slice(start, min(start + planes, shape[0]))
        w = torch.from_numpy(w1[sl])[None, :, None, None]
        slab = (1 - w) * volume[:, i0[sl]] + w * volume[:, i1[sl]]  # (C, k, Y', X')
        yield (
            sl,
            torch.nn.functional.interpolate(
                slab.permute(1, 0, 2, 3), size=shape[1:], mode="bilinear", align_corners=False
            ),
        )


def upsample_argmax(probs: np.ndarray, shape: tuple[int, int, int], planes: int = 8) -> np.ndarray:
    """``argmax`` over classes of (C, Z', Y', X') probabilities resampled trilinearly onto a
    (Z, Y, X) grid covering the same field, as :func:`resample` would, without holding the
    resampled (C, Z, Y, X) array. Returns uint8 (Z, Y, X)."""
    shape = tuple(int(s) for s in shape)
    if tuple(probs.shape[1:]) == shape:
        return probs.argmax(0).astype(np.uint8)
    p = torch.from_numpy(np.require(probs, dtype=np.float32, requirements=["C", "W"]))
    out = np.empty(shape, np.uint8)
    for sl, part in _trilinear_planes(p, shape, planes):
        out[sl] = _argmax_classes(part).numpy()
    return out


def _argmax_classes(part: torch.Tensor) -> torch.Tensor:
    """``part.argmax(1)`` as uint8 for (k, C, Y, X): the first class of highest value, by a
    running comparison (5× torch's argmax over a non-last dimension here)."""
    best, idx = part[:, 0].clone(), torch.zeros(part[:, 0].shape, dtype=torch.uint8)
    for c in range(1, part.shape[1]):
        better = part[:, c] > best
        idx[better] = c
        best = torch.where(better, part[:, c], best)
    return idx


def upsample_instances(ids: np.ndarray, shape: tuple[int, int, int], planes: int = 8) -> np.ndarray:
    """Instance ids (Z', Y', X') brought onto a finer (Z, Y, X) grid of the same field: the
    objects' union is the trilinearly resampled mask above 0.5 (smooth surfaces, not a
    staircase of the coarse voxels), each of its voxels taking the id of the nearest coarse
    voxel, or of an object within one coarse voxel of it where that one is outside. int32."""
    from scipy import ndimage as ndi

    shape = tuple(int(s) for s in shape)
    if tuple(ids.shape) == shape:
        return ids.astype(np.int32)
    if not ids.any():
        return np.zeros(shape, np.int32)
    near = np.where(ids > 0, ids, ndi.maximum_filter(ids, size=3)).astype(np.int32)
    zi, yi, xi = (nearest_index(n, m) for n, m in zip(ids.shape, shape, strict=True))
    near = near[:, yi][:, :, xi]  # in-plane nearest first: (Z', Y, X)
    mask = torch.from_numpy((ids > 0).astype(np.float32))[None]
    out = np.empty(shape, np.int32)
    for sl, part in _trilinear_planes(mask, shape, planes):
        out[sl] = np.where(part[:, 0].numpy() > 0.5, near[zi[sl]], 0)
    return out


def resample_labels(labels: np.ndarray, shape: tuple[int, int, int]) -> np.ndarray:
    """Sparse labels (Z, Y, X; ids ≥ 0, −1 = unannotated) on a (Z', Y', X') grid of the same
    field: each new voxel takes the id that covers most of its footprint among the annotated
    voxels (area averaging, :func:`torch.nn.functional.adaptive_avg_pool3d`), −1 where its
    footprint holds none. Unlike nearest-neighbour or trilinear sampling, which read one or two
    input planes per output plane, it keeps every annotated plane when the grid gets coarser.
    Returns int64."""
    shape = tuple(int(s) for s in shape)
    if tuple(labels.shape) == shape:
        return labels.astype(np.int64)

    def area(mask: np.ndarray) -> torch.Tensor:
        t = torch.from_numpy(mask.astype(np.float32))[None, None]
        return torch.nn.functional.adaptive_avg_pool3d(t, shape)[0, 0]

    best = torch.zeros(shape)
    out = torch.full(shape, -1, dtype=torch.int64)
    for k in np.unique(labels[labels >= 0]):
        frac = area(labels == k)
        better = frac > best
        out[better], best[better] = int(k), frac[better]
    return out.numpy()


def model_grid(shape: tuple[int, int, int], input_nm: float, model_nm: float | None):
    """``(shape at the model's voxel size, zoom)``: the grid of the same field at the training
    voxel size ``model_nm`` (nm) for a (Z, Y, X) volume of voxel size ``input_nm`` (nm);
    zoom = input_nm / model_nm (1 when the checkpoint does not record its voxel size)."""
    if not model_nm:
        return tuple(int(s) for s in shape), 1.0
    zoom = float(input_nm) / float(model_nm)
    if abs(zoom - 1.0) < 1e-3:
        return tuple(int(s) for s in shape), 1.0
    return tuple(max(1, int(round(s * zoom))) for s in shape), zoom


def _progress_bar(total: int, desc: str, enabled: bool):
    if not enabled:
        return None
    try:
        from tqdm import tqdm
    except ImportError:  # pragma: no cover - tqdm is a dependency; never fail for a bar
        return None
    import sys

    return tqdm(total=total, desc=desc, unit="slice", file=sys.stderr, dynamic_ncols=True)


@torch.no_grad()
def predict_volume(
    model: torch.nn.Module,
    volume: np.ndarray,
    *,
    axis: int,
    window: int,
    batch_size: int = 16,
    device: str | torch.device = "cpu",
    probabilities: bool = True,
    amp: bool = True,
    progress: bool = False,
    tta: bool = False,
) -> np.ndarray:
    """Slide the ``window``-slice stack through a normalised (Z, Y, X) volume along ``axis``.

    Returns class probabilities (C, Z, Y, X) float32 (softmax), or with ``probabilities=False``
    the argmax labels (Z, Y, X) uint8. Ends are mirrored as in training. ``progress`` shows a
    tqdm bar on stderr (slices, rate and ETA). ``tta``: the probabilities averaged over the four
    flips of the slicing plane (test-time augmentation, 4× the time; the training flips them).
    """
    check_window(volume.shape, axis, window)
    if tta:
        plane = tuple(a for a in range(3) if a != axis)
        acc = 0.0
        for flips in ((), plane[:1], plane[1:], plane):
            v = np.ascontiguousarray(np.flip(volume, flips))
            p = predict_volume(
                model, v, axis=axis, window=window, batch_size=batch_size, device=device, amp=amp,
                progress=progress,
            )  # fmt: skip
            acc = acc + np.flip(p, tuple(a + 1 for a in flips))
        p = np.ascontiguousarray(acc / 4, np.float32)
        return p if probabilities else p.argmax(0).astype(np.uint8)
    model.eval()
    dev = torch.device(device)
    if getattr(model, "dense", False):
        p = _predict_dense(model, volume, axis, window, dev, amp and dev.type == "cuda", progress)
        return p if probabilities else p.argmax(0).astype(np.uint8)
    n = volume.shape[axis]
    out = None
    use_amp = amp and dev.type == "cuda"
    bar = _progress_bar(n, "predict", progress)
    try:
        for start in range(0, n, batch_size):
            centres = range(start, min(n, start + batch_size))
            x = torch.from_numpy(np.stack([slice_stack(volume, c, axis, window) for c in centres]))
            with torch.autocast(dev.type, enabled=use_amp):
                logits = model(x.to(dev))
            p = torch.softmax(logits.float(), dim=1).cpu().numpy()  # (b, C, H, W)
            if out is None:
                shape = (p.shape[1], *volume.shape) if probabilities else volume.shape
                out = np.zeros(shape, np.float32 if probabilities else np.uint8)
            if probabilities:
                view = np.moveaxis(out, axis + 1, 1)  # (C, n, H, W)
                view[:, start : start + len(centres)] = p.transpose(1, 0, 2, 3)
            else:
                view = np.moveaxis(out, axis, 0)
                view[start : start + len(centres)] = p.argmax(1).astype(np.uint8)
            if bar is not None:
                bar.update(len(centres))
    finally:
        if bar is not None:
            bar.close()
    return out


def dense_starts(n: int, window: int) -> list[int]:
    """First slices of the overlapping ``window``-slice stacks that tile ``n`` slices (stride
    ``window // 2``, the last stack flush with the end)."""
    stride = max(1, window // 2)
    starts = list(range(0, n - window + 1, stride))
    if starts[-1] != n - window:
        starts.append(n - window)
    return starts


def _predict_dense(model, volume, axis, window, dev, use_amp, progress) -> np.ndarray:
    """Probabilities (C, Z, Y, X) of a dense model: overlapping stacks (:func:`dense_starts`),
    each slice's probabilities averaged with a triangular weight (stack edges count least)."""
    n = volume.shape[axis]
    taper = np.minimum(np.arange(window) + 1, window - np.arange(window)).astype(np.float32)
    acc, wsum = None, np.zeros(n, np.float32)
    starts = dense_starts(n, window)
    bar = _progress_bar(n, "predict", progress)
    try:
        for s0 in starts:
            x = torch.from_numpy(slice_stack(volume, s0 + window // 2, axis, window)[None])
            with torch.autocast(dev.type, enabled=use_amp):
                logits = model(x.to(dev))
            p = torch.softmax(logits.float(), dim=1)[0].cpu().numpy()  # (C, S, H, W)
            if acc is None:
                acc = np.zeros((p.shape[0], n, *p.shape[2:]), np.float32)
            acc[:, s0 : s0 + window] += p * taper[None, :, None, None]
            wsum[s0 : s0 + window] += taper
            if bar is not None:
                bar.n = min(n, s0 + window)
                bar.refresh()
    finally:
        if bar is not None:
            bar.close()
    acc /= wsum[None, :, None, None]
    return np.ascontiguousarray(np.moveaxis(acc, 1, axis + 1))


def predict_at_model_scale(
    model: torch.nn.Module,
    state: dict,
    raw: np.ndarray,
    input_nm: float,
    *,
    fov: str = "cylinder",
    normalize: bool = True,
    batch_size: int = 16,
    device: str | torch.device = "cpu",
    progress: bool = False,
    what: str = "`input_path`",
    tta: bool = False,
    polarity: str = "as-is",
) -> tuple[np.ndarray, dict]:
    """Class probabilities of a raw (Z, Y, X) tomogram of voxel size ``input_nm`` (nm) on the
    model's grid: the same field at the training voxel size (``state["dataset"]["voxel_nm"]``).

    The volume is resampled trilinearly onto the model's grid (:func:`model_grid`), normalised
    there as in training (:func:`normalize_volume`, inset in model voxels; skipped with
    ``normalize=False`` for an already normalised volume), turned to the training data's
    intensity polarity (``polarity``: ``as-is``, ``inverted`` or ``auto``,
    :mod:`models.polarity`) and predicted (:func:`predict_volume`, with ``tta`` its flip
    test-time augmentation).

    Returns
    -------
    probs : ndarray, shape (C, Z', Y', X'), float32
        On the model's grid (``info["model_shape"]``).
    info : dict
        ``input_voxel_nm``, ``model_voxel_nm`` (None if unrecorded), ``zoom`` (input / model
        voxel size), ``input_shape``, ``model_shape``, ``polarity`` (the record of
        :func:`models.polarity.apply_polarity`; None without normalisation).
    """
    from factory.acquisition.volume import cylinder_mask
    from models.polarity import apply_polarity

    arch = state["arch"]
    axis, window = int(arch["axis"]), int(arch["window"])
    model_nm = (state.get("dataset") or {}).get("voxel_nm")
    grid, zoom = model_grid(raw.shape, input_nm, model_nm)
    check_window(
        grid, axis, window, what + (f" at the model's {model_nm:g} nm" if zoom != 1 else "")
    )
    check_memory(raw.shape, grid, len(state["labels"]["classes"]), what)
    vol = resample(raw, grid)
    polarity_record = None
    if normalize:
        norm = {**(state.get("normalization") or {}), "fov": fov}
        vol = normalize_volume(vol, norm)
        mask = None
        if fov == "cylinder":
            mask = cylinder_mask(vol.shape, float(norm.get("fov_inset_px", 5))).numpy()

        def run(v: np.ndarray) -> np.ndarray:
            return predict_volume(
                model, v, axis=axis, window=window, batch_size=batch_size, device=device
            )

        vol, polarity_record = apply_polarity(vol, polarity, run, axis, mask)
    probs = predict_volume(
        model, vol, axis=axis, window=window, batch_size=batch_size, device=device,
        progress=progress, tta=tta,
    )  # fmt: skip
    info = {
        "input_voxel_nm": float(input_nm),
        "model_voxel_nm": None if not model_nm else float(model_nm),
        "zoom": zoom,
        "input_shape": [int(s) for s in raw.shape],
        "model_shape": list(grid),
        "polarity": polarity_record,
    }
    return probs, info


def classify_at_model_scale(
    model: torch.nn.Module, state: dict, raw: np.ndarray, input_nm: float, **kwargs
) -> tuple[np.ndarray, dict]:
    """The predicted class (uint8, (Z, Y, X)) of each voxel of a raw tomogram: the class
    probabilities of :func:`predict_at_model_scale` (same arguments) resampled trilinearly back
    onto the input grid and their ``argmax`` taken there (:func:`upsample_argmax`, a few planes
    at a time: the input-grid probabilities, C times the input's size, are never held)."""
    probs, info = predict_at_model_scale(model, state, raw, input_nm, **kwargs)
    return upsample_argmax(probs, raw.shape), info


@torch.no_grad()
def predict_slices(
    model: torch.nn.Module,
    volume: np.ndarray,
    centres: np.ndarray,
    *,
    axis: int,
    window: int,
    batch_size: int = 16,
    device: str | torch.device = "cpu",
    amp: bool = True,
) -> np.ndarray:
    """Argmax labels (n, H, W) uint8 of the slices ``centres`` (n,) of a normalised volume along
    ``axis`` (the same stacks as :func:`predict_volume`, for a subset of slices; a dense model
    predicts each from one stack, without :func:`predict_volume`'s overlap average)."""
    check_window(volume.shape, axis, window)
    model.eval()
    dev = torch.device(device)
    use_amp = amp and dev.type == "cuda"
    if getattr(model, "dense", False):  # one stack per slice, the slice as near its middle as fits
        n, out = volume.shape[axis], []
        for c in np.asarray(centres, int):
            s0 = int(np.clip(c - window // 2, 0, n - window))
            x = torch.from_numpy(slice_stack(volume, s0 + window // 2, axis, window)[None])
            with torch.autocast(dev.type, enabled=use_amp):
                logits = model(x.to(dev))
            out.append(logits.float()[0, :, c - s0].argmax(0).to(torch.uint8).cpu().numpy())
        shape = [s for i, s in enumerate(volume.shape) if i != axis]
        return np.stack(out) if out else np.zeros((0, *shape), np.uint8)
    out = []
    for start in range(0, len(centres), batch_size):
        chunk = centres[start : start + batch_size]
        x = torch.from_numpy(np.stack([slice_stack(volume, int(c), axis, window) for c in chunk]))
        with torch.autocast(dev.type, enabled=use_amp):
            logits = model(x.to(dev))
        out.append(logits.float().argmax(1).to(torch.uint8).cpu().numpy())
    shape = [s for i, s in enumerate(volume.shape) if i != axis]
    return np.concatenate(out) if out else np.zeros((0, *shape), np.uint8)
