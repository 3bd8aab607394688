"""Benchmark: torch threads per Ray actor under contention — 2 actors × 1 thread against 1 actor ×
2 threads on the same work, on an idle machine and with busy processes competing for the cores.

Usage::

    python bench/threads.py [--samples 6] [--size 32] [--shard-size 2] [--busy 0,1,2]
                            [--rounds 1] [--out FILE]

The work: ``--samples`` ``demo`` samples at a ``--size``³ grid (phantom, acquisition,
reconstruction, encoding, tar shards) built by the product's Ray actors
(:class:`~factory.dataset.executor._ShardActor`, one :class:`~factory.dataset.shards.ShardBuilder`
each) on a private local Ray of 2 CPUs (:func:`factory.cluster.start_ray`), in the two pool shapes
that :func:`~factory.dataset.executor.ray_pool_shape` gives ``simaq generate`` on 2 cores:

* **(a)** ``dataset.torch_threads = 1``, ``--workers 2``: 2 actors of 1 CPU, 1 torch thread each;
* **(b)** ``dataset.torch_threads = 2``, ``--workers 1``: 1 actor of 2 CPUs, 2 torch threads.

Each pool is started once and warmed up (one 1-sample shard per actor: imports, operator caches),
then builds the ``--samples`` once per entry of ``--busy`` (numbers of pure-Python spin loops this
script starts and stops, competing with the actors for the 2 cores), shards dispatched as
``run_ray`` does (at most 2 queued per actor). Measured:

1. **What an actor runs with**, from inside: torch's intra-op thread count, the ``OMP_NUM_THREADS``
   Ray set, the CPUs Ray assigned and the CPU affinity — the threads must equal the CPUs granted
   (no oversubscription).
2. **Samples/s** of each shape per busy level (wall time of the whole build, actors warm), and the
   ratio (a)/(b): above 1, processes beat threads on this work (many small operations that
   parallelise poorly inside torch; and, likely, a thread of a 2-thread team that loses its core
   stalls the other at the next barrier).
3. Whether (a) and (b) wrote **byte-identical shards** (``torch_threads`` is pinned per dataset
   because results that depend on reduction order may differ between thread counts).

``--rounds R``: each measurement is repeated R times and keeps its best. The machine may be shared
with other jobs: the load average is printed at start, after each measurement and at the end;
compare the ratios.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import math
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from bench.common import load, print_machine  # noqa: E402  (after the path set-up)

SHAPES = {"a": (2, 1), "b": (1, 2)}  # name -> (actors, torch threads each)
SPIN = "import signal, sys\nsignal.signal(signal.SIGTERM, lambda *a: sys.exit(0))\nwhile True:\n    pass\n"


def make_config(n: int, size: int, shard: int, threads: int):
    from factory.config import load_preset

    return load_preset(
        "demo",
        {
            "grid": {"shape": [size] * 3},
            "dataset": {
                "num_samples": n,
                "shard_size": shard,
                "splits": {"train": 1.0},
                "torch_threads": threads,
            },
        },
    )


def actor_report(self) -> dict:
    """Method added to the executor's actor class: what it runs with, seen from inside."""
    import ray
    import torch

    return {
        "torch_threads": torch.get_num_threads(),
        "omp_num_threads": os.environ.get("OMP_NUM_THREADS"),
        "affinity": len(os.sched_getaffinity(0)),
        "ray_cpus": ray.get_runtime_context().get_assigned_resources().get("CPU"),
    }


def shard_hashes(out: str, specs) -> list[str]:
    return [hashlib.sha256(Path(out, s.url).read_bytes()).hexdigest() for s in specs]


def make_pool(cfg, workers: int, out: str):
    """The executor's actors (:class:`~factory.dataset.executor._ShardActor`, the pool shape of
    ``run_ray``), constructed and warmed up by one 1-sample shard each; (actors, progress, shape)."""
    import ray

    from factory.dataset.executor import ProgressActor, _ShardActor, ray_pool_shape
    from factory.dataset.shards import ShardSpec

    k, cpus, _ = ray_pool_shape(ray.cluster_resources(), cfg.dataset.torch_threads, workers, 0.0)
    body = type("ShardActor", (_ShardActor,), {"report": actor_report})
    cls = ray.remote(body).options(num_cpus=cpus, num_gpus=0)
    progress = ray.remote(ProgressActor).options(num_cpus=0).remote()
    actors = [cls.remote(cfg.to_json(), 0, out, None, "cpu") for _ in range(k)]
    ray.get([a.ready.remote() for a in actors])
    warm = [ShardSpec(f"shards/warm-{i:06d}.tar", "train", i, 1).to_json() for i in range(k)]
    ray.get([a.build.remote(w, progress) for a, w in zip(actors, warm, strict=True)])
    return actors, progress, (k, cpus)


def build_all(actors, progress, specs, max_in_flight: int = 2) -> float:
    """Build ``specs`` on ``actors`` (at most ``max_in_flight`` queued per actor, as ``run_ray``
    does); the wall seconds."""
    import ray

    pending = list(reversed(specs))
    inflight: dict = {}
    load = [0] * len(actors)
    t0 = time.perf_counter()
    while pending or inflight:
        for a in range(len(actors)):
            while pending and load[a] < max_in_flight:
                inflight[actors[a].build.remote(pending.pop().to_json(), progress)] = a
                load[a] += 1
        done, _ = ray.wait(list(inflight), num_returns=1)
        for ref in done:
            ray.get(ref)
            load[inflight.pop(ref)] -= 1
    return time.perf_counter() - t0


def start_busy(k: int) -> list[subprocess.Popen]:
    return [subprocess.Popen([sys.executable, "-c", SPIN]) for _ in range(k)]


def stop_busy(procs: list[subprocess.Popen]) -> None:
    for p in procs:
        if p.poll() is None:
            p.terminate()
    for p in procs:
        try:
            p.wait(timeout=10)
        except subprocess.TimeoutExpired:
            p.kill()
            p.wait()


def main() -> None:
    ap = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    ap.add_argument("--samples", type=int, default=6)
    ap.add_argument("--size", type=int, default=32, help="edge of the demo grid")
    ap.add_argument("--shard-size", type=int, default=2)
    ap.add_argument("--busy", default="0,1,2", help="numbers of busy processes, comma-separated")
    ap.add_argument("--rounds", type=int, default=1)
    ap.add_argument("--out", default=None, help="also write the results to this JSON file")
    args = ap.parse_args()

    import ray

    from factory.cluster import start_ray
    from factory.dataset.shards import plan_shards

    print_machine()
    levels = [int(x) for x in args.busy.split(",")]
    res: dict = {
        "samples": args.samples,
        "grid": args.size,
        "shard_size": args.shard_size,
        "rounds": args.rounds,
        "loadavg_start": os.getloadavg(),
        "shapes": {},
    }
    tmp = tempfile.mkdtemp(prefix="simaq-threads-")
    busy: list[subprocess.Popen] = []
    hashes: dict[str, list[str]] = {}
    os.environ["PYTHONPATH"] = os.pathsep.join([str(ROOT), os.environ.get("PYTHONPATH", "")])
    try:
        t = time.perf_counter()
        start_ray(num_cpus=2)  # a private local instance of 2 CPUs, whatever the machine has
        res["ray_start_s"] = time.perf_counter() - t
        print(
            f"\n{args.samples} demo samples at {args.size}³ in shards of {args.shard_size}; "
            f"best of {args.rounds} round(s) per busy level",
            flush=True,
        )
        for name, (workers, threads) in SHAPES.items():
            cfg = make_config(args.samples, args.size, args.shard_size, threads)
            specs, _ = plan_shards(cfg.dataset)
            t = time.perf_counter()
            out = os.path.join(tmp, name)  # where this pool's actors write
            actors, progress, (k, cpus) = make_pool(cfg, workers, out)
            shutil.rmtree(out, ignore_errors=True)  # the warm-up shards
            start_s = time.perf_counter() - t
            try:
                inside = ray.get(actors[0].report.remote())
                row: dict = {
                    "actors": k,
                    "num_cpus": cpus,
                    "torch_threads": threads,
                    "inside": inside,
                    "start_and_warm_up_s": start_s,
                    "busy": {},
                }
                print(
                    f"\n({name}) {k} actor(s) of {cpus:g} CPU, dataset.torch_threads {threads}; "
                    f"inside an actor: torch threads {inside['torch_threads']}, OMP_NUM_THREADS "
                    f"{inside['omp_num_threads']}, Ray CPUs {inside['ray_cpus']}, affinity "
                    f"{inside['affinity']} cores"
                    + ("" if inside["torch_threads"] == cpus else "  <- threads != CPUs granted")
                    + f"; started and warmed up in {start_s:.1f} s",
                    flush=True,
                )
                for b in levels:
                    busy = start_busy(b)
                    try:
                        best = math.inf
                        for _ in range(args.rounds):
                            sec = build_all(actors, progress, specs)
                            hashes.setdefault(name, shard_hashes(out, specs))
                            shutil.rmtree(out, ignore_errors=True)
                            best = min(best, sec)
                    finally:
                        stop_busy(busy)
                        busy = []
                    la = os.getloadavg()
                    row["busy"][str(b)] = {
                        "seconds": best,
                        "samples_per_s": args.samples / best,
                        "loadavg_after": la,
                    }
                    print(
                        f"   {b} busy process(es): {args.samples / best:.2f} samples/s "
                        f"({best:.1f} s; load average after {la[0]:.2f} {la[1]:.2f} {la[2]:.2f})",
                        flush=True,
                    )
            finally:
                for a in actors:
                    ray.kill(a)
                ray.kill(progress)
            res["shapes"][name] = row
        a, b_ = res["shapes"]["a"], res["shapes"]["b"]
        print("\n| busy processes | (a) 2 actors × 1 thread | (b) 1 actor × 2 threads | (a)/(b) |")
        print("| --- | --- | --- | --- |")
        res["ratio_a_over_b"] = {}
        for b in levels:
            ra, rb = a["busy"][str(b)]["samples_per_s"], b_["busy"][str(b)]["samples_per_s"]
            res["ratio_a_over_b"][str(b)] = ra / rb
            print(f"| {b} | {ra:.2f} samples/s | {rb:.2f} samples/s | {ra / rb:.2f} |")
        res["same_bytes"] = hashes.get("a") == hashes.get("b")
        print(f"\n(a) and (b) wrote byte-identical shards: {res['same_bytes']}")
    finally:
        stop_busy(busy)
        if ray.is_initialized():
            ray.shutdown()
        shutil.rmtree(tmp, ignore_errors=True)
    res["loadavg_end"] = os.getloadavg()
    print("\n" + load("at end"))
    if args.out:
        Path(args.out).write_text(json.dumps(res, indent=1, default=str))


if __name__ == "__main__":
    main()
