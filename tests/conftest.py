"""Session-wide real components for the tests: a local Ray and a loopback S3 endpoint (moto server).

* ``ray_session``: one real local Ray for the whole session (``num_cpus=2``, no dashboard); it
  starts in about 10 s on a 2-core machine, so tests share it. Ray workers ask for fractional CPUs
  where needed so two of them never starve each other.
* ``s3_endpoint``: ``http://127.0.0.1:PORT`` of a real S3 HTTP endpoint, moto's
  ``ThreadedMotoServer`` on a free loopback port, or the one named by ``$SIMAQ_TEST_S3_ENDPOINT``
  (started by ``.ci/run``). ``s3_bucket`` creates a bucket on it; ``s3_url`` gives each test its own
  ``s3://bucket/prefix``.

Object-store credentials are fake and set here, before Ray starts, so that Ray workers inherit them
from the environment as they would on a real cluster.
"""

from __future__ import annotations

import os
import socket
import uuid

import pytest

for _k, _v in {
    "AWS_ACCESS_KEY_ID": "simaq-test",
    "AWS_SECRET_ACCESS_KEY": "simaq-test-secret",
    "AWS_DEFAULT_REGION": "us-east-1",
    "AWS_EC2_METADATA_DISABLED": "true",
}.items():
    os.environ.setdefault(_k, _v)
# The test S3 endpoint must never be a real account's: drop any inherited session token.
os.environ.pop("AWS_SESSION_TOKEN", None)

TEST_BUCKET = "simaq-test"


def _free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture(scope="session")
def ray_session():
    """A real local Ray, started once per session (2 CPUs, no dashboard)."""
    import logging

    import ray

    started = False
    if not ray.is_initialized():
        # address="local": a fresh cluster, never another session's Ray on the same machine; the
        # setup hook quiets Ray Train's cleaner polling a State API that has no dashboard here.
        ray.init(
            address="local",
            num_cpus=2,
            include_dashboard=False,
            logging_level=logging.WARNING,
            runtime_env={"worker_process_setup_hook": "models.train.ray_worker_setup"},
        )
        started = True
    yield ray
    if started:
        ray.shutdown()


@pytest.fixture(scope="session")
def s3_endpoint():
    """URL of a real loopback S3 endpoint (moto server mode)."""
    url = os.environ.get("SIMAQ_TEST_S3_ENDPOINT")
    if url:
        yield url.rstrip("/")
        return
    from moto.server import ThreadedMotoServer

    port = _free_port()
    server = ThreadedMotoServer(ip_address="127.0.0.1", port=port, verbose=False)
    server.start()
    try:
        yield f"http://127.0.0.1:{port}"
    finally:
        server.stop()


@pytest.fixture(scope="session")
def s3_bucket(s3_endpoint) -> str:
    """Name of a bucket that exists on the test endpoint."""
    import boto3

    client = boto3.client("s3", endpoint_url=s3_endpoint, region_name="us-east-1")
    try:
        client.create_bucket(Bucket=TEST_BUCKET)
    except client.exceptions.BucketAlreadyOwnedByYou:
        pass
    return TEST_BUCKET


@pytest.fixture
def s3_url(s3_bucket) -> str:
    """A fresh ``s3://bucket/prefix`` for one test."""
    return f"s3://{s3_bucket}/t-{uuid.uuid4().hex[:12]}"


# --- a small real dataset, generated once per session --------------------------------------------

SMALL_OVERRIDES = {
    "grid": {"shape": [32, 32, 32]},
    "dataset": {
        "num_samples": 6,
        "shard_size": 2,
        "splits": {"train": 0.5, "val": 0.25, "test": 0.25},  # 3 / 2 / 1 samples
    },
}
SMALL_SEED = 7
#: The same dataset as flags of ``simaq generate --preset demo`` (keep in step with the above).
SMALL_ARGS = [
    "--set", "grid.shape=[32,32,32]", "--samples", "6", "--shard-size", "2",
    "--splits", "train=0.5,val=0.25,test=0.25", "--seed", str(SMALL_SEED),
]  # fmt: skip


@pytest.fixture(scope="session")
def small_config():
    """The demo preset on a 32³ grid: 6 samples, shards of 2, splits 3/2/1 (float16 + gzip)."""
    from factory.config import load_preset

    return load_preset("demo", SMALL_OVERRIDES)


@pytest.fixture(scope="session")
def small_dataset(tmp_path_factory, small_config):
    """A real dataset of :func:`small_config` (seed 7) by the local executor; do not modify it."""
    from factory.dataset.generate import generate_dataset

    out = tmp_path_factory.mktemp("small") / "ds"
    generate_dataset(small_config, str(out), seed=SMALL_SEED, executor="local")
    return out
