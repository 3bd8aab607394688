"""Bad configs, property-based: hypothesis throws many invalid configs and flags at
``simaq generate``; every one must end with exactly one line ``error: ...`` naming the field, exit
code 2, no traceback, and nothing written.

Invalid configs are made from the ``demo`` preset by one mutation that is invalid whatever the
field: a value of the wrong type at any leaf (string for a number, mapping for a string, ...), an
unknown key at any level, or an out-of-range value for a constrained field. Most run in this process
through ``cli.main`` (fast); a handful go through the installed ``simaq`` console script.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

import pytest
import yaml
from _cli import invoke
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from factory.config import load_preset

# small, so that a config wrongly accepted fails the test in a second instead of generating for long
BASE = load_preset(
    "demo", {"grid": {"shape": [16, 16, 16]}, "dataset": {"num_samples": 1}}
).to_json()


def _leaves(node, path=()):
    if isinstance(node, dict):
        for k, v in node.items():
            yield from _leaves(v, (*path, k))
    elif isinstance(node, list):
        for i, v in enumerate(node):
            yield from _leaves(v, (*path, i))
    else:
        yield path, node


def _dicts(node, path=()):
    if isinstance(node, dict):
        yield path
        for k, v in node.items():
            yield from _dicts(v, (*path, k))


LEAVES = list(_leaves(BASE))
DICT_PATHS = [p for p in _dicts(BASE) if p != ("dataset", "splits")]  # splits: free mapping


def _wrong_values(value) -> list:
    """Values of a type no field holding ``value`` accepts."""
    if isinstance(value, bool):
        return ["maybe", [True], {"x": 1}, 3]
    if isinstance(value, int | float):
        return ["abc", [1, 2], {"not": "a number"}, "1e999x"]
    if isinstance(value, str):
        return [{"x": 1}, ["a", "b"], "zz-not-a-choice"] if value not in ("demo",) else [{"x": 1}]
    return [{"Bogus Key!": "x"}]  # None leaves: optional sections/distributions


# (dotted path, invalid value) of constrained fields, beyond types
RANGES = [
    ("energy_ev", 100.0), ("energy_ev", 900), ("grid.shape", [4, 64, 64]),
    ("grid.shape", [64, 64]), ("grid.voxel_nm", 0), ("grid.voxel_nm", -30.0),
    ("labels.scheme", "nope"), ("dataset.num_samples", 0), ("dataset.num_samples", -3),
    ("dataset.shard_size", 0), ("dataset.compress_level", 10), ("dataset.version", "1.0"),
    ("dataset.version", "v1.0.0"), ("dataset.splits", {"train": 0.5, "val": 0.4}),
    ("dataset.splits", {"Train": 1.0}), ("dataset.splits", {"train": 1.5, "val": -0.5}),
    ("dataset.splits", {}), ("dataset.fields", []), ("dataset.fields", ["recon", "bogus"]),
    ("dataset.fields", ["recon", "recon"]), ("dataset.dtypes.recon", "float64"),
    ("dataset.compression", "zip"), ("dataset.torch_threads", 0),
    ("acquisition.tilt.step_deg", -2.0), ("acquisition.noise.photons_per_pixel", -5),
]  # fmt: skip


def _set(data: dict, path: tuple, value) -> dict:
    import copy

    out = copy.deepcopy(data)
    node = out
    for p in path[:-1]:
        node = node[p]
    node[path[-1]] = value
    return out


def _field_name(path: tuple) -> str:
    """What the error must name: the dotted path down to the last named key."""
    named = [str(p) for p in path if not isinstance(p, int)]
    return ".".join(named)


@st.composite
def bad_configs(draw):
    """(config dict, dotted field the error must name, how to pass it)."""
    kind = draw(st.sampled_from(["type", "unknown", "range"]))
    if kind == "type":
        path, value = draw(st.sampled_from(LEAVES))
        bad = draw(st.sampled_from(_wrong_values(value)))
        return _set(BASE, path, bad), _field_name(path), path
    if kind == "unknown":
        path = draw(st.sampled_from(DICT_PATHS))
        key = "zz_" + draw(st.text("abcdefghij_", min_size=1, max_size=8))
        node = BASE
        for p in path:
            node = node[p]
        return _set(BASE, (*path, key), 1), _field_name((*path, key)), (*path, key)
    dotted, value = draw(st.sampled_from(RANGES))
    path = tuple(dotted.split("."))
    return _set(BASE, path, value), dotted, path


def _names(line: str, field: str) -> bool:
    """True if ``line`` names ``field``: its dotted parts appear in order (``grid.shape`` is named
    by ``config field grid.shape: ...`` and by ``config field grid: shape[Z] must ...``)."""
    pos = 0
    for part in field.split("."):
        i = line.find(part, pos)
        if i < 0:
            return False
        pos = i + len(part)
    return True


def _check_refused(code: int, stdout: str, stderr: str, field: str, workdir: Path, keep: set):
    lines = [ln for ln in stderr.splitlines() if ln.strip()]
    assert code == 2, (code, stderr)
    assert len(lines) == 1 and lines[0].startswith("error: "), stderr
    assert "Traceback" not in stderr + stdout
    assert _names(lines[0], field), f"error does not name {field!r}: {lines[0]}"
    left = {p.name for p in workdir.iterdir()}
    assert left == keep, f"written: {left - keep}"


@settings(
    max_examples=int(os.environ.get("SIMAQ_BAD_CONFIG_EXAMPLES", "300")),
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow],
)
@given(case=bad_configs(), via_set=st.booleans())
def test_invalid_configs_are_refused_naming_the_field(case, via_set):
    data, field, path = case
    work = Path(tempfile.mkdtemp(prefix="simaq-badcfg-"))
    try:
        out = work / "ds"
        simple = all(isinstance(p, str) for p in path)
        if via_set and simple:
            node = data
            for p in path:
                node = node[p]
            value = yaml.safe_dump(node, default_flow_style=True).strip()
            value = value.removesuffix("\n...").strip()
            args = ["--preset", "demo", "--set", f"{'.'.join(path)}={value}"]
            keep = set()
        else:
            cfg = work / "config.yaml"
            cfg.write_text(yaml.safe_dump(data))
            args = ["--config", str(cfg)]
            keep = {"config.yaml"}
        code, stdout, stderr = invoke(["generate", *args, "--out", str(out), "--executor", "local"])
        _check_refused(code, stdout, stderr, field, work, keep)
    finally:
        shutil.rmtree(work, ignore_errors=True)


FLAG_CASES = [
    (["--samples", "0"], "num_samples"), (["--samples", "-4"], "num_samples"),
    (["--shard-size", "0"], "shard_size"), (["--splits", "train=0.5,val"], "--splits"),
    (["--splits", "train=0.7,val=0.1"], "splits"), (["--splits", "Train=1"], "splits"),
    (["--splits", "train=abc"], "--splits"), (["--seed", "-1"], "--seed"),
    (["--workers", "0"], "--workers"), (["--executor", "spark"], "--executor"),
    (["--set", "nokeyvalue"], "--set"), (["--set", "grid.shape=[8"], "grid.shape"),
    (["--set", "grid.voxel_nm=[1, 2]"], "grid.voxel_nm"),
    (["--preset", "nope"], "preset"), (["--config", "/nonexistent/c.yaml"], "config"),
    (["--out-of-tree"], "No such option"),
]  # fmt: skip


@settings(max_examples=40, deadline=None)
@given(case=st.sampled_from(FLAG_CASES), extra=st.sampled_from([[], ["--samples", "2"]]))
def test_invalid_flags_are_refused_naming_the_flag(case, extra):
    flags, field = case
    work = Path(tempfile.mkdtemp(prefix="simaq-badflag-"))
    try:
        preset = [] if any(f in ("--preset", "--config") for f in flags) else ["--preset", "demo"]
        out = str(work / "ds")
        args = ["generate", "--executor", "local", "--out", out, *preset, *extra, *flags]
        code, stdout, stderr = invoke(args)
        if field == "No such option":  # Typer's own usage error: exit 2 with its usage text
            assert code == 2 and field in stderr and "Traceback" not in stderr
            assert not any(work.iterdir())
            return
        _check_refused(code, stdout, stderr, field, work, set())
    finally:
        shutil.rmtree(work, ignore_errors=True)


@pytest.mark.parametrize(
    "args, field",
    [
        (["--preset", "demo", "--set", "dataset.compression=zip"], "dataset.compression"),
        (["--preset", "demo", "--set", "grid.shape=[4,64,64]"], "grid.shape"),
        (["--preset", "demo", "--samples", "0"], "num_samples"),
    ],
)
def test_the_console_script_refuses_in_one_line(tmp_path, args, field):
    exe = shutil.which("simaq")
    cmd = [exe] if exe else [sys.executable, "-c", "import cli; cli.main()"]
    res = subprocess.run(
        [*cmd, "generate", *args, "--out", str(tmp_path / "ds")],
        capture_output=True, text=True, timeout=120,
    )  # fmt: skip
    lines = [ln for ln in res.stderr.splitlines() if ln.strip()]
    assert res.returncode == 2 and len(lines) == 1, res.stderr
    assert lines[0].startswith("error: ") and _names(lines[0], field)
    assert not (tmp_path / "ds").exists()
