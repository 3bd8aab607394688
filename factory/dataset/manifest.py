"""Reading datasets safely: the manifest, and the samples of a shard.

Datasets come from people we may not know, so everything read here is validated first:

* :func:`read_manifest` checks the format version, the required keys, and that every shard url is a
  plain relative path that stays inside the dataset root (no ``..``, no absolute path, no scheme),
  that index ranges do not overlap, and that ``content_sha256`` matches the shard checksums.
* :func:`iter_samples` reads one shard; with ``verify=True`` (the default) it checks the shard's
  size and sha256 *before* yielding anything (local shards are hashed in a first pass, remote ones
  are spooled to a temporary file while hashing). Members must be regular files named ``{9-digit
  key}.{field}.npy[.gz]`` or ``{key}.meta.json`` with keys in the shard's range, in order; pickles
  (``.pyd``, ``.pkl``, pickled ``.npy``), links, paths with ``/`` or ``..`` are refused. Arrays are
  decoded with ``allow_pickle=False`` and gzip members are inflated with a size cap.

Errors are :class:`DatasetError` (a :class:`~factory.errors.UserError`) naming the shard and member.
"""

from __future__ import annotations

import hashlib
import io
import json
import posixpath
import re
import shutil
import tarfile
import tempfile
import zlib
from collections.abc import Iterator

import numpy as np

from factory.errors import UserError

FORMAT_VERSION = 1
MANIFEST_NAME = "manifest.json"
MAX_MANIFEST_BYTES = 512 << 20
HARD_MEMBER_CAP = 16 << 30
_CHUNK = 4 << 20
_HEX64 = re.compile(r"^[0-9a-f]{64}$")
_MEMBER_RE = re.compile(r"^(\d{9})\.([a-z][a-z0-9_]*)\.(npy|npy\.gz|json)$")
REQUIRED_KEYS = (
    "format_version",
    "name",
    "version",
    "created",
    "code",
    "config",
    "config_sha256",
    "seed",
    "seed_rule",
    "labels",
    "fields",
    "splits",
    "shards",
    "num_samples",
    "content_sha256",
)


class DatasetError(UserError):
    """A dataset (manifest or shard) that is malformed, unsafe, or does not match its checksums."""


def content_sha256(shards: list[dict]) -> str:
    """sha256 over the sorted lines ``"{sha256} {url}"`` of the shards (sha256sum order)."""
    lines = sorted(f"{s['sha256']} {s['url']}" for s in shards)
    return hashlib.sha256("\n".join(lines).encode()).hexdigest()


def check_relative_url(url, what: str = "shard url") -> str:
    """Return ``url`` if it is a plain relative path inside the dataset root, else raise."""
    if not isinstance(url, str) or not url:
        raise DatasetError(f"manifest: {what} must be a non-empty string, got {url!r}")
    bad = (
        url.startswith(("/", "~"))
        or "\\" in url
        or ":" in url
        or any(ord(c) < 32 for c in url)
        or any(part in ("", ".", "..") for part in url.split("/"))
    )
    if bad:
        raise DatasetError(
            f"manifest: {what} {url!r} must be a relative path inside the dataset root "
            "(no '..', no absolute path, no scheme)"
        )
    return url


def _dataset_root(url: str) -> tuple[str, str]:
    """``(root url, manifest url)`` of a dataset given by its root or its manifest.json."""
    url = str(url).rstrip("/")
    if url.endswith("/" + MANIFEST_NAME) or url == MANIFEST_NAME:
        return posixpath.dirname(url) or ".", url
    return url, f"{url}/{MANIFEST_NAME}"


def _int(v, name: str, lo: int = 0) -> int:
    if not isinstance(v, int) or isinstance(v, bool) or v < lo:
        raise DatasetError(f"manifest: {name} must be an integer >= {lo}, got {v!r}")
    return v


def validate_manifest(m) -> dict:
    """Check a parsed manifest (see module docstring); return it unchanged."""
    if not isinstance(m, dict):
        raise DatasetError("manifest: must be a JSON object")
    missing = [k for k in REQUIRED_KEYS if k not in m]
    if missing:
        raise DatasetError(f"manifest: missing keys {missing}")
    if m["format_version"] != FORMAT_VERSION:
        raise DatasetError(
            f"manifest: format_version {m['format_version']!r} is not supported "
            f"(this reader knows {FORMAT_VERSION})"
        )
    if not isinstance(m["shards"], list):
        raise DatasetError("manifest: shards must be a list")
    if not isinstance(m["fields"], dict) or not isinstance(m["splits"], dict):
        raise DatasetError("manifest: fields and splits must be objects")
    seen, ranges = set(), []
    for i, s in enumerate(m["shards"]):
        if not isinstance(s, dict):
            raise DatasetError(f"manifest: shards[{i}] must be an object")
        url = check_relative_url(s.get("url"))
        if url in seen:
            raise DatasetError(f"manifest: shard {url!r} listed twice")
        seen.add(url)
        first = _int(s.get("first_index"), f"shards[{i}].first_index")
        n = _int(s.get("nsamples"), f"shards[{i}].nsamples", lo=1)
        _int(s.get("bytes"), f"shards[{i}].bytes")
        if not isinstance(s.get("sha256"), str) or not _HEX64.match(s["sha256"]):
            raise DatasetError(f"manifest: shards[{i}].sha256 must be 64 hex digits")
        if s.get("split") not in m["splits"]:
            raise DatasetError(f"manifest: shards[{i}].split {s.get('split')!r} is not in splits")
        if first + n > 10**9:
            raise DatasetError(f"manifest: shards[{i}] index range exceeds 9-digit keys")
        ranges.append((first, first + n, url))
    ranges.sort()
    for (_, end, a), (start, _, b) in zip(ranges, ranges[1:], strict=False):
        if start < end:
            raise DatasetError(f"manifest: shards {a!r} and {b!r} overlap in sample indices")
    total = sum(s["nsamples"] for s in m["shards"])
    if _int(m["num_samples"], "num_samples") != total:
        raise DatasetError(f"manifest: num_samples {m['num_samples']} != sum over shards {total}")
    for split, count in m["splits"].items():
        got = sum(s["nsamples"] for s in m["shards"] if s["split"] == split)
        if _int(count, f"splits.{split}") != got:
            raise DatasetError(f"manifest: splits.{split} is {count} but its shards hold {got}")
    if m["content_sha256"] != content_sha256(m["shards"]):
        raise DatasetError("manifest: content_sha256 does not match the shard checksums")
    return m


def read_manifest(url: str, *, endpoint_url: str | None = None) -> dict:
    """Read and validate the ``manifest.json`` of the dataset at ``url`` (root or the file)."""
    from factory.dataset.storage import resolve_filesystem, safe_url

    _, murl = _dataset_root(url)
    fs, path = resolve_filesystem(murl, endpoint_url=endpoint_url)
    try:
        info = fs.get_file_info(path)
        if info.size is not None and info.size > MAX_MANIFEST_BYTES:
            raise DatasetError(f"manifest: {safe_url(murl)!r} is larger than {MAX_MANIFEST_BYTES}")
        with fs.open_input_stream(path) as fh:
            raw = fh.read(MAX_MANIFEST_BYTES + 1)
    except FileNotFoundError:
        raise DatasetError(f"dataset: no manifest at {safe_url(murl)!r}") from None
    except OSError as err:
        raise DatasetError(f"dataset: cannot read {safe_url(murl)!r}: {err}") from None
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


def _check_digest(name: str, record: dict, size: int, digest: str) -> None:
    if size != record["bytes"]:
        raise DatasetError(f"shard {name}: size {size} != {record['bytes']} in the manifest")
    if digest != record["sha256"]:
        raise DatasetError(f"shard {name}: sha256 mismatch (corrupt or altered shard)")


def _inflate(data: bytes, cap: int, where: str) -> bytes:
    d = zlib.decompressobj(wbits=31)  # gzip container
    out = d.decompress(data, cap + 1)
    if len(out) > cap or d.unconsumed_tail:
        raise DatasetError(f"{where}: inflates beyond {cap} bytes (refused)")
    if not d.eof:
        raise DatasetError(f"{where}: truncated gzip stream")
    return out


def _decode_npy(data: bytes, where: str, expect: dict | None) -> np.ndarray:
    try:
        arr = np.lib.format.read_array(io.BytesIO(data), allow_pickle=False)
    except ValueError as err:  # pickled object arrays, oversized headers, bad magic
        raise DatasetError(f"{where}: not a plain .npy array ({err})") from None
    if arr.dtype.hasobject:
        raise DatasetError(f"{where}: object arrays are refused")
    if expect:
        if str(arr.dtype) != expect.get("dtype", str(arr.dtype)):
            raise DatasetError(f"{where}: dtype {arr.dtype} != {expect['dtype']} in the manifest")
        smax = expect.get("shape_max")
        if smax is not None and (
            arr.ndim != len(smax) or any(a > b for a, b in zip(arr.shape, smax, strict=False))
        ):
            raise DatasetError(f"{where}: shape {arr.shape} exceeds {tuple(smax)} in the manifest")
    return arr


def _member_cap(expect: dict | None) -> int:
    if expect and expect.get("shape_max") and expect.get("dtype"):
        try:
            n = (
                int(np.prod(expect["shape_max"], dtype=np.int64))
                * np.dtype(expect["dtype"]).itemsize
            )
            return min(n + (64 << 10), HARD_MEMBER_CAP)
        except (TypeError, ValueError):
            pass
    return HARD_MEMBER_CAP


def _iter_tar(stream, name: str, record: dict, fields: dict | None) -> Iterator[dict]:
    """Parse a shard tar stream into samples, with every safety check of the module docstring."""
    first, n = record["first_index"], record["nsamples"]
    current: dict | None = None
    last_index = first - 1
    count = 0
    try:
        tar = tarfile.open(fileobj=stream, mode="r|")
    except tarfile.TarError as err:
        raise DatasetError(f"shard {name}: not a tar file ({err})") from None
    try:
        for info in tar:
            where = f"shard {name} member {info.name!r}"
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
            expect = (fields or {}).get(field)
            cap = _member_cap(expect) if field != "meta" else 64 << 20
            if info.size > (cap if ext != "npy.gz" else HARD_MEMBER_CAP):
                raise DatasetError(f"{where}: {info.size} bytes exceeds the limit {cap}")
            if current is None or key != current["__key__"]:
                if current is not None:
                    yield current
                    count += 1
                idx = int(key)
                if idx <= last_index or not first <= idx < first + n:
                    raise DatasetError(
                        f"{where}: key out of order or outside [{first}, {first + n}) "
                        "(duplicate or foreign sample)"
                    )
                last_index = idx
                current = {"__key__": key}
            fh = tar.extractfile(info)
            data = fh.read() if fh is not None else b""
            if len(data) != info.size:
                raise DatasetError(f"{where}: truncated")
            if ext == "npy.gz":
                data = _inflate(data, cap, where)
            outname = "meta" if field == "meta" else field
            if outname in current:
                raise DatasetError(f"{where}: field given twice for one sample")
            if ext == "json":
                try:
                    current["meta"] = json.loads(data)
                except (UnicodeDecodeError, json.JSONDecodeError) as err:
                    raise DatasetError(f"{where}: invalid JSON ({err})") from None
            else:
                current[outname] = _decode_npy(data, where, expect)
        if current is not None:
            yield current
            count += 1
    except (tarfile.TarError, EOFError, zlib.error) as err:
        raise DatasetError(f"shard {name}: damaged tar ({err})") from None
    if count != n:
        raise DatasetError(f"shard {name}: holds {count} samples, the manifest says {n}")


def iter_samples(
    dataset_url: str,
    shard_record: dict,
    *,
    endpoint_url: str | None = None,
    verify: bool = True,
    fields: dict | None = None,
) -> Iterator[dict]:
    """Yield the samples of one shard: ``{"__key__", "<field>": ndarray, ..., "meta": dict}``.

    ``shard_record`` is one entry of ``manifest["shards"]``; ``fields`` (``manifest["fields"]``),
    when given, also checks each array's dtype and maximum shape and bounds inflated sizes.
    With ``verify`` the shard's size and sha256 are checked before the first sample is yielded.
    """
    from factory.dataset.storage import is_local, resolve_filesystem

    url = check_relative_url(shard_record.get("url"))
    name = url
    root, _ = _dataset_root(dataset_url)
    fs, rootpath = resolve_filesystem(root, endpoint_url=endpoint_url)
    path = posixpath.join(rootpath, url)
    try:
        if not verify:
            with fs.open_input_stream(path) as fh:
                yield from _iter_tar(fh, name, shard_record, fields)
            return
        if is_local(fs):
            with fs.open_input_stream(path) as fh:
                reader = _HashingReader(fh)
                reader.drain()
            _check_digest(name, shard_record, reader.size, reader.sha.hexdigest())
            with fs.open_input_stream(path) as fh:
                yield from _iter_tar(fh, name, shard_record, fields)
            return
        with tempfile.TemporaryFile(prefix="simaq-shard-") as spool:
            with fs.open_input_stream(path) as fh:
                reader = _HashingReader(fh)
                shutil.copyfileobj(reader, spool, _CHUNK)
            _check_digest(name, shard_record, reader.size, reader.sha.hexdigest())
            spool.seek(0)
            yield from _iter_tar(spool, name, shard_record, fields)
    except FileNotFoundError:
        raise DatasetError(f"shard {name}: missing") from None


def scan_shard(
    dataset_url: str, shard_record: dict, *, endpoint_url: str | None = None
) -> tuple[int, str, int]:
    """``(bytes, sha256, sample count)`` of a shard read in one streaming pass (no decoding).

    Raises :class:`DatasetError` (after the pass) if a member is not a regular file named
    ``KEY.FIELD.npy[.gz]`` / ``KEY.meta.json`` (pickles, paths, links): such a shard never
    verifies, whatever its checksum.
    """
    from factory.dataset.storage import resolve_filesystem

    url = check_relative_url(shard_record.get("url"))
    root, _ = _dataset_root(dataset_url)
    fs, rootpath = resolve_filesystem(root, endpoint_url=endpoint_url)
    keys = set()
    unsafe = None
    with fs.open_input_stream(posixpath.join(rootpath, url)) as fh:
        reader = _HashingReader(fh)
        try:
            with tarfile.open(fileobj=reader, mode="r|") as tar:
                for info in tar:
                    keys.add(info.name.split(".", 1)[0])
                    if unsafe is None and (not info.isreg() or not _MEMBER_RE.match(info.name)):
                        unsafe = info.name
        except (tarfile.TarError, EOFError):
            keys = set()
        reader.drain()
    if unsafe is not None:
        raise DatasetError(
            f"unexpected member {unsafe[:200]!r} (allowed: regular files KEY.FIELD.npy[.gz], "
            "KEY.meta.json; no paths, links or pickles)"
        )
    return reader.size, reader.sha.hexdigest(), len(keys)
