"""Hostile ``.npy`` payloads and linked shards in a real dataset whose manifest vouches for them.

Each case rewrites one member of one shard of a small generated dataset (or links the shard from
outside the root), then recomputes every checksum the dataset records -- the shard's ``bytes`` and
``sha256``, the wids index ``wids.json``, ``content_sha256`` (manifest and card) -- so that only the
content checks can catch it. ``simaq verify`` must exit 2 with one line naming the shard, the member
and the bad value; the readers (:func:`~factory.dataset.manifest.iter_samples` and the models'
:func:`~models.data.iter_volumes`) must raise :class:`DatasetError`; ``publish`` must refuse it
before a manifest is written at the destination. No array is loaded before its header is checked
and no pickle is ever run (the object-array payload would create a marker file).

Complements tests/test_untrusted_data.py (hostile member names and tar structure) and
tests/test_dataset_manifest.py (the same checks on hand-built shards).
"""

from __future__ import annotations

import gzip
import io
import json
import re
import shutil
import struct
import tarfile
from pathlib import Path

import numpy as np
import pytest
from _cli import error_line, run
from _shards import npy_bytes, record_checksums, sample_meta

from factory.dataset.manifest import DatasetError, iter_samples, read_manifest

SHARD = "shards/train-000000.tar"
MEMBER = "000000000.recon.npy.gz"  # recon: float16, shape_max (16, 16, 16), gzip-compressed
META = "000000000.meta.json"
MARKER = Path("/tmp/simaq-hostile-shards-marker")  # must never appear


class _Payload:
    """Unpickling this creates ``MARKER``: its existence proves code ran."""

    def __reduce__(self):
        return (open, (str(MARKER), "w"))


def _raw_npy(header: str, payload: bytes = b"") -> bytes:
    """A version 1.0 ``.npy`` with a hand-written header dictionary."""
    h = header.encode("latin1")
    h += b" " * (-(10 + len(h) + 1) % 64) + b"\n"
    return b"\x93NUMPY\x01\x00" + struct.pack("<H", len(h)) + h + payload


F16 = np.zeros((16, 16, 16), np.float16)

# case -> (the member's new .npy bytes, or None for a link case; what the error must say;
#          whether the check holds without the manifest's fields too)
CASES = {
    "object dtype": (
        lambda: npy_bytes(np.array([_Payload()], dtype=object), allow_pickle=True),
        r"dtype object is refused",
        True,
    ),
    "structured dtype": (
        lambda: npy_bytes(np.zeros(4, "f2,f2")),
        r"dtype \[\('f0', '<f2'\), \('f1', '<f2'\)\] is refused",
        True,
    ),
    "shape beyond shape_max": (
        lambda: npy_bytes(np.zeros((17, 16, 16), np.float16)),
        r"shape \(17, 16, 16\) exceeds \(16, 16, 16\) in the manifest",
        False,
    ),
    "code in the header": (
        lambda: _raw_npy(
            "{'descr': '<f2', 'fortran_order': False, "
            f"'shape': (open({str(MARKER)!r}, 'w') and 16, 16, 16), }}"
        ),
        r"not a plain \.npy array \(the header is not a plain literal dictionary\)",  # not run
        True,
    ),
    "absurd shape": (
        lambda: _raw_npy(
            "{'descr': '<f2', 'fortran_order': False, 'shape': (1099511627776, 16, 16), }"
        ),
        r"shape \(1099511627776, 16, 16\) exceeds \(16, 16, 16\)",
        False,
    ),
    "header claims more data than present": (
        lambda: npy_bytes(F16)[:-100],
        r"header claims 8192 bytes of data, the member holds 8092",
        True,
    ),
    "wrong dtype": (
        lambda: npy_bytes(F16.astype(np.float32)),
        r"dtype float32 != float16 in the manifest",
        False,
    ),
    "fortran_order not a bool": (
        lambda: _raw_npy(
            "{'descr': '<f2', 'fortran_order': 'yes', 'shape': (16, 16, 16), }", F16.tobytes()
        ),
        r"not a plain \.npy array \(fortran_order is not a valid bool: 'yes'\)",
        True,
    ),
    # meta.json is decoded and typed too (schemas.sample.SampleMeta): a record that is not this
    # sample's, or not a record at all, is refused by name
    "meta of another sample": (
        lambda: json.dumps(sample_meta(1)).encode(),
        r"sample record: index: the record says 1, its key says 0",
        True,
        META,
    ),
    "meta with a string count": (
        lambda: json.dumps({**sample_meta(0), "seed": "3"}).encode(),
        r"sample record: seed: input should be a valid integer, got .3.",
        True,
        META,
    ),
    "meta not an object": (lambda: b"[1, 2]", r"sample record: .*", True, META),
    "symlinked shard": (None, rf"'{SHARD}' is a symbolic link inside the dataset root", True),
    "symlinked shards folder": (None, r"'shards' is a symbolic link inside the dataset root", True),
}


@pytest.fixture(scope="module")
def base(tmp_path_factory) -> Path:
    """A real dataset: the demo preset on a 16³ grid, 4 samples in shards of 2 (train / val)."""
    from factory.config import load_preset
    from factory.dataset.generate import generate_dataset

    cfg = load_preset(
        "demo",
        {
            "grid": {"shape": [16, 16, 16]},
            "dataset": {"num_samples": 4, "shard_size": 2, "splits": {"train": 0.5, "val": 0.5}},
        },
    )
    out = tmp_path_factory.mktemp("hostile") / "ds"
    generate_dataset(cfg, str(out), seed=3, executor="local")
    return out


def _replace_member(ds: Path, url: str, member: str, payload: bytes) -> None:
    """Rebuild shard ``url`` with ``member`` holding ``payload`` (gzip-compressed if ``.gz``)."""
    if member.endswith(".gz"):
        payload = gzip.compress(payload, mtime=0)
    src = (ds / url).read_bytes()
    out = io.BytesIO()
    with (
        tarfile.open(fileobj=io.BytesIO(src)) as old,
        tarfile.open(fileobj=out, mode="w", format=tarfile.USTAR_FORMAT) as new,
    ):
        for info in old.getmembers():
            data = old.extractfile(info).read()
            if info.name == member:
                data = payload
            info.size = len(data)
            new.addfile(info, io.BytesIO(data))
    (ds / url).write_bytes(out.getvalue())
    record_checksums(ds, url)


def _member_of(case: str) -> str:
    """The member a case rewrites (the recon array unless the case names another)."""
    return CASES[case][3] if len(CASES[case]) > 3 else MEMBER


def _hostile(base: Path, tmp_path: Path, case: str) -> Path:
    """A copy of ``base`` made hostile as ``case`` says; returns its root."""
    ds = tmp_path / "ds"
    shutil.copytree(base, ds)
    make = CASES[case][0]
    outside = tmp_path / "outside"
    outside.mkdir()
    if case == "symlinked shard":  # the same bytes, outside the root: checksums still match
        (ds / SHARD).rename(outside / "train-000000.tar")
        (ds / SHARD).symlink_to(outside / "train-000000.tar")
    elif case == "symlinked shards folder":
        (ds / "shards").rename(outside / "shards")
        (ds / "shards").symlink_to(outside / "shards")
    else:
        _replace_member(ds, SHARD, _member_of(case), make())
    read_manifest(str(ds))  # the manifest is consistent: only the content checks can refuse it
    return ds


@pytest.fixture(autouse=True)
def _no_marker():
    MARKER.unlink(missing_ok=True)
    yield
    assert not MARKER.exists(), "a pickle payload was executed"


def _is_link_case(case: str) -> bool:
    return CASES[case][0] is None


@pytest.mark.parametrize("case", list(CASES))
def test_verify_refuses_in_one_line(monkeypatch, capsys, base, tmp_path, case):
    ds = _hostile(base, tmp_path, case)
    code, stdout, err = run(monkeypatch, capsys, "verify", str(ds))
    line = error_line(err)
    assert code == 2 and not stdout, err
    assert f"shard {SHARD}" in line, line
    if not _is_link_case(case):
        assert f"member {_member_of(case)!r}" in line, line
    assert re.search(CASES[case][1], line), line


@pytest.mark.parametrize("case", list(CASES))
def test_readers_refuse(base, tmp_path, case):
    """``iter_samples`` (with and, where the check needs no manifest, without ``fields``) and the
    training stream raise :class:`DatasetError` naming the shard; nothing of it is yielded."""
    from models.data import SampleSource, iter_volumes

    ds = _hostile(base, tmp_path, case)
    m = read_manifest(str(ds))
    rec = next(r for r in m.shards if r.url == SHARD)
    pattern = CASES[case][1]
    with pytest.raises(DatasetError, match=pattern) as err:
        list(iter_samples(str(ds), rec, fields=m.fields))
    assert f"shard {SHARD}" in str(err.value) and "\n" not in str(err.value)
    if CASES[case][2]:
        with pytest.raises(DatasetError, match=pattern):
            list(iter_samples(str(ds), rec))
    got = []
    with pytest.raises(DatasetError, match=pattern):
        for vol in iter_volumes(str(ds), [rec], fields=m.fields):
            got.append(vol)
    assert got == []
    # the training stream's reader: a checking pass, then each sample by seeking to it
    src = SampleSource(str(ds), [rec], fields=m.fields)
    with pytest.raises(DatasetError, match=pattern):
        for i in range(src.n):
            src.read(i)


@pytest.mark.parametrize("case", list(CASES))
def test_publish_refuses_before_writing_a_manifest(monkeypatch, capsys, base, tmp_path, case):
    ds = _hostile(base, tmp_path, case)
    dest = tmp_path / "pub"
    code, stdout, err = run(monkeypatch, capsys, "publish", str(ds), str(dest))
    line = error_line(err)
    assert code == 2 and not stdout, err
    assert line.startswith("error: publish:") and SHARD in line, line
    assert re.search(CASES[case][1], line), line
    assert not list(dest.rglob("manifest.json"))
    assert not list(dest.rglob("train-000000.tar"))  # refused before it was committed


def test_the_untouched_dataset_verifies_and_publishes(monkeypatch, capsys, base, tmp_path):
    """The same pipeline on the unmodified dataset: every check above is about the payload."""
    ds = tmp_path / "ds"
    shutil.copytree(base, ds)
    _replace_member(ds, SHARD, MEMBER, gzip.decompress(_member(ds, SHARD, MEMBER)))
    code, stdout, err = run(monkeypatch, capsys, "verify", str(ds))
    assert code == 0 and "ok: 2 shards, 4 samples" in stdout, err
    m = read_manifest(str(ds))
    samples = list(iter_samples(str(ds), m.shards[0], fields=m.fields))
    recon = samples[0]["recon"]
    assert recon.dtype == np.float16 and recon.shape == (16, 16, 16) and recon.flags.writeable
    code, _, err = run(monkeypatch, capsys, "publish", str(ds), str(tmp_path / "pub"))
    assert code == 0, err


def _member(ds: Path, url: str, member: str) -> bytes:
    with tarfile.open(ds / url) as tar:
        return tar.extractfile(member).read()
