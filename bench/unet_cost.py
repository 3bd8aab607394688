"""Benchmark: seconds per training step of the U-Nets, as ratios against the SimAQ 2.5D U-Net.

Usage::

    python bench/unet_cost.py [--threads 2] [--batch 8] [--size 64] [--nets unet25d:16:3,...]

Each network (``MODEL:FEATURES:DEPTH[:WINDOW[:BATCH]]``, default window 7 and ``--batch``) takes
batch × window-slice stacks of size × size, computes the training loss (focal + Dice) and takes one
Adam step; the median of 5 timed steps after 2 warm-up steps is printed with its ratio to the first
network of the list, and the labelled voxels a second of training supervises (a centre-slice model
learns from one slice of each stack, the dense ``unet3d`` from all of them), all measured in this
run on this machine. The machine may be shared: the load average is printed at start and end.
"""

from __future__ import annotations

import argparse
import os
import platform
import statistics
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

DEFAULT_NETS = "unet25d:16:3,stack2d:16:3,stack2d:32:4,stack2d:48:4,unet2d:16:3,unet3d:16:4:16:2,unet3d:8:4:16:2"


def step_seconds(
    model: str, features: int, depth: int, batch: int, size: int, window: int = 7
) -> float:
    """Median seconds of one training step (forward, loss, backward, Adam) of a 4-class U-Net."""
    import torch

    from models.losses import FocalDiceLoss
    from models.unet import build_model, is_dense, param_groups

    torch.manual_seed(0)
    net = build_model(model, 4, window=window, features=features, depth=depth)
    opt = torch.optim.Adam(param_groups(net, 1e-5), lr=1e-4)
    loss_fn = FocalDiceLoss()
    ydims = (window, size, size) if is_dense(model) else (size, size)
    x, y = torch.randn(batch, window, size, size), torch.randint(0, 4, (batch, *ydims))
    times = []
    for i in range(7):
        t0 = time.perf_counter()
        loss = loss_fn(net(x), y)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        if i >= 2:
            times.append(time.perf_counter() - t0)
    return statistics.median(times)


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--batch", type=int, default=8)
    ap.add_argument("--size", type=int, default=64)
    ap.add_argument("--nets", default=DEFAULT_NETS)
    args = ap.parse_args(argv)

    import torch

    from models.unet import build_model, is_dense

    torch.set_num_threads(args.threads)
    print(f"# {platform.processor() or platform.machine()}, {os.cpu_count()} CPUs, "
          f"{args.threads} torch threads, torch {torch.__version__}")  # fmt: skip
    print("# load average at start: {:.2f} {:.2f} {:.2f}".format(*os.getloadavg()))
    print(f"# batch {args.batch} x window x {args.size} x {args.size} (unless the spec says)")
    print(f"{'network':<18} {'params':>9} {'s/step':>8} {'ratio':>6} {'voxels/s':>9}")
    first = None
    for spec in args.nets.split(","):
        model, f, d, *rest = spec.split(":")
        window = int(rest[0]) if rest else 7
        batch = int(rest[1]) if len(rest) > 1 else args.batch
        net = build_model(model, 4, window=window, features=int(f), depth=int(d))
        n = sum(p.numel() for p in net.parameters())
        s = step_seconds(model, int(f), int(d), batch, args.size, window)
        first = first or s
        vox = batch * args.size**2 * (window if is_dense(model) else 1)
        print(f"{spec:<18} {n / 1e6:>8.2f}M {s:>8.3f} {s / first:>6.2f} {vox / s:>9.0f}")
    print("# load average at end: {:.2f} {:.2f} {:.2f}".format(*os.getloadavg()))


if __name__ == "__main__":
    main()
