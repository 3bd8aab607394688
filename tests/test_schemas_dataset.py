"""The typed dataset layer (:mod:`schemas.dataset`): the manifest, its shard records and field
specs, and the derived wids index ``wids.json``.

Datasets here are written by hand (two tiny shards), so every test runs in well under a second.
"""

from __future__ import annotations

import hashlib
import json

import numpy as np
import pytest
from _shards import npy_bytes, sample_meta, tar_bytes

from factory.dataset.manifest import (
    DatasetError,
    as_shard,
    read_manifest,
    read_wids,
    validate_manifest,
)
from factory.dataset.tools import verify_dataset
from schemas.dataset import (
    FORMAT_VERSION,
    WIDS_NAME,
    FieldSpec,
    Manifest,
    RootedShard,
    ShardRecord,
    WidsIndex,
    content_sha256,
)


def _shard(first: int, n: int) -> bytes:
    members = []
    for i in range(first, first + n):
        members += [
            (f"{i:09d}.labels.npy", npy_bytes(np.full((2, 2), i, np.uint8))),
            (f"{i:09d}.meta.json", json.dumps(sample_meta(i)).encode()),
        ]
    return tar_bytes(members)


def _doc(shards: list[dict]) -> dict:
    return {
        "format_version": FORMAT_VERSION,
        "name": "hand",
        "version": "1.0.0",
        "created": "2020-01-01T00:00:00+00:00",
        "code": {"package": None},
        "config": {"grid": {"voxel_nm": 60.0}},
        "config_sha256": "0" * 64,
        "seed": 0,
        "seed_rule": "test",
        "labels": {"scheme": "full"},
        "fields": {
            "labels": {"dtype": "uint8", "shape": [2, 2], "shape_min": [2, 2], "shape_max": [2, 2]},
            "meta": {"member": "meta.json", "encoding": "json"},
        },
        "splits": {"train": sum(s["nsamples"] for s in shards if s["split"] == "train"),
                   "val": sum(s["nsamples"] for s in shards if s["split"] == "val")},
        "shards": shards,
        "num_samples": sum(s["nsamples"] for s in shards),
        "content_sha256": content_sha256(shards),
        "class_fractions": {"background": 1.0},
    }  # fmt: skip


@pytest.fixture
def dataset(tmp_path):
    """A two-shard dataset written by hand: ``(root, manifest JSON)``, with its ``wids.json``."""
    shards = []
    for url, split, first, n in (("shards/train-000000.tar", "train", 0, 2),
                                 ("shards/val-000000.tar", "val", 2, 1)):  # fmt: skip
        data = _shard(first, n)
        (tmp_path / url).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / url).write_bytes(data)
        shards.append({"url": url, "split": split, "first_index": first, "nsamples": n,
                       "bytes": len(data), "sha256": hashlib.sha256(data).hexdigest()})  # fmt: skip
    doc = _doc(shards)
    m = Manifest.model_validate(doc)
    (tmp_path / WIDS_NAME).write_text(json.dumps(m.wids_index().dump()))
    (tmp_path / "manifest.json").write_text(json.dumps(m.dump()))
    return tmp_path, doc


def test_round_trip(dataset):
    root, doc = dataset
    m = read_manifest(str(root))
    assert isinstance(m, Manifest) and m.dump() == doc
    assert Manifest.model_validate(json.loads(json.dumps(m.dump()))) == m
    assert json.dumps(m.dump()) == json.dumps(Manifest.model_validate(doc).dump())  # deterministic
    rec = m.shards[0]
    assert isinstance(rec, ShardRecord) and rec.url == "shards/train-000000.tar"
    assert (rec.first_index, rec.nsamples, rec.end_index) == (0, 2, 2)
    assert [s.url for s in m.split_shards("val")] == ["shards/val-000000.tar"]
    assert m.total_bytes == sum(s["bytes"] for s in doc["shards"])
    assert m.fields["labels"].shape_max == [2, 2] and m.fields["meta"].dtype is None
    assert m.fields["meta"].dump() == {"member": "meta.json", "encoding": "json"}
    with pytest.raises(ValueError):  # frozen: a manifest is read, never edited in place
        m.name = "other"
    assert verify_dataset(str(root)) == []


def test_an_unknown_format_version_is_refused(dataset):
    root, doc = dataset
    for version in (3, 0, "1", "2", None, True, 2.0):
        with pytest.raises(DatasetError, match=r"format_version .* is not supported"):
            validate_manifest({**doc, "format_version": version})
    (root / "manifest.json").write_text(json.dumps({**doc, "format_version": 3}))
    with pytest.raises(DatasetError) as err:
        read_manifest(str(root))
    assert str(err.value) == "manifest: format_version 3 is not supported (this reader knows 1, 2)"


def test_format_1_datasets_are_still_read(dataset):
    """Format 2 changed how a phantom's content is drawn, not the layout: version 1 still reads."""
    root, doc = dataset
    assert FORMAT_VERSION == 2 and doc["format_version"] == 2
    m = validate_manifest({**doc, "format_version": 1})
    assert m.format_version == 1
    (root / "manifest.json").write_text(json.dumps({**doc, "format_version": 1}))
    assert read_manifest(str(root)).format_version == 1
    assert verify_dataset(str(root)) == []


@pytest.mark.parametrize(
    ("where", "value", "message"),
    [
        (("shards", 1, "sha256"), "abc", r"shards\[1\]\.sha256 must be 64 hex digits, got 'abc'"),
        (("shards", 0, "nsamples"), 0, r"shards\[0\]\.nsamples: .*greater than or equal to 1.*0"),
        (("shards", 0, "first_index"), "0", r"shards\[0\]\.first_index: .*integer.*'0'"),
        (("shards", 0, "bytes"), True, r"shards\[0\]\.bytes: .*integer.*True"),
        (("shards", 0, "url"), "../x.tar", r"shards\[0\]\.url '\.\./x\.tar' .*inside the dataset"),
        (("shards", 0, "root"), "/etc", r"shards\[0\]\.root is not a known key"),
        (("shards", 1, "split"), "test", r"shards\[1\]\.split 'test' is not in splits"),
        (("fields", "labels", "dtype"), "object", r"fields\.labels\.dtype 'object' is not a plain"),
        (("fields", "labels", "shape_max"), [2, -1], r"fields\.labels\.shape_max\[1\]: .*-1"),
        (("fields", "labels", "strides"), [1], r"fields\.labels\.strides is not a known key"),
        (("splits", "val"), 5, r"splits\.val is 5 but its shards hold 1"),
        (("num_samples",), 7, r"num_samples 7 != sum over shards 3"),
        (("seed",), "0", r"seed: .*integer.*'0'"),
    ],
)
def test_a_bad_value_is_named_in_the_error(dataset, where, value, message):
    _, doc = dataset
    bad = json.loads(json.dumps(doc))
    node = bad
    for key in where[:-1]:
        node = node[key]
    node[where[-1]] = value
    if where[0] == "shards" and where[-1] in ("sha256", "url"):
        bad["content_sha256"] = content_sha256(bad["shards"])
    with pytest.raises(DatasetError, match=r"^manifest: " + message) as err:
        validate_manifest(bad)
    assert "\n" not in str(err.value)


def test_missing_keys_are_listed_together(dataset):
    _, doc = dataset
    with pytest.raises(DatasetError, match=r"missing keys \['name', 'seed'\]"):
        validate_manifest({k: v for k, v in doc.items() if k not in ("name", "seed")})
    with pytest.raises(DatasetError, match="must be a JSON object"):
        validate_manifest([doc])


def test_legacy_and_unknown_keys_are_ignored(dataset):
    """Manifests written before ``wids.json`` held the wids keys themselves: still read (the shard
    list is ``shards`` alone); unknown top-level keys are never read either."""
    _, doc = dataset
    legacy = {
        **doc,
        "__kind__": "wids-shard-index-v1",
        "wids_version": 1,
        "shardlist": [{"url": "elsewhere.tar", "nsamples": 1, "filesize": 1}],
        "storage_options": {"key": "not used"},
    }
    m = validate_manifest(legacy)
    assert m == validate_manifest(doc)
    assert not {"__kind__", "wids_version", "shardlist", "storage_options"} & set(m.dump())


def test_shard_records_given_as_dicts_are_validated():
    rec = {"url": "shards/a.tar", "split": "train", "first_index": 0, "nsamples": 1, "bytes": 10,
           "sha256": "a" * 64}  # fmt: skip
    assert as_shard(rec) == ShardRecord(**rec)
    rooted = as_shard({**rec, "root": "/data/other"})
    assert isinstance(rooted, RootedShard) and rooted.root == "/data/other"
    assert RootedShard.of(ShardRecord(**rec), "/data/other") == rooted
    with pytest.raises(DatasetError, match="inside the dataset root"):
        as_shard({**rec, "url": "/etc/passwd"})
    with pytest.raises(DatasetError, match="9-digit keys"):
        as_shard({**rec, "first_index": 10**9 - 1, "nsamples": 2})
    assert FieldSpec(dtype="uint8").dump() == {"dtype": "uint8"}
    with pytest.raises(DatasetError, match=r"fields\.x\.dtype 'O' is not a plain"):
        validate_manifest({**_doc([rec]), "fields": {"x": {"dtype": "O"}}})


def test_wids_json_is_derived_from_the_shards(dataset):
    root, doc = dataset
    m = read_manifest(str(root))
    wids = json.loads((root / WIDS_NAME).read_text())
    assert wids == {
        "__kind__": "wids-shard-index-v1",
        "wids_version": 1,
        "name": "hand",
        "shardlist": [
            {
                "url": s["url"],
                "nsamples": s["nsamples"],
                "filesize": s["bytes"],
                "sha256": s["sha256"],
            }
            for s in doc["shards"]
        ],  # fmt: skip
    }
    assert read_wids(str(root)) == m.wids_index()
    assert WidsIndex.model_validate(wids).mismatch(m.wids_index()) is None


def test_verify_checks_wids_json_against_the_manifest(dataset):
    root, _ = dataset
    path = root / WIDS_NAME
    good = json.loads(path.read_text())
    wrong = json.loads(json.dumps(good))
    wrong["shardlist"][1]["nsamples"] = 2
    path.write_text(json.dumps(wrong))
    problems = verify_dataset(str(root))
    assert len(problems) == 1 and problems[0].startswith(f"{WIDS_NAME}: does not match"), problems
    assert "shardlist[1]" in problems[0]
    path.write_text(json.dumps({**good, "__kind__": "something-else"}))
    assert verify_dataset(str(root))[0].startswith(f"{WIDS_NAME}: ")
    path.write_text("{not json")
    assert "not valid JSON" in verify_dataset(str(root))[0]
    path.unlink()  # derived: a dataset without it (written before it existed) still verifies
    assert verify_dataset(str(root)) == []


def test_simaq_verify_reports_a_wids_json_that_disagrees(monkeypatch, capsys, dataset):
    from _cli import run

    root, _ = dataset
    wids = json.loads((root / WIDS_NAME).read_text())
    wids["shardlist"].reverse()
    (root / WIDS_NAME).write_text(json.dumps(wids))
    code, stdout, err = run(monkeypatch, capsys, "verify", str(root))
    assert code == 1 and not stdout, err
    assert f"{WIDS_NAME}: does not match the manifest (shardlist[0]" in err
    assert f"verify: {WIDS_NAME} does not match the manifest" in err
