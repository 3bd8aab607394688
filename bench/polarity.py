"""How often a tomogram's intensity polarity is detected right (``models/polarity.py``), and what
the wrong polarity costs.

Usage::

    python bench/polarity.py --case MODEL:PRESET [--case ...] [--samples 6] [--seed 11]

For each case, ``--samples`` reconstructions of PRESET (in-process, CPU, ``simaq4`` labels) are
segmented by MODEL (a run directory) as they are and inverted (absorbing = dark), each with
``polarity="auto"``. Prints per case: the entropy ratio (inverted / as-is, over the field of view of
the central slab) of every volume, how many of the 2 × N decisions are right, and the cell IoU
against the simulated truth with the polarity as stored, inverted without detection, and inverted
with it. The ratio test flips only below ``FLIP_RATIO``. No ratio to a peer: it measures
correctness, not speed; the load average is printed for the record.
"""

from __future__ import annotations

import argparse
import json
import os
import sys

import numpy as np

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


def cell_iou(classes: np.ndarray, labels: np.ndarray) -> float:
    a, b = classes > 0, labels > 0
    return float((a & b).sum() / max((a | b).sum(), 1))


def run_case(model_dir: str, preset: str, samples: int, seed: int) -> dict:
    from factory.config import load_preset
    from factory.sample import simulate_sample
    from models.infer import load_checkpoint, predict_at_model_scale, upsample_argmax

    cfg = load_preset(preset, {"labels": {"scheme": "simaq4"}})
    model, state = load_checkpoint(model_dir)
    nm = float(cfg.grid.voxel_nm)
    rows = []
    for index in range(samples):
        s = simulate_sample(cfg, seed, index)
        recon, labels = s.fields["recon"].astype(np.float32), s.fields["labels"]
        row = {"index": index}
        for name, vol, polarity in (
            ("as_is", recon, "auto"),
            ("inverted_undetected", -recon, "as-is"),
            ("inverted", -recon, "auto"),
        ):
            probs, info = predict_at_model_scale(model, state, vol, nm, polarity=polarity)
            row[f"iou_{name}"] = round(cell_iou(upsample_argmax(probs, vol.shape), labels), 3)
            if polarity == "auto":
                row[f"ratio_{name}"] = info["polarity"]["ratio"]
                row[f"flipped_{name}"] = info["polarity"]["inverted"]
        rows.append(row)
    right = sum(not r["flipped_as_is"] for r in rows) + sum(r["flipped_inverted"] for r in rows)
    mean = {k: round(float(np.mean([r[k] for r in rows])), 3)
            for k in ("iou_as_is", "iou_inverted_undetected", "iou_inverted")}  # fmt: skip
    return {"model": model_dir, "preset": preset, "voxel_nm": nm,
            "model_voxel_nm": state["dataset"].get("voxel_nm"), "right": f"{right}/{2 * samples}",
            "mean_cell_iou": mean, "volumes": rows}  # fmt: skip


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--case", action="append", required=True, help="MODEL_DIR:PRESET")
    ap.add_argument("--samples", type=int, default=6)
    ap.add_argument("--seed", type=int, default=11)
    args = ap.parse_args(argv)
    from models.polarity import FLIP_RATIO

    out = {"flip_ratio": FLIP_RATIO, "loadavg_start": os.getloadavg(), "cases": []}
    for case in args.case:
        model_dir, preset = case.rsplit(":", 1)
        res = run_case(model_dir, preset, args.samples, args.seed)
        out["cases"].append(res)
        print(
            f"{preset:<22} model {res['model_voxel_nm']} nm  right {res['right']}  "
            f"cell IoU as is / inverted / inverted+auto: "
            + " / ".join(f"{v:.3f}" for v in res["mean_cell_iou"].values())
            + "  ratios as is: "
            + " ".join(f"{r['ratio_as_is']:.2f}" for r in res["volumes"])
            + "  inverted: "
            + " ".join(f"{r['ratio_inverted']:.2f}" for r in res["volumes"]),
            flush=True,
        )
    out["loadavg_end"] = os.getloadavg()
    print(json.dumps(out, indent=1))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
