"""models/segment.py's morphology: the linear-time forms agree voxel for voxel with scipy's
structuring-element forms they replace (the postprocessing of a tomogram finer than the model's
grid scales its radii up by the zoom)."""

from __future__ import annotations

import numpy as np
import pytest
from scipy import ndimage as ndi

from models.segment import EDT_FROM_RADIUS, _ball, fill_holes, open_ball


def _blobs(seed: int, shape=(36, 40, 44), sigma=2.5, level=0.5) -> np.ndarray:
    smooth = ndi.gaussian_filter(np.random.default_rng(seed).random(shape), sigma)
    return smooth > np.quantile(smooth, 1 - level)  # a fraction ``level`` of the voxels


@pytest.mark.parametrize("radius", [1, EDT_FROM_RADIUS, EDT_FROM_RADIUS + 1, 7])
def test_open_ball_is_scipys_opening_by_the_ball(radius):
    for seed in range(3):
        mask = _blobs(seed, sigma=1.0 + radius)
        expected = ndi.binary_opening(mask, structure=_ball(radius))
        got = open_ball(mask, radius)
        assert 0 < expected.sum() < mask.sum()  # the opening removed something, not everything
        np.testing.assert_array_equal(got, expected)
    empty = open_ball(_blobs(0, sigma=0.7), 7)  # nothing survives a large ball
    assert not empty.any()


def test_fill_holes_is_scipys():
    filled_any = False
    for seed in range(6):
        mask = _blobs(seed, level=0.8)  # mostly foreground: enclosed pockets of background
        expected = ndi.binary_fill_holes(mask)
        filled_any |= bool((expected != mask).any())
        np.testing.assert_array_equal(fill_holes(mask), expected)
    assert filled_any
    shell = np.zeros((9, 9, 9), bool)
    shell[1:8, 1:8, 1:8] = True
    shell[3:6, 3:6, 3:6] = False
    assert fill_holes(shell)[4, 4, 4] and fill_holes(np.ones((3, 3, 3), bool)).all()
