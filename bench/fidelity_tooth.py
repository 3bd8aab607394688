"""Fidelity of two presets against a real volume: the tooth micro-CT in ../shared/data.

Reconstructs the tooth (TomoPy's APS data set: 181 angles over 180°, 2 detector rows) with the
project's FBP, writes it as MRC, generates a few samples of each preset with the local executor,
and runs ``simaq fidelity --suggest`` of each preset against it, as a user would. The tooth's pixel
size is not given by its source; it is declared equal to each dataset's voxel size (the comparison
is then made at the tooth's own sampling). It is a real tomogram but not SXT: the point is to show
the report and the calibration on real data, not a target to match.

    python bench/fidelity_tooth.py [--presets demo,capillary-demo] [--samples 8] [--out DIR]
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

REPO = Path(__file__).resolve().parents[1]
TOOTH = REPO.parent / "shared" / "data" / "tooth_microct"
KEYS = ("spectral_slope", "noise_sd", "wedge_half_angle_deg", "edge_sharpness_per_um",
        "autocorrelation_nm")  # fmt: skip


def tooth_volume() -> np.ndarray:
    """FBP of the tooth, (Z=640, Y=2, X=640), from flat/dark-corrected projections (-log)."""
    sys.path.insert(0, str(REPO))
    from factory.tomo import fbp

    proj = np.load(TOOTH / "projections.npy")
    flat, dark = np.load(TOOTH / "flats.npy").mean(0), np.load(TOOTH / "darks.npy").mean(0)
    theta = np.load(TOOTH / "theta_deg.npy")
    trans = np.clip((proj - dark) / np.clip(flat - dark, 1e-3, None), 1e-3, None)
    sino = (-np.log(trans)).astype(np.float32)
    # the rotation centre is at column 295.5 (README of the data set), not at 319.5
    return fbp(sino, theta, filter="hamming", shape=(640, 2, 640), center_offset=295.5 - 319.5)


def run(cmd: list[str], cwd: Path) -> str:
    res = subprocess.run(cmd, cwd=cwd, capture_output=True, text=True)
    if res.returncode != 0:
        raise SystemExit(f"{' '.join(cmd)} failed:\n{res.stderr[-3000:]}")
    return res.stdout


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--presets", default="demo,capillary-demo")
    ap.add_argument("--samples", type=int, default=8)
    ap.add_argument("--out", type=Path, default=None)
    args = ap.parse_args()
    out = args.out or Path(tempfile.mkdtemp(prefix="simaq-fidelity-"))
    out.mkdir(parents=True, exist_ok=True)
    np.save(out / "tooth.npy", tooth_volume())
    simaq = [sys.executable, str(REPO / "cli.py")]
    print(f"# load average {os.getloadavg()[0]:.1f}; files in {out}")
    for preset in args.presets.split(","):
        ds = out / f"ds-{preset}"
        if not (ds / "manifest.json").exists():
            run([*simaq, "generate", "--preset", preset, "--samples", str(args.samples),
                 "--shard-size", str(args.samples), "--executor", "local", "--out", str(ds)], out)  # fmt: skip
        vox = json.loads((ds / "manifest.json").read_text())["config"]["grid"]["voxel_nm"]
        rep_dir = out / f"fidelity-{preset}"
        text = run([*simaq, "fidelity", "--data", str(ds), "--real", "tooth.npy",
                    "--real-voxel-nm", str(vox), "--out", str(rep_dir), "--suggest"], out)  # fmt: skip
        rep = json.loads((rep_dir / "fidelity.json").read_text())
        real, syn = rep["real"]["metrics"], rep["summary"]["synthetic"]
        dist = rep["summary"]["comparison"]["distance"]["median"]
        print(f"\n## {preset} vs tooth (declared {vox:g} nm voxels): distance {dist:.3f}")
        print("| metric | tooth | synthetic median |\n| --- | --- | --- |")
        for k in KEYS:
            print(f"| {k} | {real[k]:.3g} | {syn[k]['median']:.3g} |")
        print("suggested:\n" + "\n".join(ln for ln in text.splitlines() if "--set" in ln))
    return 0


if __name__ == "__main__":
    sys.exit(main())
