"""Tests of the acquisition stage on analytic volumes (tests/_volumes.py; grids ≤ 64³)."""

from __future__ import annotations

import json
from types import SimpleNamespace

import numpy as np
import pytest
import torch
from _volumes import VOXEL_NM, N, bead_phantom, ellipsoid_phantom, make_config

from factory.acquisition import simulate_acquisition
from factory.acquisition.optics import blur_and_sum, depth_slab_projections, warp_projections
from factory.acquisition.tilt import dose_symmetric_order, draw_tilt_scheme, planned_angles
from factory.acquisition.volume import gaussian_blur3d
from factory.errors import ConfigError
from factory.tomo import forward_project, get_projector

VOX_UM = VOXEL_NM * 1e-3


# -- tilt schemes ---------------------------------------------------------------------------------


def test_planned_angles_follow_the_reference_arange():
    a = planned_angles(100.0, 1.0)
    assert a.size == 100 and a[0] == -50.0 and a[-1] == 49.0
    np.testing.assert_allclose(planned_angles(180.0, 2.0, 5.0)[:2], [-85.0, -83.0])


def test_dose_symmetric_order_alternates_outwards():
    angles = planned_angles(10.0, 1.0)  # -5 .. 4
    pos = dose_symmetric_order(angles)
    seq = angles[np.argsort(pos)]
    np.testing.assert_array_equal(seq[:5], [0.0, 1.0, -1.0, 2.0, -2.0])
    assert sorted(pos.tolist()) == list(range(angles.size))
    seq2 = angles[np.argsort(dose_symmetric_order(angles, group_size=2))]
    np.testing.assert_array_equal(seq2[:5], [0.0, 1.0, 2.0, -1.0, -2.0])


def test_tilt_scheme_draws_shift_drops_and_errors():
    cfg = make_config(
        {
            "tilt": {
                "range_deg": 100,
                "shift_deg": {"normal": [0, 5], "clamp": [-15, 15]},
                "shift_below_deg": 165,
                "drop_fraction": 0.2,
                "angle_error_deg": {"normal": [0, 0.1]},
            }
        }
    )
    tilt = draw_tilt_scheme(cfg.acquisition.tilt, np.random.default_rng(3))
    assert tilt.planned_deg.size == 100 and tilt.n == 80 and tilt.dropped.size == 20
    assert tilt.shift_deg != 0.0 and abs(tilt.shift_deg) <= 15
    np.testing.assert_allclose(tilt.planned_deg[0], -50 + tilt.shift_deg)
    assert np.all(np.diff(tilt.nominal_deg) > 0)
    assert 0.05 < np.std(tilt.error_deg) < 0.15
    assert not set(tilt.planned_deg[tilt.dropped]) & set(tilt.nominal_deg)
    # a range at or above shift_below_deg is never shifted
    cfg2 = make_config({"tilt": {"range_deg": 170, "shift_deg": 3, "shift_below_deg": 165}})
    assert draw_tilt_scheme(cfg2.acquisition.tilt, np.random.default_rng(0)).shift_deg == 0.0


# -- image-formation building blocks --------------------------------------------------------------


def test_gaussian_blur_preserves_mass_and_matches_reference_kernel():
    vol = torch.zeros(21, 21, 21)
    vol[10, 10, 10] = 1.0
    out = gaussian_blur3d(vol, 1.5, kernel_size=5)
    assert abs(float(out.sum()) - 1.0) < 1e-5
    g = torch.arange(5, dtype=torch.float64) - 2
    zz, yy, xx = torch.meshgrid(g, g, g, indexing="ij")
    k = torch.exp(-(zz**2 + yy**2 + xx**2) / (2 * 1.5**2))
    k = (k / k.sum()).float()
    torch.testing.assert_close(out[8:13, 8:13, 8:13], k, atol=1e-6, rtol=1e-5)


def test_depth_slabs_sum_to_the_projection():
    vol = ellipsoid_phantom().lac + 0.05 * torch.rand(
        N, N, N, generator=torch.Generator().manual_seed(0)
    )
    angles = np.linspace(-60, 60, 13) + 0.3
    proj = get_projector((N, N), angles)
    slabs = depth_slab_projections(vol, proj, 6)
    assert slabs.shape == (6, 13, N, N)
    torch.testing.assert_close(slabs.sum(0), proj.forward(vol), atol=2e-4, rtol=1e-5)
    # at 0° the depth is z: slab centres are -33.9, -20.4, -6.8, 6.8, 20.4, 33.9 voxels, so a
    # bead at z = +15 is shared by the two slabs around it, in the ratio of the hat weights
    bead = bead_phantom(centre=(15.0, 0.0, 0.0), radius=1.0).lac
    s0 = depth_slab_projections(bead, get_projector((N, N), [0.0]), 6)[:, 0].sum(dim=(1, 2))
    assert float(s0[[0, 1, 2, 5]].abs().sum()) == 0.0
    frac = (15.0 - 6.78) / 13.58
    assert abs(float(s0[4] / s0.sum()) - frac) < 0.05


def _width(profile: np.ndarray) -> float:
    """RMS width of a non-negative 1D profile (pixels)."""
    p = np.clip(profile, 0, None)
    x = np.arange(p.size)
    m = (p * x).sum() / p.sum()
    return float(np.sqrt((p * (x - m) ** 2).sum() / p.sum()))


def test_depth_dependent_psf_blurs_far_from_focus_more():
    acq = {
        "psf": {"enabled": True, "sigma_focus_nm": 40.0, "depth_of_field_um": 0.6, "n_slabs": 9},
        "tilt": {"range_deg": 1, "step_deg": 1},
    }
    cfg = make_config(acq)
    widths = []
    for z in (0.0, 18.0):
        ph = bead_phantom(centre=(z, 0.0, 0.0), radius=1.0)
        sino = simulate_acquisition(cfg, ph, 0).sinogram[0].numpy()
        widths.append(_width(sino.sum(axis=0)))
    sharp = simulate_acquisition(
        make_config({"tilt": {"range_deg": 1}}), bead_phantom(radius=1.0), 0
    )
    w_sharp = _width(sharp.sinogram[0].numpy().sum(axis=0))
    assert widths[0] < widths[1]
    assert widths[1] > w_sharp + 1.0
    m = simulate_acquisition(cfg, bead_phantom(radius=1.0), 0).meta["psf"]
    assert m["slab_sigma_px"][0] > m["slab_sigma_px"][4]  # recorded σ grows away from focus


def test_motion_sweep_blurs_off_axis_voxels_along_the_detector():
    ph = bead_phantom(centre=(18.0, 0.0, 0.0), radius=1.0)
    still = simulate_acquisition(make_config({"tilt": {"range_deg": 1}}), ph, 0).sinogram[0]
    cfg = make_config({"tilt": {"range_deg": 1}, "motion": {"enabled": True, "sweep_deg": 10.0}})
    moved = simulate_acquisition(cfg, ph, 0)
    assert moved.meta["motion"]["sweep_deg"] == [10.0]
    w_still = _width(still.numpy().sum(axis=0))
    w_moved = _width(moved.sinogram[0].numpy().sum(axis=0))
    # box of width 18·10° = 3.1 px: variance grows by 3.1²/12
    expect = np.sqrt(w_still**2 + (18 * np.deg2rad(10.0)) ** 2 / 12)
    assert abs(w_moved - expect) < 0.25
    # along Y (the tilt axis) nothing moves
    assert (
        abs(_width(moved.sinogram[0].numpy().sum(axis=1)) - _width(still.numpy().sum(axis=1)))
        < 0.05
    )


def test_warp_identity_and_shift():
    p = torch.zeros(1, 32, 32)
    p[0, 10:14, 12:15] = 1.0
    torch.testing.assert_close(warp_projections(p, np.ones(1), np.zeros((1, 2))), p)
    moved = warp_projections(p, np.ones(1), np.array([[2.0, -3.0]]))
    torch.testing.assert_close(moved[0, 12:16, 9:12], p[0, 10:14, 12:15])


def test_blur_and_sum_without_blur_is_the_sum():
    slabs = torch.rand(3, 4, 16, 20, generator=torch.Generator().manual_seed(1))
    out = blur_and_sum(slabs, torch.zeros(3, 4))
    torch.testing.assert_close(out, slabs.sum(0), atol=1e-5, rtol=1e-5)


# -- the stage ------------------------------------------------------------------------------------


def test_ideal_sinogram_is_the_projection_at_the_true_angles_times_voxel_size():
    cfg = make_config(
        {
            "tilt": {
                "range_deg": 120,
                "step_deg": 3,
                "angle_error_deg": {"normal": [0, 0.5]},
                "drop_fraction": 0.25,
            }
        }
    )
    ph = ellipsoid_phantom()
    acq = simulate_acquisition(cfg, ph, 11)
    t = acq.meta["tilt"]
    assert t["n_planned"] == 40 and t["n_projections"] == 30 and len(t["dropped_indices"]) == 10
    np.testing.assert_allclose(acq.angles_deg, t["nominal_deg"])
    np.testing.assert_allclose(
        np.subtract(t["true_deg"], t["nominal_deg"]), t["angle_error_deg"], atol=1e-9
    )
    assert np.std(t["angle_error_deg"]) > 0.2
    expect = forward_project(ph.lac, np.array(t["true_deg"])) * VOX_UM
    torch.testing.assert_close(acq.sinogram, expect, atol=1e-5, rtol=1e-5)
    nominal = forward_project(ph.lac, acq.angles_deg) * VOX_UM
    assert float((acq.sinogram - nominal).abs().max()) > 1e-3  # the error is really applied
    assert acq.meta["sinogram"]["kind"] == "line-integrals"
    assert acq.noisy_volume is None


@pytest.mark.parametrize("dose", [50.0, 400.0])
def test_poisson_variance_matches_mean(dose):
    # one projection of a uniform slab: every pixel has the same expected count
    n = 32
    ph = SimpleNamespace(
        lac=torch.full((n, n, n), 0.2), labels=torch.ones(n, n, n, dtype=torch.uint8)
    )
    cfg = make_config(
        {
            "tilt": {"range_deg": 1},
            "sinogram": "intensities",
            "noise": {"enabled": True, "photons_per_pixel": dose, "flat_frames": 0},
        },
        n=n,
    )
    acq = simulate_acquisition(cfg, ph, 5)
    assert acq.meta["noise"]["photons_per_pixel"] == dose
    counts = acq.sinogram[0, :, 8:24].numpy().astype(np.float64) * dose  # away from the edges
    expected = dose * np.exp(-0.2 * n * VOX_UM)
    assert abs(counts.mean() / expected - 1) < 4 / np.sqrt(counts.size * expected)
    assert abs(counts.var() / counts.mean() - 1) < 0.15
    # counts are integers (no read noise, noiseless flat)
    np.testing.assert_allclose(counts, np.round(counts), atol=1e-3 * dose)


def test_read_noise_and_flat_field_normalisation():
    n = 32
    ph = SimpleNamespace(lac=torch.zeros(n, n, n), labels=torch.zeros(n, n, n, dtype=torch.uint8))
    cfg = make_config(
        {
            "tilt": {"range_deg": 4, "step_deg": 1},
            "noise": {
                "enabled": True,
                "photons_per_pixel": 1e4,
                "read_noise": 50.0,
                "flat_frames": 20,
            },
        },
        n=n,
    )
    acq = simulate_acquisition(cfg, ph, 2)
    li = acq.sinogram.numpy()
    # open beam: −log(I/flat) ≈ 0 with var ≈ (1/dose + read²/dose²)(1 + 1/frames)
    assert abs(li.mean()) < 2e-3
    var = (1e-4 + 50.0**2 / 1e8) * (1 + 1 / 20)
    assert abs(li.var() / var - 1) < 0.15


def test_flicker_rings_ice_and_recorded_values():
    ph = ellipsoid_phantom()
    base = {"tilt": {"range_deg": 60, "step_deg": 10}}
    clean = simulate_acquisition(make_config(base), ph, 4).sinogram
    acq_cfg = dict(base)
    acq_cfg["rings"] = {
        "enabled": True,
        "defect_fraction": 0.01,
        "gain_error": {"normal": [0, 0.1], "clamp": [-0.3, 0.3]},
    }
    acq_cfg["ice"] = {"enabled": True, "thickness_vox": 40, "lac_per_um": 0.11}
    acq = simulate_acquisition(make_config(acq_cfg), ph, 4)
    r = acq.meta["rings"]
    assert len(r["defects_y"]) == round(0.01 * N * N)
    ice = 40 * VOX_UM * 0.11 / np.cos(np.deg2rad(np.abs(acq.meta["tilt"]["true_deg"])))
    np.testing.assert_allclose(acq.meta["ice"]["optical_depth"], ice, rtol=1e-5)
    diff = (acq.sinogram - clean).numpy() - ice[:, None, None]
    y, t, err = np.array(r["defects_y"]), np.array(r["defects_det"]), np.array(r["gain_error"])
    # every defect shifts every projection's line integral by −log(1 + error)
    np.testing.assert_allclose(
        diff[:, y, t], np.broadcast_to(-np.log1p(err), diff[:, y, t].shape), atol=1e-4
    )
    mask = np.ones((N, N), bool)
    mask[y, t] = False
    assert np.abs(diff[:, mask]).max() < 1e-4


def test_alignment_shifts_move_the_projection_by_the_recorded_amount():
    ph = bead_phantom(centre=(0.0, 3.0, -4.0), radius=3.0)
    cfg0 = make_config({"tilt": {"range_deg": 90, "step_deg": 15}})
    cfg = make_config(
        {
            "tilt": {"range_deg": 90, "step_deg": 15},
            "alignment": {"enabled": True, "shift_px": {"normal": [0, 2.0]}, "axis_offset_px": 1.5},
        }
    )
    p0 = simulate_acquisition(cfg0, ph, 9).sinogram.numpy()
    acq = simulate_acquisition(cfg, ph, 9)
    p1 = acq.sinogram.numpy()
    rec = np.array(acq.meta["alignment"]["total_shift_yt_px"])
    assert acq.meta["alignment"]["axis_offset_px"] == 1.5
    np.testing.assert_allclose(np.array(acq.meta["alignment"]["shift_det_px"]) + 1.5, rec[:, 1])
    yy, tt = np.meshgrid(np.arange(N), np.arange(N), indexing="ij")
    for a in range(p0.shape[0]):
        c0 = np.array([(p0[a] * yy).sum(), (p0[a] * tt).sum()]) / p0[a].sum()
        c1 = np.array([(p1[a] * yy).sum(), (p1[a] * tt).sum()]) / p1[a].sum()
        np.testing.assert_allclose(c1 - c0, rec[a], atol=0.05)


def test_damage_shrinks_and_fades_in_acquisition_order():
    ph = ellipsoid_phantom()
    cfg = make_config(
        {
            "tilt": {"range_deg": 40, "step_deg": 10, "order": "dose-symmetric"},
            "damage": {"enabled": True, "shrinkage": 0.05, "mass_loss": 0.2},
        }
    )
    acq = simulate_acquisition(cfg, ph, 0)
    d = acq.meta["damage"]
    pos = np.array(acq.meta["tilt"]["series_pos"])
    first, last = int(np.argmin(pos)), int(np.argmax(pos))
    assert acq.angles_deg[first] == 0.0  # dose-symmetric starts at 0°
    assert d["scale"][first] == 1.0 and abs(d["scale"][last] - 0.95) < 1e-9
    clean = simulate_acquisition(make_config({"tilt": {"range_deg": 40, "step_deg": 10}}), ph, 0)
    # integral over the detector of s·P(q/s) is s³·ΣP, times the contrast factor
    for i in (first, last):
        ratio = float(acq.sinogram[i].sum() / clean.sinogram[i].sum())
        assert abs(ratio - d["scale"][i] ** 3 * d["contrast"][i]) < 0.01


def test_fiducials_only_in_background_and_noisy_volume_kept():
    ph = ellipsoid_phantom()
    cfg = make_config(
        {
            "fiducials": {"enabled": True, "count": 6, "radius_vox": 2.5, "lac_per_um": 2.0},
            "blur": {"enabled": True, "sigma_vox": 1.0},
            "keep_noisy_volume": True,
            "tilt": {"range_deg": 30, "step_deg": 10},
        }
    )
    acq = simulate_acquisition(cfg, ph, 1)
    beads = acq.meta["fiducials"]["beads"]
    assert len(beads) == 6 and all(b["placed"] for b in beads)
    vol = acq.noisy_volume
    assert vol.shape == (N, N, N)
    assert torch.all(vol[ph.labels.bool()] <= 0.35 + 1e-6)  # no bead inside the object
    for b in beads:
        z, y, x = b["centre_zyx"]
        assert float(vol[z, y, x]) == 2.0 and int(ph.labels[z, y, x]) == 0
    assert acq.meta["blur"]["sigma_vox"] == 1.0


def test_same_seed_reproduces_and_effects_have_independent_streams():
    ph = ellipsoid_phantom()
    acq = {
        "tilt": {
            "range_deg": 100,
            "drop_fraction": 0.2,
            "angle_error_deg": {"normal": [0, 0.1]},
            "step_deg": 4,
        },
        "noise": {"enabled": True, "photons_per_pixel": 500, "read_noise": 1.0},
        "alignment": {"enabled": True, "shift_px": {"normal": [0, 1]}},
        "psf": {"enabled": True, "n_slabs": 4},
        "motion": {"enabled": True, "sweep_deg": {"uniform": [0, 1]}, "drift_px": 0.5},
    }
    cfg = make_config(acq)
    a = simulate_acquisition(cfg, ph, 7, index=3)
    b = simulate_acquisition(cfg, ph, 7, index=3)
    assert torch.equal(a.sinogram, b.sinogram)
    assert json.dumps(a.meta, sort_keys=True) == json.dumps(b.meta, sort_keys=True)
    c = simulate_acquisition(cfg, ph, 7, index=4)
    assert not torch.equal(a.sinogram[:1], c.sinogram[:1]) or a.meta["tilt"] != c.meta["tilt"]
    # turning the rings on changes nothing else that was drawn
    cfg_r = make_config({**acq, "rings": {"enabled": True}})
    d = simulate_acquisition(cfg_r, ph, 7, index=3)
    for key in ("tilt", "alignment", "motion", "noise"):
        assert d.meta[key] == a.meta[key] or key == "noise"
    assert d.meta["tilt"] == a.meta["tilt"]


@pytest.mark.parametrize(
    "acq, field",
    [
        ({"noise": {"enabled": True, "photons_per_pixel": 0}}, "photons_per_pixel"),
        ({"noise": {"photons_per_pixel": {"normal": [100, 50]}}}, "photons_per_pixel"),
        ({"tilt": {"range_deg": 200}}, "range_deg"),
        ({"tilt": {"range_deg": {"normal": [120, 10]}}}, "range_deg"),
        ({"tilt": {"range_deg": 170, "shift_deg": 10}}, "shift_deg"),
        ({"tilt": {"step_deg": 0}}, "step_deg"),
        ({"psf": {"enabled": True, "sigma_focus_nm": 3000}}, "acquisition.psf"),
        ({"blur": {"enabled": True, "sigma_vox": 40}}, "sigma_vox"),
        ({"tilt": {"drop_fraction": 1.0}}, "drop_fraction"),
        ({"nonsense": 1}, "nonsense"),
    ],
)
def test_bad_configs_raise_config_error_naming_the_field(acq, field):
    with pytest.raises(ConfigError, match=field):
        make_config(acq)


def test_meta_is_json_safe_with_every_effect_on():
    pytest.importorskip("factory.noise")  # the textures come from factory.noise
    ph = ellipsoid_phantom()
    acq = {
        "tilt": {
            "range_deg": 100,
            "shift_deg": {"normal": [0, 5], "clamp": [-15, 15]},
            "shift_below_deg": 165,
            "drop_fraction": 0.2,
            "step_deg": 2,
            "angle_error_deg": {"normal": [0, 0.1]},
            "order": "dose-symmetric",
        },
        "blur": {"enabled": True, "sigma_vox": {"normal": [3, 2], "clamp": [1, 5]}},
        "fiducials": {"enabled": True, "count": 4, "radius_vox": 2.0, "lac_per_um": 2.0},
        "cracks": {"enabled": True, "count": 2, "modulation_scale_vox": 16},
        "background_noise": {"enabled": True},
        "damage": {"enabled": True},
        "psf": {"enabled": True, "n_slabs": 4},
        "motion": {"enabled": True, "sweep_deg": 0.5, "drift_px": 0.5},
        "ice": {"enabled": True, "thickness_vox": 100, "lac_per_um": {"normal": [0.11, 0.001]}},
        "flicker": {"enabled": True, "model": "reference", "scale_px": 16},
        "noise": {"enabled": True, "photons_per_pixel": 2000, "read_noise": 2},
        "rings": {"enabled": True},
        "alignment": {"enabled": True, "shift_px": {"normal": [0, 0.5]}, "axis_angle_deg": 0.2},
        "keep_noisy_volume": True,
    }
    acq_out = simulate_acquisition(make_config(acq), ph, 0)
    text = json.dumps(acq_out.meta, allow_nan=False)
    for key in (
        "tilt",
        "blur",
        "fiducials",
        "cracks",
        "background_noise",
        "damage",
        "psf",
        "motion",
        "ice",
        "flicker",
        "noise",
        "rings",
        "alignment",
        "sinogram",
        "dose",
    ):
        assert key in acq_out.meta, key
    assert len(text) > 1000
    assert torch.isfinite(acq_out.sinogram).all()
    # the volume effects stay in the background
    bg = ph.labels == 0
    assert float((acq_out.noisy_volume[~bg] - ph.lac[~bg]).abs().max()) < 0.36  # blur only
