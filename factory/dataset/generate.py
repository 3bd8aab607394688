"""Generate a dataset: plan, refuse to overwrite, build the shards, then commit the manifest.

Order of writes (a reader looks at ``manifest.json`` only, so nothing is visible until the end):

1. ``_records/_plan.json``: config sha256, seed and the shard plan (what ``--resume`` must match).
2. Each shard: ``_tmp/...part`` → ``shards/{split}-{NNNNNN}.tar``, then ``_records/{shard}.json``.
3. ``index.parquet`` (streamed from the shard records, a row group at a time, so the driver's
   memory does not grow with the sample count), ``README.md``, ``preview.png``, ``wids.json``
   (the WebDataset/wids shard index, derived from the manifest's shard records);
   ``manifest.json`` **last** (:class:`schemas.dataset.Manifest`, dumped as JSON); then
   ``_records/`` and ``_tmp/`` are removed.

While the shards are built the driver folds each shard's record into :class:`ShardTotals` as it
arrives and keeps of it only the shard's manifest entry (url, split, first index, sample count,
bytes, sha256), so its memory grows by that entry per shard and by nothing per sample.

Before step 1 the destination is checked (refuse to overwrite; writable) and, for the Ray executor,
the cluster is connected and the worker pool sized, so bad input is refused with nothing written.

``content_sha256`` hashes the shard checksums only, so it does not depend on the time, the
executor, the worker count or on interruptions (``--resume``).
"""

from __future__ import annotations

import json
import posixpath
import subprocess
import sys
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path

import numpy as np
import pyarrow.fs as pafs

from factory.dataset import storage
from factory.dataset.executor import ShardFailed
from factory.dataset.manifest import DatasetError, iter_samples, read_manifest
from factory.dataset.shards import (
    PLAN_FILE,
    RECORDS_DIR,
    ShardSpec,
    canonical_json,
    plan_shards,
    record_path,
    slim_record,
)
from factory.dataset.storage import TMP_DIR, Store, as_store
from factory.errors import UserError
from schemas.dataset import (
    FORMAT_VERSION,
    MANIFEST_NAME,
    WIDS_NAME,
    FieldSpec,
    Manifest,
    ShardRecord,
    content_sha256,
)
from schemas.index import param_types
from schemas.sample import IndexRow

INDEX_NAME = "index.parquet"
INDEX_ROW_GROUP = 65536  # rows per Parquet row group: the index is written this many at a time
INDEX_MERGE = 4096  # rows: the small per-shard Arrow tables are merged this many at a time
CARD_NAME = "README.md"
PREVIEW_NAME = "preview.png"

FIELD_UNITS = {
    "phantom": "linear attenuation coefficient, 1/µm",
    "labels": "class id of `labels` (uint8)",
    "sinogram": "flat-field-corrected −log intensity ∫µ·dl (dimensionless), see config.acquisition",
    "recon": "reconstruction (normalised as config.reconstruction says)",
    "noisy": "LAC with volume-level artifacts, 1/µm",
}
FIELD_AXES = {"sinogram": "angle, Y, detector"}


def code_info() -> dict:
    """Package version, git sha and dirty flag of the source tree, key dependency versions."""
    from importlib.metadata import PackageNotFoundError, version

    def ver(name: str) -> str | None:
        try:
            return version(name)
        except PackageNotFoundError:
            return None

    info = {
        "package": ver("simaq-factory"),
        "git_sha": None,
        "dirty": None,
        "python": sys.version.split()[0],
        "torch": ver("torch"),
        "ray": ver("ray"),
        "numpy": ver("numpy"),
        "webdataset": ver("webdataset"),
        "pyarrow": ver("pyarrow"),
    }
    src = Path(__file__).resolve().parents[2]
    try:
        sha = subprocess.run(
            ["git", "-C", str(src), "rev-parse", "HEAD"], capture_output=True, text=True, timeout=10
        )
        if sha.returncode == 0:
            info["git_sha"] = sha.stdout.strip()
            st = subprocess.run(
                ["git", "-C", str(src), "status", "--porcelain", "--untracked-files=no"],
                capture_output=True,
                text=True,
                timeout=30,
            )
            info["dirty"] = bool(st.stdout.strip()) if st.returncode == 0 else None
    except (OSError, subprocess.SubprocessError):
        pass
    return info


def _plan_doc(config, seed: int, specs: list[ShardSpec]) -> dict:
    return {
        "format_version": FORMAT_VERSION,
        "config_sha256": config.sha256,
        "seed": int(seed),
        "num_samples": config.dataset.num_samples,
        "shards": [s.to_json() for s in specs],
    }


PLAN_PATH = posixpath.join(RECORDS_DIR, PLAN_FILE)


def _check_destination(out: Store, plan: dict, resume: bool) -> Manifest | None:
    """Refuse to overwrite; return an existing complete manifest that ``--resume`` may reuse."""
    shown = storage.safe_url(out)
    if out.info().type == pafs.FileType.File:
        raise UserError(f"{shown!r} is a file, not a directory", param="out")
    if out.is_file(MANIFEST_NAME):
        try:
            m = read_manifest(out)
        except DatasetError as err:
            raise UserError(
                f"{shown!r} holds an invalid dataset ({err}); refusing", param="out"
            ) from None
        same = m.config_sha256 == plan["config_sha256"] and m.seed == plan["seed"]
        if resume and same:
            return m
        why = " with another config or seed" if resume else ""
        raise UserError(
            f"a dataset already exists at {shown!r}{why}; refusing to overwrite it", param="out"
        )
    if out.is_file(PLAN_PATH):
        if not resume:
            raise UserError(
                f"an unfinished dataset exists at {shown!r}; pass `resume` to finish it",
                param="out",
            )
        old = json.loads(out.read_bytes(PLAN_PATH))
        if old != plan:
            diff = [
                k
                for k in ("format_version", "config_sha256", "seed", "num_samples")
                if old.get(k) != plan.get(k)
            ]
            raise UserError(
                f"the unfinished dataset at {shown!r} was started with another "
                f"{', '.join(diff) or 'shard plan'}; refusing to mix them",
                param="resume",
            )
        return None
    others = [e for e in out.list() if posixpath.basename(e.path) != TMP_DIR]
    if others:
        raise UserError(
            f"{shown!r} exists and is not empty (no dataset there); refusing to use it", param="out"
        )
    return None


def _done_records(out: Store, specs: list[ShardSpec]):
    """Records of shards already committed (record present and the shard file has its size).

    Yields the slim records one at a time (the caller folds them into :class:`ShardTotals`)."""
    by_name = {posixpath.basename(s.url).removesuffix(".tar") + ".json": s for s in specs}
    for entry in out.list(RECORDS_DIR):
        spec = by_name.get(posixpath.basename(entry.path))
        if spec is None or entry.type != pafs.FileType.File:
            continue
        try:
            rec = json.loads(out.read_bytes(record_path(spec)))
        except (OSError, ValueError):
            continue
        if any(rec.get(k) != v for k, v in spec.to_json().items()):
            continue
        shard = out.info(spec.url)
        if shard.type == pafs.FileType.File and shard.size == rec.get("bytes"):
            if "param_types" not in rec:
                rec["param_types"] = param_types(rec.get("rows", []))
            yield slim_record(rec)


def _committed_any(out: Store) -> bool:
    return any(posixpath.basename(e.path) != PLAN_FILE for e in out.list(RECORDS_DIR))


def _remove_run(out: Store) -> None:
    """Remove what a run wrote before its first commit (plan, temporaries, empty folders)."""
    for sub in (RECORDS_DIR, TMP_DIR, "shards"):
        out.delete(sub)
    if out.is_local and not out.list():
        out.delete()


SHARD_KEYS = ("url", "split", "first_index", "nsamples", "bytes", "sha256")  # a manifest shard


class ShardTotals:
    """What :func:`finalize` needs from the shard records, folded in as each record arrives.

    Per shard only its manifest entry is kept (the values of :data:`SHARD_KEYS` as a tuple, ~350 B
    in memory, ~180 B of JSON: the manifest lists them anyway); the rest of a record (field shapes,
    class voxels, parameter column types: ~3.5 KB of JSON for ``demo``) is merged at once into
    accumulators whose size depends on the fields, classes and parameter columns, not on the
    sample count. The per-sample index rows stay in the record files on storage until
    :func:`write_index` streams them.
    """

    def __init__(self, records=()):
        self._shards: list[tuple] = []  # SHARD_KEYS values, in arrival order
        self.fields: dict[str, dict] = {}  # name -> dtype (of the lowest first_index), shape range
        self.voxels: np.ndarray | None = None  # class voxel counts, summed
        self.param_types: dict[str, set[str]] = {}  # column -> the shards' type names
        for rec in records:
            self.add(rec)

    def add(self, rec: dict) -> None:
        """Fold one (slim) shard record in."""
        first = rec["first_index"]
        entry = tuple(rec[k] for k in SHARD_KEYS)
        self._shards.append(entry[:1] + (sys.intern(entry[1]),) + entry[2:])  # one split string
        for name, info in rec.get("fields", {}).items():
            cur = self.fields.get(name)
            if cur is None:
                self.fields[name] = {
                    "first_index": first,
                    "dtype": info["dtype"],
                    "shape_min": list(info["shape_min"]),
                    "shape_max": list(info["shape_max"]),
                }
                continue
            if first < cur["first_index"]:  # the manifest names the first shard's dtype
                cur["first_index"], cur["dtype"] = first, info["dtype"]
            cur["shape_min"] = [
                min(a, b) for a, b in zip(cur["shape_min"], info["shape_min"], strict=True)
            ]
            cur["shape_max"] = [
                max(a, b) for a, b in zip(cur["shape_max"], info["shape_max"], strict=True)
            ]
        voxels = np.asarray(rec["class_voxels"], dtype=np.int64)
        self.voxels = voxels if self.voxels is None else self.voxels + voxels
        for k, t in rec["param_types"].items():
            self.param_types.setdefault(k, set()).add(t)

    def __len__(self) -> int:
        """Shards folded in."""
        return len(self._shards)

    def urls(self) -> set[str]:
        return {e[0] for e in self._shards}

    def num_samples(self) -> int:
        return sum(e[3] for e in self._shards)

    def shards(self) -> list[ShardRecord]:
        """The manifest's shard records, sorted by ``first_index``."""
        return [
            ShardRecord(**dict(zip(SHARD_KEYS, e, strict=True)))
            for e in sorted(self._shards, key=_first)
        ]

    def types(self) -> dict[str, str]:
        """``{column: type}`` of the index's parameter columns, merged over every shard."""
        from schemas.index import merge_types

        return {k: merge_types(self.param_types[k]) for k in sorted(self.param_types)}


def _first(entry: tuple) -> int:
    return entry[2]  # first_index


def _merge_fields(config, totals: ShardTotals) -> dict[str, FieldSpec]:
    dcfg = config.dataset
    out = {}
    for name in dcfg.fields:
        info = totals.fields.get(name)
        if info is None:
            continue
        smin, smax = info["shape_min"], info["shape_max"]
        out[name] = FieldSpec(
            member=dcfg.member_name(name),
            encoding="npy+gzip" if dcfg.compression == "gzip" else "npy",
            dtype=info["dtype"],
            shape=[a if a == b else None for a, b in zip(smin, smax, strict=False)],
            shape_min=list(smin),
            shape_max=list(smax),
            axes=FIELD_AXES.get(name, "Z, Y, X"),
            units=FIELD_UNITS[name],
        )
    out["meta"] = FieldSpec(
        member="meta.json", encoding="json", units="seed, drawn parameters, objects"
    )
    return out


def _rows_table(rows: list[IndexRow], class_names: list[str], types: dict[str, str]):
    """Rows of the index as a ``pyarrow.Table`` (schema: :mod:`schemas.index`, params ``types``)."""
    import pyarrow as pa

    from schemas.index import FRACTION_PREFIX, arrow_schema, coerce, fixed_fields

    columns = fixed_fields(class_names) + list(types.items())
    data: dict[str, list] = {name: [] for name, _ in columns}
    for row in rows:
        total = max(sum(row.class_voxels), 1)
        for key in ("key", "index", "split", "shard", "n_angles"):
            data[key].append(getattr(row, key))
        for i, name in enumerate(class_names):
            data[f"{FRACTION_PREFIX}{name}"].append(row.class_voxels[i] / total)
        for k, t in types.items():
            data[k].append(coerce(row.params.get(k), t))
    return pa.Table.from_pydict(data, schema=arrow_schema(columns))


def write_index(
    out: Store, shards: list[ShardRecord], class_names: list[str], types: dict[str, str]
) -> dict:
    """Write ``index.parquet`` from the shards' record files; return the parameter ranges.

    Streams: ``shards`` (manifest entries sorted by ``first_index``; only their ``url`` is read)
    are read one record file at a time and turned into Arrow columns at once (≈ 1.3 KB per
    ``demo`` sample, against ≈ 10 KB as Python dicts), merged every :data:`INDEX_MERGE` rows (a
    table per shard costs Arrow's allocator several times its size); a row group of at least
    :data:`INDEX_ROW_GROUP` samples (whole shards) is written as soon as it is complete, so at most
    one row group's columns are in memory, whatever the dataset size. ``types`` are the parameter
    columns' types merged over the whole dataset (:meth:`ShardTotals.types`).
    """
    import pyarrow as pa
    import pyarrow.parquet as pq

    schema = _rows_table([], class_names, types).schema
    tmp = out.tmp_path(INDEX_NAME)
    ranges: dict[str, tuple[float, float]] = {}

    def flush(writer, parts: list) -> None:
        if parts:
            table = pa.concat_tables(parts).combine_chunks()
        else:
            table = _rows_table([], class_names, types)
        writer.write_table(table, row_group_size=max(table.num_rows, 1))
        merge_ranges(ranges, _param_ranges(table))

    try:
        with out.fs.open_output_stream(out.join(tmp)) as fh:
            with pq.ParquetWriter(fh, schema, compression="zstd") as writer:
                parts: list = []  # merged tables of the row group being gathered
                fresh: list = []  # one table per shard, not merged yet
                n = n_fresh = 0
                for shard in shards:
                    raw = json.loads(out.read_bytes(record_path(shard)))["rows"]
                    rows = [IndexRow.model_validate(r) for r in raw]
                    fresh.append(_rows_table(rows, class_names, types))
                    n += len(rows)
                    n_fresh += len(rows)
                    del rows
                    if n >= INDEX_ROW_GROUP:
                        flush(writer, parts + fresh)
                        parts, fresh, n, n_fresh = [], [], 0, 0
                    elif n_fresh >= INDEX_MERGE:
                        parts.append(pa.concat_tables(fresh).combine_chunks())
                        fresh, n_fresh = [], 0
                if parts or fresh or not shards:
                    flush(writer, parts + fresh)
        out.commit(tmp, INDEX_NAME)
    except BaseException:
        out.delete(tmp)
        raise
    return ranges


def merge_ranges(acc: dict, new: dict) -> dict:
    """Merge ``{column: (min, max)}`` ranges ``new`` into ``acc`` (in place; returned)."""
    for k, (lo, hi) in new.items():
        old = acc.get(k)
        acc[k] = (lo, hi) if old is None else (min(old[0], lo), max(old[1], hi))
    return acc


def _param_ranges(table) -> dict[str, tuple[float, float]]:
    import pyarrow as pa
    import pyarrow.compute as pc

    out = {}
    for name in table.column_names:
        col = table[name]
        if name in ("index", "n_angles") or name.startswith("frac."):
            if name != "n_angles":
                continue
        if pa.types.is_integer(col.type) or pa.types.is_floating(col.type):
            mm = pc.min_max(col).as_py()
            if mm["min"] is not None:
                out[name] = (float(mm["min"]), float(mm["max"]))
    return out


def finalize(
    config,
    seed: int,
    out: str | Store,
    records: ShardTotals | list[dict],
    *,
    command: str = "",
) -> Manifest:
    """Write index, card, preview, ``wids.json`` and (last) the manifest from all shard records;
    clean up.

    ``records``: the :class:`ShardTotals` the records were folded into as they arrived (or the
    slim records themselves); the per-sample rows are read back from ``_records/``.
    """
    from factory.dataset.card import dataset_card
    from schemas import label_scheme

    totals = records if isinstance(records, ShardTotals) else ShardTotals(records)
    out = as_store(out)
    scheme = label_scheme(config.labels.scheme)
    manifest = _manifest_doc(config, seed, totals, scheme)
    shards = manifest.shards
    ranges = write_index(out, shards, list(scheme.names), totals.types())
    if shards:
        _write_preview(config, out, manifest, list(scheme.names))
    card = dataset_card(manifest, manifest.class_fractions, ranges, command)
    out.write_bytes_atomic(CARD_NAME, card.encode())
    wids = json.dumps(manifest.wids_index().dump(), indent=1)
    out.write_bytes_atomic(WIDS_NAME, wids.encode())
    out.write_bytes_atomic(MANIFEST_NAME, json.dumps(manifest.dump(), indent=1).encode())
    out.delete(RECORDS_DIR)
    out.delete(TMP_DIR)
    return manifest


def _manifest_doc(config, seed: int, totals: ShardTotals, scheme) -> Manifest:
    """The manifest of a finished run (validated as every reader validates it)."""
    from factory.rng import SEED_RULE

    shards = totals.shards()
    splits = {s: 0 for s in config.dataset.split_names()}
    for s in shards:
        splits[s.split] += s.nsamples
    voxels = totals.voxels if totals.voxels is not None else np.zeros(1)
    fractions = {
        name: float(voxels[i] / max(voxels.sum(), 1)) for i, name in enumerate(scheme.names)
    }
    return Manifest(
        format_version=FORMAT_VERSION,
        name=config.name,
        version=config.dataset.version,
        created=datetime.now(timezone.utc).isoformat(timespec="seconds"),
        code=code_info(),
        config=config.to_json(),
        config_sha256=config.sha256,
        seed=int(seed),
        seed_rule=SEED_RULE,
        labels=scheme.to_json(),
        fields=_merge_fields(config, totals),
        splits=splits,
        shards=shards,
        num_samples=sum(s.nsamples for s in shards),
        content_sha256=content_sha256(shards),
        class_fractions=fractions,
        index=INDEX_NAME,
        card=CARD_NAME,
    )


def _write_preview(config, out: Store, manifest: Manifest, names: list[str]) -> None:
    """``preview.png``: the first sample of the first shard, labels overlaid."""
    from factory.dataset.card import preview_png

    first = manifest.shards[0]
    sample = next(iter_samples(out, first, fields=manifest.fields))
    title = f"{config.name} {config.dataset.version}: sample {sample['__key__']}"
    png = preview_png(sample, names, title)
    out.write_bytes_atomic(PREVIEW_NAME, png)


def generate_dataset(
    config,
    out: str | Store,
    *,
    seed: int = 0,
    executor: str = "ray",
    workers: int | None = None,
    gpus_per_worker: float | None = None,
    address: str | None = None,
    resume: bool = False,
    progress: bool = False,
    command: str = "",
    log=None,
    verbose: bool = False,
) -> Manifest:
    """Generate the dataset of (``config``, ``seed``) at ``out`` (local path or ``s3://``).

    Plan the shards and check the destination, start (or join) Ray and size the pool, build the
    shards not yet committed, finalize. Returns the manifest. Bad input (destination, Ray address,
    pool shape) raises :class:`UserError` before anything is written; a failure before the first
    shard is committed removes what the run wrote; a later one leaves committed shards for
    ``--resume``.
    """
    _check_run_args(executor, seed, workers)
    out = as_store(out)
    say = log or (lambda msg: None)
    dest = _Destination.open(config, seed, out, resume)
    if dest.existing is not None:
        say(f"dataset at {storage.safe_url(out)} is already complete; nothing to do")
        dest.clean_leftovers()  # a run killed between the manifest and its cleanup left them
        return dest.existing
    started = False
    totals = ShardTotals()  # folded in as each record arrives: flat in the sample count
    bar = None
    try:
        if executor == "ray":
            started = _start_pool(config, address, verbose, workers, gpus_per_worker)
        todo = dest.start(totals)
        if len(todo) < len(dest.specs):
            say(
                f"resuming: {len(dest.specs) - len(todo)} of {len(dest.specs)} shards already committed"
            )
        bar = _ProgressBar(config.dataset.num_samples, totals.num_samples(), progress, say)
        try:
            _build(config, seed, out, todo, executor, workers, gpus_per_worker, bar, totals)
        except (ShardFailed, UserError, OSError) as err:
            dest.fail(totals, err)
    finally:
        if bar is not None:
            bar.close()
        if started:
            import ray

            ray.shutdown()
    try:
        return finalize(config, seed, out, totals, command=command)
    except OSError as err:
        raise UserError(_interrupted(out, err)) from None


def _check_run_args(executor: str, seed, workers: int | None) -> None:
    if executor not in ("ray", "local"):
        raise UserError(f"must be ray or local, got {executor!r}", param="executor")
    if not isinstance(seed, int) or seed < 0:
        raise UserError(f"must be a non-negative integer, got {seed!r}", param="seed")
    if workers is not None and workers < 1:
        raise UserError(f"must be >= 1, got {workers}", param="workers")


def _start_pool(config, address, verbose, workers, gpus_per_worker) -> bool:
    """Start or join Ray and check the pool fits, before the first write; True if started."""
    import ray

    from factory.cluster import start_ray
    from factory.dataset.executor import ray_pool_shape, sample_memory_bytes

    started = start_ray(address, verbose=verbose)
    try:
        ray_pool_shape(ray.cluster_resources(), config.dataset.torch_threads, workers,
                       gpus_per_worker, sample_memory_bytes(config))  # fmt: skip
    except BaseException:
        if started:
            ray.shutdown()
        raise
    return started


@dataclass
class _Destination:
    """Where a run writes: its store, the planned shards, and what a failure leaves there."""

    out: Store
    specs: list
    plan: dict
    fresh: bool
    existing: Manifest | None = None

    @classmethod
    def open(cls, config, seed: int, out: Store, resume: bool) -> _Destination:
        specs, _ = plan_shards(config.dataset)
        plan = _plan_doc(config, seed, specs)
        try:
            existing = _check_destination(out, plan, resume)
            if existing is not None:
                return cls(out, specs, plan, False, existing)
            out.check_writable()  # leaves nothing behind
            fresh = not out.is_file(PLAN_PATH)
        except OSError as err:
            raise UserError(f"cannot use {storage.safe_url(out)!r} ({err})", param="out") from None
        return cls(out, specs, plan, fresh)

    def clean_leftovers(self) -> None:
        self.out.delete(RECORDS_DIR)
        self.out.delete(TMP_DIR)

    def start(self, totals: ShardTotals) -> list:
        """Write the plan (a new run) or fold in the committed shards (a resumed one); the
        specs still to build."""
        try:
            if self.fresh:
                self.out.write_bytes_atomic(PLAN_PATH, canonical_json(self.plan))
            for rec in _done_records(self.out, self.specs):
                totals.add(rec)
        except OSError as err:
            raise UserError(
                f"cannot use {storage.safe_url(self.out)!r} ({err})", param="out"
            ) from None
        done = totals.urls()
        return [s for s in self.specs if s.url not in done]

    def fail(self, totals: ShardTotals, err: BaseException) -> None:
        """Raise ``err`` as the user should see it; with nothing committed, leave nothing."""
        try:
            if len(totals) == 0 and not _committed_any(self.out):
                _remove_run(self.out)  # bad input found by the first sample
        except OSError:
            pass  # the store is unreachable: --resume sorts out what is there
        if isinstance(err, ShardFailed) and err.user_error is not None:
            user = err.user_error  # its message's last line: the error itself, not a traceback
            text = getattr(user, "message", None) or str(user)
            raise UserError(
                text.strip().splitlines()[-1], param=getattr(user, "param", None)
            ) from None
        if isinstance(err, ShardFailed | OSError):  # store lost, worker lost, stage crashed
            raise UserError(_interrupted(self.out, err)) from None
        raise err


class _ProgressBar:
    """The run's progress: a tqdm bar (samples, rate, ETA) when asked for, fed by the executors'
    per-shard counts; messages go above it."""

    def __init__(self, total: int, initial: int, show: bool, say):
        self.say, self.bar, self.counts = say, None, {}
        if show:
            from tqdm import tqdm

            self.bar = tqdm(total=total, initial=initial, unit="sample", desc="generate",
                            dynamic_ncols=True, smoothing=0.1)  # fmt: skip

    def on_progress(self, name: str, n: int) -> None:
        delta = n - self.counts.get(name, 0)
        if delta > 0:
            self.counts[name] = n
            if self.bar is not None:
                self.bar.update(delta)

    def done(self, url: str) -> None:
        self.counts.pop(posixpath.basename(url), None)  # the executor reports it no more

    def on_start(self, n: int, cpus: float, gpus: float) -> None:
        msg = f"ray: {n} worker(s), {cpus:g} CPU and {gpus:g} GPU each"
        if self.bar is not None:  # above the bar, not onto its line
            self.bar.write(msg, file=sys.stderr)
        else:
            self.say(msg)

    def close(self) -> None:
        if self.bar is not None:
            self.bar.close()


def _build(config, seed, out: Store, todo, executor, workers, gpus_per_worker,
           bar: _ProgressBar, totals: ShardTotals) -> None:  # fmt: skip
    """Build the shards ``todo`` with the chosen executor, folding each record into ``totals``."""
    from factory.dataset.executor import run_local, run_ray

    def on_record(rec: dict) -> None:
        totals.add(rec)
        bar.done(rec["url"])

    common = {"on_progress": bar.on_progress, "on_record": on_record}
    if executor == "local":
        run_local(config, seed, out, todo, **common)
    else:
        run_ray(config, seed, out, todo, workers=workers, gpus_per_worker=gpus_per_worker,
                on_start=bar.on_start, **common)  # fmt: skip


def _interrupted(out: Store, err: BaseException) -> str:
    """One line for a run stopped by an I/O or worker failure (committed shards are kept)."""
    lines = str(err).strip().splitlines()
    reason = (lines[0] if lines else type(err).__name__)[:300]
    return (
        f"`out`: writing to {storage.safe_url(out)!r} failed ({reason}); the shards committed so "
        "far are kept: run again with `resume` to finish"
    )
