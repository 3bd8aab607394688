"""Working with finished datasets: verify, inspect, preview and publish.

``verify`` reads every shard once: size and sha256 against the manifest (a mismatch is a problem
listed, exit 1), and every member checked as the readers check it (names, keys, ``.npy`` headers
against the manifest's fields, payload sizes); a shard whose checksums match but whose content is
refused raises :class:`DatasetError` (exit 2): the manifest's author wrote it that way. The
derived ``wids.json`` (if there is one) must list exactly the manifest's shards (else a problem).

``publish`` copies a dataset to ``URL/{name}/{version}/`` (TFDS-like layout, so versions live side
by side): shards first (each hashed and checked as ``verify`` does while copied; refused before it
is committed), then the index, the card, the preview and ``wids.json``; then it re-reads every copied shard from the
destination and verifies it; the manifest is written **last**, byte for byte the source's. Local
shards, index and card that are symbolic links are refused, never followed. A destination that
already holds a manifest for that version is refused; a destination left without a manifest by an
interrupted publish is completed by running it again.
"""

from __future__ import annotations

import hashlib
import io

import pyarrow.fs as pafs

from factory.dataset.manifest import (
    MANIFEST_NAME,
    DatasetError,
    check_no_links,
    dataset_store,
    iter_samples,
    read_manifest,
    scan_shard,
    scan_stream,
    wids_problem,
)
from factory.dataset.storage import TMP_DIR, Store, as_store, safe_url
from factory.errors import UserError
from schemas.dataset import WIDS_NAME, FieldSpec, Manifest, ShardRecord

EXTRA_FILES = ("index.parquet", "README.md", "preview.png", WIDS_NAME)


def verify_dataset(dataset: str | Store, *, progress: bool = False) -> list[str]:
    """Problems found (empty if the dataset is intact): each shard missing, unreadable, or whose
    size or sha256 differs from the manifest's; a ``wids.json`` that disagrees with it. Raises :class:`DatasetError` for a shard whose
    checksums match but whose content is refused (see the module docstring)."""
    root = dataset_store(dataset)
    return verify_dataset_at(root, read_manifest(root), progress=progress)


def _index_file(dataset: str | Store):
    """The dataset's ``index.parquet`` as a ``pyarrow.parquet.ParquetFile`` (None if absent)."""
    import pyarrow.parquet as pq

    root = dataset_store(dataset)
    check_no_links(root.fs, root.path, "index.parquet", "index.parquet")
    if not root.is_file("index.parquet"):
        return None
    return pq.ParquetFile(io.BytesIO(root.read_bytes("index.parquet")))


def inspect_dataset(dataset: str | Store) -> dict:
    """A summary: version, counts, sizes, class fractions and drawn parameter ranges.

    The index is scanned one row group at a time (memory does not grow with the sample count).
    """
    from factory.dataset.generate import _param_ranges, merge_ranges

    root = dataset_store(dataset)
    m = read_manifest(root)
    total = m.total_bytes
    pf = _index_file(root)
    ranges: dict = {}
    if pf is not None:
        rows = pf.metadata.num_rows
        if rows != m.num_samples:
            raise DatasetError(
                f"index.parquet: {rows} rows, the manifest has {m.num_samples} samples"
            )
        for i in range(pf.num_row_groups):
            merge_ranges(ranges, _param_ranges(pf.read_row_group(i)))
        ranges = {k: list(v) for k, v in ranges.items()}
    return {
        "name": m.name,
        "version": m.version,
        "created": m.created,
        "content_sha256": m.content_sha256,
        "config_sha256": m.config_sha256,
        "seed": m.seed,
        "code": m.code,
        "num_samples": m.num_samples,
        "splits": m.splits,
        "num_shards": len(m.shards),
        "bytes": total,
        "bytes_per_sample": total / max(m.num_samples, 1),
        "grid": m.config["grid"],
        "label_scheme": m.labels["scheme"],
        "fields": {
            k: v.model_dump(
                mode="json", include={"member", "dtype", "shape", "units"}, exclude_none=True
            )
            for k, v in m.fields.items()
        },  # fmt: skip
        "class_fractions": m.class_fractions,
        "param_ranges": ranges,
    }


def find_sample(dataset: str | Store, index: int) -> dict:
    """The decoded sample with global index ``index`` (verified shard)."""
    root = dataset_store(dataset)
    m = read_manifest(root)
    for rec in m.shards:
        if rec.first_index <= index < rec.end_index:
            key = f"{index:09d}"
            for s in iter_samples(root, rec, fields=m.fields):
                if s["__key__"] == key:
                    return s
    known = ", ".join(f"{s.first_index}..{s.end_index - 1}" for s in m.shards)
    raise UserError(f"no sample {index} in this dataset (indices {known})", param="index")


def preview_dataset(dataset: str | Store, index: int, out: str) -> str:
    """Write the preview PNG of sample ``index`` to the local file ``out``."""
    from pathlib import Path

    from factory.dataset.card import preview_png

    root = dataset_store(dataset)
    m = read_manifest(root)
    sample = find_sample(root, index)
    names = [c["name"] for c in m.labels["classes"]]
    png = preview_png(sample, names, f"{m.name} {m.version}: sample {sample['__key__']}")
    path = Path(out)
    if path.suffix.lower() != ".png":
        raise UserError(f"expected a .png file name, got {out!r}", param="out")
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_name(f".{path.name}.part")
        tmp.write_bytes(png)
        tmp.replace(path)
    except OSError as err:
        raise UserError(f"cannot write {out!r} ({err.strerror or err})", param="out") from None
    return str(path)


class _Tee:
    """A readable that writes everything read from ``src`` to ``dst``."""

    def __init__(self, src, dst):
        self.src, self.dst = src, dst

    def read(self, n: int = -1) -> bytes:
        data = self.src.read(n) if n is not None and n >= 0 else self.src.read()
        self.dst.write(data)
        return data


def _copy(
    src: Store,
    name: str,
    dest: Store,
    dname: str,
    *,
    shard: ShardRecord | None = None,
    fields: dict[str, FieldSpec] | None = None,
) -> tuple[int, str, str, DatasetError | None]:
    """Copy the file ``name`` of ``src`` to a temporary name in ``dest`` for ``dname``; return
    ``(bytes, sha256, temporary name, refusal)``.

    With ``shard`` (its manifest record) the file is checked as ``verify`` checks it while it is
    copied (:func:`~factory.dataset.manifest.scan_stream`); ``refusal`` is what it found, or None.
    """
    tmp = dest.tmp_path(dname)
    refused = None
    try:
        with (
            src.fs.open_input_stream(src.join(name)) as fsrc,
            dest.fs.open_output_stream(dest.join(tmp)) as fdst,
        ):
            tee = _Tee(fsrc, fdst)
            if shard is not None:
                size, digest, refused = scan_stream(tee, shard.url, shard, fields)
            else:
                sha, size = hashlib.sha256(), 0
                while chunk := tee.read(4 << 20):
                    sha.update(chunk)
                    size += len(chunk)
                digest = sha.hexdigest()
    except BaseException:
        dest.delete(tmp)
        raise
    return size, digest, tmp, refused


def _check_destination(m: Manifest, dest: Store, shown: str) -> None:
    """Refuse a destination that already holds this version's manifest or cannot be written."""
    try:
        if dest.exists(MANIFEST_NAME):
            raise UserError(
                f"publish: {m.name} version {m.version} already exists at {shown!r}; "
                "refusing to overwrite (bump dataset.version)"
            )
        dest.check_writable()
    except OSError as err:
        raise UserError(f"publish: cannot use {shown!r} ({err})") from None


def _publish_shard(rec: ShardRecord, fields: dict[str, FieldSpec], src: Store, dest: Store) -> int:
    """Copy one shard (manifest record ``rec``), checked while copied, and commit it.

    A shard already at the destination with the manifest's size (left by an interrupted publish)
    is skipped; it is re-checked with the whole copy. Returns its size in bytes.
    """
    info = dest.info(rec.url)
    if info.type == pafs.FileType.File and info.size == rec.bytes:
        return rec.bytes  # copied by an interrupted publish; re-checked below
    check_no_links(src.fs, src.path, rec.url, f"publish: source shard {rec.url}")
    try:
        size, sha, tmp, refused = _copy(src, rec.url, dest, rec.url, shard=rec, fields=fields)
    except FileNotFoundError:
        raise DatasetError(f"publish: source shard {rec.url} is missing") from None
    if size != rec.bytes or sha != rec.sha256:
        dest.delete(tmp)
        raise DatasetError(
            f"publish: source shard {rec.url} does not match its manifest "
            "(size or sha256); nothing published"
        )
    if refused is not None:
        dest.delete(tmp)
        raise DatasetError(f"publish: {refused}; nothing published")
    dest.commit(tmp, rec.url)
    return size


def _publish_extras(src: Store, dest: Store) -> None:
    """Copy the index, card, preview and wids index (:data:`EXTRA_FILES`) that the source has
    (``wids.json`` is checked against the manifest with the copy, :func:`_check_copy`)."""
    for name in EXTRA_FILES:
        check_no_links(src.fs, src.path, name, f"publish: {name}")
        if src.is_file(name):
            _, _, tmp, _ = _copy(src, name, dest, name)
            dest.commit(tmp, name)


def _check_copy(dest: Store, m: Manifest, shown: str) -> None:
    """Re-read every copied shard (and ``wids.json``) from ``dest`` and verify it against the
    source manifest."""
    try:
        bad = verify_dataset_at(dest, m)
    except DatasetError as err:
        raise DatasetError(f"publish: the copy at {shown!r} is refused: {err}") from None
    if bad:
        raise DatasetError(f"publish: the copy at {shown!r} does not verify: {'; '.join(bad)}")


def publish_dataset(src: str | Store, dest_url: str | Store, *, progress: bool = False) -> str:
    """Copy the dataset at ``src`` to ``dest_url/{name}/{version}`` (see module docstring).

    Returns the destination URL. Shards, then index and card, then a verify of the copy, then the
    source manifest, byte for byte, last.
    """
    src = dataset_store(src)
    m = read_manifest(src)
    base = as_store(dest_url)
    dest = base.at(f"{base.url.rstrip('/')}/{m.name}/{m.version}")
    shown = safe_url(dest.url)
    _check_destination(m, dest, shown)
    bar = None
    if progress:
        from tqdm import tqdm

        bar = tqdm(total=m.total_bytes, unit="B", unit_scale=True, desc="publish")
    try:
        for rec in m.shards:
            size = _publish_shard(rec, m.fields, src, dest)
            if bar is not None:
                bar.update(size)
        _publish_extras(src, dest)
        _check_copy(dest, m, shown)
        dest.write_bytes_atomic(MANIFEST_NAME, src.read_bytes(MANIFEST_NAME))
        dest.delete(TMP_DIR)
    except OSError as err:
        raise UserError(
            f"publish: copying to {shown!r} failed ({err}); run it again to finish"
        ) from None
    finally:
        if bar is not None:
            bar.close()
    return dest.url


def verify_dataset_at(
    dataset: str | Store, manifest: Manifest, *, progress: bool = False
) -> list[str]:
    """:func:`verify_dataset` of the shards (and ``wids.json``) under ``dataset`` against
    ``manifest`` (a manifest not read from there: ``publish`` checks its copy before writing the
    manifest)."""
    root = dataset_store(dataset)
    problems = []
    shards = manifest.shards
    if progress:
        from tqdm import tqdm

        shards = tqdm(shards, unit="shard", desc="verify", dynamic_ncols=True)
    for rec in shards:
        try:
            size, sha, refused = scan_shard(root, rec, fields=manifest.fields)
        except FileNotFoundError:
            problems.append(f"{rec.url}: missing")
            continue
        except OSError as err:
            problems.append(f"{rec.url}: unreadable ({err})")
            continue
        why = []
        if size != rec.bytes:
            why.append(f"size {size} != {rec.bytes}")
        if sha != rec.sha256:
            why.append("sha256 mismatch")
        if why:  # corrupt or altered: whatever its content says, it is not the manifest's shard
            problems.append(f"{rec.url}: {', '.join(why)}")
        elif refused is not None:  # the manifest vouches for these bytes: a hostile dataset
            raise refused
    wids = wids_problem(root, manifest)
    if wids is not None:
        problems.append(wids)
    return problems
