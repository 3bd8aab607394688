"""Shards: the plan (which indices go where), sample encoding, and the shard builder.

Layout of a dataset root::

    manifest.json            written last, from the per-shard records
    index.parquet            one row per sample (schemas/index.py)
    README.md, preview.png   the dataset card
    shards/{split}-{NNNNNN}.tar
    _records/{shard}.json    per-shard commit records with one row per sample for the index
                             (removed once the manifest is written)
    _tmp/                    temporary names of files being written (removed at the end)

A shard is a plain POSIX ustar file written by ``webdataset.TarWriter`` with a fixed mtime, owner
and mode, members ``{key}.{field}.npy[.gz]`` and ``{key}.meta.json`` in sorted order, key = the
global sample index on 9 digits. gzip streams are written with mtime 0 and no file name, so the
bytes of a shard are a pure function of (config, seed, index range).
"""

from __future__ import annotations

import gzip
import hashlib
import io
import json
import math
import posixpath
from collections.abc import Callable
from dataclasses import asdict, dataclass
from typing import TYPE_CHECKING

import numpy as np

from factory.errors import UserError

if TYPE_CHECKING:
    from factory.dataset.storage import Store

SHARD_MTIME = 0
SHARD_OWNER = "simaq"
SHARD_MODE = 0o444
KEY_DIGITS = 9
SHARDS_DIR = "shards"
RECORDS_DIR = "_records"
PLAN_FILE = "_plan.json"


def sample_key(index: int) -> str:
    """The WebDataset key of sample ``index`` (9 digits, no dots)."""
    if not 0 <= index < 10**KEY_DIGITS:
        raise UserError(f"index: must be in [0, {10**KEY_DIGITS}), got {index}")
    return f"{index:0{KEY_DIGITS}d}"


@dataclass(frozen=True)
class ShardSpec:
    """One shard of the plan: ``nsamples`` consecutive indices from ``first_index``, one split."""

    url: str  # relative to the dataset root
    split: str
    first_index: int
    nsamples: int

    @property
    def name(self) -> str:
        return posixpath.basename(self.url)

    def to_json(self) -> dict:
        return asdict(self)


def split_counts(num_samples: int, splits: dict[str, float], order: list[str]) -> dict[str, int]:
    """Samples per split: floors of ``n·fraction``, the rest to the largest remainders."""
    raw = {s: num_samples * splits[s] for s in order}
    counts = {s: int(math.floor(raw[s] + 1e-9)) for s in order}
    left = num_samples - sum(counts.values())
    by_rem = sorted(order, key=lambda s: (-(raw[s] - counts[s]), order.index(s)))
    for s in by_rem[:left]:
        counts[s] += 1
    return counts


def plan_shards(dataset_cfg) -> tuple[list[ShardSpec], dict[str, int]]:
    """The shards of a dataset: contiguous index ranges per split, cut every ``shard_size``."""
    order = dataset_cfg.split_names()
    counts = split_counts(dataset_cfg.num_samples, dataset_cfg.splits, order)
    specs: list[ShardSpec] = []
    start = 0
    for split in order:
        n, k = counts[split], 0
        for first in range(start, start + n, dataset_cfg.shard_size):
            size = min(dataset_cfg.shard_size, start + n - first)
            specs.append(ShardSpec(f"{SHARDS_DIR}/{split}-{k:06d}.tar", split, first, size))
            k += 1
        start += n
    return specs, counts


# --- encoding ------------------------------------------------------------------------------------


def encode_array(arr: np.ndarray, dtype: str, *, gzip_level: int | None = None) -> bytes:
    """``arr`` cast to ``dtype`` as ``.npy`` bytes (gzip-compressed, mtime 0, if a level is given).

    Raises :class:`ValueError` if the cast turns finite values into infinities (float16 overflow).
    """
    arr = np.ascontiguousarray(arr)
    with np.errstate(over="ignore"):
        out = arr.astype(dtype, copy=False)
    if out.dtype.kind == "f" and arr.dtype.kind == "f" and out.dtype.itemsize < arr.dtype.itemsize:
        if np.isinf(out).any() and not np.isinf(arr).any():
            raise ValueError(f"values up to {np.abs(arr).max():g} overflow {dtype}")
    buf = io.BytesIO()
    np.lib.format.write_array(buf, out, allow_pickle=False)
    data = buf.getvalue()
    if gzip_level is not None:
        data = gzip.compress(data, compresslevel=gzip_level, mtime=0)
    return data


def canonical_json(obj) -> bytes:
    """Deterministic JSON bytes (sorted keys, no spaces; numpy scalars/arrays converted)."""

    def default(o):
        if isinstance(o, np.generic):
            return o.item()
        if isinstance(o, np.ndarray):
            return o.tolist()
        raise TypeError(f"meta: value of type {type(o).__name__} is not JSON-serialisable")

    return json.dumps(
        obj, sort_keys=True, separators=(",", ":"), default=default, allow_nan=True
    ).encode()


def encode_sample(sample, dataset_cfg, meta: dict | None = None) -> dict[str, bytes]:
    """The tar members of one sample: ``{"__key__": key, "recon.npy[.gz]": bytes, ...}``.

    ``meta``: the sample's record as JSON (``sample.meta.to_json()`` when not given).
    """
    level = dataset_cfg.compress_level if dataset_cfg.compression == "gzip" else None
    out: dict = {"__key__": sample_key(sample.index)}
    for field in dataset_cfg.fields:
        if field not in sample.fields:
            raise UserError(
                f"dataset.fields: field {field!r} is not produced by this config "
                f"(sample {sample.index} has {sorted(sample.fields)})"
            )
        try:
            out[dataset_cfg.member_name(field)] = encode_array(
                sample.fields[field], dataset_cfg.dtype_of(field), gzip_level=level
            )
        except ValueError as err:
            raise UserError(f"dataset.dtypes.{field}: {err} (sample {sample.index})") from None
    out["meta.json"] = canonical_json(sample.meta.to_json() if meta is None else meta)
    return out


# --- building shards -----------------------------------------------------------------------------


class _HashingSink:
    """A write-only stream forwarding to ``sink``; keeps the sha256 and size of what passed."""

    def __init__(self, sink):
        self.sink = sink
        self.sha = hashlib.sha256()
        self.size = 0

    def write(self, data) -> int:
        self.sha.update(data)
        self.sink.write(data)
        self.size += len(data)
        return len(data)

    def flush(self) -> None:
        pass


def _class_counts(labels: np.ndarray, num_classes: int) -> np.ndarray:
    return np.bincount(labels.ravel(), minlength=num_classes)[:num_classes].astype(np.int64)


def _shape_range(acc: dict, field: str, shape: tuple[int, ...], dtype: str) -> None:
    cur = acc.get(field)
    if cur is None:
        acc[field] = {"dtype": dtype, "shape_min": list(shape), "shape_max": list(shape)}
    else:
        cur["shape_min"] = [min(a, b) for a, b in zip(cur["shape_min"], shape, strict=False)]
        cur["shape_max"] = [max(a, b) for a, b in zip(cur["shape_max"], shape, strict=False)]


class ShardBuilder:
    """Simulates and writes whole shards; one per Ray actor, or one in the local loop.

    Built once per worker: the config is parsed, torch's thread count pinned, the file system
    opened; the stages' own operator caches (projectors, FFT plans) live as long as the worker.
    """

    def __init__(
        self,
        config_json: dict,
        seed: int,
        out: str | Store,
        *,
        device: str = "cpu",
    ):
        import torch

        from factory.config import parse_config
        from factory.dataset.storage import as_store

        self.config = parse_config(config_json)
        self.seed = int(seed)
        self.device = device
        self.out = as_store(out)
        torch.set_num_threads(self.config.dataset.torch_threads)
        from schemas import label_scheme

        self.scheme = label_scheme(self.config.labels.scheme)

    def simulate(self, index: int):
        """One sample, by the stage code resolved at call time (``factory.sample``)."""
        import factory.sample

        return factory.sample.simulate_sample(self.config, self.seed, index, device=self.device)

    def _write_sample(self, writer, spec: ShardSpec, i: int, shapes: dict, counts: np.ndarray):
        """Simulate sample ``i``, write it to ``writer``; add its field shapes to ``shapes`` and
        its class voxels to ``counts``; return its :class:`~schemas.sample.IndexRow`."""
        from schemas.index import flatten_params
        from schemas.sample import IndexRow

        dcfg = self.config.dataset
        sample = self.simulate(i)
        meta = sample.meta.to_json()
        writer.write(encode_sample(sample, dcfg, meta))
        for field in dcfg.fields:
            _shape_range(shapes, field, sample.fields[field].shape, dcfg.dtype_of(field))
        lab = sample.fields.get("labels")
        n = self.scheme.num_classes
        c = _class_counts(lab, n) if lab is not None else np.zeros(n, np.int64)
        counts += c
        sino = sample.fields.get("sinogram")
        return IndexRow(
            key=sample_key(i),
            index=i,
            split=spec.split,
            shard=spec.url,
            n_angles=int(sino.shape[0]) if sino is not None else None,
            class_voxels=c.tolist(),
            params=flatten_params(meta),
        )

    def build(self, spec: ShardSpec, progress: Callable[[str, int], None] | None = None) -> dict:
        """Write shard ``spec`` (temp name, then commit) and its record; return the slim record.

        The record file holds one row per sample (for ``index.parquet``); the returned record
        leaves the rows out, so the driver's memory does not grow with the sample count.
        """
        import webdataset as wds

        from schemas.index import param_types

        out = self.out
        tmp = out.tmp_path(spec.url)
        rows, shapes = [], {}
        counts = np.zeros(self.scheme.num_classes, np.int64)
        committed = False
        try:
            with out.fs.open_output_stream(out.join(tmp), buffer_size=1 << 20) as raw:
                sink = _HashingSink(raw)
                writer = wds.TarWriter(
                    sink,
                    user=SHARD_OWNER,
                    group=SHARD_OWNER,
                    mode=SHARD_MODE,
                    encoder=False,
                    mtime=SHARD_MTIME,
                )
                try:
                    for i in range(spec.first_index, spec.first_index + spec.nsamples):
                        rows.append(self._write_sample(writer, spec, i, shapes, counts))
                        if progress is not None:
                            progress(spec.name, i - spec.first_index + 1)
                finally:
                    writer.close()  # also on failure: the temporary file is deleted below
            out.commit(tmp, spec.url)
            committed = True
        finally:
            if not committed:
                out.delete(tmp)
        record = {
            **spec.to_json(),
            "bytes": sink.size,
            "sha256": sink.sha.hexdigest(),
            "fields": shapes,
            "class_voxels": counts.tolist(),
            "param_types": param_types(r.model_dump() for r in rows),
            "rows": [r.model_dump(mode="json") for r in rows],
        }
        out.write_bytes_atomic(record_path(spec), canonical_json(record))
        return slim_record(record)


def record_path(spec) -> str:
    """Where the commit record of a shard (a :class:`ShardSpec`, a manifest shard record or a
    record dict with its ``url``) is kept, relative to the dataset root."""
    url = spec["url"] if isinstance(spec, dict) else spec.url
    return posixpath.join(RECORDS_DIR, posixpath.basename(url).removesuffix(".tar") + ".json")


def slim_record(record: dict) -> dict:
    """``record`` without its per-sample rows (what the driver keeps in memory)."""
    return {k: v for k, v in record.items() if k != "rows"}
