"""Fault injection in the data factory, with real processes and a real local Ray: a Ray worker
(actor) SIGKILLed in the middle of a shard, the ``simaq generate`` driver SIGKILLed at several
random points, and a load test of memory and throughput over a run.

Only processes this test started are killed: Ray workers are found among the descendants of this
test process (their process title is ``ray::_ShardActor...``), never by name alone.

The random kill points derive from ``$SIMAQ_FAULT_SEED`` (default fixed), printed on failure.
"""

from __future__ import annotations

import hashlib
import json
import os
import random
import signal
import subprocess
import threading
import time
from pathlib import Path

import pytest
from _cli import cli_argv
from conftest import SMALL_SEED

from factory.dataset.generate import generate_dataset
from factory.dataset.manifest import iter_samples, read_manifest
from factory.dataset.tools import verify_dataset

SEED = int(os.environ.get("SIMAQ_FAULT_SEED", "20260"))


# --- processes ------------------------------------------------------------------------------------


def _proc_table() -> dict[int, tuple[int, str]]:
    """pid -> (parent pid, command line) of every process we can read."""
    out = {}
    for entry in os.scandir("/proc"):
        if not entry.name.isdigit():
            continue
        try:
            stat = Path(entry.path, "stat").read_text()
            cmd = Path(entry.path, "cmdline").read_bytes().replace(b"\0", b" ").decode()
        except OSError:
            continue
        out[int(entry.name)] = (int(stat.rsplit(")", 1)[1].split()[1]), cmd.strip())
    return out


def descendants(prefix: str, root: int | None = None) -> list[int]:
    """Pids of the processes below ``root`` (default: this process) whose command line starts
    with ``prefix`` (Ray workers set it to ``ray::ClassName.method``)."""
    root = os.getpid() if root is None else root
    table = _proc_table()
    found = []
    for pid, (_, cmd) in table.items():
        if not cmd.startswith(prefix):
            continue
        p = pid
        while p > 1 and p in table:
            p = table[p][0]
            if p == root:
                found.append(pid)
                break
    return sorted(found)


def proc_memory(pid: int) -> tuple[int, int]:
    """(current RSS, peak RSS) of ``pid`` in bytes (``VmRSS``, ``VmHWM``), (0, 0) if gone."""
    try:
        text = Path(f"/proc/{pid}/status").read_text()
    except OSError:
        return 0, 0
    vals = {}
    for line in text.splitlines():
        if line.startswith(("VmRSS:", "VmHWM:")):
            key, value = line.split(":", 1)
            vals[key] = int(value.split()[0]) * 1024
    return vals.get("VmRSS", 0), vals.get("VmHWM", 0)


def _keys(ds: Path | str, m) -> list[str]:
    return [s["__key__"] for rec in m.shards for s in iter_samples(str(ds), rec)]


# --- worker killed --------------------------------------------------------------------------------


def test_a_ray_worker_killed_mid_shard_loses_and_duplicates_nothing(
    ray_session, small_config, small_dataset, tmp_path
):
    """SIGKILL one ``_ShardActor`` while it writes a shard: Ray restarts it and retries the shard;
    the dataset is complete, exact (content hash of the undisturbed run) and verifies."""
    out = tmp_path / "ds"
    killed: list[int] = []
    seen: set[int] = set()
    landed: dict = {}
    stop = threading.Event()

    def killer() -> None:
        while not stop.is_set():
            actors = descendants("ray::_ShardActor")
            seen.update(actors)
            tmp = out / "_tmp"
            parts = [p for p in tmp.glob("*.tar.*.part")] if tmp.is_dir() else []
            if not killed and actors and parts:
                recs = out / "_records"
                landed["records"] = len(list(recs.glob("*-*.json"))) if recs.is_dir() else 0
                victim = random.Random(SEED).choice(actors)
                os.kill(victim, signal.SIGKILL)
                killed.append(victim)
            time.sleep(0.005)

    t = threading.Thread(target=killer, daemon=True)
    t.start()
    try:
        m = generate_dataset(small_config, str(out), seed=SMALL_SEED, executor="ray", workers=2)
    finally:
        stop.set()
        t.join(5)
    assert killed, "no actor was killed (the run ended before a shard was in progress)"
    assert landed["records"] < len(m.shards), "the kill landed after every shard was done"
    assert len(seen) > 2, "the killed actor was not restarted"
    ref = read_manifest(str(small_dataset))
    assert m.content_sha256 == ref.content_sha256
    assert m.num_samples == 6 and m.shards == ref.shards
    assert verify_dataset(str(out)) == []
    keys = _keys(out, m)
    assert keys == [f"{i:09d}" for i in range(6)]  # none lost, none twice
    assert not (out / "_tmp").exists() and not (out / "_records").exists()


@pytest.mark.slow
@pytest.mark.parametrize("head_cpus", [2, 1], ids=["spare-cpu", "pool-shrinks"])
def test_a_node_lost_mid_run_is_replaced_and_nothing_is_lost(tmp_path, head_cpus):
    """A two-node ``ray.cluster_utils.Cluster`` (head ``head_cpus`` CPUs, worker node 1 CPU); the
    worker node is removed (its raylet and workers killed) after a few shards. The shards queued
    on the actor of the dead node go back to the queue at once (the survivor builds them; a loaded
    machine takes a minute to restart an actor). With a spare CPU the actor and the progress
    reporter of the dead node restart on the head; without one, the actor cannot be placed, so it
    is retired. Either way the dataset is exact.  About 20 s each."""
    from ray.cluster_utils import Cluster

    from factory.config import load_preset

    n = 12
    out = tmp_path / "ds"
    cluster = Cluster(
        initialize_head=True,
        head_node_args={"num_cpus": head_cpus, "include_dashboard": False},
    )
    try:
        node = cluster.add_node(num_cpus=1)
        cluster.wait_for_nodes()
        args = cli_argv("generate", "--preset", "demo", "--set", "grid.shape=[32,32,32]",
                    "--samples", str(n), "--shard-size", "1", "--out", str(out),
                    "--address", cluster.address, "--workers", "2")  # fmt: skip
        proc = subprocess.Popen(args, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        records = out / "_records"
        try:
            _wait_for(proc, lambda: records.is_dir() and len(list(records.glob("*-*.json"))) >= 3)
            assert proc.poll() is None, "generate ended before the node could be removed"
            done_at_loss = len(list(records.glob("*-*.json")))
            cluster.remove_node(node)
            stdout, stderr = proc.communicate(timeout=240)
        finally:
            if proc.poll() is None:
                proc.kill()
                proc.wait(30)
    finally:
        cluster.shutdown()
    assert proc.returncode == 0, stderr[-3000:]
    assert done_at_loss < n
    cfg = load_preset(
        "demo", {"grid": {"shape": [32, 32, 32]}, "dataset": {"num_samples": n, "shard_size": 1}}
    )
    ref = generate_dataset(cfg, str(tmp_path / "ref"), executor="local")
    m = read_manifest(str(out))
    assert m.content_sha256 == ref.content_sha256
    assert verify_dataset(str(out)) == []
    assert _keys(out, m) == [f"{i:09d}" for i in range(n)]


# --- driver killed at random points ---------------------------------------------------------------


N_KILL = 6  # samples, shards of one: the kill points fall between and inside shards
KILL_ARGS = ["--preset", "demo", "--set", "grid.shape=[32,32,32]", "--samples", str(N_KILL),
             "--shard-size", "1", "--seed", str(SMALL_SEED), "--executor", "local"]  # fmt: skip


class ManifestReader:
    """A reader polling the dataset root: whenever ``manifest.json`` exists it must parse and
    every shard it lists must exist, complete (size and sha256)."""

    def __init__(self, root: Path):
        self.root = root
        self.seen = 0
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
        path = self.root / "manifest.json"
        while not self._stop.is_set():
            try:
                raw = path.read_bytes()
            except OSError:
                time.sleep(0.002)
                continue
            self.seen += 1
            try:
                m = json.loads(raw)
            except ValueError:
                self.bad.append("manifest.json is not complete JSON")
                continue
            for s in m["shards"]:
                p = self.root / s["url"]
                try:
                    data = p.read_bytes()
                except OSError:
                    self.bad.append(f"{s['url']} listed but missing")
                    continue
                if len(data) != s["bytes"] or hashlib.sha256(data).hexdigest() != s["sha256"]:
                    self.bad.append(f"{s['url']} listed but incomplete")
            time.sleep(0.01)


def _wait_for(proc: subprocess.Popen, cond, timeout: float = 180) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline and proc.poll() is None:
        if cond():
            return True
        time.sleep(0.003)
    return False


def test_the_driver_killed_at_random_points_resumes_to_the_same_hash(tmp_path, capsys):
    """Kill ``simaq generate`` (SIGKILL) at several random points: before the first shard, inside
    a shard, between shards, while the index/card/manifest are written; each time ``--resume``
    carries on, and the finished dataset has the content hash of an undisturbed run."""
    from factory.config import load_preset

    rng = random.Random(SEED)
    out = tmp_path / "ds"
    records = out / "_records"

    def n_records() -> int:
        return len(list(records.glob("*-*.json"))) if records.is_dir() else 0

    points = {
        "plan written": lambda: (records / "_plan.json").is_file(),
        "inside a shard": lambda: (
            any((out / "_tmp").glob("*.tar.*.part")) if (out / "_tmp").is_dir() else False
        ),
        "between shards": None,  # k committed records, k drawn at random
        "finalizing": lambda: n_records() == N_KILL,
    }
    order = ["plan written", "inside a shard", "between shards", "finalizing"]
    rng.shuffle(order)
    log = []
    with ManifestReader(out) as reader:
        for i, point in enumerate(order):
            if (out / "manifest.json").exists():
                break
            cond = points[point]
            if cond is None:
                k = min(N_KILL - 1, n_records() + rng.randint(1, 2))
                cond = lambda k=k: n_records() >= k  # noqa: E731
            args = cli_argv("generate", *KILL_ARGS, "--out", str(out), *(["--resume"] if i else []))
            proc = subprocess.Popen(args, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
            try:
                hit = _wait_for(proc, cond)
                time.sleep(rng.uniform(0, 0.05))
                if proc.poll() is None:
                    os.kill(proc.pid, signal.SIGKILL)
                    proc.wait(30)
                    log.append((point, hit, n_records()))
            finally:
                if proc.poll() is None:
                    proc.kill()
                    proc.wait(30)
            assert proc.returncode in (0, -signal.SIGKILL), proc.stderr.read()[-2000:]
        res = subprocess.run(
            cli_argv("generate", *KILL_ARGS, "--out", str(out), "--resume"),
            capture_output=True, text=True, timeout=300,
        )  # fmt: skip
    assert res.returncode == 0, res.stderr[-2000:]
    with capsys.disabled():
        print(
            f"\ndriver kills (seed {SEED}): "
            + ", ".join(f"{p} ({k} shards done)" for p, _, k in log)
        )
    assert len(log) >= 3, f"only {len(log)} kills landed (seed {SEED}): {log}"
    assert not reader.bad, reader.bad
    assert reader.seen >= 1  # the reader saw the final manifest
    cfg = load_preset(
        "demo",
        {"grid": {"shape": [32, 32, 32]}, "dataset": {"num_samples": N_KILL, "shard_size": 1}},
    )
    ref = generate_dataset(cfg, str(tmp_path / "ref"), seed=SMALL_SEED, executor="local")
    m = read_manifest(str(out))
    assert m.content_sha256 == ref.content_sha256, f"seed {SEED}, kills {log}"
    assert verify_dataset(str(out)) == []
    assert _keys(out, m) == [f"{i:09d}" for i in range(N_KILL)]
    assert not (out / "_tmp").exists() and not (out / "_records").exists(), log


def test_a_kill_after_the_manifest_leaves_nothing_after_resume(
    small_config, small_dataset, tmp_path
):
    """The narrowest kill window: manifest written, ``_records/`` and ``_tmp/`` not yet removed.
    ``--resume`` finds the complete dataset, changes none of it, and removes the leftovers."""
    import shutil

    out = tmp_path / "ds"
    shutil.copytree(small_dataset, out)
    before = {p: p.read_bytes() for p in out.rglob("*") if p.is_file()}
    (out / "_records").mkdir()
    (out / "_records" / "train-000000.json").write_text("{}")
    (out / "_tmp").mkdir()
    (out / "_tmp" / "index.parquet.0123.part").write_bytes(b"half")
    m = generate_dataset(small_config, str(out), seed=SMALL_SEED, executor="local", resume=True)
    assert m == read_manifest(str(small_dataset))
    assert {p: p.read_bytes() for p in out.rglob("*") if p.is_file()} == before


# --- load -----------------------------------------------------------------------------------------


def _load_run(tmp_path: Path, side: int, n: int, workers: int) -> dict:
    """Generate ``n`` samples of ``side``³ with ``workers`` Ray actors; sample each actor's RSS
    and the commit time of every shard."""
    from factory.config import load_preset

    cfg = load_preset(
        "demo",
        {
            "grid": {"shape": [side] * 3},
            "dataset": {"num_samples": n, "shard_size": 2, "splits": {"train": 1.0}},
        },
    )
    out = tmp_path / f"load-{side}"
    rss: dict[int, list[tuple[int, int, int]]] = {}  # pid -> [(records done, rss, hwm)]
    commits: dict[str, float] = {}
    stop = threading.Event()

    def watch() -> None:
        while not stop.is_set():
            recs = out / "_records"
            done = [p.name for p in recs.glob("*-*.json")] if recs.is_dir() else []
            now = time.monotonic()
            for name in done:
                commits.setdefault(name, now)
            for pid in descendants("ray::_ShardActor"):
                cur, hwm = proc_memory(pid)
                if cur:
                    rss.setdefault(pid, []).append((len(done), cur, hwm))
            time.sleep(0.02)

    t = threading.Thread(target=watch, daemon=True)
    t.start()
    t0 = time.monotonic()
    try:
        m = generate_dataset(cfg, str(out), seed=1, executor="ray", workers=workers)
    finally:
        stop.set()
        t.join(5)
    wall = time.monotonic() - t0
    sample_bytes = 0
    for rec in m.fields.values():
        if rec.shape_max is not None:
            n_el = 1
            for d in rec.shape_max:
                n_el *= d
            sample_bytes += n_el * 4  # float32 in memory
    return {"manifest": m, "rss": rss, "commits": sorted(commits.values()), "wall": wall,
            "sample_bytes": sample_bytes, "out": out}  # fmt: skip


def test_load_memory_stays_bounded_and_throughput_does_not_decay(ray_session, tmp_path, capsys):
    """Two Ray workers generate 24 samples (12 shards; ``$SIMAQ_LOAD_SAMPLES``): each worker's RSS after the last shard is
    within a small margin of its RSS after its first shard (no growth with the number of samples).
    Prints peak RSS per worker against the in-memory size of one sample, and the shard rate of
    each half of the run: printed, not asserted (wall-clock rates on a shared 2-core machine are
    the load's; ``bench/soak.py`` measures decay over a long run)."""
    n = int(os.environ.get("SIMAQ_LOAD_SAMPLES", "24"))  # bench/soak.py runs it longer
    side = int(os.environ.get("SIMAQ_LOAD_SIDE", "32"))
    workers = 2
    r = _load_run(tmp_path, side, n, workers)
    m = r["manifest"]
    assert m.num_samples == n and verify_dataset(str(r["out"])) == []
    assert len(r["rss"]) == workers, r["rss"].keys()
    lines = []
    for pid, trace in r["rss"].items():
        early = [cur for done, cur, _ in trace if done >= 2]  # after the first shards
        assert early, f"worker {pid}: no sample after the first shards"
        first, last = early[0], max(cur for _, cur, _ in trace[-5:])
        peak = max(h for _, _, h in trace)
        lines.append(
            f"worker {pid}: peak RSS {peak / 2**20:.0f} MiB, after first shards "
            f"{first / 2**20:.0f} MiB, at the end {last / 2**20:.0f} MiB; one sample "
            f"{r['sample_bytes'] / 2**20:.2f} MiB in float32"
        )
        # bounded: at most 64 MiB or 10 % above the level reached after the first shards
        assert last <= first * 1.10 + (64 << 20), lines[-1]
    c = r["commits"]
    assert len(c) == -(-n // 2)
    half = len(c) // 2
    rate1 = (half - 1) / max(c[half - 1] - c[0], 1e-3)
    rate2 = (len(c) - half) / max(c[-1] - c[half - 1], 1e-3)
    lines.append(
        f"throughput: first half {2 * rate1:.2f} samples/s, second half {2 * rate2:.2f} samples/s "
        f"(ratio {rate2 / rate1:.2f}); {n} samples in {r['wall']:.1f} s with {workers} workers"
    )
    with capsys.disabled():
        print("\n" + "\n".join(lines))
