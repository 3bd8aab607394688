"""The dataset section of the config, the shard plan and the sample encoding (no simulation)."""

from __future__ import annotations

import gzip
import io

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from factory.config import load_preset
from factory.dataset.config import DatasetConfig
from factory.dataset.shards import encode_array, plan_shards, sample_key, split_counts
from factory.errors import ConfigError, UserError


def test_defaults_and_presets():
    d = DatasetConfig()
    assert d.splits == {"train": 0.9, "val": 0.05, "test": 0.05}
    assert d.split_names() == ["train", "val", "test"]
    assert d.member_name("recon") == "recon.npy" and d.dtype_of("labels") == "uint8"
    for name in ("demo", "simaq-paper", "full"):
        cfg = load_preset(name)
        assert cfg.dataset.shard_size >= 1 and cfg.dataset.num_samples >= 1


@pytest.mark.parametrize(
    "override, field",
    [
        ({"splits": {"train": 0.5, "val": 0.4}}, "splits"),
        ({"splits": {"Train": 1.0}}, "splits"),
        ({"splits": {"train": 1.2, "val": -0.2}}, "splits.train"),
        ({"version": "1.0"}, "version"),
        ({"fields": ["recon", "recon"]}, "fields"),
        ({"fields": ["pickle"]}, "dataset.fields"),
        ({"dtypes": {"recon": "float64"}}, "dataset.dtypes.recon"),
        ({"compression": "zip"}, "dataset.compression"),
        ({"shard_size": 0}, "dataset.shard_size"),
        ({"bogus": 1}, "dataset.bogus"),
    ],
)
def test_bad_dataset_config_names_the_field(override, field):
    with pytest.raises(ConfigError) as err:
        load_preset("demo", {"dataset": override})
    assert field in str(err.value)


def test_split_counts_largest_remainder():
    assert split_counts(
        100, {"train": 0.9, "val": 0.05, "test": 0.05}, ["train", "val", "test"]
    ) == {
        "train": 90,
        "val": 5,
        "test": 5,
    }
    # 7.2 / 0.4 / 0.4: one sample left over goes to the first of the tied remainders
    assert split_counts(8, {"train": 0.9, "val": 0.05, "test": 0.05}, ["train", "val", "test"]) == {
        "train": 7,
        "val": 1,
        "test": 0,
    }


@settings(max_examples=60, deadline=None)
@given(
    n=st.integers(1, 5000),
    shard=st.integers(1, 64),
    w=st.lists(st.integers(0, 20), min_size=1, max_size=4).filter(lambda w: sum(w) > 0),
)
def test_plan_covers_every_index_once_with_one_split_per_shard(n, shard, w):
    names = ["train", "val", "test", "extra"][: len(w)]
    fr = [x / sum(w) for x in w]
    fr[-1] = 1.0 - sum(fr[:-1])
    cfg = DatasetConfig(num_samples=n, shard_size=shard, splits=dict(zip(names, fr, strict=False)))
    specs, counts = plan_shards(cfg)
    assert sum(counts.values()) == n
    covered = [i for s in specs for i in range(s.first_index, s.first_index + s.nsamples)]
    assert covered == list(range(n))  # contiguous, in order, no gap, no duplicate
    assert all(1 <= s.nsamples <= shard for s in specs)
    for split in names:
        assert sum(s.nsamples for s in specs if s.split == split) == counts[split]
        nums = [int(s.url.split("-")[-1][:6]) for s in specs if s.split == split]
        assert nums == list(range(len(nums)))
    assert all(abs(counts[s] - n * f) < len(names) for s, f in zip(names, fr, strict=False))


def test_keys_have_nine_digits_and_no_dots():
    assert sample_key(123) == "000000123"
    with pytest.raises(UserError):
        sample_key(10**9)


def test_encode_array_roundtrip_and_determinism():
    rng = np.random.default_rng(0)
    a = rng.normal(0.3, 0.05, (8, 9, 10)).astype(np.float32)
    raw = encode_array(a, "float32")
    assert np.array_equal(np.load(io.BytesIO(raw), allow_pickle=False), a)
    z1 = encode_array(a, "float16", gzip_level=6)
    z2 = encode_array(a, "float16", gzip_level=6)
    assert z1 == z2  # gzip written with mtime 0: same bytes every time
    back = np.load(io.BytesIO(gzip.decompress(z1)), allow_pickle=False)
    assert back.dtype == np.float16
    np.testing.assert_allclose(back, a, rtol=2**-11, atol=0)


def test_float16_overflow_is_an_error_not_inf():
    with pytest.raises(ValueError, match="overflow float16"):
        encode_array(np.array([1e6], np.float32), "float16")
