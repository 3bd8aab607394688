"""Benchmark: what exact resume costs. One run, same machine, ratios against peers of that run.

Usage::

    python bench/checkpoint.py [--samples 8] [--size 64] [--nets 64:4,16:3] [--data DATASET]

1. **Checkpoint**: for each ``FEATURES:DEPTH`` U-Net (the SimAQ reference 64:4 and the CPU
   preset's 16:3), the seconds :func:`models.infer.save_checkpoint` takes to write model, Adam
   state and ``state.json`` (stream position included) to local disk (median of 3) and the bytes
   written, beside the seconds of one training step of that network (batch 8 × 7 slices, one
   thread): the ratio says how many steps one checkpoint costs.
2. **Stream position**: the bytes of :class:`models.order.StreamState` in ``state.json`` for 8
   ranks, before and after a resume on 5 (the carry list): independent of the sample count.
3. **Seeking**: seconds per sample to read a sample by seeking to its span
   (:func:`factory.dataset.manifest.read_sample`) against reading it in a sequential pass of its
   shard (:func:`~factory.dataset.manifest.iter_samples`, sha256 checked), and the one-time pass
   that checks a shard and notes the spans (:func:`~factory.dataset.manifest.shard_spans`).

The machine may be shared: the load average is printed at start and end.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import sys
import tempfile
import time

import numpy as np

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


def _load() -> str:
    return "{:.2f} {:.2f} {:.2f}".format(*os.getloadavg())


def checkpoint_cost(features: int, depth: int, ncls: int = 7, hw: int = 64) -> dict:
    """Seconds and bytes of one checkpoint, and seconds of one training step, of a U-Net."""
    import torch

    from models.infer import save_checkpoint
    from models.losses import FocalDiceLoss
    from models.order import StreamState
    from models.unet import build_model, param_groups

    torch.manual_seed(0)
    net = build_model("unet25d", ncls, window=7, features=features, depth=depth)
    opt = torch.optim.Adam(param_groups(net, 1e-5), lr=1e-4)
    x, y = torch.randn(8, 7, hw, hw), torch.randint(0, ncls, (8, hw, hw))
    steps = []
    for _ in range(3):
        t0 = time.perf_counter()
        loss = FocalDiceLoss()(net(x), y)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        steps.append(time.perf_counter() - t0)
    state = {"step": 1, "stream": StreamState.new(10**6, 4, 0, 8).to_json(), "history": []}
    saves, size = [], 0
    for _ in range(3):
        with tempfile.TemporaryDirectory() as d:
            t0 = time.perf_counter()
            save_checkpoint(d, net, opt, state)
            saves.append(time.perf_counter() - t0)
            size = sum(os.path.getsize(os.path.join(d, f)) for f in os.listdir(d))
    step_s, save_s = float(np.median(steps[1:])), float(np.median(saves))
    return {"net": f"{features}:{depth}", "save_s": save_s, "bytes": size, "step_s": step_s,
            "params": sum(p.numel() for p in net.parameters())}  # fmt: skip


def state_bytes() -> tuple[int, int]:
    """Bytes of a stream position of 8 ranks part-way, and after a resume on 5."""
    from models.order import StreamState

    s = StreamState.new(10**6, 4, 0, 8)
    s.positions = [[1000 + r, 7] for r in range(8)]
    return len(json.dumps(s.to_json())), len(json.dumps(s.replan(5).to_json()))


def seek_cost(data: str) -> dict:
    """Seconds per sample: seek read vs sequential read, and the one-time pass per shard."""
    from factory.dataset.manifest import iter_samples, read_manifest, read_sample, shard_spans

    m = read_manifest(data)
    seq, seek, passes, n = 0.0, 0.0, 0.0, 0
    for rec in m.shards:
        t0 = time.perf_counter()
        for _ in iter_samples(data, rec, fields=m.fields):
            pass
        seq += time.perf_counter() - t0
        t0 = time.perf_counter()
        spans = shard_spans(data, rec)
        passes += time.perf_counter() - t0
        t0 = time.perf_counter()
        for i, span in spans.items():
            read_sample(data, rec, i, span, fields=m.fields)
        seek += time.perf_counter() - t0
        n += rec.nsamples
    return {"samples": n, "shards": len(m.shards), "seq_s": seq / n, "seek_s": seek / n,
            "pass_s": passes / len(m.shards)}  # fmt: skip


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--samples", type=int, default=8)
    ap.add_argument("--size", type=int, default=64)
    ap.add_argument("--nets", default="64:4,16:3", help="FEATURES:DEPTH,... of the U-Nets")
    ap.add_argument("--data", default=None, help="an existing dataset (default: generate one)")
    args = ap.parse_args()

    import torch

    torch.set_num_threads(1)
    print(f"machine: {platform.machine()} {os.cpu_count()} CPUs, 1 torch thread; "
          f"load average at start {_load()}")  # fmt: skip
    print("\n| network | parameters | checkpoint | bytes | one step | checkpoint / step |")
    print("|---|---|---|---|---|---|")
    for item in args.nets.split(","):
        f, d = (int(v) for v in item.split(":"))
        r = checkpoint_cost(f, d)
        print(f"| {r['net']} | {r['params'] / 1e6:.2f} M | {r['save_s'] * 1e3:.0f} ms | "
              f"{r['bytes'] / 2**20:.1f} MiB | {r['step_s'] * 1e3:.0f} ms | "
              f"{r['save_s'] / r['step_s']:.2f} |")  # fmt: skip
    a, b = state_bytes()
    print(
        f"\nstream position in state.json: {a} B for 8 ranks, {b} B after a resume on 5 "
        "(the same for any number of samples)"
    )
    with tempfile.TemporaryDirectory(prefix="simaq-ckpt-") as tmp:
        data = args.data
        if data is None:
            from factory.config import load_preset
            from factory.dataset.generate import generate_dataset

            data = os.path.join(tmp, "ds")
            cfg = load_preset(
                "demo",
                {
                    "grid": {"shape": [args.size] * 3},
                    "dataset": {
                        "num_samples": args.samples,
                        "shard_size": 4,
                        "splits": {"train": 1.0},
                    },
                },
            )
            generate_dataset(cfg, data, seed=0, executor="local")
        r = seek_cost(data)
        print(f"\nreads ({r['samples']} samples in {r['shards']} shards): seeking "
              f"{r['seek_s'] * 1e3:.1f} ms/sample, sequential pass {r['seq_s'] * 1e3:.1f} "
              f"ms/sample (seek / sequential {r['seek_s'] / r['seq_s']:.2f}); first touch of a "
              f"shard (sha256 + spans) {r['pass_s'] * 1e3:.1f} ms")  # fmt: skip
    print(f"\nload average at end {_load()}")


if __name__ == "__main__":
    main()
