"""The data factory end to end, on the real stages (demo preset, 32³ grid): shards, manifest, index,
card, both executors byte-identical, resume after a killed run, a multi-node Ray cluster, and
interoperability with webdataset, Ray Data and ``tar``."""

from __future__ import annotations

import gzip
import hashlib
import io
import json
import os
import signal
import subprocess
import tarfile
import time

import numpy as np
import pytest
from _cli import cli_argv
from conftest import SMALL_ARGS, SMALL_SEED

from factory.dataset.generate import generate_dataset
from factory.dataset.manifest import REQUIRED_KEYS, content_sha256, iter_samples, read_manifest

SPLITS = {"train": 3, "val": 2, "test": 1}
SHARDS = [
    ("shards/train-000000.tar", "train", 0, 2),
    ("shards/train-000001.tar", "train", 2, 1),
    ("shards/val-000000.tar", "val", 3, 2),
    ("shards/test-000000.tar", "test", 5, 1),
]


def _sha(path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def test_layout_and_manifest(small_dataset, small_config):
    from factory.rng import SEED_RULE
    from schemas import label_scheme

    m = read_manifest(str(small_dataset))
    raw = json.loads((small_dataset / "manifest.json").read_text())
    assert all(k in raw for k in REQUIRED_KEYS)
    assert raw == m.dump()  # the file is the typed manifest's JSON, nothing else
    assert m.name == "demo" and m.version == "1.0.0" and m.format_version == 2
    assert m.config == small_config.to_json() and m.config_sha256 == small_config.sha256
    assert m.seed == SMALL_SEED and m.seed_rule == SEED_RULE
    assert m.labels == label_scheme("full").to_json()
    assert m.splits == SPLITS and m.num_samples == 6
    assert [(s.url, s.split, s.first_index, s.nsamples) for s in m.shards] == SHARDS
    for s in m.shards:
        f = small_dataset / s.url
        assert f.stat().st_size == s.bytes and _sha(f) == s.sha256
    assert m.content_sha256 == content_sha256(m.shards)
    assert {k for k in m.code} >= {"package", "git_sha", "dirty", "torch", "ray"}
    # fields: dtype from the config, volumes (Z, Y, X) = grid, sinogram (angles, Y, det)
    assert m.fields["recon"].dtype == "float16" and m.fields["labels"].dtype == "uint8"
    assert m.fields["phantom"].shape == [32, 32, 32]
    assert m.fields["sinogram"].shape_max[1] == 32 and m.fields["recon"].member == "recon.npy.gz"
    # one shard list: the manifest's; the wids-compatible index is derived from it
    assert not {"shardlist", "__kind__", "wids_version"} & set(raw)
    wids = json.loads((small_dataset / "wids.json").read_text())
    assert wids["__kind__"] == "wids-shard-index-v1" and wids["wids_version"] == 1
    assert wids["name"] == "demo"
    assert [(x["url"], x["nsamples"], x["filesize"], x["sha256"]) for x in wids["shardlist"]] == [
        (s.url, s.nsamples, s.bytes, s.sha256) for s in m.shards
    ]
    # nothing temporary is left; everything a reader needs is there
    names = sorted(p.name for p in small_dataset.iterdir())
    assert names == [
        "README.md", "index.parquet", "manifest.json", "preview.png", "shards", "wids.json"
    ]  # fmt: skip


def test_shard_bytes_are_reproducible_tar(small_dataset, small_config):
    """Members sorted per key, fixed mtime/owner; the content is the stage output itself."""
    import factory.sample

    with tarfile.open(small_dataset / "shards/val-000000.tar") as tar:
        infos = tar.getmembers()
        names = [i.name for i in infos]
        assert names == [
            f"00000000{k}.{f}"
            for k in (3, 4)
            for f in (
                "labels.npy.gz",
                "meta.json",
                "phantom.npy.gz",
                "recon.npy.gz",
                "sinogram.npy.gz",
            )
        ]
        assert {i.mtime for i in infos} == {0} and {i.uname for i in infos} == {"simaq"}
        assert all(i.isreg() for i in infos)
        recon = np.load(
            io.BytesIO(gzip.decompress(tar.extractfile("000000004.recon.npy.gz").read()))
        )
        labels = np.load(
            io.BytesIO(gzip.decompress(tar.extractfile("000000004.labels.npy.gz").read()))
        )
        meta = json.loads(tar.extractfile("000000004.meta.json").read())
    import torch

    threads = torch.get_num_threads()
    torch.set_num_threads(small_config.dataset.torch_threads)  # as the executors do
    try:
        direct = factory.sample.simulate_sample(small_config, SMALL_SEED, 4)
    finally:
        torch.set_num_threads(threads)
    np.testing.assert_array_equal(recon, direct.fields["recon"].astype(np.float16))
    np.testing.assert_array_equal(labels, direct.fields["labels"])
    assert meta["index"] == 4 and meta["seed"] == SMALL_SEED


def test_ray_executor_gives_byte_identical_shards(
    ray_session, small_dataset, small_config, tmp_path
):
    out = tmp_path / "ray"
    m = generate_dataset(small_config, str(out), seed=SMALL_SEED, executor="ray", workers=2)
    ref = read_manifest(str(small_dataset))
    assert m.content_sha256 == ref.content_sha256
    for s in ref.shards:
        assert (out / s.url).read_bytes() == (small_dataset / s.url).read_bytes(), s.url
    # the manifest differs only in time (and the code block, computed once per run)
    strip = {"created", "code"}
    assert m.model_dump(exclude=strip) == ref.model_dump(exclude=strip)


def test_another_seed_gives_another_content_hash(tmp_path):
    from factory.config import load_preset

    cfg = load_preset("demo", {"grid": {"shape": [32, 32, 32]}, "dataset": {"num_samples": 1}})
    a = generate_dataset(cfg, str(tmp_path / "a"), seed=0, executor="local")
    b = generate_dataset(cfg, str(tmp_path / "b"), seed=1, executor="local")
    c = generate_dataset(cfg, str(tmp_path / "c"), seed=0, executor="local")
    assert a.content_sha256 != b.content_sha256
    assert a.content_sha256 == c.content_sha256


def test_a_format_1_run_is_not_resumed_in_format_2(tmp_path):
    """Format 2 draws other content at the same seed: an unfinished format-1 run is not mixed."""
    from factory.config import load_preset
    from factory.dataset.generate import _plan_doc
    from factory.dataset.shards import plan_shards
    from factory.errors import UserError

    cfg = load_preset("demo", {"grid": {"shape": [32, 32, 32]}, "dataset": {"num_samples": 1}})
    records = tmp_path / "old" / "_records"
    records.mkdir(parents=True)
    plan = _plan_doc(cfg, 0, plan_shards(cfg.dataset)[0])
    assert plan["format_version"] == 2
    (records / "_plan.json").write_text(json.dumps({**plan, "format_version": 1}))
    with pytest.raises(UserError, match="started with another format_version"):
        generate_dataset(cfg, str(tmp_path / "old"), seed=0, executor="local", resume=True)


def test_index_parquet(small_dataset):
    import pyarrow.parquet as pq

    from schemas import label_scheme

    t = pq.read_table(small_dataset / "index.parquet")
    m = read_manifest(str(small_dataset))
    assert t.num_rows == 6
    assert t.column_names[:5] == ["key", "index", "split", "shard", "n_angles"]
    rows = t.to_pylist()
    assert [r["key"] for r in rows] == [f"{i:09d}" for i in range(6)]
    by_shard = {(s.url, s.split): s for s in m.shards}
    for r in rows:
        s = by_shard[(r["shard"], r["split"])]
        assert s.first_index <= r["index"] < s.first_index + s.nsamples
        fr = [r[f"frac.{n}"] for n in label_scheme("full").names]
        assert abs(sum(fr) - 1) < 1e-5 and fr[0] > 0  # background is present
    params = [
        c for c in t.column_names if c.startswith(("phantom.", "acquisition.", "reconstruction."))
    ]
    assert any(c.startswith("acquisition.") for c in params), t.column_names
    # n_angles of a row is the angle axis of that sample's stored sinogram
    s0 = next(iter_samples(str(small_dataset), m.shards[0]))
    assert rows[0]["n_angles"] == s0["sinogram"].shape[0]


def test_dataset_card_and_preview(small_dataset):
    card = (small_dataset / "README.md").read_text()
    m = read_manifest(str(small_dataset))
    assert card.startswith("---\n") and m.content_sha256 in card
    assert "## Class fractions" in card and "| 0 | background |" in card
    assert "preview.png" in card
    import matplotlib.image as mpimg

    img = mpimg.imread(small_dataset / "preview.png")
    assert img.ndim == 3 and img.shape[0] > 200 and img.shape[1] > 200
    assert img[..., :3].std() > 0.05  # not a blank image


# --- interoperability: no project code to read the shards ---------------------------------------


def test_webdataset_reads_the_shards(small_dataset):
    import webdataset as wds

    m = read_manifest(str(small_dataset))
    urls = [str(small_dataset / s.url) for s in m.shards]
    got = list(wds.WebDataset(urls, shardshuffle=False).decode())
    assert [s["__key__"] for s in got] == [f"{i:09d}" for i in range(6)]
    ours = [s for r in m.shards for s in iter_samples(str(small_dataset), r)]
    for a, b in zip(got, ours, strict=False):
        for field in ("phantom", "labels", "sinogram", "recon"):
            arr = a[f"{field}.npy.gz"]  # webdataset's default decoder: gunzip, then .npy
            assert arr.dtype == b[field].dtype and np.array_equal(arr, b[field])
        assert a["meta.json"] == b["meta"].to_json()


def test_ray_data_reads_the_shards(ray_session, tmp_path):
    """``ray.data.read_webdataset`` with its default decoder, on an uncompressed float32 dataset."""
    import ray

    from factory.config import load_preset

    cfg = load_preset(
        "demo",
        {
            "grid": {"shape": [32, 32, 32]},
            "dataset": {
                "num_samples": 3,
                "shard_size": 2,
                "compression": "none",
                "dtypes": {"phantom": "float32", "sinogram": "float32", "recon": "float32"},
                "splits": {"train": 1.0},
            },
        },
    )
    out = tmp_path / "plain"
    m = generate_dataset(cfg, str(out), seed=3, executor="local")
    ds = ray.data.read_webdataset([str(out / s.url) for s in m.shards])
    rows = sorted(ds.take_all(), key=lambda r: r["__key__"])
    assert [r["__key__"] for r in rows] == ["000000000", "000000001", "000000002"]
    ours = {s["__key__"]: s for r in m.shards for s in iter_samples(str(out), r)}
    for r in rows:
        recon = np.asarray(r["recon.npy"])
        assert recon.dtype == np.float32 and np.array_equal(recon, ours[r["__key__"]]["recon"])
        assert np.array_equal(np.asarray(r["labels.npy"]), ours[r["__key__"]]["labels"])


def test_tar_command_reads_the_shards(small_dataset, tmp_path):
    shard = small_dataset / "shards/train-000000.tar"
    listing = subprocess.run(["tar", "-tf", str(shard)], capture_output=True, text=True, check=True)
    assert listing.stdout.split() == sorted(listing.stdout.split())
    assert "000000001.recon.npy.gz" in listing.stdout.split()
    subprocess.run(["tar", "-xf", str(shard), "-C", str(tmp_path)], check=True)
    with gzip.open(tmp_path / "000000001.labels.npy.gz") as fh:
        labels = np.load(io.BytesIO(fh.read()), allow_pickle=False)
    ref = next(
        s
        for s in iter_samples(
            str(small_dataset), read_manifest(str(small_dataset)).shards[0].model_dump()
        )
        if s["__key__"] == "000000001"
    )
    assert np.array_equal(labels, ref["labels"])


# --- interruptions and clusters ------------------------------------------------------------------


def test_resume_after_the_driver_is_killed(tmp_path):
    """SIGKILL ``simaq generate`` after its first committed shard; ``--resume`` finishes it with
    the content hash of an uninterrupted run."""
    from factory.config import load_preset
    from factory.errors import UserError

    n = 8  # shards of one sample: the kill lands while most are still to do
    args = ["--set", "grid.shape=[32,32,32]", "--samples", str(n), "--shard-size", "1"]
    out = tmp_path / "killed"
    proc = subprocess.Popen(
        cli_argv("generate", "--preset", "demo", "--out", str(out), "--executor", "local", *args),
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    records = out / "_records"
    deadline = time.monotonic() + 120
    try:
        while time.monotonic() < deadline and proc.poll() is None:
            if records.is_dir() and any(p.name != "_plan.json" for p in records.iterdir()):
                break
            time.sleep(0.005)
        assert proc.poll() is None, "generate finished before it could be killed"
        os.kill(proc.pid, signal.SIGKILL)
        proc.wait(30)
    finally:
        if proc.poll() is None:
            proc.kill()
    assert not (out / "manifest.json").exists()  # readers see no dataset
    done = [p for p in records.iterdir() if p.name != "_plan.json"]
    assert 1 <= len(done) < n
    cfg = load_preset(
        "demo", {"grid": {"shape": [32, 32, 32]}, "dataset": {"num_samples": n, "shard_size": 1}}
    )
    with pytest.raises(UserError, match="unfinished dataset"):
        generate_dataset(cfg, str(out), executor="local")
    m = generate_dataset(cfg, str(out), executor="local", resume=True)
    ref = generate_dataset(cfg, str(tmp_path / "ref"), executor="local")
    assert m.content_sha256 == ref.content_sha256 and m.num_samples == n
    assert not (out / "_records").exists() and not (out / "_tmp").exists()


@pytest.mark.slow
def test_multinode_cluster(small_dataset, tmp_path, monkeypatch):
    """Two raylets of one CPU each (``ray.cluster_utils.Cluster``); ``--address ray://HOST:PORT``
    (Ray Client) and ``--address auto`` (``$RAY_ADDRESS``) join them, 2 workers, one per node."""
    import socket

    # The head gives each Ray Client server process 30 s to start; a loaded CI machine needs more.
    monkeypatch.setenv("RAY_CLIENT_SERVER_CHECK_CHANNEL_TIMEOUT_S", "180")

    from ray.cluster_utils import Cluster

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        client_port = s.getsockname()[1]
    cluster = Cluster(
        initialize_head=True,
        head_node_args={
            "num_cpus": 1,
            "include_dashboard": False,
            "ray_client_server_port": client_port,
        },
    )
    ref = read_manifest(str(small_dataset)).content_sha256
    try:
        cluster.add_node(num_cpus=1)
        cluster.wait_for_nodes()
        for name, address, env in [
            ("client", f"ray://127.0.0.1:{client_port}", {}),
            ("auto", "auto", {"RAY_ADDRESS": cluster.address}),
        ]:
            out = tmp_path / name
            res = subprocess.run(
                cli_argv(
                    "generate",
                    "--preset",
                    "demo",
                    "--out",
                    str(out),
                    "--address",
                    address,
                    "--workers",
                    "2",
                    *SMALL_ARGS,
                ),
                capture_output=True,
                text=True,
                timeout=300,
                env={**os.environ, **env},
            )
            assert res.returncode == 0, res.stderr[-3000:]
            assert "2 worker(s), 1 CPU" in res.stderr
            assert read_manifest(str(out)).content_sha256 == ref, name
    finally:
        cluster.shutdown()


def test_a_failing_sample_leaves_nothing_or_a_resumable_run(monkeypatch, tmp_path):
    """Fault injection: the stage raises for sample 1 (bad input found at run time)."""
    import factory.sample
    from factory.config import load_preset
    from factory.errors import UserError

    real = factory.sample.simulate_sample

    def failing(config, seed, index, *, device="cpu"):
        if index == 1:
            raise UserError("phantom.cell_count: injected failure for sample 1")
        return real(config, seed, index, device=device)

    over = {"grid": {"shape": [32, 32, 32]}, "dataset": {"num_samples": 2, "splits": {"train": 1}}}
    monkeypatch.setattr(factory.sample, "simulate_sample", failing)
    # one shard of 2: nothing was committed, so nothing is left behind
    out = tmp_path / "one"
    cfg = load_preset("demo", {**over, "dataset": {**over["dataset"], "shard_size": 2}})
    with pytest.raises(UserError, match="injected failure"):
        generate_dataset(cfg, str(out), executor="local")
    assert not out.exists()
    # shards of 1: shard 0 is committed and kept; --resume finishes once the stage works
    out = tmp_path / "two"
    cfg = load_preset("demo", {**over, "dataset": {**over["dataset"], "shard_size": 1}})
    with pytest.raises(UserError, match="injected failure"):
        generate_dataset(cfg, str(out), executor="local")
    assert (out / "shards/train-000000.tar").is_file() and not (out / "manifest.json").exists()
    monkeypatch.setattr(factory.sample, "simulate_sample", real)
    m = generate_dataset(cfg, str(out), executor="local", resume=True)
    ref = generate_dataset(cfg, str(tmp_path / "ref"), executor="local")
    assert m.content_sha256 == ref.content_sha256 and m.num_samples == 2
