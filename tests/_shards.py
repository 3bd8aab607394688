"""Building shards by hand, for the tests of hostile datasets: ``.npy`` and tar bytes, and
re-recording a rewritten shard's checksums everywhere a dataset records them (so that only the
content checks can catch what it holds)."""

from __future__ import annotations

import hashlib
import io
import json
import tarfile
from pathlib import Path

import numpy as np

from factory.dataset.manifest import content_sha256


def sample_meta(index: int, objects: list | None = None, cells: int = 1) -> dict:
    """A small valid ``meta.json`` record (:class:`schemas.sample.SampleMeta`) of sample ``index``."""
    return {
        "index": index,
        "seed": 0,
        "seed_rule": "test",
        "config_sha256": "0" * 64,
        "grid": {"shape": [4, 4, 4], "voxel_nm": 60.0},
        "label_scheme": "simaq4",
        "phantom": {
            "shape": [4, 4, 4],
            "voxel_nm": 60.0,
            "energy_ev": 517.0,
            "cells_requested": cells,
            "cells_placed": cells,
            "objects_per_class": {"cell": cells},
            "voxels_per_label": {"background": 64},
        },
        "objects": objects or [],
        "acquisition": {},
        "reconstruction": {},
    }


def npy_bytes(arr: np.ndarray, allow_pickle: bool = False) -> bytes:
    """``arr`` as ``.npy`` bytes (``allow_pickle`` for object arrays: a pickle inside)."""
    buf = io.BytesIO()
    np.save(buf, arr, allow_pickle=allow_pickle)
    return buf.getvalue()


def tar_bytes(members: list, fmt: int = tarfile.PAX_FORMAT) -> bytes:
    """A tar of ``members``: ``(name or TarInfo, data)`` pairs or bare ``TarInfo`` (``data`` None:
    a header only, e.g. a link or a directory)."""
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w", format=fmt) as tar:
        for m in members:
            info, data = (m, None) if isinstance(m, tarfile.TarInfo) else m
            if isinstance(info, str):
                info = tarfile.TarInfo(info)
            if data is None:
                tar.addfile(info)
            else:
                info.size = len(data)
                tar.addfile(info, io.BytesIO(data))
    return buf.getvalue()


def record_checksums(ds: Path, url: str) -> dict:
    """Rewrite every checksum the dataset at ``ds`` records for shard ``url`` to match its bytes
    now: the shard's ``bytes``/``sha256``, its entry in the wids index ``wids.json`` (and in a
    legacy manifest ``shardlist``), ``content_sha256`` in the manifest and in the card. Returns the
    new manifest (its JSON)."""
    data = (ds / url).read_bytes()
    size, sha = len(data), hashlib.sha256(data).hexdigest()
    m = json.loads((ds / "manifest.json").read_text())
    old = m["content_sha256"]
    for rec in m["shards"]:
        if rec["url"] == url:
            rec["bytes"], rec["sha256"] = size, sha
    for rec in m.get("shardlist", []):
        if rec["url"] == url:
            rec["filesize"], rec["sha256"] = size, sha
    m["content_sha256"] = content_sha256(m["shards"])
    wids_path = ds / "wids.json"
    if wids_path.exists():
        wids = json.loads(wids_path.read_text())
        for rec in wids["shardlist"]:
            if rec["url"] == url:
                rec["filesize"], rec["sha256"] = size, sha
        wids_path.write_text(json.dumps(wids))
    (ds / "manifest.json").write_text(json.dumps(m))
    card = ds / "README.md"
    if card.exists():
        card.write_text(card.read_text().replace(old, m["content_sha256"]))
    return m
