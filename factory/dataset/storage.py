"""Where datasets live: a local directory or an S3-compatible object store, through pyarrow.fs.

``resolve_filesystem(url)`` turns ``/path``, ``file:///path`` or ``s3://bucket/prefix`` into a
``(pyarrow.fs.FileSystem, path)`` pair. The S3 endpoint comes from the ``endpoint_url`` argument,
else from the environment variable ``SIMAQ_S3_ENDPOINT`` (e.g. ``http://127.0.0.1:9000``), else
AWS's default. Credentials are never taken from arguments, URLs or manifests: pyarrow's S3 client
reads them from the environment (``AWS_ACCESS_KEY_ID``/``AWS_SECRET_ACCESS_KEY``) or the standard
AWS config files, and nothing here logs them.

Writes that readers may see are *committed*: written to a temporary name under the dataset root's
``_tmp/`` folder, then moved into place (a rename on local disks; copy + delete on S3, where an
object only appears once complete).
"""

from __future__ import annotations

import os
import posixpath
import uuid
from urllib.parse import urlsplit

import pyarrow.fs as pafs

from factory.errors import UserError

ENDPOINT_ENV = "SIMAQ_S3_ENDPOINT"
TMP_DIR = "_tmp"


def _endpoint(endpoint_url: str | None) -> tuple[str, str] | None:
    """``(host[:port], scheme)`` of the S3 endpoint, or None for AWS's default."""
    raw = endpoint_url or os.environ.get(ENDPOINT_ENV) or None
    if raw is None:
        return None
    parts = urlsplit(raw)
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise UserError(f"endpoint_url: expected http[s]://HOST[:PORT], got {safe_url(raw)!r}")
    if parts.username or parts.password:
        raise UserError(
            "endpoint_url: must not contain credentials (use the environment or AWS config files)"
        )
    host = parts.hostname if parts.port is None else f"{parts.hostname}:{parts.port}"
    return host, parts.scheme


def safe_url(url: str) -> str:
    """``url`` without any user:password part, for messages."""
    parts = urlsplit(url)
    if parts.username or parts.password:
        netloc = parts.hostname or ""
        if parts.port is not None:
            netloc += f":{parts.port}"
        return parts._replace(netloc=netloc).geturl()
    return url


def absolute_url(url: str) -> str:
    """``url`` with a local path made absolute against the current directory (``~`` expanded).

    Call it on every user path before Ray starts: Ray workers run in other working directories.
    ``s3://`` URLs are returned unchanged.
    """
    url = str(url)
    parts = urlsplit(url)
    if parts.scheme == "file":
        return os.path.abspath(os.path.expanduser(parts.path))
    if parts.scheme == "" or (len(parts.scheme) == 1 and os.name == "nt"):
        return os.path.abspath(os.path.expanduser(url)) if url else url
    return url


def resolve_filesystem(url: str, *, endpoint_url: str | None = None) -> tuple[pafs.FileSystem, str]:
    """The file system and the path inside it of a local path or an ``s3://bucket/prefix`` URL.

    Raises :class:`UserError` for other schemes or an S3 URL without a bucket.
    """
    url = str(url)
    parts = urlsplit(url)
    if parts.scheme in ("", "file") or (len(parts.scheme) == 1 and os.name == "nt"):
        path = parts.path if parts.scheme == "file" else url
        if not path:
            raise UserError(f"path: empty path in {url!r}")
        return pafs.LocalFileSystem(), os.path.abspath(os.path.expanduser(path))
    if parts.scheme != "s3":
        raise UserError(
            f"url: unsupported scheme {parts.scheme!r} in {safe_url(url)!r} "
            "(use a local path or s3://bucket/prefix)"
        )
    if parts.username or parts.password:
        raise UserError(
            "url: must not contain credentials (use the environment or AWS config files)"
        )
    bucket = parts.netloc
    if not bucket:
        raise UserError(f"url: no bucket in {url!r} (expected s3://bucket/prefix)")
    prefix = parts.path.strip("/")
    ep = _endpoint(endpoint_url)
    region = os.environ.get("AWS_REGION") or os.environ.get("AWS_DEFAULT_REGION") or "us-east-1"
    kwargs: dict = {
        "region": region,
        "connect_timeout": 10.0,
        "request_timeout": 60.0,
        "retry_strategy": pafs.AwsStandardS3RetryStrategy(max_attempts=4),
    }
    if ep is not None:
        kwargs["endpoint_override"], kwargs["scheme"] = ep
    fs = pafs.S3FileSystem(**kwargs)
    return fs, f"{bucket}/{prefix}" if prefix else bucket


def join(root: str, *parts: str) -> str:
    return posixpath.join(root, *parts) if root else posixpath.join(*parts)


def is_local(fs: pafs.FileSystem) -> bool:
    return isinstance(fs, pafs.LocalFileSystem)


def exists(fs: pafs.FileSystem, path: str) -> bool:
    return fs.get_file_info(path).type != pafs.FileType.NotFound


def is_file(fs: pafs.FileSystem, path: str) -> bool:
    return fs.get_file_info(path).type == pafs.FileType.File


def list_dir(fs: pafs.FileSystem, path: str, recursive: bool = False) -> list[pafs.FileInfo]:
    """Entries under ``path`` (empty if it does not exist)."""
    sel = pafs.FileSelector(path, allow_not_found=True, recursive=recursive)
    return fs.get_file_info(sel)


def ensure_dir(fs: pafs.FileSystem, path: str) -> None:
    """Create ``path`` on a local disk (object stores have no directories)."""
    if is_local(fs):
        fs.create_dir(path, recursive=True)


def read_bytes(fs: pafs.FileSystem, path: str) -> bytes:
    with fs.open_input_stream(path) as fh:
        return fh.read()


def tmp_path(root: str, name: str) -> str:
    """A unique temporary name for ``name`` under the dataset root's ``_tmp/`` folder."""
    return join(root, TMP_DIR, f"{posixpath.basename(name)}.{uuid.uuid4().hex}.part")


def commit(fs: pafs.FileSystem, tmp: str, final: str) -> None:
    """Move a completely written temporary file to its final name."""
    ensure_dir(fs, posixpath.dirname(final))
    fs.move(tmp, final)


def write_bytes_atomic(fs: pafs.FileSystem, root: str, path: str, data: bytes) -> None:
    """Write ``data`` to ``path`` so that readers see either nothing or all of it."""
    tmp = tmp_path(root, path)
    ensure_dir(fs, posixpath.dirname(tmp))
    with fs.open_output_stream(tmp) as fh:
        fh.write(data)
    commit(fs, tmp, path)


def delete_quietly(fs: pafs.FileSystem, path: str) -> None:
    try:
        info = fs.get_file_info(path)
        if info.type == pafs.FileType.Directory:
            fs.delete_dir(path)
        elif info.type == pafs.FileType.File:
            fs.delete_file(path)
    except OSError:
        pass


def check_writable(fs: pafs.FileSystem, root: str, url: str) -> None:
    """Raise :class:`UserError` unless a file can be written (and removed) under ``root``.

    Leaves nothing behind: the probe file, and the ``_tmp/`` folder and root folder if this call
    created them, are removed again.
    """
    tmp_dir = join(root, TMP_DIR)
    created = [p for p in (tmp_dir, root) if is_local(fs) and not exists(fs, p)]
    probe = join(tmp_dir, f".probe-{uuid.uuid4().hex}")
    try:
        ensure_dir(fs, tmp_dir)
        with fs.open_output_stream(probe) as fh:
            fh.write(b"")
        fs.delete_file(probe)
    except (OSError, PermissionError) as err:
        reason = str(err).splitlines()[0] if str(err) else type(err).__name__
        raise UserError(f"--out: cannot write to {safe_url(url)!r} ({reason})") from None
    finally:
        for path in created:  # innermost first; only if still empty
            if exists(fs, path) and not list_dir(fs, path):
                delete_quietly(fs, path)
