"""Config section ``dataset``: size, splits, shards, stored fields, their dtypes and compression.

A dataset of ``num_samples`` samples is cut into contiguous index ranges, one per split, in the
order ``train, val, test`` (then any other split names, alphabetically); each split's range is cut
into shards of ``shard_size`` samples. So a shard holds one split only and a fixed range of indices,
and its bytes are a pure function of (config, seed, range).

Stored fields are ``.npy`` arrays (or ``.npy.gz`` with ``compression: gzip``: one gzip stream per
field, which ``webdataset``'s default decoder reads) plus ``meta.json``. Float fields are stored as
float32 or float16 (LAC in 1/µm, optical depths and reconstructions all fit float16's range; its
relative precision is 2**-11 ≈ 4.9e-4); ``labels`` is always uint8.
"""

from __future__ import annotations

import math
import re
from typing import Literal

from pydantic import Field, model_validator

from factory.params import StrictModel

SPLIT_ORDER = ("train", "val", "test")
_SPLIT_RE = re.compile(r"^[a-z][a-z0-9_]{0,31}$")
_SEMVER_RE = re.compile(r"^(0|[1-9]\d*)\.(0|[1-9]\d*)\.(0|[1-9]\d*)(?:-[0-9A-Za-z.-]+)?$")

FloatDtype = Literal["float16", "float32"]
FieldName = Literal["phantom", "labels", "sinogram", "recon", "noisy"]


class FieldDtypes(StrictModel):
    """On-disk dtype of each float field (computation is always float32)."""

    phantom: FloatDtype = "float32"
    sinogram: FloatDtype = "float32"
    recon: FloatDtype = "float32"
    noisy: FloatDtype = "float32"


class DatasetConfig(StrictModel):
    """How samples become a versioned WebDataset (see the module docstring for the layout)."""

    version: str = Field("1.0.0", description="dataset version, semver MAJOR.MINOR.PATCH")
    num_samples: int = Field(64, ge=1, description="number of samples (CLI --samples)")
    shard_size: int = Field(
        16, ge=1, le=1_000_000, description="samples per shard (last may be short)"
    )
    splits: dict[str, float] = Field(
        default_factory=lambda: {"train": 0.9, "val": 0.05, "test": 0.05},
        description="split name → fraction of num_samples; fractions sum to 1",
    )
    fields: tuple[FieldName, ...] = Field(
        ("phantom", "labels", "sinogram", "recon"), description="fields written per sample"
    )
    dtypes: FieldDtypes = FieldDtypes()
    compression: Literal["none", "gzip"] = Field(
        "none", description="none: NAME.npy; gzip: NAME.npy.gz (one gzip stream per field, mtime 0)"
    )
    compress_level: int = Field(6, ge=1, le=9, description="gzip level")
    torch_threads: int = Field(
        1,
        ge=1,
        le=256,
        description="torch intra-op threads per worker; pinned in both executors so results that "
        "depend on reduction order are bit-identical",
    )

    @model_validator(mode="after")
    def _check(self) -> DatasetConfig:
        if not _SEMVER_RE.match(self.version):
            raise ValueError(f"version: must be semver MAJOR.MINOR.PATCH, got {self.version!r}")
        if not self.splits:
            raise ValueError("splits: give at least one split")
        for name, frac in self.splits.items():
            if not _SPLIT_RE.match(name):
                raise ValueError(
                    f"splits: split name {name!r} must match [a-z][a-z0-9_]* (at most 32 chars)"
                )
            if not (math.isfinite(frac) and 0.0 <= frac <= 1.0):
                raise ValueError(f"splits.{name}: fraction must be in [0, 1], got {frac}")
        total = sum(self.splits.values())
        if not math.isclose(total, 1.0, abs_tol=1e-6):
            raise ValueError(f"splits: fractions must sum to 1, got {total:g}")
        if not self.fields:
            raise ValueError("fields: give at least one field")
        if len(set(self.fields)) != len(self.fields):
            raise ValueError(f"fields: duplicate field names in {list(self.fields)}")
        return self

    def check_with(self, config) -> None:
        """Cross-section checks (called by :class:`factory.config.SimConfig`)."""
        acq = getattr(config, "acquisition", None)
        if (
            "noisy" in self.fields
            and acq is not None
            and not getattr(acq, "keep_noisy_volume", True)
        ):
            raise ValueError("dataset.fields: 'noisy' needs acquisition.keep_noisy_volume: true")

    def split_names(self) -> list[str]:
        """Split names in range order: train, val, test, then others alphabetically."""
        known = [s for s in SPLIT_ORDER if s in self.splits]
        return known + sorted(s for s in self.splits if s not in SPLIT_ORDER)

    def dtype_of(self, field: str) -> str:
        """The on-disk dtype of ``field`` (``uint8`` for labels)."""
        return "uint8" if field == "labels" else getattr(self.dtypes, field)

    def member_name(self, field: str) -> str:
        """The tar member suffix of ``field`` (``recon.npy`` or ``recon.npy.gz``)."""
        return f"{field}.npy.gz" if self.compression == "gzip" else f"{field}.npy"
