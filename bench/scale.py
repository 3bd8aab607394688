"""Benchmark: the million-sample path — the factory's own cost per sample, with the simulation
replaced by a cheap stand-in stage, at a sample count where per-sample and per-shard costs show.

Usage::

    python bench/scale.py [--samples 100000] [--shard-size 16] [--grid 8] [--workers 2]
                          [--nodes 1,2,4,8] [--cluster-samples 4000] [--skip-cluster]
                          [--skip-resume-after-loss] [--keep DIR]

The stand-in (``--stand-in``, on by default; it is a flag of this benchmark, not of the product)
replaces ``factory.sample.simulate_sample`` — which :class:`~factory.dataset.shards.ShardBuilder`
looks up at call time — in this process and, through a Ray ``worker_process_setup_hook``, in every
Ray worker of the run. It returns a deterministic sample of the configured tiny grid (``--grid``³)
with the ``meta`` of one real ``demo`` sample (same parameter columns and JSON size), so
everything after the simulation is the product's real code: scheduling, encoding, tar, sha256,
record files, index rows, ``index.parquet``, card, manifest, verify, resume.

Measured:

1. **Per-sample costs in this process** (1 thread): stand-in, ``encode_sample``, a whole
   ``ShardBuilder.build`` per sample (encode + tar + sha256 + record file).
2. **One run of N samples** on the Ray executor (``--workers`` actors): samples/s, the build phase
   and the finalize phase (index, card, manifest), the driver's CPU seconds, and the driver's RSS
   sampled every 0.25 s against the samples committed so far (from ``_records/``): the slope of a
   least-squares line over the run after the first 10 % must be ~0 (memory flat in N).
3. **Sizes**: shards, ``manifest.json`` (fixed part + per shard), ``index.parquet`` per sample.
4. **verify** of the whole dataset; **--resume** of the finished run; and of an interrupted run
   (same N, the stand-in fails on the last sample, then ``--delete`` shards are deleted) — the
   resumed dataset must have the undisturbed run's ``content_sha256``.
5. **Nodes**: a local ``ray.cluster_utils.Cluster`` grown to 1, 2, 4, 8 nodes of 1 logical CPU
   each (all sharing this machine's cores: 8 nodes on 2 cores is 1/4 core per node), one actor per
   node, ``--cluster-samples`` samples; samples/s after the actors started, the driver's and the
   GCS's CPU seconds per 1000 samples. If the driver or the GCS were a central bottleneck their
   cost per sample would grow with the node count; the ceiling they put on the whole cluster is
   1 / (driver CPU s per sample).
6. **Extrapolation** to 10⁶ and 10⁷ samples: shards, bytes, node-hours, with the formula.

The machine may be shared with other jobs: the load average is printed at start and end.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import random
import shutil
import sys
import tempfile
import threading
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from bench.common import load, print_machine  # noqa: E402  (after the path set-up)
from schemas.dataset import Manifest  # noqa: E402  (after the path set-up)

# --- the stand-in stage (pickled by value into the Ray workers) ---------------------------------


def make_stand_in(template_meta: dict, num_classes: int, fail_file: str | None):
    """A ``simulate_sample`` replacement: tiny deterministic fields, the real sample's meta.

    It fails (RuntimeError) on the last sample of the dataset while ``fail_file`` exists (an
    interrupted run for the resume measurement)."""

    def stand_in(config, seed: int, index: int, *, device="cpu"):
        import os

        import numpy as np

        from factory.sample import Sample
        from schemas.sample import SampleMeta

        if fail_file is not None and index == config.dataset.num_samples - 1:
            if os.path.exists(fail_file):
                raise RuntimeError(f"stand-in: injected failure at sample {index}")
        z, y, x = config.grid.shape
        rng = np.random.default_rng((int(seed), int(index)))
        n_angles = 40 + int(rng.integers(0, 20))
        fields = {
            "phantom": rng.random((z, y, x), dtype=np.float32),
            "labels": rng.integers(0, num_classes, (z, y, x), dtype=np.uint8),
            "sinogram": rng.random((n_angles, y, x), dtype=np.float32),
            "recon": rng.standard_normal((z, y, x), dtype=np.float32),
        }
        meta = dict(template_meta)
        meta.update(index=int(index), seed=int(seed), config_sha256=config.sha256)
        meta["acquisition"] = {
            **template_meta.get("acquisition", {}),
            "stand_in_draw": float(rng.random()),
            "n_angles": n_angles,
        }
        return Sample(index=int(index), fields=fields, meta=SampleMeta.build(meta))

    return stand_in


def make_hook(template_meta: dict, num_classes: int, fail_file: str | None):
    """The Ray ``worker_process_setup_hook`` installing the stand-in in a worker process."""

    def hook():
        import factory.sample

        factory.sample.simulate_sample = make_stand_in(template_meta, num_classes, fail_file)

    return hook


# --- helpers -------------------------------------------------------------------------------------


def rss_mib() -> float:
    with open("/proc/self/statm") as fh:
        return int(fh.read().split()[1]) * os.sysconf("SC_PAGE_SIZE") / 2**20


class Sampler(threading.Thread):
    """Samples (seconds, records committed, driver RSS MiB, driver CPU s) every ``period`` s."""

    def __init__(self, root: str, period: float = 0.25):
        super().__init__(daemon=True)
        self.records = os.path.join(root, "_records")
        self.period = period
        self.points: list[tuple[float, int, float, float]] = []
        self.stop = threading.Event()
        self.t0 = time.perf_counter()

    def count(self) -> int:
        try:
            with os.scandir(self.records) as it:
                return sum(1 for e in it if e.name.endswith(".json") and e.name != "_plan.json")
        except FileNotFoundError:
            return -1  # not yet created, or removed by finalize

    def run(self) -> None:
        while not self.stop.is_set():
            self.points.append(
                (time.perf_counter() - self.t0, self.count(), rss_mib(), time.process_time())
            )
            self.stop.wait(self.period)

    def finish(self) -> None:
        self.stop.set()
        self.join()


def fit_slope(xs, ys) -> float:
    """Least-squares slope of ys against xs (0 for fewer than 2 distinct xs)."""
    x = np.asarray(xs, float)
    y = np.asarray(ys, float)
    if x.size < 2 or np.ptp(x) == 0:
        return 0.0
    return float(np.polyfit(x, y, 1)[0])


def human(n: float) -> str:
    for unit in ("B", "KiB", "MiB", "GiB", "TiB", "PiB"):
        if abs(n) < 1024 or unit == "PiB":
            return f"{n:.1f} {unit}"
        n /= 1024
    return f"{n:.1f} PiB"


def make_config(n: int, shard: int, grid: int):
    from factory.config import load_preset

    return load_preset(
        "demo",
        {"grid": {"shape": [grid] * 3}, "dataset": {"num_samples": n, "shard_size": shard}},
    )


def template(args) -> tuple[dict, int, float, int]:
    """The meta of one real demo sample, the scheme's class count, the real sample's time (median
    of 3 after a warm-up, 1 torch thread as the executors pin) and its encoded bytes."""
    import torch

    import factory.sample
    from factory.config import load_preset
    from factory.dataset.shards import encode_sample
    from schemas import label_scheme

    real = load_preset("demo")
    threads = torch.get_num_threads()
    torch.set_num_threads(real.dataset.torch_threads)
    try:
        factory.sample.simulate_sample(real, 0, 0)
        times = []
        for i in (1, 2, 3):
            t = time.perf_counter()
            s = factory.sample.simulate_sample(real, 0, i)
            times.append(time.perf_counter() - t)
    finally:
        torch.set_num_threads(threads)
    size = sum(len(v) for k, v in encode_sample(s, real.dataset).items() if k != "__key__")
    return (
        s.meta.to_json(),
        label_scheme(real.labels.scheme).num_classes,
        float(np.median(times)),
        size,
    )


# --- sections ------------------------------------------------------------------------------------


def micro_costs(cfg, stand_in, tmp: str, k: int) -> dict:
    """Section 1: per-sample costs in this process."""
    import factory.sample
    from factory.dataset.executor import run_local
    from factory.dataset.shards import encode_sample, plan_shards

    t = time.perf_counter()
    samples = [stand_in(cfg, 0, i) for i in range(k)]
    t_stand = (time.perf_counter() - t) / k
    t = time.perf_counter()
    for s in samples:
        encode_sample(s, cfg.dataset)
    t_enc = (time.perf_counter() - t) / k
    from factory.config import parse_config

    small = parse_config(cfg.to_json(), {"dataset": {"num_samples": k}})
    specs, _ = plan_shards(small.dataset)
    real = factory.sample.simulate_sample
    factory.sample.simulate_sample = stand_in
    try:
        out = os.path.join(tmp, "micro")
        t = time.perf_counter()
        recs = run_local(small, 0, out, specs)
        t_build = (time.perf_counter() - t) / k
        slim = sum(len(json.dumps(r)) for r in recs) / max(len(recs), 1)
        from factory.dataset.generate import SHARD_KEYS

        entry = sum(len(json.dumps({k: r[k] for k in SHARD_KEYS})) for r in recs)
        entry /= max(len(recs), 1)
    finally:
        factory.sample.simulate_sample = real
        shutil.rmtree(os.path.join(tmp, "micro"), ignore_errors=True)
    return {
        "stand_in": t_stand,
        "encode": t_enc,
        "build": t_build,
        "k": k,
        "slim_record_bytes": slim,
        "shard_entry_bytes": entry,
    }


def timed_generate(cfg, out: str, workers: int, *, resume: bool = False, sample: bool = False):
    """``generate_dataset`` on the connected Ray; (seconds, manifest or error, sampler, cpu s)."""
    from factory.dataset.generate import generate_dataset
    from factory.errors import UserError

    sampler = Sampler(out) if sample else None
    cpu = time.process_time()
    if sampler:
        sampler.start()
    t = time.perf_counter()
    try:
        res = generate_dataset(cfg, out, executor="ray", workers=workers, resume=resume)
    except UserError as err:
        res = err
    sec = time.perf_counter() - t
    if sampler:
        sampler.finish()
    return sec, res, sampler, time.process_time() - cpu


def rss_report(sampler: Sampler, n: int, shard: int, n_shards: int) -> dict:
    """Memory and CPU of the driver against the samples committed, from the sampler's points.

    The build phase runs from the first committed shard to the last; the slopes (least squares)
    are taken over its points after 10 % of the samples, so actor start-up and finalize (index,
    card with its matplotlib preview, manifest) do not count as growth per sample."""
    pts = [(t, min(c * shard, n), r, cpu) for t, c, r, cpu in sampler.points if c >= 0]
    if not pts:
        return {}
    first = next((t for t, s, _, _ in pts if s > 0), pts[-1][0])
    build_end = next((t for t, s, _, _ in pts if s >= n), pts[-1][0])
    build = [p for p in pts if p[0] <= build_end]
    run = [p for p in build if p[1] >= 0.1 * n] or build
    rate = fit_slope([t for t, *_ in run], [s for _, s, *_ in run])  # samples/s, steady
    return {
        "first_commit_s": first,
        "build_end_s": build_end,
        "steady_samples_per_s": rate,
        "slope_mib_per_1e5": fit_slope([s for _, s, *_ in run], [r for _, _, r, _ in run]) * 1e5,
        "driver_cpu_us_per_sample": fit_slope([s for _, s, *_ in run], [c for *_, c in run]) * 1e6,
        "rss_at_10pct": run[0][2],
        "rss_end_of_build": run[-1][2],
        "rss_peak_incl_finalize": max(p[2] for p in sampler.points),
        "points": len(run),
        "curve": [
            (round(t, 1), s, round(r, 1))
            for t, s, r, _ in run[:: max(1, len(run) // 10)] + [run[-1]]
        ],
    }


def manifest_sizes(out: str) -> dict:
    m_path = os.path.join(out, "manifest.json")
    m = json.loads(Path(m_path).read_text())
    fixed = len(json.dumps({k: v for k, v in m.items() if k != "shards"}, indent=1))
    total = os.path.getsize(m_path)
    shard_dir = os.path.join(out, "shards")
    shard_bytes = sum(e.stat().st_size for e in os.scandir(shard_dir))
    return {
        "manifest": total,
        "manifest_fixed": fixed,
        "manifest_per_shard": (total - fixed) / max(len(m["shards"]), 1),
        "index": os.path.getsize(os.path.join(out, "index.parquet")),
        "shards": shard_bytes,
        "n_shards": len(m["shards"]),
        "content_sha256": m["content_sha256"],
    }


def cluster_scaling(cfg, hook, nodes_list: list[int], tmp: str) -> list[dict]:
    """Section 5: one actor per node on a growing local multi-node cluster."""
    import psutil
    import ray
    from ray.cluster_utils import Cluster

    from factory.dataset.executor import run_ray
    from factory.dataset.shards import plan_shards

    specs, _ = plan_shards(cfg.dataset)
    n = cfg.dataset.num_samples
    cluster = Cluster(
        initialize_head=True, head_node_args={"num_cpus": 1, "include_dashboard": False}
    )
    rows = []
    try:
        ray.init(
            address=cluster.address,
            logging_level="ERROR",
            runtime_env={"worker_process_setup_hook": hook},
        )
        me = psutil.Process()

        def gcs_cpu() -> float:
            tot = 0.0
            for p in me.children(recursive=True):
                try:
                    if "gcs_server" in p.name():
                        c = p.cpu_times()
                        tot += c.user + c.system
                except psutil.Error:
                    pass
            return tot

        have = 1
        for k in nodes_list:
            while have < k:
                cluster.add_node(num_cpus=1)
                have += 1
            cluster.wait_for_nodes()
            out = os.path.join(tmp, f"cluster{k}")
            ready: list[tuple[float, float, float]] = []
            t = time.perf_counter()
            mark = (t, time.process_time(), gcs_cpu())
            run_ray(
                cfg,
                0,
                out,
                specs,
                workers=k,
                on_ready=lambda r=ready: r.append(
                    (time.perf_counter(), time.process_time(), gcs_cpu())
                ),
            )
            end = time.perf_counter()
            r0 = ready[0] if ready else mark  # from the moment every actor is constructed
            cpu, gcs = time.process_time() - r0[1], gcs_cpu() - r0[2]
            t_ready = r0[0] - t
            steady = n / max(end - r0[0], 1e-9)
            rows.append(
                {
                    "nodes": k,
                    "seconds": end - t,
                    "actor_start_s": t_ready,
                    "samples_per_s": n / (end - t),
                    "steady_samples_per_s": steady,
                    "driver_cpu_s_per_1000": cpu / n * 1000,
                    "gcs_cpu_s_per_1000": gcs / n * 1000,
                    "nodes_alive": sum(1 for x in ray.nodes() if x.get("Alive")),
                }
            )
            r = rows[-1]
            print(
                f"   {k} node(s): {r['samples_per_s']:.0f} samples/s, "
                f"{r['steady_samples_per_s']:.0f} after the actors started ({t_ready:.1f} s); "
                f"after that the driver took {r['driver_cpu_s_per_1000']:.3f} CPU s/1000 samples, "
                f"the GCS {r['gcs_cpu_s_per_1000']:.3f}",
                flush=True,
            )
            shutil.rmtree(out, ignore_errors=True)
    finally:
        ray.shutdown()
        cluster.shutdown()
    return rows


# --- main ----------------------------------------------------------------------------------------


def main() -> None:
    ap = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    ap.add_argument("--samples", type=int, default=100_000)
    ap.add_argument("--shard-size", type=int, default=16, help="default: the demo preset's")
    ap.add_argument("--grid", type=int, default=8, help="edge of the stand-in's tiny grid")
    ap.add_argument("--workers", type=int, default=2, help="Ray actors of the main run")
    ap.add_argument(
        "--stand-in",
        action=argparse.BooleanOptionalAction,
        default=True,
        help="replace the simulation by the stand-in stage (--no-stand-in: the real demo "
        "stages at --grid, much slower)",
    )
    ap.add_argument("--micro-samples", type=int, default=2000)
    ap.add_argument("--delete", type=int, default=5, help="shards deleted before the resume")
    ap.add_argument("--skip-resume-after-loss", action="store_true")
    ap.add_argument("--skip-cluster", action="store_true")
    ap.add_argument("--nodes", default="1,2,4,8")
    ap.add_argument("--cluster-samples", type=int, default=4000)
    ap.add_argument("--json", default=None, help="also write the results to this file")
    ap.add_argument("--keep", default=None, help="work in this folder and keep it")
    args = ap.parse_args()

    import ray

    print_machine()
    n, shard = args.samples, args.shard_size
    cfg = make_config(n, shard, args.grid)
    from factory.dataset.shards import plan_shards

    n_shards = len(plan_shards(cfg.dataset)[0])
    tmp = args.keep or tempfile.mkdtemp(prefix="simaq-scale-")
    os.makedirs(tmp, exist_ok=True)
    fail_file = os.path.join(tmp, "FAIL")
    meta, num_classes, real_sim_s, real_bytes = template(args)
    if args.stand_in:
        stand_in = make_stand_in(meta, num_classes, fail_file)
        hook = make_hook(meta, num_classes, fail_file)
    else:
        import factory.sample

        stand_in = factory.sample.simulate_sample

        def hook():
            return None

    res: dict = {
        "samples": n,
        "shard_size": shard,
        "shards": n_shards,
        "grid": args.grid,
        "workers": args.workers,
        "stand_in": args.stand_in,
        "real_demo_sample_s": real_sim_s,
        "real_demo_bytes": real_bytes,
        "loadavg_start": os.getloadavg(),
    }
    try:
        # 1. micro costs
        k = min(args.micro_samples, n)
        mc = micro_costs(cfg, stand_in, tmp, k)
        res["micro"] = mc
        print(
            f"\n1. per sample in this process ({k} samples, grid {args.grid}³, 1 thread): "
            f"stand-in {mc['stand_in'] * 1e3:.3f} ms, encode_sample {mc['encode'] * 1e3:.3f} ms, "
            f"ShardBuilder.build {mc['build'] * 1e3:.3f} ms "
            f"(so tar + sha256 + record ≈ {(mc['build'] - mc['stand_in'] - mc['encode']) * 1e3:.3f} ms)"
            f"; a real demo sample (64³): {real_sim_s:.2f} s, {human(real_bytes)} encoded",
            flush=True,
        )

        # 2. the main run
        os.environ["PYTHONPATH"] = os.pathsep.join([str(ROOT), os.environ.get("PYTHONPATH", "")])
        t = time.perf_counter()
        ray.init(
            num_cpus=args.workers,
            include_dashboard=False,
            logging_level="ERROR",
            runtime_env={"worker_process_setup_hook": hook},
        )
        res["ray_start_s"] = time.perf_counter() - t
        out_a = os.path.join(tmp, "A")
        rss0 = rss_mib()
        sec, man, sampler, cpu = timed_generate(cfg, out_a, args.workers, sample=True)
        if not isinstance(man, Manifest):
            raise SystemExit(f"main run failed: {man}")
        rr = rss_report(sampler, n, shard, n_shards)
        fin = sec - rr.get("build_end_s", sec)
        res["run"] = {
            "seconds": sec,
            "samples_per_s": n / sec,
            "driver_cpu_s": cpu,
            "finalize_s": fin,
            "rss_before_mib": rss0,
            **rr,
        }
        rate = rr["steady_samples_per_s"]
        core_s = args.workers / rate
        print(
            f"\n2. generate, Ray executor, {args.workers} actors, {n} samples in {n_shards} shards "
            f"of {shard}: {sec:.1f} s in all = {n / sec:.0f} samples/s; first shard committed at "
            f"{rr['first_commit_s']:.1f} s (actor start), build until {rr['build_end_s']:.1f} s, "
            f"steady {rate:.0f} samples/s = {core_s * 1e3:.2f} core-ms/sample against "
            f"{mc['build'] * 1e3:.2f} ms in-process (the difference, Ray's scheduling cost: "
            f"{(core_s - mc['build']) * 1e3:+.2f} ms/sample = {(core_s - mc['build']) * shard * 1e3:+.0f}"
            " ms/shard; ≤ 0 means below the load noise); finalize (index, card, manifest) "
            f"{fin:.1f} s = {fin / n * 1e6:.0f} µs/sample (mostly fixed at small N)",
            flush=True,
        )
        print(
            f"   driver CPU {cpu:.1f} s in all; marginal, during the build: "
            f"{rr['driver_cpu_us_per_sample']:.0f} µs/sample (ceiling of one driver: "
            f"{1e6 / max(rr['driver_cpu_us_per_sample'], 1e-9):.0f} samples/s)"
        )
        print(
            f"   driver RSS: {rss0:.0f} MiB before, {rr['rss_at_10pct']:.0f} MiB at 10 %, "
            f"{rr['rss_end_of_build']:.0f} MiB at the end of the build, peak "
            f"{rr['rss_peak_incl_finalize']:.0f} MiB incl. finalize; slope during the build after "
            f"10 %: {rr['slope_mib_per_1e5']:+.2f} MiB per 10⁵ samples ({rr['points']} points); "
            f"of a shard's record ({mc['slim_record_bytes']:.0f} B as JSON) the driver folds "
            "the field shapes, class voxels and column types into running totals and keeps only "
            f"the manifest's entry, {mc['shard_entry_bytes']:.0f} B as JSON "
            f"({mc['shard_entry_bytes'] / shard:.1f} B/sample)"
        )
        print("   (s, samples committed, RSS MiB): " + " ".join(str(p) for p in rr["curve"]))

        # 3. sizes
        sz = manifest_sizes(out_a)
        res["sizes"] = sz
        print(
            f"\n3. sizes: shards {human(sz['shards'])} ({sz['shards'] / n:.0f} B/sample at {args.grid}³), "
            f"manifest.json {human(sz['manifest'])} = {sz['manifest_fixed']} B fixed + "
            f"{sz['manifest_per_shard']:.0f} B/shard, index.parquet {human(sz['index'])} = "
            f"{sz['index'] / n:.1f} B/sample",
            flush=True,
        )

        # 4. verify, resume
        from factory.dataset.tools import verify_dataset

        t = time.perf_counter()
        problems = verify_dataset(out_a)
        t_verify = time.perf_counter() - t
        sec_r, man_r, _, _ = timed_generate(cfg, out_a, args.workers, resume=True)
        same = isinstance(man_r, Manifest) and man_r.content_sha256 == sz["content_sha256"]
        res["verify"] = {"seconds": t_verify, "problems": len(problems)}
        res["resume_finished"] = {"seconds": sec_r, "same_content": same}
        print(
            f"\n4. verify: {t_verify:.2f} s ({t_verify / n_shards * 1e3:.2f} ms/shard, "
            f"{len(problems)} problems); --resume of the finished run: {sec_r:.2f} s (same content: {same})",
            flush=True,
        )
        if not args.skip_resume_after_loss:
            out_b = os.path.join(tmp, "B")
            Path(fail_file).touch()
            sec_b, err_b, _, _ = timed_generate(cfg, out_b, args.workers)
            os.remove(fail_file)
            shards_b = sorted(os.listdir(os.path.join(out_b, "shards")))
            gone = random.Random(0).sample(shards_b, min(args.delete, len(shards_b)))
            for name in gone:
                os.remove(os.path.join(out_b, "shards", name))
            sec_rb, man_b, _, _ = timed_generate(cfg, out_b, args.workers, resume=True)
            ok = isinstance(man_b, Manifest) and man_b.content_sha256 == sz["content_sha256"]
            res["resume_after_loss"] = {
                "interrupted_run_s": sec_b,
                "committed": len(shards_b),
                "deleted": len(gone),
                "rebuilt": n_shards - len(shards_b) + len(gone),
                "seconds": sec_rb,
                "same_content_as_undisturbed": ok,
                "interrupted_error": str(err_b)[:200],
            }
            print(
                f"   interrupted run (stand-in fails on the last sample): {sec_b:.1f} s, "
                f"{len(shards_b)}/{n_shards} shards committed; deleted {len(gone)} of them; "
                f"--resume rebuilt {n_shards - len(shards_b) + len(gone)} shards and finalized in "
                f"{sec_rb:.2f} s (starting the actors takes ~{rr['first_commit_s']:.0f} s of it, see "
                f"2.); content_sha256 equal to the undisturbed run: {ok}",
                flush=True,
            )
            shutil.rmtree(out_b, ignore_errors=True)
        ray.shutdown()

        # 5. nodes
        if not args.skip_cluster:
            nodes = [int(x) for x in args.nodes.split(",")]
            nc = args.cluster_samples
            ccfg = make_config(nc, shard, args.grid)
            print(
                f"\n5. local multi-node Cluster, 1 logical CPU per node on {os.cpu_count()} cores, "
                f"one actor per node, {nc} samples in shards of {shard}:",
                flush=True,
            )
            rows = cluster_scaling(ccfg, hook, nodes, tmp)
            res["cluster"] = rows
            base = rows[0]["steady_samples_per_s"]
            print(
                "   speed-up (steady) vs 1 node: "
                + ", ".join(f"{r['nodes']}: {r['steady_samples_per_s'] / base:.2f}" for r in rows)
                + f" (at most min(nodes, {os.cpu_count()} cores) here)"
            )

        # 6. extrapolation
        extrapolate(res, real_sim_s, real_bytes)
    finally:
        if ray.is_initialized():
            ray.shutdown()
        if not args.keep:
            shutil.rmtree(tmp, ignore_errors=True)
    res["loadavg_end"] = os.getloadavg()
    print("\n" + load("at end"))
    if args.json:
        Path(args.json).write_text(json.dumps(res, indent=1, default=str))


def extrapolate(res: dict, real_sim_s: float, real_bytes: int) -> None:
    """Section 6 and the summary table."""
    n, shard = res["samples"], res["shard_size"]
    run, sz = res["run"], res["sizes"]
    # factory cost per sample and core (stand-in included), steady state; driver's marginal CPU
    ovh_core_s = res["workers"] / run["steady_samples_per_s"]
    drv_s = run["driver_cpu_us_per_sample"] / 1e6
    fin_s = run["finalize_s"] / n
    verify_s = res["verify"]["seconds"] / n
    print(f"\nsummary (measured at N = {n}, shards of {shard})")
    print("| quantity | measured | per sample |")
    print("| --- | --- | --- |")
    rows = [
        (
            f"samples/s (Ray, {res['workers']} actors, stand-in)",
            f"{run['samples_per_s']:.0f}",
            "",
        ),
        ("samples/s steady (after actor start)", f"{run['steady_samples_per_s']:.0f}", ""),
        ("factory core-time, steady (stand-in incl.)", "", f"{ovh_core_s * 1e3:.2f} ms"),
        ("  of which in-process build (1 thread)", "", f"{res['micro']['build'] * 1e3:.2f} ms"),
        (
            "driver CPU (in all; marginal in the build)",
            f"{run['driver_cpu_s']:.1f} s",
            f"{drv_s * 1e6:.0f} µs",
        ),
        ("finalize (index, card, manifest)", f"{run['finalize_s']:.1f} s", f"{fin_s * 1e6:.1f} µs"),
        (
            "driver RSS slope (build, after 10 %)",
            f"{run['slope_mib_per_1e5']:+.2f} MiB/10⁵ samples",
            "",
        ),
        ("driver RSS peak", f"{run['rss_peak_incl_finalize']:.0f} MiB", ""),
        ("manifest.json", human(sz["manifest"]), f"{sz['manifest_per_shard']:.0f} B/shard"),
        ("index.parquet", human(sz["index"]), f"{sz['index'] / n:.1f} B"),
        ("verify", f"{res['verify']['seconds']:.1f} s", f"{verify_s * 1e6:.1f} µs"),
        ("--resume, finished run", f"{res['resume_finished']['seconds']:.2f} s", ""),
    ]
    if "resume_after_loss" in res:
        r = res["resume_after_loss"]
        rows.append(
            (
                f"--resume after losing {r['deleted']} shards",
                f"{r['seconds']:.1f} s",
                f"rebuilt {r['rebuilt']} shards",
            )
        )
    for c in res.get("cluster", []):
        rows.append(
            (
                f"cluster, {c['nodes']} node(s), steady",
                f"{c['steady_samples_per_s']:.0f} samples/s",
                f"driver {c['driver_cpu_s_per_1000']:.3f} s/1000",
            )
        )
    for a, b, c in rows:
        print(f"| {a} | {b} | {c} |")

    print(
        "\nextrapolation (formulas; S = shard size, t_sim = simulation s/sample on one node):\n"
        "  shards = ceil(N / S)\n"
        f"  manifest bytes = {sz['manifest_fixed']} + {sz['manifest_per_shard']:.0f}·shards\n"
        f"  index bytes ≈ {sz['index'] / n:.1f}·N\n"
        "  data bytes = b_sample·N\n"
        f"  node-hours = N·(t_sim + {ovh_core_s * 1e3:.2f} ms) / 3600  (factory overhead per sample "
        "and core measured here, stand-in included)\n"
        f"  driver CPU hours = N·{drv_s * 1e6:.0f} µs / 3600; the driver alone can feed at most "
        f"1 / {drv_s * 1e6:.0f} µs = {1 / max(drv_s, 1e-12):.0f} samples/s\n"
        f"  finalize ≤ {fin_s * 1e6:.1f} µs·N (an upper bound: the fixed part — preview, card, git — "
        f"dominates at small N; the index is streamed), verify ≈ {verify_s * 1e6:.1f} µs·N + "
        "reading the bytes"
    )
    cases = [
        ("demo 64³, CPU", real_sim_s, real_bytes),
        ("simaq-paper 512³, GPU target 1 s, bytes ≈ demo × 512", 1.0, real_bytes * 512),
    ]
    print(
        "| N | case | shards | manifest.json | index.parquet | data | node-hours | driver CPU h |"
    )
    print("| --- | --- | --- | --- | --- | --- | --- | --- |")
    for big in (10**6, 10**7):
        shards = math.ceil(big / shard)
        man = sz["manifest_fixed"] + sz["manifest_per_shard"] * shards
        idx = sz["index"] / n * big
        for name, t_sim, b in cases:
            hours = big * (t_sim + ovh_core_s) / 3600
            print(
                f"| {big:.0e} | {name} | {shards:,} | {human(man)} | {human(idx)} | "
                f"{human(b * big)} | {hours:,.0f} | {big * drv_s / 3600:.2f} |"
            )
    print(
        "  (hours on K nodes = node-hours / K while K < the driver's ceiling / per-node rate; "
        f"t_sim: demo measured here ({real_sim_s:.2f} s, 1 thread), simaq-paper the GPU target)"
    )
    res["extrapolation"] = {
        "ovh_core_s_per_sample": ovh_core_s,
        "driver_cpu_s_per_sample": drv_s,
        "manifest_fixed": sz["manifest_fixed"],
        "manifest_per_shard": sz["manifest_per_shard"],
        "index_per_sample": sz["index"] / n,
    }


if __name__ == "__main__":
    main()
