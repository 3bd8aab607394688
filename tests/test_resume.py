"""Training that resumes exactly: the stream position in every checkpoint, kills at chosen and at
random steps (worker and driver), resume on another number of workers, local and loopback S3.

Every run trains the same tiny network on the session's ``small_dataset`` (3 training volumes)
for 2 epochs × 4 steps with a checkpoint every 2 steps; an uninterrupted run is the reference.
"""

from __future__ import annotations

import io
import json
import os
import signal
import subprocess
import time
from collections import Counter

import numpy as np
import pytest
import torch
from _cli import cli_argv, run

from factory.dataset.manifest import read_manifest

ARGS = ["--set", "features=4", "--set", "depth=2", "--set", "window=3", "--batch-size", "4",
        "--lr", "0.01", "--epochs", "2", "--steps-per-epoch", "4", "--set", "checkpoint_every=2",
        "--set", "val_slices=8"]  # fmt: skip
LAST = "checkpoint_00000008"


def _train(monkeypatch, capsys, data: str, out: str, *extra: str) -> str:
    code, _, err = run(monkeypatch, capsys, "train", "--data", data, "--out", out, *ARGS, *extra)
    assert code == 0, err[-3000:]
    return err


def _weights(run_dir) -> dict:
    return torch.load(os.path.join(str(run_dir), "ray", LAST, "model.pt"), weights_only=True)


def _same_weights(a: dict, b: dict) -> bool:
    return a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)


@pytest.fixture(scope="module")
def reference(ray_session, small_dataset, tmp_path_factory):
    """The uninterrupted run: its directory."""
    from _cli import invoke

    out = tmp_path_factory.mktemp("ref") / "run"
    code, _, err = invoke(["train", "--data", str(small_dataset), "--out", str(out), *ARGS])
    assert code == 0, err[-3000:]
    return out


# --- the stream alone (no Ray) --------------------------------------------------------------------


def test_stream_continues_with_the_exact_next_stack(small_dataset):
    """Batches from a saved position equal those the uninterrupted stream gives there, with crops
    and real-data slots drawn; a position is (item, offset), not a count of what was read."""
    from models.config import parse_train_config
    from models.data import SampleSource, StackStream
    from models.order import StreamState, block_size_for

    m = read_manifest(str(small_dataset))
    train = m.split_shards("train")
    vol = np.random.default_rng(0).normal(size=(32, 32, 32)).astype(np.float32)
    lab = np.full(vol.shape, -1, np.int8)
    lab[:, 7] = 1
    cfg = parse_train_config(None, sets=["window=3", "patch=16", "real_ratio=0.3"], batch_size=3)

    def stream(state):
        src = SampleSource(str(small_dataset), train, fields=m.fields)
        return StackStream(src, cfg, state, 0, real=(vol, lab))

    first = StreamState.new(3, block_size_for(3, cfg.mix_volumes, 1), cfg.seed, 1)
    it = stream(first).batches(0)
    full = [next(it) for _ in range(40)]  # > one epoch of the 3 volumes' kept stacks
    assert {e for b in full for e, _, _ in b[2]["stacks"]} == {0, 1}
    for cut in (5, 17, 31):
        saved = StreamState.from_json(json.loads(json.dumps(first.to_json())))
        saved.positions = [full[cut - 1][2]["position"]]
        again = stream(saved).batches(cut)
        for want in full[cut:]:
            x, y, where = next(again)
            assert torch.equal(x, want[0]) and torch.equal(y, want[1]) and where == want[2]


def test_shards_are_read_by_seeking_to_each_sample(small_dataset, tmp_path):
    """shard_spans + read_sample give what a sequential read gives; damage is a DatasetError."""
    import shutil

    from factory.dataset.manifest import DatasetError, iter_samples, read_sample, shard_spans

    m = read_manifest(str(small_dataset))
    rec = m.shards[0]
    spans = shard_spans(str(small_dataset), rec)
    assert sorted(spans) == list(range(rec.first_index, rec.first_index + rec.nsamples))
    for s in iter_samples(str(small_dataset), rec, fields=m.fields):
        i = int(s["__key__"])
        got = read_sample(str(small_dataset), rec, i, spans[i], fields=m.fields)
        assert got["meta"] == s["meta"]
        assert all(np.array_equal(got[k], s[k]) for k in s if k not in ("__key__", "meta"))
    ds = tmp_path / "ds"
    shutil.copytree(small_dataset, ds)
    shard = ds / rec.url
    data = bytearray(shard.read_bytes())
    data[spans[rec.first_index][0] + 700] ^= 0xFF  # inside the first sample's first member
    shard.write_bytes(bytes(data))
    with pytest.raises(DatasetError, match="sha256 mismatch"):
        shard_spans(str(ds), rec)
    with pytest.raises(DatasetError, match="outside the shard"):
        read_sample(str(ds), rec, rec.first_index, (0, rec.bytes + 1))
    shard.unlink()
    with pytest.raises(DatasetError, match="missing"):
        shard_spans(str(ds), rec)


# --- killed and resumed: the same weights ---------------------------------------------------------


@pytest.mark.slow
def test_killed_workers_resume_to_the_same_weights_on_loopback_s3(
    monkeypatch, capsys, reference, small_dataset, s3_endpoint, s3_url, tmp_path
):
    """Data and run directory on S3; the worker is SIGKILLed three times: between checkpoints
    (step 3: resumes from step 2 and redoes 3), in the middle of writing the epoch-end checkpoint
    (step 4: resumes from 2), right after a mid-epoch checkpoint (step 6: resumes from 6). The
    weights, the stream position, the history and ``evaluate --json`` equal the reference's."""
    from factory.dataset.storage import Store

    code, _, err = run(
        monkeypatch, capsys, "publish", str(small_dataset), s3_url, "--endpoint-url", s3_endpoint
    )
    assert code == 0, err
    data, out = f"{s3_url}/demo/1.0.0", f"{s3_url}/run"
    monkeypatch.setenv("SIMAQ_TEST_KILL", f"{tmp_path};step:3,write:4,report:6")
    err = _train(monkeypatch, capsys, data, out, "--endpoint-url", s3_endpoint,
                 "--set", "max_failures=3")  # fmt: skip
    assert sorted(os.listdir(tmp_path)) == ["report-6", "step-3", "write-4"]
    assert err.count("a training worker died") == 3
    run_dir = Store(out, s3_endpoint)
    got = torch.load(io.BytesIO(run_dir.read_bytes(f"ray/{LAST}/model.pt")), weights_only=True)
    assert _same_weights(got, _weights(reference))
    want = json.loads((reference / "ray" / LAST / "state.json").read_text())
    state = json.loads(run_dir.read_bytes(f"ray/{LAST}/state.json"))
    assert state["stream"] == want["stream"]
    keys = ("epoch", "step", "loss", "val_mean_iou", "val_pixels")
    assert [{k: h[k] for k in keys} for h in state["history"]] == [
        {k: h[k] for k in keys} for h in want["history"]
    ]
    figures = []
    for model, extra in ((f"{out}/ray/{LAST}", ["--endpoint-url", s3_endpoint]),
                         (str(reference / "ray" / LAST), [])):  # fmt: skip
        code, stdout, err = run(
            monkeypatch, capsys, "evaluate", "--model", model, "--data", str(small_dataset),
            "--split", "test", "--json", *extra,
        )  # fmt: skip
        assert code == 0, err
        res = json.loads(stdout)
        figures.append({k: res[k] for k in ("pooled", "per_slice", "num_slices")})
    assert figures[0] == figures[1]


@pytest.mark.slow
def test_a_killed_driver_resumes_to_the_same_weights(reference, small_dataset, tmp_path):
    """SIGKILL the whole `simaq train` (driver, Ray, workers) at a random moment after its first
    checkpoint; the same command again finishes with the reference's weights."""
    out = tmp_path / "run"
    argv = cli_argv("train", "--data", str(small_dataset), "--out", str(out), *ARGS)
    proc = subprocess.Popen(argv, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
                            start_new_session=True)  # fmt: skip
    delay = np.random.default_rng().uniform(0.0, 3.0)
    deadline = time.monotonic() + 240
    while not list((out / "ray").glob("checkpoint_0*")) and proc.poll() is None:
        assert time.monotonic() < deadline, "no checkpoint within 240 s"
        time.sleep(0.05)
    time.sleep(delay)
    os.killpg(proc.pid, signal.SIGKILL)
    proc.wait(30)
    res = subprocess.run(argv, capture_output=True, text=True, timeout=600)
    assert res.returncode == 0, res.stderr[-3000:]
    assert _same_weights(_weights(out), _weights(reference)), f"killed {delay:.2f} s after"


# --- another number of workers: each stack once per epoch -----------------------------------------


def _trace(d) -> list[tuple]:
    rows = []
    for f in sorted(os.listdir(d)):
        with open(os.path.join(d, f), encoding="utf-8") as fh:
            rows += [tuple(line.split("\t")) for line in fh.read().splitlines()]
    return rows


@pytest.mark.slow
def test_resume_on_another_number_of_workers_sees_each_stack_once(
    monkeypatch, capsys, ray_session, small_dataset, tmp_path
):
    """1 worker to step 4, 2 workers to step 8, 1 worker to step 16: the (epoch, sample, slice)
    every rank logs as consumed never repeats, and epoch 0 of the global order is consumed
    whole."""
    out, trace = tmp_path / "run", tmp_path / "trace"
    monkeypatch.setenv("SIMAQ_STREAM_TRACE", str(trace))
    # blocks of one volume: the 3 training volumes can be dealt to 1, 2 or 3 ranks
    common = ["--set", "cpus_per_worker=0.5", "--epochs", "4", "--set", "mix_volumes=1"]
    for workers, steps in ((1, 4), (2, 8), (1, 16)):
        _train(monkeypatch, capsys, str(small_dataset), str(out), *common,
               "--workers", str(workers), "--max-steps", str(steps))  # fmt: skip
    assert sorted(os.listdir(trace)) == ["rank0-of1.tsv", "rank0-of2.tsv", "rank1-of2.tsv"]
    stacks = [(e, key, c) for _, e, key, c in _trace(trace)]
    twice = [s for s, n in Counter(stacks).items() if n > 1]
    assert not twice, twice[:5]
    state = json.loads((out / "ray" / "checkpoint_00000016" / "state.json").read_text())["stream"]
    # back on one rank, the blocks the two ranks had left (the carry) were consumed first
    assert (
        state["world"] == 1 and state["carry"] and state["positions"][0][0] >= len(state["carry"])
    )
    from models.data import SampleSource, kept_centres
    from models.order import STACKS, rng

    m = read_manifest(str(small_dataset))
    train = m.split_shards("train")
    src = SampleSource(str(small_dataset), train, fields=m.fields)
    want = set()
    for i in range(src.n):
        _, lab = src.read(i)
        for c in kept_centres(lab, axis=1, rng=rng(0, STACKS, 0, i), background_keep=0.02):
            want.add(("0", src.key(i), str(c)))
    assert want == {x for x in stacks if x[0] == "0"}, "epoch 0 not consumed exactly"
    assert len({x[0] for x in stacks}) >= 2  # and the run went on into epoch 1
