"""The phantom stage: properties of the volumes, not pictures (issue 3).

Real parts only: real configs (presets + overrides), real voxelisation on the CPU, real TIFF/MRC
files read back with tifffile/mrcfile, the real ``simaq`` entry point in a subprocess for exit codes.
Grids are small (32-96 voxels) so every test runs in a few seconds on a 2-core CPU.
"""

from __future__ import annotations

import hashlib
import json
import math
import subprocess
import sys

import mrcfile
import numpy as np
import pytest
import tifffile
import torch
import xraylib
from _cli import stage_app
from scipy import ndimage
from typer.testing import CliRunner

import schemas
from factory.config import load_preset
from factory.errors import ConfigError
from factory.materials import MATERIALS, lac, lac_compound
from factory.phantom import generate_phantom
from factory.phantom import placement as geo
from factory.phantom.cli import register
from factory.rng import SEED_RULE

BG, CYTO, VAC, LD, NUC, MITO, WALL = range(7)
SIX = ndimage.generate_binary_structure(3, 1)
ALL26 = ndimage.generate_binary_structure(3, 3)


def _cfg(preset: str = "demo", shape=(64, 64, 64), **phantom):
    """A preset on a small grid with ``phantom`` section overrides (nested dicts)."""
    return load_preset(preset, {"grid": {"shape": list(shape)}, "phantom": phantom})


def _np(ph):
    return ph.lac.numpy(), ph.labels.numpy()


def _neighbours(mask: np.ndarray) -> np.ndarray:
    """Voxels 6-adjacent to ``mask`` but not in it."""
    return ndimage.binary_dilation(mask, SIX) & ~mask


# --- structure: nesting, no overlap, budding ------------------------------------------------------

# Walls 2 voxels thick: a deformed wall then stays >= 1 voxel everywhere, so "enclosed" can be
# read off the labels as "never 6-adjacent to the background".
NESTING_CASES = [
    ("demo", (64, 64, 64), {"cells": {"wall_thickness_vox": 2.0}}),
    ("full", (64, 96, 96), {"cells": {"count": 2, "budding": {"probability": 1.0}}}),
    ("simaq-paper", (64, 128, 128), {"cells": {"count": 3, "wall_thickness_vox": 2.0}}),
]


@pytest.mark.parametrize(("preset", "shape", "over"), NESTING_CASES, ids=lambda x: str(x)[:12])
@pytest.mark.parametrize("seed", [0, 1, 2])
def test_labels_nest_and_cells_never_overlap(preset, shape, over, seed):
    cfg = _cfg(preset, shape, **over)
    ph = generate_phantom(cfg, seed)
    lacv, lab = _np(ph)
    assert lacv.dtype == np.float32 and lab.dtype == np.uint8
    assert lacv.shape == lab.shape == shape
    assert ph.meta["cells_placed"] >= 1
    fg = lab > 0
    # Absorption exactly where a label is (texture never drives a LAC to 0 or below).
    assert np.all(lacv[fg] > 0) and np.all(lacv[~fg] == 0)
    # Every inner-class voxel is enclosed by its cell: never 6-adjacent to the background.
    for cls in (VAC, LD, NUC, MITO):
        assert not np.any(lab[_neighbours(lab == cls)] == BG), f"class {cls} touches background"
    # One foreground component per placed cell (a bud is joined to its mother), each with a wall.
    comps, n = ndimage.label(fg, ALL26)
    assert n == ph.meta["cells_placed"]
    walls = np.unique(comps[lab == WALL])
    assert set(walls.tolist()) == set(range(1, n + 1))
    # Cells are written one by one into their boxes and merged with a maximum: had two cells
    # shared a voxel, the per-cell voxel counts would exceed what the volume holds.
    counts = np.bincount(lab.ravel(), minlength=schemas.NUM_CELL_CLASSES)
    # A grid-mounted phantom lists the cell classes (ids 0-6), not the capillary's.
    names = [c["name"] for c in schemas.label_table()["classes"]][: schemas.NUM_CELL_CLASSES]
    assert [ph.meta["voxels_per_label"][k] for k in names] == counts.tolist()
    # Placement: bounding spheres (bud and deformation included) clear each other by the gap.
    cells = [o for o in ph.objects if o["class"] == "cell"]
    assert len(cells) == ph.meta["cells_placed"]
    if over.get("cells", {}).get("budding"):
        assert all(c["bud"] is not None for c in cells)


def test_cells_are_the_recorded_ellipsoids_and_organelles_lie_inside():
    # Without deformation the cell shapes can be recomputed from the record alone (numpy).
    over = {
        "cells": {"count": 2, "deformation": {"enabled": False}, "budding": {"probability": 1}},
    }
    cfg = _cfg("full", (64, 112, 112), **over)
    ph = generate_phantom(cfg, 11)
    _, lab = _np(ph)
    grid = np.stack(np.meshgrid(*map(np.arange, lab.shape), indexing="ij"), -1).astype(float)
    union = np.zeros(lab.shape, bool)
    edge = np.zeros(lab.shape, bool)  # voxels within rounding of a surface (record has 4 dp)
    cells = [o for o in ph.objects if o["class"] == "cell"]
    assert len(cells) == 2
    for c in cells:
        rot = np.asarray(c["rotation"])
        for centre, radii in ((c["centre_vox"], c["radii_vox"]), (c["bud"]["centre_vox"], c["bud"]["radii_vox"])):  # fmt: skip
            q = (grid - np.asarray(centre)) @ rot
            f = np.sqrt(np.sum((q / np.asarray(radii)) ** 2, -1))
            assert not np.any(union & (f <= 1.0)) or centre is c["bud"]["centre_vox"]
            union |= f <= 1.0
            edge |= np.abs(f - 1.0) < 1e-3
    assert np.array_equal((lab > 0) & ~edge, union & ~edge)
    for cls in (VAC, LD, NUC, MITO):
        assert np.all(union[lab == cls])


def test_layout_keeps_cells_apart_and_inside_the_grid():
    rng = np.random.default_rng(5)
    bounds = list(rng.uniform(8.0, 20.0, 12))
    shape = (48, 160, 160)
    gap = 2.0
    centres = geo.layout_cells(
        bounds, shape, rng, gap=gap, z_offsets=[0.0] * 12, xy_offset=(3.0, -4.0)
    )
    placed = [(c, b) for c, b in zip(centres, bounds, strict=True) if c is not None]
    assert len(placed) >= 6
    for i, (ci, bi) in enumerate(placed):
        assert np.all(ci - bi >= -1e-9) and np.all(ci + bi <= np.asarray(shape) - 1 + 1e-9)
        for cj, bj in placed[i + 1 :]:
            assert np.linalg.norm(ci - cj) >= bi + bj + gap - 1e-6


# --- organelles -----------------------------------------------------------------------------------


def test_lipid_droplets_are_wholly_inside_or_wholly_outside_vacuoles():
    # Big vacuoles and many droplets, so both kinds occur; gap 2 keeps droplets apart by more
    # than one voxel after the deformation, so each droplet is its own 6-connected component.
    over = {
        "cells": {"radius_vox": 26, "deformation": {"amplitude_vox": 1.0}},
        "nucleus": {"enabled": False},
        "mitochondria": {"enabled": False},
        "vacuoles": {"count": 1, "radius_vox": 14, "fragmentation": {"probability": 0.0}},
        "lipid_droplets": {"count": 30, "radius_vox": 2.5, "gap_vox": 2.0, "tries": 300},
    }
    inside = outside = 0
    for seed in range(4):
        ph = generate_phantom(_cfg("demo", (64, 64, 64), **over), seed)
        _, lab = _np(ph)
        comps, n = ndimage.label(lab == LD, SIX)
        n_in = 0
        for k in range(1, n + 1):
            around = set(np.unique(lab[_neighbours(comps == k)]).tolist())
            assert around == {VAC} or VAC not in around, f"droplet {k} straddles: {around}"
            n_in += around == {VAC}
        objs = [o for o in ph.objects if o["class"] == "lipid_droplet"]
        assert n == len(objs)
        assert n_in == sum(o["in_vacuole"] for o in objs)
        inside += n_in
        outside += n - n_in
    assert inside > 0 and outside > 0


def test_apollonian_packing_is_a_tangent_packing_of_the_unit_sphere():
    c, r = geo.apollonian_depth1()
    assert c.shape == (9, 3) and r.shape == (9,)
    assert np.all(np.linalg.norm(c, axis=1) + r <= 1 + 1e-12)  # inside the unit sphere
    gaps = np.linalg.norm(c[:, None] - c[None], axis=-1) - r[:, None] - r[None]
    off = ~np.eye(9, dtype=bool)
    assert np.all(gaps[off] >= -1e-9)  # no two overlap
    tangent = (np.abs(gaps) < 1e-9) & off
    boundary = np.abs(np.linalg.norm(c, axis=1) + r - 1) < 1e-9
    # Apollonian: each sphere touches at least 4 others or the boundary (Soddy-Gossett).
    assert np.all(tangent.sum(1) + boundary >= 4)


@pytest.mark.parametrize("ld_probability", [0.0, 1.0])
def test_fragmented_vacuoles_become_separate_fragments_or_droplets(ld_probability):
    frag = {
        "probability": 1.0,
        "keep_probability": 1.0,
        "ld_probability": ld_probability,
        "ld_radius_max_vox": 100.0,
    }
    over = {
        "cells": {"radius_vox": 26, "deformation": {"enabled": False}},
        "nucleus": {"enabled": False},
        "mitochondria": {"enabled": False},
        "lipid_droplets": {"enabled": False},
        "vacuoles": {"count": 1, "radius_vox": 17, "fragmentation": frag},
    }
    ph = generate_phantom(_cfg("demo", (64, 64, 64), **over), 3)
    _, lab = _np(ph)
    vac = [o for o in ph.objects if o["class"] == "vacuole"]
    lds = [o for o in ph.objects if o["class"] == "lipid_droplet"]
    assert ph.meta["cells"][0]["vacuoles_fragmented"] == 1
    if ld_probability == 0.0:
        assert len(vac) == 9 and not lds and all(o["fragment_of"] == 0 for o in vac)
        _, n = ndimage.label(lab == VAC, SIX)
        assert n == 9  # nine fragments that never touch
    else:
        assert not vac and len(lds) == 9 and all(o["fragment_of"] == 0 for o in lds)
        assert not np.any(lab == VAC)
        _, n = ndimage.label(lab == LD, SIX)
        assert n == 9


def test_nucleus_has_a_denser_nucleolus_and_mitochondria_are_tubes():
    over = {
        "cells": {"radius_vox": 26},
        "texture": {"enabled": False},
        "nucleus": {"radius_vox": 10, "lac": 0.2, "nucleolus": {"lac": 0.3}},
        "mitochondria": {"networks": 3, "radius_vox": 2.0, "steps": 12},
    }
    ph = generate_phantom(_cfg("demo", (64, 64, 64), **over), 4)
    lacv, lab = _np(ph)
    nuc = lab == NUC
    vals = np.unique(lacv[nuc])
    assert np.allclose(sorted(vals), [0.2, 0.3], atol=1e-6)  # nucleoplasm and nucleolus
    assert (lacv[nuc] == np.float32(0.3)).sum() < (lacv[nuc] == np.float32(0.2)).sum()
    # Tubes, not balls: every mitochondrial voxel is within radius + 1 of the tube's edge, yet
    # each network is many radii long.
    mito = lab == MITO
    assert mito.sum() > 0
    assert ndimage.distance_transform_edt(mito).max() <= 2.0 + 1.0
    comps, n = ndimage.label(mito, ALL26)
    ext = [np.ptp(np.argwhere(comps == k), axis=0).max() for k in range(1, n + 1)]
    assert max(ext) >= 5 * 2.0
    # Near the periphery: tube axes lie at >= 0.7 of the interior radius (25 voxels), so no
    # tube voxel comes closer to the centre than 0.7 x 25 - radius 2 - deformation 1.5 x sqrt(3).
    cell = next(o for o in ph.objects if o["class"] == "cell")
    dist = lambda m: np.linalg.norm(np.argwhere(m) - cell["centre_vox"], axis=1)  # noqa: E731
    assert dist(mito).min() >= 0.7 * 25 - 2.0 - 1.5 * math.sqrt(3) - 0.5
    assert dist(lab == CYTO).min() < 10


def test_tube_network_branches_and_stays_on_its_shell():
    rng = np.random.default_rng(0)
    radii = np.array([30.0, 40.0, 35.0])
    kw = dict(steps=10, step_len=4.0, turn_sd=0.3, shell=(0.7, 0.85), branch_steps=lambda: 3)
    plain = geo.tube_network(rng, radii, branch_probability=0.0, **kw)
    branched = geo.tube_network(rng, radii, branch_probability=1.0, **kw)
    assert plain.shape == (10, 2, 3) and branched.shape == (10 + 10 * 3, 2, 3)
    for segs in (plain, branched):
        rho = np.linalg.norm(segs.reshape(-1, 3) / radii, axis=1)
        assert np.all((rho >= 0.7 - 1e-9) & (rho <= 0.85 + 1e-9))
        steps = np.linalg.norm(segs[:, 1] - segs[:, 0], axis=1)
        assert np.all(steps < 4.0 * 1.5) and np.all(steps > 4.0 * 0.5)


def test_ball_in_ellipsoid_tests_agree_with_dense_sampling():
    rng = np.random.default_rng(2)
    u = rng.normal(size=(20000, 3))
    u /= np.linalg.norm(u, axis=1, keepdims=True)
    for _ in range(60):
        radii = rng.uniform(10, 40, 3)
        p = rng.uniform(-1.2, 1.2, 3) * radii
        d = np.min(np.linalg.norm(u * radii - p, axis=1))  # >= the true distance
        sd = geo.surface_distance(p, radii)
        assert abs(sd) <= d + 1e-9 and abs(sd) >= d - 0.05 * radii.max()
        assert (sd > 0) == (np.sum((p / radii) ** 2) > 1)
        r = 0.9 * abs(sd)
        assert geo.sphere_inside(p, r, np.zeros(3), radii) == (sd < 0)
        assert geo.sphere_outside(p, r, np.zeros(3), radii) == (sd > 0)
        assert not geo.sphere_inside(p, 1.1 * abs(sd), np.zeros(3), radii)
        assert not geo.sphere_outside(p, 1.1 * abs(sd), np.zeros(3), radii)


# --- absorption -----------------------------------------------------------------------------------


def test_per_class_lac_means_match_the_configured_distributions():
    dists = {
        "cell": (0.30, 0.02),
        "vacuole": (0.15, 0.03),
        "lipid_droplet": (0.60, 0.08),
        "nucleus": (0.22, 0.02),
        "mitochondrion": (0.41, 0.04),
    }
    g = lambda m, s: {"normal": [m, s], "clamp": [m - 4 * s, m + 4 * s]}  # noqa: E731
    over = {
        "cells": {"count": 2, "radius_vox": 12, "lac": g(*dists["cell"])},
        "vacuoles": {"lac": g(*dists["vacuole"]), "radius_vox": 4, "count": 1},
        "lipid_droplets": {"lac": g(*dists["lipid_droplet"]), "radius_vox": 1.5, "count": 6},
        "nucleus": {"lac": g(*dists["nucleus"]), "radius_vox": 3.5},
        "mitochondria": {"lac": g(*dists["mitochondrion"]), "radius_vox": 1.2, "networks": 1},
        "texture": {"enabled": False},
    }
    cfg = _cfg("demo", (32, 64, 64), **over)
    drawn: dict[str, list[float]] = {k: [] for k in dists}
    for seed in range(20):
        ph = generate_phantom(cfg, seed)
        lacv, lab = _np(ph)
        per_obj = {}
        for o in ph.objects:
            if o["class"] in drawn and (o["class"], o["cell"]) not in per_obj:
                per_obj[(o["class"], o["cell"])] = o["lac_per_um"]
                if o["class"] in ("cell", "mitochondrion", "nucleus"):  # one draw per cell
                    drawn[o["class"]].append(o["lac_per_um"])
            if o["class"] in ("vacuole", "lipid_droplet"):
                drawn[o["class"]].append(o["lac_per_um"])
        # The volume holds exactly the drawn values of its objects (no texture here).
        for cls, name in ((VAC, "vacuole"), (LD, "lipid_droplet"), (MITO, "mitochondrion")):
            want = np.float32([o["lac_per_um"] for o in ph.objects if o["class"] == name])
            assert np.all(np.isclose(lacv[lab == cls][:, None], want[None], atol=1e-5).any(1))
    for name, (mean, sd) in dists.items():
        x = np.asarray(drawn[name])
        assert len(x) >= 15, name
        assert abs(x.mean() - mean) < 4 * sd / math.sqrt(len(x)), (name, x.mean())
        assert 0.5 * sd < x.std() < 1.6 * sd, (name, x.std())


def test_texture_modulates_cytoplasm_around_its_drawn_value():
    base = {"cells": {"radius_vox": 26, "lac": 0.35}, "nucleus": {"enabled": False}}
    flat = generate_phantom(_cfg("demo", **base, texture={"enabled": False}), 1)
    tex = generate_phantom(_cfg("demo", **base, texture={"amplitude": 0.2}), 1)
    for ph, spread in ((flat, (0.0, 1e-7)), (tex, (0.005, 0.2))):
        lacv, lab = _np(ph)
        c = lacv[lab == CYTO] / 0.35
        assert abs(c.mean() - 1.0) < 0.05
        assert spread[0] <= c.std() <= spread[1]
        assert c.min() >= 1 - 0.2 - 1e-6 and c.max() <= 1 + 0.2 + 1e-6


def test_energy_changes_compound_lacs_as_xraylib_does():
    for e in (300.0, 400.0, 517.0, 540.0):
        for name, formula, rho in (
            ("water_ice", "H2O", 0.93),
            ("protein", "C94H139N24O31S", 1.35),
            ("gold", "Au", 19.32),
        ):
            want = xraylib.CS_Total_CP(formula, e / 1000.0) * rho * 1e-4
            assert lac(name, e) == pytest.approx(want, rel=1e-12)
    # PHYSICS.md: ice 0.111 and protein ~1.35 1/um at 517 eV (Henke); xraylib within a few %.
    assert lac("ice", 517.0) == pytest.approx(0.111, rel=0.03)
    assert lac("protein", 517.0) == pytest.approx(1.35, rel=0.05)
    # Coherent physics: below the O K-edge ice is transparent, above it it absorbs strongly.
    assert lac("ice", 550.0) > 5 * lac("ice", 530.0)
    assert lac("protein", 400.0) > lac("protein", 517.0) > lac("ice", 517.0) * 5
    assert lac("gold", 517.0) > 10 * lac("protein", 517.0)


def test_phantom_lac_follows_the_energy_by_the_protein_ratio():
    ratio = lac_compound("C94H139N24O31S", 1.35, 400.0) / lac_compound(
        "C94H139N24O31S", 1.35, 517.0
    )
    assert ratio > 1.2
    a = generate_phantom(_cfg("demo", (48, 48, 48)), 2)
    cfg400 = load_preset("demo", {"grid": {"shape": [48, 48, 48]}, "energy_ev": 400.0})
    b = generate_phantom(cfg400, 2)
    assert torch.equal(a.labels, b.labels)
    fg = a.labels > 0
    np.testing.assert_allclose(b.lac[fg].numpy(), a.lac[fg].numpy() * ratio, rtol=1e-5)
    assert b.meta["lac_energy_ratio"] == pytest.approx(ratio, rel=1e-5)
    fixed = load_preset(
        "demo",
        {
            "grid": {"shape": [48, 48, 48]},
            "energy_ev": 400.0,
            "phantom": {"scale_lac_with_energy": False},
        },
    )
    assert torch.equal(generate_phantom(fixed, 2).lac, a.lac)


def test_default_lacs_are_the_cited_measured_values():
    cfg = load_preset("demo")
    for field, name in (
        (cfg.phantom.vacuoles.lac, "vacuole"),
        (cfg.phantom.lipid_droplets.lac, "lipid_droplet"),
        (cfg.phantom.cells.lac, "cytoplasm"),
        (cfg.phantom.nucleus.lac, "nucleus"),
        (cfg.phantom.mitochondria.lac, "mitochondrion"),
    ):
        m = MATERIALS[name]
        assert field.normal == (m.mean, m.sd) and m.source
    # The SimAQ measured values (SIMAQ.md) for the reference's three compartments.
    assert (MATERIALS["cytoplasm"].mean, MATERIALS["vacuole"].mean) == (0.346, 0.182)
    assert MATERIALS["lipid_droplet"].mean == 0.570


# --- counts ---------------------------------------------------------------------------------------


def test_counts_follow_the_configured_ranges():
    over = {
        "cells": {"count": {"choice": [1, 2, 3]}, "radius_vox": 12},
        "vacuoles": {
            "count": {"uniform": [1, 2]},
            # 3.0, not 3.5: at 3.5 one cell in ~20 has no room left for a second vacuole (its
            # first one and the nucleus block the interior), whatever the tries; 0 in 291 at 3.0
            "radius_vox": 3.0,
            "tries": 200,
            "fragmentation": {"probability": 0.0},
        },
        "lipid_droplets": {"count": {"uniform": [2, 9]}, "radius_vox": 1.2, "tries": 300},
        "nucleus": {"radius_vox": 3.5},
        "mitochondria": {"networks": {"uniform": [1, 3]}, "radius_vox": 1.2},
        "texture": {"enabled": False},
    }
    cfg = _cfg("demo", (32, 96, 96), **over)
    seen = {"cells": set(), "vacuoles": set(), "lipid_droplets": set(), "mitochondria": set()}
    for seed in range(12):
        ph = generate_phantom(cfg, seed)
        m = ph.meta
        assert 1 <= m["cells_requested"] <= 3 and m["cells_placed"] == m["cells_requested"]
        seen["cells"].add(m["cells_requested"])
        per = {k: 0 for k in ("vacuole", "lipid_droplet", "nucleus", "mitochondrion")}
        for o in ph.objects:
            if o["class"] in per:
                per[o["class"]] += 1
        assert per["nucleus"] == m["cells_placed"]  # one nucleus per cell
        for cell in m["cells"]:
            assert 1 <= cell["vacuoles"] <= 2 and 2 <= cell["lipid_droplets"] <= 9
            assert 1 <= cell["mitochondria"] <= 3
            assert cell["vacuoles_failed"] == 0 and cell["lipid_droplets_failed"] == 0
            for k in ("vacuoles", "lipid_droplets", "mitochondria"):
                seen[k].add(cell[k])
        assert per["vacuole"] == sum(c["vacuoles"] for c in m["cells"])
        assert per["lipid_droplet"] == sum(c["lipid_droplets"] for c in m["cells"])
        assert per["mitochondrion"] == sum(c["mitochondria"] for c in m["cells"])
        assert m["objects_per_class"]["cell"] == m["cells_placed"]
    assert all(len(v) >= 2 for v in seen.values()), seen  # the draws really vary


# --- determinism ----------------------------------------------------------------------------------


def _digest(ph) -> str:
    h = hashlib.sha256()
    h.update(ph.lac.numpy().tobytes())
    h.update(ph.labels.numpy().tobytes())
    h.update(json.dumps(ph.objects, sort_keys=True).encode())
    return h.hexdigest()


def test_same_seed_is_bit_identical_and_other_seeds_differ():
    cfg = _cfg("full", (64, 96, 96))
    before = torch.get_num_threads()
    a = generate_phantom(cfg, 7)  # one torch thread (the stage's default)
    b = generate_phantom(cfg, 7, device="cpu", threads=2)
    assert torch.get_num_threads() == before  # the stage restores the caller's setting
    assert torch.equal(a.lac, b.lac) and torch.equal(a.labels, b.labels)
    assert a.objects == b.objects and a.meta == b.meta
    c = generate_phantom(cfg, 8)
    d = generate_phantom(cfg, 7, index=1)
    for other in (c, d):
        assert not torch.equal(a.labels, other.labels) and not torch.equal(a.lac, other.lac)
    # Another process with one torch thread gives the same bytes.
    code = (
        "import torch, hashlib, json; torch.set_num_threads(1);"
        "from factory.config import load_preset; from factory.phantom import generate_phantom;"
        "cfg = load_preset('full', {'grid': {'shape': [64, 96, 96]}});"
        "ph = generate_phantom(cfg, 7); h = hashlib.sha256();"
        "h.update(ph.lac.numpy().tobytes()); h.update(ph.labels.numpy().tobytes());"
        "h.update(json.dumps(ph.objects, sort_keys=True).encode()); print(h.hexdigest())"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == _digest(a)


def test_bad_threads_argument_is_refused():
    with pytest.raises(ValueError, match="threads"):
        generate_phantom(_cfg("demo", (32, 32, 32)), 0, threads=0)


@pytest.mark.skipif(not torch.cuda.is_available(), reason="no CUDA device on this machine")
def test_cuda_phantom_has_the_same_structure():
    cfg = _cfg("full", (64, 96, 96))
    ph = generate_phantom(cfg, 3, device="cuda")
    assert ph.lac.device.type == "cuda" and ph.labels.dtype == torch.uint8
    again = generate_phantom(cfg, 3, device="cuda")
    assert torch.equal(ph.labels, again.labels)
    lab = ph.labels.cpu().numpy()
    for cls in (VAC, LD, NUC, MITO):
        assert not np.any(lab[_neighbours(lab == cls)] == BG)


# --- the command and bad input --------------------------------------------------------------------


@pytest.mark.parametrize("fmt", ["tiff", "mrc"])
def test_phantom_command_writes_files_that_read_back(tmp_path, fmt):
    out = tmp_path / "ph"
    args = ["phantom", "--preset", "demo", "--seed", "5", "--index", "2", "--out", str(out),
            "--format", fmt, "--set", "grid.shape=[40,48,56]"]  # fmt: skip
    res = CliRunner().invoke(stage_app(register), args)
    assert res.exit_code == 0, res.output + repr(res.exception)
    cfg = load_preset("demo", {"grid": {"shape": [40, 48, 56]}})
    ref = generate_phantom(cfg, 5, index=2)
    if fmt == "tiff":
        lacv, lab = tifffile.imread(out / "lac.tif"), tifffile.imread(out / "labels.tif")
        assert lab.dtype == np.uint8
        with tifffile.TiffFile(out / "lac.tif") as tf:
            assert tf.is_imagej and tf.imagej_metadata["spacing"] == pytest.approx(0.06)
    else:
        with mrcfile.open(out / "lac.mrc", permissive=False) as m:
            lacv = np.array(m.data)
            assert float(m.voxel_size.x) == pytest.approx(600.0)  # 60 nm in Å
        with mrcfile.open(out / "labels.mrc", permissive=False) as m:
            lab = np.array(m.data)
        assert lab.dtype == np.int8  # MRC mode 0
    assert lacv.dtype == np.float32 and lacv.shape == lab.shape == (40, 48, 56)
    np.testing.assert_array_equal(lacv, ref.lac.numpy())
    np.testing.assert_array_equal(lab.astype(np.uint8), ref.labels.numpy())
    rec = json.loads((out / "phantom.json").read_text())
    assert rec["seed"] == 5 and rec["index"] == 2 and rec["config_sha256"] == cfg.sha256
    assert rec["seed_rule"] == SEED_RULE  # which streams drew it (per-part since format 2)
    assert rec["objects"] == json.loads(json.dumps(ref.objects))


def test_phantom_command_applies_the_label_scheme(tmp_path):
    out = tmp_path / "s4"
    args = ["phantom", "--preset", "demo", "--out", str(out), "--scheme", "simaq4",
            "--set", "grid.shape=[40,40,40]"]  # fmt: skip
    res = CliRunner().invoke(stage_app(register), args)
    assert res.exit_code == 0, res.output + repr(res.exception)
    lab = tifffile.imread(out / "labels.tif")
    full = generate_phantom(load_preset("demo", {"grid": {"shape": [40, 40, 40]}}), 0)
    np.testing.assert_array_equal(lab, schemas.label_scheme("simaq4").apply(full.labels.numpy()))
    assert set(np.unique(lab).tolist()) <= {0, 1, 2, 3} and (full.labels.numpy() >= 4).any()


BAD = [
    ({"phantom": {"cells": {"colour": "red"}}}, ["phantom.cells.colour", "red"]),
    ({"phantom": {"lipid_droplets": {"radius_vox": -2}}}, ["lipid_droplets.radius_vox", "-2"]),
    ({"phantom": {"vacuoles": {"radius_vox": {"uniform": [9, 4]}}}}, ["vacuoles.radius_vox", "[9.0, 4.0]"]),
    ({"phantom": {"mitochondria": {"shell": [0.9, 0.7]}}}, ["mitochondria.shell", "[0.9, 0.7]"]),
    ({"phantom": {"vacuoles": {"radius_clamp_vox": [30, 10]}}}, ["radius_clamp_vox", "[30.0, 10.0]"]),
    ({"phantom": {"nucleus": {"radius_vox": 40}}}, ["phantom.nucleus.radius_vox", "40.0"]),
    ({"phantom": {"lipid_droplets": {"count": 1000}}}, ["phantom.lipid_droplets.count", "1000.0"]),
    ({"grid": {"shape": [64, -64, 64]}}, ["grid", "-64"]),
    ({"phantom": {"fit_to_grid": False}, "grid": {"shape": [32, 32, 32]}}, ["phantom.cells.radius_vox", "[32, 32, 32]"]),
]  # fmt: skip


@pytest.mark.parametrize(("over", "words"), BAD, ids=[w[0] for _, w in BAD])
def test_bad_config_names_the_field_and_the_value(over, words):
    with pytest.raises(ConfigError) as err:
        load_preset("demo", over)
    msg = str(err.value)
    assert "\n" not in msg
    for w in words:
        assert w in msg, (w, msg)


@pytest.mark.parametrize(
    ("setting", "word"),
    [("phantom.cells.colour=red", "phantom.cells.colour"),
     ("phantom.nucleus.radius_vox=40", "phantom.nucleus.radius_vox")],
)  # fmt: skip
def test_cli_bad_config_exits_2_and_writes_nothing(tmp_path, setting, word):
    out = tmp_path / "never"
    cmd = [sys.executable, "-m", "cli", "phantom", "--preset", "demo", "--out", str(out),
           "--set", setting]  # fmt: skip
    res = subprocess.run(cmd, capture_output=True, text=True, timeout=120)
    assert res.returncode == 2, res.stderr
    lines = res.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: ") and word in lines[0]
    assert not out.exists()
