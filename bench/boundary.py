"""Where a trained model's errors lie on a synthetic split: surfaces, orientation, bias, samples.

Usage::

    python bench/boundary.py --model RUN [--model RUN2 ...] --data DATASET [--split test] [--tta]

For every volume of the split the model's prediction (``simaq evaluate``'s, at the dataset's own
voxel size) is compared with the labels, per class of the scheme (as ``simaq evaluate`` scores
them: a class's surface is also where it meets another class). It prints:

1. **Surface errors**: of each class's wrong voxels, the share within one voxel of the true
   surface (a voxel of the class next to one that is not, or the reverse); the predicted / true
   volume (above 1: the model draws the class too large) and the false positives / negatives.
2. **Orientation**: the error rate in the two-voxel shell around the surface by the direction of
   its normal: within 30° of the slicing axis' normal plane ("in-plane") or of the beam-free Z
   axis, where a grid's missing wedge smears the reconstruction.
3. **Samples**: per volume, each class's IoU beside the acquisition's drawn blur σ (voxels) and ice
   thickness, from the sample's ``meta.json``.
Several ``--model`` runs are scored as one ensemble: their class probabilities averaged (models
slicing along different axes make a multi-view ensemble; each alone is printed first).

4. With ``--tta``, the pooled IoU again with the prediction averaged over the four in-plane flips
   (test-time augmentation): how much of the error is variance a flip can average out.
5. With ``--offset``, the pooled IoU with the class probabilities moved by a fraction of a voxel
   along each axis (linear interpolation): a label grid misaligned with the reconstruction (a
   half-voxel slip in a projector or in the voxelisation) shows as a best shift away from 0.

No timing: nothing here depends on load.
"""

from __future__ import annotations

import argparse
import os
import sys

import numpy as np

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


def surface_errors(pred: np.ndarray, true: np.ndarray) -> dict[str, float]:
    """Counts of a binary prediction against binary truth (Z, Y, X): ``tp``, ``fp``, ``fn`` and
    ``near``, the wrong voxels within one voxel (6-neighbourhood) of the true surface."""
    from scipy import ndimage as ndi

    surface = ndi.binary_dilation(true) & ~ndi.binary_erosion(true)
    near = ndi.binary_dilation(surface)
    wrong = pred != true
    return {
        "tp": float((pred & true).sum()),
        "fp": float((pred & ~true).sum()),
        "fn": float((~pred & true).sum()),
        "near": float((wrong & near).sum()),
    }


def shell_by_orientation(pred: np.ndarray, true: np.ndarray) -> np.ndarray:
    """(2, 3) array: wrong voxels and all voxels of the two-voxel shell around the true surface,
    binned by the surface normal's angle to Z: > 60° (normal in XY), 30–60°, < 30° (normal ~Z)."""
    from scipy import ndimage as ndi

    g = np.stack(np.gradient(ndi.gaussian_filter(true.astype(np.float32), 1.5)))
    cos_z = np.abs(g[0]) / (np.linalg.norm(g, axis=0) + 1e-9)
    shell = ndi.binary_dilation(true, iterations=2) & ~ndi.binary_erosion(true, iterations=2)
    b = np.digitize(cos_z, [0.5, 0.87])
    wrong = (pred != true) & shell
    return np.array(
        [[(wrong & (b == k)).sum() for k in range(3)], [(shell & (b == k)).sum() for k in range(3)]]
    )


def probabilities(models: list, volume: np.ndarray, tta: bool = False) -> list[np.ndarray]:
    """Each ``(model, arch)`` pair's class probabilities (C, Z, Y, X) (``simaq evaluate``'s, with
    ``tta`` its ``--tta``)."""
    from models.infer import predict_volume

    return [
        predict_volume(m, volume, axis=int(a["axis"]), window=int(a["window"]), tta=tta)
        for m, a in models
    ]


OFFSETS = (-0.5, -0.25, 0.0, 0.25, 0.5)  # voxels


def shifted_overlaps(probs: np.ndarray, lab: np.ndarray, classes) -> np.ndarray:
    """(3, len(OFFSETS), C, 2) intersection and union counts of each class with the probabilities
    (C, Z, Y, X) moved by each of :data:`OFFSETS` voxels along Z, Y and X in turn (content moves
    towards higher indices for a positive offset), then argmax."""
    from scipy import ndimage as ndi

    out = np.zeros((3, len(OFFSETS), max(classes) + 1, 2))
    for ax in range(3):
        for i, d in enumerate(OFFSETS):
            move = [0.0] * 4
            move[ax + 1] = d
            p = ndi.shift(probs, move, order=1, mode="nearest") if d else probs
            out[ax, i] = _overlaps(p.argmax(0), lab, classes)
    return out


def _drawn(meta, *path: str) -> float:
    d = meta.acquisition
    for k in path:
        if not isinstance(d, dict) or k not in d:
            return float("nan")
        d = d[k]
    return float(d)


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument(
        "--model", required=True, action="append", help="run directory or checkpoint (repeatable)"
    )
    ap.add_argument("--data", required=True, help="dataset directory")
    ap.add_argument("--split", default="test")
    ap.add_argument("--tta", action="store_true", help="also score flip test-time augmentation")
    ap.add_argument(
        "--offset", action="store_true", help="also score sub-voxel shifts of the prediction"
    )
    args = ap.parse_args(argv)

    from factory.dataset.manifest import iter_samples, read_manifest
    from models.infer import load_checkpoint

    models = [(net, st["arch"]) for net, st in map(load_checkpoint, args.model)]
    m = read_manifest(args.data)
    names = [c["name"] for c in m.labels["classes"]]
    classes = range(1, len(names))
    tot = {c: dict.fromkeys(("tp", "fp", "fn", "near"), 0.0) for c in classes}
    orient = {c: np.zeros((2, 3)) for c in classes}
    tta_cm = np.zeros((len(names), 2)) if args.tta else None
    shifted = np.zeros((3, len(OFFSETS), len(names), 2)) if args.offset else None
    rows = []
    alone = [np.zeros((len(names), 2)) for _ in models]  # per model: intersection, union
    for rec in m.split_shards(args.split):
        for s in iter_samples(args.data, rec, fields=m.fields):
            vol, lab = s["recon"].astype(np.float32), s["labels"].astype(int)
            probs = probabilities(models, vol)
            ens = sum(probs)  # the ensemble: the mean's argmax
            pr = ens.argmax(0)
            if shifted is not None:
                shifted += shifted_overlaps(ens, lab, classes)
            if len(models) > 1:
                for i, p in enumerate(probs):
                    alone[i] += _overlaps(p.argmax(0), lab, classes)
            ious = []
            for c in classes:
                t, p = lab == c, pr == c
                e = surface_errors(p, t)
                for k in tot[c]:
                    tot[c][k] += e[k]
                orient[c] += shell_by_orientation(p, t)
                ious.append(e["tp"] / max(e["tp"] + e["fp"] + e["fn"], 1.0))
            meta = s["meta"]
            rows.append(
                (
                    s["__key__"],
                    ious,
                    _drawn(meta, "blur", "sigma_vox"),
                    _drawn(meta, "ice", "thickness_vox"),
                )
            )
            if tta_cm is not None:
                pt = sum(probabilities(models, vol, tta=True)).argmax(0)
                tta_cm += _overlaps(pt, lab, classes)
    _report(args, names, classes, tot, orient, rows, tta_cm)
    if shifted is not None:
        _report_offsets(names, classes, shifted)
    if len(models) > 1:
        print("## each model alone: pooled IoU")
        for run, a in zip(args.model, alone, strict=True):
            print(
                f"{run}: "
                + ", ".join(f"{names[c]} {a[c, 0] / max(a[c, 1], 1):.3f}" for c in classes)
            )


def _overlaps(pred: np.ndarray, lab: np.ndarray, classes) -> np.ndarray:
    """(C, 2) intersection and union voxel counts of each class (row 0 unused)."""
    out = np.zeros((max(classes) + 1, 2))
    for c in classes:
        out[c] = (((pred == c) & (lab == c)).sum(), ((pred == c) | (lab == c)).sum())
    return out


def _report(args, names, classes, tot, orient, rows, tta_cm) -> None:
    what = " + ".join(args.model)
    print(f"# model {what} on {args.data} ({args.split}: {len(rows)} volumes)")
    print("## surface errors")
    print(f"{'class':<15} {'IoU':>6} {'near surface':>12} {'pred/true':>9} {'FP':>8} {'FN':>8}")
    for c in classes:
        t = tot[c]
        wrong = t["fp"] + t["fn"]
        iou = t["tp"] / max(t["tp"] + wrong, 1.0)
        ratio = (t["tp"] + t["fp"]) / max(t["tp"] + t["fn"], 1.0)
        near = t["near"] / wrong if wrong else float("nan")
        print(
            f"{names[c]:<15} {iou:>6.3f} {near:>12.3f} {ratio:>9.3f} {t['fp']:>8.0f} {t['fn']:>8.0f}"
        )
    print("## error rate in the 2-voxel surface shell by the normal's angle to Z")
    print(f"{'class':<15} {'> 60° (XY)':>11} {'30-60°':>8} {'< 30° (Z)':>10}")
    for c in classes:
        w, n = orient[c]
        r = np.where(n > 0, w / np.maximum(n, 1), np.nan)
        print(f"{names[c]:<15} {r[0]:>11.3f} {r[1]:>8.3f} {r[2]:>10.3f}")
    print("## samples")
    print(
        f"{'key':<14} "
        + " ".join(f"{names[c]:>14}" for c in classes)
        + f" {'blur σ':>7} {'ice':>5}"
    )
    for key, ious, blur, ice in rows:
        print(f"{key:<14} " + " ".join(f"{v:>14.3f}" for v in ious) + f" {blur:>7.2f} {ice:>5.0f}")
    if tta_cm is not None:
        print("## flip test-time augmentation: pooled IoU (plain -> 4 flips averaged)")
        for c in classes:
            t = tot[c]
            plain = t["tp"] / max(t["tp"] + t["fp"] + t["fn"], 1.0)
            print(f"{names[c]:<15} {plain:.3f} -> {tta_cm[c, 0] / max(tta_cm[c, 1], 1):.3f}")


def _report_offsets(names, classes, shifted: np.ndarray) -> None:
    print("## pooled IoU with the prediction shifted by a fraction of a voxel")
    print(f"{'class':<15} {'axis':<4} " + " ".join(f"{d:>+7.2f}" for d in OFFSETS) + "  best")
    for c in classes:
        for ax, name in enumerate("ZYX"):
            iou = shifted[ax, :, c, 0] / np.maximum(shifted[ax, :, c, 1], 1)
            row = " ".join(f"{v:>7.3f}" for v in iou)
            print(f"{names[c]:<15} {name:<4} {row}  {OFFSETS[int(iou.argmax())]:+.2f}")


if __name__ == "__main__":
    main()
