"""``simaq segment`` on a tomogram finer than the model's grid: post-processing on the model's
grid (the default, ``post_grid="coarser"``) against its peer, post-processing on the input grid
(what ``segment`` did before), in the same run.

One ``capillary`` sample (256³ at 40 nm, ``labels.scheme=simaq4``) is resampled onto a finer grid
(``--factor 2``: 512³ at 20 nm; labels by nearest neighbour) and segmented by a model trained at
another voxel size (``capillary-demo``: 160 nm, zoom 0.125 at 20 nm). Each way runs in its own
process; the benchmark prints its wall time, peak resident memory, the IoU of each class against
the simulated truth, their ratios, and the load average::

    python bench/segment_scale.py --model RUN [--factor 2] [--seed 11] [--index 3] [--out DIR]
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]

CHILD = """
import json, resource, sys, time
sys.path.insert(0, {root!r})
from models.segment import segment_file
t = time.perf_counter()
res = segment_file({model!r}, {tomo!r}, {out!r}, post_grid={grid!r}, log=lambda *a: None)
res["wall_s"] = time.perf_counter() - t
res["max_rss_gib"] = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20
print(json.dumps(res))
"""


def finer(path_in: Path, path_out: Path, factor: float, labels: bool) -> tuple[int, ...]:
    """Write the volume of ``path_in`` resampled onto a grid ``factor`` times finer."""
    import mrcfile
    import torch

    with mrcfile.open(path_in, permissive=True) as m:
        vol, voxel_a = np.asarray(m.data), float(m.voxel_size.x)
    shape = tuple(int(round(s * factor)) for s in vol.shape)
    t = torch.from_numpy(np.array(vol, np.float32))[None, None]
    mode = "nearest-exact" if labels else "trilinear"
    kw = {} if labels else {"align_corners": False}
    out = torch.nn.functional.interpolate(t, size=shape, mode=mode, **kw)[0, 0].numpy()
    with mrcfile.new(path_out, overwrite=True) as m:
        m.set_data(out.astype(np.uint8 if labels else np.float32))
        m.voxel_size = voxel_a / factor
    return shape


def ious(pred: np.ndarray, truth: np.ndarray, n: int) -> list[float]:
    return [float(((pred == k) & (truth == k)).sum() / max(((pred == k) | (truth == k)).sum(), 1))
            for k in range(n)]  # fmt: skip


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--model", required=True, help="run dir / checkpoint of `simaq train`")
    ap.add_argument("--preset", default="capillary")
    ap.add_argument("--seed", type=int, default=11)
    ap.add_argument("--index", type=int, default=3)
    ap.add_argument("--factor", type=float, default=2.0, help="how much finer than the preset")
    ap.add_argument("--out", default=None, help="keep the files here")
    args = ap.parse_args()
    import mrcfile
    import tifffile

    out = Path(args.out or tempfile.mkdtemp(prefix="simaq-segscale-")).resolve()
    sim = out / "sample"
    subprocess.run(
        [sys.executable, "-m", "cli", "simulate", "--preset", args.preset, "--seed",
         str(args.seed), "--index", str(args.index), "--set", "labels.scheme=simaq4",
         "--format", "mrc", "--out", str(sim), "--overwrite"],
        check=True, cwd=ROOT, capture_output=True,
    )  # fmt: skip
    shape = finer(sim / "recon.mrc", out / "tomogram.mrc", args.factor, labels=False)
    finer(sim / "labels.mrc", out / "truth.mrc", args.factor, labels=True)
    truth = mrcfile.read(out / "truth.mrc")
    load0 = os.getloadavg()
    runs = {}
    for grid in ("input", "coarser"):
        seg = out / f"seg_{grid}.tif"
        code = CHILD.format(root=str(ROOT), model=str(Path(args.model).resolve()),
                            tomo=str(out / "tomogram.mrc"), out=str(seg), grid=grid)  # fmt: skip
        proc = subprocess.run([sys.executable, "-c", code], check=True, capture_output=True,
                              text=True, cwd=ROOT)  # fmt: skip
        res = json.loads(proc.stdout.strip().splitlines()[-1])
        pred = tifffile.imread(seg)
        runs[grid] = {
            "cleaned_on": res["postprocess"]["grid"],
            "wall_s": round(res["wall_s"], 1),
            "max_rss_gib": round(res["max_rss_gib"], 2),
            "objects": res["num_objects"],
            "iou": [round(v, 3) for v in ious(pred, truth, 4)],
        }
    summary = {
        "preset": args.preset, "seed": args.seed, "index": args.index, "shape": shape,
        "voxel_nm": res["voxel_nm"], "model_voxel_nm": res["model_voxel_nm"],
        "zoom": res["zoom"], "classes": ["background", "cell", "vacuole", "lipid_droplet"],
        "runs": runs,
        "time_ratio_input_over_coarser": round(runs["input"]["wall_s"] / runs["coarser"]["wall_s"], 1),
        "memory_ratio_input_over_coarser": round(
            runs["input"]["max_rss_gib"] / runs["coarser"]["max_rss_gib"], 2),
        "loadavg_start": load0, "loadavg_end": os.getloadavg(), "out": str(out),
    }  # fmt: skip
    print(json.dumps(summary, indent=1))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
