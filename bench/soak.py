"""Soak: the fault-injection suite over many random kill/cut points, and a long load run.

    python bench/soak.py --rounds 20 --load-samples 400 --load-sides 32,48

Each round reruns the process-level faults (Ray worker SIGKILLed mid-shard, ``simaq generate``
SIGKILLed at random points then ``--resume``, the S3 endpoint cut mid-upload during ``generate``
and ``publish``) with a new ``SIMAQ_FAULT_SEED``, so the kill and cut points move; then the load
test generates ``--load-samples`` samples with two Ray workers for each grid side and prints peak
RSS per worker against the sample size and the throughput of the first and second half of the run.
Exits 1 if any round fails (the failing seed is printed: rerun it with
``SIMAQ_FAULT_SEED=SEED python -m pytest tests/test_faults_generate.py``).
"""

from __future__ import annotations

import argparse
import os
import re
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
FAULTS = [
    "tests/test_faults_generate.py::test_a_ray_worker_killed_mid_shard_loses_and_duplicates_nothing",
    "tests/test_faults_generate.py::test_the_driver_killed_at_random_points_resumes_to_the_same_hash",
    "tests/test_faults_storage.py::test_endpoint_lost_during_generate_then_resume",
    "tests/test_faults_storage.py::test_endpoint_lost_during_publish_then_rerun",
    "tests/test_faults_generate.py::test_a_node_lost_mid_run_is_replaced_and_nothing_is_lost",
]
LOAD = "tests/test_faults_generate.py::test_load_memory_stays_bounded_and_throughput_does_not_decay"


def pytest(tests: list[str], env: dict) -> tuple[int, str, float]:
    t0 = time.perf_counter()
    res = subprocess.run(
        [sys.executable, "-m", "pytest", "-q", "-s", "-p", "no:logging", *tests],
        cwd=ROOT,
        # RAY_ADDRESS=local: never join another Ray instance running on this machine
        env={"RAY_ADDRESS": "local", **os.environ, **env},
        capture_output=True,
        text=True,
    )
    return res.returncode, res.stdout + res.stderr, time.perf_counter() - t0


def _failure(out: str) -> str:
    """The assertion and summary lines of a failed pytest run (not the S3 server's access log)."""
    keep = [ln for ln in out.splitlines() if re.match(r"^(E  |FAILED|ERROR|_{5,}|[^ ].*Error)", ln)]
    return "\n".join(keep[-60:])


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--rounds", type=int, default=10, help="fault rounds (new seed each)")
    ap.add_argument("--seed", type=int, default=1, help="first SIMAQ_FAULT_SEED")
    ap.add_argument("--load-samples", type=int, default=200, help="samples per load run")
    ap.add_argument("--load-sides", default="32,48", help="grid sides of the load runs")
    args = ap.parse_args()
    failed = []
    for r in range(args.rounds):
        seed = args.seed + r
        code, out, wall = pytest(FAULTS, {"SIMAQ_FAULT_SEED": str(seed)})
        print(f"round {r + 1}/{args.rounds} seed {seed}: {'ok' if code == 0 else 'FAILED'} "
              f"({wall:.0f} s)", flush=True)  # fmt: skip
        if code != 0:
            failed.append(seed)
            print(_failure(out), flush=True)
    for side in (int(s) for s in args.load_sides.split(",") if s):
        env = {"SIMAQ_LOAD_SAMPLES": str(args.load_samples), "SIMAQ_LOAD_SIDE": str(side)}
        code, out, wall = pytest([LOAD], env)
        lines = [ln for ln in out.splitlines() if re.match(r"^(worker \d+|throughput)", ln)]
        print(f"load {args.load_samples} samples of {side}^3: {'ok' if code == 0 else 'FAILED'} "
              f"({wall:.0f} s)", flush=True)  # fmt: skip
        for ln in lines:
            print("  " + ln)
        if code != 0:
            failed.append(f"load-{side}")
            print(_failure(out), flush=True)
    print(f"{args.rounds} fault rounds, {len(args.load_sides.split(','))} load runs; "
          f"failed: {failed or 'none'}")  # fmt: skip
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
