"""Benchmark: seconds per sample for each stage (phantom, acquisition, reconstruction) per preset.

Usage::

    python bench/acquisition.py [--presets demo,simaq-paper] [--size N] [--samples 2]
                                [--set KEY=VALUE ...] [--device cpu]

Each stage is timed separately with ``time.perf_counter`` (first sample = warm-up, reported apart).
The peer, measured in the same run on the same volume, is the ideal acquisition: one plain
``forward_project`` at the nominal angles plus FBP (no artifact, no noise); the ratio says what
the artifacts cost on top of the tomography core. The machine may be shared: compare ratios, not
absolute seconds, between runs.
"""

from __future__ import annotations

import argparse
import os
import platform
import statistics
import time

import torch


def _analytic_phantom(cfg, seed: int, *, index: int = 0, device="cpu"):
    """A fixed ellipsoidal cell (LAC 0.35 1/µm, label 1) with a denser ellipsoid inside: stands in
    for the phantom stage (``--analytic-phantom``) to time the acquisition alone."""
    from types import SimpleNamespace

    nz, ny, nx = cfg.grid.shape
    z, y, x = torch.meshgrid(
        *(torch.arange(n, dtype=torch.float32) - (n - 1) / 2 for n in (nz, ny, nx)), indexing="ij"
    )
    cell = (z / (0.3 * nz)) ** 2 + (y / (0.4 * ny)) ** 2 + (x / (0.25 * nx)) ** 2 <= 1
    inner = ((z - 0.05 * nz) / (0.1 * nz)) ** 2 + (y / (0.12 * ny)) ** 2 + (
        x / (0.1 * nx)
    ) ** 2 <= 1
    lac = torch.where(cell, 0.346, 0.0) + torch.where(inner, 0.224, 0.0)
    labels = cell.to(torch.uint8) + inner.to(torch.uint8)
    return SimpleNamespace(lac=lac.to(device), labels=labels.to(device), objects=[], meta={})


def bench_preset(
    name: str, size: int | None, samples: int, sets: list[str], device: str, analytic: bool = False
) -> dict:
    from factory.acquisition import reconstruct, simulate_acquisition
    from factory.config import load_preset, parse_overrides
    from factory.tomo import fbp, forward_project

    overrides = parse_overrides(sets)
    if analytic:
        generate_phantom = _analytic_phantom
    else:
        from factory.phantom import generate_phantom
    if size:
        overrides.setdefault("grid", {})["shape"] = [size, size, size]
    cfg = load_preset(name, overrides)
    rows = []
    for i in range(samples + 1):
        t = time.perf_counter()
        phantom = generate_phantom(cfg, 0, index=i, device=device)
        t_ph = time.perf_counter() - t
        t = time.perf_counter()
        acq = simulate_acquisition(cfg, phantom, 0, index=i, device=device)
        t_acq = time.perf_counter() - t
        t = time.perf_counter()
        reconstruct(cfg, acq)
        t_rec = time.perf_counter() - t
        lac = phantom.lac.to(device)
        t = time.perf_counter()
        sino = forward_project(lac, acq.angles_deg)
        t_fp = time.perf_counter() - t
        t = time.perf_counter()
        fbp(sino, acq.angles_deg, filter="hamming", shape=tuple(lac.shape))
        t_fbp = time.perf_counter() - t
        rows.append(
            {
                "phantom": t_ph,
                "acquisition": t_acq,
                "reconstruction": t_rec,
                "peer_forward": t_fp,
                "peer_fbp": t_fbp,
                "n_angles": int(acq.angles_deg.size),
            }
        )
    warm, timed = rows[0], rows[1:] or rows[:1]

    def med(k):
        return statistics.median(r[k] for r in timed)

    return {
        "preset": name,
        "shape": list(cfg.grid.shape),
        "n_angles": [r["n_angles"] for r in timed],
        "first_sample_s": sum(warm[k] for k in ("phantom", "acquisition", "reconstruction")),
        **{
            k: med(k)
            for k in ("phantom", "acquisition", "reconstruction", "peer_forward", "peer_fbp")
        },
    }


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    ap.add_argument("--presets", default="demo,simaq-paper")
    ap.add_argument(
        "--size", type=int, default=None, help="override grid.shape to N³ for every preset"
    )
    ap.add_argument("--samples", type=int, default=2, help="timed samples after one warm-up")
    ap.add_argument("--set", dest="sets", action="append", default=[], help="config override K=V")
    ap.add_argument("--device", default="cpu")
    ap.add_argument(
        "--analytic-phantom",
        action="store_true",
        help="replace the phantom stage by a fixed analytic cell (times the acquisition alone)",
    )
    args = ap.parse_args()
    print(
        f"# {platform.machine()} {os.cpu_count()} CPUs, torch {torch.__version__}, "
        f"{torch.get_num_threads()} threads, device {args.device}; the machine may be shared"
    )
    header = (
        f"{'preset':12s} {'shape':>13s} {'angles':>6s} {'phantom':>8s} {'acquis.':>8s} "
        f"{'recon':>7s} {'total':>7s} {'1st':>6s} | {'peer':>6s} {'acq/peer':>8s} {'rec/fbp':>7s}"
    )
    print(header)
    for name in [p.strip() for p in args.presets.split(",") if p.strip()]:
        r = bench_preset(
            name, args.size, args.samples, args.sets, args.device, args.analytic_phantom
        )
        peer = r["peer_forward"] + r["peer_fbp"]
        total = r["phantom"] + r["acquisition"] + r["reconstruction"]
        shape = "x".join(str(s) for s in r["shape"])
        print(
            f"{name:12s} {shape:>13s} {r['n_angles'][0]:6d} {r['phantom']:8.2f} "
            f"{r['acquisition']:8.2f} {r['reconstruction']:7.2f} {total:7.2f} "
            f"{r['first_sample_s']:6.2f} | {peer:6.2f} {r['acquisition'] / r['peer_forward']:8.1f} "
            f"{r['reconstruction'] / r['peer_fbp']:7.2f}",
            flush=True,
        )
    if args.analytic_phantom:
        print("# phantom = a fixed analytic cell (--analytic-phantom), not factory.phantom")
    print("# seconds per sample (median of the timed samples); 1st = first sample incl. warm-up;")
    print("# peer = plain forward projection + FBP of the same phantom at the nominal angles;")
    print(
        "# acq/peer = acquisition / plain forward projection, rec/fbp = reconstruction / plain FBP"
    )


if __name__ == "__main__":
    main()
