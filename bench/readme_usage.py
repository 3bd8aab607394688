"""Run the README's "first hour" usage block verbatim, from a fresh relative working directory.

Each command line of the fenced block that follows the marker ``<!-- first-hour -->`` in README.md
runs in order with ``bash -e`` in one empty directory (relative paths, as a user types them); the
wall time of each is printed as a Markdown table with the machine's load average, and the first
failure stops the run (exit 1).

    python bench/readme_usage.py [--workdir DIR] [--keep]
"""

from __future__ import annotations

import argparse
import os
import platform
import re
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
MARKER = "<!-- first-hour -->"


def usage_commands(readme: str) -> list[str]:
    """The command lines of the fenced block after :data:`MARKER` (comments stripped)."""
    after = readme.split(MARKER, 1)[1]
    block = re.search(r"```bash\n(.*?)```", after, re.S)
    if block is None:
        raise SystemExit(f"README.md: no ```bash block after {MARKER}")
    lines = []
    for raw in block.group(1).splitlines():
        line = raw.split("  #", 1)[0].strip()
        if line and not line.startswith("#"):
            lines.append(line)
    return lines


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--workdir", type=Path, default=None, help="run here (default: a temp dir)")
    ap.add_argument("--keep", action="store_true", help="keep the working directory")
    args = ap.parse_args()
    cmds = usage_commands((REPO / "README.md").read_text(encoding="utf-8"))
    work = args.workdir or Path(tempfile.mkdtemp(prefix="simaq-first-hour-"))
    work.mkdir(parents=True, exist_ok=True)
    print(f"# {platform.machine()}, {os.cpu_count()} cores; working directory {work}")
    rows, status = [], 0
    for cmd in cmds:
        load0 = os.getloadavg()[0]
        t0 = time.perf_counter()
        res = subprocess.run(["bash", "-ec", cmd], cwd=work, capture_output=True, text=True)
        dt = time.perf_counter() - t0
        rows.append((cmd, dt, load0, os.getloadavg()[0], res.returncode))
        print(f"{dt:8.1f} s  rc={res.returncode}  {cmd}", flush=True)
        if res.returncode != 0:
            print(res.stderr[-3000:], file=sys.stderr)
            status = 1
            break
    print("\n| command | wall | load before → after |\n| --- | --- | --- |")
    for cmd, dt, l0, l1, rc in rows:
        flag = "" if rc == 0 else f" (exit {rc})"
        print(f"| `{cmd}` | {dt:.0f} s{flag} | {l0:.1f} → {l1:.1f} |")
    if not args.keep and args.workdir is None:
        shutil.rmtree(work, ignore_errors=True)
    return status


if __name__ == "__main__":
    sys.exit(main())
