"""The torch-radon backend (CUDA only): same conventions and results as the pure-PyTorch backend."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from factory.tomo import Geometry, fbp, forward_project, radon_backend
from factory.tomo.analytic import SHEPP_LOGAN, ellipse_image, scaled


def test_backend_is_not_used_off_cuda_or_when_disabled(monkeypatch):
    geom = Geometry.make((32, 32), [0.0, 10.0])
    assert not radon_backend.usable(torch.zeros(32, 32), geom)  # CPU tensor
    monkeypatch.setenv("SIMAQ_TOMO_BACKEND", "torch")
    assert not radon_backend.enabled()
    monkeypatch.setenv("SIMAQ_TOMO_BACKEND", "auto")
    assert radon_backend.enabled()
    with radon_backend.disabled():
        assert not radon_backend.enabled()


needs_radon = pytest.mark.skipif(
    not (radon_backend.available() and torch.cuda.is_available()),
    reason="torch-radon is not importable or there is no CUDA device",
)


@pytest.fixture(scope="module")
def volume():
    n = 64
    img = ellipse_image(scaled(SHEPP_LOGAN, 0.45 * n), (n, n), supersample=4)
    return torch.from_numpy(np.stack([img, img[::-1].copy()], axis=1)).cuda()  # (Z, 2, X)


@pytest.mark.gpu
@needs_radon
def test_torch_radon_is_selected_and_matches_pure_torch(volume):
    theta = np.linspace(-60, 60, 61)
    geom = Geometry.make(volume.shape, theta)
    assert radon_backend.usable(volume, geom), "self-check failed: see the RuntimeWarning"
    fast = forward_project(volume, theta)
    with radon_backend.disabled():
        ref = forward_project(volume, theta)
    assert fast.is_cuda and fast.shape == ref.shape
    assert float((fast - ref).norm() / ref.norm()) < 0.03
    rec_fast = fbp(ref, theta)
    with radon_backend.disabled():
        rec_ref = fbp(ref, theta)
    assert float((rec_fast - rec_ref).norm() / rec_ref.norm()) < 0.01


@pytest.mark.gpu
@needs_radon
def test_torch_radon_is_skipped_where_it_cannot_follow_our_conventions(volume):
    theta = np.linspace(0, 180, 30, endpoint=False)
    assert not radon_backend.usable(volume, Geometry.make(volume.shape, theta, center_offset=1.5))
    assert not radon_backend.usable(volume[:48], Geometry.make(volume[:48].shape, theta))
    v = volume.clone().requires_grad_(True)
    assert not radon_backend.usable(v, Geometry.make(v.shape, theta))
    forward_project(v, theta).sum().backward()  # gradients come from the exact adjoint
    assert v.grad is not None and v.grad.shape == v.shape
