"""The segmentation models: real Ray Train (local, 1–2 CPU workers) on a real tiny dataset (the
session's ``small_dataset``: demo preset on 32³, splits 3/2/1), streamed from local shards and from
the loopback S3 endpoint (moto server); evaluation, segmentation of real MRC/TIFF files, few-shot
fine-tuning and bad input through the real ``simaq`` entry point.

The network is tiny (4 features, depth 2) so every Ray Train run takes a few seconds.
"""

from __future__ import annotations

import csv
import json
import shutil
import sys
import uuid

import mrcfile
import numpy as np
import pytest
import tifffile
from _cli import assert_stopped_not_retried, error_line, run
from _models_helpers import split_samples

import cli
from factory.dataset.manifest import read_manifest

TINY = ["--set", "features=4", "--set", "depth=2", "--batch-size", "4", "--lr", "0.01"]


def read_metrics(run_dir) -> list[dict]:
    with open(run_dir / "metrics.csv", encoding="utf-8") as fh:
        return list(csv.DictReader(fh))


def _upload(local, fs, root: str) -> None:
    for p in sorted(local.rglob("*")):
        if p.is_file():
            with fs.open_output_stream(f"{root}/{p.relative_to(local).as_posix()}") as fh:
                fh.write(p.read_bytes())


@pytest.fixture(scope="module")
def s3_dataset(small_dataset, s3_endpoint, s3_bucket) -> str:
    """``small_dataset`` uploaded to the loopback S3 endpoint; its ``s3://`` URL."""
    from factory.dataset.storage import Store

    url = f"s3://{s3_bucket}/models-{uuid.uuid4().hex[:8]}/ds"
    store = Store(url, s3_endpoint)
    _upload(small_dataset, store.fs, store.path)
    return url


@pytest.fixture(scope="module")
def trained(ray_session, s3_dataset, s3_endpoint, tmp_path_factory):
    """A local run directory after 3 epochs × 8 steps of Ray Train: two workers (half a CPU
    each) streaming their shares of the train shards from the loopback S3 endpoint."""
    run_dir = tmp_path_factory.mktemp("models") / "run"
    args = ["train", "--data", s3_dataset, "--endpoint-url", s3_endpoint, "--out", str(run_dir)]
    args += [*TINY, "--workers", "2", "--set", "cpus_per_worker=0.5", "--epochs", "3"]
    args += ["--steps-per-epoch", "8", "--set", "val_slices=16", "--seed", "1"]
    mp = pytest.MonkeyPatch()
    try:
        mp.setattr(sys, "argv", ["simaq", *args])
        with pytest.raises(SystemExit) as exc:
            cli.main()
    finally:
        mp.undo()
    assert exc.value.code in (0, None)
    return run_dir


# --- Ray Train: S3 streaming, loss, checkpoints, resume -----------------------------------------------------


def test_two_workers_from_s3_lower_the_loss_and_write_checkpoints(trained, small_dataset):
    rows = read_metrics(trained)
    assert [int(r["epoch"]) for r in rows] == [1, 2, 3]
    assert [int(r["step"]) for r in rows] == [8, 16, 24]
    losses = [float(r["loss"]) for r in rows]
    assert losses[-1] < 0.8 * losses[0], losses
    assert all(int(r["val_pixels"]) == 16 * 32 * 32 for r in rows)  # bounded validation
    assert all(int(r["bad_shards"]) == 0 for r in rows)
    assert (trained / "curve.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    ckpts = sorted(p for p in (trained / "ray").glob("checkpoint_*") if p.is_dir())
    assert [p.name for p in ckpts] == [f"checkpoint_{s:08d}" for s in (8, 16, 24)]
    state = json.loads((ckpts[-1] / "state.json").read_text())
    assert state["epoch"] == 3 and state["step"] == 24
    m = read_manifest(str(small_dataset))
    assert state["dataset"]["content_sha256"] == m.content_sha256
    assert state["labels"] == m.labels
    assert (ckpts[-1] / "model.pt").stat().st_size > 0


def test_an_interrupted_run_resumes_from_its_last_checkpoint(
    monkeypatch, capsys, trained, small_dataset, tmp_path
):
    run_dir = tmp_path / "run"
    shutil.copytree(trained, run_dir)  # a run stopped after its checkpoint of epoch 3
    before = read_metrics(trained)
    args = ["train", "--data", str(small_dataset), "--out", str(run_dir), *TINY]
    more = ["--epochs", "4", "--steps-per-epoch", "8", "--set", "val_slices=16"]
    code, _, err = run(monkeypatch, capsys, *args, *more)  # the run's seed is 1
    assert code == 2 and "resume it with --seed 1" in error_line(err)
    # on one worker where it ran on two: the stream is dealt anew (tests/test_resume.py)
    code, stdout, err = run(monkeypatch, capsys, *args, *more, "--seed", "1")
    assert code == 0, err
    assert "resuming" in err
    rows = read_metrics(run_dir)
    assert [int(r["epoch"]) for r in rows] == [1, 2, 3, 4]
    assert [int(r["step"]) for r in rows] == [8, 16, 24, 32]
    assert rows[:3] == before  # history carried over from the checkpoint
    # the resumed model continues from the trained weights, not from a fresh start
    assert float(rows[3]["loss"]) < float(before[0]["loss"])
    state = json.loads((run_dir / "ray" / "checkpoint_00000032" / "state.json").read_text())
    assert state["epoch"] == 4 and state["step"] == 32
    # another architecture in the same run directory is refused
    code, _, err = run(monkeypatch, capsys, *args, "--set", "features=8")
    assert code == 2 and "features=4" in error_line(err)


def test_a_corrupt_shard_is_refused_by_name(
    monkeypatch, capsys, ray_session, small_dataset, tmp_path
):
    ds = tmp_path / "ds"
    shutil.copytree(small_dataset, ds)
    shard = ds / "shards" / "train-000001.tar"
    raw = bytearray(shard.read_bytes())
    raw[2000] ^= 0xFF
    shard.write_bytes(bytes(raw))
    code, _, err = run(
        monkeypatch, capsys, "train", "--data", str(ds), "--out", str(tmp_path / "run"), *TINY,
        "--epochs", "1", "--steps-per-epoch", "4",
    )  # fmt: skip
    assert code == 2
    line = error_line(err, ray_logs=True)
    assert_stopped_not_retried(err)  # the worker stopped, it did not fail: not retried
    assert line.endswith(
        "shard shards/train-000001.tar: sha256 mismatch (corrupt or altered shard)"
    )
    assert "shards/train-000001.tar" in line and "sha256" in line


# --- evaluation -----------------------------------------------------------------------------------


def test_evaluation_of_a_known_prediction_gives_the_known_iou(small_dataset):
    from models.evaluate import evaluate_dataset

    samples = split_samples(small_dataset, "val")
    truth = iter([s["labels"].astype(np.int64) for s in samples])
    vac = 2  # every vacuole voxel predicted as background, everything else right

    def predict(recon):
        lab = next(truth).copy()
        assert lab.shape == recon.shape
        lab[lab == vac] = 0
        return lab

    res, rows = evaluate_dataset(predict, str(small_dataset), split="val", axis=1)
    labs = np.stack([s["labels"] for s in samples])
    n_bg, n_vac = int((labs == 0).sum()), int((labs == vac).sum())
    assert n_vac > 0
    assert res["pooled"]["vacuole"]["iou"] == 0.0
    assert res["pooled"]["background"]["iou"] == pytest.approx(n_bg / (n_bg + n_vac))
    for name in ("cytoplasm", "nucleus", "cell_wall"):
        assert res["pooled"][name]["iou"] == 1.0 and res["pooled"][name]["dice"] == 1.0
    # per slice: NaN where a class is in neither slice, else 1 (or 0 for the vacuole)
    assert res["num_slices"] == len(rows) == 2 * 32
    vac_slices = int((labs == vac).any(axis=(1, 3)).sum())
    assert res["per_slice"]["vacuole"]["iou"]["n"] == vac_slices
    assert res["per_slice"]["vacuole"]["iou"]["mean"] == 0.0
    assert res["per_slice"]["cytoplasm"]["iou"]["mean"] == 1.0
    cells = {str(s["meta"].phantom.cells_placed) for s in samples}
    assert set(res["by_cell_count"]) == cells
    assert res["dataset"]["content_sha256"] == read_manifest(str(small_dataset)).content_sha256


def test_slice_scores_ignore_unannotated_pixels():
    from models.evaluate import confusion_matrix, scores_from_confusion, slice_scores

    target = np.array([[[0, 1], [1, -1]]])  # (Z=1, Y=2, X=2); one pixel unannotated
    pred = np.array([[[0, 1], [0, 1]]])
    iou, dice = slice_scores(pred, target, 2, axis=1)
    # slice y=0: both right; slice y=1: class 1 has tp 0, fn 1 (the −1 pixel does not count)
    assert iou[0].tolist() == [1.0, 1.0]
    assert iou[1].tolist() == [0.0, 0.0]
    cm = confusion_matrix(pred, target, 2)
    assert cm.tolist() == [[1, 0], [1, 1]]
    piou, pdice = scores_from_confusion(cm)
    assert piou.tolist() == [0.5, 0.5] and pdice[0] == pytest.approx(2 / 3)


def test_evaluate_cli_writes_scores_violins_and_hashes(
    monkeypatch, capsys, trained, small_dataset, tmp_path
):
    out = tmp_path / "eval"
    code, stdout, err = run(
        monkeypatch, capsys, "evaluate", "--model", str(trained), "--data", str(small_dataset),
        "--out", str(out), "--json",
    )  # fmt: skip
    assert code == 0, err
    res = json.loads(stdout)
    sha = read_manifest(str(small_dataset)).content_sha256
    assert res["dataset"]["content_sha256"] == sha
    assert res["model"]["training_data_content_sha256"] == sha
    assert res["model"]["step"] == 24
    assert res["num_volumes"] == 1 and res["num_slices"] == 32
    assert (out / "violin_iou.png").read_bytes()[:4] == b"\x89PNG"
    with open(out / "slices.csv", encoding="utf-8") as fh:
        assert len(list(csv.DictReader(fh))) == 32
    assert json.loads((out / "evaluation.json").read_text())["pooled"] == res["pooled"]


# --- segmentation ---------------------------------------------------------------------------------


def test_segment_round_trips_mrc_tiff_and_npy(
    monkeypatch, capsys, trained, small_dataset, tmp_path
):
    recon = split_samples(small_dataset, "test")[0]["recon"].astype(np.float32)
    vol = 0.3 + 0.05 * recon  # a raw-looking tomogram in 1/µm
    src_mrc = tmp_path / "tomo.mrc"
    with mrcfile.new(str(src_mrc)) as mrc:
        mrc.set_data(vol)
        mrc.voxel_size = 600.0  # Å = 60 nm
    tifffile.imwrite(tmp_path / "tomo.tif", vol)
    np.save(tmp_path / "tomo.npy", vol)
    results = {}
    for src, dst in (("tomo.mrc", "seg.mrc"), ("tomo.tif", "seg.tif"), ("tomo.npy", "seg.npy")):
        code, stdout, err = run(
            monkeypatch, capsys, "segment", str(tmp_path / src), "--model", str(trained),
            "--out", str(tmp_path / dst), *(["--voxel-nm", "60"] if src != "tomo.mrc" else []),
        )  # fmt: skip
        assert code == 0, err
        assert "segmented" in stdout
        results[dst] = stdout
    with mrcfile.open(str(tmp_path / "seg.mrc")) as mrc:
        lab_mrc = np.asarray(mrc.data).astype(np.int64)
        assert float(mrc.voxel_size.x) == pytest.approx(600.0)
    lab_tif = tifffile.imread(tmp_path / "seg.tif").astype(np.int64)
    lab_npy = np.load(tmp_path / "seg.npy", allow_pickle=False).astype(np.int64)
    assert lab_mrc.shape == lab_tif.shape == vol.shape
    assert np.array_equal(lab_mrc, lab_tif) and np.array_equal(lab_mrc, lab_npy)
    assert 0 <= lab_mrc.min() and lab_mrc.max() < 7
    assert "file header" in results["seg.mrc"] and "(given;" in results["seg.tif"]
    objects = tifffile.imread(tmp_path / "seg_objects.tif")
    with open(tmp_path / "seg.csv", encoding="utf-8") as fh:
        rows = list(csv.DictReader(fh))
    by_id = {int(r["id"]): r for r in rows}
    visible = set(np.unique(objects[objects > 0]).tolist())
    assert len(by_id) == len(rows) and visible <= set(by_id)  # every object painted has its row
    counts = np.bincount(objects.ravel().astype(np.int64), minlength=max(by_id) + 1)
    for oid, r in by_id.items():  # the CSV says how many of its voxels the object map shows
        assert int(r["voxels_shown"]) == counts[oid] <= int(r["voxels"]), r
    # A row whose object is not painted was painted over by a later class (label-id order, as the
    # module says: a nucleus's filled holes may cover a droplet): its centroid lies under one.
    for oid in set(by_id) - visible:
        r = by_id[oid]
        z, y, x = (int(round(float(r[f"centroid_{a}_vox"]))) for a in "zyx")
        assert int(by_id[int(objects[z, y, x])]["class_id"]) > int(r["class_id"]), r


def test_postprocess_nests_fills_splits_and_measures():
    from models.segment import ClassPost, measure, postprocess

    shape = (40, 40, 64)
    zz, yy, xx = np.indices(shape)

    def ball(c, r):
        return (zz - c[0]) ** 2 + (yy - c[1]) ** 2 + (xx - c[2]) ** 2 <= r * r

    cells = ball((20, 20, 20), 11) | ball((20, 20, 40), 11)  # two touching cells
    vac = ball((20, 20, 20), 5) & ~ball((20, 20, 20), 1)  # a vacuole with a hole inside
    speck_out = ball((5, 5, 60), 1)  # outside every cell
    speck_in = ball((20, 20, 40), 1)  # inside the right cell, smaller than the minimum
    names = ["background", "cytoplasm", "vacuole"]
    probs = np.zeros((3, *shape), np.float32)
    probs[0] = 1.0
    probs[0][cells] = 0.0
    probs[1][cells] = 1.0
    probs[2][vac | speck_out | speck_in] = 1.0
    probs[1][vac | speck_in] = 0.0
    vnm = 60.0  # cells: minimum radius 500 nm = 8.3 voxels; vacuoles: 120 nm = 2 voxels
    post = {"vacuole": ClassPost(fill=True, open_radius=0, min_radius_nm=120.0)}
    labels, objects, recs = postprocess(probs.argmax(0), names, vnm, sigma=0.0, overrides=post)
    kinds = [r["class"] for r in recs]
    assert kinds.count("cytoplasm") == 2  # the touching cells are split
    assert kinds.count("vacuole") == 1  # both specks are gone
    assert labels[20, 20, 20] == 2  # the hole is filled
    assert labels[5, 5, 60] == 0 and labels[20, 20, 40] == 1
    left, right = objects[20, 20, 12], objects[20, 20, 48]
    assert left != right and left > 0 and right > 0
    v = next(r for r in recs if r["class"] == "vacuole")
    assert v["cell"] == left  # nested in the left cell
    rows = measure(recs, np.full(shape, 0.5, np.float32), vnm, objects)
    vr = next(r for r in rows if r["class"] == "vacuole")
    assert vr["voxels_shown"] == vr["voxels"]  # nothing is painted over the vacuole
    cell = next(r for r in rows if r["id"] == left)
    assert cell["voxels_shown"] == cell["voxels"] - vr["voxels"]  # the vacuole covers its part
    um = vnm / 1000
    assert vr["volume_um3"] == pytest.approx(int(ball((20, 20, 20), 5).sum()) * um**3)
    assert vr["mean_intensity"] == pytest.approx(0.5)
    assert vr["centroid_x_um"] == pytest.approx(20 * um)


# --- few-shot -------------------------------------------------------------------------------------


def test_few_shot_fine_tunes_on_sparse_real_labels_into_s3(
    monkeypatch, capsys, trained, small_dataset, s3_endpoint, s3_url, tmp_path
):
    from factory.dataset.storage import Store

    s = split_samples(small_dataset, "test")[0]
    vol = (0.3 + 0.05 * s["recon"].astype(np.float32)).astype(np.float32)
    lab = np.full(vol.shape, -1, np.int16)
    lab[:, 10] = s["labels"][:, 10]  # two annotated slices along the tilt axis
    lab[:, 20] = s["labels"][:, 20]
    tifffile.imwrite(tmp_path / "real.tif", vol)
    tifffile.imwrite(tmp_path / "real_labels.tif", lab)
    run_url = f"{s3_url}/ft"  # checkpoints and metrics go to object storage
    code, stdout, err = run(
        monkeypatch, capsys, "train", "--data", str(small_dataset), "--out", run_url,
        "--endpoint-url", s3_endpoint, "--init", str(trained), "--real", str(tmp_path / "real.tif"),
        "--real-labels", str(tmp_path / "real_labels.tif"), "--real-voxel-nm", "60",
        "--set", "real_ratio=0.5",
        "--batch-size", "4", "--epochs", "1", "--steps-per-epoch", "4", "--set", "val_slices=0",
    )  # fmt: skip
    assert code == 0, err
    run_store = Store(run_url, s3_endpoint)
    fs, root = run_store.fs, run_store.path
    names = {i.path[len(root) + 1 :] for i in run_store.list(recursive=True)}
    assert {"run.json", "metrics.csv", "curve.png", "ray/checkpoint_00000004/model.pt"} <= names
    state = json.loads(fs.open_input_stream(f"{root}/ray/checkpoint_00000004/state.json").read())
    assert state["init"]["step"] == 24  # started from the synthetic run's checkpoint
    assert state["arch"]["features"] == 4  # architecture taken from --init
    assert state["real"]["labels"].endswith("real_labels.tif")
    assert state["real"]["zoom"] == 1.0 and state["real"]["voxel_source"] == "given"
    assert state["step"] == 4
    # the checkpoint on S3 evaluates
    code, stdout, err = run(
        monkeypatch, capsys, "evaluate", "--model", run_url, "--data", str(small_dataset),
        "--split", "val", "--endpoint-url", s3_endpoint, "--json",
    )  # fmt: skip
    assert code == 0, err
    res = json.loads(stdout)
    assert res["num_volumes"] == 2 and res["num_slices"] == 64 and res["model"]["step"] == 4


def test_stream_draws_only_annotated_real_slices(small_dataset):
    from models.config import TrainConfig
    from models.data import SampleSource, StackStream
    from models.order import StreamState

    m = read_manifest(str(small_dataset))
    vol = np.random.default_rng(0).normal(size=(16, 12, 16)).astype(np.float32)
    lab = np.full(vol.shape, -1, np.int8)
    lab[:, 5] = 1
    lab[3, 5, 4] = 0
    cfg = TrainConfig(real_ratio=1.0, window=3, batch_size=4)
    src = SampleSource(str(small_dataset), m.shards[:1])
    stream = StackStream(src, cfg, StreamState.new(src.n, 1, 0, 1), 0, real=(vol, lab))
    for _, (x, y, where) in zip(range(3), stream.batches(augment=False), strict=False):
        assert x.shape == (4, 3, 16, 16) and where["stacks"] == []  # no synthetic stack
        assert all(np.array_equal(yy, lab[:, 5].astype(np.int64)) for yy in y.numpy())


# --- streaming pieces -----------------------------------------------------------------------------


def test_background_only_and_unannotated_slices_are_skipped():
    from models.data import volume_stacks

    rng = np.random.default_rng(0)
    recon = rng.normal(size=(8, 10, 8)).astype(np.float32)
    labels = np.zeros(recon.shape, np.int8)
    labels[:, 2] = 1  # slice 2 has a cell
    labels[:, 7] = -1  # slice 7 is unannotated
    got = list(volume_stacks(recon, labels, axis=1, window=5, rng=rng, background_keep=0.0))
    assert len(got) == 1 and np.array_equal(got[0][1], labels[:, 2])
    assert np.array_equal(got[0][0][2], recon[:, 2])  # centre of the stack
    kept = list(volume_stacks(recon, labels, axis=1, window=5, rng=rng, background_keep=1.0))
    assert len(kept) == 9  # every slice but the unannotated one


def test_bad_shards_are_skipped_only_when_allowed(small_dataset, tmp_path):
    from factory.dataset.manifest import DatasetError
    from models.data import iter_volumes

    ds = tmp_path / "ds"
    shutil.copytree(small_dataset, ds)
    m = read_manifest(str(ds))
    train = m.split_shards("train")
    (ds / train[0].url).write_bytes(b"not a tar")
    with pytest.raises(DatasetError, match="train-000000.tar"):
        list(iter_volumes(str(ds), train, fields=m.fields))
    bad = {}
    got = list(
        iter_volumes(str(ds), train, fields=m.fields, allow_bad_shards=True, on_bad=bad.__setitem__)
    )
    assert len(got) == train[1].nsamples and list(bad) == [train[0].url]


def test_augmentations_move_images_and_labels_together():
    import torch

    from models.config import AugmentConfig
    from models.data import augment_batch

    y = torch.randint(0, 4, (6, 24, 20))
    x = y[:, None].float().repeat(1, 3, 1, 1)
    off = {k: 0.0 for k in AugmentConfig.model_fields if k.endswith("_p")}
    cfg = AugmentConfig(**{**off, "flip_p": 0.5})
    xa, ya = augment_batch(x, y, cfg, torch.Generator().manual_seed(0))
    assert torch.equal(xa[:, 1].long(), ya) and not torch.equal(ya, y)
    cfg = AugmentConfig(**{**off, "invert_p": 1.0, "noise_p": 1.0, "blur_p": 1.0})
    xa, ya = augment_batch(x, y, cfg, torch.Generator().manual_seed(0))
    assert torch.equal(ya, y) and xa.shape == x.shape and float(xa.mean()) < 0


# --- network and loss -----------------------------------------------------------------------------


def test_unet25d_and_stack2d_see_the_neighbour_slices_and_unet2d_does_not():
    import torch

    from models.unet import build_model

    torch.manual_seed(0)
    x = torch.randn(2, 5, 20, 28)  # H, W not multiples of 2**(depth-1)
    x2 = x.clone()
    x2[:, 0] += 1.0  # change an outer slice only
    for name, sees in (("unet25d", True), ("stack2d", True), ("unet2d", False)):
        net = build_model(name, 4, window=5, features=4, depth=3).eval()
        with torch.no_grad():
            a, b = net(x), net(x2)
        assert a.shape == (2, 4, 20, 28)
        assert (not torch.allclose(a, b)) is sees


def test_loss_ignores_unannotated_pixels():
    import torch

    from models.losses import FocalDiceLoss

    logits = torch.randn(2, 3, 8, 8, requires_grad=True)
    target = torch.randint(0, 3, (2, 8, 8))
    target[:, :4] = -1
    loss = FocalDiceLoss()(logits, target)
    loss.backward()
    assert torch.all(logits.grad[:, :, :4] == 0) and torch.any(logits.grad[:, :, 4:] != 0)
    perfect = torch.nn.functional.one_hot(target.clamp_min(0), 3).permute(0, 3, 1, 2) * 50.0
    assert float(FocalDiceLoss()(perfect.float(), target)) < 1e-3


# --- bad input ------------------------------------------------------------------------------------


def test_checkpoint_of_another_label_table_is_refused(
    monkeypatch, capsys, trained, small_dataset, tmp_path
):
    ckpt = tmp_path / "other"
    shutil.copytree(trained / "ray" / "checkpoint_00000024", ckpt)
    state = json.loads((ckpt / "state.json").read_text())
    state["labels"]["scheme"] = "simaq4"
    state["labels"]["map_from_full"] = [0, 1, 2, 3, 1, 1, 1]
    (ckpt / "state.json").write_text(json.dumps(state))
    code, _, err = run(
        monkeypatch, capsys, "evaluate", "--model", str(ckpt), "--data", str(small_dataset)
    )
    assert code == 2 and "label table" in error_line(err) and "simaq4" in error_line(err)
    code, _, err = run(
        monkeypatch, capsys, "train", "--data", str(small_dataset), "--out",
        str(tmp_path / "ft"), "--init", str(ckpt),
    )  # fmt: skip
    assert code == 2 and "--init" in error_line(err) and "label table" in error_line(err)
    assert not (tmp_path / "ft").exists()


@pytest.mark.parametrize(
    "shape, message",
    [((16, 4, 16), "fewer than the model's window of 7"), ((16, 16), "3D")],
)
def test_segment_refuses_a_tomogram_smaller_than_the_window(
    monkeypatch, capsys, trained, tmp_path, shape, message
):
    src = tmp_path / "small.tif"
    tifffile.imwrite(src, np.ones(shape, np.float32))
    code, _, err = run(
        monkeypatch, capsys, "segment", str(src), "--model", str(trained), "--out",
        str(tmp_path / "seg.tif"), "--voxel-nm", "60",
    )  # fmt: skip
    assert code == 2 and message in error_line(err)
    assert not (tmp_path / "seg.tif").exists()


@pytest.mark.parametrize(
    "args, message",
    [
        (["--epochs", "0"], "train.epochs"),
        (["--model", "resnet"], "train.model"),
        (["--set", "val_slices=-1"], "train.val_slices"),
        (["--real", "x.tif"], "--real and --real-labels"),
        (["--set", "augment.flip_p=2"], "train.augment.flip_p"),
        (["--set", "learning_rate=0.1"], "train.learning_rate"),
        (["--set", "lr"], "--set: expected KEY=VALUE"),
    ],
)
def test_bad_training_arguments_exit_2(monkeypatch, capsys, small_dataset, tmp_path, args, message):
    out = tmp_path / "run"
    code, _, err = run(
        monkeypatch, capsys, "train", "--data", str(small_dataset), "--out", str(out), *args
    )
    assert code == 2 and message in error_line(err)
    assert not out.exists()


def test_ray_cleaner_polling_noise_is_dropped_and_nothing_else(monkeypatch):
    import logging

    from models.train import _CLEANER_LOGGER, ray_worker_setup

    monkeypatch.setenv("RAY_ADDRESS", "127.0.0.1:6379")  # a user's choice is kept

    lg = logging.getLogger(_CLEANER_LOGGER)
    seen: list[str] = []

    class Keep(logging.Handler):
        def emit(self, record):
            seen.append(record.getMessage())

    h = Keep()
    lg.addHandler(h)
    old = list(lg.filters)
    try:
        ray_worker_setup()
        lg.warning("Failed to query Ray Train Controller actor state. State API may be down.")
        lg.warning("Failed to clean up placement group: boom")
    finally:
        lg.removeHandler(h)
        lg.filters[:] = old
    assert seen == ["Failed to clean up placement group: boom"]
    import os

    assert os.environ["RAY_ADDRESS"] == "127.0.0.1:6379"


def test_train_config_layers_preset_file_set_and_flags():
    from models.config import TRAIN_PRESETS, parse_train_config

    cfg = parse_train_config(
        {"lr": 1e-3, "augment": {"flip_p": 0.1}},
        preset="cpu",
        sets=["augment.noise_p=0.4", "lr=5e-4", "epochs=3"],
        epochs=4,
    )
    assert (cfg.features, cfg.lr, cfg.epochs) == (16, 5e-4, 4)  # preset, --set, flag
    assert (cfg.augment.flip_p, cfg.augment.noise_p) == (0.1, 0.4)  # file and --set both kept
    assert cfg.augment.elastic_p == 0.3  # defaults under a partial section
    q = parse_train_config(preset="cpu-quality", axis=0)
    assert (q.model, q.features, q.depth, q.epochs * q.steps_per_epoch) == ("stack2d", 32, 4, 3000)
    light = parse_train_config(preset="cpu-quality-light", sets=["augment.noise_p=0.1"])
    assert light.arch() == {**q.arch(), "axis": 1} and light.epochs * light.steps_per_epoch == 4500
    a = light.augment
    assert (a.flip_p, a.brightness_p, a.contrast_p) == (0.5, 0.3, 0.3)  # kept
    assert (a.elastic_p, a.crop_p, a.blur_p, a.invert_p, a.noise_p) == (0, 0, 0, 0, 0.1)
    assert TRAIN_PRESETS["cpu-quality"].get("augment") is None  # the preset it extends unchanged
    ten = parse_train_config(preset="cpu-10min")
    assert ten.arch() == {**q.arch(), "axis": 1} and ten.epochs * ten.steps_per_epoch == 600
    assert ten.augment == q.augment and ten.lr_schedule == "cosine"


def test_few_shot_real_data_in_another_axis_order_loads_as_zyx(small_dataset, tmp_path):
    """`train --real-axes`: a real tomogram and labels stored (Y, Z, X) load as the (Z, Y, X)
    original; a bad order is refused naming the flag's field."""
    from factory.errors import UserError
    from factory.tomo.axes import from_zyx
    from models.config import parse_train_config
    from models.train import _load_real

    s = split_samples(small_dataset, "test")[0]
    vol = (0.3 + 0.05 * s["recon"].astype(np.float32)).astype(np.float32)
    lab = np.full(vol.shape, -1, np.int16)
    lab[:, 10] = s["labels"][:, 10]
    cfg = parse_train_config(None, sets=["window=3"])
    norm = {"method": "quantile", "fov_inset_px": 2}
    paths = {}
    for order in ("ZYX", "YZX"):
        paths[order] = (str(tmp_path / f"{order}.tif"), str(tmp_path / f"{order}_labels.tif"))
        tifffile.imwrite(paths[order][0], np.ascontiguousarray(from_zyx(vol, order)))
        tifffile.imwrite(paths[order][1], np.ascontiguousarray(from_zyx(lab, order)))
    k = int(s["labels"].max()) + 1
    ref_vol, ref_lab, _ = _load_real(*paths["ZYX"], cfg, norm, k, "ZYX")
    got_vol, got_lab, _ = _load_real(*paths["YZX"], cfg, norm, k, "YZX")
    assert np.array_equal(got_vol, ref_vol) and np.array_equal(got_lab, ref_lab)
    with pytest.raises(UserError) as e:
        _load_real(*paths["YZX"], cfg, norm, k, "YZ")
    assert e.value.param == "real_axes"


def test_few_shot_real_data_at_another_voxel_size_is_brought_to_the_data_grid(
    small_dataset, tmp_path
):
    """`train --real-voxel-nm` (else the header): a real tomogram at 30 nm for 60 nm training data
    is fine-tuned on at 60 nm, its two annotated planes kept; without a voxel size: exit 2."""
    from scipy import ndimage as ndi

    from factory.errors import UserError
    from models.config import parse_train_config
    from models.train import _load_real

    s = split_samples(small_dataset, "test")[0]
    fine = ndi.zoom(
        0.3 + 0.05 * s["recon"].astype(np.float32), 2.0, order=1, grid_mode=True, mode="nearest"
    )
    truth = ndi.zoom(s["labels"].astype(np.int16), 2.0, order=0, grid_mode=True, mode="nearest")
    lab = np.full(fine.shape, -1, np.int16)
    lab[:, 21], lab[:, 42] = truth[:, 21], truth[:, 42]  # an odd and an even plane
    paths = (str(tmp_path / "fine.tif"), str(tmp_path / "fine_labels.tif"))
    um = 0.03
    tifffile.imwrite(paths[0], fine, resolution=(1 / um, 1 / um),
                     metadata={"spacing": um, "unit": "um", "axes": "ZYX"}, imagej=True)  # fmt: skip
    tifffile.imwrite(paths[1], lab)
    cfg = parse_train_config(None, sets=["window=3"])
    norm = {"method": "quantile", "fov_inset_px": 2}
    k = int(s["labels"].max()) + 1
    vol, got, scale = _load_real(*paths, cfg, norm, k, "ZYX", None, 60.0)
    assert vol.shape == got.shape == (32, 32, 32)
    assert scale["voxel_nm"] == pytest.approx(30.0) and scale["voxel_source"] == "file header"
    assert scale["zoom"] == pytest.approx(0.5) and scale["shape"] == [32, 32, 32]
    assert sorted(np.flatnonzero((got >= 0).any(axis=(0, 2)))) == [10, 21]  # both planes kept
    for plane in (10, 21):
        agree = np.mean(got[:, plane] == s["labels"][:, plane])
        assert agree > 0.85, (plane, agree)
    inv, _, given = _load_real(*paths, cfg, norm, k, "ZYX", 60.0, 60.0, "inverted")
    assert given["zoom"] == 1.0 and given["voxel_source"] == "given"  # the flag wins: no zoom
    assert given["polarity"] == "inverted" and scale["polarity"] == "as-is"
    as_is, _, _ = _load_real(*paths, cfg, norm, k, "ZYX", 60.0, 60.0)
    np.testing.assert_array_equal(inv, -as_is)
    with pytest.raises(UserError) as e:
        _load_real(*paths, cfg, norm, k, "ZYX", 60.0, 60.0, "dark")
    assert e.value.param == "real_polarity"
    tifffile.imwrite(paths[0], fine)  # no voxel size recorded
    with pytest.raises(UserError) as e:
        _load_real(*paths, cfg, norm, k, "ZYX", None, 60.0)
    assert e.value.param == "real_voxel_nm" and "records no voxel size" in e.value.message
