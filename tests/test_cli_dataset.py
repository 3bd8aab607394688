"""``simaq generate | verify | inspect | preview | publish`` through the real CLI entry point,
with a real local Ray and a real loopback S3 endpoint (moto server)."""

from __future__ import annotations

import json
import shutil

import pytest
from _cli import error_line as _error_line
from _cli import run
from conftest import SMALL_ARGS

from factory.dataset.manifest import iter_samples, read_manifest
from factory.dataset.storage import Store

TINY_ARGS = [
    "--preset",
    "demo",
    "--set",
    "grid.shape=[32,32,32]",
    "--samples",
    "2",
    "--shard-size",
    "1",
    "--executor",
    "local",
]


def test_generate_refuses_to_overwrite_and_resumes(monkeypatch, capsys, tmp_path):
    out = tmp_path / "ds"
    code, stdout, _ = run(monkeypatch, capsys, "generate", *TINY_ARGS, "--out", str(out))
    assert code == 0 and "2 samples in 2 shards" in stdout
    first = read_manifest(str(out))
    before = {p: p.read_bytes() for p in out.rglob("*") if p.is_file()}
    code, _, err = run(monkeypatch, capsys, "generate", *TINY_ARGS, "--out", str(out))
    assert code == 2 and "already exists" in _error_line(err)
    assert {p: p.read_bytes() for p in out.rglob("*") if p.is_file()} == before  # untouched
    code, _, err = run(monkeypatch, capsys, "generate", *TINY_ARGS, "--out", str(out), "--resume")
    assert code == 0 and "nothing to do" in err
    code, _, err = run(
        monkeypatch, capsys, "generate", *TINY_ARGS, "--out", str(out), "--resume", "--seed", "5"
    )
    assert code == 2 and "another config or seed" in _error_line(err)
    assert read_manifest(str(out)) == first


@pytest.mark.parametrize(
    "args, message",
    [
        (["--preset", "nope"], "unknown preset 'nope'"),
        (["--preset", "demo", "--config", "x.yaml"], "exactly one of --preset"),
        (["--config", "missing.yaml"], "file not found"),
        (["--preset", "demo", "--splits", "train=0.5,val"], "--splits"),
        (["--preset", "demo", "--splits", "train=0.5,val=0.1"], "sum to 1"),
        (["--preset", "demo", "--set", "dataset.shard_size=0"], "dataset.shard_size"),
        (["--preset", "demo", "--set", "dataset.compression=zip"], "dataset.compression"),
        (["--preset", "demo", "--executor", "spark"], "--executor"),
        (["--preset", "demo", "--seed", "-1"], "--seed"),
        (["--preset", "demo", "--workers", "0"], "--workers"),
    ],
)
def test_bad_input_exits_2_and_writes_nothing(monkeypatch, capsys, tmp_path, args, message):
    out = tmp_path / "ds"
    code, _, err = run(monkeypatch, capsys, "generate", *args, "--out", str(out), "--samples", "1")
    assert code == 2
    assert message in _error_line(err)
    assert not out.exists()


def test_unwritable_or_foreign_output_exits_2(monkeypatch, capsys, tmp_path):
    blocker = tmp_path / "a-file"
    blocker.write_text("x")
    code, _, err = run(monkeypatch, capsys, "generate", *TINY_ARGS, "--out", str(blocker / "ds"))
    assert code == 2 and "--out" in _error_line(err)
    code, _, err = run(monkeypatch, capsys, "generate", *TINY_ARGS, "--out", str(blocker))
    assert code == 2 and "is a file" in _error_line(err)
    foreign = tmp_path / "foreign"
    foreign.mkdir()
    (foreign / "notes.txt").write_text("mine")
    code, _, err = run(monkeypatch, capsys, "generate", *TINY_ARGS, "--out", str(foreign))
    assert code == 2 and "not empty" in _error_line(err)
    assert sorted(p.name for p in foreign.iterdir()) == ["notes.txt"]
    code, _, err = run(monkeypatch, capsys, "generate", *TINY_ARGS, "--out", "gs://bucket/x")
    assert code == 2 and "unsupported scheme" in _error_line(err)


def test_verify_names_bad_shards(monkeypatch, capsys, small_dataset, tmp_path):
    ds = tmp_path / "copy"
    shutil.copytree(small_dataset, ds)
    code, stdout, _ = run(monkeypatch, capsys, "verify", str(ds))
    assert code == 0 and "ok: 4 shards, 6 samples" in stdout
    val = ds / "shards/val-000000.tar"
    data = bytearray(val.read_bytes())
    data[len(data) // 2] ^= 1
    val.write_bytes(bytes(data))
    (ds / "shards/test-000000.tar").unlink()
    train = ds / "shards/train-000001.tar"
    train.write_bytes(train.read_bytes()[:1024])  # truncated
    code, _, err = run(monkeypatch, capsys, "verify", str(ds))
    assert code == 1
    assert "val-000000.tar: sha256 mismatch" in err
    assert "test-000000.tar: missing" in err
    assert "train-000001.tar: size 1024" in err
    assert "train-000000.tar" not in err
    assert "3 of 4 shards" in err


def test_inspect_and_preview(monkeypatch, capsys, small_dataset, tmp_path):
    code, stdout, _ = run(monkeypatch, capsys, "inspect", str(small_dataset), "--json")
    info = json.loads(stdout)
    assert (
        code == 0
        and info["num_samples"] == 6
        and info["splits"] == {"train": 3, "val": 2, "test": 1}
    )
    assert abs(sum(info["class_fractions"].values()) - 1) < 1e-9
    assert info["bytes"] == sum(p.stat().st_size for p in (small_dataset / "shards").iterdir())
    lo, hi = info["param_ranges"]["n_angles"]
    assert 1 <= lo <= hi
    code, stdout, _ = run(monkeypatch, capsys, "inspect", str(small_dataset))
    assert code == 0 and "class fractions" in stdout and "demo 1.0.0" in stdout
    png = tmp_path / "p" / "four.png"
    code, stdout, _ = run(
        monkeypatch, capsys, "preview", str(small_dataset), "--index", "4", "--out", str(png)
    )
    assert code == 0 and png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    code, _, err = run(
        monkeypatch, capsys, "preview", str(small_dataset), "--index", "99", "--out", str(png)
    )
    assert code == 2 and "no sample 99" in _error_line(err)
    code, _, err = run(monkeypatch, capsys, "inspect", str(tmp_path / "nothing"))
    assert code == 2 and "no manifest" in _error_line(err)


# --- object storage (real loopback S3) -----------------------------------------------------------


def test_generate_to_s3_with_ray(
    monkeypatch, capsys, ray_session, s3_endpoint, s3_url, small_dataset
):
    code, stdout, err = run(
        monkeypatch,
        capsys,
        "generate",
        "--preset",
        "demo",
        *SMALL_ARGS,
        "--out",
        s3_url,
        "--endpoint-url",
        s3_endpoint,
        "--workers",
        "2",
    )
    assert code == 0, err
    m = read_manifest(Store(s3_url, s3_endpoint))
    assert m.content_sha256 == read_manifest(str(small_dataset)).content_sha256
    code, stdout, _ = run(monkeypatch, capsys, "verify", s3_url, "--endpoint-url", s3_endpoint)
    assert code == 0 and "ok: 4 shards" in stdout
    # the endpoint may also come from the environment
    monkeypatch.setenv("SIMAQ_S3_ENDPOINT", s3_endpoint)
    s = list(iter_samples(s3_url, m.shards[2], fields=m.fields))
    assert [x["__key__"] for x in s] == ["000000003", "000000004"]
    import boto3

    keys = {
        o["Key"]
        for o in boto3.client("s3", endpoint_url=s3_endpoint).list_objects_v2(
            Bucket=s3_url.split("/")[2], Prefix=s3_url.split("/", 3)[3] + "/"
        )["Contents"]
    }
    assert not any("/_tmp/" in k or "/_records/" in k for k in keys)


def test_generate_to_missing_bucket_exits_2(monkeypatch, capsys, s3_endpoint):
    code, _, err = run(
        monkeypatch,
        capsys,
        "generate",
        *TINY_ARGS,
        "--out",
        "s3://no-such-bucket-x/ds",
        "--endpoint-url",
        s3_endpoint,
    )
    assert code == 2 and "cannot write" in _error_line(err)
    code, _, err = run(
        monkeypatch,
        capsys,
        "generate",
        *TINY_ARGS,
        "--out",
        "s3://b/ds",
        "--endpoint-url",
        "http://user:secret@127.0.0.1:1",
    )
    line = _error_line(err)
    assert code == 2 and "credentials" in line and "secret" not in err


def test_publish_verifies_and_refuses_an_existing_version(
    monkeypatch, capsys, s3_endpoint, s3_url, small_dataset, tmp_path
):
    code, stdout, err = run(
        monkeypatch, capsys, "publish", str(small_dataset), s3_url, "--endpoint-url", s3_endpoint
    )
    assert code == 0, err
    dest = f"{s3_url}/demo/1.0.0"
    assert dest in stdout
    code, stdout, _ = run(monkeypatch, capsys, "verify", dest, "--endpoint-url", s3_endpoint)
    assert code == 0
    published = read_manifest(Store(dest, s3_endpoint))
    assert published == read_manifest(str(small_dataset))
    code, _, err = run(
        monkeypatch, capsys, "publish", str(small_dataset), s3_url, "--endpoint-url", s3_endpoint
    )
    assert code == 2 and "already exists" in _error_line(err)
    # a corrupt source is not published, and no manifest appears at the destination
    bad = tmp_path / "bad"
    shutil.copytree(small_dataset, bad)
    shard = bad / "shards/val-000000.tar"
    data = bytearray(shard.read_bytes())
    data[-2000] ^= 1
    shard.write_bytes(bytes(data))
    other = f"{s3_url}-other"
    code, _, err = run(
        monkeypatch, capsys, "publish", str(bad), other, "--endpoint-url", s3_endpoint
    )
    assert code == 2 and "val-000000.tar" in _error_line(err)
    code, _, err = run(
        monkeypatch, capsys, "inspect", f"{other}/demo/1.0.0", "--endpoint-url", s3_endpoint
    )
    assert code == 2 and "no manifest" in err
