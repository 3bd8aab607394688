"""models/infer.py: resampling between the input's and the model's grids, and the memory check
that catches a wrong voxel size before it allocates."""

from __future__ import annotations

import numpy as np
import pytest

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
def test_upsample_argmax_is_the_argmax_of_the_resampled_probabilities(shape, out):
    probs = np.random.default_rng(1).random(shape).astype(np.float32)
    expected = resample(probs, out).argmax(0)
    for planes in (1, 3, 64):
        got = upsample_argmax(probs, out, planes=planes)
        assert got.dtype == np.uint8 and got.shape == out
        np.testing.assert_array_equal(got, expected)
    same = upsample_argmax(probs, shape[1:])
    np.testing.assert_array_equal(same, probs.argmax(0))


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
