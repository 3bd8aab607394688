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
from typing import TYPE_CHECKING

import numpy as np

from factory.errors import UserError
from models.objects import recall_plot
from models.objects import summarize as summarize_objects
from models.objects import write_rows as write_object_rows
from schemas import IGNORE_INDEX
from schemas.dataset import Manifest, ShardRecord
from schemas.sample import SampleMeta

if TYPE_CHECKING:
    from factory.dataset.storage import Store


def confusion_matrix(pred: np.ndarray, target: np.ndarray, num_classes: int) -> np.ndarray:
    """(C, C) int64 counts ``[target, pred]`` over pixels whose target is not −1."""
    t = np.asarray(target).ravel().astype(np.int64)
    p = np.asarray(pred).ravel().astype(np.int64)
    keep = t != IGNORE_INDEX
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
    valid = target != IGNORE_INDEX
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


def _split_shards(manifest: Manifest, split: str) -> list[ShardRecord]:
    """The manifest's shard records of ``split``; a UserError when the split has none."""
    shards = manifest.split_shards(split)
    if not shards:
        raise UserError(
            f"the dataset has no {split!r} split (splits: {list(manifest.splits)})", param="split"
        )
    return shards


def _progress_bar(enabled: bool, total: int, split: str):
    """A tqdm bar over ``total`` volumes, or None when ``enabled`` is false."""
    if not enabled:
        return None
    from tqdm import tqdm

    return tqdm(total=total, desc=f"evaluate {split}", unit="vol")


def _slice_rows(
    sample, group: str, iou: np.ndarray, dice: np.ndarray, names: list[str]
) -> list[dict]:
    """One row per slice of a volume: ``sample``, ``slice``, ``cells`` and ``iou_/dice_NAME``.

    ``iou`` and ``dice`` are (n_slices, C) arrays (NaN where a class is absent).
    """
    rows = []
    for s in range(iou.shape[0]):
        row = {"sample": sample, "slice": s, "cells": group}
        for k, name in enumerate(names):
            row[f"iou_{name}"] = iou[s, k]
            row[f"dice_{name}"] = dice[s, k]
        rows.append(row)
    return rows


class _Tally:
    """Running scores of a split: pooled confusion matrix, per-slice scores grouped by cell
    count, and the per-slice rows.

    Attributes
    ----------
    cm : numpy.ndarray
        int64 (C, C) confusion counts ``[target, pred]``.
    per_group : dict of str to list of (iou, dice)
        Per-volume (n_slices, C) score arrays, keyed by cell count (``"unknown"`` when missing).
    rows : list of dict
        One row per (sample, slice) (:func:`_slice_rows`).
    nvol : int
        Volumes scored so far.
    """

    def __init__(self, names: list[str], axis: int, labels: dict | None = None):
        self.names = names
        self.axis = axis
        self.cm = np.zeros((len(names), len(names)), np.int64)
        self.per_group: dict[str, list[tuple[np.ndarray, np.ndarray]]] = defaultdict(list)
        self.rows: list[dict] = []
        self.objects: list[dict] = []  # per-object rows (models.objects), synthetic data only
        self.nvol = 0
        self._full = None
        if labels and labels.get("map_from_full"):
            from schemas import label_table

            ids = {c["name"]: c["id"] for c in label_table()["classes"]}
            self._full = (ids, labels["map_from_full"])

    def add(self, pred: np.ndarray, lab: np.ndarray, meta: SampleMeta | None = None) -> None:
        """Score one (Z, Y, X) prediction against its int64 labels (−1 ignored); ``meta``, the
        sample's record, groups it by cell count and scores its objects."""
        ncls = len(self.names)
        self.cm += confusion_matrix(pred, lab, ncls)
        iou, dice = slice_scores(pred, lab, ncls, self.axis)
        group = str(meta.phantom.cells_placed) if meta is not None else "unknown"
        self.per_group[group].append((iou, dice))
        idx = meta.index if meta is not None else self.nvol
        self.rows.extend(_slice_rows(idx, group, iou, dice, self.names))
        if self._full is not None and meta is not None:
            from models.objects import object_rows

            self.objects += object_rows(pred, lab, meta, self.names, *self._full)
        self.nvol += 1


def _class_stats(groups: list[tuple[np.ndarray, np.ndarray]], names: list[str]) -> dict:
    """Per class: :func:`_summary` of the per-slice IoU and Dice of ``groups`` (NaNs left out)."""
    iou = np.concatenate([g[0] for g in groups])
    dice = np.concatenate([g[1] for g in groups])
    return {
        name: {"iou": _summary(iou[:, k]), "dice": _summary(dice[:, k])}
        for k, name in enumerate(names)
    }


def _group_key(g: str):
    """Sort key of cell-count groups: numbers ascending, then ``"unknown"``."""
    return (0, int(g)) if g.isdigit() else (1, 0)


def _pooled(cm: np.ndarray, names: list[str]) -> dict:
    """Per class: IoU and Dice of the whole split's confusion matrix (None where undefined)."""
    pooled_iou, pooled_dice = scores_from_confusion(cm)
    return {
        name: {
            "iou": None if np.isnan(pooled_iou[k]) else float(pooled_iou[k]),
            "dice": None if np.isnan(pooled_dice[k]) else float(pooled_dice[k]),
        }
        for k, name in enumerate(names)
    }


def _result(manifest: Manifest, split: str, tally: _Tally, bad: dict[str, str]) -> dict:
    """The JSON-safe summary of :func:`evaluate_dataset`."""
    names = tally.names
    all_groups = [g for v in tally.per_group.values() for g in v]
    return {
        "split": split,
        "num_volumes": tally.nvol,
        "num_slices": int(sum(g[0].shape[0] for g in all_groups)),
        "axis": tally.axis,
        "classes": names,
        "pooled": _pooled(tally.cm, names),
        "per_slice": _class_stats(all_groups, names),
        "by_cell_count": {
            g: _class_stats(tally.per_group[g], names)
            for g in sorted(tally.per_group, key=_group_key)
        },
        "dataset": {
            "name": manifest.name,
            "version": manifest.version,
            "content_sha256": manifest.content_sha256,
            "labels_scheme": manifest.labels.get("scheme"),
        },
        "bad_shards": bad,
        "objects": summarize_objects(tally.objects),
    }


def evaluate_dataset(
    predict: Callable[[np.ndarray], np.ndarray],
    dataset_url: str | Store,
    *,
    split: str = "test",
    axis: int = 1,
    max_samples: int | None = None,
    allow_bad_shards: bool = False,
    progress: bool = False,
    object_rows: list[dict] | None = None,
) -> tuple[dict, list[dict]]:
    """Score ``predict(recon) -> labels`` on every slice of ``split`` of a dataset.

    Parameters
    ----------
    predict : callable
        (Z, Y, X) float reconstruction to (Z, Y, X) integer labels.
    axis : int
        Volume axis the slices are taken along (0: Z, 1: Y, 2: X).

    Returns
    -------
    result : dict
        JSON-safe summary (per class: pooled IoU/Dice and per-slice distributions overall and per
        cell count).
    rows : list of dict
        One row per (sample, slice) with the scores.

    ``object_rows``, when given, receives one row per organelle of the phantoms
    (:func:`models.objects.object_rows`: recall against contrast).
    """
    from factory.dataset.manifest import read_manifest
    from models.data import iter_volumes

    m = read_manifest(dataset_url)
    names = [c["name"] for c in sorted(m.labels["classes"], key=lambda c: c["id"])]
    shards = _split_shards(m, split)
    total = sum(s.nsamples for s in shards)
    if max_samples is not None:
        total = min(total, max_samples)
    bad: dict[str, str] = {}
    tally = _Tally(names, axis, m.labels)
    bar = _progress_bar(progress, total, split)
    for recon, lab, meta in iter_volumes(
        dataset_url,
        shards,
        fields=m.fields,
        num_classes=len(names),
        allow_bad_shards=allow_bad_shards,
        on_bad=lambda u, r: bad.__setitem__(u, r),
    ):
        if max_samples is not None and tally.nvol >= max_samples:
            break
        tally.add(np.asarray(predict(recon)), lab.astype(np.int64), meta)
        if bar is not None:
            bar.update(1)
    if bar is not None:
        bar.close()
    if tally.nvol == 0:
        raise UserError(f"evaluate: no readable sample in split {split!r} (bad shards: {bad})")
    if object_rows is not None:
        object_rows.extend(tally.objects)
    return _result(m, split, tally, bad), tally.rows


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
    model_url: str | Store,
    dataset_url: str | Store,
    *,
    split: str = "test",
    out: str | None = None,
    batch_size: int = 16,
    device: str | None = None,
    max_samples: int | None = None,
    allow_bad_shards: bool = False,
    progress: bool = False,
    tta: bool = False,
) -> dict:
    """Evaluate a checkpoint on a dataset split; write ``evaluation.json``, ``slices.csv`` and
    ``violin_iou.png`` into ``out`` when given. Refuses a dataset of another label table."""
    import torch

    from factory.dataset.manifest import read_manifest
    from models.infer import (
        check_same_labels,
        classify_at_model_scale,
        load_checkpoint,
        predict_volume,
    )

    dev = device or ("cuda" if torch.cuda.is_available() else "cpu")
    model, state = load_checkpoint(model_url, map_location=dev)
    model.to(dev)
    m = read_manifest(dataset_url)
    check_same_labels(state["labels"], m.labels, "`model`")
    arch = state["arch"]

    data_nm = (m.config.get("grid") or {}).get("voxel_nm")

    def predict(recon: np.ndarray) -> np.ndarray:
        if not data_nm:  # a dataset without a recorded voxel size: predicted as it is
            return predict_volume(
                model, recon, axis=int(arch["axis"]), window=int(arch["window"]),
                batch_size=batch_size, device=dev, probabilities=False, tta=tta,
            )  # fmt: skip
        # the recon fields are normalised already; only the scale may differ from the model's
        classes, _ = classify_at_model_scale(
            model, state, recon, float(data_nm), normalize=False, batch_size=batch_size,
            device=dev, tta=tta,
        )  # fmt: skip
        return classes

    objects: list[dict] = []
    result, rows = evaluate_dataset(
        predict,
        dataset_url,
        split=split,
        axis=int(arch["axis"]),
        max_samples=max_samples,
        allow_bad_shards=allow_bad_shards,
        progress=progress,
        object_rows=objects,
    )
    trained_on = state.get("dataset", {}).get("content_sha256")
    result["model"] = {
        "checkpoint": state.get("path"),
        "arch": arch,
        "epoch": state.get("epoch"),
        "step": state.get("step"),
        "training_data_content_sha256": trained_on,
        "tta": tta,
        "evaluated_on_training_data": trained_on == m.content_sha256,
    }
    if out is not None:
        os.makedirs(out, exist_ok=True)
        with open(os.path.join(out, "evaluation.json"), "w", encoding="utf-8") as fh:
            json.dump(result, fh, indent=1)
        write_rows(rows, os.path.join(out, "slices.csv"))
        violin_plot(rows, result["classes"], os.path.join(out, "violin_iou.png"), "iou")
        if objects:
            write_object_rows(objects, os.path.join(out, "objects.csv"))
            recall_plot(objects, os.path.join(out, "objects_recall.png"))
    return result


# --- sparse labels of a real tomogram -------------------------------------------------------------

# a predicted id that no label equals; label ids are int32 (4 bytes a voxel on real tomograms)
UNMAPPED = np.iinfo(np.int32).min
POLARITY = "above the Otsu threshold = cell (LAC: cells absorb more than the ice around them)"


def otsu_threshold(values: np.ndarray, bins: int = 256) -> float:
    """Otsu's threshold of ``values`` (any shape; non-finite values ignored): the bin edge that
    maximises the between-class variance of a ``bins``-bin histogram. Same units as ``values``."""
    v = np.asarray(values, dtype=np.float64).ravel()
    v = v[np.isfinite(v)]
    if v.size == 0 or v.min() == v.max():
        raise UserError("Otsu: the values are constant; no threshold separates them")
    hist, edges = np.histogram(v, bins=bins)
    centres = (edges[:-1] + edges[1:]) / 2
    w0 = np.cumsum(hist).astype(np.float64)
    w1 = w0[-1] - w0
    s0 = np.cumsum(hist * centres)
    with np.errstate(invalid="ignore", divide="ignore"):
        m0 = s0 / w0
        m1 = (s0[-1] - s0) / w1
        between = w0 * w1 * (m0 - m1) ** 2
    between[~np.isfinite(between)] = -1.0
    return float(edges[1:][int(np.argmax(between))])


def parse_class_map(text: str | None, class_names: list[str]) -> tuple[np.ndarray, dict]:
    """``(lut, named)`` of ``--map NAME=ID,...``: ``lut[k]`` is the label-file id of model class
    ``k`` (:data:`UNMAPPED` if none), ``named`` the map as given.

    Without a map, model class k is label id k. ``NAME`` is a model class name, or ``cell``:
    every non-background model class that the map does not name merges into the ``cell`` id.
    Model classes neither named nor merged are unmapped: on a labelled voxel they are wrong.
    """
    if not text:
        return np.arange(len(class_names), dtype=np.int32), {
            n: i for i, n in enumerate(class_names)
        }
    named: dict[str, int] = {}
    for item in text.split(","):
        name, sep, value = (p.strip() for p in item.partition("="))
        try:
            if not sep or not name or name in named:
                raise ValueError
            named[name] = int(value)
        except ValueError:
            raise UserError(
                f"expected NAME=ID,... with distinct names, got {item.strip()!r}", param="map"
            ) from None
        if name != "cell" and name not in class_names:
            raise UserError(
                f"{name!r} is not a model class (classes: {', '.join(class_names)}; "
                "or 'cell' for every non-background class)",
                param="map",
            )
    lut = np.full(len(class_names), UNMAPPED, np.int32)
    for k, name in enumerate(class_names):
        if name in named:
            lut[k] = named[name]
        elif k > 0 and "cell" in named:
            lut[k] = named["cell"]
    return lut, named


def masked_scores(pred: np.ndarray, labels: np.ndarray, valid: np.ndarray, ids) -> dict:
    """Per label id: IoU, Dice and labelled voxels of ``pred`` against ``labels`` counted on the
    voxels where ``valid`` is True only (None where the id is in neither)."""
    p, t = pred[valid], labels[valid]
    out = {}
    for i in ids:
        pi, ti = p == i, t == i
        tp = int(np.count_nonzero(pi & ti))
        fp = int(np.count_nonzero(pi)) - tp
        fn = int(np.count_nonzero(ti)) - tp
        den = tp + fp + fn
        out[int(i)] = {
            "iou": tp / den if den else None,
            "dice": 2 * tp / (2 * tp + fp + fn) if den else None,
            "voxels": int(np.count_nonzero(ti)),
        }
    return out


def _fov_mask(shape: tuple[int, int, int], inset: float) -> np.ndarray:
    nz, _, nx = shape
    z = np.arange(nz) - (nz - 1) / 2.0
    x = np.arange(nx) - (nx - 1) / 2.0
    r = min(nz, nx) / 2.0 - inset
    return np.broadcast_to(((z[:, None] ** 2 + x[None, :] ** 2) <= r * r)[:, None, :], shape)


def otsu_baselines(raw: np.ndarray, fov_inset: float, fg: int, bg: int) -> dict:
    """Classical baselines on a raw (Z, Y, X) tomogram, as label volumes of ids ``fg`` / ``bg``:
    ``otsu_global`` (one Otsu threshold over every voxel) and ``otsu_fov`` (threshold over the
    field-of-view cylinder around Y, inset ``fov_inset`` voxels; background outside it). The
    polarity is fixed by physics, never fitted to the labels (:data:`POLARITY`)."""
    fov = _fov_mask(raw.shape, fov_inset)
    if not fov.any():  # a field smaller than the inset: the whole volume is the sample
        fov = np.ones(raw.shape, bool)
    out = {}
    for name, region in (("otsu_global", None), ("otsu_fov", fov)):
        t = otsu_threshold(raw if region is None else raw[region])
        above = raw > t if region is None else (raw > t) & region
        out[name] = (np.where(above, np.int32(fg), np.int32(bg)), t)  # no int64 temporary
    return out


def _read_real(real: str, real_labels: str, ignore: int):
    """``(tomogram, labels int32, the tomogram's VolumeHeader)`` of ``--real`` / ``--real-labels``."""
    from models.volume_io import read_volume

    raw, header = read_volume(real, "real")
    if not np.isfinite(raw).all():
        raise UserError(f"{real!r} holds NaN or infinite values", param="real")
    lab, _ = read_volume(real_labels, "real_labels")
    if lab.shape != raw.shape:
        raise UserError(
            f"shape {lab.shape} of {real_labels!r} differs from the tomogram's {raw.shape}",
            param="real_labels",
        )
    if lab.dtype.kind == "f" and not np.array_equal(lab, np.round(lab)):
        raise UserError(f"{real_labels!r} holds non-integer values", param="real_labels")
    info = np.iinfo(np.int32)
    if lab.size and (lab.min() < info.min + 1 or lab.max() > info.max):
        raise UserError(f"{real_labels!r} holds ids outside the int32 range", param="real_labels")
    lab = lab.astype(np.int32)
    if not np.any(lab != ignore):
        raise UserError(
            f"every voxel of {real_labels!r} is {ignore} (unlabelled)", param="real_labels"
        )
    return raw, lab, header


def labelled_planes(valid: np.ndarray, prefer_axis: int) -> tuple[int, list[int]]:
    """``(axis, plane indices)`` of the sparse annotation.

    A plane counts as annotated when at least half as many of its voxels are labelled as in the
    most densely labelled plane of any axis (planes crossed by another axis' annotated planes
    hold a line of labels, not a plane). The axis with the fewest such planes wins
    (``prefer_axis`` on ties).
    """
    density = {}
    for ax in range(3):
        other = tuple(i for i in range(3) if i != ax)
        density[ax] = valid.mean(axis=other)
    top = max(float(d.max()) for d in density.values())
    planes = {ax: np.flatnonzero(d >= 0.5 * top).tolist() for ax, d in density.items()}
    axis = min((a for a in range(3) if planes[a]), key=lambda a: (len(planes[a]), a != prefer_axis))
    return axis, planes[axis]


def _class_names_of_ids(ids: list[int], lut: np.ndarray, names: list[str], named: dict) -> dict:
    out = {}
    for i in ids:
        given = [n for n, v in named.items() if v == i]
        merged = [names[k] for k in range(len(names)) if lut[k] == i]
        out[i] = "+".join(given) or "+".join(merged) or f"id_{i}"
    return out


def _method_summary(scores: dict, id_names: dict, **extra) -> dict:
    ious = [s["iou"] for s in scores.values() if s["iou"] is not None]
    return {
        **extra,
        "mean_iou": float(np.mean(ious)) if ious else None,
        "per_class": {id_names[i]: {"id": i, **s} for i, s in scores.items()},
    }


def evaluate_real(
    model_url: str | Store,
    real: str,
    real_labels: str,
    *,
    class_map: str | None = None,
    ignore: int = IGNORE_INDEX,
    voxel_nm: float | None = None,
    out: str | None = None,
    batch_size: int = 16,
    device: str | None = None,
    progress: bool = False,
    tta: bool = False,
    axes: str = "auto",
    polarity: str = "as-is",
) -> dict:
    """Score a checkpoint on a real tomogram's sparse labels, beside Otsu baselines.

    Tomogram and labels are viewed in the (Z, Y, X) order first (``axes``, the file's order, or
    ``"auto"``: :func:`factory.tomo.axes.resolve_axes`); the planes of the JSON and the PNG are
    indexed in the file's order.

    The model predicts at its training voxel size (:func:`models.infer.classify_at_model_scale`;
    input voxel size from ``voxel_nm``, else the header); its argmax classes, mapped onto the
    label file's ids (:func:`parse_class_map`), and the baselines (:func:`otsu_baselines`) are
    scored on the labelled voxels only (``labels != ignore``; :func:`masked_scores`). The
    tomogram's intensity polarity is ``polarity`` (:mod:`models.polarity`; the JSON records it
    and what was detected). Writes ``evaluation_real.json`` and ``real_planes.png`` into ``out``
    when given.
    """
    import torch

    from factory.tomo.axes import file_shape, resolve_axes, to_zyx
    from models.infer import classify_at_model_scale, load_checkpoint
    from models.polarity import parse_polarity
    from models.volume_io import input_voxel_nm

    polarity = parse_polarity(polarity)
    dev = device or ("cuda" if torch.cuda.is_available() else "cpu")
    model, state = load_checkpoint(model_url, map_location=dev)
    model.to(dev)
    names = [c["name"] for c in sorted(state["labels"]["classes"], key=lambda c: c["id"])]
    lut, named = parse_class_map(class_map, names)
    raw, lab, header = _read_real(real, real_labels, ignore)
    vnm, source = input_voxel_nm(voxel_nm, header, real)
    order, axes_info = resolve_axes(raw, axes)
    raw, lab = to_zyx(raw, order), to_zyx(lab, order)
    classes, info = classify_at_model_scale(
        model, state, raw, vnm, batch_size=batch_size, device=dev, progress=progress,
        what="`real`", tta=tta, polarity=polarity,
    )  # fmt: skip
    pred = lut[classes]
    del classes
    valid = lab != ignore
    ids = sorted({int(v) for v in lut if v != UNMAPPED} | {int(v) for v in np.unique(lab[valid])})
    id_names = _class_names_of_ids(ids, lut, names, named)
    fg = int(named["cell"]) if "cell" in named else int(lut[1])
    inset = float((state.get("normalization") or {}).get("fov_inset_px", 5)) / info["zoom"]
    baselines = otsu_baselines(raw, inset, fg, int(lut[0]))
    axis, planes = labelled_planes(valid, int(state["arch"]["axis"]))
    file_axis = order.index("ZYX"[axis])  # the same axis, numbered as the file's
    methods = {"model": _method_summary(masked_scores(pred, lab, valid, ids), id_names)}
    for name, (pb, t) in baselines.items():
        methods[name] = _method_summary(masked_scores(pb, lab, valid, ids), id_names, threshold=t)
    result = {
        "tomogram": str(real),
        "labels": str(real_labels),
        "checkpoint": state.get("path"),
        **info,
        "input_shape": file_shape(info["input_shape"], order),
        "voxel_source": source,
        "header_voxel_nm": list(header.voxel_nm),
        "header_note": header.note,
        "ignore": int(ignore),
        "labelled_voxels": int(valid.sum()),
        "labelled_fraction": float(valid.mean()),
        "labelled_planes": {"axis": file_axis, "indices": planes},
        "axes": axes_info,
        "class_map": {
            n: (None if lut[k] == UNMAPPED else int(lut[k])) for k, n in enumerate(names)
        },
        "classes": {str(i): id_names[i] for i in ids},
        "baseline_polarity": POLARITY,
        "methods": methods,
    }
    if out is not None:
        os.makedirs(out, exist_ok=True)
        with open(os.path.join(out, "evaluation_real.json"), "w", encoding="utf-8") as fh:
            json.dump(result, fh, indent=1)
        otsu = baselines["otsu_fov"][0]
        png = os.path.join(out, "real_planes.png")
        planes_png(raw, pred, otsu, lab, ignore, axis, planes, png, file_axis=file_axis)
    return result


def planes_png(
    raw, pred, otsu, lab, ignore: int, axis: int, planes: list[int], path: str,
    file_axis: int | None = None,
) -> None:  # fmt: skip
    """PNG of at most 4 labelled planes (rows) along ``axis``: input, model prediction, Otsu
    (FOV) and labels (unlabelled voxels blank); class ids share one colour map. Titles name the
    axis as ``file_axis`` (the file's own index of that axis; default ``axis``)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    pick = [planes[i] for i in np.linspace(0, len(planes) - 1, min(4, len(planes))).astype(int)]
    pick = list(dict.fromkeys(pick))
    ids = lab[lab != ignore]
    vmax = max(int(ids.max(initial=0)), int(pred[pred != UNMAPPED].max(initial=0)), 1)
    fig, axes = plt.subplots(len(pick), 4, figsize=(10, 2.6 * len(pick)), squeeze=False)
    for row, idx in zip(axes, pick, strict=True):
        cut = [np.take(v, idx, axis=axis) for v in (raw, pred, otsu, lab)]
        cut[1] = np.where(cut[1] == UNMAPPED, -1, cut[1])
        row[0].imshow(cut[0], cmap="gray")
        for ax, img in zip(row[1:], cut[1:], strict=True):
            shown = np.ma.masked_where(img == (ignore if ax is row[3] else -1), img)
            ax.imshow(shown, cmap="tab10", vmin=0, vmax=max(vmax, 9), interpolation="nearest")
        for ax, title in zip(row, ("input", "model", "Otsu (FOV)", "labels"), strict=True):
            ax.set_title(
                f"{title} · plane {idx} of axis {axis if file_axis is None else file_axis}",
                fontsize=8,
            )
            ax.axis("off")
    fig.tight_layout()
    fig.savefig(path, dpi=90)
    plt.close(fig)
