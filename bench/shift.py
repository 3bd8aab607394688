"""Domain-shift stress test: how much a model's zero-shot cell IoU drops when one property of the
tomogram moves outside (or to the edge of) what it was trained on.

Each shift is a set of ``--set`` overrides of the held-out preset (default ``capillary``, 256³ at
40 nm); every shift is simulated for the same indices (same cells, same draws elsewhere) and scored
as ``bench/transfer.py`` scores one sample: ``evaluate --real`` with sparse cell/void labels. The
peer is the unshifted sample (``baseline``), measured in the same run::

    python bench/shift.py --model RUN [--preset capillary] [--seed 11] [--indices 3 4 5]
        [--only NAME ...] [--set KEY=VALUE ...] [--out DIR] [--keep-volumes]

Prints one row per shift: mean cell IoU of the model and of the Otsu baseline inside the field of
view, the change against ``baseline``, and the load average. Writes ``shift.json`` in ``--out``.
What it is for: a real tomogram differs from any preset in ways nobody listed; the shifts that
cost the most say which ranges a training preset should widen (SimAQ's domain randomisation).
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

from transfer import transfer  # noqa: E402

# name -> (what it imitates, overrides). Units as in the preset: voxels of 40 nm, 1/µm, photons.
SHIFTS: dict[str, tuple[str, tuple[str, ...]]] = {
    "baseline": ("the preset as drawn", ()),
    "sirt": ("SIRT, 50 iterations, instead of filtered back-projection",
             ("reconstruction.method=sirt",)),
    "ramp": ("FBP with the ramp filter (sharper, noisier)", ("reconstruction.filter=ramp",)),
    "raw-lac": ("not normalised: LAC in 1/µm, as microscopes' software writes",
                ("reconstruction.normalize=none",)),
    "low-dose": ("300 photons per pixel", ("acquisition.noise.photons_per_pixel=300",)),
    "blur-2x": ("twice the zone-plate blur (σ 2 voxels, 80 nm)", ("acquisition.blur.sigma_vox=2.0",)),
    "rings": ("1 % defective detector pixels, gain errors sd 0.2",
              ("acquisition.rings.defect_fraction=0.01",
               "acquisition.rings.gain_error={normal: [0, 0.2], clamp: [-0.5, 0.5]}")),
    "misaligned": ("projections shifted by 3 px (120 nm) at random",
                   ("acquisition.alignment.shift_px={normal: [0, 3], clamp: [-6, 6]}",)),
    "dense-medium": ("medium 0.15/µm above water ice (protein-rich buffer)",
                     ("mount.medium_extra_lac_per_um=0.15",)),
    "thick-glass": ("a 0.8 µm capillary wall",
                    ("mount.wall_thickness_um=0.8", "mount.outer_diameter_fov={uniform: [1.2, 1.3]}")),
    "small-cells": ("cells of 1.4 µm radius", ("phantom.cells.radius_vox={normal: [35, 2], clamp: [30, 40]}",)),
    "big-cells": ("cells of 2.8 µm radius",
                  ("phantom.cells.radius_vox={normal: [70, 2], clamp: [66, 74]}",
                   "mount.outer_diameter_fov=1.5")),
    "crowded": ("six cells packed along the capillary", ("phantom.cells.count=6",)),
    "half-tilt": ("180° in 3° steps with 20 % of the projections lost",
                  ("acquisition.tilt.range_deg=180", "acquisition.tilt.step_deg=3.0",
                   "acquisition.tilt.drop_fraction=0.2")),
}  # fmt: skip


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--model", required=True, help="run dir / checkpoint of `simaq train`")
    ap.add_argument("--preset", default="capillary")
    ap.add_argument("--seed", type=int, default=11)
    ap.add_argument("--indices", type=int, nargs="+", default=[3, 4, 5])
    ap.add_argument("--set", action="append", default=[], metavar="KEY=VALUE",
                    help="override applied to every sample, the baseline's included")  # fmt: skip
    ap.add_argument("--only", nargs="+", choices=sorted(SHIFTS), help="these shifts only")
    ap.add_argument("--out", default=None, help="write the reports (and the volumes) here")
    ap.add_argument("--keep-volumes", action="store_true",
                    help="keep every simulated volume (about 0.3 GB a sample at 256³)")  # fmt: skip
    args = ap.parse_args(argv)
    out = Path(args.out or tempfile.mkdtemp(prefix="simaq-shift-")).resolve()
    names = ["baseline"] + [n for n in (args.only or SHIFTS) if n != "baseline"]
    print(f"{os.cpu_count()} CPUs, load average at start {os.getloadavg()}", flush=True)
    print("| shift | what | cell IoU, model | change | Otsu (FOV) | s |")
    print("| --- | --- | --- | --- | --- | --- |")
    rows, t_all = {}, time.perf_counter()
    for name in names:
        what, sets = SHIFTS[name]
        t0 = time.perf_counter()
        runs = [transfer(args.model, out / name / str(i), args.preset, args.seed, i,
                         sets=(*args.set, *sets))
                for i in args.indices]  # fmt: skip
        if not args.keep_volumes:  # the records, reports and pictures stay
            for path in (out / name).rglob("*.mrc"):
                path.unlink()
        model = [r["cell_iou"]["model"] for r in runs]
        otsu = [r["cell_iou"]["otsu_fov"] for r in runs]
        rows[name] = {"what": what, "set": list(sets), "model": model, "otsu_fov": otsu}
        mean = sum(model) / len(model)
        delta = mean - sum(rows["baseline"]["model"]) / len(args.indices)
        print(f"| {name} | {what} | {mean:.3f} ({min(model):.3f}–{max(model):.3f}) | "
              f"{delta:+.3f} | {sum(otsu) / len(otsu):.3f} | {time.perf_counter() - t0:.0f} |",
              flush=True)  # fmt: skip
    summary = {"model": str(Path(args.model).resolve()), "preset": args.preset, "seed": args.seed,
               "indices": args.indices, "set": args.set, "shifts": rows, "loadavg_end": os.getloadavg(),
               "seconds": round(time.perf_counter() - t_all, 1)}  # fmt: skip
    (out / "shift.json").write_text(json.dumps(summary, indent=1))
    print(f"load average at end {os.getloadavg()}; wrote {out / 'shift.json'}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
