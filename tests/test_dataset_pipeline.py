"""The factory's pipeline details: Ray pool shapes, fail-fast bad input that writes nothing,
configurable fields/dtypes/compression, the streamed index, and the code block of the manifest."""

from __future__ import annotations

import io
import socket
import subprocess
import sys
import tarfile
import time

import numpy as np
import pyarrow.parquet as pq
import pytest
from conftest import SMALL_OVERRIDES, SMALL_SEED
from hypothesis import given, settings
from hypothesis import strategies as st

from factory.config import load_preset
from factory.dataset.executor import ray_pool_shape
from factory.dataset.generate import code_info, generate_dataset
from factory.dataset.manifest import iter_samples, read_manifest
from factory.errors import UserError
from schemas.index import merge_types, param_type


@pytest.mark.parametrize(
    "resources, threads, workers, gpus, expect",
    [
        ({"CPU": 2.0}, 1, None, None, (2, 1.0, 0.0)),  # fill the CPUs, one thread each
        ({"CPU": 2.0}, 2, None, None, (1, 2.0, 0.0)),
        ({"CPU": 2.0}, 1, 4, None, (4, 0.5, 0.0)),  # more workers than cores: fractional
        ({"CPU": 3.0}, 1, 7, None, (7, 0.428, 0.0)),  # Ray takes at most 4 decimals
        ({"CPU": 16.0, "GPU": 4.0}, 1, None, None, (4, 1.0, 1.0)),  # one GPU per actor
        ({"CPU": 2.0, "GPU": 4.0}, 1, None, None, (4, 0.5, 1.0)),  # GPUs, few CPUs
        ({"CPU": 8.0, "GPU": 1.0}, 1, None, 0.5, (2, 1.0, 0.5)),
        ({"CPU": 8.0, "GPU": 2.0}, 2, None, 0.0, (4, 2.0, 0.0)),  # GPUs left unused
    ],
)
def test_ray_pool_shape(resources, threads, workers, gpus, expect):
    assert ray_pool_shape(resources, threads, workers, gpus) == expect
    n, cpus, _ = ray_pool_shape(resources, threads, workers, gpus)
    assert n * cpus <= resources["CPU"] + 1e-9  # the pool never asks for more than there is


def test_the_pool_never_holds_more_actors_than_the_memory_fits():
    from factory.config import load_preset
    from factory.dataset.executor import sample_memory_bytes

    paper = sample_memory_bytes(load_preset("simaq-paper"))
    assert paper == 512 * 2**20 + 6 * 4 * 512**3  # 3.5 GiB: 512 MiB + 6 volumes of 512³ float32
    big = {"CPU": 16.0, "memory": 10 * 2**30}
    assert ray_pool_shape(big, 1, None, None, paper)[0] == 2  # 16 CPUs, memory for 2
    assert ray_pool_shape(big, 1, None, None, 2**20)[0] == 16  # tiny samples: the CPUs decide
    assert ray_pool_shape(big, 1, 2, None, paper)[0] == 2  # an explicit --workers is kept
    with pytest.raises(UserError, match="workers: 5 workers need 17.5 GiB"):
        ray_pool_shape(big, 1, 5, None, paper)  # ... unless the memory cannot hold them


@pytest.mark.parametrize(
    "resources, workers, gpus, match",
    [
        ({"CPU": 2.0}, None, 1.0, "gpus_per_worker: 1.0 GPU"),
        ({"CPU": 2.0}, None, -1.0, "gpus_per_worker: must be >= 0"),
        ({"CPU": 2.0}, 0, None, "^workers: must be >= 1"),
        ({"GPU": 1.0}, None, 0.0, "no CPU"),
    ],
)
def test_ray_pool_shape_refuses(resources, workers, gpus, match):
    with pytest.raises(UserError, match=match):
        ray_pool_shape(resources, 1, workers, gpus)


@settings(max_examples=80, deadline=None)
@given(
    parts=st.lists(
        st.lists(
            st.one_of(st.booleans(), st.integers(-5, 5), st.floats(-1, 1), st.sampled_from("ab")),
            min_size=1,
            max_size=5,
        ),
        min_size=1,
        max_size=4,
    )
)
def test_merged_shard_types_equal_the_type_over_all_values(parts):
    """The index types each shard's parameter columns; merging them gives the global type."""
    assert merge_types(param_type(p) for p in parts) == param_type(v for p in parts for v in p)


def _tiny(**dataset):
    return load_preset(
        "demo",
        {"grid": {"shape": [32, 32, 32]}, "dataset": {"splits": {"train": 1.0}, **dataset}},
    )


def test_ray_bad_pool_is_refused_before_anything_is_written(ray_session, tmp_path):
    out = tmp_path / "gpu"
    with pytest.raises(UserError, match="gpus_per_worker"):
        generate_dataset(_tiny(num_samples=1), str(out), executor="ray", gpus_per_worker=1)
    assert not out.exists()


def test_unreachable_address_fails_fast_and_writes_nothing(tmp_path):
    from factory.cluster import check_reachable

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]  # closed again: nobody listens there
    out = tmp_path / "ds"
    t = time.monotonic()
    res = subprocess.run(
        [sys.executable, "-c", "import cli; cli.main()", "generate", "--preset", "demo"]
        + ["--samples", "1", "--out", str(out), "--address", f"127.0.0.1:{port}"],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert res.returncode == 2, res.stderr[-2000:]
    assert f"error: --address: cannot connect to Ray at '127.0.0.1:{port}'" in res.stderr
    assert "Traceback" not in res.stderr
    assert time.monotonic() - t < 60  # not Ray's minutes of waiting for a GCS
    assert not out.exists()
    with pytest.raises(UserError, match="Connection refused"):
        check_reachable(f"ray://127.0.0.1:{port}")
    with pytest.raises(UserError, match="expected auto, HOST:PORT or ray://HOST:PORT"):
        check_reachable("http://127.0.0.1:80")


def test_fields_dtypes_and_compression_are_configurable(tmp_path):
    cfg = load_preset(
        "demo",
        {
            "grid": {"shape": [32, 32, 32]},
            "acquisition": {"keep_noisy_volume": True},
            "dataset": {
                "num_samples": 1,
                "splits": {"train": 1.0},
                "fields": ["recon", "labels", "noisy"],
                "dtypes": {"recon": "float32", "noisy": "float16"},
                "compression": "none",
            },
        },
    )
    m = generate_dataset(cfg, str(tmp_path / "ds"), seed=2, executor="local")
    with tarfile.open(tmp_path / "ds" / m.shards[0].url) as tar:
        names = tar.getnames()
        recon = np.load(io.BytesIO(tar.extractfile("000000000.recon.npy").read()))
    assert names == [
        f"000000000.{f}" for f in ("labels.npy", "meta.json", "noisy.npy", "recon.npy")
    ]
    assert recon.dtype == np.float32 and recon.shape == (32, 32, 32)
    assert {k: v.dtype for k, v in m.fields.items()} == {
        "recon": "float32",
        "labels": "uint8",
        "noisy": "float16",
        "meta": None,
    }
    s = next(iter_samples(str(tmp_path / "ds"), m.shards[0], fields=m.fields))
    assert s["noisy"].dtype == np.float16 and np.array_equal(s["recon"], recon)
    assert "phantom" not in s and "sinogram" not in s


def test_index_is_streamed_in_row_groups(monkeypatch, small_dataset, small_config, tmp_path):
    """With 2 rows per row group the index of the small dataset has the same rows."""
    import factory.dataset.generate as gen

    monkeypatch.setattr(gen, "INDEX_ROW_GROUP", 2)
    out = tmp_path / "ds"
    m = generate_dataset(small_config, str(out), seed=SMALL_SEED, executor="local")
    assert m.content_sha256 == read_manifest(str(small_dataset)).content_sha256
    assert pq.ParquetFile(out / "index.parquet").metadata.num_row_groups == 3  # rows 0-1, 2-4, 5
    got, ref = pq.read_table(out / "index.parquet"), pq.read_table(small_dataset / "index.parquet")
    assert got.schema == ref.schema and got.to_pylist() == ref.to_pylist()
    assert SMALL_OVERRIDES["dataset"]["num_samples"] == got.num_rows
    # inspect scans the index a row group at a time: same ranges as over one row group
    from factory.dataset.tools import inspect_dataset

    a, b = inspect_dataset(str(out)), inspect_dataset(str(small_dataset))
    assert a["param_ranges"] == b["param_ranges"] and len(a["param_ranges"]) > 10
    lo, hi = a["param_ranges"]["acquisition.tilt.n_projections"]
    col = got["acquisition.tilt.n_projections"].to_pylist()
    assert (lo, hi) == (min(col), max(col))


def test_code_block_records_the_git_state():
    info = code_info()
    for key in ("package", "git_sha", "dirty", "torch", "ray"):
        assert key in info
    head = subprocess.run(["git", "rev-parse", "HEAD"], capture_output=True, text=True)
    if head.returncode != 0:  # an installed copy without .git: recorded as unknown
        assert info["git_sha"] is None and info["dirty"] is None
        return
    assert info["git_sha"] == head.stdout.strip() and len(info["git_sha"]) == 40
    assert isinstance(info["dirty"], bool)
    import ray
    import torch

    assert info["torch"] == torch.__version__.split("+")[0] or info["torch"] == torch.__version__
    assert info["ray"] == ray.__version__


class _FlakyHead:
    """Stands in for ``ray`` when a Ray Client head fails the first ``fails`` inits, as a loaded
    head does when its per-client server misses the start deadline (not reproducible on demand)."""

    def __init__(self, fails: int, error: Exception):
        self.fails, self.error, self.inits, self.shutdowns = fails, error, 0, 0

    def init(self, address, **kwargs):
        self.inits += 1
        if self.inits <= self.fails:
            raise self.error

    def shutdown(self):
        self.shutdowns += 1


def test_join_retries_only_a_transient_client_start_failure(monkeypatch):
    from factory import cluster

    monkeypatch.setattr(cluster.time, "sleep", lambda s: None)
    abort = ConnectionAbortedError(
        "Initialization failure from server:\nTraceback ...\nRuntimeError: Proxy failed"
    )
    head = _FlakyHead(2, abort)
    cluster._join(head, "ray://h:1", {})
    assert (head.inits, head.shutdowns) == (3, 2)
    head = _FlakyHead(3, abort)
    with pytest.raises(UserError, match=r"after 3 tries \(RuntimeError: Proxy failed\)"):
        cluster._join(head, "ray://h:1", {})
    head = _FlakyHead(1, ValueError("bad address\nmore"))
    with pytest.raises(UserError, match=r"'ray://h:1' \(more\)"):
        cluster._join(head, "ray://h:1", {})
    assert head.inits == 1
