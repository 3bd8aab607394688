"""What the drawn LACs of a dataset allow: IoU ceilings that no segmentation network can pass.

Usage::

    python bench/ceiling.py --data DATASET [--split SPLIT]

A phantom draws each organelle's LAC from a Gaussian (``factory/materials.py``). Where two classes'
distributions overlap, some objects of one class are absorbed exactly like objects of the other,
and intensity cannot tell them apart. This script reads every sample's metadata (the objects the
phantom placed, their radii and drawn LAC) and prints:

1. **Vacuole against nucleus**: in the ``simaq4`` scheme the nucleus is *cell* and the vacuole its own
   class, and their LACs overlap (vacuole 0.182 ± 0.039, nucleoplasm 0.24 ± 0.03 1/µm). The
   vacuole IoU of an *intensity oracle*: perfect shapes, each vacuole or nucleus labelled vacuole
   when its drawn LAC lies below one threshold (the best one for the dataset). A network can pass
   it only with cues other than intensity (the nucleolus).
2. **Lipid droplets near the cytoplasm**: the fraction of lipid-droplet voxels whose LAC lies within
   0.05 / 0.10 / 0.15 1/µm of their cell's cytoplasm (0.570 ± 0.111 against 0.346 ± 0.027): at
   the demo's noise such droplets are not found (``simaq evaluate`` writes ``objects_recall.png``).

Volumes are counted from the radii (4/3 π abc voxels). No timing: nothing here depends on load.
"""

from __future__ import annotations

import argparse
import math
import os
import sys

import numpy as np

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


def objects_of(dataset: str, split: str | None) -> list[tuple[str, float, float, float]]:
    """``(class, lac, lac − cytoplasm lac, voxels)`` of every vacuole, nucleus and droplet."""
    from factory.dataset.manifest import iter_samples, read_manifest

    m = read_manifest(dataset)
    out = []
    for rec in m.shards:
        if split and rec.split != split:
            continue
        for s in iter_samples(dataset, rec, fields=m.fields):
            objs = s["meta"].objects
            cyto = {o.cell: o.lac_per_um for o in objs if o.kind == "cell"}
            for o in objs:
                if o.kind in ("vacuole", "nucleus", "lipid_droplet"):
                    v = 4 / 3 * math.pi * float(np.prod(o.radii_vox))
                    lac = float(o.lac_per_um)
                    out.append((o.kind, lac, lac - cyto[o.cell], v))
    return out


def vacuole_oracle(objs: list[tuple[str, float, float, float]]) -> tuple[float, float]:
    """Best vacuole IoU of a single LAC threshold over vacuoles and nuclei, and that threshold."""
    vac = [(lac, v) for c, lac, _, v in objs if c == "vacuole"]
    nuc = [(lac, v) for c, lac, _, v in objs if c == "nucleus"]
    best = (0.0, math.nan)
    for th in np.linspace(0.05, 0.45, 401):
        tp = sum(v for lac, v in vac if lac < th)
        fn = sum(v for lac, v in vac if lac >= th)
        fp = sum(v for lac, v in nuc if lac < th)
        if tp + fn + fp > 0 and tp / (tp + fn + fp) > best[0]:
            best = (tp / (tp + fn + fp), float(th))
    return best


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--data", required=True)
    ap.add_argument("--split", default=None, help="one split only (default: all)")
    args = ap.parse_args(argv)
    objs = objects_of(args.data, args.split)
    count = {c: sum(1 for o in objs if o[0] == c) for c in ("vacuole", "nucleus", "lipid_droplet")}
    print(f"# {args.data} ({args.split or 'all splits'}): objects {count}")
    if count["vacuole"] and count["nucleus"]:
        iou, th = vacuole_oracle(objs)
        print(f"vacuole IoU ceiling of an intensity oracle (vacuole vs nucleus): {iou:.3f} "
              f"(threshold {th:.3f} 1/um)")  # fmt: skip
    elif count["vacuole"]:
        print("no nuclei: the vacuole has no look-alike (intensity ceiling 1.0)")
    ld = [(d, v) for c, _, d, v in objs if c == "lipid_droplet"]
    total = sum(v for _, v in ld) or 1.0
    for th in (0.05, 0.10, 0.15):
        frac = sum(v for d, v in ld if abs(d) < th) / total
        print(f"lipid-droplet voxels within {th:.2f} 1/um of their cytoplasm: {frac:.3f}")


if __name__ == "__main__":
    main()
