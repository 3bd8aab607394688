"""Shared pieces of the inference tests: a tiny model trained in-process (plain PyTorch, no Ray)
on the session's ``small_dataset`` and written as a real run directory, and the real CLI runner.

The checkpoint has the layout and ``state.json`` of ``simaq train`` (``RUN/ray/checkpoint_NNNNNN/``
with ``model.pt`` and ``state.json``), so ``--model`` resolves it as it would a Ray Train run.
"""

from __future__ import annotations

import os

import numpy as np

from factory.dataset.manifest import iter_samples, read_manifest

TINY_ARCH = {"model": "unet25d", "features": 4, "depth": 2, "window": 7, "axis": 1}


def split_samples(ds, split: str) -> list[dict]:
    """Every sample (``recon``, ``labels``, ``meta``) of one split of a local dataset."""
    m = read_manifest(str(ds))
    return [s for rec in m.split_shards(split) for s in iter_samples(str(ds), rec, fields=m.fields)]


def _train(ds, ncls: int, *, steps: int, seed: int, lr: float):
    import torch

    from models.data import volume_stacks
    from models.losses import FocalDiceLoss
    from models.unet import build_model

    torch.manual_seed(seed)
    net = build_model(TINY_ARCH["model"], ncls, window=7, features=TINY_ARCH["features"], depth=2)
    opt = torch.optim.Adam(net.parameters(), lr=lr)
    loss_fn = FocalDiceLoss()
    rng = np.random.default_rng(seed)
    pairs = [
        pair
        for s in split_samples(ds, "train")
        for pair in volume_stacks(
            s["recon"].astype(np.float32), s["labels"], axis=1, window=7, rng=rng
        )
    ]
    net.train()
    for _ in range(steps):
        pick = rng.choice(len(pairs), size=8, replace=False)
        x = torch.from_numpy(np.stack([pairs[i][0] for i in pick]))
        y = torch.from_numpy(np.stack([pairs[i][1] for i in pick]))
        loss = loss_fn(net(x), y)
        opt.zero_grad()
        loss.backward()
        opt.step()
    return net.eval()


def train_tiny_run(ds, run_dir, *, steps: int, seed: int = 0, lr: float = 0.01) -> str:
    """Train the tiny 2.5D U-Net for ``steps`` steps (batch 8) on the train split of ``ds``;
    write ``run_dir/ray/checkpoint_000001``; return that checkpoint directory."""
    import torch

    from models.infer import save_checkpoint

    m = read_manifest(str(ds))
    ncls = len(m.labels["classes"])
    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # tiny convolutions: more threads only contend on a shared machine
    try:
        net = _train(ds, ncls, steps=steps, seed=seed, lr=lr)
    finally:
        torch.set_num_threads(threads)
    rc = m.config["reconstruction"]
    state = {
        "arch": TINY_ARCH,
        "num_classes": ncls,
        "labels": m.labels,
        "dataset": {
            "url": str(ds),
            "name": m.name,
            "version": m.version,
            "content_sha256": m.content_sha256,
            "voxel_nm": m.config["grid"]["voxel_nm"],
        },
        "normalization": {
            "method": rc.get("normalize", "quantile"),
            "fov_inset_px": rc.get("fov_inset_px", 5),
            "fov": "cylinder",
        },
        "epoch": 1,
        "step": steps,
        "history": [],
    }
    ckpt = os.path.join(str(run_dir), "ray", "checkpoint_000001")
    os.makedirs(ckpt, exist_ok=True)
    save_checkpoint(ckpt, net.eval(), None, state)
    return ckpt
