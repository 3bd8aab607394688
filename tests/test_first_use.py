"""A new user's first hour (issue 10): the README's commands from a relative working directory.

These drive ``simaq`` as a user does, in a subprocess with its own working directory and its own
private Ray, and check what the user sees: where files land, what the console shows, what is left
behind after a failure, and that no Ray process outlives a run.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
from typer.testing import CliRunner

REPO = Path(__file__).resolve().parents[1]
NOISE = ("Token authentication", "core_worker.cc", "PreemptionWatcher", "Traceback", "(pid=")


def simaq(*args: str, cwd: Path, timeout: float = 400, env: dict | None = None):
    """Run ``simaq ARGS`` as a user would (a fresh process in ``cwd``); return the result."""
    full_env = {**os.environ, **(env or {})}
    full_env.pop("RAY_ADDRESS", None)
    return subprocess.run(
        [sys.executable, str(REPO / "cli.py"), *args],
        cwd=cwd,
        capture_output=True,
        text=True,
        timeout=timeout,
        env=full_env,
    )


def ray_pids() -> set[int]:
    """Pids of Ray's own processes (raylet, GCS, workers) on this machine."""
    out = subprocess.run(["ps", "-eo", "pid=,args="], capture_output=True, text=True).stdout
    pids = set()
    for line in out.splitlines():
        pid, _, args = line.strip().partition(" ")
        if re.search(r"raylet|gcs_server|ray::|default_worker\.py|dashboard/agent", args):
            pids.add(int(pid))
    return pids


def wait_gone(pids: set[int], timeout: float = 30.0) -> set[int]:
    """The pids of ``pids`` still alive after ``timeout`` seconds."""
    deadline = time.monotonic() + timeout
    alive = set(pids)
    while alive and time.monotonic() < deadline:
        alive = {p for p in alive if Path(f"/proc/{p}").exists() and not _zombie(p)}
        time.sleep(0.5)
    return alive


def _zombie(pid: int) -> bool:
    try:
        return Path(f"/proc/{pid}/stat").read_text().split()[2] == "Z"
    except OSError:
        return True


@pytest.fixture(scope="module")
def workdir(tmp_path_factory, small_dataset) -> Path:
    """A user's working directory holding ``out/demo`` (a copy of the small dataset)."""
    cwd = tmp_path_factory.mktemp("user")
    shutil.copytree(small_dataset, cwd / "out" / "demo")
    return cwd


def test_train_with_relative_paths_writes_everything_into_the_run_dir(workdir):
    before = ray_pids()
    res = simaq(
        "train", "--data", "out/demo", "--out", "runs/r1", "--max-steps", "4",
        "--steps-per-epoch", "2", "--epochs", "2", "--set", "val_slices=4", "--set", "cpus_per_worker=0.5",
        cwd=workdir,
    )  # fmt: skip
    assert res.returncode == 0, res.stderr[-3000:]
    run = workdir / "runs" / "r1"
    for name in ("curve.png", "metrics.csv", "run.json"):
        assert (run / name).is_file(), name
    assert sorted(p.name for p in (run / "ray").glob("checkpoint_*"))
    # the CPU defaults: the small network, not the reference's 64 features
    arch = json.loads((run / "run.json").read_text())["arch"]
    assert (arch["features"], arch["depth"]) == (16, 3)
    # one quiet bar: whole step counts only, no Ray noise, the summary on its own line
    for word in NOISE:
        assert word not in res.stderr, word
    steps = re.findall(r"train:.*?\|\s*([\d.]+)/(\d+)", res.stderr)
    assert steps and all(float(n).is_integer() for n, _ in steps)
    assert "checkpoint" in res.stdout.splitlines()[-1]
    assert not wait_gone(ray_pids() - before), "Ray processes outlived the run"


def test_a_failed_training_run_leaves_nothing_and_says_one_line(workdir):
    broken = workdir / "out" / "broken"
    shutil.copytree(workdir / "out" / "demo", broken)
    next((broken / "shards").glob("train-*.tar")).unlink()
    res = simaq(
        "train", "--data", "out/broken", "--out", "runs/bad", "--max-steps", "2",
        "--steps-per-epoch", "2", "--epochs", "1", "--set", "cpus_per_worker=0.5", cwd=workdir,
    )  # fmt: skip
    assert res.returncode == 2, res.stderr[-3000:]
    lines = [ln for ln in res.stderr.replace("\r", "\n").splitlines() if ln.strip()]
    assert lines[-1].startswith("error: shard shards/train-") and "missing" in lines[-1]
    assert not any(w in res.stderr for w in NOISE)
    assert not (workdir / "runs" / "bad").exists()


def test_generate_prints_its_pool_line_above_the_bar_and_no_ray_noise(tmp_path):
    before = ray_pids()
    res = simaq(
        "generate", "--preset", "demo", "--samples", "2", "--shard-size", "1",
        "--set", "grid.shape=[24,24,24]", "--out", "rel/ds", cwd=tmp_path,
    )  # fmt: skip
    assert res.returncode == 0, res.stderr[-3000:]
    assert (tmp_path / "rel" / "ds" / "manifest.json").is_file()
    for word in NOISE:
        assert word not in res.stderr, word
    pieces = res.stderr.replace("\r", "\n").splitlines()
    pool = [p for p in pieces if "worker(s)" in p]
    assert pool and all(p.startswith("ray: ") for p in pool), pool
    assert not wait_gone(ray_pids() - before), "Ray processes outlived the run"


_STRANGER = """
import ray, signal, sys, time
ray.init(address="local", num_cpus=1, include_dashboard=False, logging_level="ERROR")
print(ray.get_runtime_context().gcs_address, flush=True)
signal.signal(signal.SIGTERM, lambda *a: sys.exit(0))
time.sleep(600)
"""

_OURS = """
import ray
from factory.cluster import start_ray
start_ray(None)
print(ray.get_runtime_context().gcs_address, flush=True)
ray.shutdown()
"""


def test_a_run_never_attaches_to_a_strangers_ray(tmp_path):
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    env.pop("RAY_ADDRESS", None)
    stranger = subprocess.Popen(
        [sys.executable, "-c", _STRANGER], stdout=subprocess.PIPE, text=True, env=env
    )
    try:
        theirs = stranger.stdout.readline().strip()
        assert theirs, "the stranger's Ray did not start"
        ours = subprocess.run(
            [sys.executable, "-c", _OURS], capture_output=True, text=True, env=env, timeout=180
        )
        assert ours.returncode == 0, ours.stderr[-2000:]
        assert ours.stdout.strip() and ours.stdout.strip() != theirs
        assert "Connecting to existing" not in ours.stderr
    finally:
        stranger.send_signal(signal.SIGTERM)
        stranger.wait(timeout=60)


def test_phantom_and_simulate_refuse_a_non_empty_out_unless_overwrite(tmp_path):
    from cli import app
    from factory.errors import UserError

    runner = CliRunner()
    out = tmp_path / "one"
    base = ["--preset", "demo", "--set", "grid.shape=[24,24,24]", "--out", str(out)]
    assert runner.invoke(app, ["phantom", *base]).exit_code == 0
    lac = (out / "lac.tif").read_bytes()
    for cmd in ("phantom", "simulate"):
        res = runner.invoke(app, [cmd, *base, "--seed", "5"])
        assert isinstance(res.exception, UserError)  # main() prints it as one line, exit 2
        assert "not empty" in str(res.exception) and "--overwrite" in str(res.exception)
    assert (out / "lac.tif").read_bytes() == lac  # nothing replaced
    res = runner.invoke(app, ["phantom", *base, "--seed", "5", "--overwrite"])
    assert res.exit_code == 0
    assert (out / "lac.tif").read_bytes() != lac


def test_the_simulate_montage_uses_the_one_named_palette(tmp_path):
    from matplotlib.colors import to_rgb
    from matplotlib.image import imread

    from cli import app
    from schemas.palette import CLASS_COLORS

    out = tmp_path / "sim"
    res = CliRunner().invoke(app, ["simulate", "--preset", "demo", "--out", str(out)])
    assert res.exit_code == 0, res.output
    rgb = (imread(out / "montage.png")[..., :3] * 255).round().astype(int).reshape(-1, 3)
    present = {tuple(c) for c in np.unique(rgb, axis=0)}
    for name in ("cytoplasm", "cell_wall", "nucleus"):
        want = tuple(int(round(v * 255)) for v in to_rgb(CLASS_COLORS[name]))
        assert want in present, name


def test_version_names_the_package_and_the_code_revision():
    from cli import app

    res = CliRunner().invoke(app, ["--version"])
    assert res.exit_code == 0
    assert re.match(
        r"simaq \S+ \(code revision [0-9a-f]{12}(-dirty)?\)|simaq \S+ \(code revision unknown\)",
        res.output,
    )


def test_every_declared_dependency_is_used():
    """A dependency nobody imports only slows and endangers the install (s3fs pinned botocore)."""
    import tomllib

    deps = tomllib.loads((REPO / "pyproject.toml").read_text())["project"]["dependencies"]
    imports = {"pyyaml": "yaml", "xraylib": "xraylib"}
    sources = (
        "\n".join(
            p.read_text(encoding="utf-8")
            for d in ("factory", "models", "schemas")
            for p in (REPO / d).rglob("*.py")
        )
        + (REPO / "cli.py").read_text()
    )
    for dep in deps:
        name = re.split(r"[\[<>=!~; ]", dep, maxsplit=1)[0].lower()
        module = imports.get(name, name.replace("-", "_"))
        assert re.search(rf"^\s*(import|from) {module}\b", sources, re.M), name
