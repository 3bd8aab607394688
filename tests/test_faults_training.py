"""Fault injection around training and stored data: corrupted shards (a flipped byte, a
truncation, a deletion, appended bytes, two shards swapped; on local disk and on the loopback S3
endpoint) are named by ``simaq verify`` (exit 1) and refused by training, or skipped with
``--allow-bad-shards`` and reported. A bad shard met during training stops every rank at once (one
error line, exit 2) and is not retried like a dead worker (which Ray Train restarts from the last
checkpoint: tests/test_resume.py).

Complements tests/test_cli_dataset.py (verify of flip/truncate/delete on disk) and
tests/test_models.py (training refuses a flipped byte).
"""

from __future__ import annotations

import json
import shutil

import pytest
from _cli import assert_stopped_not_retried, error_line, run

from factory.dataset.manifest import DatasetError, read_manifest

TINY = ["--set", "features=4", "--set", "depth=2", "--batch-size", "2", "--lr", "0.01"]


def flip(path, at: float = 0.5) -> None:
    data = bytearray(path.read_bytes())
    data[int(len(data) * at)] ^= 0x01
    path.write_bytes(bytes(data))


def corrupt(ds) -> dict[str, str]:
    """Corrupt every shard of a copy of the small dataset a different way; return url -> what
    ``verify`` must say about it."""
    sh = ds / "shards"
    a, b = (sh / "train-000000.tar").read_bytes(), (sh / "val-000000.tar").read_bytes()
    (sh / "train-000000.tar").write_bytes(b)  # swapped: same size, other content
    (sh / "val-000000.tar").write_bytes(a)
    p = sh / "train-000001.tar"
    p.write_bytes(p.read_bytes() + b"\0" * 512)  # a tar with one more (empty) block appended
    (sh / "test-000000.tar").unlink()
    return {
        "shards/train-000000.tar": "sha256 mismatch",
        "shards/val-000000.tar": "sha256 mismatch",
        "shards/train-000001.tar": "size",
        "shards/test-000000.tar": "missing",
    }


def test_verify_names_swapped_appended_and_missing_shards(
    monkeypatch, capsys, small_dataset, tmp_path
):
    ds = tmp_path / "ds"
    shutil.copytree(small_dataset, ds)
    expect = corrupt(ds)
    code, _, err = run(monkeypatch, capsys, "verify", str(ds))
    assert code == 1
    for url, why in expect.items():
        assert any(url in ln and why in ln for ln in err.splitlines()), (url, err)
    assert "4 of 4 shards" in err and "Traceback" not in err


def test_verify_names_corruption_on_s3(monkeypatch, capsys, small_dataset, s3_endpoint, s3_url):
    """Flip, truncate and delete objects of a published copy: verify names each, exit 1."""
    import boto3

    code, _, err = run(
        monkeypatch, capsys, "publish", str(small_dataset), s3_url, "--endpoint-url", s3_endpoint
    )
    assert code == 0, err
    dest = f"{s3_url}/demo/1.0.0"
    bucket, prefix = dest.split("/", 3)[2:]
    s3 = boto3.client("s3", endpoint_url=s3_endpoint, region_name="us-east-1")

    def key(name: str) -> str:
        return f"{prefix}/shards/{name}"

    body = bytearray(s3.get_object(Bucket=bucket, Key=key("val-000000.tar"))["Body"].read())
    body[len(body) // 3] ^= 0x80
    s3.put_object(Bucket=bucket, Key=key("val-000000.tar"), Body=bytes(body))
    body = s3.get_object(Bucket=bucket, Key=key("train-000001.tar"))["Body"].read()
    s3.put_object(Bucket=bucket, Key=key("train-000001.tar"), Body=body[:2048])
    s3.delete_object(Bucket=bucket, Key=key("test-000000.tar"))
    code, _, err = run(monkeypatch, capsys, "verify", dest, "--endpoint-url", s3_endpoint)
    assert code == 1
    assert "val-000000.tar: sha256 mismatch" in err
    assert "train-000001.tar: size 2048" in err
    assert "test-000000.tar: missing" in err
    assert "train-000000.tar" not in err and "3 of 4 shards" in err


@pytest.mark.parametrize("kind", ["flip", "truncate", "delete", "swap", "append"])
def test_training_input_refuses_each_kind_of_corruption(small_dataset, tmp_path, kind):
    """The training stream (``models.data.iter_volumes``) refuses a corrupt shard by name, or
    skips it with ``allow_bad_shards`` and reports it; nothing of the bad shard is yielded."""
    from models.data import iter_volumes

    ds = tmp_path / "ds"
    shutil.copytree(small_dataset, ds)
    m = read_manifest(str(ds))
    train = m.split_shards("train")
    bad = ds / train[0].url
    if kind == "flip":
        flip(bad, 0.7)
    elif kind == "truncate":
        bad.write_bytes(bad.read_bytes()[: bad.stat().st_size // 2])
    elif kind == "delete":
        bad.unlink()
    elif kind == "swap":
        bad.write_bytes((ds / train[1].url).read_bytes())
    else:
        bad.write_bytes(bad.read_bytes() + b"x")
    with pytest.raises(DatasetError, match="train-000000.tar"):
        list(iter_volumes(str(ds), train, fields=m.fields))
    skipped = {}
    got = list(
        iter_volumes(
            str(ds), train, fields=m.fields, allow_bad_shards=True, on_bad=skipped.__setitem__
        )
    )
    assert len(got) == train[1].nsamples  # only the good shard's samples
    assert list(skipped) == [train[0].url]


def test_training_skips_a_bad_shard_when_asked_and_says_so(
    monkeypatch, capsys, ray_session, small_dataset, tmp_path
):
    ds = tmp_path / "ds"
    shutil.copytree(small_dataset, ds)
    (ds / "shards" / "train-000000.tar").unlink()
    args = ["train", "--data", str(ds), *TINY, "--epochs", "1", "--steps-per-epoch", "2",
            "--set", "val_slices=4"]  # fmt: skip
    # (refusal without the flag: tests/test_models.py and the data-level test above)
    code, stdout, err = run(
        monkeypatch, capsys, *args, "--out", str(tmp_path / "r2"), "--allow-bad-shards"
    )
    assert code == 0, err
    assert "warning: skipped 1 bad shard(s) (--allow-bad-shards)" in err
    state = json.loads((tmp_path / "r2/ray/checkpoint_00000002/state.json").read_text())
    assert list(state["bad_shards"]) == ["shards/train-000000.tar"]


@pytest.mark.parametrize(("bad", "steps"), [("train-000001.tar", 24), ("val-000000.tar", 2)])
def test_a_bad_shard_stops_both_ranks_at_once_and_is_not_retried(
    monkeypatch, capsys, ray_session, small_dataset, tmp_path, bad, steps
):
    """Two ranks (gloo); rank 0 alone meets a flipped shard: while training (the one volume of
    train-000001 is its second block of one volume, some steps in; rank 1 never reads it) or
    while validating (rank 0 validates val-000000 alone). Every rank stops at that step, nothing
    hangs, and the run exits 2 with the shard's one line. Ray Train restarts a failed worker
    group up to ``max_failures`` times and the driver says so for each restart ("warning: a
    training worker ..."; tests/test_resume.py counts them); here there is none: the data error
    was no failure, so it was not retried."""
    ds = tmp_path / "ds"
    shutil.copytree(small_dataset, ds)
    flip(ds / "shards" / bad, 0.7)
    code, _, err = run(
        monkeypatch, capsys, "train", "--data", str(ds), "--out", str(tmp_path / "run"), *TINY,
        "--workers", "2", "--set", "cpus_per_worker=0.5", "--epochs", "1", "--steps-per-epoch",
        str(steps), "--set", "val_slices=4", "--set", "mix_volumes=1", "--set", "max_failures=2",
    )  # fmt: skip
    assert code == 2, err[-3000:]
    assert error_line(err, ray_logs=True).endswith(
        f"shard shards/{bad}: sha256 mismatch (corrupt or altered shard)"
    )
    assert_stopped_not_retried(err)
    assert not (tmp_path / "run").exists()  # no checkpoint: the new run directory is removed


# A training worker or the whole driver killed, and the run resumed: tests/test_resume.py.


def test_each_restart_ray_train_makes_is_one_warning_line_up_to_the_budget():
    """The callback Ray Train's controller calls after a failed poll of the worker group: a death
    (the health check's RayActorError) or an error a worker raised is one warning line each, up to
    ``max_failures`` (Ray Train then gives up and ``fit()`` raises); a preemption is not counted
    (Ray Train's own budget for those)."""
    from types import SimpleNamespace

    from ray.exceptions import RayActorError
    from ray.train.v2._internal.exceptions import WorkerHealthCheckFailedError

    from models.train import _failure_notice

    notes: list[str] = []
    notice = _failure_notice(SimpleNamespace(note=SimpleNamespace(remote=notes.append)), 2)
    died = WorkerHealthCheckFailedError("worker gone", RayActorError())
    preempted = WorkerHealthCheckFailedError("node gone", RayActorError(preempted=True))
    notice.after_exception(None, {})
    notice.after_exception(None, {0: died, 1: RuntimeError("gloo: connection closed")})
    notice.after_exception(None, {1: preempted})
    notice.after_exception(None, {0: OSError("s3: slow down\nmore")})
    notice.after_exception(None, {0: died})
    assert notes == [
        "warning: a training worker died (WorkerHealthCheckFailedError); restarting from the "
        "last checkpoint (1 of 2)",
        "warning: a training worker's node was preempted; restarting from the last checkpoint",
        "warning: a training worker failed (OSError: s3: slow down); restarting from the last "
        "checkpoint (2 of 2)",
    ]
