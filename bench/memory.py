"""Benchmark: peak resident memory (RSS) of one sample, per stage and in total.

Usage::

    python bench/memory.py [--preset simaq-paper] [--seed 0] [--index 0] [--set KEY=VALUE ...]
                           [--device cpu] [--threads N] [--hash] [--json OUT.json]
    python bench/memory.py --preset demo        # quick mode: a 64³ sample in seconds

One sample of the preset is simulated by :func:`factory.sample.simulate_sample` (the code path of
``simaq simulate`` and of the dataset workers) and then encoded as a shard's members by
:func:`factory.dataset.shards.encode_sample`, all in a **fresh Python subprocess**, so nothing the
parent imported or allocated is counted. Stages:

* ``imports``: interpreter, torch and the package, before any work;
* ``phantom``: :func:`factory.phantom.generate_phantom`;
* ``acquisition``: :func:`factory.acquisition.simulate_acquisition`;
* ``reconstruction``: :func:`factory.acquisition.reconstruct` and the assembly of the sample's
  fields in ``simulate_sample``;
* ``encode``: the dataset's encoding (dtype casts, ``.npy``, gzip) of the sample's fields.

How: the stage functions are wrapped (module attributes, which ``simulate_sample`` resolves at call
time); at every stage boundary the kernel's high-water mark is reset (``/proc/self/clear_refs``,
``5``) and at the stage's end ``VmHWM`` is read from ``/proc/self/status``: the exact peak RSS of
the stage. A thread also samples ``VmRSS`` every few milliseconds (the fallback where
``clear_refs`` is not writable); the larger of the two is reported. The peak of a stage includes
what earlier stages left allocated (the phantom is part of the sample, so it lives to the end).
The total is the largest stage peak. The 1-minute load average before and after is printed: on a
busy machine the times, not the memory, move.

``--hash`` prints the sha256 of every field's bytes (to check that a change left outputs
bit-identical).
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import subprocess
import sys
import threading
import time
from pathlib import Path

GIB = float(1 << 30)
STAGES = ("imports", "phantom", "acquisition", "reconstruction", "encode")


def _status_kib(key: str) -> int:
    """A ``kB`` field of ``/proc/self/status`` (``VmRSS``, ``VmHWM``), in KiB; 0 if absent."""
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith(key + ":"):
                return int(line.split()[1])
    return 0


def _reset_hwm() -> bool:
    """Reset the kernel's peak-RSS mark of this process; False where that is not allowed."""
    try:
        with open("/proc/self/clear_refs", "w") as f:
            f.write("5")
        return True
    except OSError:
        return False


class StageMeter:
    """Peak RSS per named stage: the kernel's reset high-water mark plus a sampling thread.

    Parameters
    ----------
    interval_s : float
        Seconds between ``VmRSS`` samples of the thread.
    """

    def __init__(self, interval_s: float = 0.005):
        self.interval_s = interval_s
        self.stages: dict[str, dict] = {}
        self._name: str | None = None
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._sample, daemon=True)
        self.hwm_reset = False

    def _sample(self) -> None:
        while not self._stop.is_set():
            rss = _status_kib("VmRSS")
            with self._lock:
                if self._name is not None:
                    st = self.stages[self._name]
                    st["sampled_kib"] = max(st["sampled_kib"], rss)
            self._stop.wait(self.interval_s)

    def start(self) -> None:
        self._thread.start()

    def enter(self, name: str) -> None:
        """End the current stage (if any) and start ``name``."""
        self.leave()
        self.hwm_reset = _reset_hwm()
        rss = _status_kib("VmRSS")
        with self._lock:
            self.stages[name] = {
                "start_kib": rss,
                "sampled_kib": rss,
                "t0": time.perf_counter(),
            }
            self._name = name

    def leave(self) -> None:
        """End the current stage: its peak (VmHWM if reset, else sampled) and end RSS."""
        with self._lock:
            name, self._name = self._name, None
        if name is None:
            return
        st = self.stages[name]
        st["seconds"] = time.perf_counter() - st.pop("t0")
        st["end_kib"] = _status_kib("VmRSS")
        hwm = _status_kib("VmHWM") if self.hwm_reset else 0
        st["hwm_kib"] = hwm
        st["peak_kib"] = max(hwm, st["sampled_kib"], st["end_kib"])

    def stop(self) -> None:
        self.leave()
        self._stop.set()
        self._thread.join()


def _wrap(module, attr: str, meter: StageMeter, stage: str) -> None:
    """Replace ``module.attr`` by a wrapper that enters ``stage`` when called."""
    fn = getattr(module, attr)

    def wrapped(*args, **kwargs):
        meter.enter(stage)
        return fn(*args, **kwargs)

    setattr(module, attr, wrapped)


def _child(args: argparse.Namespace) -> dict:
    """Run one sample in this (fresh) process and return the measurements."""
    meter = StageMeter()
    meter.start()
    meter.enter("imports")
    import torch

    import factory.acquisition
    import factory.phantom
    from factory.config import load_preset, parse_overrides
    from factory.dataset.shards import encode_sample
    from factory.sample import simulate_sample

    if args.threads:
        torch.set_num_threads(args.threads)
    cfg = load_preset(args.preset, parse_overrides(args.set))
    _wrap(factory.phantom, "generate_phantom", meter, "phantom")
    _wrap(factory.acquisition, "simulate_acquisition", meter, "acquisition")
    _wrap(factory.acquisition, "reconstruct", meter, "reconstruction")
    t0 = time.perf_counter()
    sample = simulate_sample(cfg, args.seed, args.index, device=args.device)
    meter.enter("encode")
    members = encode_sample(sample, cfg.dataset)
    meter.stop()
    elapsed = time.perf_counter() - t0
    out = {
        "preset": args.preset,
        "overrides": args.set,
        "seed": args.seed,
        "index": args.index,
        "device": args.device,
        "threads": torch.get_num_threads(),
        "shape": list(cfg.grid.shape),
        "hwm_reset": meter.hwm_reset,
        "seconds": elapsed,
        "encoded_bytes": sum(len(v) for k, v in members.items() if k != "__key__"),
        "stages": meter.stages,
    }
    if args.hash:
        out["sha256"] = {
            k: hashlib.sha256(v.tobytes()).hexdigest() for k, v in sorted(sample.fields.items())
        }
    return out


def _report(res: dict, load_before: tuple, load_after: tuple) -> str:
    """The human-readable table of one run."""
    nz, ny, nx = res["shape"]
    vol_gib = nz * ny * nx * 4 / GIB
    lines = [
        f"preset {res['preset']}  seed {res['seed']}  index {res['index']}  grid "
        f"{nz}x{ny}x{nx}  device {res['device']}  torch threads {res['threads']}  "
        f"{res['seconds']:.1f} s",
        f"load average (1, 5, 15 min) before: {' '.join(f'{x:.2f}' for x in load_before)}  "
        f"after: {' '.join(f'{x:.2f}' for x in load_after)}",
        f"peak from {'VmHWM (reset per stage)' if res['hwm_reset'] else 'VmRSS sampling'}; "
        f"one float32 volume = {vol_gib:.3f} GiB",
        f"{'stage':<16}{'start GiB':>10}{'peak GiB':>10}{'end GiB':>10}{'volumes':>9}"
        f"{'seconds':>9}",
    ]
    for name in STAGES:
        st = res["stages"].get(name)
        if st is None:
            continue
        peak = st["peak_kib"] * 1024 / GIB
        lines.append(
            f"{name:<16}{st['start_kib'] * 1024 / GIB:>10.3f}{peak:>10.3f}"
            f"{st['end_kib'] * 1024 / GIB:>10.3f}{peak / vol_gib:>9.1f}{st['seconds']:>9.1f}"
        )
    total = max(st["peak_kib"] for st in res["stages"].values()) * 1024
    lines.append(f"total peak RSS: {total / GIB:.3f} GiB ({total / 1e9:.2f} GB)")
    for k, v in res.get("sha256", {}).items():
        lines.append(f"sha256 {k:<9} {v}")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--preset", default="simaq-paper", help="preset (default simaq-paper)")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--index", type=int, default=0)
    ap.add_argument("--set", action="append", default=[], help="override KEY=VALUE, repeatable")
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--threads", type=int, default=0, help="torch threads (0: torch's default)")
    ap.add_argument("--hash", action="store_true", help="print the sha256 of every field")
    ap.add_argument("--json", type=Path, default=None, help="also write the results here")
    ap.add_argument("--child", action="store_true", help=argparse.SUPPRESS)
    args = ap.parse_args(argv)
    if args.child:
        print(json.dumps(_child(args)))
        return 0
    load_before = os.getloadavg()
    cmd = [sys.executable, str(Path(__file__).resolve()), "--child", *(argv or sys.argv[1:])]
    proc = subprocess.run(cmd, stdout=subprocess.PIPE, text=True, check=False)
    load_after = os.getloadavg()
    if proc.returncode != 0:
        print(f"the measuring subprocess failed (exit {proc.returncode})", file=sys.stderr)
        return proc.returncode
    res = json.loads(proc.stdout.strip().splitlines()[-1])
    res["load_before"], res["load_after"] = list(load_before), list(load_after)
    print(_report(res, load_before, load_after))
    if args.json is not None:
        args.json.write_text(json.dumps(res, indent=1), "utf-8")
    return 0


if __name__ == "__main__":
    sys.exit(main())
