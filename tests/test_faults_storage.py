"""Fault injection on object storage: the loopback S3 endpoint goes away in the middle of
``simaq generate --out s3://...`` and of ``simaq publish``, then comes back.

The endpoint the commands talk to is a real TCP proxy on loopback in front of a real moto server
(:class:`CutProxy`): it forwards bytes unchanged, and "stops" (closes its listening socket and
resets every open connection) once the clients have uploaded a chosen number of bytes, which lands
the outage at a reproducible point in the middle of the shard uploads. moto keeps its objects
while the proxy is down, like a real store whose endpoint is unreachable for a while. A watcher
reads the destination through moto directly (not through the proxy) the whole time and checks
that no ``manifest.json`` ever lists a shard that is missing or incomplete.

The proxy also sees every request's ``Authorization`` header, which shows which access key the
client signed with: credentials come from the environment or the AWS config files, never from a
manifest, and never appear in output or written files.
"""

from __future__ import annotations

import json
import os
import random
import re
import socket
import subprocess
import threading
import time
from pathlib import Path

import pytest
from _cli import cli_argv, run
from conftest import SMALL_SEED, TEST_BUCKET

from factory.dataset.manifest import read_manifest
from factory.dataset.storage import Store

SEED = int(os.environ.get("SIMAQ_FAULT_SEED", "20260"))  # the cut points are drawn from it


class CutProxy:
    """A loopback TCP proxy to ``upstream`` that can be stopped, cut after N uploaded bytes, and
    restarted on the same port; it records the access key ids of the requests it forwards."""

    _CRED = re.compile(rb"Credential=([A-Za-z0-9_\-]+)/")

    def __init__(self, upstream: tuple[str, int]):
        self.upstream = upstream
        self.port = 0
        self.uploaded = 0
        self.cut_after: int | None = None
        self.cut_after_was: int | None = None
        self.key_ids: set[str] = set()
        self.stops = 0
        self._lock = threading.Lock()
        self._conns: list[socket.socket] = []
        self._listener: socket.socket | None = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def start(self) -> None:
        srv = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        srv.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        srv.bind(("127.0.0.1", self.port))
        srv.listen(64)
        self.port = srv.getsockname()[1]
        self._listener = srv
        threading.Thread(target=self._accept, args=(srv,), daemon=True).start()

    def stop(self) -> None:
        """The endpoint goes away: no new connections, open ones are reset."""
        with self._lock:
            srv, self._listener = self._listener, None
            conns, self._conns = self._conns, []
            if srv is not None:
                self.stops += 1
        if srv is not None:
            try:
                srv.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass
            srv.close()
        for c in conns:
            try:
                c.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, b"\1\0\0\0\0\0\0\0")  # RST
                # close() alone releases nothing while a pump thread is blocked in recv() on the
                # socket: the client would wait out its request timeout (60 s) on a connection
                # that looks alive; shutdown() wakes that recv, as a server going away would
                c.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass
            c.close()

    @property
    def running(self) -> bool:
        return self._listener is not None

    def _accept(self, srv: socket.socket) -> None:
        while True:
            try:
                client, _ = srv.accept()
            except OSError:
                return
            try:
                up = socket.create_connection(self.upstream, timeout=10)
            except OSError:
                client.close()
                continue
            with self._lock:
                if self._listener is not srv:
                    client.close()
                    up.close()
                    return
                self._conns += [client, up]
            threading.Thread(target=self._pump, args=(client, up, True), daemon=True).start()
            threading.Thread(target=self._pump, args=(up, client, False), daemon=True).start()

    def _pump(self, src: socket.socket, dst: socket.socket, upload: bool) -> None:
        try:
            while data := src.recv(65536):
                if upload:
                    for m in self._CRED.finditer(data):
                        self.key_ids.add(m.group(1).decode())
                    with self._lock:
                        self.uploaded += len(data)
                        cut = self.cut_after is not None and self.uploaded >= self.cut_after
                    if cut:
                        self.cut_after_was, self.cut_after = self.cut_after, None
                        self.stop()
                        return
                dst.sendall(data)
        except OSError:
            pass
        finally:
            for s in (src, dst):
                try:
                    s.shutdown(socket.SHUT_RDWR)
                except OSError:
                    pass


@pytest.fixture
def proxy(s3_endpoint, s3_bucket):
    host, port = s3_endpoint.removeprefix("http://").split(":")
    p = CutProxy((host, int(port)))
    p.start()
    yield p
    p.stop()


class ManifestWatcher:
    """Polls ``prefix`` on the store (through moto, not the proxy): whenever a manifest exists,
    every shard it lists must exist with the size the manifest gives."""

    def __init__(self, endpoint: str, prefix: str):
        import boto3

        self.s3 = boto3.client("s3", endpoint_url=endpoint, region_name="us-east-1")
        self.prefix = prefix
        self.checks = 0
        self.bad: list[str] = []
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def __enter__(self):
        self._thread.start()
        return self

    def __exit__(self, *exc):
        self._stop.set()
        self._thread.join(10)

    def _run(self) -> None:
        while not self._stop.is_set():
            try:
                listing = self.s3.list_objects_v2(Bucket=TEST_BUCKET, Prefix=self.prefix)
            except Exception:  # noqa: BLE001 - moto busy; try again
                continue
            sizes = {o["Key"]: o["Size"] for o in listing.get("Contents", [])}
            for key in sizes:
                if not key.endswith("/manifest.json"):
                    continue
                root = key.removesuffix("manifest.json")
                body = self.s3.get_object(Bucket=TEST_BUCKET, Key=key)["Body"].read()
                m = json.loads(body)
                self.checks += 1
                for s in m["shards"]:
                    if sizes.get(root + s["url"]) != s["bytes"]:
                        self.bad.append(f"{key} lists {s['url']} before it is complete")
            time.sleep(0.02)


def _one_error_line(err: str) -> str:
    lines = [ln for ln in err.splitlines() if ln.startswith("error:")]
    assert len(lines) == 1 and "Traceback" not in err, err
    return lines[0]


GEN_ARGS = [
    "--preset", "demo", "--set", "grid.shape=[32,32,32]", "--samples", "6", "--shard-size", "1",
    "--splits", "train=0.5,val=0.25,test=0.25", "--seed", str(SMALL_SEED),
]  # fmt: skip


def _reference(tmp_path_factory) -> tuple[str, int]:
    """(content_sha256, shard bytes) of the undisturbed run of GEN_ARGS (local disk, local)."""
    from factory.config import load_preset
    from factory.dataset.generate import generate_dataset

    cfg = load_preset(
        "demo",
        {
            "grid": {"shape": [32, 32, 32]},
            "dataset": {
                "num_samples": 6,
                "shard_size": 1,
                "splits": {"train": 0.5, "val": 0.25, "test": 0.25},
            },
        },
    )
    out = tmp_path_factory.mktemp("ref") / "ds"
    m = generate_dataset(cfg, str(out), seed=SMALL_SEED, executor="local")
    return m.content_sha256, m.total_bytes


@pytest.fixture(scope="module")
def reference(tmp_path_factory) -> tuple[str, int]:
    return _reference(tmp_path_factory)


@pytest.mark.parametrize("executor", ["local", "ray"])
def test_endpoint_lost_during_generate_then_resume(
    monkeypatch, capsys, proxy, s3_endpoint, s3_url, reference, executor, request
):
    """The endpoint disappears after a random share of the upload; the command fails within a
    bound with one clear line, no manifest appears, and ``--resume`` finishes the dataset."""
    if executor == "ray":
        request.getfixturevalue("ray_session")
    rng = random.Random(f"{SEED}-{executor}")
    ref_hash, total = reference
    # cut after a random 30..80 % of the shard bytes: some shards are committed, some are not
    proxy.cut_after = rng.randint(total * 3 // 10, total * 8 // 10)
    prefix = s3_url.split("/", 3)[3] + "/"
    args = [*GEN_ARGS, "--out", s3_url, "--endpoint-url", proxy.url, "--executor", executor]
    with ManifestWatcher(s3_endpoint, prefix) as watch:
        t0 = time.monotonic()
        code, _, err = run(monkeypatch, capsys, "generate", *args)
        failed_in = time.monotonic() - t0
        assert proxy.stops == 1, "the outage was not injected (upload smaller than the cut?)"
        assert code == 2, err
        line = _one_error_line(err)
        assert s3_url in line and "--resume" in line, line
        assert failed_in < 90, f"took {failed_in:.0f} s to give up"
        with capsys.disabled():
            print(f"\n{executor}: endpoint cut after {proxy.cut_after_was} of ~{total} shard bytes; "
                  f"generate gave up after {failed_in:.1f} s")  # fmt: skip
        # still down: a rerun fails the same way, at once, and writes nothing
        code, _, err = run(monkeypatch, capsys, "generate", *args, "--resume")
        assert code == 2 and s3_url in _one_error_line(err)
        proxy.start()  # the endpoint is back
        code, stdout, err = run(monkeypatch, capsys, "generate", *args, "--resume")
        assert code == 0, err
        assert "resuming: " in err
    assert not watch.bad, watch.bad
    assert watch.checks >= 1  # the watcher saw the final manifest
    m = read_manifest(Store(s3_url, s3_endpoint))
    assert m.content_sha256 == ref_hash and m.num_samples == 6
    code, stdout, _ = run(monkeypatch, capsys, "verify", s3_url, "--endpoint-url", s3_endpoint)
    assert code == 0 and "ok: 6 shards, 6 samples" in stdout
    keys = [
        o["Key"] for o in watch.s3.list_objects_v2(Bucket=TEST_BUCKET, Prefix=prefix)["Contents"]
    ]
    assert not [k for k in keys if "/_tmp/" in k or "/_records/" in k]
    if executor == "ray":  # the workers' logs hold no secret either
        import ray

        logs = Path(ray._private.worker._global_node.get_session_dir_path()) / "logs"
        secret = os.environ["AWS_SECRET_ACCESS_KEY"].encode()
        files = [p for p in logs.rglob("*") if p.is_file()]
        assert files and not [p for p in files if secret in p.read_bytes()]


def test_endpoint_lost_during_publish_then_rerun(
    monkeypatch, capsys, proxy, s3_endpoint, s3_url, small_dataset
):
    """publish: cut mid-copy (twice, at random points), clear error, no manifest at the
    destination until a rerun has copied and verified everything."""
    rng = random.Random(f"{SEED}-publish")
    total = sum(p.stat().st_size for p in (small_dataset / "shards").iterdir())
    dest = f"{s3_url}/demo/1.0.0"
    prefix = dest.split("/", 3)[3] + "/"
    with ManifestWatcher(s3_endpoint, prefix) as watch:
        for attempt in range(2):
            proxy.cut_after = proxy.uploaded + rng.randint(total // 10, total * 8 // 10)
            if not proxy.running:
                proxy.start()
            code, _, err = run(
                monkeypatch, capsys, "publish", str(small_dataset), s3_url,
                "--endpoint-url", proxy.url,
            )  # fmt: skip
            assert proxy.stops == attempt + 1
            assert code == 2, err
            line = _one_error_line(err)
            assert "publish" in line and "run it again" in line, line
            listing = watch.s3.list_objects_v2(Bucket=TEST_BUCKET, Prefix=prefix)
            names = [o["Key"] for o in listing.get("Contents", [])]
            assert not [k for k in names if k.endswith("manifest.json")], names
        proxy.start()
        code, stdout, err = run(
            monkeypatch, capsys, "publish", str(small_dataset), s3_url, "--endpoint-url", proxy.url
        )
        assert code == 0, err
    assert not watch.bad, watch.bad
    assert read_manifest(Store(dest, s3_endpoint)) == read_manifest(str(small_dataset))
    code, stdout, _ = run(monkeypatch, capsys, "verify", dest, "--endpoint-url", s3_endpoint)
    assert code == 0 and "ok: 4 shards" in stdout


# --- credentials ----------------------------------------------------------------------------------


def _subprocess_env(**extra: str) -> dict:
    env = {k: v for k, v in os.environ.items() if not k.startswith("AWS_")}
    env.update({"AWS_DEFAULT_REGION": "us-east-1", "AWS_EC2_METADATA_DISABLED": "true"})
    env.update(extra)
    return env


def test_credentials_come_from_env_or_config_files_never_the_manifest(
    proxy, s3_endpoint, s3_url, small_dataset, tmp_path
):
    """A manifest carrying keys, an endpoint and credentialed shard urls: the client signs with
    the environment's key (or the AWS credentials file's), never the manifest's; no secret is
    printed or written anywhere."""
    env_key, env_secret = "AKIAENVIRONMENT0001", "env-secret-7f3a9c"
    file_key, file_secret = "AKIACONFIGFILE00002", "file-secret-51d2e8"
    evil_key, evil_secret = "AKIAFROMMANIFEST003", "manifest-secret-0b6c"
    # a published copy whose manifest also carries credentials and an endpoint
    store = Store(s3_url, s3_endpoint)
    fs, root = store.fs, store.path
    m = json.loads((small_dataset / "manifest.json").read_text())
    m.update(
        {
            "credentials": {"aws_access_key_id": evil_key, "aws_secret_access_key": evil_secret},
            "storage_options": {"key": evil_key, "secret": evil_secret},
            "endpoint_url": f"http://{evil_key}:{evil_secret}@127.0.0.1:1",
        }
    )
    for p in sorted(small_dataset.rglob("*")):
        if p.is_file():
            data = json.dumps(m).encode() if p.name == "manifest.json" else p.read_bytes()
            with fs.open_output_stream(f"{root}/{p.relative_to(small_dataset).as_posix()}") as fh:
                fh.write(data)

    creds = tmp_path / "aws-credentials"
    creds.write_text(
        f"[default]\naws_access_key_id = {file_key}\naws_secret_access_key = {file_secret}\n"
    )
    runs = {
        "env": _subprocess_env(AWS_ACCESS_KEY_ID=env_key, AWS_SECRET_ACCESS_KEY=env_secret),
        "file": _subprocess_env(AWS_SHARED_CREDENTIALS_FILE=str(creds)),
    }
    outputs = []
    for how, env in runs.items():
        proxy.key_ids.clear()
        res = subprocess.run(
            cli_argv("verify", s3_url, "--endpoint-url", proxy.url),
            env=env, capture_output=True, text=True, timeout=120,
        )  # fmt: skip
        assert res.returncode == 0, res.stderr[-2000:]
        assert proxy.key_ids == ({env_key} if how == "env" else {file_key}), proxy.key_ids
        outputs.append(res.stdout + res.stderr)
        # a bad endpoint with credentials in it: refused, and the secret is not echoed
        res = subprocess.run(
            cli_argv("inspect", s3_url, "--endpoint-url", f"http://{env_key}:{env_secret}@{proxy.url[7:]}"),
            env=env, capture_output=True, text=True, timeout=120,
        )  # fmt: skip
        assert res.returncode == 2 and "credentials" in res.stderr
        outputs.append(res.stdout + res.stderr)
    # generate + publish with the environment's key: nothing printed or written holds a secret
    out = tmp_path / "gen"
    res = subprocess.run(
        cli_argv("generate", *GEN_ARGS[:6], "--samples", "2", "--executor", "local", "--out", str(out)),
        env=runs["env"], capture_output=True, text=True, timeout=300,
    )  # fmt: skip
    assert res.returncode == 0, res.stderr[-2000:]
    outputs.append(res.stdout + res.stderr)
    res = subprocess.run(
        cli_argv("publish", str(out), f"{s3_url}-pub", "--endpoint-url", proxy.url),
        env=runs["env"], capture_output=True, text=True, timeout=120,
    )  # fmt: skip
    assert res.returncode == 0, res.stderr[-2000:]
    outputs.append(res.stdout + res.stderr)
    written = b"".join(p.read_bytes() for p in out.rglob("*") if p.is_file())
    for secret in (env_secret, file_secret, evil_secret, env_key, file_key, evil_key):
        assert all(secret not in o for o in outputs), secret
        assert secret.encode() not in written
    assert evil_key not in proxy.key_ids
