"""``simaq evaluate --real``: scoring on the sparse labels of a tomogram (a real MRC file made from a
synthetic sample of the session's ``small_dataset``, with TIFF labels on two planes only), beside
Otsu baselines, through the real CLI."""

from __future__ import annotations

import json

import mrcfile
import numpy as np
import pytest
import tifffile
from _cli import error_line
from _cli import run as run_cli
from _models_helpers import split_samples, train_tiny_run

PLANES = (10, 20)  # the annotated planes along the tilt axis Y


@pytest.fixture(scope="module")
def run_dir(small_dataset, tmp_path_factory):
    run = tmp_path_factory.mktemp("real") / "run"
    train_tiny_run(small_dataset, run, steps=40)
    return run


@pytest.fixture(scope="module")
def real(small_dataset, tmp_path_factory):
    """``(tomogram.mrc, labels.tif, lac, full binary truth, sparse labels)``: LAC-like values
    (cells brighter), 60 nm in the MRC header; labels 0 = background, 1 = cell on 2 planes."""
    d = tmp_path_factory.mktemp("real")
    s = split_samples(small_dataset, "test")[0]
    lac = (0.3 + 0.05 * s["recon"]).astype(np.float32)
    with mrcfile.new(str(d / "tomo.mrc")) as mrc:
        mrc.set_data(lac)
        mrc.voxel_size = 600.0  # Å
    truth = (s["labels"] > 0).astype(np.int16)
    sparse = np.full(lac.shape, -1, np.int16)
    for y in PLANES:
        sparse[:, y] = truth[:, y]
    tifffile.imwrite(d / "labels.tif", sparse)
    return d / "tomo.mrc", d / "labels.tif", lac, truth, sparse


def _scores(pred: np.ndarray, target: np.ndarray, valid: np.ndarray, k: int) -> tuple:
    p, t = pred[valid] == k, target[valid] == k
    tp, fp, fn = (p & t).sum(), (p & ~t).sum(), (~p & t).sum()
    return tp / (tp + fp + fn), 2 * tp / (2 * tp + fp + fn)


def _evaluate(monkeypatch, capsys, run_dir, tomo, labels, *extra):
    code, stdout, err = run_cli(
        monkeypatch, capsys, "evaluate", "--model", str(run_dir), "--real", str(tomo),
        "--real-labels", str(labels), "--map", "background=0,cell=1", "--json", *extra,
    )  # fmt: skip
    assert code == 0, err
    assert "predict" not in err  # --json: no progress bar
    return json.loads(stdout)


def test_real_scores_use_only_the_labelled_voxels(monkeypatch, capsys, run_dir, real, tmp_path):
    from models.infer import classify_at_model_scale, load_checkpoint

    tomo, labels, lac, truth, sparse = real
    out = tmp_path / "eval"
    res = _evaluate(monkeypatch, capsys, run_dir, tomo, labels, "--out", str(out))
    assert json.loads((out / "evaluation_real.json").read_text()) == res
    assert (out / "real_planes.png").read_bytes()[:4] == b"\x89PNG"
    valid = sparse != -1
    assert res["labelled_voxels"] == 2 * 32 * 32 == int(valid.sum())
    assert res["labelled_planes"] == {"axis": 1, "indices": list(PLANES)}
    assert res["input_voxel_nm"] == 60.0 and res["voxel_source"] == "file header"
    assert res["classes"] == {"0": "background", "1": "cell"}
    assert res["class_map"]["background"] == 0
    assert all(v == 1 for k, v in res["class_map"].items() if k != "background")
    # the model's scores, recomputed here on the labelled voxels only
    model, state = load_checkpoint(str(run_dir))
    classes, _ = classify_at_model_scale(model, state, lac, 60.0)
    pred = (classes > 0).astype(np.int64)
    for k, name in ((0, "background"), (1, "cell")):
        got = res["methods"]["model"]["per_class"][name]
        iou, dice = _scores(pred, sparse, valid, k)
        assert got["iou"] == pytest.approx(iou) and got["dice"] == pytest.approx(dice)
        assert got["voxels"] == int((sparse == k).sum())
    # Otsu baselines: above the threshold is cell; scored on the same voxels
    for method in ("otsu_global", "otsu_fov"):
        m = res["methods"][method]
        assert lac.min() < m["threshold"] < lac.max()
        if method == "otsu_global":
            iou, _ = _scores((lac > m["threshold"]).astype(np.int64), sparse, valid, 1)
            assert m["per_class"]["cell"]["iou"] == pytest.approx(iou)
        assert 0.0 <= m["per_class"]["cell"]["iou"] <= 1.0
    assert "above" in res["baseline_polarity"]


def test_changing_unlabelled_voxels_changes_nothing(monkeypatch, capsys, run_dir, real, tmp_path):
    tomo, labels, lac, truth, sparse = real
    base = _evaluate(monkeypatch, capsys, run_dir, tomo, labels)
    # the same annotation with another "unlabelled" id, the unlabelled voxels holding junk
    # truth where they are not annotated: a scorer that looked at them would change
    other = np.where(sparse == -1, 7, sparse).astype(np.int16)
    tifffile.imwrite(tmp_path / "other.tif", other)
    res = _evaluate(monkeypatch, capsys, run_dir, tomo, tmp_path / "other.tif", "--ignore", "7")
    assert res["methods"] == base["methods"]
    full = tmp_path / "full.tif"  # every voxel labelled: other scores (the control)
    tifffile.imwrite(full, truth)
    res_full = _evaluate(monkeypatch, capsys, run_dir, tomo, full)
    assert res_full["labelled_voxels"] == truth.size
    assert res_full["methods"]["model"] != base["methods"]["model"]


def test_real_evaluation_prints_a_table(monkeypatch, capsys, run_dir, real):
    tomo, labels, *_ = real
    code, stdout, err = run_cli(
        monkeypatch, capsys, "evaluate", "--model", str(run_dir), "--real", str(tomo),
        "--real-labels", str(labels), "--map", "background=0,cell=1",
    )  # fmt: skip
    assert code == 0, err
    assert "2048 labelled voxels" in stdout and "otsu_fov IoU/Dice" in stdout
    assert "cell" in stdout and "predict" in err  # a progress bar on stderr


def test_a_tomogram_stored_tilt_axis_first_scores_as_the_original(
    monkeypatch, capsys, run_dir, real, tmp_path
):
    """IMOD's (Y, Z, X) before `trimvol -rx`: with ``--axes YZX`` the same scores, the planes
    reported in the file's own axis."""
    from factory.tomo.axes import from_zyx

    tomo, labels, lac, truth, sparse = real
    base = _evaluate(monkeypatch, capsys, run_dir, tomo, labels)
    assert base["axes"]["given"] == "auto"
    with mrcfile.new(str(tmp_path / "yzx.mrc")) as mrc:
        mrc.set_data(np.ascontiguousarray(from_zyx(lac, "YZX")))
        mrc.voxel_size = 600.0
    tifffile.imwrite(tmp_path / "yzx.tif", np.ascontiguousarray(from_zyx(sparse, "YZX")))
    out = tmp_path / "eval"
    res = _evaluate(
        monkeypatch, capsys, run_dir, tmp_path / "yzx.mrc", tmp_path / "yzx.tif", "--axes", "YZX",
        "--out", str(out),
    )  # fmt: skip
    assert res["methods"] == base["methods"]
    assert res["labelled_planes"] == {"axis": 0, "indices": list(PLANES)}
    assert res["axes"] == {"given": "YZX", "axes": "YZX", "source": "given"}
    assert (out / "real_planes.png").read_bytes()[:4] == b"\x89PNG"


@pytest.mark.parametrize(
    "args, message",
    [
        ([], "exactly one of --data DATASET or --real TOMOGRAM"),
        (["--data", "DS", "--real", "TOMO"], "exactly one of --data"),
        (["--real", "TOMO"], "--real-labels: required with --real"),
        (["--real", "TOMO", "--real-labels", "LAB", "--map", "golgi=3"], "not a model class"),
        (["--real", "TOMO", "--real-labels", "LAB", "--map", "cell"], "expected NAME=ID"),
        (["--real", "PLAIN", "--real-labels", "LAB"], "pass --voxel-nm"),
        (["--real", "TOMO", "--real-labels", "SMALL"], "differs from the tomogram's"),
        (["--real", "TOMO", "--real-labels", "LAB", "--axes", "ZY"], "--axes: expected 'auto'"),
    ],
)
def test_bad_real_arguments_exit_2(
    monkeypatch, capsys, run_dir, real, small_dataset, tmp_path, args, message
):
    tomo, labels, lac, *_ = real
    tifffile.imwrite(tmp_path / "plain.tif", lac)  # no voxel size
    tifffile.imwrite(tmp_path / "small.tif", np.zeros((8, 8, 8), np.int16))
    names = {"DS": small_dataset, "TOMO": tomo, "LAB": labels, "PLAIN": tmp_path / "plain.tif"}
    names["SMALL"] = tmp_path / "small.tif"
    args = [str(names.get(a, a)) for a in args]
    code, _, err = run_cli(monkeypatch, capsys, "evaluate", "--model", str(run_dir), *args)
    assert code == 2 and message in error_line(err), err


def test_otsu_threshold_splits_two_populations():
    from models.evaluate import otsu_threshold

    rng = np.random.default_rng(0)
    v = np.concatenate([rng.normal(0.1, 0.02, 20000), rng.normal(0.35, 0.03, 5000)])
    t = otsu_threshold(v)
    assert 0.16 < t < 0.29
    try:
        from skimage.filters import threshold_otsu
    except ImportError:
        return
    assert t == pytest.approx(threshold_otsu(v, nbins=256), abs=0.01)


def test_labelled_planes_ignore_lines_where_annotated_planes_cross():
    from models.evaluate import labelled_planes

    valid = np.zeros((32, 32, 32), bool)
    valid[:, 5] = valid[:, 20] = True  # two annotated Y planes
    valid[12] = True  # and one Z plane crossing every Y plane along a line
    assert labelled_planes(valid, prefer_axis=1) == (0, [12])
    valid[12] = False
    valid[12, :, :16] = True  # half a Z plane: still fewer planes along Z
    assert labelled_planes(valid, prefer_axis=1) == (0, [12])
    valid[12] = False
    assert labelled_planes(valid, prefer_axis=0) == (1, [5, 20])
