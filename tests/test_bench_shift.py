"""bench/shift.py: every shift's overrides reach the simulated sample, and each is scored against
the unshifted peer of the same run (a tiny model; the figures mean nothing, the plumbing does)."""

from __future__ import annotations

import json
import sys
from pathlib import Path

from _models_helpers import train_tiny_run

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "bench"))

import shift  # noqa: E402


def test_shift_bench_applies_each_shift_and_scores_it_beside_the_baseline(
    small_dataset, tmp_path, capsys
):
    # capillary-demo at the tiny model's 60 nm: no resampling, a 64³ inference
    run = train_tiny_run(small_dataset, tmp_path / "run", steps=10)
    out = tmp_path / "shift"
    argv = ["--model", run, "--preset", "capillary-demo", "--indices", "0", "--out", str(out),
            "--only", "low-dose", "dense-medium", "--set", "grid.voxel_nm=60", "--set", "mount.outer_diameter_fov=1.3"]  # fmt: skip
    assert shift.main(argv) == 0
    summary = json.loads((out / "shift.json").read_text())
    assert list(summary["shifts"]) == ["baseline", "low-dose", "dense-medium"]
    for row in summary["shifts"].values():
        assert len(row["model"]) == 1 and 0.0 <= row["model"][0] <= 1.0
        assert 0.0 <= row["otsu_fov"][0] <= 1.0
    drawn = {
        name: json.loads((out / name / "0" / "tomogram" / "meta.json").read_text())
        for name in summary["shifts"]
    }
    text = {name: json.dumps(meta) for name, meta in drawn.items()}
    assert '"photons_per_pixel": 300.0' in text["low-dose"]
    assert '"photons_per_pixel": 300.0' not in text["baseline"]
    assert '"medium_extra_lac_per_um": 0.15' in text["dense-medium"]
    assert '"medium_extra_lac_per_um": 0.15' not in text["baseline"]
    assert not list(out.rglob("*.mrc"))  # the volumes are removed unless --keep-volumes
    table = capsys.readouterr().out
    assert "| baseline |" in table and "| low-dose |" in table and "| dense-medium |" in table
