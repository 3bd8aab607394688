"""Benchmark: our loss, sliding-window inference and augmentations against MONAI's and kornia's.

Usage::

    python bench/peers.py [--threads 2] [--repeats 5] [--size 128] [--model stack2d:32:4] [--quick]
    python bench/peers.py --only inference --checkpoint RUN --volume recon.npy  # a trained model

The architecture issue asks that where a well-kept field library does what is hand-written, the
project uses it or says why not, with a measurement. Three pieces are compared, each (a) for
agreement where the two define the operation alike and (b) for speed, as the ratio peer / ours
(median of ``--repeats`` timed calls after a warm-up call, both measured in this run, the
calls of ours and the peer's interleaved):

* **loss**: :class:`models.losses.FocalDiceLoss` (focal α 1 γ 2 + soft Dice, smoothing 1, Dice
  pooled over the batch, labels −1 ignored) against MONAI's ``DiceFocalLoss`` and against
  ``DiceLoss`` + ``FocalLoss`` with ``ignore_index`` (forward + backward on a batch of logits).
* **inference**: :func:`models.infer.predict_volume` (every slice of a (size³) volume through the
  2.5D network, whole slices, reflected stack ends) against MONAI's ``SliceInferer`` fed the same
  stacks as channels: whole slices (the same operation) and 64² tiles (at most half a slice)
  with 25 % overlap and Gaussian blending (MONAI's sliding window proper). Random weights and a
  noise volume by default; ``--checkpoint`` and ``--volume`` (normalised as the checkpoint says)
  show how far tiling moves a trained model's output.
* **augmentation**: :func:`models.data.augment_batch` against a kornia ``AugmentationSequential``
  of the nearest ops, on a batch of (8, 7, size, size) stacks and their labels; which of our ops
  kornia has, where the deterministic ones agree, and whether labels stay labels.

MONAI and kornia are not dependencies of the project: without them the comparisons they need
are skipped with a message (exit status 0). The machine may be shared: the 1-minute load average
is printed at the start and the end. ``--quick`` runs tiny sizes once (a smoke test).
"""

from __future__ import annotations

import argparse
import importlib
import os
import platform
import statistics
import subprocess
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

IGNORE = -1


def peer(name: str):
    """The module ``name``, or None (with a message) when it is not installed."""
    try:
        return importlib.import_module(name)
    except ImportError:
        print(f"# {name} is not installed: its comparisons are skipped (pip install {name})")
        return None


def medians(fns: dict, repeats: int, warmup: int = 1) -> dict:
    """Median wall seconds of each function, the calls interleaved (one of each per round, so
    that a change of the machine's load hits all alike) after ``warmup`` untimed rounds."""
    for _ in range(warmup):
        for fn in fns.values():
            fn()
    times = {k: [] for k in fns}
    for _ in range(repeats):
        for k, fn in fns.items():
            t0 = time.perf_counter()
            fn()
            times[k].append(time.perf_counter() - t0)
    return {k: statistics.median(v) for k, v in times.items()}


def load1() -> str:
    return f"{os.getloadavg()[0]:.2f}"


# --- dependencies ---------------------------------------------------------------------------------


def dist_size(name: str) -> tuple[int, int] | None:
    """(bytes, files) of an installed distribution, or None."""
    import importlib.metadata as md

    try:
        dist = md.distribution(name)
    except md.PackageNotFoundError:
        return None
    total = n = 0
    for f in dist.files or []:
        p = f.locate()
        if os.path.isfile(p):
            total += os.path.getsize(p)
            n += 1
    return total, n


def import_seconds(stmt: str) -> float:
    """Seconds ``stmt`` takes in a fresh interpreter, torch already imported (median of 3)."""
    code = f"import time, torch; t = time.perf_counter(); {stmt}; print(time.perf_counter() - t)"
    out = []
    for _ in range(3):
        r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
        out.append(float(r.stdout.strip().splitlines()[-1]))
    return statistics.median(out)


def report_dependencies(mods: dict, quick: bool) -> None:
    import importlib.metadata as md

    print("\n## dependencies (installed size; import time after torch, fresh interpreter)")
    for name, stmt in (
        ("monai", "import monai.losses, monai.inferers"),
        ("kornia", "import kornia.augmentation"),
    ):
        sz = dist_size(name) if mods.get(name) is not None else None
        if sz is None:
            print(f"{name}: not installed")
            continue
        reqs = [r.split(";")[0].strip() for r in (md.requires(name) or []) if "extra ==" not in r]
        extra = [r for r in reqs if not r.lower().startswith(("torch", "numpy"))]
        sizes = [f"{name} {md.version(name)} {sz[0] / 2**20:.1f} MiB ({sz[1]} files)"]
        for r in extra:
            dep = r.split(">")[0].split("=")[0].split("<")[0].strip()
            dsz = dist_size(dep)
            if dsz is not None:
                sizes.append(f"{dep} {md.version(dep)} {dsz[0] / 2**20:.1f} MiB")
        imp = "" if quick else f"; import {import_seconds(stmt):.2f} s"
        print(f"{name}: {' + '.join(sizes)}; requires {', '.join(reqs)}{imp}")


# --- loss -----------------------------------------------------------------------------------------


def bench_loss(monai, args) -> None:
    print("\n## loss: focal (alpha 1, gamma 2) + soft Dice (smooth 1, pooled over the batch)")
    if monai is None:
        print("skipped: monai is not installed")
        return
    import torch
    from monai.losses import DiceFocalLoss, DiceLoss, FocalLoss

    from models.losses import FocalDiceLoss, focal_loss, soft_dice_loss

    b, c, s = (2, 4, 32) if args.quick else (8, 4, args.size)
    g = torch.Generator().manual_seed(0)
    logits0 = 3 * torch.randn(b, c, s, s, generator=g)
    full = torch.randint(0, c, (b, s, s), generator=g)
    sparse = torch.where(torch.rand(b, s, s, generator=g) < 0.1, IGNORE, full)
    print(f"logits ({b}, {c}, {s}, {s}); sparse labels: {float((sparse == IGNORE).float().mean()):.1%} "
          "voxels -1")  # fmt: skip

    ours = FocalDiceLoss()
    dice = DiceLoss(softmax=True, to_onehot_y=True, smooth_nr=1.0, smooth_dr=1.0, batch=True,
                    ignore_index=IGNORE)  # fmt: skip
    focal = FocalLoss(use_softmax=True, to_onehot_y=True, gamma=2.0, alpha=None,
                      ignore_index=IGNORE)  # fmt: skip

    def pair(lg, y):
        return dice(lg, y[:, None]) + focal(lg, y[:, None])

    def value_and_grad(fn, y):
        lg = logits0.clone().requires_grad_(True)
        v = fn(lg, y)
        v.backward()
        return float(v.detach()), lg.grad

    vo, go = value_and_grad(ours, sparse)
    vp, gp = value_and_grad(pair, sparse)
    print(f"DiceLoss + FocalLoss (ignore_index=-1), sparse labels: ours {vo:.6f}, monai {vp:.6f}, "
          f"|diff| {abs(vo - vp):.2e}, max |grad diff| {float((go - gp).abs().max()):.2e}")  # fmt: skip

    dfl = DiceFocalLoss(softmax=True, to_onehot_y=True, smooth_nr=1.0, smooth_dr=1.0, batch=True,
                        gamma=2.0, alpha=None)  # fmt: skip
    onehot = torch.nn.functional.one_hot(full, c).permute(0, 3, 1, 2).float()
    vd = float(dfl(logits0, full[:, None]))
    vo_full = float(ours(logits0, full))
    dd, do = float(dfl.dice(logits0, onehot)), float(soft_dice_loss(logits0, full))
    fd, fo = float(dfl.focal(logits0, onehot)), float(focal_loss(logits0, full))
    print(f"DiceFocalLoss, full labels: ours {vo_full:.6f}, monai {vd:.6f}; Dice terms ours {do:.6f} "
          f"monai {dd:.6f}; focal terms ours (softmax) {fo:.6f}, monai {fd:.6f} (its FocalLoss is "
          f"built with use_softmax={dfl.focal.use_softmax}: per-class sigmoid focal, mean over C)")  # fmt: skip
    try:
        v = float(dfl(logits0, sparse[:, None]))
        print(f"DiceFocalLoss, sparse labels (no ignore_index): {v:.6f} (the -1 voxels counted)")
    except Exception as err:  # noqa: BLE001 - report whatever MONAI raises
        print(f"DiceFocalLoss, sparse labels (no ignore_index): fails, {type(err).__name__}: "
              f"{str(err).splitlines()[0][:90]}")  # fmt: skip
    fa = FocalLoss(use_softmax=True, to_onehot_y=True, gamma=2.0, alpha=1.0, ignore_index=IGNORE)
    print(f"FocalLoss alpha=1.0 (MONAI: weight 1 - alpha on class 0): {float(fa(logits0, sparse[:, None])):.6f} "
          f"vs ours focal {float(focal_loss(logits0, sparse)):.6f}")  # fmt: skip

    def step(fn):
        def run():
            lg = logits0.clone().requires_grad_(True)
            fn(lg, sparse).backward()

        return run

    reps = 1 if args.quick else max(args.repeats, 10)
    t = medians({"ours": step(ours), "monai": step(pair)}, reps)
    t_ours, t_pair = t["ours"], t["monai"]
    print(f"forward + backward: ours {t_ours * 1e3:.1f} ms, monai DiceLoss + FocalLoss "
          f"{t_pair * 1e3:.1f} ms, ratio monai/ours {t_pair / t_ours:.2f}")  # fmt: skip


# --- inference ------------------------------------------------------------------------------------


def bench_inference(monai, args) -> None:
    window, axis, classes, batch = 7, 1, 4, 16
    if args.checkpoint:
        what = f"checkpoint {args.checkpoint}"
    else:
        spec = "stack2d:8:2" if args.quick else args.model
        what = f"{spec}, random weights ({classes} classes, window {window}, axis {axis})"
    print(f"\n## inference: {what}; {batch} slices a batch")
    if monai is None:
        print("skipped: monai is not installed")
        return
    import numpy as np
    import torch
    from monai.inferers import SliceInferer

    from models.data import stack_indices
    from models.infer import normalize_volume, predict_volume
    from models.unet import build_model

    if args.checkpoint:
        from models.infer import load_checkpoint

        model, state = load_checkpoint(args.checkpoint)
        window, axis = int(state["arch"]["window"]), int(state["arch"]["axis"])
    else:
        name, f, d = spec.split(":")
        torch.manual_seed(0)
        model = build_model(name, classes, window=window, features=int(f), depth=int(d)).eval()
    if args.volume:
        vol = np.load(args.volume).astype(np.float32)
        if args.checkpoint:
            vol = normalize_volume(vol, state.get("normalization"))
        print(f"volume {args.volume} {vol.shape}")
    else:  # a smooth N(0, 1)-like volume (the content does not change the cost)
        from scipy.ndimage import gaussian_filter

        n = 16 if args.quick else args.size
        rng = np.random.default_rng(0)
        vol = gaussian_filter(rng.standard_normal((n, n, n)).astype(np.float32), 2.0)
        vol = (vol - vol.mean()) / vol.std()
        print(f"volume: smoothed N(0, 1) noise {vol.shape}")

    def ours():
        return predict_volume(model, vol, axis=axis, window=window, batch_size=batch)

    def stacked() -> torch.Tensor:
        """(1, window, Z, Y, X): channel k is the volume shifted by k - window//2 along ``axis``
        with reflected ends, so that slice i of the channels is our stack around slice i."""
        n = vol.shape[axis]
        idx = np.stack([stack_indices(n, i, window) for i in range(n)], axis=1)  # (window, n)
        return torch.from_numpy(np.stack([np.take(vol, i, axis=axis) for i in idx]))[None]

    def peer_fn(roi, overlap, mode):
        inferer = SliceInferer(spatial_dim=axis, roi_size=roi, sw_batch_size=batch,
                               overlap=overlap, mode=mode, progress=False)  # fmt: skip

        @torch.no_grad()
        def run():
            logits = inferer(stacked(), model)
            return torch.softmax(logits.float(), dim=1)[0].numpy()

        return run

    p_ours = ours()
    other = tuple(s for i, s in enumerate(vol.shape) if i != axis)
    tile = tuple(max(8, min(args.tile, o // 2)) for o in other)
    fns = {
        "ours predict_volume": ours,
        "SliceInferer, whole slices": peer_fn(other, 0.0, "constant"),
        f"SliceInferer, {tile[0]}x{tile[1]} tiles, overlap 0.25, gaussian": peer_fn(
            tile, 0.25, "gaussian"
        ),
    }
    arg_ours = p_ours.argmax(0)
    for label, fn in list(fns.items())[1:]:
        p = fn()
        diff = float(np.abs(p - p_ours).max())
        flips = float((p.argmax(0) != arg_ours).mean())
        print(f"{label}: max |prob diff| {diff:.2e}, argmax differs at {flips:.3%} of voxels")
    times = medians(fns, 1 if args.quick else args.repeats)
    t_ours = times["ours predict_volume"]
    for label, t in times.items():
        print(f"{label}: {t:.3f} s, ratio monai/ours {t / t_ours:.2f}")


# --- augmentation ---------------------------------------------------------------------------------


def bench_augment(kornia, args) -> None:
    b, s, h = (2, 7, 32) if args.quick else (8, 7, args.size)
    print(f"\n## augmentation: batch ({b}, {s}, {h}, {h}) stacks + ({b}, {h}, {h}) labels")
    if kornia is None:
        print("skipped: kornia is not installed")
        return
    import kornia.augmentation as K
    import torch
    from kornia.filters import gaussian_blur2d

    from models.config import AugmentConfig
    from models.data import _blur, augment_batch

    g = torch.Generator().manual_seed(0)
    x = torch.randn(b, s, h, h, generator=g)
    y = torch.randint(0, 4, (b, h, h), generator=g)
    y = torch.where(torch.rand(b, h, h, generator=g) < 0.1, IGNORE, y)
    cfg = AugmentConfig()

    print("what kornia has for each of our ops (2D, per sample, on the stack's channels):")
    for ours_op, theirs in (
        ("flip x / y (p 0.5 each)", "RandomHorizontalFlip / RandomVerticalFlip: same"),
        ("random resized crop (scale 0.5-1, ratio 3/4-4/3)",
         "RandomResizedCrop: same parameters; crops by slicing + resize (cropping_mode)"),
        ("elastic: bicubic-upsampled N(0,1) grid, alpha 4 px, sigma 6 px",
         "RandomElasticTransform: Gaussian-smoothed U(-1,1) noise, alpha in normalised units"),
        ("crop + elastic in ONE resampling", "no: each op resamples again"),
        ("contrast x*f, f~U(0.75,1.25)", "RandomContrast(clip_output=False): same"),
        ("brightness x+d, d~U(-0.2,0.2)", "RandomBrightness((0.8,1.2), clip_output=False): same"),
        ("blur sigma~U(0.1,2) px per sample", "RandomGaussianBlur(sigma range): same, fixed kernel"),
        ("noise sd~U(0,0.3) per sample", "RandomGaussianNoise: one fixed std, not drawn"),
        ("invert x -> -x", "RandomInvert(max_val=0): same"),
        ("draws from a passed torch.Generator (exact resume)",
         "no generator argument: the global torch RNG"),
    ):  # fmt: skip
        print(f"  ours {ours_op:<52} kornia {theirs}")

    # agreement of the deterministic ops
    checks = {
        "horizontal flip": (K.RandomHorizontalFlip(p=1.0)(x), x.flip(-1)),
        "vertical flip": (K.RandomVerticalFlip(p=1.0)(x), x.flip(-2)),
        "contrast f=1.2": (K.RandomContrast((1.2, 1.2), clip_output=False, p=1.0)(x), x * 1.2),
        "brightness d=0.15": (
            K.RandomBrightness((1.15, 1.15), clip_output=False, p=1.0)(x),
            x + 0.15,
        ),
        "invert": (K.RandomInvert(max_val=torch.tensor(0.0), p=1.0)(x), -x),
        "blur sigma 1.5 px": (
            gaussian_blur2d(x, (11, 11), (1.5, 1.5), border_type="reflect"),
            _blur(x, torch.full((b,), 1.5)),
        ),
    }
    for label, (a, r) in checks.items():
        print(f"agreement {label}: max |diff| {float((a - r).abs().max()):.2e}")

    geo = K.AugmentationSequential(
        K.RandomResizedCrop((h, h), scale=(0.5, 1.0), p=1.0),
        K.RandomElasticTransform(kernel_size=(25, 25), sigma=(6.0, 6.0), alpha=(1.0, 1.0),
                                 align_corners=True, padding_mode="border", p=1.0),
        data_keys=["input", "mask"],
    )  # fmt: skip
    _, ym = geo(x, y[:, None].float())
    vals = set(torch.unique(ym).tolist())
    print(f"labels through kornia crop + elastic (data_keys mask): values {sorted(vals)} "
          f"({'labels kept' if vals <= set(range(-1, 4)) else 'INTERPOLATED values'})")  # fmt: skip

    pipe = kornia_pipeline(K, cfg, h)

    torch.manual_seed(1)
    a1 = pipe(x, y[:, None].float())[0]
    torch.manual_seed(1)
    a2 = pipe(x, y[:, None].float())[0]
    st = torch.get_rng_state()
    pipe(x, y[:, None].float())
    moved = not torch.equal(st, torch.get_rng_state())
    print(f"kornia determinism: same global seed -> same batch: {torch.equal(a1, a2)}; "
          f"advances the global RNG: {moved}")  # fmt: skip

    step = [0]

    def ours():
        step[0] += 1
        augment_batch(x, y, cfg, torch.Generator().manual_seed(step[0]))

    def theirs():
        xa, ya = pipe(x, y[:, None].float())
        return xa, ya[:, 0].round().long()

    reps = 1 if args.quick else max(args.repeats, 20)
    ps = ("flip_p", "elastic_p", "crop_p", "brightness_p", "contrast_p", "blur_p", "noise_p",
          "invert_p")  # fmt: skip
    all_on = AugmentConfig(**{k: 1.0 for k in ps})
    pipe_on = kornia_pipeline(K, all_on, h)
    t = medians(
        {
            "ours": ours,
            "kornia": theirs,
            "ours_on": lambda: augment_batch(x, y, all_on, torch.Generator().manual_seed(0)),
            "kornia_on": lambda: pipe_on(x, y[:, None].float()),
        },
        reps,
        warmup=2,
    )
    t_ours, t_k, t_ours_on, t_k_on = t["ours"], t["kornia"], t["ours_on"], t["kornia_on"]
    print(f"per batch, our probabilities: ours {t_ours * 1e3:.1f} ms, kornia {t_k * 1e3:.1f} ms, "
          f"ratio kornia/ours {t_k / t_ours:.2f}")  # fmt: skip
    print(f"per batch, every op on (p 1): ours {t_ours_on * 1e3:.1f} ms, kornia {t_k_on * 1e3:.1f} "
          f"ms, ratio kornia/ours {t_k_on / t_ours_on:.2f}")  # fmt: skip


def kornia_pipeline(K, cfg, h: int):
    """The kornia ops nearest to :func:`models.data.augment_batch` with ``cfg``'s probabilities
    (input and label mask; the noise sd is fixed at the middle of our range: kornia draws none)."""
    import torch

    return K.AugmentationSequential(
        K.RandomHorizontalFlip(p=cfg.flip_p),
        K.RandomVerticalFlip(p=cfg.flip_p),
        K.RandomResizedCrop((h, h), scale=cfg.crop_scale, p=cfg.crop_p),
        K.RandomElasticTransform(kernel_size=(25, 25), sigma=(6.0, 6.0), alpha=(1.0, 1.0),
                                 align_corners=True, padding_mode="border", p=cfg.elastic_p),
        K.RandomContrast(cfg.contrast, clip_output=False, p=cfg.contrast_p),
        K.RandomBrightness((1 - cfg.brightness, 1 + cfg.brightness), clip_output=False,
                           p=cfg.brightness_p),
        K.RandomGaussianBlur((13, 13), cfg.blur_sigma, p=cfg.blur_p),
        K.RandomGaussianNoise(std=sum(cfg.noise_sd) / 2, p=cfg.noise_p),
        K.RandomInvert(max_val=torch.tensor(0.0), p=cfg.invert_p),
        data_keys=["input", "mask"],
    )  # fmt: skip


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--repeats", type=int, default=5)
    ap.add_argument("--size", type=int, default=128)
    ap.add_argument("--model", default="stack2d:32:4", help="MODEL:FEATURES:DEPTH")
    ap.add_argument(
        "--checkpoint", help="inference: a trained checkpoint instead of random weights"
    )
    ap.add_argument("--volume", help="inference: a (Z, Y, X) .npy volume instead of noise")
    ap.add_argument("--tile", type=int, default=64, help="MONAI tile side (at most half a slice)")
    ap.add_argument("--only", default="loss,inference,augment", help="comma-separated parts")
    ap.add_argument("--quick", action="store_true", help="tiny sizes, one repeat (smoke test)")
    args = ap.parse_args(argv)

    import warnings

    import torch

    # kornia's elastic transform calls affine_grid without align_corners on its noise field
    warnings.filterwarnings("ignore", message="Default grid_sample and affine_grid")
    torch.set_num_threads(args.threads)
    print(f"# {platform.processor() or platform.machine()}, {os.cpu_count()} CPUs, no GPU used, "
          f"{torch.get_num_threads()} torch threads, torch {torch.__version__}, "
          f"python {platform.python_version()}")  # fmt: skip
    print(f"# load average (1 min) at start: {load1()}")
    monai = peer("monai")
    kornia = peer("kornia")
    versions = [f"{m.__name__} {m.__version__}" for m in (monai, kornia) if m is not None]
    if versions:
        print("# " + ", ".join(versions))
    report_dependencies({"monai": monai, "kornia": kornia}, args.quick)
    parts = set(args.only.split(","))
    if "loss" in parts:
        bench_loss(monai, args)
    if "inference" in parts:
        bench_inference(monai, args)
    if "augment" in parts:
        bench_augment(kornia, args)
    print(f"\n# load average (1 min) at end: {load1()}")


if __name__ == "__main__":
    main()
