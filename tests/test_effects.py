"""The acquisition stage as a chain of effects (:data:`factory.acquisition.simulate.CHAIN`):
the table's order, its stream ids, the walk, and one effect run alone. Grids of 24³."""

from __future__ import annotations

from dataclasses import replace
from types import SimpleNamespace

import numpy as np
import pytest
import torch

from factory.acquisition import simulate
from factory.acquisition.config import AcquisitionConfig
from factory.acquisition.simulate import (
    CHAIN,
    EFFECT_ID,
    AcquisitionState,
    Effect,
    EffectStream,
    _Streams,
    simulate_acquisition,
)
from factory.config import parse_config

N = 24

# The physics order; the outputs of every dataset depend on it (and on the ids below).
ORDER = [
    "tilt",
    "blur",
    "fiducials",
    "cracks",
    "background_noise",
    "clip_to_fov",
    "motion",
    "psf",
    "projection",
    "damage",
    "alignment",
    "warp",
    "flicker",
    "ice",
    "mount",
    "rings",
    "noise",
    "sinogram",
]
IDS = {
    "tilt": 0,
    "blur": 1,
    "fiducials": 2,
    "cracks": 3,
    "background_noise": 4,
    "damage": 5,
    "psf": 6,
    "motion": 7,
    "ice": 8,
    "flicker": 9,
    "noise": 10,
    "rings": 11,
    "alignment": 12,
    "mount": 13,
}
EVERY_EFFECT = {
    "tilt": {"range_deg": 120, "step_deg": 4.0, "angle_error_deg": {"normal": [0, 0.1]}},
    "blur": {"enabled": True},
    "fiducials": {"enabled": True, "count": 3, "radius_vox": 1.5},
    "cracks": {"enabled": True, "count": 2, "modulation_scale_vox": 8.0},
    "background_noise": {"enabled": True},
    "damage": {"enabled": True},
    "psf": {"enabled": True, "sigma_focus_nm": 40.0, "n_slabs": 3},
    "motion": {"enabled": True, "sweep_deg": 0.2, "drift_px": 0.5},
    "alignment": {"enabled": True, "shift_px": {"normal": [0, 0.5]}},
    "flicker": {"enabled": True, "scale_px": 8.0},
    "ice": {"enabled": True, "thickness_vox": 20.0},
    "rings": {"enabled": True, "defect_fraction": 0.01},
    "noise": {"enabled": True},
    "clip_to_fov": True,
}


def make_config(acquisition: dict | None = None, mount: dict | None = None):
    data = {"name": "test", "grid": {"shape": [N, N, N], "voxel_nm": 50.0}}
    data["acquisition"] = acquisition or {}
    if mount:
        data["mount"] = mount
    return parse_config(data)


def ball_phantom(n: int = N):
    c = np.arange(n) - (n - 1) / 2.0
    z, y, x = np.meshgrid(c, c, c, indexing="ij")
    inside = z**2 + y**2 + x**2 <= (n / 4) ** 2
    lac = torch.from_numpy(np.where(inside, 0.4, 0.0).astype(np.float32))
    return SimpleNamespace(lac=lac, labels=torch.from_numpy(inside.astype(np.uint8)))


def test_the_chain_is_the_physics_order_with_fixed_stream_ids():
    assert [e.name for e in CHAIN] == ORDER
    assert {e.name: e.stream_id for e in CHAIN if e.stream_id is not None} == IDS
    assert EFFECT_ID == IDS and list(EFFECT_ID.values()) == sorted(IDS.values())
    config = make_config()
    for e in CHAIN:  # every section resolves; a row with a stream has a switchable section
        section = e.section_of(config)
        assert section is not None, e.section
        if e.stream_id is not None and e.name not in ("tilt", "mount"):
            assert e.section == f"acquisition.{e.name}" and hasattr(section, "enabled")


def test_every_switchable_acquisition_section_has_one_row():
    switchable = {
        name
        for name, f in AcquisitionConfig.model_fields.items()
        if "enabled" in getattr(f.annotation, "model_fields", {})
    }
    rows = [e.section.removeprefix("acquisition.") for e in CHAIN]
    assert switchable and all(rows.count(name) == 1 for name in switchable)


def test_meta_follows_the_chain_and_disabled_rows_do_not_run():
    acq = simulate_acquisition(make_config(EVERY_EFFECT), ball_phantom(), 3)
    keys = [k for k in acq.meta if k not in ("substream_rule", "dose")]
    assert keys == [e.name for e in CHAIN if e.name in keys]
    assert set(keys) == set(IDS) - {"mount"} | {"sinogram"}
    ideal = simulate_acquisition(make_config(), ball_phantom(), 3)
    assert list(ideal.meta) == ["substream_rule", "tilt", "sinogram", "dose"]


def test_an_added_row_runs_in_its_place_with_its_own_stream(monkeypatch):
    calls = []

    def offset(section, stream, state):  # a new projection-space effect
        value = float(stream.rng.uniform(0.0, 0.1))
        state.projections = state.projections + value
        state.meta["offset"] = {"optical_depth": value}

    def never(section, stream, state):
        calls.append(section)

    extra = [
        Effect("offset", 99, "acquisition", offset),
        Effect("off", 98, "acquisition.ice", never),
    ]
    at = ORDER.index("ice") + 1
    monkeypatch.setattr(simulate, "CHAIN", CHAIN[:at] + tuple(extra) + CHAIN[at:])
    config = make_config({"noise": {"enabled": True}})
    acq = simulate_acquisition(config, ball_phantom(), 5)
    assert list(acq.meta)[-4:] == ["offset", "noise", "sinogram", "dose"]
    assert not calls  # its section (ice) is off
    monkeypatch.setattr(simulate, "CHAIN", CHAIN)
    base = simulate_acquisition(config, ball_phantom(), 5)
    assert acq.meta["tilt"] == base.meta["tilt"]  # other streams untouched
    assert acq.meta["noise"]["photons_per_pixel"] == base.meta["noise"]["photons_per_pixel"]
    assert acq.meta["noise"]["mean_counts"] < base.meta["noise"]["mean_counts"]


def test_one_effect_runs_alone_on_a_state():
    config = make_config({"ice": {"enabled": True, "thickness_vox": 40.0, "lac_per_um": 0.1}})
    state = AcquisitionState.from_phantom(config, ball_phantom(), torch.device("cpu"))
    streams = _Streams(0, 0, state.device)
    rows = {e.name: e for e in CHAIN}
    rows["tilt"].apply(config.acquisition.tilt, streams.of(rows["tilt"]), state)
    state.projections = torch.zeros((state.n, N, N))
    ice = rows["ice"]
    ice.apply(config.acquisition.ice, streams.of(ice), state)
    cos = np.cos(np.deg2rad(state.tilt.true_deg))
    want = 40.0 * 0.1 * state.vox_um / cos
    np.testing.assert_allclose(state.projections[:, 0, 0].numpy(), want, rtol=1e-5)
    assert state.meta["ice"]["thickness_um"] == pytest.approx(40.0 * state.vox_um)


def test_effect_stream_is_made_once_and_deterministic_steps_get_none():
    streams = _Streams(1, 2, torch.device("cpu"))
    rows = {e.name: e for e in CHAIN}
    s = streams.of(rows["noise"])
    assert isinstance(s, EffectStream) and s.rng is s.rng and s.gen is s.gen
    assert streams.of(rows["projection"]) is None
    again = streams.of(replace(rows["noise"]))
    assert again.rng.uniform() == streams.np(IDS["noise"]).uniform()
