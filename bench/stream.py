"""Benchmark: is the training input pipeline ever the bottleneck? One run, same machine.

Usage::

    python bench/stream.py [--samples 8] [--size 64] [--batch-size 8] [--threads 1]
                           [--nets 64:4,16:3] [--steps 3] [--data DATASET]

Three rates, in stacks (training samples) per second:

1. **input, local shards**: :class:`models.data.StackStream` over one full pass of the ``train``
   shards of a dataset on local disk, exactly as a Ray Train worker runs it: sha256 check of each
   shard, each sample read by seeking to its span, gzip inflate and ``.npy`` decode, random 7-slice
   stacks in the run's global order, background-only
   stacks dropped, batches collated and augmented (every augmentation of the reference on);
2. **input, loopback S3**: the same from a real S3 HTTP endpoint (moto's ``ThreadedMotoServer``
   started here on 127.0.0.1; the shards are uploaded first, the upload is not timed);
3. **training step**: forward + focal/Dice loss + backward + Adam step of the 2.5D U-Net on one
   batch (after one warm-up step), for each ``FEATURES:DEPTH`` of ``--nets``: by default the
   reference's size (64 features, depth 4) and the small network of the README's CPU demo run
   (16 features, depth 3).

Everything runs with ``--threads`` torch threads (default 1: what a Ray Train worker with one CPU
gets, ``OMP_NUM_THREADS=1``). In training the input runs in a background thread
(:class:`models.data.Prefetcher`) next to the step, so the pipeline keeps up when its rate is at
least the step rate; the target is ≥ 2×. The dataset is the ``demo`` preset (``--size`` grid,
default 64³), generated into a temporary directory unless ``--data`` names one.

The machine may be shared with other jobs: compare the ratios printed here, not absolute rates
across runs.
"""

from __future__ import annotations

import argparse
import os
import platform
import socket
import tempfile
import time

import numpy as np


def _free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _make_dataset(out: str, samples: int, size: int) -> None:
    from factory.config import load_preset
    from factory.dataset.generate import generate_dataset

    over = {
        "grid": {"shape": [size, size, size]},
        "dataset": {
            "num_samples": samples,
            "shard_size": max(1, samples // 2),
            "splits": {"train": 1.0},
        },
    }
    cfg = load_preset("demo", over)
    generate_dataset(cfg, out, seed=0, executor="local")


def _upload(local: str, fs, root: str) -> None:
    for dirpath, _, files in os.walk(local):
        for name in files:
            path = os.path.join(dirpath, name)
            rel = os.path.relpath(path, local).replace(os.sep, "/")
            with open(path, "rb") as src, fs.open_output_stream(f"{root}/{rel}") as dst:
                dst.write(src.read())


def input_rate(url, cfg) -> tuple[float, int, float]:
    """``(stacks/s, stacks, seconds)`` of one pass over the train shards of the dataset ``url``
    (a Store, or a path or URL)."""
    from factory.dataset.manifest import read_manifest
    from models.data import SampleSource, StackStream
    from models.order import StreamState, block_size_for

    m = read_manifest(url)
    shards = m.split_shards("train")
    ncls = len(m.labels["classes"])
    t0 = time.perf_counter()
    src = SampleSource(url, shards, fields=m.fields, num_classes=ncls)
    state = StreamState.new(src.n, block_size_for(src.n, cfg.mix_volumes, 1), cfg.seed, 1)
    n = 0
    for x, _, where in StackStream(src, cfg, state, 0).batches():
        if any(e > 0 for e, _, _ in where["stacks"]):
            break  # the first stack of the second pass: one pass done
        n += x.shape[0]
    dt = time.perf_counter() - t0
    return n / dt, n, dt


def step_rate(cfg, num_classes: int, hw: tuple[int, int], steps: int) -> float:
    """Stacks/s one optimiser step consumes (mean over ``steps`` after one warm-up)."""
    import torch

    from models.losses import FocalDiceLoss
    from models.unet import build_model, param_groups

    torch.manual_seed(0)
    net = build_model(
        cfg.model, num_classes, window=cfg.window, features=cfg.features, depth=cfg.depth
    )
    opt = torch.optim.Adam(param_groups(net, cfg.weight_decay), lr=cfg.lr)
    loss_fn = FocalDiceLoss()
    x = torch.randn(cfg.batch_size, cfg.window, *hw)
    y = torch.randint(0, num_classes, (cfg.batch_size, *hw))
    times = []
    for i in range(steps + 1):
        t0 = time.perf_counter()
        loss = loss_fn(net(x), y)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        if i:
            times.append(time.perf_counter() - t0)
    return cfg.batch_size / float(np.mean(times))


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--samples", type=int, default=8)
    ap.add_argument("--size", type=int, default=64)
    ap.add_argument("--batch-size", type=int, default=8)
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--nets", default="64:4,16:3", help="FEATURES:DEPTH,... of the U-Nets")
    ap.add_argument("--steps", type=int, default=3)
    ap.add_argument("--data", default=None, help="an existing dataset (default: generate one)")
    args = ap.parse_args()

    import torch

    torch.set_num_threads(args.threads)
    os.environ.setdefault("AWS_ACCESS_KEY_ID", "bench")
    os.environ.setdefault("AWS_SECRET_ACCESS_KEY", "bench-secret")
    os.environ.setdefault("AWS_DEFAULT_REGION", "us-east-1")
    os.environ.pop("AWS_SESSION_TOKEN", None)

    from factory.dataset.manifest import read_manifest
    from factory.dataset.storage import Store
    from models.config import TrainConfig

    nets = [tuple(int(v) for v in item.split(":")) for item in args.nets.split(",")]
    cfg = TrainConfig(batch_size=args.batch_size)
    print(
        f"machine: {platform.machine()} {os.cpu_count()} CPUs, torch threads {args.threads}; "
        f"batch {cfg.batch_size} x {cfg.window} slices; augmentations on"
    )
    with tempfile.TemporaryDirectory(prefix="simaq-stream-") as tmp:
        data = args.data
        if data is None:
            data = os.path.join(tmp, "ds")
            t0 = time.perf_counter()
            _make_dataset(data, args.samples, args.size)
            print(f"generated {args.samples} demo samples at {args.size}^3 in "
                  f"{time.perf_counter() - t0:.1f} s")  # fmt: skip
        m = read_manifest(data)
        shape = m.fields["recon"].shape_max
        hw = tuple(s for i, s in enumerate(shape) if i != cfg.axis)

        local, n_local, t_local = input_rate(data, cfg)

        import logging

        from moto.server import ThreadedMotoServer

        logging.getLogger("werkzeug").setLevel(logging.ERROR)  # one line per HTTP request

        port = _free_port()
        server = ThreadedMotoServer(ip_address="127.0.0.1", port=port, verbose=False)
        server.start()
        try:
            endpoint = f"http://127.0.0.1:{port}"
            import boto3

            boto3.client("s3", endpoint_url=endpoint).create_bucket(Bucket="bench")
            store = Store("s3://bench/ds", endpoint)
            _upload(data, store.fs, store.path)
            s3, n_s3, t_s3 = input_rate(store, cfg)
        finally:
            server.stop()

        ncls = len(m["labels"]["classes"])
        steps = {
            (f, d): step_rate(
                cfg.model_copy(update={"features": f, "depth": d}), ncls, hw, args.steps
            )
            for f, d in nets
        }

    print(f"dataset: {m['num_samples']} samples {tuple(shape)}, train shards read once per pass")
    print(f"input, local shards: {local:8.1f} stacks/s ({n_local} stacks in {t_local:.1f} s)")
    print(f"input, loopback S3:  {s3:8.1f} stacks/s ({n_s3} stacks in {t_s3:.1f} s)")
    for (f, d), step in steps.items():
        worst = min(local, s3) / step
        verdict = "met" if worst >= 2 else "NOT met"
        print(
            f"train step, 2.5D U-Net {f} features depth {d}: {step:7.2f} stacks/s; "
            f"input/step local {local / step:.1f}x, S3 {s3 / step:.1f}x "
            f"(target >= 2x: {verdict})"
        )


if __name__ == "__main__":
    main()
