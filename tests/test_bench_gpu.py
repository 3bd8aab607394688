"""bench/gpu.py: the one-command GPU check, exercised where there is no GPU.

Without CUDA it must say so in one line, exit 0 at once and write a JSON that says so; with
``--cpu-dry-run`` its parts run on the CPU at tiny sizes, so that an error in them shows up here
and not in the few minutes of a GPU machine. The last test hides the packages the GPU machine
lacks (Ray, pydantic, xraylib, webdataset, mrcfile, pyyaml) to run the fallbacks it would take.
"""

from __future__ import annotations

import json
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch

ROOT = Path(__file__).resolve().parents[1]
SCRIPT = ROOT / "bench" / "gpu.py"
GPU_MACHINE_LACKS = ("ray", "pydantic", "xraylib", "webdataset", "mrcfile", "yaml")


def _run(args: list[str], timeout: float, *, hide: tuple[str, ...] = ()):
    if hide:  # a module set to None in sys.modules is "not installed" for import and find_spec
        code = (
            "import sys, runpy\n"
            f"for m in {hide!r}: sys.modules[m] = None\n"
            f"sys.argv = [{str(SCRIPT)!r}, *{args!r}]\n"
            f"runpy.run_path({str(SCRIPT)!r}, run_name='__main__')\n"
        )
        cmd = [sys.executable, "-c", code]
    else:
        cmd = [sys.executable, str(SCRIPT), *args]
    t = time.perf_counter()
    proc = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True, timeout=timeout)
    return proc, time.perf_counter() - t


@pytest.mark.skipif(torch.cuda.is_available(), reason="this machine has CUDA: the real check runs")
def test_without_cuda_one_line_exit_0_and_json(tmp_path):
    proc, sec = _run(["--out", str(tmp_path)], timeout=60)
    assert proc.returncode == 0, proc.stderr
    lines = proc.stdout.splitlines()
    assert len(lines) == 1 and "no CUDA device" in lines[0], proc.stdout
    assert sec < 30
    doc = json.loads((tmp_path / "gpu.json").read_text())
    assert doc["cuda"] is False and doc["reason"] == "no CUDA device" and doc["parts"] is None


def _check_parts(out: Path, expect: dict[str, str]) -> dict:
    doc = json.loads((out / "gpu.json").read_text())
    assert doc["cpu_dry_run"] is True
    got = {k: p["status"] for k, p in doc["parts"].items()}
    assert got == expect, {k: p.get("message") for k, p in doc["parts"].items()}
    md = (out / "gpu.md").read_text()
    assert "| part | what | status | seconds | result |" in md
    assert all(f"| {k} |" in md for k in expect)
    return doc


def test_cpu_dry_run_exercises_the_parts(tmp_path):
    proc, sec = _run(["--out", str(tmp_path), "--cpu-dry-run"], timeout=180)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    # ~25 s on the idle 2-core machine; the bound leaves room for a machine shared with other jobs
    assert sec < 120, f"dry run took {sec:.0f} s"
    status = {"a": "ok", "b": "ok", "c": "skipped", "d": "ok", "e": "ok", "f": "skipped"}
    doc = _check_parts(tmp_path, status)
    parts = doc["parts"]
    assert "3 skipped" in parts["a"]["result"]["summary"] or parts["a"]["result"]["returncode"] == 0
    b = parts["b"]["result"]
    assert all(b[k]["max_rel_err"] < 1e-6 for k in ("forward", "adjoint", "fbp"))
    d = parts["d"]["result"]
    assert d["mode"].startswith("full") and d["grid"] == [64, 64, 64]
    assert set(d["median"]) >= {"phantom", "acquisition", "reconstruction", "total"}
    assert d["fallback"]["mode"].startswith("fallback")
    e = parts["e"]["result"]
    assert e["fp32"]["steps_per_s"] > 0 and e["amp"]["steps_per_s"] > 0
    assert "torch-radon not importable" in parts["c"]["message"]


def test_cpu_dry_run_as_on_the_gpu_machine(tmp_path):
    """Without the packages the GPU machine lacks: d falls back (YAML read by regex), f skips."""
    args = ["--out", str(tmp_path), "--cpu-dry-run", "--parts", "bdef"]
    proc, _ = _run(args, timeout=180, hide=GPU_MACHINE_LACKS)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    doc = _check_parts(tmp_path, {"b": "ok", "d": "ok", "e": "ok", "f": "skipped"})
    d = doc["parts"]["d"]["result"]
    assert d["mode"].startswith("fallback (pydantic, yaml, xraylib not installed)")
    assert d["preset_read_with"] == "regex" and d["n_angles"] == 101
    assert doc["parts"]["f"]["message"].startswith("ray, pydantic, yaml, xraylib, webdataset")
