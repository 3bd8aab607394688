"""bench/peers.py: the MONAI / kornia comparison runs where neither is installed.

MONAI and kornia are not dependencies of the project (the CI installs only its pinned ones), so
the bench must say so and exit 0 rather than fail; the peers are hidden here (a module set to None
in ``sys.modules`` cannot be imported) so that the skip path is tested whatever this machine has.
"""

from __future__ import annotations

import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
SCRIPT = ROOT / "bench" / "peers.py"


def test_peers_bench_skips_cleanly_without_monai_and_kornia():
    code = (
        "import sys, runpy\n"
        "for m in ('monai', 'kornia'): sys.modules[m] = None\n"
        f"sys.argv = [{str(SCRIPT)!r}, '--quick']\n"
        f"runpy.run_path({str(SCRIPT)!r}, run_name='__main__')\n"
    )
    t = time.perf_counter()
    proc = subprocess.run(
        [sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, timeout=60
    )
    sec = time.perf_counter() - t
    assert proc.returncode == 0, proc.stderr
    assert "Traceback" not in proc.stderr, proc.stderr
    out = proc.stdout
    assert "monai is not installed" in out and "kornia is not installed" in out, out
    assert "monai: not installed" in out and "kornia: not installed" in out, out
    # the three comparisons: loss and inference need monai, augmentation kornia
    assert out.count("skipped: monai is not installed") == 2, out
    assert out.count("skipped: kornia is not installed") == 1, out
    assert "load average (1 min) at start" in out and "torch threads" in out, out
    assert sec < 30, sec
