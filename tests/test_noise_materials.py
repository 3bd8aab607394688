"""Procedural noise (factory.noise) and material LACs (factory.materials): properties, real xraylib."""

from __future__ import annotations

import numpy as np
import pytest
import torch
import xraylib

from factory import materials, noise


def _gen(seed: int) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


def test_perlin_is_bounded_zero_mean_and_deterministic():
    a = noise.perlin_noise((48, 40, 56), scale=6.0, generator=_gen(1))
    b = noise.perlin_noise((48, 40, 56), scale=6.0, generator=_gen(1))
    c = noise.perlin_noise((48, 40, 56), scale=6.0, generator=_gen(2))
    assert a.dtype == torch.float32 and a.shape == (48, 40, 56)
    assert torch.equal(a, b) and not torch.equal(a, c)
    assert float(a.abs().max()) <= 1.0 and float(a.std()) > 0.05
    assert abs(float(a.mean())) < 0.05


def _corr(t: torch.Tensor, d: int) -> float:
    """Correlation between voxels ``d`` apart along the last axis."""
    x, y = t[..., :-d].flatten(), t[..., d:].flatten()
    return float(torch.corrcoef(torch.stack([x, y]))[0, 1])


def test_perlin_feature_size_follows_the_scale():
    # High correlation for d << scale, low for d >~ scale.
    corr = _corr
    fine = noise.perlin_noise((32, 32, 96), scale=4.0, generator=_gen(3))
    coarse = noise.perlin_noise((32, 32, 96), scale=24.0, generator=_gen(3))
    assert corr(coarse, 4) > 0.8 and corr(fine, 4) < 0.3
    assert corr(fine, 1) > 0.5  # smooth at the voxel scale


def test_fractal_noise_mixes_octaves_and_stays_bounded():
    one = noise.fractal_noise((32, 32, 32), scale=16.0, octaves=1, generator=_gen(5))
    ref = noise.perlin_noise((32, 32, 32), scale=16.0, generator=_gen(5))
    assert torch.equal(one, ref)
    many = noise.fractal_noise((32, 32, 32), scale=16.0, octaves=4, generator=_gen(5))
    assert float(many.abs().max()) <= 1.0
    # More octaves add fine detail: voxels 2 apart are less alike.
    assert _corr(many, 2) < _corr(one, 2) - 0.03


@pytest.mark.parametrize(
    "kwargs",
    [dict(shape=(0, 4), scale=2.0), dict(shape=(8, 8), scale=-1.0), dict(shape=(8, 8)),
     dict(shape=(8, 8), scale=2.0, periods=3.0)],
)  # fmt: skip
def test_noise_bad_arguments_name_the_argument(kwargs):
    with pytest.raises(ValueError) as err:
        noise.perlin_noise(**kwargs)
    assert any(w in str(err.value) for w in ("shape", "scale", "periods"))


def test_materials_compounds_are_xraylib_and_measured_ones_are_cited():
    table = materials.lac_table(400.0)
    for name, m in materials.MATERIALS.items():
        assert m.source, name
        row = table[name]
        if m.kind == "compound":
            want = xraylib.CS_Total_CP(m.formula, 0.4) * m.density_g_cm3 * 1e-4
            assert row["mean"] == pytest.approx(want, rel=1e-12)
        else:
            ratio = materials.lac("protein", 400.0) / materials.lac("protein", 517.0)
            assert row["mean"] == pytest.approx(m.mean * ratio, rel=1e-12)
            assert row["sd"] == pytest.approx(m.sd * ratio, rel=1e-12)
    # The measured contrast ordering of yeast SXT at 517 eV: vacuole < cytoplasm < lipid droplet.
    lac = {k: materials.lac(k) for k in ("vacuole", "cytoplasm", "lipid_droplet", "ice")}
    assert lac["ice"] < lac["vacuole"] < lac["cytoplasm"] < lac["lipid_droplet"]


@pytest.mark.parametrize(
    ("call", "word"),
    [(lambda: materials.lac("unobtainium"), "material"),
     (lambda: materials.lac("ice", -5.0), "energy_ev"),
     (lambda: materials.lac_compound("H2O", 0.0, 517.0), "density_g_cm3"),
     (lambda: materials.lac_compound("Xq9", 1.0, 517.0), "formula")],
)  # fmt: skip
def test_materials_bad_input_names_the_field(call, word):
    with pytest.raises(ValueError) as err:
        call()
    assert word in str(err.value)


def test_lac_scales_with_energy_coherently_across_the_water_window():
    energies = np.linspace(300.0, 530.0, 12)
    ice = np.array([materials.lac("ice", e) for e in energies])
    prot = np.array([materials.lac("protein", e) for e in energies])
    # Below the O K-edge ice absorbs less as the energy rises (photoabsorption ~ E^-3) ...
    assert np.all(np.diff(ice) < 0)
    # ... and so does protein, except for the jump at the nitrogen K-edge (~410 eV).
    assert materials.lac("protein", 415.0) > 1.1 * materials.lac("protein", 405.0)
    below, above = energies < 405, energies > 415
    assert np.all(np.diff(prot[below]) < 0) and np.all(np.diff(prot[above]) < 0)
    # Protein/ice contrast is what makes the water window: it stays > 5x across it.
    assert np.all(prot / ice > 5)
