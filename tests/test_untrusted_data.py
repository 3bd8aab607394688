"""Untrusted data: hostile datasets whose manifests are *consistent* (the attacker wrote the
checksums too), run through every command that reads a dataset -- ``verify``, ``inspect``,
``preview``, ``publish`` and the training input stream. Each is refused with one line naming the
shard, no pickle payload runs (each would create a marker file), and nothing is written outside the
command's own output.

Hostile shards: pickles (``.pyd``, ``.pkl``, a pickled object ``.npy``), member names with ``..``,
absolute paths, directories, PAX / GNU long names, symlinks and hard links, an ``.npy`` with an
oversized header, a tar header claiming a huge member. Hostile manifests: shard urls outside the
root (with a matching file there), an ``index``/``card`` pointing elsewhere.

Complements tests/test_dataset_manifest.py (unit checks of the member and url rules) and
tests/test_hostile_shards.py (hostile .npy payloads and linked shards in a generated dataset).
"""

from __future__ import annotations

import json
import pickle
import shutil
import struct
import tarfile
from pathlib import Path

import numpy as np
import pytest
from _cli import run
from _shards import npy_bytes, record_checksums, sample_meta, tar_bytes

from factory.dataset.manifest import DatasetError, content_sha256, read_manifest

MARKER = Path("/tmp/simaq-untrusted-marker")  # fixed, outside every test dir: must never appear
EVIL_DIR = Path("/tmp/simaq-untrusted-evil")


class _Payload:
    """Unpickling this calls ``open(MARKER, "w")``: the file's existence proves code ran."""

    def __reduce__(self):
        return (open, (str(MARKER), "w"))


def _big_header_npy() -> bytes:
    """A valid-looking ``.npy`` v2 whose header is 200 kB of padding (numpy caps it at 10 kB)."""
    header = "{'descr': '<f4', 'fortran_order': False, 'shape': (2,), }"
    header = header + " " * (200_000 - len(header) - 1) + "\n"
    return b"\x93NUMPY\x02\x00" + struct.pack("<I", len(header)) + header.encode() + b"\0" * 8


def _info(
    name: str, size: int = 0, kind: bytes = tarfile.REGTYPE, link: str = ""
) -> tarfile.TarInfo:
    ti = tarfile.TarInfo(name)
    ti.size, ti.type, ti.linkname, ti.mtime, ti.mode = size, kind, link, 0, 0o644
    return ti


def _huge_membertar_bytes(good: list) -> bytes:
    """A ustar header claiming a 7 GiB member (followed by a few bytes), then good members."""
    head = _info("000000000.recon.npy", size=7 << 30).tobuf(tarfile.USTAR_FORMAT)
    return head + b"\0" * 512 + tar_bytes(good)


def _good(index: int, labels: np.ndarray, recon: np.ndarray) -> list:
    key = f"{index:09d}"
    return [
        (_info(f"{key}.labels.npy"), npy_bytes(labels)),
        (_info(f"{key}.meta.json"), json.dumps(sample_meta(index)).encode()),
        (_info(f"{key}.recon.npy"), npy_bytes(recon)),
    ]


EVIL = {
    "pyd pickle": lambda: [(_info("000000000.recon.pyd"), pickle.dumps(_Payload()))],
    "pkl pickle": lambda: [(_info("000000000.recon.pkl"), pickle.dumps(_Payload()))],
    "pickled npy": lambda: [
        (_info("000000000.recon.npy"), npy_bytes(np.array([_Payload()], dtype=object), True))
    ],
    "dotdot name": lambda: [(_info("../000000000.recon.npy"), npy_bytes(np.zeros(2, np.float32)))],
    "absolute name": lambda: [
        (_info(f"{EVIL_DIR}/000000000.recon.npy"), npy_bytes(np.zeros(2, np.float32)))
    ],
    "directory": lambda: [(_info("000000000.recon.npy", kind=tarfile.DIRTYPE), None)],
    "pax long name": lambda: [
        (_info("a/" * 60 + "../" * 40 + "000000000.recon.npy"), npy_bytes(np.zeros(2, np.float32)))
    ],
    "symlink": lambda: [
        (_info("000000000.recon.npy", kind=tarfile.SYMTYPE, link="/etc/passwd"), None)
    ],
    "hard link": lambda: [
        (_info("000000000.recon.npy", kind=tarfile.LNKTYPE, link="/etc/passwd"), None)
    ],
    "oversized npy header": lambda: [(_info("000000000.recon.npy"), _big_header_npy())],
    "huge tar member": None,  # built by _huge_member_tar
}
# refused for their names or types (the others for their .npy content)
NAME_LEVEL = {"pyd pickle", "pkl pickle", "dotdot name", "absolute name", "directory",
              "pax long name", "symlink", "hard link"}  # fmt: skip


def _tree(root: Path) -> dict[str, bytes]:
    return {str(p): p.read_bytes() for p in sorted(root.rglob("*")) if p.is_file()}


def _hostile_copy(small_dataset: Path, dest: Path, shard_bytes: bytes) -> dict:
    """A copy of the small dataset whose first shard is ``shard_bytes``, with a consistent
    manifest (size, sha256, content hash all match)."""
    shutil.copytree(small_dataset, dest)
    url = json.loads((dest / "manifest.json").read_text())["shards"][0]["url"]
    (dest / url).write_bytes(shard_bytes)
    return record_checksums(dest, url)


@pytest.fixture(autouse=True)
def _no_marker():
    MARKER.unlink(missing_ok=True)
    shutil.rmtree(EVIL_DIR, ignore_errors=True)
    yield
    assert not MARKER.exists(), "a pickle payload was executed"
    assert not EVIL_DIR.exists(), "something was written to an absolute member path"


@pytest.mark.parametrize("case", list(EVIL))
def test_hostile_shards_are_refused_by_every_reader(
    monkeypatch, capsys, small_dataset, tmp_path, case
):
    from models.data import SampleSource, iter_volumes

    src = read_manifest(str(small_dataset))
    first = src.shards[0]  # train-000000: samples 0 and 1
    from factory.dataset.manifest import iter_samples

    s1 = [s for s in iter_samples(str(small_dataset), first) if s["__key__"] == "000000001"][0]
    good1 = _good(1, s1["labels"], s1["recon"].astype(np.float32))
    if case == "huge tar member":
        shard = _huge_membertar_bytes(good1)
    else:
        shard = tar_bytes(EVIL[case]() + good1, fmt=tarfile.PAX_FORMAT)
    ds = tmp_path / "ds"
    m = _hostile_copy(small_dataset, ds, shard)
    url = m["shards"][0]["url"]
    before = _tree(tmp_path)

    code, _, err = run(monkeypatch, capsys, "verify", str(ds))
    # the checksums match (the attacker wrote them): refused as content, exit 2, one line
    lines = [ln for ln in err.splitlines() if ln.startswith("error:")]
    assert code == 2 and len(lines) == 1 and f"shard {url}" in lines[0], err
    if case in NAME_LEVEL:
        assert "unexpected member" in lines[0] or "only regular files" in lines[0], err
    elif case == "pickled npy":  # the name is fine: the .npy header check refuses it
        assert "dtype object is refused" in lines[0], err
    else:  # a member larger than the manifest's fields allow
        assert "exceeds the limit" in lines[0], err
    png = tmp_path / "p.png"
    code, _, err = run(monkeypatch, capsys, "preview", str(ds), "--index", "0", "--out", str(png))
    lines = [ln for ln in err.splitlines() if ln.startswith("error:")]
    assert code == 2 and len(lines) == 1 and url in lines[0] and "Traceback" not in err, err
    assert not png.exists()
    with pytest.raises(DatasetError, match=url):
        list(iter_volumes(str(ds), m["shards"][:1], fields=m["fields"]))
    src = SampleSource(str(ds), m["shards"][:1], fields=m["fields"])  # the training reader
    with pytest.raises(DatasetError, match=url):
        [src.read(i) for i in range(src.n)]
    # publishing to another directory: refused before a manifest is written there
    dest = tmp_path / "pub"
    code, _, err = run(monkeypatch, capsys, "publish", str(ds), str(dest))
    assert code == 2 and url in err, err
    assert not list(dest.rglob("manifest.json"))
    after = {k: v for k, v in _tree(tmp_path).items() if not k.startswith(str(dest))}
    assert after == before  # nothing written (or changed) except under the publish destination


def test_manifest_pointing_outside_its_root_is_refused(
    monkeypatch, capsys, small_dataset, tmp_path
):
    """Shard urls leaving the root are refused even when a matching file waits there; ``index``
    and ``card`` entries of the manifest are never followed."""
    from models.data import SampleSource, iter_volumes

    outside = tmp_path / "outside"
    outside.mkdir()
    ds = tmp_path / "ds"
    shutil.copytree(small_dataset, ds)
    shutil.copy(ds / "shards/train-000000.tar", outside / "train-000000.tar")
    shutil.copy(ds / "index.parquet", outside / "index.parquet")
    import pyarrow.parquet as pq

    pq.write_table(pq.read_table(outside / "index.parquet").slice(0, 1), outside / "index.parquet")
    m = json.loads((ds / "manifest.json").read_text())
    good = json.dumps(m)
    m["index"], m["card"] = "../outside/index.parquet", str(outside / "index.parquet")
    (ds / "manifest.json").write_text(json.dumps(m))
    code, stdout, err = run(monkeypatch, capsys, "inspect", str(ds), "--json")
    assert code == 0 and json.loads(stdout)["num_samples"] == 6, err  # the root's own index
    tried = 0
    for url in ("../outside/train-000000.tar", str(outside / "train-000000.tar"),
                "shards/../../outside/train-000000.tar", "file:///etc/passwd",
                "s3://other-bucket/train-000000.tar"):  # fmt: skip
        m = json.loads(good)
        m["shards"][0]["url"] = url
        m["content_sha256"] = content_sha256(m["shards"])
        (ds / "manifest.json").write_text(json.dumps(m))
        for args in (["verify", str(ds)], ["inspect", str(ds)],
                     ["preview", str(ds), "--index", "0", "--out", str(tmp_path / "x.png")],
                     ["publish", str(ds), str(tmp_path / "pub")]):  # fmt: skip
            code, _, err = run(monkeypatch, capsys, *args)
            lines = [ln for ln in err.splitlines() if ln.startswith("error:")]
            assert code == 2 and len(lines) == 1, (args, err)
            assert "inside the dataset root" in lines[0] and "Traceback" not in err
            tried += 1
        with pytest.raises(DatasetError, match="inside the dataset root"):
            list(iter_volumes(str(ds), m["shards"][:1]))
        with pytest.raises(DatasetError, match="inside the dataset root"):
            SampleSource(str(ds), m["shards"][:1]).read(0)
    assert tried == 20
    assert not (tmp_path / "x.png").exists() and not (tmp_path / "pub").exists()
