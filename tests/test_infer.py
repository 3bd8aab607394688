"""models/infer.py: resampling between the input's and the model's grids, and the memory check
that catches a wrong voxel size before it allocates."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from factory.errors import UserError
from models.infer import (
    check_memory,
    inference_bytes,
    model_grid,
    resample,
    resample_labels,
    upsample_argmax,
)


@pytest.mark.parametrize(
    ("shape", "out"),
    [((4, 10, 12, 14), (25, 30, 7)), ((3, 33, 20, 20), (16, 40, 41)), ((2, 5, 6, 7), (40, 3, 50))],
)
def test_upsample_argmax_is_the_argmax_of_the_trilinearly_resampled_probabilities(shape, out):
    probs = np.random.default_rng(1).random(shape).astype(np.float32)
    expected = _trilinear(probs, out).argmax(0)
    for planes in (1, 3, 64):
        got = upsample_argmax(probs, out, planes=planes)
        assert got.dtype == np.uint8 and got.shape == out
        np.testing.assert_array_equal(got, expected)
    same = upsample_argmax(probs, shape[1:])
    np.testing.assert_array_equal(same, probs.argmax(0))


def _trilinear(volume: np.ndarray, shape) -> np.ndarray:
    t = torch.from_numpy(volume)[None]
    return torch.nn.functional.interpolate(t, size=shape, mode="trilinear")[0].numpy()


def test_resample_up_is_trilinear_and_down_is_the_block_mean():
    rng = np.random.default_rng(3)
    vol = rng.normal(size=(12, 16, 20)).astype(np.float32)
    np.testing.assert_allclose(resample(vol, (24, 40, 21)), _trilinear(vol[None], (24, 40, 21))[0],
                               atol=1e-6)  # fmt: skip
    blocks = vol.reshape(3, 4, 4, 4, 5, 4).mean(axis=(1, 3, 5))
    np.testing.assert_allclose(resample(vol, (3, 4, 5)), blocks, atol=1e-6)
    # mixed: Z shrinks (area), X grows (trilinear) and the field is kept
    mixed = resample(np.broadcast_to(np.arange(20, dtype=np.float32), (12, 16, 20)), (5, 16, 33))
    assert mixed.shape == (5, 16, 33)
    np.testing.assert_allclose(mixed[0, 0], mixed[4, 15], atol=1e-6)
    assert 0 <= mixed[0, 0, 0] < 1 and 18 < mixed[0, 0, -1] <= 19


def test_resample_to_a_coarser_grid_averages_the_noise_instead_of_aliasing_it():
    # a tomogram 4x finer than the model's grid, white noise on a constant: at the model's voxel
    # size the noise is that of (96/n)³ voxels averaged, as a coarser reconstruction's
    noise = np.random.default_rng(4).normal(size=(96, 96, 96)).astype(np.float32)
    for shape in ((24, 24, 24), (37, 37, 37)):  # integer and non-integer factors
        got = resample(noise + 5.0, shape)
        assert got.shape == shape
        assert abs(float(got.mean()) - 5.0) < 0.02
        assert float(got.std()) < 1.25 / np.sqrt((96 / shape[0]) ** 3), float(got.std())
    # trilinear sampling alone keeps most of it
    assert float(_trilinear(noise[None], (24, 24, 24)).std()) > 0.3


def test_model_grid_keeps_the_field():
    assert model_grid((64, 64, 32), 40.0, 160.0) == ((16, 16, 8), 0.25)
    assert model_grid((64, 64, 32), 160.0, 160.0) == ((64, 64, 32), 1.0)
    assert model_grid((64, 64, 32), 40.0, None) == ((64, 64, 32), 1.0)


def test_a_blown_up_model_grid_is_refused_before_allocating():
    # a 512³ tomogram whose voxel size is taken as 2 µm, for a 40 nm model: 25600³ voxels
    grid, _ = model_grid((512, 512, 512), 2000.0, 40.0)
    assert inference_bytes((512,) * 3, grid, 4) > 2**45
    with pytest.raises(UserError, match=r"needs about .* GiB, more than .* check the voxel size"):
        check_memory((512,) * 3, grid, 4, "`input_path`")
    check_memory((64,) * 3, (16,) * 3, 4, "`input_path`")  # small: nothing raised


def test_resample_labels_keeps_every_annotated_plane_on_a_coarser_grid():
    rng = np.random.default_rng(2)
    dense = np.repeat(np.repeat(np.repeat(rng.integers(0, 3, (8, 8, 8)), 8, 0), 8, 1), 8, 2)
    sparse = np.full(dense.shape, -1)
    sparse[:, 21], sparse[:, 42] = dense[:, 21], dense[:, 42]  # an odd and an even plane
    got = resample_labels(sparse, (32, 32, 32))
    assert sorted(np.flatnonzero((got >= 0).any(axis=(0, 2)))) == [10, 21]
    coarse = dense[::2, ::2, ::2]  # blocks of 8: the coarse truth is exact
    np.testing.assert_array_equal(got[:, 10], coarse[:, 10])
    np.testing.assert_array_equal(got[:, 21], coarse[:, 21])
    assert (got[:, [i for i in range(32) if i not in (10, 21)]] == -1).all()
    # nearest-neighbour sampling reads every other plane: one of the two would be lost
    near = sparse[1::2, 1::2, 1::2]
    assert (near >= 0).any(axis=(0, 2)).sum() == 1
    # a finer grid: each voxel takes the id it lies in (plane 42 is index 2 of 40:44 → 4 and 5)
    up = resample_labels(sparse[:, 40:44], (128, 8, 128))
    assert np.flatnonzero((up >= 0).any(axis=(0, 2))).tolist() == [4, 5]
