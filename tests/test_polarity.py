"""models/polarity.py: the intensity polarity of a tomogram, read off the network's certainty, with
a stand-in network whose certainty is known; and ``--polarity`` through ``simaq segment``."""

from __future__ import annotations

import json

import numpy as np
import pytest
import tifffile
from _cli import error_line
from _cli import run as run_cli

from factory.errors import UserError
from models.polarity import (
    FLIP_RATIO,
    apply_polarity,
    describe,
    detect_polarity,
    disagreement,
    mean_entropy,
    parse_polarity,
)


def _volume(seed: int = 0) -> np.ndarray:
    """A 'normalised' (Z, Y, X) volume: background around -0.5, a bright cell at +1.5."""
    rng = np.random.default_rng(seed)
    v = rng.normal(-0.5, 0.3, (16, 32, 32)).astype(np.float32)
    v[4:12, :, 8:24] += 2.0
    return v


def sure_of_bright(v: np.ndarray) -> np.ndarray:
    """A stand-in network trained on absorbing = bright: sure of bright voxels (cell) and of
    mid-dark ones (background), unsure of very dark ones (never seen)."""
    p_cell = 1.0 / (1.0 + np.exp(-6.0 * (v - 0.5)))
    unsure = v < -1.0
    p_cell = np.where(unsure, 0.5, p_cell)
    return np.stack([1.0 - p_cell, p_cell]).astype(np.float32)


def sure_of_nothing_inverted(v: np.ndarray) -> np.ndarray:
    """A network that calls the inverted volume background, sure of itself."""
    p = sure_of_bright(v)
    if v[4:12, :, 8:24].mean() < 0:  # the cell is dark: inverted
        p = np.stack([np.full(v.shape, 0.999), np.full(v.shape, 0.001)]).astype(np.float32)
    return p


def test_the_polarity_the_network_is_surer_of_is_detected():
    v = _volume()
    as_is = detect_polarity(sure_of_bright, v, axis=1, fov=None)
    assert as_is["detected"] == "as-is" and as_is["ratio"] > 1 / FLIP_RATIO
    inv = detect_polarity(sure_of_bright, -v, axis=1, fov=None)
    assert inv["detected"] == "inverted" and inv["ratio"] < FLIP_RATIO
    assert inv["entropy_as_is"] == pytest.approx(as_is["entropy_inverted"])


def test_a_network_sure_that_everything_is_background_does_not_flip_it():
    rec = detect_polarity(sure_of_nothing_inverted, _volume(), axis=1, fov=None)
    assert rec["ratio"] < FLIP_RATIO  # surer inverted, by entropy alone
    assert rec["foreground_inverted"] < 0.5 * rec["foreground_as_is"]
    assert rec["detected"] == "as-is"


def test_apply_polarity_given_or_detected_and_the_warning():
    v = _volume()
    out, rec = apply_polarity(-v, "auto", sure_of_bright, 1, None)
    assert rec["inverted"] and rec["given"] == "auto" and np.array_equal(out, v)
    assert describe(rec).startswith("polarity inverted (detected, entropy ratio")
    assert disagreement(rec) is None
    out, rec = apply_polarity(-v, "as-is", sure_of_bright, 1, None)  # kept, but said
    assert not rec["inverted"] and np.array_equal(out, -v) and rec["detected"] == "inverted"
    warning = disagreement(rec)
    assert "surer of this tomogram inverted" in warning and "--polarity inverted" in warning
    out, rec = apply_polarity(v, "inverted", sure_of_bright, 1, None)
    assert (
        rec["inverted"] and np.array_equal(out, -v) and "pass --polarity as-is" in disagreement(rec)
    )


def test_mean_entropy_and_the_fov_mask():
    p = np.stack([np.full((2, 2, 2), 0.5), np.full((2, 2, 2), 0.5)])
    assert mean_entropy(p) == pytest.approx(np.log(2))
    p[:, 0] = [[[1.0]], [[0.0]]]
    mask = np.zeros((2, 1, 1), bool)
    mask[0] = True
    assert mean_entropy(p, mask) == pytest.approx(0.0, abs=1e-5)


@pytest.mark.parametrize("bad", ["", "negative", "asis"])
def test_a_bad_polarity_names_the_flag(bad):
    with pytest.raises(UserError) as e:
        parse_polarity(bad)
    assert e.value.param == "polarity" and "as-is" in e.value.message
    assert parse_polarity("Inverted") == "inverted"


def test_segment_polarity_through_the_cli(monkeypatch, capsys, small_dataset, tmp_path):
    """An inverted file segmented with --polarity inverted gives the original's labels; the
    JSON records what was given and detected; a bad value exits 2 before any work."""
    from _models_helpers import split_samples, train_tiny_run

    run_dir = tmp_path / "run"
    train_tiny_run(small_dataset, run_dir, steps=40)
    lac = 0.3 + 0.05 * split_samples(small_dataset, "test")[0]["recon"].astype(np.float32)
    um = 0.06
    meta = {"resolution": (1 / um, 1 / um), "metadata": {"spacing": um, "unit": "um"}}
    tifffile.imwrite(tmp_path / "a.tif", lac, imagej=True, **meta)
    tifffile.imwrite(tmp_path / "inv.tif", (1.0 - lac).astype(np.float32), imagej=True, **meta)
    seg = {}
    for name, src, polarity in (("a", "a.tif", "as-is"), ("inv", "inv.tif", "inverted")):
        out = tmp_path / f"{name}_seg.tif"
        code, stdout, err = run_cli(
            monkeypatch, capsys, "segment", str(tmp_path / src), "--model", str(run_dir),
            "--out", str(out), "--polarity", polarity,
        )  # fmt: skip
        assert code == 0, err
        rec = json.loads((tmp_path / f"{name}_seg.json").read_text())["polarity"]
        assert rec["given"] == polarity and rec["inverted"] == (polarity == "inverted")
        assert rec["detected"] in ("as-is", "inverted") and rec["entropy_as_is"] > 0
        assert f"polarity {polarity} (given; detected" in stdout
        seg[name] = tifffile.imread(out)
    assert np.mean(seg["a"] == seg["inv"]) > 0.999
    code, _, err = run_cli(
        monkeypatch, capsys, "segment", str(tmp_path / "a.tif"), "--model", str(run_dir),
        "--out", str(tmp_path / "bad.tif"), "--polarity", "dark",
    )  # fmt: skip
    assert code == 2 and "--polarity" in error_line(err) and not (tmp_path / "bad.tif").exists()


def test_the_polarity_benchmark_runs(small_dataset, tmp_path):
    import importlib.util
    import os

    from _models_helpers import train_tiny_run

    run_dir = tmp_path / "run"
    train_tiny_run(small_dataset, run_dir, steps=20)
    path = os.path.join(os.path.dirname(os.path.dirname(__file__)), "bench", "polarity.py")
    spec = importlib.util.spec_from_file_location("bench_polarity", path)
    bench = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(bench)
    res = bench.run_case(str(run_dir), "demo", samples=1, seed=3)
    row = res["volumes"][0]
    assert res["right"].endswith("/2") and res["model_voxel_nm"] == 60.0
    assert {"iou_as_is", "iou_inverted_undetected", "iou_inverted", "ratio_as_is"} <= set(row)
    assert row["ratio_as_is"] * row["ratio_inverted"] == pytest.approx(1.0, rel=0.02)
