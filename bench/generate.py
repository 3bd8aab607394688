"""Benchmark: the data factory's throughput per executor, bytes per sample, scaling with workers.

Usage::

    python bench/generate.py [--samples 64] [--size 64] [--workers 2] [--rounds 1]
                             [--bytes-samples 8] [--skip-local] [--skip-scaling] [--set KEY=VALUE ...]

Three measurements, all on the ``demo`` preset (optionally with a smaller ``--size`` grid):

1. **Executors, same cores, one run.** The same shards are built by the local executor (one process,
   ``dataset.torch_threads`` threads: 1 core), by ``--workers`` independent local processes on
   disjoint shards (what the cores give without Ray), by the Ray executor with 1 worker and with
   ``--workers`` workers; samples/s and samples/s per core, and the ratio Ray/local per core.
   The Ray times include creating the actors (each builds its operators once), not starting Ray;
   Ray runs during the local runs too. ``--rounds R``: the runs take turns R times, each keeps
   its best (least disturbed) round.
   Shards of the runs are compared byte for byte.
2. **Bytes per sample** of the same simulated samples encoded as raw float32 ``.npy`` and as
   float16 + per-field gzip (levels 1, 6, 9), as whole tar shards, and the error float16 introduces
   in each float field (relative RMS and max |error| / value range).
3. **Scaling** on a local multi-node ``ray.cluster_utils.Cluster`` (nodes of 1 CPU each): samples/s
   with 1 and with N workers, one per node.

The machine may be shared with other jobs (on the project's 2-core machine other developers' tests
run at the same time): compare the ratios printed here, not absolute seconds across runs.
"""

from __future__ import annotations

import argparse
import io
import os
import platform
import shutil
import tempfile
import time

import numpy as np


def _config(size: int | None, samples: int, sets: list[str], **dataset):
    from factory.config import load_preset, parse_overrides

    over = parse_overrides(sets)
    if size:
        over.setdefault("grid", {})["shape"] = [size, size, size]
    ds = over.setdefault("dataset", {})
    ds.update({"num_samples": samples, "splits": {"train": 1.0}, **dataset})
    return load_preset("demo", over)


def _same_bytes(a: str, b: str, specs) -> bool:
    return all(
        open(os.path.join(a, s.url), "rb").read() == open(os.path.join(b, s.url), "rb").read()
        for s in specs
    )


def _local_part(config_json: dict, out: str, specs_json: list[dict]) -> None:
    """Body of one plain process of the ``local xN`` peer: the local executor on its shards."""
    from factory.config import parse_config
    from factory.dataset.executor import run_local
    from factory.dataset.shards import ShardSpec

    run_local(parse_config(config_json), 0, out, [ShardSpec(**s) for s in specs_json])


def run_local_processes(cfg, out: str, specs, n: int) -> None:
    """The local executor in ``n`` separate processes on disjoint shards (no Ray): what the cores
    give with the least possible orchestration, the peer of the Ray executor with ``n`` workers."""
    import multiprocessing as mp

    ctx = mp.get_context("spawn")
    parts = [[s.to_json() for s in specs[i::n]] for i in range(n)]
    procs = [
        ctx.Process(target=_local_part, args=(cfg.to_json(), out, part)) for part in parts if part
    ]
    for p in procs:
        p.start()
    for p in procs:
        p.join()
    bad = [p.exitcode for p in procs if p.exitcode != 0]
    if bad:
        raise RuntimeError(f"local process failed with exit code {bad}")


def bench_executors(cfg, workers: int, skip_local: bool, tmp: str, rounds: int = 1) -> dict:
    """Section 1; with ``rounds`` > 1 the executors take turns and each keeps its best round
    (the one least disturbed by other jobs on the machine)."""
    import ray

    from factory.dataset.executor import run_local, run_ray
    from factory.dataset.shards import plan_shards

    specs, _ = plan_shards(cfg.dataset)
    n = cfg.dataset.num_samples
    threads = cfg.dataset.torch_threads
    res: dict = {}
    startup: dict = {}
    dirs: dict = {}
    all_secs: dict = {}

    def timed(key: str, cores: int, fn) -> None:
        dirs[key] = os.path.join(tmp, key.replace(" ", ""))
        shutil.rmtree(dirs[key], ignore_errors=True)
        ready: list[float] = []
        t = time.perf_counter()
        fn(dirs[key], ready)
        sec = time.perf_counter() - t
        all_secs.setdefault(key, []).append(sec)
        if key not in res or sec < res[key][0]:
            res[key] = (sec, cores)
            if ready:
                startup[key] = ready[0] - t

    # Ray is up for every run (also the local ones), so all runs see the same machine.
    ray.init(
        num_cpus=max(workers * threads, threads), include_dashboard=False, logging_level="ERROR"
    )
    try:
        for _ in range(rounds):
            if not skip_local:
                timed("local", threads, lambda d, r: run_local(cfg, 0, d, specs))
                if workers > 1:
                    timed(
                        f"local x{workers}",
                        workers * threads,
                        lambda d, r: run_local_processes(cfg, d, specs, workers),
                    )
            for w in sorted({1, workers}):
                timed(
                    f"ray x{w}",
                    w * threads,
                    lambda d, r, w=w: run_ray(
                        cfg, 0, d, specs, workers=w, on_ready=lambda: r.append(time.perf_counter())
                    ),
                )
    finally:
        ray.shutdown()
    ref = dirs.get("local", dirs["ray x1"])
    identical = all(_same_bytes(ref, d, specs) for d in dirs.values())
    print(
        f"\n1. executors: {n} samples, {len(specs)} shards of {cfg.dataset.shard_size}, "
        f"grid {cfg.grid.shape}, torch threads per worker {threads}; best of {rounds} round(s)"
    )
    if rounds > 1:
        print(
            "   seconds per round: "
            + "; ".join(f"{k} " + ", ".join(f"{x:.1f}" for x in v) for k, v in all_secs.items())
        )
    print(
        f"   {'executor':<12} {'cores':>5} {'seconds':>8} {'samples/s':>10} {'per core':>9}"
        f" {'actor start s':>14} {'after start':>12}"
    )
    for k, (sec, cores) in res.items():
        st = f"{startup[k]:14.1f} {n / (sec - startup[k]):12.3f}" if k in startup else ""
        print(f"   {k:<12} {cores:>5} {sec:8.1f} {n / sec:10.3f} {n / sec / cores:9.3f} {st}")
    base = res.get("local")
    if base:
        per_core_local = n / base[0] / base[1]
        for k, (sec, cores) in res.items():
            if k != "local":
                print(
                    f"   {k} / local (1 process) per core: {n / sec / cores / per_core_local:.3f}"
                )
        multi = res.get(f"local x{workers}")
        if multi and f"ray x{workers}" in res:
            r = res[f"ray x{workers}"][0]
            print(
                f"   ray x{workers} / local x{workers} processes (same {multi[1]} cores): "
                f"{multi[0] / r:.3f}"
            )
    print(f"   shards byte-identical across executors: {identical}")
    return {"identical": identical, **{k: n / s for k, (s, _) in res.items()}}


def _tar_bytes(encoded: list[dict]) -> int:
    import webdataset as wds

    from factory.dataset.shards import SHARD_MTIME

    buf = io.BytesIO()
    w = wds.TarWriter(buf, encoder=False, mtime=SHARD_MTIME)
    for e in encoded:
        w.write(e)
    w.close()
    return len(buf.getvalue())


def bench_bytes(cfg, k: int) -> None:
    import factory.sample
    from factory.dataset.shards import encode_sample

    samples = []
    t = time.perf_counter()
    for i in range(k):
        samples.append(factory.sample.simulate_sample(cfg, 0, i))
    sim = (time.perf_counter() - t) / k
    f32 = {"phantom": "float32", "sinogram": "float32", "recon": "float32", "noisy": "float32"}
    f16 = {key: "float16" for key in f32}
    variants = (
        [("float32 raw", f32, "none", 6), ("float16 raw", f16, "none", 6)]
        + [(f"float16 gzip-{lvl}", f16, "gzip", lvl) for lvl in (1, 6, 9)]
        + [("float32 gzip-6", f32, "gzip", 6)]
    )
    print(
        f"\n2. bytes per sample: {k} samples of grid {cfg.grid.shape}, fields "
        f"{list(cfg.dataset.fields)} (simulation {sim:.2f} s/sample)"
    )
    print(f"   {'encoding':<18} {'KiB/sample':>11} {'vs raw':>7} {'encode s/sample':>16}")
    raw = None
    for name, dt, comp, lvl in variants:
        d = cfg.dataset.model_copy(
            update={
                "dtypes": cfg.dataset.dtypes.model_copy(update=dt),
                "compression": comp,
                "compress_level": lvl,
            }
        )
        t = time.perf_counter()
        enc = [encode_sample(s, d) for s in samples]
        dt_enc = (time.perf_counter() - t) / k
        size = _tar_bytes(enc) / k
        raw = raw or size
        print(f"   {name:<18} {size / 1024:11.1f} {size / raw:7.1%} {dt_enc:16.3f}")
    print("   error of float16 storage (per field, over the samples):")
    for field in cfg.dataset.fields:
        if field == "labels":
            continue
        a = np.concatenate([s.fields[field].ravel() for s in samples]).astype(np.float64)
        b = np.concatenate([s.fields[field].astype(np.float16).ravel() for s in samples])
        err = b.astype(np.float64) - a
        rel_rms = np.sqrt(np.mean(err**2)) / max(np.sqrt(np.mean(a**2)), 1e-30)
        span = max(a.max() - a.min(), 1e-30)
        print(
            f"   {field:<10} relative RMS {rel_rms:.2e}, "
            f"max |err| / range {np.abs(err).max() / span:.2e}"
        )


def bench_scaling(cfg, nodes: int, tmp: str) -> None:
    import ray
    from ray.cluster_utils import Cluster

    from factory.dataset.executor import run_ray
    from factory.dataset.shards import plan_shards

    specs, _ = plan_shards(cfg.dataset)
    n = cfg.dataset.num_samples
    cluster = Cluster(
        initialize_head=True, head_node_args={"num_cpus": 1, "include_dashboard": False}
    )
    try:
        for _ in range(nodes - 1):
            cluster.add_node(num_cpus=1)
        cluster.wait_for_nodes()
        ray.init(address=cluster.address, logging_level="ERROR")
        rates, starts, steady = {}, {}, {}
        for w in sorted({1, nodes}):
            out = os.path.join(tmp, f"cluster{w}")
            ready: list[float] = []
            t = time.perf_counter()
            run_ray(
                cfg,
                0,
                out,
                specs,
                workers=w,
                on_ready=lambda r=ready: r.append(time.perf_counter()),
            )
            end = time.perf_counter()
            rates[w] = n / (end - t)
            starts[w] = ready[0] - t if ready else float("nan")
            steady[w] = n / (end - ready[0]) if ready else float("nan")
        ray.shutdown()
    finally:
        cluster.shutdown()
    print(f"\n3. scaling on a local Cluster of {nodes} nodes x 1 CPU ({n} samples):")
    print(
        f"   (all nodes share this machine's {os.cpu_count()} cores: the speed-up can reach at "
        f"most min(nodes, cores) = {min(nodes, os.cpu_count() or 1)}, less what other jobs take; it "
        "shows the pool spreading over raylets and the orchestration cost, not multi-machine scaling)"
    )
    for w, r in rates.items():
        print(
            f"   {w} worker(s): {r:.3f} samples/s, speed-up {r / rates[1]:.2f} (ideal {w}); "
            f"after the actors started ({starts[w]:.1f} s): {steady[w]:.3f} samples/s, "
            f"speed-up {steady[w] / steady[1]:.2f}"
        )


def main() -> None:
    ap = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    ap.add_argument("--samples", type=int, default=64)
    ap.add_argument("--size", type=int, default=None, help="grid edge (default: the demo preset's)")
    ap.add_argument("--workers", type=int, default=2)
    ap.add_argument("--shard-size", type=int, default=8)
    ap.add_argument(
        "--rounds", type=int, default=1, help="executor runs take turns this often; best kept"
    )
    ap.add_argument("--bytes-samples", type=int, default=8)
    ap.add_argument("--scaling-samples", type=int, default=None, help="default: --samples")
    ap.add_argument("--skip-local", action="store_true")
    ap.add_argument("--skip-executors", action="store_true")
    ap.add_argument("--skip-bytes", action="store_true")
    ap.add_argument("--skip-scaling", action="store_true")
    ap.add_argument("--set", dest="sets", action="append", default=[])
    args = ap.parse_args()
    import torch

    print(
        f"machine: {platform.machine()}, {os.cpu_count()} CPUs, torch {torch.__version__}; "
        "the machine may be shared with other jobs: compare ratios within this run"
    )
    print("load average (1, 5, 15 min) at start: {:.2f} {:.2f} {:.2f}".format(*os.getloadavg()))
    tmp = tempfile.mkdtemp(prefix="simaq-bench-")
    try:
        if not args.skip_executors:
            cfg = _config(args.size, args.samples, args.sets, shard_size=args.shard_size)
            bench_executors(cfg, args.workers, args.skip_local, tmp, args.rounds)
        if not args.skip_bytes:
            bench_bytes(_config(args.size, args.bytes_samples, args.sets), args.bytes_samples)
        if not args.skip_scaling:
            n = args.scaling_samples or args.samples
            cfg = _config(args.size, n, args.sets, shard_size=max(1, n // (4 * args.workers)))
            bench_scaling(cfg, args.workers, tmp)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    print("\nload average (1, 5, 15 min) at end: {:.2f} {:.2f} {:.2f}".format(*os.getloadavg()))


if __name__ == "__main__":
    main()
