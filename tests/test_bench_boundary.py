"""bench/boundary.py: where a model's errors lie (surface share, bias, orientation, samples)."""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "bench"))

import boundary  # noqa: E402


def _ball(shape=(24, 24, 24), r=7.0, centre=(12.0, 12.0, 12.0)) -> np.ndarray:
    z, y, x = np.indices(shape)
    return (z - centre[0]) ** 2 + (y - centre[1]) ** 2 + (x - centre[2]) ** 2 <= r * r


def test_a_surface_one_voxel_out_is_all_false_positives_next_to_the_surface():
    from scipy import ndimage as ndi

    true = _ball()
    pred = ndi.binary_dilation(true)
    e = boundary.surface_errors(pred, true)
    assert e["fn"] == 0 and e["fp"] == (pred & ~true).sum() > 0
    assert e["tp"] == true.sum() and e["near"] == e["fp"]
    far = _ball(r=3.0, centre=(4.0, 4.0, 4.0))  # and a spurious object away from the surface
    e = boundary.surface_errors(pred | far, true)
    assert 0 < e["near"] < e["fp"]


def test_a_shift_along_z_errs_where_the_normal_points_along_z():
    true = _ball(r=8.0)
    pred = np.roll(true, 1, axis=0)
    wrong, shell = boundary.shell_by_orientation(pred, true)
    rate = wrong / shell
    assert shell.min() > 0 and rate[2] > 3 * rate[0]
    pred = np.roll(true, 1, axis=2)  # along X: the in-plane normals err
    wrong, shell = boundary.shell_by_orientation(pred, true)
    assert wrong[0] / shell[0] > 3 * wrong[2] / shell[2]


def test_bench_reports_every_section_for_a_trained_run(small_dataset, tmp_path, capsys):
    from _models_helpers import split_samples, train_tiny_run

    train_tiny_run(small_dataset, tmp_path / "run", steps=3)
    boundary.main(["--model", str(tmp_path / "run"), "--data", str(small_dataset), "--tta"])
    out = capsys.readouterr().out
    for section in ("## surface errors", "## error rate", "## samples", "## flip test-time"):
        assert section in out, out
    keys = [s["__key__"] for s in split_samples(small_dataset, "test")]
    assert all(k in out for k in keys) and f"(test: {len(keys)} volumes)" in out, out
    assert "## each model alone" not in out


def test_bench_scores_an_ensemble_and_each_model_alone(small_dataset, tmp_path, capsys):
    from _models_helpers import train_tiny_run

    runs = [tmp_path / "a", tmp_path / "b"]
    for seed, run in enumerate(runs):
        train_tiny_run(small_dataset, run, steps=3, seed=seed)
    args = ["--data", str(small_dataset)]
    for run in runs:
        args += ["--model", str(run)]
    boundary.main(args)
    out = capsys.readouterr().out
    assert f"# model {runs[0]} + {runs[1]} on" in out, out
    alone = out.split("## each model alone: pooled IoU")[1].strip().splitlines()
    assert [line.split(":")[0] for line in alone] == [str(r) for r in runs], out


def test_a_half_voxel_slip_shows_as_the_best_offset_on_its_axis():
    z, y, x = np.indices((24, 24, 24), dtype=np.float32)
    lab = _ball(r=6.5).astype(int)

    def soft(dy: float) -> np.ndarray:  # a smooth probability of a ball moved by dy along Y
        inside = 1 / (
            1 + np.exp(-(6.5 - np.sqrt((z - 12) ** 2 + (y - 12 - dy) ** 2 + (x - 12) ** 2)) / 0.7)
        )
        return np.stack([1 - inside, inside])

    out = boundary.shifted_overlaps(soft(-0.5), lab, range(1, 2))  # slipped half a voxel along -Y
    iou = out[:, :, 1, 0] / out[:, :, 1, 1]
    zero = boundary.OFFSETS.index(0.0)
    assert boundary.OFFSETS[int(iou[1].argmax())] == 0.5  # Y: moved back
    assert boundary.OFFSETS[int(iou[0].argmax())] == 0.0  # Z, X: aligned
    assert boundary.OFFSETS[int(iou[2].argmax())] == 0.0
    assert iou[1, -1] > iou[1, zero] + 0.05
    aligned = boundary.shifted_overlaps(soft(0.0), lab, range(1, 2))
    assert all(boundary.OFFSETS[int(np.argmax(a[:, 1, 0] / a[:, 1, 1]))] == 0.0 for a in aligned)
