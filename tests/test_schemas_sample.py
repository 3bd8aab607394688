"""schemas/sample.py: a sample's meta.json record and its index row, typed."""

from __future__ import annotations

import json

import numpy as np
import pydantic
import pytest
from _shards import sample_meta

from factory.config import load_preset
from factory.dataset.shards import canonical_json
from factory.sample import simulate_sample
from schemas.sample import IndexRow, SampleMeta


@pytest.mark.parametrize("preset", ["demo", "capillary-demo"])
def test_a_simulated_record_reads_back_byte_for_byte(preset):
    cfg = load_preset(preset, {"grid": {"shape": [24, 24, 24]}} if preset == "demo" else None)
    meta = simulate_sample(cfg, 5, 2).meta
    assert isinstance(meta, SampleMeta) and meta.index == 2 and meta.seed == 5
    written = canonical_json(meta.to_json())
    back = SampleMeta.parse(json.loads(written), index=2)
    assert canonical_json(back.to_json()) == written  # integers stay integers, nothing added
    assert back.phantom.cells_placed == len([o for o in back.objects if o.kind == "cell"])
    assert all(len(o.centre_vox) == 3 for o in back.objects if o.kind == "vacuole")


def test_the_writer_converts_numpy_and_refuses_a_malformed_record():
    raw = sample_meta(3)
    raw["phantom"]["cells_placed"] = np.int64(1)  # numpy scalars become JSON numbers
    raw["grid"]["shape"] = (np.int64(4), 4, 4)
    meta = SampleMeta.build(raw)
    assert meta.to_json()["grid"]["shape"] == [4, 4, 4]
    with pytest.raises(pydantic.ValidationError, match="cells_placed"):
        SampleMeta.build({**raw, "phantom": {**raw["phantom"], "cells_placed": -1}})
    with pytest.raises(pydantic.ValidationError, match="not_a_key"):
        SampleMeta.build({**raw, "not_a_key": 1})  # the top level is closed
    with pytest.raises(ValueError, match="the record says 3, its key says 4"):
        SampleMeta.parse(meta.to_json(), index=4)


def test_an_index_row_is_checked():
    row = dict(key="000000007", index=7, split="train", shard="shards/train-000000.tar",
               n_angles=61, class_voxels=[10, 5], params={"acquisition.tilt.range_deg": 120.0})  # fmt: skip
    assert IndexRow.model_validate(row).index == 7
    with pytest.raises(pydantic.ValidationError, match="key"):
        IndexRow.model_validate({**row, "key": "7"})
    with pytest.raises(pydantic.ValidationError, match="class_voxels"):
        IndexRow.model_validate({**row, "class_voxels": [-1]})
