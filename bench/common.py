"""What the Ray benchmarks (``scale.py``, ``threads.py``) print about the machine they run on."""

from __future__ import annotations

import os
import platform


def load(tag: str) -> str:
    """The load average (1, 5 and 15 minutes) as one line, labelled ``tag``."""
    a, b, c = os.getloadavg()
    return f"load average (1, 5, 15 min) {tag}: {a:.2f} {b:.2f} {c:.2f}"


def print_machine() -> None:
    """Print the machine (CPU count, torch and Ray versions) and the load average at the start."""
    import ray
    import torch

    print(
        f"machine: {platform.machine()}, {os.cpu_count()} CPUs, torch {torch.__version__}, "
        f"ray {ray.__version__}; shared with other jobs: compare ratios within this run"
    )
    print(load("at start"), flush=True)
