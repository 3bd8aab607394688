"""Reading datasets safely: the manifest, and the samples of a shard.

Datasets come from people we may not know, so everything read here is validated first:

* :func:`read_manifest` returns the typed :class:`~schemas.dataset.Manifest`, whose validators
  check the format version, the required keys and their types, and that every shard url is a
  plain relative path that stays inside the dataset root (no ``..``, no absolute path, no scheme),
  that index ranges do not overlap, that ``content_sha256`` matches the shard checksums, and that
  each field's ``dtype``/``shape_max`` is a plain numeric dtype and a list of sizes. Readers
  taking a shard record or fields as dicts validate them the same way (:func:`as_shard`,
  :func:`as_fields`). :func:`wids_problem` compares the derived ``wids.json`` with the manifest.
* :func:`iter_samples` reads one shard; with ``verify=True`` (the default) it checks the shard's
  size and sha256 *before* yielding anything (local shards are hashed in a first pass, remote ones
  are spooled to a temporary file while hashing). Members must be regular files named ``{9-digit
  key}.{field}.npy[.gz]`` or ``{key}.meta.json`` with keys in the shard's range, in order; pickles
  (``.pyd``, ``.pkl``, pickled ``.npy``), links, paths with ``/`` or ``..`` are refused. A local
  shard that is a symbolic link (or lies under one inside the dataset root) is refused unopened.
* Every ``.npy`` member goes through :func:`read_npy`: its header is parsed without pickle (at most
  :data:`NPY_HEADER_LIMIT` bytes) and checked by :func:`check_npy_header` -- plain numeric dtype
  (no objects, records, strings), the manifest field's ``dtype``, at most its ``shape_max``, and
  a payload exactly as long as the header says -- *before* any array is loaded. gzip members are
  inflated while read, with a size cap. :func:`scan_shard` (``simaq verify``) and ``publish`` run
  the same checks without keeping the arrays.

Errors are :class:`DatasetError` (a :class:`~factory.errors.UserError`) naming the shard and member.
"""

from __future__ import annotations

import hashlib
import io
import json
import math
import os
import re
import shutil
import stat
import tarfile
import tempfile
import zlib
from collections.abc import Iterator

import numpy as np
from pydantic import ValidationError

from factory.dataset.storage import Store, as_store, is_local, safe_url
from factory.errors import UserError
from schemas.dataset import (  # FORMAT_VERSION, content_sha256, plain_dtype: re-exported
    FORMAT_VERSION,  # noqa: F401
    MANIFEST_NAME,
    MAX_NDIM,
    WIDS_NAME,
    FieldSpec,
    Manifest,
    RootedShard,
    ShardRecord,
    WidsIndex,
    content_sha256,  # noqa: F401
    error_lines,
    plain_dtype,
    url_problem,
)
from schemas.sample import SampleMeta

MAX_MANIFEST_BYTES = 512 << 20
HARD_MEMBER_CAP = 16 << 30
_CHUNK = 4 << 20
_MEMBER_RE = re.compile(r"^(\d{9})\.([a-z][a-z0-9_]*)\.(npy|npy\.gz|json)$")
NPY_HEADER_LIMIT = 16 << 10  # magic + length + numpy's 10000-character header cap, rounded up
_MAX_NDIM = MAX_NDIM
#: The keys a manifest must have (the required fields of :class:`~schemas.dataset.Manifest`).
REQUIRED_KEYS = tuple(k for k, f in Manifest.model_fields.items() if f.is_required())


class DatasetError(UserError):
    """A dataset (manifest or shard) that is malformed, unsafe, or does not match its checksums."""


def check_relative_url(url, what: str = "shard url") -> str:
    """Return ``url`` if it is a plain relative path inside the dataset root, else raise."""
    why = url_problem(url)
    if why is not None:
        raise DatasetError(f"manifest: {what} {why}")
    return url


def dataset_store(dataset: str | os.PathLike | Store) -> Store:
    """The :class:`~factory.dataset.storage.Store` of a dataset's root, given the root or its
    ``manifest.json`` (a path or URL is turned into a Store by
    :func:`~factory.dataset.storage.as_store`)."""
    store = as_store(dataset)
    return store.parent() if store.url.endswith("/" + MANIFEST_NAME) else store


def shard_store(dataset: str | os.PathLike | Store, record: ShardRecord) -> Store:
    """The root of the dataset holding ``record``: its own for a mixture's shard
    (:class:`RootedShard`, same endpoint), else ``dataset``'s."""
    store = dataset_store(dataset)
    return dataset_store(store.at(record.root)) if isinstance(record, RootedShard) else store


def validate_manifest(m) -> Manifest:
    """Check a parsed manifest (see module docstring); return it as a :class:`Manifest`.

    Every check is a validator of :class:`~schemas.dataset.Manifest`; the first problem is raised
    as one :class:`DatasetError` line naming the field and the value.
    """
    if isinstance(m, Manifest):
        return m
    try:
        return Manifest.model_validate(m)
    except ValidationError as err:
        raise DatasetError(error_lines(err, "manifest")) from None


def as_shard(rec) -> ShardRecord:
    """``rec`` as a :class:`ShardRecord` (a :class:`RootedShard` if it names a ``root``): a typed
    record is returned as it is, a dict is validated (a url leaving the dataset root, a bad count
    or checksum is a :class:`DatasetError`)."""
    if isinstance(rec, ShardRecord):
        return rec
    try:
        if isinstance(rec, dict) and "root" in rec:
            return RootedShard.model_validate(rec)
        return ShardRecord.model_validate(rec)
    except ValidationError as err:
        raise DatasetError(error_lines(err, "shard record")) from None


def as_fields(fields) -> dict[str, FieldSpec] | None:
    """The manifest's ``fields`` as :class:`FieldSpec` values (dicts are validated), or None."""
    if fields is None:
        return None
    if not isinstance(fields, dict):
        raise DatasetError(f"manifest: fields must be an object, got {type(fields).__name__}")
    if all(isinstance(v, FieldSpec) for v in fields.values()):
        return fields
    out = {}
    for name, spec in fields.items():
        try:
            out[name] = spec if isinstance(spec, FieldSpec) else FieldSpec.model_validate(spec)
        except ValidationError as err:
            raise DatasetError(error_lines(err, f"manifest: fields.{name}")) from None
    return out


def read_wids(dataset: str | Store) -> WidsIndex | None:
    """The dataset's ``wids.json`` (None if it has none), parsed and validated."""
    root = dataset_store(dataset)
    check_no_links(root.fs, root.path, WIDS_NAME, WIDS_NAME)
    where = root.url_of(WIDS_NAME)
    raw = _read_small(root.fs, root.join(WIDS_NAME), where, WIDS_NAME, missing_ok=True)
    if raw is None:
        return None
    try:
        return WidsIndex.model_validate(json.loads(raw))
    except (UnicodeDecodeError, json.JSONDecodeError) as err:
        raise DatasetError(f"{WIDS_NAME}: not valid JSON ({err})") from None
    except ValidationError as err:
        raise DatasetError(error_lines(err, WIDS_NAME)) from None


def wids_problem(dataset: str | Store, manifest: Manifest) -> str | None:
    """Why the dataset's ``wids.json`` does not agree with ``manifest`` (None if it does, or if
    there is none: it is derived, and datasets written before it existed lack it)."""
    try:
        index = read_wids(dataset)
    except DatasetError as err:
        return str(err)
    if index is None:
        return None
    why = index.mismatch(manifest.wids_index())
    return None if why is None else f"{WIDS_NAME}: does not match the manifest ({why})"


def _read_small(
    fs, path: str, shown_url: str, what: str, *, missing_ok: bool = False
) -> bytes | None:
    """The bytes of a metadata file (``what``, for messages), at most :data:`MAX_MANIFEST_BYTES`;
    None if it is missing and ``missing_ok``."""
    try:
        info = fs.get_file_info(path)
        if info.size is not None and info.size > MAX_MANIFEST_BYTES:
            raise DatasetError(
                f"{what}: {safe_url(shown_url)!r} is larger than {MAX_MANIFEST_BYTES}"
            )
        with fs.open_input_stream(path) as fh:
            return fh.read(MAX_MANIFEST_BYTES + 1)
    except FileNotFoundError:
        if missing_ok:
            return None
        raise
    except OSError as err:
        raise DatasetError(f"dataset: cannot read {safe_url(shown_url)!r}: {err}") from None


def read_manifest(dataset: str | Store) -> Manifest:
    """Read and validate the ``manifest.json`` of ``dataset`` (its root or the file)."""
    root = dataset_store(dataset)
    murl = root.url_of(MANIFEST_NAME)
    try:
        raw = _read_small(root.fs, root.join(MANIFEST_NAME), murl, "manifest")
    except FileNotFoundError:
        raise DatasetError(f"dataset: no manifest at {safe_url(murl)!r}") from None
    try:
        m = json.loads(raw)
    except (UnicodeDecodeError, json.JSONDecodeError) as err:
        raise DatasetError(f"manifest: {safe_url(murl)!r} is not valid JSON ({err})") from None
    return validate_manifest(m)


# --- shards --------------------------------------------------------------------------------------


class _HashingReader:
    def __init__(self, f):
        self.f = f
        self.sha = hashlib.sha256()
        self.size = 0

    def read(self, n: int = -1) -> bytes:
        data = self.f.read(n) if n is not None and n >= 0 else self.f.read()
        self.sha.update(data)
        self.size += len(data)
        return data

    def drain(self) -> None:
        while self.read(_CHUNK):
            pass


def _check_digest(name: str, record: ShardRecord, size: int, digest: str) -> None:
    if size != record.bytes:
        raise DatasetError(f"shard {name}: size {size} != {record.bytes} in the manifest")
    if digest != record.sha256:
        raise DatasetError(f"shard {name}: sha256 mismatch (corrupt or altered shard)")


class _Gunzip:
    """A gzip member inflated while it is read: at most ``cap`` bytes out, one complete gzip stream
    and nothing after it (each refused with a :class:`DatasetError` naming ``where``)."""

    def __init__(self, raw, cap: int, where: str):
        self._raw, self._cap, self._where = raw, cap, where
        self._d = zlib.decompressobj(wbits=31)  # gzip container
        self._pending = memoryview(b"")
        self._out = 0

    def _more(self) -> bool:
        """Inflate the next piece into ``_pending``; False at the end of the stream."""
        while True:
            if self._d.eof:
                if self._d.unused_data or self._raw.read(1):
                    raise DatasetError(f"{self._where}: data after the end of the gzip stream")
                return False
            data = self._d.unconsumed_tail or self._raw.read(_CHUNK)
            if not data:
                raise DatasetError(f"{self._where}: truncated gzip stream")
            try:
                out = self._d.decompress(data, _CHUNK)
            except zlib.error as err:
                raise DatasetError(f"{self._where}: not a valid gzip stream ({err})") from None
            if out:
                self._out += len(out)
                if self._out > self._cap:
                    raise DatasetError(
                        f"{self._where}: inflates beyond {self._cap} bytes (refused)"
                    )
                self._pending = memoryview(out)
                return True

    def readinto(self, buf) -> int:
        mv = memoryview(buf).cast("B")
        n = 0
        while n < len(mv):
            if not len(self._pending) and not self._more():
                break
            k = min(len(mv) - n, len(self._pending))
            mv[n : n + k] = self._pending[:k]
            self._pending = self._pending[k:]
            n += k
        return n

    def read(self, n: int) -> bytes:
        buf = bytearray(n)
        return bytes(buf[: self.readinto(buf)])


def _fill(fp, mv: memoryview) -> int:
    """Read into ``mv`` until it is full or ``fp`` ends; the number of bytes read."""
    n = 0
    while n < len(mv):
        k = fp.readinto(mv[n:])
        if not k:
            break
        n += k
    return n


def _skip(fp, n: int) -> int:
    """Read and drop up to ``n`` bytes of ``fp``; the number of bytes there were."""
    buf = memoryview(bytearray(min(n, _CHUNK)))
    got = 0
    while got < n:
        k = fp.readinto(buf[: min(len(buf), n - got)])
        if not k:
            break
        got += k
    return got


def check_npy_header(
    prefix: bytes, where: str, expect: FieldSpec | None, cap: int
) -> tuple[np.dtype, tuple[int, ...], bool, int, int]:
    """Parse and check the header at the start of an ``.npy`` member, without pickle.

    The one header check of every reader and of ``verify``. ``prefix``: the member's first bytes
    (:data:`NPY_HEADER_LIMIT` hold any header numpy accepts; a longer claimed header reads as
    truncated). ``expect``: the manifest's description of the field (``dtype``, ``shape_max``),
    or None. Returns ``(dtype, shape, fortran_order, header bytes, payload bytes)``.

    Refused (:class:`DatasetError` naming ``where`` and the value): a bad magic string, version or
    header; a dtype that is not plain numeric (objects, records, strings, sub-arrays, dates); a
    dtype other than the manifest's; a shape with more dimensions or larger sizes than
    ``shape_max``; a payload larger than ``cap``.
    """
    fp = io.BytesIO(prefix)
    fmt = np.lib.format
    try:
        version = fmt.read_magic(fp)
        if version == (1, 0):
            shape, fortran, dtype = fmt.read_array_header_1_0(fp)
        elif version == (2, 0):
            shape, fortran, dtype = fmt.read_array_header_2_0(fp)
        else:
            raise ValueError(
                f"format version {version[0]}.{version[1]} (only 1.0 and 2.0 are read)"
            )
    except (ValueError, SyntaxError, TypeError, RecursionError, MemoryError) as err:
        reason = (str(err).splitlines() or [type(err).__name__])[0][:200]
        if reason.startswith("malformed node"):  # ast.literal_eval met an expression
            reason = "the header is not a plain literal dictionary"
        raise DatasetError(f"{where}: not a plain .npy array ({reason})") from None
    if not plain_dtype(dtype):
        raise DatasetError(
            f"{where}: dtype {str(dtype)[:80]} is refused (only plain numeric arrays: "
            "no objects, records or strings)"
        )
    if expect is not None and expect.dtype is not None and str(dtype) != expect.dtype:
        raise DatasetError(f"{where}: dtype {dtype} != {expect.dtype} in the manifest")
    shown = str(tuple(shape))[:80]
    if len(shape) > _MAX_NDIM or any(v < 0 for v in shape):
        raise DatasetError(f"{where}: shape {shown} is not a valid array shape")
    smax = expect.shape_max if expect is not None else None
    if smax is not None and (
        len(shape) != len(smax) or any(a > b for a, b in zip(shape, smax, strict=False))
    ):
        raise DatasetError(f"{where}: shape {shown} exceeds {tuple(smax)} in the manifest")
    nbytes = math.prod(shape) * dtype.itemsize
    if nbytes > cap:
        raise DatasetError(
            f"{where}: header claims {nbytes} bytes of data (shape {shown}), "
            f"more than the limit {cap}"
        )
    return dtype, tuple(shape), fortran, fp.tell(), nbytes


def read_npy(
    fp,
    where: str,
    expect: FieldSpec | None,
    *,
    cap: int,
    size: int | None = None,
    load: bool = True,
) -> np.ndarray | None:
    """One ``.npy`` member read from ``fp`` (its bytes, inflated if it was gzip-compressed).

    The header is checked by :func:`check_npy_header` first; then the payload must be exactly as
    long as the header says (``size``, the member's length when known, is checked before any
    memory is allocated). With ``load`` the array is returned (writable, no pickle ever),
    else the payload is only counted and None returned.
    """
    prefix = fp.read(NPY_HEADER_LIMIT)
    dtype, shape, fortran, hlen, nbytes = check_npy_header(prefix, where, expect, cap)
    have = len(prefix) - hlen  # payload bytes already read
    if size is not None and size - hlen != nbytes:
        raise DatasetError(
            f"{where}: header claims {nbytes} bytes of data, the member holds {size - hlen}"
        )
    if have > nbytes:
        raise DatasetError(f"{where}: more data than the {nbytes} bytes its header claims")
    if not load and size is not None:
        return None
    out = None
    if load:
        out = np.empty(nbytes, np.uint8)
        mv = memoryview(out)
        mv[:have] = memoryview(prefix)[hlen:]
        got = have + _fill(fp, mv[have:])
    else:
        got = have + _skip(fp, nbytes - have)
    if got < nbytes:
        raise DatasetError(f"{where}: header claims {nbytes} bytes of data, the member holds {got}")
    if fp.read(1):
        raise DatasetError(f"{where}: more data than the {nbytes} bytes its header claims")
    if out is None:
        return None
    return out.view(dtype).reshape(shape, order="F" if fortran else "C")


def _member_cap(expect: FieldSpec | None) -> int:
    """Largest ``.npy`` member (inflated) a field may have: its ``shape_max`` in its ``dtype``."""
    if expect is not None and expect.shape_max is not None and expect.dtype:
        try:
            n = math.prod(expect.shape_max) * np.dtype(expect.dtype).itemsize
            return min(n + (64 << 10), HARD_MEMBER_CAP)
        except (TypeError, ValueError):
            pass
    return HARD_MEMBER_CAP


def _check_member(info: tarfile.TarInfo, name: str, fields: dict[str, FieldSpec] | None):
    """Check one tar member's type, name, field and size before anything of it is read.

    Returns
    -------
    where : str
        ``shard NAME member 'MEMBER'``, for messages.
    key, field, ext : str
        The 9-digit sample key, the field name (``meta`` for JSON) and ``npy``, ``npy.gz`` or
        ``json``.
    expect : FieldSpec or None
        The manifest's entry of the field (None for ``meta`` or without ``fields``).
    cap : int
        Largest (inflated) size of the member in bytes.
    """
    where = f"shard {name} member {info.name[:200]!r}"
    if not info.isreg():
        raise DatasetError(f"{where}: only regular files are allowed (links/dirs refused)")
    m = _MEMBER_RE.match(info.name)
    if m is None:
        raise DatasetError(
            f"{where}: unexpected member (allowed: KEY.FIELD.npy[.gz], KEY.meta.json; "
            "no paths, no pickles)"
        )
    key, field, ext = m.groups()
    if (ext == "json") != (field == "meta"):
        raise DatasetError(f"{where}: unexpected member")
    expect = None
    if field != "meta" and fields is not None:
        expect = fields.get(field)
        if not isinstance(expect, FieldSpec):
            raise DatasetError(
                f"{where}: field {field!r} is not described in the manifest's fields "
                f"({sorted(fields)})"
            )
    cap = _member_cap(expect) if field != "meta" else 64 << 20
    if info.size > (cap if ext != "npy.gz" else HARD_MEMBER_CAP):
        raise DatasetError(f"{where}: {info.size} bytes exceeds the limit {cap}")
    return where, key, field, ext, expect, cap


def _check_key(where: str, key: str, last_index: int, first: int, n: int) -> int:
    """The index of a new sample's ``key``; refused unless above ``last_index`` and in
    ``[first, first + n)``."""
    idx = int(key)
    if idx <= last_index or not first <= idx < first + n:
        raise DatasetError(
            f"{where}: key out of order or outside [{first}, {first + n}) "
            "(duplicate or foreign sample)"
        )
    return idx


def _read_member(
    fh, size: int, where: str, ext: str, expect: FieldSpec | None, cap: int, load: bool
):
    """The decoded member: a dict (JSON), an array (``.npy[.gz]``), or None (array not ``load``-ed).

    ``size`` is the member's length in the tar (bytes, before any inflating).
    """
    if ext == "json":
        data = fh.read()
        if len(data) != size:
            raise DatasetError(f"{where}: truncated")
        try:
            return json.loads(data)
        except (UnicodeDecodeError, json.JSONDecodeError, RecursionError) as err:
            raise DatasetError(f"{where}: invalid JSON ({err})") from None
    gz = ext == "npy.gz"
    return read_npy(
        _Gunzip(fh, cap, where) if gz else fh,
        where,
        expect,
        cap=cap,
        size=None if gz else size,
        load=load,
    )


def _sample_meta(data, key: str, where: str) -> SampleMeta:
    """A sample's decoded ``meta.json`` as a :class:`SampleMeta`; it must be the record of the
    sample ``key`` names."""
    try:
        return SampleMeta.parse(data, index=int(key))
    except ValidationError as err:
        raise DatasetError(error_lines(err, f"{where}: sample record")) from None
    except ValueError as err:
        raise DatasetError(f"{where}: sample record: {err}") from None


def _iter_tar(
    stream,
    name: str,
    first: int,
    n: int,
    fields: dict[str, FieldSpec] | None,
    *,
    load: bool = True,
) -> Iterator[dict]:
    """Parse a shard tar stream into samples, with every safety check of the module docstring.

    ``fields`` (the manifest's): each ``.npy`` member is checked against its field's entry, and a
    field the manifest does not describe is refused. Without ``load`` the checks are the same but
    arrays are not kept (the samples hold None): ``verify``. A sample is yielded when the next
    one's first member is met, before that member's key is checked. ``[first, first + n)``: the
    sample indices the shard holds.
    """
    current: dict | None = None
    last_index = first - 1
    count = 0
    try:
        tar = tarfile.open(fileobj=stream, mode="r|")
    except tarfile.TarError as err:
        raise DatasetError(f"shard {name}: not a tar file ({err})") from None
    try:
        for info in tar:
            where, key, field, ext, expect, cap = _check_member(info, name, fields)
            if current is None or key != current["__key__"]:
                if current is not None:
                    yield current
                    count += 1
                last_index = _check_key(where, key, last_index, first, n)
                current = {"__key__": key}
            if field in current:
                raise DatasetError(f"{where}: field given twice for one sample")
            fh = tar.extractfile(info)
            value = _read_member(fh, info.size, where, ext, expect, cap, load)
            current[field] = _sample_meta(value, key, where) if field == "meta" else value
        if current is not None:
            yield current
            count += 1
    except (tarfile.TarError, EOFError, zlib.error) as err:
        raise DatasetError(f"shard {name}: damaged tar ({err})") from None
    if count != n:
        raise DatasetError(f"shard {name}: holds {count} samples, the manifest says {n}")


def shard_spans(
    dataset: str | Store, shard_record: ShardRecord | dict
) -> dict[int, tuple[int, int]]:
    """``{sample index: (start, end)}``: the byte span of each sample's members in a shard.

    One sequential pass (nothing kept but the spans): the shard's size and sha256 are checked
    against the manifest and every member's name, type and key as :func:`iter_samples` checks them
    (payloads are hashed, not decoded; :func:`read_sample` checks those). The spans let a reader
    seek to a sample (:func:`read_sample`) instead of reading the shard from its start.
    """
    rec = as_shard(shard_record)
    url = rec.url
    fs, path = _shard_path(dataset, rec)
    first, n = rec.first_index, rec.nsamples
    spans: dict[int, list[int]] = {}
    last, key = first - 1, None
    try:
        # buffered: tarfile reads 512-byte headers, each an HTTP request on object storage
        with fs.open_input_stream(path, buffer_size=_CHUNK) as fh:
            reader = _HashingReader(fh)
            for info in tarfile.open(fileobj=reader, mode="r|"):
                where, k, _, _, _, _ = _check_member(info, url, None)
                if k != key:
                    last, key = _check_key(where, k, last, first, n), k
                    spans[last] = [info.offset, 0]
                spans[last][1] = info.offset_data + info.size
            reader.drain()
    except (tarfile.TarError, EOFError) as err:
        raise DatasetError(f"shard {url}: damaged tar ({err})") from None
    except FileNotFoundError:
        raise DatasetError(f"shard {url}: missing") from None
    _check_digest(url, rec, reader.size, reader.sha.hexdigest())
    if len(spans) != n:
        raise DatasetError(f"shard {url}: holds {len(spans)} samples, the manifest says {n}")
    return {i: (a, b) for i, (a, b) in spans.items()}


def read_sample(
    dataset: str | Store,
    shard_record: ShardRecord | dict,
    index: int,
    span: tuple[int, int],
    *,
    fields: dict[str, FieldSpec] | None = None,
    fh=None,
) -> dict:
    """Sample ``index`` of a shard, read from its byte ``span`` alone (see :func:`shard_spans`),
    with every member check of :func:`iter_samples`; ``fh``: the shard already open for random
    access (:func:`open_shard`), which saves a metadata request per read on object storage."""
    rec = as_shard(shard_record)
    url = rec.url
    start, end = span
    if not 0 <= start < end <= rec.bytes:
        raise DatasetError(f"shard {url}: sample {index} span {span} outside the shard")
    if fh is None:
        with open_shard(dataset, rec) as f:
            data = f.read_at(end - start, start)
    else:
        data = fh.read_at(end - start, start)
    if len(data) != end - start:
        raise DatasetError(f"shard {url}: truncated at sample {index}")
    # two zero blocks close the archive, as at the end of the shard
    stream = io.BytesIO(bytes(data) + bytes(2 * tarfile.BLOCKSIZE))
    return next(_iter_tar(stream, url, index, 1, as_fields(fields)))


def open_shard(dataset: str | Store, shard_record: ShardRecord | dict):
    """A shard opened for random access (a pyarrow ``NativeFile``; links refused)."""
    rec = as_shard(shard_record)
    fs, path = _shard_path(dataset, rec)
    try:
        return fs.open_input_file(path)
    except FileNotFoundError:
        raise DatasetError(f"shard {rec.url}: missing") from None


def _shard_path(dataset: str | Store, record: ShardRecord):
    """``(filesystem, path)`` of a shard (under its mixture member's root if it names one), links
    refused."""
    root = shard_store(dataset, record)
    check_no_links(root.fs, root.path, record.url, f"shard {record.url}")
    return root.fs, root.join(record.url)


def check_no_links(fs, rootpath: str, url: str, what: str) -> None:
    """Refuse a local ``rootpath/url`` that is a symbolic link, lies under one inside the root, or
    is not a regular file (a FIFO, a device); ``what`` names it in the message.

    Only the part below the dataset root is checked (the root itself is the user's choice). Object
    stores have no links: nothing to check. A missing path passes (opening it reports it).
    """
    if not is_local(fs):
        return
    path, parts = rootpath, url.split("/")
    st = None
    for i, part in enumerate(parts):
        path = os.path.join(path, part)
        try:
            st = os.lstat(path)
        except OSError:  # missing, or a parent is not a directory: the open says which
            return
        if stat.S_ISLNK(st.st_mode):
            link = "/".join(parts[: i + 1])
            raise DatasetError(
                f"{what}: {link!r} is a symbolic link inside the dataset root "
                "(refused: a link may point outside it)"
            )
    if st is not None and not stat.S_ISREG(st.st_mode):
        raise DatasetError(f"{what}: not a regular file")


def iter_samples(
    dataset: str | Store,
    shard_record: ShardRecord | dict,
    *,
    verify: bool = True,
    fields: dict[str, FieldSpec] | None = None,
) -> Iterator[dict]:
    """Yield the samples of one shard: ``{"__key__", "<field>": ndarray, ..., "meta": SampleMeta}``.

    ``shard_record`` is one of ``manifest.shards`` (a dict is validated as one); ``fields``
    (``manifest.fields``),
    when given, also checks each array's dtype and maximum shape against the manifest (before it
    is loaded), bounds inflated sizes and refuses fields the manifest does not describe. With
    ``verify`` the shard's size and sha256 are checked before the first sample is yielded.
    """
    rec = as_shard(shard_record)
    fields = as_fields(fields)
    url = name = rec.url
    first, n = rec.first_index, rec.nsamples
    root = dataset_store(dataset)
    fs, path = root.fs, root.join(url)
    check_no_links(fs, root.path, url, f"shard {name}")
    try:
        if not verify:
            with fs.open_input_stream(path) as fh:
                yield from _iter_tar(fh, name, first, n, fields)
            return
        if root.is_local:
            with fs.open_input_stream(path) as fh:
                reader = _HashingReader(fh)
                reader.drain()
            _check_digest(name, rec, reader.size, reader.sha.hexdigest())
            with fs.open_input_stream(path) as fh:
                yield from _iter_tar(fh, name, first, n, fields)
            return
        with tempfile.TemporaryFile(prefix="simaq-shard-") as spool:
            with fs.open_input_stream(path) as fh:
                reader = _HashingReader(fh)
                shutil.copyfileobj(reader, spool, _CHUNK)
            _check_digest(name, rec, reader.size, reader.sha.hexdigest())
            spool.seek(0)
            yield from _iter_tar(spool, name, first, n, fields)
    except FileNotFoundError:
        raise DatasetError(f"shard {name}: missing") from None


def scan_stream(
    fh, name: str, record: ShardRecord | dict, fields: dict[str, FieldSpec] | None
) -> tuple[int, str, DatasetError | None]:
    """``(bytes, sha256, refusal)`` of a shard stream read in one pass (``verify``, ``publish``).

    Every member is checked as :func:`iter_samples` checks it (names, keys, ``.npy`` headers
    against ``fields`` and payload sizes, JSON), without keeping any array. ``refusal`` is the
    first :class:`DatasetError` (None if the shard reads cleanly); the stream is read to its end
    either way, so size and sha256 are the whole file's: a caller tells corruption (checksums
    differ from the manifest's) from a consistent but refused shard.
    """
    rec, fields = as_shard(record), as_fields(fields)
    reader = _HashingReader(fh)
    refused = None
    try:
        for _ in _iter_tar(reader, name, rec.first_index, rec.nsamples, fields, load=False):
            pass
    except DatasetError as err:
        refused = err
    reader.drain()
    return reader.size, reader.sha.hexdigest(), refused


def scan_shard(
    dataset: str | Store,
    shard_record: ShardRecord | dict,
    *,
    fields: dict[str, FieldSpec] | None = None,
) -> tuple[int, str, DatasetError | None]:
    """:func:`scan_stream` of one shard of ``dataset``.

    Raises :class:`DatasetError` for a local shard that is a link (never opened) and
    ``FileNotFoundError`` for a missing one.
    """
    rec = as_shard(shard_record)
    url = rec.url
    root = dataset_store(dataset)
    check_no_links(root.fs, root.path, url, f"shard {url}")
    with root.fs.open_input_stream(root.join(url)) as fh:
        return scan_stream(fh, url, rec, fields)
