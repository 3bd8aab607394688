"""GPU check in one command: the CUDA paths of the project, measured and compared with the CPU.

Usage::

    python bench/gpu.py --out DIR [--parts a,b,c,d,e,f] [--budget-s 420] [--cpu-dry-run]

Writes ``DIR/gpu.json`` (every number, per part: status ok / failed / skipped, seconds, results)
and ``DIR/gpu.md`` (a markdown table). Meant for one H200 with a few minutes of device time, on a
machine that may lack Ray, pydantic, xraylib, webdataset, mrcfile and pytest: every part runs in
its own ``try``; a part that needs a missing package is reported as skipped with one line and the
others go on. Parts:

a. ``pytest -m gpu`` on the test files that carry the marker (in a subprocess);
b. the CUDA projector, adjoint and FBP (pure-PyTorch backend) against the CPU result of the same
   operator: max relative error, relative L2, time (first call with set-up, then steady state);
c. torch-radon, when importable, against our CUDA projector (forward and FBP);
d. one ``simaq-paper`` 512³ sample end to end on the GPU, per stage (phantom, acquisition,
   reconstruction, copy to host) and in total (target < 1 s), with peak GPU memory; without the
   config model (pydantic) or xraylib it falls back to what runs without them: projection + FBP +
   quantile normalisation at 512³ with the preset's tilt range (read from the YAML) and says so;
e. training steps of the reference-sized 2.5D U-Net (64 features, depth 4, 7-slice stacks of
   512², batch 8, focal + Dice, Adam) on random inputs: steps/s, slices/s, peak memory, AMP on/off;
f. with Ray importable: ``generate`` of a few ``simaq-paper`` samples on GPU actors (samples/s).

Without a CUDA device it prints one line and exits 0 at once (``gpu.json`` says so).
``--cpu-dry-run`` runs parts a-e on the CPU with tiny sizes (a tiny network for e; f is reported
skipped; d runs both the full stages and the fallback) so that every code path is exercised where
no GPU is (tests/test_bench_gpu.py); its numbers mean nothing.

Parts run in order a-f; ``--budget-s`` (default 420 s, to finish within 8 minutes) skips the parts
that would start after it has run out.
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import os
import platform
import re
import statistics
import subprocess
import sys
import time
import traceback
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:  # the project need not be installed on the GPU machine
    sys.path.insert(0, str(ROOT))

PART_NAMES = {
    "a": "pytest -m gpu",
    "b": "CUDA projector / adjoint / FBP vs CPU",
    "c": "torch-radon vs our CUDA projector",
    "d": "simaq-paper sample end to end",
    "e": "U-Net training steps",
    "f": "generate on Ray GPU actors",
}


class Skip(Exception):
    """A part that cannot run here (missing package, no device): reported in one line."""


def need(*modules: str) -> None:
    missing = [m for m in modules if importlib.util.find_spec(m) is None]
    if missing:
        raise Skip(f"{', '.join(missing)} not installed")


def have(module: str) -> bool:
    return importlib.util.find_spec(module) is not None


# --- timing helpers ------------------------------------------------------------------------------


class Ctx:
    """What every part needs: device, sizes (full or dry run), the deadline."""

    def __init__(self, args):
        import torch

        self.torch = torch
        self.dry = args.cpu_dry_run
        self.dev = torch.device("cpu" if self.dry else "cuda")
        self.cuda = self.dev.type == "cuda"
        self.args = args

    def sync(self) -> None:
        if self.cuda:
            self.torch.cuda.synchronize()

    def timed(self, fn, *a, **kw):
        """``(seconds, result)`` of one call, synchronised."""
        self.sync()
        t = time.perf_counter()
        out = fn(*a, **kw)
        self.sync()
        return time.perf_counter() - t, out

    def reset_peak(self) -> None:
        if self.cuda:
            self.torch.cuda.empty_cache()
            self.torch.cuda.reset_peak_memory_stats()

    def peak_mib(self) -> float | None:
        if self.cuda:
            return self.torch.cuda.max_memory_allocated() / 2**20
        return None


def _errors(got, ref) -> dict:
    """Max |got − ref| / max |ref| and relative L2 (both on the CPU in float64)."""
    g = got.detach().double().cpu()
    r = ref.detach().double().cpu()
    scale = max(float(r.abs().max()), 1e-30)
    return {
        "max_rel_err": float((g - r).abs().max()) / scale,
        "rel_l2": float((g - r).norm() / max(float(r.norm()), 1e-30)),
    }


def _phantom_volume(torch, shape):
    """A (Z, Y, X) test volume: a scaled Shepp–Logan slice, varied along Y."""
    import numpy as np

    from factory.tomo.analytic import SHEPP_LOGAN, ellipse_image, scaled

    nz, ny, nx = shape
    img = ellipse_image(scaled(SHEPP_LOGAN, 0.45 * min(nz, nx)), (nz, nx), supersample=1)
    w = 1.0 + 0.2 * np.sin(np.linspace(0, np.pi, ny))
    return torch.from_numpy((img[:, None, :] * w[None, :, None]).astype(np.float32))


# --- parts ---------------------------------------------------------------------------------------


def part_a(ctx: Ctx) -> dict:
    """pytest -m gpu on the files with the marker, in a subprocess."""
    need("pytest")
    files = sorted(
        str(p.relative_to(ROOT))
        for p in (ROOT / "tests").glob("test_*.py")
        if "mark.gpu" in p.read_text(encoding="utf-8")
    )
    if not files:
        raise Skip("no test file carries @pytest.mark.gpu")
    cmd = [sys.executable, "-m", "pytest", "-m", "gpu", "-q", "-p", "no:cacheprovider", "-rs"]
    cmd += ["--continue-on-collection-errors", *files]
    env = dict(
        os.environ, PYTHONPATH=os.pathsep.join([str(ROOT), os.environ.get("PYTHONPATH", "")])
    )
    timeout = 60 if ctx.dry else 180
    try:
        proc = subprocess.run(
            cmd, cwd=ROOT, env=env, capture_output=True, text=True, timeout=timeout
        )
    except subprocess.TimeoutExpired:
        raise RuntimeError(f"pytest did not finish within {timeout} s") from None
    lines = [ln for ln in proc.stdout.splitlines() if ln.strip()]
    summary = next(
        (ln.strip("= ").strip() for ln in reversed(lines) if re.search(r"\d+ \w+ in ", ln)),
        lines[-1] if lines else "",
    )
    counts = {
        k: int(v) for v, k in re.findall(r"(\d+) (passed|failed|skipped|error|errors)", summary)
    }
    res = {"files": files, "returncode": proc.returncode, "summary": summary, **counts}
    if proc.returncode not in (0, 5):  # 5: nothing selected
        res["output_tail"] = (proc.stdout + proc.stderr)[-3000:]
        raise PartFailed(f"pytest exit {proc.returncode}: {summary}", res)
    res["line"] = summary
    return res


class PartFailed(RuntimeError):
    """A part that ran but failed its check; ``result`` is still recorded."""

    def __init__(self, msg: str, result: dict):
        super().__init__(msg)
        self.result = result


def part_b(ctx: Ctx) -> dict:
    """Our CUDA operators against the CPU result of the same operator."""
    import numpy as np

    from factory.tomo import ParallelProjector

    torch = ctx.torch
    if not ctx.cuda and not ctx.dry:
        raise Skip("no CUDA device")
    shape = (32, 4, 32) if ctx.dry else tuple(ctx.args.tomo_shape)
    n_ang = 20 if ctx.dry else ctx.args.tomo_angles
    angles = np.linspace(-50.0, 50.0, n_ang, endpoint=False)
    vol = _phantom_volume(torch, shape)
    out: dict = {"shape_zyx": list(shape), "n_angles": n_ang}

    def run(dev):
        p = ParallelProjector((shape[0], shape[2]), angles, device=dev)
        v = vol.to(dev)
        cold_f, sino = ctx.timed(p.forward, v)
        cold_a, adj = ctx.timed(p.adjoint, sino)
        cold_r, rec = ctx.timed(p.fbp, sino, "hamming")
        steady = {"forward": [], "adjoint": [], "fbp": []}
        for _ in range(2 if ctx.dry else 5):
            steady["forward"].append(ctx.timed(p.forward, v)[0])
            steady["adjoint"].append(ctx.timed(p.adjoint, sino)[0])
            steady["fbp"].append(ctx.timed(p.fbp, sino, "hamming")[0])
        times = {k: statistics.median(x) for k, x in steady.items()}
        cold = {"forward": cold_f, "adjoint": cold_a, "fbp": cold_r}
        return p, (sino, adj, rec), times, cold

    _, cpu_out, cpu_t, cpu_cold = run(torch.device("cpu"))
    ctx.reset_peak()
    p, dev_out, dev_t, dev_cold = run(ctx.dev)
    out["peak_gpu_mib"] = ctx.peak_mib()
    for name, c, g in zip(("forward", "adjoint", "fbp"), cpu_out, dev_out, strict=True):
        out[name] = {
            **_errors(g, c),
            "cpu_s": cpu_t[name],
            "device_s": dev_t[name],
            "device_first_call_s": dev_cold[name],
            "cpu_first_call_s": cpu_cold[name],
            "speedup": cpu_t[name] / max(dev_t[name], 1e-12),
        }
    p.release()
    worst = max(out[k]["max_rel_err"] for k in ("forward", "adjoint", "fbp"))
    out["line"] = (
        f"{shape} x {n_ang} angles: max rel err fwd {out['forward']['max_rel_err']:.1e} "
        f"adj {out['adjoint']['max_rel_err']:.1e} fbp {out['fbp']['max_rel_err']:.1e}; "
        + ", ".join(
            f"{k} {out[k]['device_s'] * 1e3:.1f} ms ({out[k]['speedup']:.0f}x CPU)"
            for k in ("forward", "adjoint", "fbp")
        )
    )
    if worst > 1e-3:
        raise PartFailed(f"device result differs from CPU: max rel err {worst:.2e}", out)
    return out


def part_c(ctx: Ctx) -> dict:
    """torch-radon (when importable) against our CUDA projector."""
    from factory.tomo import Geometry, fbp, forward_project, radon_backend

    if not radon_backend.available():
        raise Skip("torch-radon not importable: CUDA runs use the pure-PyTorch projector")
    if not ctx.cuda:
        raise Skip("torch-radon needs a CUDA device")
    import numpy as np

    torch = ctx.torch
    shape = tuple(ctx.args.tomo_shape)
    n_ang = ctx.args.tomo_angles
    angles = np.linspace(-50.0, 50.0, n_ang, endpoint=False)
    vol = _phantom_volume(torch, shape).to(ctx.dev)
    geom = Geometry.make((shape[0], shape[2]), angles)
    out: dict = {"shape_zyx": list(shape), "n_angles": n_ang}
    out["usable"] = bool(radon_backend.usable(vol, geom))
    if not out["usable"]:
        raise PartFailed("torch-radon is importable but not usable for this geometry", out)

    def both(fn):
        fn()  # warm-up (calibration, operator set-up)
        t = [ctx.timed(fn)[0] for _ in range(5)]
        return statistics.median(t), fn()

    with torch.no_grad():
        t_r, s_r = both(lambda: forward_project(vol, angles))
        with radon_backend.disabled():
            t_o, s_o = both(lambda: forward_project(vol, angles))
        f_r, r_r = both(lambda: fbp(s_o, angles, filter="hamming", shape=shape))
        with radon_backend.disabled():
            f_o, r_o = both(lambda: fbp(s_o, angles, filter="hamming", shape=shape))
    out["forward"] = {**_errors(s_r, s_o), "radon_s": t_r, "ours_s": t_o, "ratio": t_o / t_r}
    out["fbp"] = {**_errors(r_r, r_o), "radon_s": f_r, "ours_s": f_o, "ratio": f_o / f_r}
    out["line"] = (
        f"forward rel L2 {out['forward']['rel_l2']:.1e}, ours/radon time "
        f"{out['forward']['ratio']:.2f}; FBP rel L2 {out['fbp']['rel_l2']:.1e}, "
        f"ours/radon {out['fbp']['ratio']:.2f}"
    )
    return out


def _preset_yaml(name: str) -> dict:
    """Grid shape and tilt range/step of a preset, read without the config model.

    pyyaml if importable, else a regex over the known lines (the GPU machine may lack both
    pydantic and pyyaml)."""
    text = (ROOT / "factory" / "presets" / f"{name}.yaml").read_text(encoding="utf-8")
    if have("yaml"):
        import yaml

        doc = yaml.safe_load(text)
        tilt = doc["acquisition"]["tilt"]
        return {
            "shape": list(doc["grid"]["shape"]),
            "range_deg": float(tilt["range_deg"]),
            "step_deg": float(tilt["step_deg"]),
            "filter": doc.get("reconstruction", {}).get("filter", "ramp"),
            "read_with": "pyyaml",
        }
    shape = re.search(r"shape:\s*\[(\d+),\s*(\d+),\s*(\d+)\]", text)
    rng = re.search(r"range_deg:\s*([\d.]+)", text)
    step = re.search(r"step_deg:\s*([\d.]+)", text)
    filt = re.search(r"filter:\s*([\w-]+)", text)
    return {
        "shape": [int(x) for x in shape.groups()] if shape else [512, 512, 512],
        "range_deg": float(rng.group(1)) if rng else 100.0,
        "step_deg": float(step.group(1)) if step else 1.0,
        "filter": filt.group(1) if filt else "ramp",
        "read_with": "regex",
    }


def _sample_full(ctx: Ctx, edge: int | None, repeats: int) -> dict:
    """The real stages (needs pydantic, pyyaml and, for some materials, xraylib)."""
    import numpy as np

    from factory.acquisition import reconstruct, simulate_acquisition
    from factory.config import load_preset
    from factory.phantom import generate_phantom
    from factory.sample import simulate_sample

    over = {"grid": {"shape": [edge, edge, edge]}} if edge else None
    cfg = load_preset("simaq-paper", over)
    dev = ctx.dev
    seed = 0

    def host(t):
        return t.detach().cpu().numpy() if hasattr(t, "detach") else np.asarray(t)

    def one(index: int) -> dict:
        t_ph, ph = ctx.timed(generate_phantom, cfg, seed, index=index, device=dev)
        t_aq, aq = ctx.timed(simulate_acquisition, cfg, ph, seed, index=index, device=dev)
        t_rc, (rec, _) = ctx.timed(reconstruct, cfg, aq)
        t_h, _ = ctx.timed(lambda: [host(ph.lac), host(ph.labels), host(aq.sinogram), host(rec)])
        return {
            "phantom": t_ph,
            "acquisition": t_aq,
            "reconstruction": t_rc,
            "to_host": t_h,
            "total": t_ph + t_aq + t_rc + t_h,
            "n_angles": int(len(aq.angles_deg)),
        }

    first = one(0)  # cold: allocations, operator set-up, kernels' first launch
    ctx.reset_peak()
    runs = [one(i) for i in range(1, 1 + repeats)]
    peak = ctx.peak_mib()
    t_e2e, _ = ctx.timed(simulate_sample, cfg, seed, 1 + repeats, device=dev)
    med = {k: statistics.median(r[k] for r in runs) for k in runs[0]}
    return {
        "mode": "full (factory.sample stages)",
        "grid": list(cfg.grid.shape),
        "repeats": repeats,
        "first_sample": first,
        "median": med,
        "simulate_sample_s": t_e2e,
        "peak_gpu_mib": peak,
        "target_total_s": 1.0,
        "meets_target": bool(med["total"] < 1.0) if ctx.cuda else None,
    }


def _sample_fallback(ctx: Ctx, edge: int | None, repeats: int, why: str) -> dict:
    """Projection + FBP + quantile normalisation at the preset's size and tilt range."""
    import numpy as np

    from factory.acquisition.recon import quantile_normalize
    from factory.acquisition.volume import cylinder_mask
    from factory.tomo import ParallelProjector

    torch = ctx.torch
    p = _preset_yaml("simaq-paper")
    shape = [edge] * 3 if edge else p["shape"]
    half = p["range_deg"] / 2
    angles = np.arange(-half, half + 1e-9, p["step_deg"])
    vol = _phantom_volume(torch, tuple(shape)).to(ctx.dev)
    proj = ParallelProjector((shape[0], shape[2]), angles, device=ctx.dev)

    def one() -> dict:
        t_aq, sino = ctx.timed(proj.forward, vol)
        t_rc, rec = ctx.timed(
            lambda: quantile_normalize(
                proj.fbp(sino, p["filter"]), cylinder_mask(tuple(shape), 5, ctx.dev)
            )
        )
        t_h, _ = ctx.timed(lambda: [sino.cpu().numpy(), rec.cpu().numpy()])
        return {
            "acquisition": t_aq,
            "reconstruction": t_rc,
            "to_host": t_h,
            "total": t_aq + t_rc + t_h,
        }

    first = one()
    ctx.reset_peak()
    runs = [one() for _ in range(repeats)]
    med = {k: statistics.median(r[k] for r in runs) for k in runs[0]}
    proj.release()
    return {
        "mode": f"fallback ({why}): plain projection + FBP ({p['filter']}) + quantile "
        "normalisation, no phantom stage, no artifacts",
        "grid": shape,
        "n_angles": int(angles.size),
        "preset_read_with": p["read_with"],
        "repeats": repeats,
        "first_sample": first,
        "median": med,
        "peak_gpu_mib": ctx.peak_mib(),
    }


def part_d(ctx: Ctx) -> dict:
    """One simaq-paper sample; the fallback when the full stages cannot run (or fail)."""
    edge = 64 if ctx.dry else None
    repeats = 1 if ctx.dry else 3
    out: dict = {}
    missing = [m for m in ("pydantic", "yaml", "xraylib") if not have(m)]
    why = f"{', '.join(missing)} not installed" if missing else None
    crash = None
    if not missing:
        try:
            out = _sample_full(ctx, edge, repeats)
        except ModuleNotFoundError as err:
            why = f"{err.name} not installed"
        except Exception as err:  # noqa: BLE001 - a stage failed: still measure the fallback
            crash = f"{type(err).__name__}: {err}".splitlines()[0][:400]
            why = "the full stages failed"
            out = {"full_error": crash, "full_traceback": traceback.format_exc()[-4000:]}
    if why or ctx.dry:  # the dry run also exercises the fallback
        if ctx.cuda:
            ctx.torch.cuda.empty_cache()
        fb = _sample_fallback(ctx, 32 if ctx.dry else None, repeats, why or "dry run")
        if why:
            out = {**out, **fb}
        else:
            out["fallback"] = fb
    m = out["median"]
    stages = ", ".join(f"{k} {m[k]:.3f} s" for k in m if k not in ("total", "n_angles"))
    peak = out.get("peak_gpu_mib")
    out["line"] = (
        f"{out['mode'].split(':')[0]} {out['grid']}: {stages}; total {m['total']:.3f} s "
        "(target < 1 s)"
        + (f", peak GPU {peak:.0f} MiB" if peak is not None else "")
        + (
            f"; simulate_sample end to end {out['simulate_sample_s']:.3f} s"
            if "simulate_sample_s" in out
            else ""
        )
    )
    if crash:
        raise PartFailed(f"full stages failed ({crash}); fallback: {out['line']}", out)
    return out


def _train_steps(ctx: Ctx, amp: bool, feats: int, depth: int, batch: int) -> dict:
    """Timed optimiser steps of one network on fixed random stacks (fresh net and optimiser)."""
    from models.losses import FocalDiceLoss
    from models.unet import build_model, param_groups

    torch = ctx.torch
    size, window, classes = ctx.slice, 7, 4
    steps, warm = ctx.steps, ctx.warm
    gen = torch.Generator().manual_seed(0)
    x = torch.randn(batch, window, size, size, generator=gen).to(ctx.dev)
    y = torch.randint(0, classes, (batch, size, size), generator=gen).to(ctx.dev)
    torch.manual_seed(0)
    net = build_model("unet25d", classes, window=window, features=feats, depth=depth)
    net = net.to(ctx.dev).train()
    opt = torch.optim.Adam(param_groups(net, 1e-5), lr=1e-4)
    loss_fn = FocalDiceLoss()
    # CUDA: float16 autocast + GradScaler as models/train.py; CPU dry run: bfloat16 autocast
    amp_dtype = torch.float16 if ctx.cuda else torch.bfloat16
    scaler = torch.amp.GradScaler(ctx.dev.type, enabled=amp and ctx.cuda)

    def step():
        with torch.autocast(ctx.dev.type, dtype=amp_dtype, enabled=amp):
            logits = net(x)
        loss = loss_fn(logits.float(), y)
        opt.zero_grad(set_to_none=True)
        scaler.scale(loss).backward()
        scaler.step(opt)
        scaler.update()
        return loss

    for _ in range(warm):
        step()
    ctx.reset_peak()
    sec, loss = ctx.timed(lambda: [step() for _ in range(steps)][-1])
    return {
        "steps_per_s": steps / sec,
        "slices_per_s": steps * batch / sec,
        "s_per_step": sec / steps,
        "batch": batch,
        "peak_gpu_mib": ctx.peak_mib(),
        "final_loss": float(loss.detach()),
    }


def part_e(ctx: Ctx) -> dict:
    """Training steps of the reference-sized network on random stacks, AMP off and on."""
    from models.unet import build_model

    torch = ctx.torch
    if ctx.dry:
        feats, depth, ctx.slice, batch, ctx.steps, ctx.warm = 4, 2, 32, 2, 2, 1
    else:
        feats, depth, ctx.slice = 64, 4, ctx.args.slice_size
        batch, ctx.steps, ctx.warm = ctx.args.batch_size, ctx.args.steps, 3
    window, classes = 7, 4
    if ctx.cuda:
        torch.backends.cudnn.benchmark = True
    out: dict = {
        "model": "unet25d",
        "features": feats,
        "depth": depth,
        "window": window,
        "slice": [ctx.slice, ctx.slice],
        "batch": batch,
        "steps": ctx.steps,
        "loss": "focal + Dice",
        "optimizer": "Adam",
    }
    for amp in (False, True):
        while True:
            try:
                out["amp" if amp else "fp32"] = _train_steps(ctx, amp, feats, depth, batch)
                break
            except torch.cuda.OutOfMemoryError:
                if batch == 1:
                    raise
                batch //= 2  # out of memory: halve the batch and say so
                out["batch"] = batch
                out["note"] = f"out of memory: batch reduced to {batch}"
                torch.cuda.empty_cache()
    out["params_m"] = (
        sum(
            p.numel()
            for p in build_model(
                "unet25d", classes, window=window, features=feats, depth=depth
            ).parameters()
        )
        / 1e6
    )
    a, f = out["amp"], out["fp32"]
    out["line"] = (
        f"{feats} features depth {depth}, batch {batch} x {window}x{ctx.slice}²: "
        f"AMP {a['steps_per_s']:.2f} steps/s ({a['slices_per_s']:.1f} slices/s"
        + (f", {a['peak_gpu_mib']:.0f} MiB" if a["peak_gpu_mib"] is not None else "")
        + f"); fp32 {f['steps_per_s']:.2f} steps/s ({f['slices_per_s']:.1f} slices/s"
        + (f", {f['peak_gpu_mib']:.0f} MiB" if f["peak_gpu_mib"] is not None else "")
        + ")"
    )
    return out


def part_f(ctx: Ctx) -> dict:
    """generate on GPU actors (needs Ray and the whole factory stack)."""
    need("ray", "pydantic", "yaml", "xraylib", "webdataset")
    if not ctx.cuda:
        raise Skip("needs a CUDA device")
    import tempfile

    import ray

    from factory.config import load_preset
    from factory.dataset.generate import generate_dataset

    n = ctx.args.ray_samples
    cfg = load_preset(
        "simaq-paper", {"dataset": {"num_samples": n, "shard_size": 2, "splits": {"train": 1.0}}}
    )
    os.environ["PYTHONPATH"] = os.pathsep.join([str(ROOT), os.environ.get("PYTHONPATH", "")])
    t0 = time.perf_counter()
    ray.init(include_dashboard=False, logging_level="ERROR")
    t_start = time.perf_counter() - t0
    try:
        with tempfile.TemporaryDirectory(prefix="simaq-gpu-") as tmp:
            out_dir = os.path.join(tmp, "ds")
            gpus = float(ray.cluster_resources().get("GPU", 0))
            t1 = time.perf_counter()
            m = generate_dataset(cfg, out_dir, executor="ray", gpus_per_worker=1.0)
            sec = time.perf_counter() - t1
            size = m.total_bytes
    finally:
        ray.shutdown()
    res = {
        "samples": n,
        "cluster_gpus": gpus,
        "ray_start_s": t_start,
        "generate_s": sec,
        "samples_per_s": n / sec,
        "mib_per_sample": size / n / 2**20,
        "content_sha256": m.content_sha256,
    }
    res["line"] = (
        f"{n} simaq-paper samples on {gpus:g} GPU actor(s): {sec:.1f} s "
        f"({n / sec:.2f} samples/s incl. actor start and gzip encoding), Ray start {t_start:.1f} s"
    )
    return res


PARTS = {"a": part_a, "b": part_b, "c": part_c, "d": part_d, "e": part_e, "f": part_f}


# --- report --------------------------------------------------------------------------------------


def _md(doc: dict) -> str:
    lines = [
        "# GPU check (`python bench/gpu.py`)",
        "",
        f"- device: {doc['device']}",
        f"- torch {doc['torch']}, CUDA {doc.get('cuda_version')}, python {doc['python']}",
        f"- started {doc['started']}, {doc['total_s']:.1f} s in all"
        + (" — **CPU dry run: numbers are meaningless**" if doc.get("cpu_dry_run") else ""),
        "",
        "| part | what | status | seconds | result |",
        "| --- | --- | --- | --- | --- |",
    ]
    for key, p in doc["parts"].items():
        res = p.get("message") or p.get("result", {}).get("line", "")
        res = str(res).replace("|", "\\|").replace("\n", " ")
        lines.append(
            f"| {key} | {PART_NAMES[key]} | {p['status']} | {p.get('seconds', 0):.1f} | {res} |"
        )
    d = doc["parts"].get("d", {}).get("result")
    if d and "median" in d:
        lines += ["", f"Part d, {d['mode']}, grid {d['grid']}:", ""]
        lines += ["| stage | first sample (s) | median (s) |", "| --- | --- | --- |"]
        for k, v in d["median"].items():
            if k != "n_angles":
                lines.append(f"| {k} | {d['first_sample'][k]:.3f} | {v:.3f} |")
    e = doc["parts"].get("e", {}).get("result")
    if e and "amp" in e:
        lines += ["", "| U-Net | steps/s | slices/s | peak GPU MiB |", "| --- | --- | --- | --- |"]
        for k in ("fp32", "amp"):
            r = e[k]
            peak = "" if r["peak_gpu_mib"] is None else f"{r['peak_gpu_mib']:.0f}"
            lines.append(f"| {k} | {r['steps_per_s']:.2f} | {r['slices_per_s']:.1f} | {peak} |")
    return "\n".join(lines) + "\n"


def _write(out: Path, doc: dict) -> None:
    out.mkdir(parents=True, exist_ok=True)
    (out / "gpu.json").write_text(json.dumps(doc, indent=1, default=str), encoding="utf-8")
    if doc.get("parts") is not None:
        (out / "gpu.md").write_text(_md(doc), encoding="utf-8")


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    ap.add_argument("--out", required=True, help="folder for gpu.json and gpu.md")
    ap.add_argument("--parts", default="abcdef", help="which parts, e.g. bde (default: all)")
    ap.add_argument("--cpu-dry-run", action="store_true", help="tiny sizes on the CPU (a test)")
    ap.add_argument("--budget-s", type=float, default=420.0, help="start no part after this")
    ap.add_argument("--tomo-shape", type=int, nargs=3, default=[256, 64, 256], metavar="N")
    ap.add_argument("--tomo-angles", type=int, default=100)
    ap.add_argument("--slice-size", type=int, default=512, help="part e: slice edge")
    ap.add_argument("--batch-size", type=int, default=8, help="part e")
    ap.add_argument("--steps", type=int, default=20, help="part e: timed steps per AMP setting")
    ap.add_argument("--ray-samples", type=int, default=4, help="part f")
    args = ap.parse_args(argv)
    out = Path(args.out)
    t_all = time.perf_counter()
    doc: dict = {
        "started": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
        "python": platform.python_version(),
        "machine": platform.machine(),
        "cpus": os.cpu_count(),
        "cpu_dry_run": bool(args.cpu_dry_run),
    }
    try:
        import torch
    except ImportError:
        doc.update(cuda=False, reason="torch not installed", parts=None)
        _write(out, doc)
        print(f"gpu check: torch is not installed; nothing measured ({out / 'gpu.json'})")
        return 0
    doc["torch"] = torch.__version__
    doc["cuda_version"] = torch.version.cuda
    cuda = torch.cuda.is_available()
    doc["cuda"] = cuda
    if not cuda and not args.cpu_dry_run:
        doc.update(reason="no CUDA device", parts=None)
        _write(out, doc)
        print(
            f"gpu check: no CUDA device (torch {torch.__version__}); nothing measured, "
            f"wrote {out / 'gpu.json'}"
        )
        return 0
    if cuda and not args.cpu_dry_run:
        prop = torch.cuda.get_device_properties(0)
        doc["device"] = f"{prop.name}, {prop.total_memory / 2**30:.0f} GiB"
    else:
        doc["device"] = f"CPU ({platform.machine()}, {os.cpu_count()} cores), dry run"
    doc["loadavg_start"] = list(os.getloadavg())
    print(f"gpu check on {doc['device']}, torch {torch.__version__}; parts {args.parts}")
    ctx = Ctx(args)
    parts = [p for p in "abcdef" if p in args.parts]
    doc["parts"] = {}
    for key in parts:
        rec: dict = {}
        elapsed = time.perf_counter() - t_all
        t = time.perf_counter()
        if elapsed > args.budget_s:
            rec.update(status="skipped", message=f"time budget spent ({elapsed:.0f} s)")
        else:
            try:
                rec["result"] = PARTS[key](ctx)
                rec["status"] = "ok"
            except Skip as err:
                rec.update(status="skipped", message=str(err))
            except PartFailed as err:
                rec.update(status="failed", message=str(err), result=err.result)
            except Exception as err:  # noqa: BLE001 - report and go on with the other parts
                rec.update(
                    status="failed",
                    message=f"{type(err).__name__}: {err}".splitlines()[0][:400],
                    traceback=traceback.format_exc()[-4000:],
                )
        rec["seconds"] = time.perf_counter() - t
        doc["parts"][key] = rec
        text = rec.get("message") or rec.get("result", {}).get("line", "")
        print(f"[{key}] {PART_NAMES[key]}: {rec['status']} ({rec['seconds']:.1f} s) {text}")
        if ctx.cuda:
            torch.cuda.empty_cache()
        _write(out, {**doc, "total_s": time.perf_counter() - t_all})  # partial results survive
    doc["total_s"] = time.perf_counter() - t_all
    doc["loadavg_end"] = list(os.getloadavg())
    _write(out, doc)
    failed = [k for k, p in doc["parts"].items() if p["status"] == "failed"]
    print(
        f"gpu check: {doc['total_s']:.0f} s; "
        + (f"FAILED parts {','.join(failed)}" if failed else "no part failed")
        + f"; {out / 'gpu.json'}, {out / 'gpu.md'}"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
