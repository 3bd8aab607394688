"""The random-stream policy (issue 11): one sub-stream per part of a phantom (and per effect of an
acquisition), so switching one part off, or drawing more of one kind, leaves the others' draws
unchanged; same (seed, index) gives the same draws; every cell has its own streams."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from factory.acquisition.simulate import EFFECT_ID, _Streams
from factory.config import load_preset
from factory.phantom import generate_phantom
from factory.phantom import plan as planmod
from factory.phantom.generate import _draw_plan
from factory.rng import (
    PHANTOM_CELL_STREAMS,
    PHANTOM_STREAM_ID,
    SEED_RULE,
    STAGE_ID,
    PhantomStreams,
    stage_rng,
)


def _cfg(preset="full", shape=(64, 96, 96), **phantom):
    return load_preset(preset, {"grid": {"shape": list(shape)}, "phantom": phantom})


def _plan(cfg, seed: int, index: int = 0):
    return _draw_plan(cfg, tuple(cfg.grid.shape), PhantomStreams(seed, index))


def _cell_draws(c: planmod.CellPlan) -> dict:
    """Everything drawn for a cell's shape and pose, and where the layout put it."""
    bud = None if c.bud is None else {k: np.asarray(v).tolist() for k, v in c.bud.items()}
    return {
        "radii": c.radii.tolist(),
        "wall": c.wall,
        "rotation": c.rotation.tolist(),
        "lac": c.lac,
        "wall_lac": c.wall_lac,
        "deform": (c.deform_amp, c.deform_scale),
        "z_offset": c.z_offset,
        "bud": bud,
        "centre": None if c.centre is None else c.centre.tolist(),
    }


def _ell(e: planmod.Ellipsoid | None):
    return None if e is None else (e.cls, e.centre.tolist(), e.radii.tolist(), e.lac, e.extra)


def _organelles(c: planmod.CellPlan, kind: str):
    if kind == "nucleus":
        return _ell(c.nucleus), _ell(c.nucleolus)
    if kind == "vacuoles":
        return [_ell(v) for v in c.vacuoles]
    if kind == "mitochondria":
        segs = None if c.mito_segments is None else c.mito_segments.tolist()
        return c.mito_lac, segs, c.mito_networks
    raise AssertionError(kind)


# --- the table and the rule ----------------------------------------------------------------------


def test_stream_ids_are_fixed_and_recorded_in_the_seed_rule():
    # Never renumber: these ids are part of every format-2 dataset's identity.
    assert PHANTOM_STREAM_ID == {
        "mount": 0,
        "cell_count": 1,
        "texture": 2,
        "layout": 3,
        "cell": 4,
        "nucleus": 5,
        "vacuoles": 6,
        "lipid_droplets": 7,
        "mitochondria": 8,
        "deformation_field": 9,
        "texture_field": 10,
    }
    assert len(set(PHANTOM_STREAM_ID.values())) == len(PHANTOM_STREAM_ID)
    assert PHANTOM_CELL_STREAMS < set(PHANTOM_STREAM_ID)
    assert str(PHANTOM_STREAM_ID) in SEED_RULE and str(STAGE_ID) in SEED_RULE
    assert set(planmod.ORGANELLE_KINDS) <= PHANTOM_CELL_STREAMS


def test_a_sub_stream_is_the_stage_sequence_with_its_key_appended():
    """The rule written in SEED_RULE, checked against plain numpy/torch (the acquisition's too)."""
    seed, index, cell = 11, 4, 2
    s = PhantomStreams(seed, index)
    key = (index, STAGE_ID["phantom"], PHANTOM_STREAM_ID["vacuoles"], cell)
    ss = np.random.SeedSequence(seed, spawn_key=key)
    assert (
        s.rng("vacuoles", cell).random(4).tolist() == np.random.default_rng(ss).random(4).tolist()
    )
    whole = np.random.SeedSequence(seed, spawn_key=(index, 0, PHANTOM_STREAM_ID["layout"], 0))
    assert s.rng("layout").random(2).tolist() == np.random.default_rng(whole).random(2).tolist()
    g = torch.Generator().manual_seed(
        int(ss.generate_state(2, dtype=np.uint64)[1]) & 0x7FFF_FFFF_FFFF_FFFF
    )
    assert torch.equal(
        torch.rand(5, generator=s.torch("vacuoles", cell)), torch.rand(5, generator=g)
    )
    # the acquisition's effects: the same mechanism, key (effect_id,)
    acq = _Streams(seed, index, torch.device("cpu"))
    ss = np.random.SeedSequence(seed, spawn_key=(index, STAGE_ID["acquisition"], EFFECT_ID["ice"]))
    assert (
        acq.np(EFFECT_ID["ice"]).random(3).tolist() == np.random.default_rng(ss).random(3).tolist()
    )


def test_same_seed_and_index_give_the_same_streams_and_every_stream_differs():
    a, b = PhantomStreams(5, 3), PhantomStreams(5, 3)
    first: dict[tuple, tuple] = {}
    for name in PHANTOM_STREAM_ID:
        for cell in range(4) if name in PHANTOM_CELL_STREAMS else [None]:
            x = a.rng(name, cell).integers(0, 2**63, size=4)
            assert np.array_equal(x, b.rng(name, cell).integers(0, 2**63, size=4))
            t = torch.randint(0, 2**62, (4,), generator=a.torch(name, cell))
            assert torch.equal(t, torch.randint(0, 2**62, (4,), generator=b.torch(name, cell)))
            first[(name, cell)] = (tuple(x.tolist()), tuple(t.tolist()))
    # independent: no two streams (nor the numpy and torch sides of one) start alike
    words = [w for pair in first.values() for w in pair]
    words.append(tuple(stage_rng(5, 3, "phantom").integers(0, 2**63, size=4).tolist()))
    assert len(set(words)) == len(words)
    other = PhantomStreams(5, 4)  # another sample: other streams
    assert not np.array_equal(
        other.rng("vacuoles", 0).integers(0, 2**63, size=4), np.asarray(first[("vacuoles", 0)][0])
    )


def test_stream_names_and_cells_are_checked():
    s = PhantomStreams(0, 0)
    with pytest.raises(ValueError, match="unknown phantom stream"):
        s.rng("golgi", 0)
    with pytest.raises(ValueError, match="takes a cell index"):
        s.rng("vacuoles")
    with pytest.raises(ValueError, match="takes no cell index"):
        s.rng("layout", 0)
    with pytest.raises(ValueError, match="cell"):
        s.torch("texture_field", -1)


# --- switching a part leaves the others' draws -----------------------------------------------------


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_texture_off_changes_only_the_lac_texture(seed):
    """Texture draws its parameters and its per-cell fields from its own streams: without it the
    cells, their layout, every organelle and the deformation fields (hence the labels) are the same,
    and the LAC differs only where the texture modulates it."""
    on = generate_phantom(_cfg(), seed)
    off = generate_phantom(_cfg(texture={"enabled": False}), seed)
    assert on.meta["texture"] is not None and off.meta["texture"] is None
    assert on.meta["cells_placed"] >= 1
    assert torch.equal(on.labels, off.labels)
    assert on.objects == off.objects
    assert (
        on.meta["cells"] == off.meta["cells"]
        and on.meta["xy_jitter_vox"] == off.meta["xy_jitter_vox"]
    )
    assert not torch.equal(on.lac, off.lac)
    untextured = (on.labels == 2) | (on.labels == 3) | (on.labels == 5) | (on.labels == 6)
    untextured |= on.labels == 0
    assert torch.equal(on.lac[untextured], off.lac[untextured])  # walls, vacuoles, droplets, mito


@pytest.mark.parametrize("seed", range(6))
def test_lipid_droplets_off_leaves_cells_nucleus_vacuoles_and_mitochondria(seed):
    on = _plan(_cfg(), seed)
    off = _plan(_cfg(lipid_droplets={"enabled": False}), seed)
    assert [_cell_draws(c) for c in on.cells] == [_cell_draws(c) for c in off.cells]
    assert on.xy == off.xy and on.texture == off.texture
    for a, b in zip(on.placed, off.placed, strict=True):
        for kind in ("nucleus", "vacuoles", "mitochondria"):
            assert _organelles(a, kind) == _organelles(b, kind), kind
        assert "lipid_droplets" in a.drawn and "lipid_droplets" not in b.drawn
    assert any(a.droplets != b.droplets for a, b in zip(on.placed, off.placed, strict=True))


@pytest.mark.parametrize("seed", range(4))
def test_nucleus_and_mitochondria_off_leave_the_cells_and_the_other_kinds(seed):
    ref = _plan(_cfg(), seed)
    no_mito = _plan(_cfg(mitochondria={"enabled": False}), seed)
    no_nuc = _plan(_cfg(nucleus={"enabled": False}), seed)
    for other in (no_mito, no_nuc):
        assert [_cell_draws(c) for c in ref.cells] == [_cell_draws(c) for c in other.cells]
    for a, b, c in zip(ref.placed, no_mito.placed, no_nuc.placed, strict=True):
        for kind in ("nucleus", "vacuoles"):
            assert _organelles(a, kind) == _organelles(b, kind)
        # the mitochondria never avoid the nucleus: its absence changes none of their draws
        assert _organelles(a, "mitochondria") == _organelles(c, "mitochondria")
        assert [_ell(d) for d in a.droplets] == [_ell(d) for d in b.droplets]


def test_more_vacuoles_leave_the_cells_nucleus_and_mitochondria():
    for seed in range(4):
        ref = _plan(_cfg(), seed)
        more = _plan(_cfg(vacuoles={"count": 3, "divide_by_count": False}), seed)
        assert [_cell_draws(c) for c in ref.cells] == [_cell_draws(c) for c in more.cells]
        for a, b in zip(ref.placed, more.placed, strict=True):
            assert _organelles(a, "nucleus") == _organelles(b, "nucleus")
            assert _organelles(a, "mitochondria") == _organelles(b, "mitochondria")


def _cells_of(s: PhantomStreams):
    return lambda i: s.rng("cell", i)


def test_a_cell_does_not_depend_on_how_many_cells_are_drawn():
    cfg2, cfg3 = _cfg(cells={"count": 2}), _cfg(cells={"count": 3})
    ctx = planmod.Ctx(radius_scale=1.0, fit=1.0, lac_ratio=1.0)
    for seed in range(3):
        s = PhantomStreams(seed, 0)
        two = planmod.draw_cells(cfg2.phantom, s.rng("cell_count"), _cells_of(s), ctx)
        three = planmod.draw_cells(cfg3.phantom, s.rng("cell_count"), _cells_of(s), ctx)
        assert [_cell_draws(c) for c in two] == [_cell_draws(c) for c in three[:2]]


def test_texture_off_leaves_a_capillary_mount_and_the_layout():
    cfg = load_preset("capillary-demo")
    off = load_preset("capillary-demo", {"phantom": {"texture": {"enabled": False}}})
    for seed in range(3):
        a, b = _plan(cfg, seed), _plan(off, seed)
        assert a.cap.to_meta() == b.cap.to_meta()
        assert [_cell_draws(c) for c in a.cells] == [_cell_draws(c) for c in b.cells]


# --- different cells, different streams ----------------------------------------------------------


def test_different_cells_draw_from_independent_streams():
    """Two cells with the same (fixed) shape get different organelles and texture fields."""
    cfg = _cfg(
        cells={
            "count": 2,
            "radius_vox": 20.0,
            "wall_thickness_vox": 2.0,
            "orientation": "axis",
            "deformation": {"enabled": False},
            "budding": {"probability": 0.0},
        },
    )
    plan = _plan(cfg, 3)
    assert len(plan.placed) == 2
    a, b = plan.placed
    assert np.array_equal(a.radii, b.radii)
    for kind in ("nucleus", "vacuoles", "mitochondria"):
        assert _organelles(a, kind) != _organelles(b, kind), kind
    s = PhantomStreams(3, 0)
    fa = torch.rand(8, generator=s.torch("texture_field", 0))
    fb = torch.rand(8, generator=s.torch("texture_field", 1))
    assert not torch.equal(fa, fb)
