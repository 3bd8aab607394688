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

import numpy as np
import torch

from factory.errors import UserError
from models.data import check_window, slice_stack

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
        "map_from_full": list(labels.get("map_from_full") or []),
    }


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


def save_checkpoint(directory: str, model: torch.nn.Module, optimizer, state: dict) -> None:
    """Write a checkpoint into a local ``directory`` (created by the caller)."""
    import os

    net = model.module if hasattr(model, "module") else model
    torch.save(net.state_dict(), os.path.join(directory, MODEL_NAME))
    if optimizer is not None:
        torch.save(optimizer.state_dict(), os.path.join(directory, OPTIM_NAME))
    with open(os.path.join(directory, STATE_NAME), "w", encoding="utf-8") as fh:
        json.dump({"format": CKPT_FORMAT, **state}, fh, indent=1)


def _fs(url: str, endpoint_url: str | None):
    from factory.dataset.storage import resolve_filesystem

    return resolve_filesystem(str(url), endpoint_url=endpoint_url)


def _read_state(fs, path: str) -> dict | None:
    from factory.dataset.storage import is_file, read_bytes

    p = posixpath.join(path, STATE_NAME)
    if not is_file(fs, p):
        return None
    try:
        state = json.loads(read_bytes(fs, p))
    except (UnicodeDecodeError, json.JSONDecodeError) as err:
        raise UserError(f"checkpoint: {p} is not valid JSON ({err})") from None
    if not isinstance(state, dict) or state.get("format") != CKPT_FORMAT:
        raise UserError(f"checkpoint: {p} is not a {CKPT_FORMAT} checkpoint")
    return state


def find_checkpoint(url: str, *, endpoint_url: str | None = None) -> tuple[str, dict] | None:
    """``(path, state)`` of the checkpoint at ``url``: the directory itself if it holds
    ``state.json``, else the latest (highest step) checkpoint under it (a run directory); None if
    there is none."""
    from factory.dataset.storage import list_dir

    fs, path = _fs(url, endpoint_url)
    state = _read_state(fs, path)
    if state is not None:
        return path, state
    best = None
    for info in list_dir(fs, path, recursive=True):
        if info.base_name == STATE_NAME and "checkpoint_" in info.path:
            d = posixpath.dirname(info.path)
            st = _read_state(fs, d)
            key = (int(st.get("step", 0)), int(st.get("epoch", 0)), d)
            if best is None or key > best[0]:
                best = (key, d, st)
    return (best[1], best[2]) if best else None


def _load_tensor_file(fs, path: str, map_location):
    from factory.dataset.storage import read_bytes

    try:
        return torch.load(
            io.BytesIO(read_bytes(fs, path)), map_location=map_location, weights_only=True
        )
    except FileNotFoundError:
        raise UserError(f"checkpoint: {path} is missing") from None
    except Exception as err:  # noqa: BLE001 - unpickling errors of many kinds
        raise UserError(f"checkpoint: cannot load {path} ({type(err).__name__}: {err})") from None


def load_checkpoint(
    url: str,
    *,
    endpoint_url: str | None = None,
    map_location="cpu",
    with_optimizer: bool = False,
):
    """Load ``(model, state[, optimizer_state])`` from a checkpoint or run directory (eval mode)."""
    from factory.dataset.storage import safe_url
    from models.unet import build_model

    found = find_checkpoint(url, endpoint_url=endpoint_url)
    if found is None:
        raise UserError(f"--model: no checkpoint at {safe_url(str(url))!r}")
    path, state = found
    fs, _ = _fs(url, endpoint_url)
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
    sd = _load_tensor_file(fs, posixpath.join(path, MODEL_NAME), map_location)
    try:
        model.load_state_dict(sd)
    except RuntimeError as err:
        raise UserError(f"checkpoint: weights do not match the architecture ({err})") from None
    model.eval()
    state = {**state, "path": path}
    if with_optimizer:
        from factory.dataset.storage import is_file

        op = posixpath.join(path, OPTIM_NAME)
        opt = _load_tensor_file(fs, op, map_location) if is_file(fs, op) else None
        return model, state, opt
    return model, state


# --- normalisation and sliding-window inference ---------------------------------------------------


def normalize_volume(volume: np.ndarray, normalization: dict | None) -> np.ndarray:
    """Normalise a raw (Z, Y, X) tomogram as the training data were (see
    :func:`factory.acquisition.recon.quantile_normalize`): ``{"method": "quantile",
    "fov_inset_px": k, "fov": "cylinder"|"all"}`` maps values inside the field-of-view cylinder
    around Y (radius min(Z, X)/2 − k) onto standard normal quantiles, 0 outside;
    ``{"method": "none"}`` returns the volume as float32."""
    from factory.acquisition.recon import quantile_normalize
    from factory.acquisition.volume import cylinder_mask

    vol = np.asarray(volume, dtype=np.float32)
    norm = normalization or {"method": "quantile", "fov_inset_px": 5, "fov": "cylinder"}
    method = norm.get("method", "quantile")
    if method == "none":
        return vol
    if method != "quantile":
        raise UserError(f"normalization: unknown method {method!r} (quantile or none)")
    t = torch.from_numpy(np.ascontiguousarray(vol))
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
) -> np.ndarray:
    """Slide the ``window``-slice stack through a normalised (Z, Y, X) volume along ``axis``.

    Returns class probabilities (C, Z, Y, X) float32 (softmax), or with ``probabilities=False``
    the argmax labels (Z, Y, X) uint8. Ends are mirrored as in training.
    """
    check_window(volume.shape, axis, window)
    model.eval()
    dev = torch.device(device)
    n = volume.shape[axis]
    ncls = None
    out = None
    use_amp = amp and dev.type == "cuda"
    for start in range(0, n, batch_size):
        centres = range(start, min(n, start + batch_size))
        x = torch.from_numpy(np.stack([slice_stack(volume, c, axis, window) for c in centres]))
        with torch.autocast(dev.type, enabled=use_amp):
            logits = model(x.to(dev))
        p = torch.softmax(logits.float(), dim=1).cpu().numpy()  # (b, C, H, W)
        if out is None:
            ncls = p.shape[1]
            if probabilities:
                out = np.zeros((ncls, *volume.shape), np.float32)
            else:
                out = np.zeros(volume.shape, np.uint8)
        if probabilities:
            view = np.moveaxis(out, axis + 1, 1)  # (C, n, H, W)
            view[:, start : start + len(centres)] = p.transpose(1, 0, 2, 3)
        else:
            view = np.moveaxis(out, axis, 0)
            view[start : start + len(centres)] = p.argmax(1).astype(np.uint8)
    return out


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
    ``axis`` (the same stacks as :func:`predict_volume`, for a subset of slices)."""
    check_window(volume.shape, axis, window)
    model.eval()
    dev = torch.device(device)
    use_amp = amp and dev.type == "cuda"
    out = []
    for start in range(0, len(centres), batch_size):
        chunk = centres[start : start + batch_size]
        x = torch.from_numpy(np.stack([slice_stack(volume, int(c), axis, window) for c in chunk]))
        with torch.autocast(dev.type, enabled=use_amp):
            logits = model(x.to(dev))
        out.append(logits.float().argmax(1).to(torch.uint8).cpu().numpy())
    shape = [s for i, s in enumerate(volume.shape) if i != axis]
    return np.concatenate(out) if out else np.zeros((0, *shape), np.uint8)
