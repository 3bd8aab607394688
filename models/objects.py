"""Per-object scores of a segmented synthetic volume: which organelles a network finds, by contrast.

Pooled IoU says how much is wrong, not why. A synthetic sample's metadata lists every organelle the
phantom placed (``meta.objects``: class, centre and radii in voxels, LAC in 1/µm), so each one
can be scored on its own: its *recall* is the fraction of its voxels that the prediction gives the
object's class (in the dataset's label scheme), and its *contrast* is its LAC minus the LAC of the
cytoplasm of its cell. Plotting recall against contrast separates what the acquisition hides
(objects whose LAC is drawn close to the cytoplasm's: no network can find them in the noise) from
what the network misses.

Array conventions: volumes are (Z, Y, X) voxel grids; centres and radii in voxels, in that order.
"""

from __future__ import annotations

import csv
import math
from collections.abc import Iterable, Sequence
from typing import TYPE_CHECKING

import numpy as np

if TYPE_CHECKING:
    from schemas.sample import SampleMeta

# Object classes scored (ellipsoids in ``meta["objects"]``) and their class in the full label table.
SCORED = {"vacuole": "vacuole", "lipid_droplet": "lipid_droplet", "nucleus": "nucleus"}
# Contrast bins (1/µm) of the summary: |LAC − cytoplasm LAC| below 0.05 is within about twice the
# cytoplasm's own spread (0.346 ± 0.027 1/µm, PHYSICS.md).
CONTRAST_EDGES = (0.0, 0.05, 0.1, 0.15, 0.2, math.inf)


def ellipsoid_mask(
    shape: Sequence[int], centre: Sequence[float], radii: Sequence[float], rotation=None
) -> tuple[tuple[slice, ...], np.ndarray]:
    """The voxels of a (rotated) ellipsoid inside a (Z, Y, X) grid of ``shape``.

    ``rotation`` (3×3, optional) maps grid offsets to the ellipsoid's axes, as the phantom plan
    records it. Returns the bounding-box slices and the boolean mask of that box (voxel centres at
    integer coordinates).
    """
    c = np.asarray(centre, float)
    r = np.asarray(radii, float)
    half = float(r.max()) + 1.0
    lo = [min(n, max(0, math.floor(ci - half))) for ci, n in zip(c, shape, strict=True)]
    hi = [min(n, max(0, math.ceil(ci + half) + 1)) for ci, n in zip(c, shape, strict=True)]
    box = tuple(slice(a, max(a, b)) for a, b in zip(lo, hi, strict=True))  # never a negative stop
    if any(s.start >= s.stop for s in box):  # wholly outside the grid along some axis
        return box, np.zeros([max(0, s.stop - s.start) for s in box], bool)
    grids = np.meshgrid(
        *[np.arange(s.start, s.stop) - ci for s, ci in zip(box, c, strict=True)], indexing="ij"
    )
    d = np.stack(grids)  # (3, z, y, x) offsets
    if rotation is not None:
        d = np.tensordot(np.asarray(rotation, float).T, d, axes=1)
    return box, ((d / r[:, None, None, None]) ** 2).sum(0) <= 1.0


def object_rows(
    pred: np.ndarray,
    lab: np.ndarray,
    meta: SampleMeta,
    class_names: Sequence[str],
    full_ids: dict[str, int],
    map_from_full: Sequence[int],
) -> list[dict]:
    """One row per scored object of a sample (see module): class, contrast, radius, recall.

    ``pred`` and ``lab`` are (Z, Y, X) scheme labels; an object's voxels are those of its
    ellipsoid that the labels give its class (so a droplet inside a vacuole is not the vacuole's).
    ``full_ids`` maps full-table class names to ids, ``map_from_full`` full ids to scheme ids.
    """
    cytoplasm = {o.cell: o.lac_per_um for o in meta.objects if o.kind == "cell"}
    rows = []
    for o in meta.objects:
        if o.kind not in SCORED or o.centre_vox is None or o.radii_vox is None:
            continue
        target = int(map_from_full[full_ids[SCORED[o.kind]]])
        rotation = (o.model_extra or {}).get("rotation")
        box, inside = ellipsoid_mask(lab.shape, o.centre_vox, o.radii_vox, rotation)
        voxels = inside & (lab[box] == target)
        n = int(voxels.sum())
        if n == 0:  # outside the field, or overwritten by a later object
            continue
        got = np.bincount(pred[box][voxels].astype(np.int64), minlength=len(class_names))
        wrong = got.copy()
        wrong[target] = 0
        cyto = cytoplasm.get(o.cell)
        contrast = None if cyto is None or o.lac_per_um is None else o.lac_per_um - cyto
        rows.append(
            {
                "sample": meta.index,
                "class": o.kind,
                "scheme_class": class_names[target],
                "lac_per_um": o.lac_per_um,
                "contrast_per_um": contrast,
                "radius_vox": float(np.mean(o.radii_vox)),
                "voxels": n,
                "recall": float(got[target] / n),
                "confused_with": class_names[int(wrong.argmax())] if wrong.any() else "",
            }
        )
    return rows


def summarize(rows: Iterable[dict]) -> dict:
    """Per object class: count, mean recall, and mean recall per |contrast| bin (1/µm)."""
    out: dict[str, dict] = {}
    rows = [r for r in rows if r["contrast_per_um"] is not None]
    for kind in sorted({r["class"] for r in rows}):
        rs = [r for r in rows if r["class"] == kind]
        bins = []
        for lo, hi in zip(CONTRAST_EDGES[:-1], CONTRAST_EDGES[1:], strict=True):
            sel = [r["recall"] for r in rs if lo <= abs(r["contrast_per_um"]) < hi]
            bins.append(
                {
                    "abs_contrast_per_um": [lo, None if math.isinf(hi) else hi],
                    "objects": len(sel),
                    "mean_recall": float(np.mean(sel)) if sel else None,
                }
            )
        out[kind] = {
            "objects": len(rs),
            "mean_recall": float(np.mean([r["recall"] for r in rs])),
            "by_contrast": bins,
        }
    return out


def write_rows(rows: list[dict], path: str) -> None:
    """``rows`` of :func:`object_rows` as CSV."""
    fields = list(rows[0]) if rows else ["sample", "class", "recall"]
    with open(path, "w", newline="", encoding="utf-8") as fh:
        w = csv.DictWriter(fh, fieldnames=fields)
        w.writeheader()
        w.writerows(rows)


def recall_plot(rows: list[dict], path: str) -> None:
    """Recall against contrast, one panel per object class (PNG)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    kinds = sorted({r["class"] for r in rows if r["contrast_per_um"] is not None})
    fig, axes = plt.subplots(1, max(1, len(kinds)), figsize=(4.2 * max(1, len(kinds)), 3.4))
    for ax, kind in zip(np.atleast_1d(axes)[: len(kinds)], kinds, strict=True):
        rs = [r for r in rows if r["class"] == kind and r["contrast_per_um"] is not None]
        x = [r["contrast_per_um"] for r in rs]
        ax.scatter(x, [r["recall"] for r in rs], s=[4 + 2 * r["radius_vox"] ** 2 for r in rs])
        ax.axvline(0, color="0.6", lw=0.8)
        ax.set(title=f"{kind} ({len(rs)})", xlabel="LAC − cytoplasm LAC (1/µm)", ylim=(-0.03, 1.03))
    np.atleast_1d(axes)[0].set_ylabel("recall (fraction of voxels found)")
    fig.tight_layout()
    fig.savefig(path, dpi=90)
    plt.close(fig)
