"""Where datasets live: a local directory or an S3-compatible object store, through pyarrow.fs.

A :class:`Store` is one location: ``/path``, ``file:///path`` or ``s3://bucket/prefix``, resolved
once (a local path made absolute, an S3 URL checked) together with the S3 endpoint, which comes
from the ``endpoint`` argument, else from the environment variable ``SIMAQ_S3_ENDPOINT`` (e.g.
``http://127.0.0.1:9000``), else AWS's default. The command line builds every Store (the user's
URL and ``--endpoint-url``); library functions take a Store, or a plain path or URL that
:func:`as_store` turns into one. A Store is small, frozen and picklable: its pyarrow file system is
created on first use and never pickled, so a Ray worker re-creates it.

Credentials are never taken from arguments, URLs or manifests: pyarrow's S3 client reads them from
the environment (``AWS_ACCESS_KEY_ID``/``AWS_SECRET_ACCESS_KEY``) or the standard AWS config files,
and nothing here logs them (a URL or endpoint holding ``user:password@`` is refused).

Writes that readers may see are *committed*: written to a temporary name under the store's
``_tmp/`` folder, then moved into place (a rename on local disks; copy + delete on S3, where an
object only appears once complete).
"""

from __future__ import annotations

import os
import posixpath
import uuid
from dataclasses import dataclass
from urllib.parse import urlsplit

import pyarrow.fs as pafs

from factory.errors import UserError

ENDPOINT_ENV = "SIMAQ_S3_ENDPOINT"
TMP_DIR = "_tmp"


def _endpoint(endpoint_url: str | None) -> tuple[str, str] | None:
    """``(host[:port], scheme)`` of the S3 endpoint, or None for AWS's default."""
    if endpoint_url is None:
        return None
    parts = urlsplit(endpoint_url)
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise UserError(
            f"endpoint_url: expected http[s]://HOST[:PORT], got {safe_url(endpoint_url)!r}"
        )
    if parts.username or parts.password:
        raise UserError(
            "endpoint_url: must not contain credentials (use the environment or AWS config files)"
        )
    host = parts.hostname if parts.port is None else f"{parts.hostname}:{parts.port}"
    return host, parts.scheme


def safe_url(url: str | Store) -> str:
    """``url`` (a Store's) without any user:password part, for messages."""
    url = url.url if isinstance(url, Store) else str(url)
    parts = urlsplit(url)
    if parts.username or parts.password:
        netloc = parts.hostname or ""
        if parts.port is not None:
            netloc += f":{parts.port}"
        return parts._replace(netloc=netloc).geturl()
    return url


def _is_local_url(parts) -> bool:
    return parts.scheme in ("", "file") or (len(parts.scheme) == 1 and os.name == "nt")


def absolute_url(url: str) -> str:
    """``url`` with a local path made absolute against the current directory (``~`` expanded).

    Call it on every user path before Ray starts: Ray workers run in other working directories.
    ``s3://`` URLs are returned unchanged.
    """
    url = str(url)
    parts = urlsplit(url)
    if parts.scheme == "file":
        return os.path.abspath(os.path.expanduser(parts.path))
    if _is_local_url(parts):
        return os.path.abspath(os.path.expanduser(url)) if url else url
    return url


def _canonical_url(url: str) -> str:
    """An absolute local path, or ``s3://bucket[/prefix]``; other schemes, an empty path, an S3
    URL without a bucket or with credentials are a :class:`UserError`."""
    parts = urlsplit(url)
    if _is_local_url(parts):
        path = parts.path if parts.scheme == "file" else url
        if not path:
            raise UserError(f"path: empty path in {url!r}")
        return os.path.abspath(os.path.expanduser(path))
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
    return f"s3://{bucket}/{prefix}" if prefix else f"s3://{bucket}"


def _s3_filesystem(endpoint: str | None) -> pafs.S3FileSystem:
    region = os.environ.get("AWS_REGION") or os.environ.get("AWS_DEFAULT_REGION") or "us-east-1"
    kwargs: dict = {
        "region": region,
        "connect_timeout": 10.0,
        "request_timeout": 60.0,
        "retry_strategy": pafs.AwsStandardS3RetryStrategy(max_attempts=4),
    }
    ep = _endpoint(endpoint)
    if ep is not None:
        kwargs["endpoint_override"], kwargs["scheme"] = ep
    return pafs.S3FileSystem(**kwargs)


def _relative(parts) -> list[str]:
    """``parts`` without empty ones, each relative (a leading ``/`` never leaves the store)."""
    return [p.lstrip("/") for p in parts if p and p.lstrip("/")]


@dataclass(frozen=True)
class Store:
    """A local directory or an ``s3://bucket/prefix`` (see the module docstring).

    ``url`` is canonical after construction (an absolute local path without ``file://``, or
    ``s3://bucket[/prefix]`` without a trailing ``/``); ``endpoint`` is the S3 endpoint resolved
    from the argument or ``$SIMAQ_S3_ENDPOINT`` (None: AWS's default), refused if it holds
    credentials. Paths given to the methods are relative to the store (``""``: the store itself),
    written with ``/``.
    """

    url: str
    endpoint: str | None = None

    def __post_init__(self) -> None:
        endpoint = self.endpoint or os.environ.get(ENDPOINT_ENV) or None
        _endpoint(endpoint)  # checked now: never a credential kept in a Store
        object.__setattr__(self, "url", _canonical_url(str(self.url)))
        object.__setattr__(self, "endpoint", endpoint)
        object.__setattr__(self, "_fs", None)

    # pickled (to Ray workers) without the file system: each process creates its own
    def __getstate__(self) -> dict:
        return {"url": self.url, "endpoint": self.endpoint}

    def __setstate__(self, state: dict) -> None:
        object.__setattr__(self, "url", state["url"])
        object.__setattr__(self, "endpoint", state["endpoint"])
        object.__setattr__(self, "_fs", None)

    @property
    def is_local(self) -> bool:
        return not self.url.startswith("s3://")

    @property
    def path(self) -> str:
        """The store's path inside :attr:`fs` (``bucket/prefix`` on S3)."""
        return self.url if self.is_local else self.url[len("s3://") :]

    @property
    def fs(self) -> pafs.FileSystem:
        """The pyarrow file system, created on first use (per process)."""
        if self._fs is None:
            fs = pafs.LocalFileSystem() if self.is_local else _s3_filesystem(self.endpoint)
            object.__setattr__(self, "_fs", fs)
        return self._fs

    def child(self, *parts: str) -> Store:
        """The store at ``url/parts...`` (same endpoint and file system)."""
        sub = Store(self.url_of(*parts), self.endpoint)
        object.__setattr__(sub, "_fs", self._fs)
        return sub

    def parent(self) -> Store:
        """The store one folder up (the bucket for ``s3://bucket/key``)."""
        sub = Store(posixpath.dirname(self.url) or self.url, self.endpoint)
        object.__setattr__(sub, "_fs", self._fs)
        return sub

    def at(self, url: str | os.PathLike | Store) -> Store:
        """The store of another ``url`` with this one's endpoint (a Store is returned as is)."""
        return url if isinstance(url, Store) else Store(str(url), self.endpoint)

    def safe_url(self) -> str:
        """The URL for messages (never with a user:password part)."""
        return safe_url(self.url)

    @property
    def name(self) -> str:
        return posixpath.basename(self.path)

    def join(self, *parts: str) -> str:
        """The path inside :attr:`fs` of ``parts`` under the store."""
        return posixpath.join(self.path, *_relative(parts))

    def url_of(self, *parts: str) -> str:
        """The URL of ``parts`` under the store (for messages)."""
        return posixpath.join(self.url, *_relative(parts))

    def info(self, sub: str = "") -> pafs.FileInfo:
        return self.fs.get_file_info(self.join(sub))

    def exists(self, sub: str = "") -> bool:
        return self.info(sub).type != pafs.FileType.NotFound

    def is_file(self, sub: str = "") -> bool:
        return self.info(sub).type == pafs.FileType.File

    def list(self, sub: str = "", recursive: bool = False) -> list[pafs.FileInfo]:
        """Entries under ``sub`` (empty if it does not exist); their ``path`` is inside
        :attr:`fs`."""
        sel = pafs.FileSelector(self.join(sub), allow_not_found=True, recursive=recursive)
        return self.fs.get_file_info(sel)

    def ensure_dir(self, sub: str = "") -> None:
        """Create ``sub`` on a local disk (object stores have no directories)."""
        if self.is_local:
            self.fs.create_dir(self.join(sub), recursive=True)

    def read_bytes(self, sub: str = "") -> bytes:
        with self.fs.open_input_stream(self.join(sub)) as fh:
            return fh.read()

    def tmp_path(self, name: str) -> str:
        """A unique temporary name (relative) for ``name`` under the store's ``_tmp/`` folder,
        whose folder exists."""
        tmp = posixpath.join(TMP_DIR, f"{posixpath.basename(name)}.{uuid.uuid4().hex}.part")
        self.ensure_dir(TMP_DIR)
        return tmp

    def commit(self, tmp: str, final: str) -> None:
        """Move a completely written temporary file to its final name (both relative)."""
        self.ensure_dir(posixpath.dirname(final))
        self.fs.move(self.join(tmp), self.join(final))

    def write_bytes_atomic(self, sub: str, data: bytes) -> None:
        """Write ``data`` to ``sub`` so that readers see either nothing or all of it."""
        tmp = self.tmp_path(sub)
        with self.fs.open_output_stream(self.join(tmp)) as fh:
            fh.write(data)
        self.commit(tmp, sub)

    def delete(self, sub: str = "") -> None:
        """Remove the file or folder ``sub`` if it is there; errors are ignored."""
        try:
            path = self.join(sub)
            info = self.fs.get_file_info(path)
            if info.type == pafs.FileType.Directory:
                self.fs.delete_dir(path)
            elif info.type == pafs.FileType.File:
                self.fs.delete_file(path)
        except OSError:
            pass

    def check_writable(self) -> None:
        """Raise :class:`UserError` unless a file can be written (and removed) in the store.

        Leaves nothing behind: the probe file, and the ``_tmp/`` folder and root folder if this
        call created them, are removed again.
        """
        url = self.url
        created = [p for p in (TMP_DIR, "") if self.is_local and not self.exists(p)]
        probe = posixpath.join(TMP_DIR, f".probe-{uuid.uuid4().hex}")
        try:
            self.ensure_dir(TMP_DIR)
            with self.fs.open_output_stream(self.join(probe)) as fh:
                fh.write(b"")
            self.fs.delete_file(self.join(probe))
        except (OSError, PermissionError) as err:
            reason = str(err).splitlines()[0] if str(err) else type(err).__name__
            raise UserError(f"cannot write to {safe_url(url)!r} ({reason})", param="out") from None
        finally:
            for path in created:  # innermost first; only if still empty
                if self.exists(path) and not self.list(path):
                    self.delete(path)


def as_store(where: str | os.PathLike | Store) -> Store:
    """``where`` as a :class:`Store`: a Store is returned as it is; a local path or URL gets the
    endpoint of ``$SIMAQ_S3_ENDPOINT`` (if any)."""
    return where if isinstance(where, Store) else Store(os.fspath(where))


def is_local(fs: pafs.FileSystem) -> bool:
    return isinstance(fs, pafs.LocalFileSystem)
