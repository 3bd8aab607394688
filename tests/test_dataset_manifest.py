"""Reading untrusted datasets: manifest validation and the refusals of ``iter_samples``.

The shards here are built by hand with ``tarfile`` (so that they can be malicious); everything is
read through the public API the models package uses.
"""

from __future__ import annotations

import gzip
import hashlib
import json
import pickle
import tarfile

import numpy as np
import pytest
from _shards import npy_bytes, sample_meta, tar_bytes

from factory.dataset.manifest import (
    DatasetError,
    content_sha256,
    iter_samples,
    read_manifest,
    validate_manifest,
)


def _tar(members: list[tuple[str, bytes] | tarfile.TarInfo]) -> bytes:
    return tar_bytes(members, fmt=tarfile.USTAR_FORMAT)


def _good_members(first: int, n: int) -> list[tuple[str, bytes]]:
    out = []
    for i in range(first, first + n):
        key = f"{i:09d}"
        out += [
            (f"{key}.labels.npy", npy_bytes(np.full((4, 4, 4), i % 3, np.uint8))),
            (f"{key}.meta.json", json.dumps(sample_meta(i)).encode()),
            (
                f"{key}.recon.npy.gz",
                gzip.compress(npy_bytes(np.full((4, 4, 4), i, np.float32)), mtime=0),
            ),
        ]
    return out


def _write_dataset(root, shards: dict[str, tuple[int, int, bytes]]) -> dict:
    """Write shards ``url -> (first_index, nsamples, tar bytes)`` and a matching manifest."""
    recs = []
    for url, (first, n, data) in shards.items():
        p = root / url
        p.parent.mkdir(parents=True, exist_ok=True)
        p.write_bytes(data)
        recs.append(
            {
                "url": url,
                "split": "train",
                "first_index": first,
                "nsamples": n,
                "bytes": len(data),
                "sha256": hashlib.sha256(data).hexdigest(),
            }
        )
    m = {
        "format_version": 1,  # a format-1 manifest: still read
        "name": "hand",
        "version": "1.0.0",
        "created": "2020-01-01T00:00:00+00:00",
        "code": {},
        "config": {},
        "config_sha256": "0" * 64,
        "seed": 0,
        "seed_rule": "test",
        "labels": {},
        "fields": {
            "recon": {"dtype": "float32", "shape_max": [4, 4, 4]},
            "labels": {"dtype": "uint8", "shape_max": [4, 4, 4]},
        },
        "splits": {"train": sum(r["nsamples"] for r in recs)},
        "shards": recs,
        "num_samples": sum(r["nsamples"] for r in recs),
        "content_sha256": content_sha256(recs),
    }
    (root / "manifest.json").write_text(json.dumps(m))
    return m


def test_a_good_shard_decodes(tmp_path):
    m = _write_dataset(tmp_path, {"shards/train-000000.tar": (5, 3, _tar(_good_members(5, 3)))})
    m2 = read_manifest(str(tmp_path))
    assert m2.dump() == m  # the typed manifest dumps back to the JSON it was read from
    samples = list(iter_samples(str(tmp_path), m["shards"][0], fields=m["fields"]))
    assert [s["__key__"] for s in samples] == ["000000005", "000000006", "000000007"]
    assert samples[1]["recon"].dtype == np.float32 and float(samples[1]["recon"][0, 0, 0]) == 6.0
    assert samples[2]["labels"].dtype == np.uint8 and samples[2]["meta"].index == 7
    # the manifest file itself may be given instead of the root
    assert read_manifest(str(tmp_path / "manifest.json")).num_samples == 3


@pytest.mark.parametrize(
    "url",
    [
        "../evil.tar",
        "/etc/passwd",
        "shards/../../evil.tar",
        "s3://other-bucket/x.tar",
        "C:\\x.tar",
        "shards//x.tar",
        "./shards/x.tar",
        "~/x.tar",
        "",
    ],
)
def test_manifest_urls_must_stay_inside_the_root(tmp_path, url):
    m = _write_dataset(tmp_path, {"shards/train-000000.tar": (0, 2, _tar(_good_members(0, 2)))})
    m["shards"][0]["url"] = url
    m["content_sha256"] = content_sha256(m["shards"])
    with pytest.raises(DatasetError, match="relative path inside the dataset root|non-empty"):
        validate_manifest(m)


def test_manifest_consistency_checks(tmp_path):
    m = _write_dataset(
        tmp_path,
        {
            "shards/train-000000.tar": (0, 2, _tar(_good_members(0, 2))),
            "shards/train-000001.tar": (2, 2, _tar(_good_members(2, 2))),
        },
    )
    bad = json.loads(json.dumps(m))
    bad["shards"][1]["first_index"] = 1
    bad["content_sha256"] = content_sha256(bad["shards"])
    with pytest.raises(DatasetError, match="overlap"):
        validate_manifest(bad)
    bad = json.loads(json.dumps(m))
    bad["shards"][0]["sha256"] = "f" * 64
    with pytest.raises(DatasetError, match="content_sha256"):
        validate_manifest(bad)
    bad = json.loads(json.dumps(m))
    bad["format_version"] = 99
    with pytest.raises(DatasetError, match="format_version"):
        validate_manifest(bad)
    bad = {k: v for k, v in m.items() if k != "seed"}
    with pytest.raises(DatasetError, match="missing keys"):
        validate_manifest(bad)
    (tmp_path / "manifest.json").write_text("{not json")
    with pytest.raises(DatasetError, match="not valid JSON"):
        read_manifest(str(tmp_path))
    with pytest.raises(DatasetError, match="no manifest"):
        read_manifest(str(tmp_path / "nowhere"))


def _one_bad(tmp_path, members) -> tuple[dict, dict]:
    m = _write_dataset(tmp_path, {"shards/train-000000.tar": (0, 2, _tar(members))})
    return m, m["shards"][0]


def _symlink(name: str) -> tarfile.TarInfo:
    info = tarfile.TarInfo(name)
    info.type = tarfile.SYMTYPE
    info.linkname = "/etc/passwd"
    return info


class _Boom:
    def __reduce__(self):  # would run code if unpickled
        return (print, ("pickle executed",))


@pytest.mark.parametrize(
    "evil, match",
    [
        (("000000000.x.pyd", pickle.dumps({"a": 1})), "unexpected member"),
        (("000000000.x.pkl", pickle.dumps(_Boom())), "unexpected member"),
        (
            (
                "000000000.recon.npy",
                npy_bytes(np.array([_Boom()], dtype=object), allow_pickle=True),
            ),
            "dtype object is refused",
        ),
        (("../000000000.recon.npy", npy_bytes(np.zeros(2, np.float32))), "unexpected member"),
        (("/tmp/000000000.recon.npy", npy_bytes(np.zeros(2, np.float32))), "unexpected member"),
        (_symlink("000000000.recon.npy"), "only regular files"),
        (("000000009.recon.npy", npy_bytes(np.zeros((4, 4, 4), np.float32))), "outside"),
        (("000000000.recon.npy", npy_bytes(np.zeros((4, 4, 4), np.float64))), "dtype float64"),
        (("000000000.recon.npy", npy_bytes(np.zeros((5, 4, 4), np.float32))), "exceeds"),
        (("000000000.recon.npy.gz", gzip.compress(b"\0" * (1 << 20))), "inflates beyond"),
        (("000000000.recon.npy", npy_bytes(np.zeros((4, 4, 4), np.float32))[:-8]), "holds 248"),
        (("000000000.recon.npy", npy_bytes(np.zeros((4, 4, 4), np.float32)) + b"x"), "holds 257"),
        (
            (
                "000000000.recon.npy.gz",
                gzip.compress(npy_bytes(np.zeros((4, 4, 4), np.float32))[:-4]),
            ),
            "holds 252",
        ),
        (("000000000.recon.npy", npy_bytes(np.zeros(4, "f4,f4"))), "dtype .* is refused"),
        (("000000000.recon.npy", npy_bytes(np.zeros((4, 4, 4), ">f4"))), "dtype >f4 != float32"),
        (("000000000.recon.npy", b"\x93NUMPY\x03\x00" + b"\0" * 64), "version 3.0"),
        (("000000000.evil.npy", npy_bytes(np.zeros((4, 4, 4), np.float32))), "not described"),
    ],
)
def test_untrusted_members_are_refused(tmp_path, evil, match, capsys):
    name = evil.name if isinstance(evil, tarfile.TarInfo) else evil[0]
    if name.startswith("000000009"):  # a foreign key after two good samples
        members = _good_members(0, 2) + [evil]
    else:  # the bad member first, then a good sample 1
        members = [evil] + _good_members(1, 1)
    m, rec = _one_bad(tmp_path, members)
    with pytest.raises(DatasetError, match=match) as err:
        list(iter_samples(str(tmp_path), rec, fields=m["fields"]))
    assert "train-000000.tar" in str(err.value)
    assert "pickle executed" not in capsys.readouterr().out


def test_duplicate_and_missing_samples_are_refused(tmp_path):
    good = _good_members(0, 2)
    m, rec = _one_bad(tmp_path, good + good[:1])
    with pytest.raises(DatasetError, match="out of order|duplicate"):
        list(iter_samples(str(tmp_path), rec))
    m, rec = _one_bad(tmp_path, good[:3])  # one sample where the manifest says two
    with pytest.raises(DatasetError, match="holds 1 samples"):
        list(iter_samples(str(tmp_path), rec))


def test_checksum_is_checked_before_anything_is_yielded(tmp_path):
    m = _write_dataset(tmp_path, {"shards/train-000000.tar": (0, 2, _tar(_good_members(0, 2)))})
    path = tmp_path / "shards/train-000000.tar"
    data = bytearray(path.read_bytes())
    data[512 + 128 + 5] ^= 0xFF  # a label value of the first member: the tar still parses
    path.write_bytes(bytes(data))
    it = iter_samples(str(tmp_path), m["shards"][0])
    with pytest.raises(DatasetError, match=r"shard shards/train-000000.tar: sha256 mismatch"):
        next(it)
    # without verification the (damaged) samples stream; structure is still checked
    assert len(list(iter_samples(str(tmp_path), m["shards"][0], verify=False))) == 2
    path.unlink()
    with pytest.raises(DatasetError, match="missing"):
        next(iter_samples(str(tmp_path), m["shards"][0]))
