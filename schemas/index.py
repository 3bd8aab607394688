"""Schema of a dataset's ``index.parquet``: one row per sample, to filter with any Parquet reader.

Fixed columns (always present, in this order):

=============  ========  ===================================================================
column         type      meaning
=============  ========  ===================================================================
key            string    the sample's WebDataset key: its global index on 9 digits
index          int64     the global sample index (the seed rule's ``sample_index``)
split          string    the split the sample belongs to
shard          string    the shard holding it, relative to the dataset root
n_angles       int32     projections in its sinogram (projections are dropped at random)
frac.<class>   float32   fraction of the volume's voxels in each class of the label scheme
=============  ========  ===================================================================

Parameter columns follow, sorted by name: every *scalar* drawn value in the sample's metadata
sections ``phantom``, ``acquisition`` and ``reconstruction``, flattened to a dotted path
(``acquisition.tilt.range_deg``); lists and nested lists are left out (they stay in ``meta.json``).
A column holding only booleans is ``bool``, only integers ``int64``, any other numbers ``float64``,
anything else ``string``; a sample without the value has a null.
"""

from __future__ import annotations

import json
import math
from collections.abc import Iterable, Mapping

INDEX_FORMAT_VERSION = 1
PARAM_SECTIONS = ("phantom", "acquisition", "reconstruction")
FRACTION_PREFIX = "frac."
REQUIRED = ("key", "index", "split", "shard")


def fixed_fields(class_names: Iterable[str]) -> list[tuple[str, str]]:
    """The fixed ``(column, arrow type name)`` pairs for a label scheme's class names."""
    cols = [
        ("key", "string"),
        ("index", "int64"),
        ("split", "string"),
        ("shard", "string"),
        ("n_angles", "int32"),
    ]
    return cols + [(f"{FRACTION_PREFIX}{name}", "float32") for name in class_names]


def flatten_params(meta: Mapping) -> dict[str, bool | int | float | str]:
    """Scalar leaves of ``meta[section]`` for each of :data:`PARAM_SECTIONS`, by dotted path."""
    out: dict[str, bool | int | float | str] = {}

    def walk(prefix: str, node) -> None:
        if isinstance(node, Mapping):
            for k, v in node.items():
                walk(f"{prefix}.{k}", v)
        elif isinstance(node, (bool, int, str)) or (
            isinstance(node, float) and math.isfinite(node)
        ):
            out[prefix] = node
        elif hasattr(node, "item") and getattr(node, "ndim", 1) == 0:  # numpy scalar
            walk(prefix, node.item())

    for section in PARAM_SECTIONS:
        if isinstance(meta.get(section), Mapping):
            walk(section, meta[section])
    return out


def param_type(values: Iterable) -> str:
    """The arrow type name of a parameter column from its non-null values (see module docstring)."""
    vals = [v for v in values if v is not None]
    if vals and all(isinstance(v, bool) for v in vals):
        return "bool"
    if vals and all(isinstance(v, int) and not isinstance(v, bool) for v in vals):
        return "int64"
    if vals and all(isinstance(v, (int, float)) and not isinstance(v, bool) for v in vals):
        return "float64"
    return "string"


def merge_types(type_names: Iterable[str]) -> str:
    """The type of a column whose parts (shards) have ``type_names``; same rule as :func:`param_type`.

    Each part's type comes from :func:`param_type` over its non-null values, so merging part types
    gives the type :func:`param_type` would give over all values at once.
    """
    kinds = set(type_names)
    if kinds == {"bool"}:
        return "bool"
    if kinds == {"int64"}:
        return "int64"
    if kinds and kinds <= {"int64", "float64"}:
        return "float64"
    return "string"


def param_types(rows: Iterable[Mapping]) -> dict[str, str]:
    """``{column: type name}`` of the parameter columns of ``rows`` (each with a ``params`` dict)."""
    values: dict[str, list] = {}
    for row in rows:
        for k, v in row["params"].items():
            values.setdefault(k, []).append(v)
    return {k: param_type(v) for k, v in sorted(values.items())}


def coerce(value, type_name: str):
    """A value converted to its column's type (strings of other types are their JSON text)."""
    if value is None:
        return None
    if type_name == "float64":
        return float(value)
    if type_name == "string" and not isinstance(value, str):
        return json.dumps(value)
    return value


def arrow_schema(columns: list[tuple[str, str]]):
    """A ``pyarrow.Schema`` from ``(name, type name)`` pairs."""
    import pyarrow as pa

    types = {
        "string": pa.string(),
        "int64": pa.int64(),
        "int32": pa.int32(),
        "float32": pa.float32(),
        "float64": pa.float64(),
        "bool": pa.bool_(),
    }
    return pa.schema(
        [pa.field(n, types[t], nullable=n not in REQUIRED) for n, t in columns],
        metadata={"simaq.index_format_version": str(INDEX_FORMAT_VERSION)},
    )
