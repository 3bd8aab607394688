"""Shipped presets that restate another at a different voxel size must agree in physical units."""

from __future__ import annotations

import pytest

from factory.config import load_preset, parse_config

SCALE = 60.0 / 40.0  # demo's voxel size over demo-40nm's


def _leaves(d: dict, path: str = ""):
    """(dotted path, value) of every non-dict leaf of a config dump."""
    for k, v in d.items():
        p = f"{path}.{k}" if path else k
        if isinstance(v, dict):
            yield from _leaves(v, p)
        else:
            yield p, v


def _scaled(path: str, v):
    """``demo``'s value of ``path`` restated at 40 nm voxels with the same dose per area."""
    if v is None or isinstance(v, bool):
        return v
    if ("_vox" in path or "_px" in path) and not isinstance(v, str) or path == "grid.shape":
        return tuple(x * SCALE for x in v) if isinstance(v, tuple) else v * SCALE
    if path.startswith("acquisition.noise.photons_per_pixel"):
        return tuple(x / SCALE**2 for x in v) if isinstance(v, tuple) else v / SCALE**2
    return v


def test_demo_40nm_is_demo_in_physical_units():
    demo = load_preset("demo").model_dump()
    fine = dict(_leaves(load_preset("demo-40nm").model_dump()))
    skip = {"name", "grid.voxel_nm", "acquisition.blur.kernel_size"}
    # stages demo leaves off keep their defaults (enabling one is a choice of the user's)
    off = tuple(
        p.removesuffix("enabled") for p, v in _leaves(demo) if p.endswith(".enabled") and not v
    )
    checked = 0
    for path, v in _leaves(demo):
        if path in skip or path.startswith(off):
            continue
        want = _scaled(path, v)
        got = fine[path]
        numeric = isinstance(want, tuple) and all(isinstance(x, int | float) for x in want)
        if numeric:
            assert got == pytest.approx(want, rel=2e-3), path
        elif isinstance(want, float):
            assert got == pytest.approx(want, rel=2e-3), path
        else:
            assert got == want, path
        checked += want != v
    assert checked >= 20  # the lengths really were restated, not left at demo's voxel values
    assert fine["grid.voxel_nm"] * SCALE == demo["grid"]["voxel_nm"]
    # The blur kernel spans the same physical width (odd voxels, ±2σ of the mean σ).
    k60, k40 = demo["acquisition"]["blur"]["kernel_size"], fine["acquisition.blur.kernel_size"]
    assert abs(k40 * 40.0 - k60 * 60.0) <= 40.0


def test_demo_40nm_round_trips():
    c = load_preset("demo-40nm")
    assert parse_config(c.to_json()) == c
    lo, _ = c.phantom.lipid_droplets.radius_vox.bounds
    assert lo >= 3.0  # issue 12's quality grid: lipid droplets at least 3 voxels in radius
