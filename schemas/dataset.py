"""The dataset layer's types: the manifest (``manifest.json``), its shard records and field specs,
and the derived WebDataset/wids index (``wids.json``).

Everything a reader needs to trust a manifest is checked here, as pydantic validators: the format
version, the required keys and their types, shard urls that stay inside the dataset root, sample
index ranges that do not overlap and fit 9-digit keys, counts that add up, ``content_sha256``
against the shard checksums, and field specs with a plain numeric ``dtype`` and a ``shape_max`` of
sizes. A failed check is a :class:`pydantic.ValidationError` whose message names the field and the
value; :func:`factory.dataset.manifest.validate_manifest` turns it into one ``DatasetError`` line.

Format version 2 (:data:`FORMAT_VERSION`); version 1 is read too (:data:`READ_VERSIONS`). The two
have the same layout: they differ in how the content was drawn (format 2: each part of a phantom
draws from its own sub-stream, :data:`factory.rng.SEED_RULE`; a format-1 dataset's samples differ
at the same seed). Manifests written before ``wids.json`` existed also hold the wids keys (``__kind__``, ``wids_version``, ``shardlist``): they are accepted and ignored
(:data:`LEGACY_KEYS`); the shard list is ``shards`` alone, and ``wids.json`` is derived from it.
"""

from __future__ import annotations

import hashlib
import re
from typing import Annotated, Any, Literal

import numpy as np
from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

#: The format written. 2: per-part phantom sub-streams (the samples differ from format 1 at the same
#: seed and config); the files' layout is that of format 1.
FORMAT_VERSION = 2
#: The formats read (same layout; they differ only in how the content was drawn).
READ_VERSIONS = (1, 2)
MANIFEST_NAME = "manifest.json"
WIDS_NAME = "wids.json"
WIDS_KIND = "wids-shard-index-v1"
#: Keys of format-1 manifests written before ``wids.json``: accepted and dropped when read.
LEGACY_KEYS = ("__kind__", "wids_version", "shardlist")
MAX_KEY = 10**9  # sample keys are 9 digits
MAX_NDIM = 32
_HEX64 = re.compile(r"^[0-9a-f]{64}$")
_NPY_KINDS = "biufc"  # bool, signed/unsigned integers, floats, complex


class Strict(BaseModel):
    """Base of the dataset types: strict types (no coercion: ``"3"`` or ``True`` is not an
    integer), unknown keys refused, instances immutable."""

    model_config = ConfigDict(extra="forbid", frozen=True, strict=True)


Count = Annotated[int, Field(ge=0)]
Size = Annotated[int, Field(ge=0)]


def url_problem(url: Any) -> str | None:
    """Why ``url`` is not a plain relative path inside the dataset root (None if it is)."""
    if not isinstance(url, str) or not url:
        return f"must be a non-empty string, got {url!r}"
    bad = (
        url.startswith(("/", "~"))
        or "\\" in url
        or ":" in url
        or any(ord(c) < 32 for c in url)
        or any(part in ("", ".", "..") for part in url.split("/"))
    )
    if bad:
        return (
            f"{url[:200]!r} must be a relative path inside the dataset root "
            "(no '..', no absolute path, no scheme)"
        )
    return None


def _relative_url(url: str) -> str:
    why = url_problem(url)
    if why is not None:
        raise ValueError(why)
    return url


def _hex64(v: str) -> str:
    if not _HEX64.match(v):
        raise ValueError(f"must be 64 hex digits, got {v[:80]!r}")
    return v


def plain_dtype(dtype: np.dtype) -> bool:
    """True for the dtypes a shard may hold: bool, integers, floats, complex (no objects, records,
    strings, sub-arrays, dates)."""
    return (
        dtype.kind in _NPY_KINDS
        and not dtype.hasobject
        and dtype.names is None
        and dtype.subdtype is None
    )


class ShardRecord(Strict):
    """One shard of a dataset: where it is (relative to the dataset root), which split and sample
    indices ``[first_index, first_index + nsamples)`` it holds, its size and sha256."""

    url: str
    split: str
    first_index: Count
    nsamples: Annotated[int, Field(ge=1)]
    bytes: Size
    sha256: str

    _url = field_validator("url")(_relative_url)
    _sha = field_validator("sha256")(_hex64)

    @model_validator(mode="after")
    def _nine_digit_keys(self) -> ShardRecord:
        if self.first_index + self.nsamples > MAX_KEY:
            raise ValueError(
                f"index range [{self.first_index}, {self.first_index + self.nsamples}) "
                "exceeds 9-digit keys"
            )
        return self

    @property
    def end_index(self) -> int:
        """One past the last sample index of the shard."""
        return self.first_index + self.nsamples

    def wids_entry(self) -> WidsShard:
        return WidsShard(url=self.url, nsamples=self.nsamples, filesize=self.bytes,
                         sha256=self.sha256)  # fmt: skip


class RootedShard(ShardRecord):
    """A shard of one dataset of a mixture (training on several datasets): ``root`` is that
    dataset's root url. Never part of a manifest (a manifest's shards lie under its own root)."""

    root: str

    @classmethod
    def of(cls, rec: ShardRecord, root: str) -> RootedShard:
        return cls(**rec.model_dump(), root=root)


class FieldSpec(Strict):
    """A field of the samples (``recon``, ``labels``, ``meta``, ...): its tar member suffix and
    encoding, and for arrays the dtype and the shape range over the dataset (``shape``: the sizes
    every sample shares, None where they differ). Readers bound what they decode by ``dtype`` and
    ``shape_max``; every key is optional (``meta`` has no dtype)."""

    member: str | None = None
    encoding: str | None = None
    dtype: str | None = None
    shape: list[int | None] | None = None
    shape_min: list[Size] | None = None
    shape_max: list[Size] | None = None
    axes: str | None = None
    units: str | None = None

    @field_validator("dtype")
    @classmethod
    def _plain_dtype(cls, dt: str) -> str:
        try:
            ok = plain_dtype(np.dtype(dt)) and str(np.dtype(dt)) == dt
        except (TypeError, ValueError, SyntaxError):
            ok = False
        if not ok:
            raise ValueError(
                f"{dt[:80]!r} is not a plain numeric dtype name (e.g. 'float16', 'uint8')"
            )
        return dt

    @field_validator("shape", "shape_min", "shape_max")
    @classmethod
    def _ndim(cls, v: list) -> list:
        if len(v) > MAX_NDIM:
            raise ValueError(f"has {len(v)} dimensions, more than {MAX_NDIM}")
        return v

    def dump(self) -> dict:
        """The JSON form (keys not given left out)."""
        return self.model_dump(mode="json", exclude_none=True)


def content_sha256(shards) -> str:
    """sha256 over the sorted lines ``"{sha256} {url}"`` of the shards (sha256sum order); shards
    are :class:`ShardRecord` or their JSON dicts."""

    def line(s) -> str:
        return f"{s['sha256']} {s['url']}" if isinstance(s, dict) else f"{s.sha256} {s.url}"

    lines = sorted(line(s) for s in shards)
    return hashlib.sha256("\n".join(lines).encode()).hexdigest()


class Manifest(Strict):
    """``manifest.json``: what a dataset is (name, version, code, resolved config and seed), what
    its samples hold (labels, fields) and where they are (splits, shards), with the checksums that
    let a reader trust it. Written last by ``simaq generate``; see the module docstring for the
    checks.

    Unknown top-level keys are ignored (never read, never followed: a manifest carrying, say,
    credentials or an endpoint changes nothing), so tools may annotate a manifest; shard records,
    field specs and the wids index refuse unknown keys, since a key a reader does not know could
    change what a shard is or how its members are bounded.
    """

    model_config = ConfigDict(extra="ignore")

    format_version: Literal[1, 2]
    name: str
    version: str
    created: str
    code: dict[str, Any]
    config: dict[str, Any]
    config_sha256: str
    seed: Count
    seed_rule: str
    labels: dict[str, Any]
    fields: dict[str, FieldSpec]
    splits: dict[str, Count]
    shards: list[ShardRecord]
    num_samples: Count
    content_sha256: str
    class_fractions: dict[str, float] | None = None
    index: str | None = None
    card: str | None = None

    @model_validator(mode="before")
    @classmethod
    def _version_first(cls, data: Any) -> Any:
        """Refuse a format this reader does not know before anything else; drop legacy keys."""
        if not isinstance(data, dict):
            raise ValueError(f"must be a JSON object, got {type(data).__name__}")
        v = data.get("format_version")
        if "format_version" in data and (type(v) is not int or v not in READ_VERSIONS):
            raise ValueError(
                f"format_version {repr(v)[:40]} is not supported "
                f"(this reader knows {', '.join(map(str, READ_VERSIONS))})"
            )
        if any(k in data for k in LEGACY_KEYS):
            data = {k: v for k, v in data.items() if k not in LEGACY_KEYS}
        return data

    @model_validator(mode="after")
    def _consistent(self) -> Manifest:
        seen: set[str] = set()
        for i, s in enumerate(self.shards):
            if s.url in seen:
                raise ValueError(f"shard {s.url!r} listed twice")
            seen.add(s.url)
            if s.split not in self.splits:
                raise ValueError(f"shards[{i}].split {s.split!r} is not in splits")
        ranges = sorted((s.first_index, s.end_index, s.url) for s in self.shards)
        for (_, end, a), (start, _, b) in zip(ranges, ranges[1:], strict=False):
            if start < end:
                raise ValueError(f"shards {a!r} and {b!r} overlap in sample indices")
        total = sum(s.nsamples for s in self.shards)
        if self.num_samples != total:
            raise ValueError(f"num_samples {self.num_samples} != sum over shards {total}")
        for split, count in self.splits.items():
            got = sum(s.nsamples for s in self.shards if s.split == split)
            if count != got:
                raise ValueError(f"splits.{split} is {count} but its shards hold {got}")
        if self.content_sha256 != content_sha256(self.shards):
            raise ValueError("content_sha256 does not match the shard checksums")
        return self

    def dump(self) -> dict:
        """The JSON form written as ``manifest.json`` (field specs without their unset keys)."""
        out = self.model_dump(mode="json", exclude_none=True)
        out["fields"] = {k: v.dump() for k, v in self.fields.items()}
        return out

    def split_shards(self, split: str) -> list[ShardRecord]:
        """The shard records of ``split``, in manifest order."""
        return [s for s in self.shards if s.split == split]

    @property
    def total_bytes(self) -> int:
        return sum(s.bytes for s in self.shards)

    def wids_index(self) -> WidsIndex:
        """The wids shard index of this dataset (``wids.json``), derived from :attr:`shards`."""
        return WidsIndex(name=self.name, shardlist=[s.wids_entry() for s in self.shards])


class WidsShard(Strict):
    """One entry of a wids ``shardlist`` (``filesize`` is the shard's ``bytes``)."""

    url: str
    nsamples: Annotated[int, Field(ge=1)]
    filesize: Size
    sha256: str | None = None

    _url = field_validator("url")(_relative_url)


class WidsIndex(Strict):
    """``wids.json``: the dataset's shards as the WebDataset ``wids`` package reads them
    (``{"__kind__": "wids-shard-index-v1", "wids_version": 1, "name", "shardlist"}``)."""

    model_config = ConfigDict(populate_by_name=True)

    kind: Literal["wids-shard-index-v1"] = Field(WIDS_KIND, alias="__kind__")
    wids_version: Literal[1] = 1
    name: str
    shardlist: list[WidsShard]

    def dump(self) -> dict:
        return self.model_dump(mode="json", by_alias=True, exclude_none=True)

    def mismatch(self, want: WidsIndex) -> str | None:
        """Where this index differs from ``want`` (the manifest's), or None if it agrees."""
        if self.name != want.name:
            return f"name {self.name[:80]!r} != {want.name[:80]!r}"
        if len(self.shardlist) != len(want.shardlist):
            return f"{len(self.shardlist)} shards, the manifest has {len(want.shardlist)}"
        for i, (a, b) in enumerate(zip(self.shardlist, want.shardlist, strict=True)):
            if a != b:
                return (
                    f"shardlist[{i}] {a.model_dump(exclude_none=True)} != "
                    f"{b.model_dump(exclude_none=True)} in the manifest"
                )
        return None


def error_lines(err, what: str) -> str:
    """One line for a :class:`pydantic.ValidationError` of ``what`` (e.g. ``manifest``): the first
    problem with its place (``shards[2].sha256``) and value; missing top-level keys listed
    together."""
    errors = err.errors(include_url=False)
    missing = [e["loc"][0] for e in errors if e["type"] == "missing" and len(e["loc"]) == 1]
    if missing:
        return f"{what}: missing keys {missing}"
    e = errors[0]
    where = _loc(e["loc"])
    msg = e["msg"]
    if e["type"] == "value_error":  # our own message: it names the value
        text = msg.removeprefix("Value error, ")
        return f"{what}: {where + ' ' if where else ''}{text}"
    if e["type"] == "extra_forbidden":
        return f"{what}: {where} is not a known key"
    shown = repr(e.get("input"))
    shown = shown if len(shown) <= 80 else shown[:77] + "..."
    more = f" (and {len(errors) - 1} more problems)" if len(errors) > 1 else ""
    return f"{what}: {where}: {msg[:1].lower() + msg[1:]}, got {shown}{more}"


def _loc(loc: tuple) -> str:
    out = ""
    for part in loc:
        if isinstance(part, int):
            out += f"[{part}]"
        else:
            out += f".{part}" if out else str(part)
    return out
