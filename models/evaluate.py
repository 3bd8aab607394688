"""Evaluation: per-class IoU and Dice over every slice of a split, grouped by cell count.

For each volume of the split the model's sliding-window prediction is compared with the labels slice
by slice along the model's axis (the paper's figure: distributions over thousands of slices, per
class, grouped by the number of cells in the volume). A class absent from both the prediction and
the labels of a slice has no IoU/Dice on that slice (NaN, left out of the distribution). Pooled
scores (from the confusion matrix over the whole split) are reported too. Pixels labelled −1 are
ignored.
"""

from __future__ import annotations

import csv
import json
import os
from collections import defaultdict
from collections.abc import Callable

import numpy as np

from factory.errors import UserError

IGNORE = -1


def confusion_matrix(pred: np.ndarray, target: np.ndarray, num_classes: int) -> np.ndarray:
    """(C, C) int64 counts ``[target, pred]`` over pixels whose target is not −1."""
    t = np.asarray(target).ravel().astype(np.int64)
    p = np.asarray(pred).ravel().astype(np.int64)
    keep = t != IGNORE
    t, p = t[keep], p[keep]
    if t.size and (t.min() < 0 or t.max() >= num_classes or p.min() < 0 or p.max() >= num_classes):
        raise ValueError(f"labels: values outside [0, {num_classes})")
    return np.bincount(t * num_classes + p, minlength=num_classes**2).reshape(
        num_classes, num_classes
    )


def scores_from_confusion(cm: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Per-class ``(iou, dice)`` from a confusion matrix; NaN where the class is in neither."""
    cm = np.asarray(cm, dtype=np.float64)
    tp = np.diag(cm)
    fp = cm.sum(0) - tp
    fn = cm.sum(1) - tp
    with np.errstate(invalid="ignore", divide="ignore"):
        iou = np.where(tp + fp + fn > 0, tp / (tp + fp + fn), np.nan)
        dice = np.where(tp + fp + fn > 0, 2 * tp / (2 * tp + fp + fn), np.nan)
    return iou, dice


def slice_scores(
    pred: np.ndarray, target: np.ndarray, num_classes: int, axis: int
) -> tuple[np.ndarray, np.ndarray]:
    """Per-slice, per-class IoU and Dice of two (Z, Y, X) label volumes: arrays (n_slices, C),
    NaN where the class is absent from both slices. −1 target pixels are ignored."""
    if pred.shape != target.shape:
        raise ValueError(f"prediction shape {pred.shape} != labels shape {target.shape}")
    other = tuple(i for i in range(3) if i != axis)
    valid = target != IGNORE
    n = pred.shape[axis]
    iou = np.full((n, num_classes), np.nan)
    dice = np.full((n, num_classes), np.nan)
    for k in range(num_classes):
        p = (pred == k) & valid
        t = target == k
        tp = (p & t).sum(other).astype(np.float64)
        fp = (p & ~t).sum(other)
        fn = (~p & t).sum(other)
        den = tp + fp + fn
        ok = den > 0
        iou[ok, k] = tp[ok] / den[ok]
        dice[ok, k] = 2 * tp[ok] / (2 * tp[ok] + fp[ok] + fn[ok])
    return iou, dice


def cell_count(meta: dict) -> int | None:
    """Number of cells placed in a sample (``meta["phantom"]["cells_placed"]``), if recorded."""
    ph = meta.get("phantom") if isinstance(meta, dict) else None
    if isinstance(ph, dict):
        for key in ("cells_placed", "cells", "num_cells"):
            v = ph.get(key)
            if isinstance(v, int) and not isinstance(v, bool):
                return v
    return None


def _summary(values: np.ndarray) -> dict:
    v = values[np.isfinite(values)]
    if v.size == 0:
        return {"n": 0, "mean": None, "std": None, "median": None, "q25": None, "q75": None}
    return {
        "n": int(v.size),
        "mean": float(v.mean()),
        "std": float(v.std()),
        "median": float(np.median(v)),
        "q25": float(np.quantile(v, 0.25)),
        "q75": float(np.quantile(v, 0.75)),
    }


def evaluate_dataset(
    predict: Callable[[np.ndarray], np.ndarray],
    dataset_url: str,
    *,
    split: str = "test",
    axis: int = 1,
    endpoint_url: str | None = None,
    max_samples: int | None = None,
    allow_bad_shards: bool = False,
    progress: bool = False,
) -> tuple[dict, list[dict]]:
    """Score ``predict(recon) -> labels`` on every slice of ``split`` of a dataset.

    Returns ``(result, rows)``: the JSON-safe summary (per class: pooled IoU/Dice and per-slice
    distributions overall and per cell count) and one row per (sample, slice) with the scores.
    """
    from factory.dataset.manifest import read_manifest
    from models.data import iter_volumes

    m = read_manifest(dataset_url, endpoint_url=endpoint_url)
    names = [c["name"] for c in sorted(m["labels"]["classes"], key=lambda c: c["id"])]
    ncls = len(names)
    shards = [s for s in m["shards"] if s["split"] == split]
    if not shards:
        raise UserError(
            f"--split: the dataset has no {split!r} split (splits: {list(m['splits'])})"
        )
    total = sum(s["nsamples"] for s in shards)
    if max_samples is not None:
        total = min(total, max_samples)
    bad: dict[str, str] = {}
    cm = np.zeros((ncls, ncls), np.int64)
    per_group: dict[str, list[tuple[np.ndarray, np.ndarray]]] = defaultdict(list)
    rows: list[dict] = []
    bar = None
    if progress:
        from tqdm import tqdm

        bar = tqdm(total=total, desc=f"evaluate {split}", unit="vol")
    nvol = 0
    for recon, lab, meta in iter_volumes(
        dataset_url,
        shards,
        endpoint_url=endpoint_url,
        fields=m["fields"],
        num_classes=ncls,
        allow_bad_shards=allow_bad_shards,
        on_bad=lambda u, r: bad.__setitem__(u, r),
    ):
        if max_samples is not None and nvol >= max_samples:
            break
        pred = np.asarray(predict(recon))
        lab = lab.astype(np.int64)
        cm += confusion_matrix(pred, lab, ncls)
        iou, dice = slice_scores(pred, lab, ncls, axis)
        cells = cell_count(meta)
        group = str(cells) if cells is not None else "unknown"
        per_group[group].append((iou, dice))
        idx = meta.get("index", nvol) if isinstance(meta, dict) else nvol
        for s in range(iou.shape[0]):
            row = {"sample": idx, "slice": s, "cells": group}
            for k, name in enumerate(names):
                row[f"iou_{name}"] = iou[s, k]
                row[f"dice_{name}"] = dice[s, k]
            rows.append(row)
        nvol += 1
        if bar is not None:
            bar.update(1)
    if bar is not None:
        bar.close()
    if nvol == 0:
        raise UserError(f"evaluate: no readable sample in split {split!r} (bad shards: {bad})")
    pooled_iou, pooled_dice = scores_from_confusion(cm)

    def stats(groups: list[tuple[np.ndarray, np.ndarray]]) -> dict:
        iou = np.concatenate([g[0] for g in groups])
        dice = np.concatenate([g[1] for g in groups])
        return {
            name: {"iou": _summary(iou[:, k]), "dice": _summary(dice[:, k])}
            for k, name in enumerate(names)
        }

    all_groups = [g for v in per_group.values() for g in v]

    def _key(g: str):
        return (0, int(g)) if g.isdigit() else (1, 0)

    result = {
        "split": split,
        "num_volumes": nvol,
        "num_slices": int(sum(g[0].shape[0] for g in all_groups)),
        "axis": axis,
        "classes": names,
        "pooled": {
            name: {
                "iou": None if np.isnan(pooled_iou[k]) else float(pooled_iou[k]),
                "dice": None if np.isnan(pooled_dice[k]) else float(pooled_dice[k]),
            }
            for k, name in enumerate(names)
        },
        "per_slice": stats(all_groups),
        "by_cell_count": {g: stats(per_group[g]) for g in sorted(per_group, key=_key)},
        "dataset": {
            "name": m.get("name"),
            "version": m.get("version"),
            "content_sha256": m["content_sha256"],
            "labels_scheme": m["labels"].get("scheme"),
        },
        "bad_shards": bad,
    }
    return result, rows


def violin_plot(rows: list[dict], classes: list[str], path: str, metric: str = "iou") -> None:
    """Per-class violins of the per-slice ``metric``, one violin per cell count (PNG)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    groups = sorted({r["cells"] for r in rows}, key=lambda g: (not g.isdigit(), g.zfill(6)))
    fig, axes = plt.subplots(
        1, len(classes), figsize=(2.6 * len(classes), 3.4), squeeze=False, sharey=True
    )
    for ax, name in zip(axes[0], classes, strict=True):
        data, labels = [], []
        for g in groups:
            v = np.array([r[f"{metric}_{name}"] for r in rows if r["cells"] == g], dtype=float)
            v = v[np.isfinite(v)]
            if v.size:
                data.append(v)
                labels.append(g)
        if data:
            ax.violinplot(data, showmedians=True)
            ax.set_xticks(range(1, len(labels) + 1), labels)
        ax.set_title(name, fontsize=9)
        ax.set_xlabel("cells")
        ax.set_ylim(0, 1.02)
    axes[0][0].set_ylabel(f"{metric.upper()} per slice")
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def write_rows(rows: list[dict], path: str) -> None:
    if not rows:
        return
    with open(path, "w", newline="", encoding="utf-8") as fh:
        w = csv.DictWriter(fh, fieldnames=list(rows[0]))
        w.writeheader()
        for r in rows:
            w.writerow({k: (f"{v:.6f}" if isinstance(v, float) else v) for k, v in r.items()})


def evaluate_checkpoint(
    model_url: str,
    dataset_url: str,
    *,
    split: str = "test",
    out: str | None = None,
    endpoint_url: str | None = None,
    batch_size: int = 16,
    device: str | None = None,
    max_samples: int | None = None,
    allow_bad_shards: bool = False,
    progress: bool = False,
) -> dict:
    """Evaluate a checkpoint on a dataset split; write ``evaluation.json``, ``slices.csv`` and
    ``violin_iou.png`` into ``out`` when given. Refuses a dataset of another label table."""
    import torch

    from factory.dataset.manifest import read_manifest
    from models.infer import check_same_labels, load_checkpoint, predict_volume

    dev = device or ("cuda" if torch.cuda.is_available() else "cpu")
    model, state = load_checkpoint(model_url, endpoint_url=endpoint_url, map_location=dev)
    model.to(dev)
    m = read_manifest(dataset_url, endpoint_url=endpoint_url)
    check_same_labels(state["labels"], m["labels"], "--model")
    arch = state["arch"]

    def predict(recon: np.ndarray) -> np.ndarray:
        return predict_volume(
            model,
            recon,
            axis=int(arch["axis"]),
            window=int(arch["window"]),
            batch_size=batch_size,
            device=dev,
            probabilities=False,
        )

    result, rows = evaluate_dataset(
        predict,
        dataset_url,
        split=split,
        axis=int(arch["axis"]),
        endpoint_url=endpoint_url,
        max_samples=max_samples,
        allow_bad_shards=allow_bad_shards,
        progress=progress,
    )
    trained_on = state.get("dataset", {}).get("content_sha256")
    result["model"] = {
        "checkpoint": state.get("path"),
        "arch": arch,
        "epoch": state.get("epoch"),
        "step": state.get("step"),
        "training_data_content_sha256": trained_on,
        "evaluated_on_training_data": trained_on == m["content_sha256"],
    }
    if out is not None:
        os.makedirs(out, exist_ok=True)
        with open(os.path.join(out, "evaluation.json"), "w", encoding="utf-8") as fh:
            json.dump(result, fh, indent=1)
        write_rows(rows, os.path.join(out, "slices.csv"))
        violin_plot(rows, result["classes"], os.path.join(out, "violin_iou.png"), "iou")
    return result
