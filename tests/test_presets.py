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


# grid-yeast-60nm's cell radius over simaq-paper's (after the reference's x1.2)
SIMAQ_TO_60 = 33.0 / (50.0 * 1.2)


def test_grid_60nm_is_the_simaq_phantom_at_a_real_cell_size():
    ref, g = load_preset("simaq-paper").phantom, load_preset("grid-yeast-60nm").phantom
    assert g.scale == 1.0 and ref.scale == 1.2
    f = SIMAQ_TO_60 * ref.scale  # applied to simaq-paper's voxel values
    pairs = [
        (g.cells.radius_vox.bounds, ref.cells.radius_vox.bounds),
        (g.vacuoles.radius_clamp_vox, ref.vacuoles.radius_clamp_vox),
        (g.lipid_droplets.radius_vox.bounds, ref.lipid_droplets.radius_vox.bounds),
        (
            (g.vacuoles.fragmentation.ld_radius_max_vox,) * 2,
            (ref.vacuoles.fragmentation.ld_radius_max_vox,) * 2,
        ),
    ]
    for got, want in pairs:
        assert got == pytest.approx(tuple(x * f for x in want), rel=0.02)
    # Counts, the count rule, placement and fragmentation probabilities are the reference's.
    for part in ("vacuoles", "lipid_droplets"):
        assert getattr(g, part).count == getattr(ref, part).count, part
    assert g.vacuoles.divide_by_count and g.vacuoles.tries == ref.vacuoles.tries
    gf, rf = g.vacuoles.fragmentation, ref.vacuoles.fragmentation
    assert (gf.probability, gf.keep_probability, gf.fill) == (
        rf.probability,
        rf.keep_probability,
        rf.fill,
    )
    assert not g.nucleus.enabled and not g.mitochondria.enabled


def test_grid_60nm_physical_sizes():
    c = load_preset("grid-yeast-60nm")
    assert parse_config(c.to_json()) == c
    ph, um = c.phantom, c.grid.voxel_nm / 1000.0
    shape = tuple(c.grid.shape)
    assert ph.fit_factor(shape) == 1.0  # nothing shrunk: the sizes below are what is drawn
    lo, hi = ph.cells.radius_vox.bounds
    assert 1.5 <= lo * um and hi * um <= 2.5  # a budding yeast cell is 4-6 um across (PHYSICS.md)
    assert ph.lipid_droplets.radius_vox.bounds[0] >= 3.0  # issue 12's quality grid
    # The ice layer is at least as thick as the largest cell drawn (before its small warp).
    ice_lo, _ = c.acquisition.ice.thickness_vox.bounds
    assert ice_lo >= 2 * hi
    # The cell stays inside the reconstruction's circular field of view in the slicing planes.
    fov = min(shape[1:]) / 2 - c.reconstruction.fov_inset_px
    assert ph.cell_bound_vox() + 3 * ph.cells.xy_jitter_vox.normal[1] <= fov


def test_capillary_yeast_60nm_pairs_the_grid_cells_with_the_capillary_instrument():
    cap = load_preset("capillary-yeast-60nm")
    grid, small = load_preset("grid-yeast-60nm"), load_preset("capillary-60nm")
    assert parse_config(cap.to_json()) == cap
    assert cap.grid.voxel_nm == grid.grid.voxel_nm == small.grid.voxel_nm
    # The same cell population as the grid preset, packed along the capillary instead of one alone.
    cells = {"count", "gap_vox", "z_jitter_vox", "xy_jitter_vox"}
    assert cap.phantom.model_dump(exclude={"cells": cells}) == grid.phantom.model_dump(
        exclude={"cells": cells}
    )
    assert cap.phantom.cells.count.bounds[1] >= 2 and cap.phantom.cells.gap_vox == 0.0
    # The instrument and the mount's draws are capillary-60nm's.
    assert cap.acquisition == small.acquisition and cap.reconstruction == small.reconstruction
    assert cap.mount.model_dump(exclude={"outer_diameter_fov"}) == small.mount.model_dump(
        exclude={"outer_diameter_fov"}
    )
    assert cap.phantom.fit_factor(tuple(cap.grid.shape)) == 1.0
    # The largest cell fits the narrowest lumen (load checks it; this states the margin).
    _, _, lumen = cap.mount.radius_bounds_vox(tuple(cap.grid.shape), cap.grid.voxel_nm)
    assert cap.phantom.cell_bound_vox() < lumen
