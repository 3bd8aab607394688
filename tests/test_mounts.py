"""Sample mounts: the capillary (glass, medium, cells packed along the tilt axis, full rotation) and
the grid (support film, bars). Small grids (≤ 64³) so that the whole file runs in seconds."""

from __future__ import annotations

import numpy as np
import pytest
import torch

import schemas
from factory.config import load_preset, parse_config, preset_names
from factory.errors import ConfigError
from factory.materials import lac
from factory.phantom import generate_phantom
from factory.phantom.mount import CapillaryPlan, capillary_masks
from factory.sample import simulate_sample

# capillary-demo, fully inside the field of view (the ring inside the reconstruction's FOV), 180°
# or 360° with drops and bad projections, lighter on organelles.
SMALL = {
    "mount": {"outer_diameter_fov": {"uniform": [0.8, 0.85]}},
    "acquisition": {"tilt": {"range_deg": {"choice": [180, 360]}}},
}


@pytest.fixture(scope="module")
def cap_config():
    return load_preset("capillary-demo", SMALL)


@pytest.fixture(scope="module")
def cap_phantom(cap_config):
    return generate_phantom(cap_config, 3, index=1)


def test_presets_load_and_validate():
    names = ("capillary", "capillary-demo", "capillary-60nm")
    assert set(names) <= set(preset_names())
    for name in names:
        c = load_preset(name)
        assert c.mount.kind == "capillary" and not c.acquisition.ice.enabled
        assert c.acquisition.tilt.range_deg.bounds[1] == 360.0
        assert parse_config(c.to_json()) == c  # the resolved config round-trips
    demo = load_preset("demo")
    assert demo.mount.kind == "grid" and "mount" not in demo.to_json()  # hashes unchanged


def test_capillary_phantom_glass_and_medium(cap_config, cap_phantom):
    lab, mu = cap_phantom.labels.numpy(), cap_phantom.lac.numpy()
    m = cap_phantom.meta["mount"]
    glass = lac("borosilicate_glass", cap_config.energy_ev)
    assert (lab == schemas.CAPILLARY).any()
    np.testing.assert_allclose(mu[lab == schemas.CAPILLARY], glass, rtol=1e-5)
    # Medium: water ice plus the drawn buffer absorption, everywhere in the lumen outside cells.
    want = lac("water_ice", cap_config.energy_ev) + m["medium_extra_lac_per_um"]
    assert m["medium_lac_per_um"] == pytest.approx(want, abs=1e-6)
    ring, lumen = capillary_masks(CapillaryPlan.from_meta(m, cap_config.grid.voxel_nm), lab.shape)
    lumen3 = np.broadcast_to(lumen.numpy()[:, None, :], lab.shape)
    outside_cells = lumen3 & ((lab == 0) | (lab >= schemas.CAPILLARY))
    assert np.all(lab[outside_cells] == schemas.MEDIUM)
    np.testing.assert_allclose(mu[outside_cells], want, rtol=1e-5)
    assert np.all(mu[lumen3] > 0)  # never zero inside the lumen
    assert not np.any(lab[~lumen3 & ~np.broadcast_to(ring.numpy()[:, None, :], lab.shape)])
    assert cap_phantom.meta["voxels_per_label"]["medium"] == int((lab == schemas.MEDIUM).sum())


def test_cells_do_not_overlap_and_respect_the_gap():
    for gap in (0.0, 3.0):
        c = load_preset("capillary-demo", {**SMALL, "phantom": {"cells": {"gap_vox": gap}}})
        for i in range(3):
            ph = generate_phantom(c, 5, index=i)
            cells = [o for o in ph.objects if o["class"] == "cell"]
            assert len(cells) == ph.meta["cells_placed"] >= 1
            for a in range(len(cells)):
                for b in range(a + 1, len(cells)):
                    d = np.linalg.norm(np.subtract(cells[a]["centre_vox"], cells[b]["centre_vox"]))
                    assert d >= cells[a]["bound_vox"] + cells[b]["bound_vox"] + gap - 1e-3
            # inside the lumen: centre within lumen radius - bound of the capillary axis
            m = ph.meta["mount"]
            r_in = (m["outer_diameter_vox"] / 2) - m["wall_thickness_vox"]
            mid = (np.asarray(c.grid.shape) - 1) / 2
            for o in cells:
                dz = o["centre_vox"][0] - mid[0] - m["axis_offset_zx_vox"][0]
                dx = o["centre_vox"][2] - mid[2] - m["axis_offset_zx_vox"][1]
                assert np.hypot(dz, dx) + o["bound_vox"] <= r_in + 1e-3


def test_mount_labels_map_to_background_in_simaq4_and_full():
    for name in ("simaq4", "full"):
        s = schemas.label_scheme(name)
        assert s.lut[schemas.CAPILLARY] == 0 and s.lut[schemas.MEDIUM] == 0
    assert schemas.label_scheme("full").num_classes == 7
    mount = schemas.label_scheme("mount")
    assert mount.num_classes == 9 and mount.names[7:] == ("capillary", "medium")
    assert schemas.label_table()["version"] == 2


def test_full_rotation_sample_end_to_end(cap_config):
    s = simulate_sample(cap_config, 3, 1)
    ph = generate_phantom(cap_config, 3, index=1)
    lab = ph.labels.numpy()
    tilt = s.meta.to_json()["acquisition"]["tilt"]
    assert tilt["range_deg"] in (180.0, 360.0) and tilt["n_projections"] >= 80
    assert "bad_indices" in tilt
    assert s.fields["sinogram"].shape[0] == tilt["n_projections"]
    assert set(np.unique(s.fields["labels"])) <= set(range(7))  # mount is background in full
    recon = s.fields["recon"]
    ring, medium = recon[lab == schemas.CAPILLARY], recon[lab == schemas.MEDIUM]
    cells = recon[(lab > 0) & (lab < schemas.CAPILLARY)]
    assert ring.mean() > medium.mean() + 0.5 and cells.mean() > medium.mean()
    assert np.isfinite(recon).all()


def test_determinism_and_recorded_draws(cap_config):
    a, b = simulate_sample(cap_config, 11, 2), simulate_sample(cap_config, 11, 2)
    for k in a.fields:
        np.testing.assert_array_equal(a.fields[k], b.fields[k])
    assert a.meta == b.meta
    m = a.meta.to_json()["phantom"]["mount"]
    for key in (
        "outer_diameter_um",
        "wall_thickness_um",
        "medium_extra_lac_per_um",
        "medium_lac_per_um",
        "axis_offset_zx_vox",
    ):
        assert key in m
    assert (
        a.meta.to_json()["phantom"]["cells_requested"]
        >= a.meta.to_json()["phantom"]["cells_placed"]
        >= 1
    )
    c = simulate_sample(cap_config, 12, 2)
    assert c.meta.to_json()["phantom"]["mount"] != m


def test_capillary_wider_than_the_grid_absorbs_outside_it():
    cfg = load_preset(
        "capillary-demo",
        {
            "mount": {"outer_diameter_fov": 1.3, "axis_offset_vox": 0.0},
            "phantom": {"cells": {"count": 0}},
            "acquisition": {
                "tilt": {"range_deg": 180, "drop_fraction": 0, "bad_fraction": 0},
                "noise": {"enabled": False},
                "psf": {"enabled": False},
                "blur": {"enabled": False},
                "background_noise": {"enabled": False},
            },
        },
    )
    s = simulate_sample(cfg, 0, 0)
    m = s.meta.to_json()["phantom"]["mount"]
    ro, ri = m["outer_diameter_vox"] / 2, m["outer_diameter_vox"] / 2 - m["wall_thickness_vox"]
    um = cfg.grid.voxel_um
    centre = s.fields["sinogram"][:, :, 31:33].mean()  # the central ray crosses the whole capillary
    want = 2 * (ro - ri) * m["glass_lac_per_um"] * um + 2 * ri * m["medium_lac_per_um"] * um
    assert centre == pytest.approx(want, rel=0.05)


def test_grid_film_and_bars():
    base = load_preset("demo", {"grid": {"shape": [32, 32, 32]}})
    on = load_preset(
        "demo",
        {
            "grid": {"shape": [32, 32, 32]},
            "mount": {
                "kind": "grid",
                "film": {"enabled": True, "thickness_nm": 20.0},
                "bars": {"enabled": True, "edge_distance_um": 3.0, "thickness_um": 10.0},
            },
        },
    )
    assert "mount" in on.to_json() and on.sha256 != base.sha256
    a, b = simulate_sample(base, 0, 0), simulate_sample(on, 0, 0)
    np.testing.assert_array_equal(a.fields["phantom"], b.fields["phantom"])  # mount: projections
    mb = b.meta.to_json()["acquisition"]["mount"]
    assert mb["film"]["lac_per_um"] == pytest.approx(lac("amorphous_carbon", 517.0))
    od = np.asarray(mb["bars"]["max_optical_depth_per_projection"])
    angles = np.abs(np.asarray(b.meta.to_json()["acquisition"]["tilt"]["nominal_deg"]))
    assert od[angles < 5].max() == 0 and od[angles > 50].min() > 1  # bars enter at high tilt
    assert "mount" not in a.meta.to_json()["acquisition"]


@pytest.mark.parametrize(
    "over, field",
    [
        ({"mount": {"wall_thickness_um": 20.0}}, "mount.wall_thickness_um"),
        ({"mount": {"wall_thickness_um": -0.1}}, "wall_thickness_um"),
        ({"phantom": {"cells": {"gap_vox": -1.0}}}, "gap_vox"),
        ({"mount": {"outer_diameter_fov": 0.0}}, "outer_diameter_fov"),
        ({"mount": {"medium_extra_lac_per_um": -0.1}}, "medium_extra_lac_per_um"),
        ({"mount": {"axis_offset_vox": {"normal": [0, 2]}}}, "axis_offset_vox"),
        ({"mount": {"kind": "tube"}}, "mount"),
        ({"acquisition": {"ice": {"enabled": True}}}, "acquisition.ice"),
        ({"acquisition": {"tilt": {"range_deg": 400}}}, "range_deg"),
        ({"acquisition": {"tilt": {"bad_fraction": 0.9}}}, "bad_fraction"),
        ({"phantom": {"cells": {"radius_vox": 26.0}}}, "phantom.cells.radius_vox"),
    ],
)
def test_bad_mount_values_are_refused_in_one_line(over, field):
    with pytest.raises(ConfigError) as err:
        load_preset("capillary-demo", over)
    msg = str(err.value)
    assert field in msg and "\n" not in msg


def test_grid_mount_refuses_full_rotation():
    with pytest.raises(ConfigError, match="range_deg"):
        load_preset("demo", {"acquisition": {"tilt": {"range_deg": 360}}})


def test_fbp_weights_full_rotation_like_half():
    from factory.tomo import fbp, get_projector

    n = 32
    vol = torch.zeros((n, 1, n))
    vol[10:22, 0, 8:20] = 0.5
    out = []
    for rng in (180, 360):
        ang = np.delete(-rng / 2 + 2.0 * np.arange(rng // 2), [3, 11])
        sino = get_projector((n, n), ang, det_count=n).forward(vol)
        out.append(fbp(sino, ang, filter="ramp", shape=(n, 1, n)))
    assert float(out[0][12:20, 0, 10:18].mean()) == pytest.approx(0.5, rel=0.05)
    assert float(out[1][12:20, 0, 10:18].mean()) == pytest.approx(0.5, rel=0.05)
