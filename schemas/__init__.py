"""Data schemas shared by the factory and the models: the label table and dataset record layouts
(:mod:`schemas.dataset`: the manifest, shard records, field specs and the wids index;
:mod:`schemas.index`: the rows of ``index.parquet``).

The label table (``labels.json``) is the one place where class ids and names are defined. A *scheme*
maps the full table onto the classes a dataset stores (the SimAQ reference uses 4 classes).

Table version 2 added the sample mount's classes (ids 7 ``capillary``, 8 ``medium``): they are not
cell, so ``full`` and ``simaq4`` map them to background (a network trained on them learns that a
capillary's lumen is not cell, without learning two more classes); the ``mount`` scheme keeps them.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from functools import cache
from importlib import resources

import numpy as np

_DATASET_TYPES = ("FieldSpec", "Manifest", "RootedShard", "ShardRecord", "WidsIndex")


def __getattr__(name: str):
    """The dataset types of :mod:`schemas.dataset`, imported on first use: the label table needs no
    pydantic (a GPU machine that only trains or benchmarks the network may not have it)."""
    if name in _DATASET_TYPES:
        import schemas.dataset

        return getattr(schemas.dataset, name)
    raise AttributeError(f"module 'schemas' has no attribute {name!r}")


LABELS_FILE = "labels.json"


@cache
def label_table() -> dict:
    """The full label table as stored in ``schemas/labels.json`` (a JSON-safe dict)."""
    with resources.files(__package__).joinpath(LABELS_FILE).open("r", encoding="utf-8") as fh:
        return json.load(fh)


# Class ids of the full table, for code that places objects (phantom) or measures them.
BACKGROUND, CYTOPLASM, VACUOLE, LIPID_DROPLET, NUCLEUS, MITOCHONDRION, CELL_WALL = range(7)
# Classes of the sample mount (table version 2): glass of a capillary, medium in its lumen.
CAPILLARY, MEDIUM = 7, 8
#: Number of classes of the cell itself (ids 0..6) and of the whole table.
NUM_CELL_CLASSES = 7
NUM_CLASSES = 9
IGNORE_INDEX = -1


@dataclass(frozen=True)
class LabelScheme:
    """A mapping from the full label table to the classes stored in a dataset.

    ``lut[full_id]`` is the stored id; ``names[stored_id]`` its name.
    """

    name: str
    lut: tuple[int, ...]
    names: tuple[str, ...]

    @property
    def num_classes(self) -> int:
        return len(self.names)

    def apply(self, labels: np.ndarray) -> np.ndarray:
        """Map a uint8 label volume of the full table onto this scheme (same shape, uint8)."""
        return np.asarray(self.lut, dtype=np.uint8)[labels]

    def to_json(self) -> dict:
        """The scheme as recorded in a dataset manifest or a model checkpoint."""
        return {
            "table": label_table()["name"],
            "table_version": label_table()["version"],
            "scheme": self.name,
            "classes": [{"id": i, "name": n} for i, n in enumerate(self.names)],
            "map_from_full": list(self.lut),
            "ignore_index": IGNORE_INDEX,
        }


def label_scheme(name: str = "full") -> LabelScheme:
    """Return the named label scheme (``full``, ``simaq4`` or ``mount``); ValueError names unknown
    ones."""
    table = label_table()
    schemes = table["schemes"]
    if name not in schemes:
        raise ValueError(f"labels.scheme: unknown label scheme {name!r} (known: {sorted(schemes)})")
    full_names = {c["id"]: c["name"] for c in table["classes"]}
    mapping = {int(k): int(v) for k, v in schemes[name]["map"].items()}
    lut = tuple(mapping[i] for i in sorted(full_names))
    stored = sorted(set(lut))
    if stored != list(range(len(stored))):
        raise ValueError(f"labels.scheme: scheme {name!r} does not map onto consecutive ids")
    # A stored class takes the name of the lowest full id mapped to it; cytoplasm merged with other
    # cell classes is "cell".
    names = []
    for sid in stored:
        members = [i for i in full_names if lut[i] == sid]
        first = min(members)
        merged = first == CYTOPLASM and len(members) > 1
        names.append("cell" if merged else full_names[first])
    return LabelScheme(name=name, lut=lut, names=tuple(names))
