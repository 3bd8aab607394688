"""Tests of the reconstruction stage (FBP/SIRT from the nominal geometry, normalisation)."""

from __future__ import annotations

import numpy as np
import torch
from _volumes import N, bead_phantom, ellipsoid_phantom, make_config

from factory.acquisition import quantile_normalize, reconstruct, simulate_acquisition
from factory.acquisition.volume import cylinder_mask


def _fov(n: int = N, inset: float = 5.0) -> torch.Tensor:
    return cylinder_mask((n, n, n), inset).expand(n, n, n)


def test_ideal_full_range_reconstruction_matches_the_phantom():
    ph = ellipsoid_phantom()
    cfg = make_config({}, {"normalize": "none", "filter": "ramp"})
    acq = simulate_acquisition(cfg, ph, 0)
    assert acq.angles_deg.size == 180
    recon, meta = reconstruct(cfg, acq)
    assert recon.shape == (N, N, N) and recon.dtype == torch.float32
    assert meta["units"] == "LAC in 1/um" and meta["n_angles"] == 180
    err = (recon - ph.lac)[_fov()]
    assert float(err.abs().mean()) < 0.01  # LAC 0.35 1/µm
    assert abs(float(err.mean())) < 0.003
    # deep inside the object and far outside it, the values are right to a few %
    inside = ellipsoid_phantom(radii=(10, 14, 7)).labels.bool()
    assert abs(float(recon[inside].mean()) - 0.35) < 0.01


def test_missing_wedge_elongates_along_z():
    ph = bead_phantom(radius=2.0)

    def extents(range_deg: float) -> tuple[float, float]:
        cfg = make_config(
            {"tilt": {"range_deg": range_deg}}, {"normalize": "none", "filter": "ramp"}
        )
        rec = reconstruct(cfg, simulate_acquisition(cfg, ph, 0))[0].numpy()
        c = N // 2
        w = rec[c - 12 : c + 12, c - 1 : c + 1, c - 12 : c + 12].mean(axis=1).clip(0, None)
        half = w.max() / 2  # full width at half maximum, in voxels, along Z and along X
        return float((w.max(axis=1) > half).sum()), float((w.max(axis=0) > half).sum())

    z_full, x_full = extents(180)
    z_wedge, x_wedge = extents(100)
    assert abs(z_full - x_full) <= 1
    assert z_wedge >= 1.5 * x_wedge  # ±50°: elongated along the beam direction at 0°
    assert z_wedge >= z_full + 2


def test_sirt_and_intensities_paths():
    ph = ellipsoid_phantom()
    cfg = make_config(
        {"tilt": {"step_deg": 3}}, {"method": "sirt", "iterations": 60, "normalize": "none"}
    )
    recon, meta = reconstruct(cfg, simulate_acquisition(cfg, ph, 0))
    assert meta["method"] == "sirt" and meta["iterations"] == 60
    assert float(recon.min()) >= 0.0
    assert float((recon - ph.lac)[_fov()].abs().mean()) < 0.02
    # a sinogram of normalised intensities reconstructs to the same volume as line integrals
    li_cfg = make_config({"tilt": {"step_deg": 3}}, {"normalize": "none"})
    in_cfg = make_config(
        {"tilt": {"step_deg": 3}, "sinogram": "intensities"}, {"normalize": "none"}
    )
    a_li = simulate_acquisition(li_cfg, ph, 0)
    a_in = simulate_acquisition(in_cfg, ph, 0)
    assert a_in.meta["sinogram"]["kind"] == "intensities"
    torch.testing.assert_close(a_in.sinogram, torch.exp(-a_li.sinogram), atol=1e-6, rtol=1e-5)
    torch.testing.assert_close(
        reconstruct(in_cfg, a_in)[0], reconstruct(li_cfg, a_li)[0], atol=1e-4, rtol=1e-3
    )


def test_quantile_normalisation_inside_the_fov():
    ph = ellipsoid_phantom()
    cfg = make_config({"tilt": {"step_deg": 4}}, {"normalize": "quantile"})
    acq = simulate_acquisition(cfg, ph, 0)
    recon, meta = reconstruct(cfg, acq)
    fov = _fov()
    inside = recon[fov]
    assert float(recon[~fov].abs().max()) == 0.0
    assert abs(float(inside.mean())) < 1e-3 and abs(float(inside.std()) - 1) < 0.01
    assert meta["fov_radius_px"] == N / 2 - 5
    # rank order is kept
    raw = reconstruct(make_config({"tilt": {"step_deg": 4}}, {"normalize": "none"}), acq)[0]
    order_raw = torch.argsort(raw[fov], stable=True)
    assert torch.all(torch.diff(inside[order_raw]) >= 0)


def test_quantile_normalize_is_a_rank_transform():
    x = torch.tensor([[3.0, -1.0, 10.0, 2.0]])
    out = quantile_normalize(x, torch.tensor([[True, True, True, False]]))
    q = torch.special.ndtri(torch.tensor([0.5, 1.5, 2.5], dtype=torch.float64) / 3).float()
    torch.testing.assert_close(out, torch.stack([q[1], q[0], q[2], torch.tensor(0.0)])[None])
    # the integer sort keys order negatives, zeros and tiny values like the floats do
    vals = torch.tensor([5.0, -2.0, -0.5, 0.0, 1e-30, -1e-30, -7.0, 0.25, -0.0, 3e8, -3e8])
    ranks = quantile_normalize(vals, torch.ones_like(vals, dtype=torch.bool))
    expect = torch.argsort(torch.argsort(vals, stable=True), stable=True)
    assert torch.equal(torch.argsort(torch.argsort(ranks, stable=True), stable=True), expect)


def test_reconstruction_is_deterministic_with_every_artifact():
    ph = ellipsoid_phantom()
    cfg = make_config(
        {
            "tilt": {
                "range_deg": 100,
                "step_deg": 2,
                "drop_fraction": 0.2,
                "angle_error_deg": {"normal": [0, 0.1]},
            },
            "noise": {"enabled": True, "photons_per_pixel": 3000},
            "psf": {"enabled": True, "n_slabs": 4},
        },
        {"normalize": "quantile", "filter": "hamming"},
    )
    a = reconstruct(cfg, simulate_acquisition(cfg, ph, 1))[0]
    b = reconstruct(cfg, simulate_acquisition(cfg, ph, 1))[0]
    assert torch.equal(a, b)
    assert np.isfinite(a.numpy()).all()
