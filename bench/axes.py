"""How often the axis order of a tomogram is detected right (``factory/tomo/axes.py``).

Usage::

    python bench/axes.py [--presets demo,capillary,...] [--samples 8] [--seed 11]

Simulates ``--samples`` reconstructions of each preset (in-process, CPU), stores each in the six
axis orders, and runs the detection on every one. A grid preset is right when the full order is
found ("exact") and counts where only the beam axis is ("beam"); a capillary preset (full
rotation: the beam direction is arbitrary) is right when the tilt axis is found. "default" counts
volumes left in the stored order for want of a clear signature; "wrong" any other answer. Also
prints the seconds per detection and the load average. No ratio to a peer: it measures
correctness, not speed.
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from collections import Counter

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

PRESETS = (
    "demo,demo-40nm,grid-yeast-60nm,capillary-demo,capillary-60nm,capillary-yeast-60nm,capillary"
)


def _verdict(guess, order: str, full_rotation: bool) -> str:
    if guess.axes is None:
        return "default"
    if full_rotation:
        return "exact" if guess.axes.index("Y") == order.index("Y") else "wrong"
    if guess.axes == order:
        return "exact"
    return "beam" if guess.axes.index("Z") == order.index("Z") else "wrong"


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--presets", default=PRESETS)
    ap.add_argument("--samples", type=int, default=8)
    ap.add_argument("--seed", type=int, default=11)
    args = ap.parse_args(argv)

    from factory.config import load_preset
    from factory.sample import simulate_sample
    from factory.tomo.axes import ORDERS, detect_axes, from_zyx

    print(f"load average at start: {os.getloadavg()}")
    print(
        f"{'preset':<22}{'mount':<11}{'volumes':>8}  {'verdicts over 6 orders each':<40}{'s/detect':>9}"
    )
    for preset in args.presets.split(","):
        cfg = load_preset(preset)
        full = cfg.mount.kind == "capillary"
        counts, seconds = Counter(), []
        for index in range(args.samples):
            recon = simulate_sample(cfg, args.seed, index).fields["recon"]
            for order in ORDERS:
                t0 = time.perf_counter()
                guess = detect_axes(from_zyx(recon, order))
                seconds.append(time.perf_counter() - t0)
                counts[_verdict(guess, order, full)] += 1
        verdicts = ", ".join(f"{k} {counts[k]}" for k in ("exact", "beam", "default", "wrong"))
        mean_s = sum(seconds) / len(seconds)
        print(f"{preset:<22}{cfg.mount.kind:<11}{args.samples:>8}  {verdicts:<40}{mean_s:>9.3f}")
    print(f"load average at end: {os.getloadavg()}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
