"""A sample's records: its ``meta.json`` (:class:`SampleMeta`) and its row of ``index.parquet``
(:class:`IndexRow`).

``meta.json`` holds everything drawn to make the sample. Its top level and the parts readers use
(the grid, the phantom's counts, the placed objects) are typed and checked; the drawn parameters
of each acquisition effect and of the reconstruction are JSON objects keyed by effect name (their
keys change with the effects; :mod:`schemas.index` flattens their scalars into index columns).

A writer builds a :class:`SampleMeta` (a bug that writes a malformed record fails at once); a
reader validates ``meta.json`` with :meth:`SampleMeta.parse` and refuses a record whose ``index``
is not the sample's key. Numbers keep their JSON type (an integer stays an integer), so
``SampleMeta.parse(d).to_json() == d`` for every record a writer makes.
"""

from __future__ import annotations

from typing import Annotated, Any

from pydantic import BaseModel, ConfigDict, Field

Count = Annotated[int, Field(ge=0)]
#: A JSON number: an integer stays an integer (the record's bytes do not change when read back).
Number = int | float
#: (Z, Y, X): JSON arrays of three numbers, or of three sizes in voxels.
Vec3 = Annotated[list[Number], Field(min_length=3, max_length=3)]
Shape3 = Annotated[list[Annotated[int, Field(ge=1)]], Field(min_length=3, max_length=3)]


def plain_json(obj: Any) -> Any:
    """``obj`` with numpy scalars and arrays (anything with ``tolist``) turned into Python numbers
    and lists, tuples into lists, recursively; NaN is kept (unlike the fidelity report's
    ``json_safe``, which writes strict JSON)."""
    if isinstance(obj, dict):
        return {str(k): plain_json(v) for k, v in obj.items()}
    if isinstance(obj, list | tuple):
        return [plain_json(v) for v in obj]
    if hasattr(obj, "tolist") and not isinstance(obj, bool | int | float | str):
        return plain_json(obj.tolist())
    return obj


class _Record(BaseModel):
    """Base of the sample records: strict types (``"3"`` is not a number), immutable; parts whose
    keys vary with the config (``extra="allow"``) keep the keys they do not name."""

    model_config = ConfigDict(strict=True, frozen=True, extra="forbid", populate_by_name=True)


class GridMeta(_Record):
    """The voxel grid: ``shape`` (Z, Y, X) in voxels and the voxel size in nm."""

    shape: Shape3
    voxel_nm: Annotated[Number, Field(gt=0)]


class PhantomMeta(_Record):
    """The phantom's drawn scalars and counts (``factory.phantom.generate._meta``); further drawn
    parts (texture, jitter, per-cell draws, mount) are kept as they are."""

    model_config = ConfigDict(extra="allow")

    shape: Shape3
    voxel_nm: Annotated[Number, Field(gt=0)]
    energy_ev: Annotated[Number, Field(gt=0)]
    cells_requested: Count
    cells_placed: Count
    objects_per_class: dict[str, Count]
    voxels_per_label: dict[str, Count]


class PlacedObject(_Record):
    """One object the phantom placed: its class name (``class`` in JSON), its cell, and for
    ellipsoids the centre (Z, Y, X) and semi-axes in voxels and the LAC in 1/µm. Mitochondria are
    networks of segments: no centre or radii."""

    model_config = ConfigDict(extra="allow")

    kind: str = Field(alias="class")
    cell: Count
    centre_vox: Vec3 | None = None
    radii_vox: Vec3 | None = None
    lac_per_um: Number | None = None


class SampleMeta(_Record):
    """The record ``{key}.meta.json`` of one sample."""

    index: Annotated[int, Field(ge=0, lt=10**9)]
    seed: Count
    seed_rule: str
    config_sha256: Annotated[str, Field(pattern=r"^[0-9a-f]{64}$")]
    grid: GridMeta
    label_scheme: str
    phantom: PhantomMeta
    objects: list[PlacedObject]
    acquisition: dict[str, Any]
    reconstruction: dict[str, Any]

    @classmethod
    def build(cls, raw: dict) -> SampleMeta:
        """A writer's record from its parts (numpy scalars and arrays become JSON numbers and
        lists); a malformed record raises ``pydantic.ValidationError``."""
        return cls.model_validate(plain_json(raw))

    @classmethod
    def parse(cls, data: Any, *, index: int | None = None) -> SampleMeta:
        """Validate a decoded ``meta.json``; with ``index``, it must be that sample's record.

        Raises ``ValueError`` (a pydantic ``ValidationError`` or a mismatch) naming the field.
        """
        meta = cls.model_validate(data)
        if index is not None and meta.index != index:
            raise ValueError(f"index: the record says {meta.index}, its key says {index}")
        return meta

    def to_json(self) -> dict:
        """The JSON-safe dict written as ``meta.json`` (class names under ``class``)."""
        return self.model_dump(mode="json", by_alias=True, exclude_unset=True)


class IndexRow(_Record):
    """One sample's row of ``index.parquet`` as a shard writer records it (see :mod:`schemas.index`
    for the columns): ``class_voxels`` counts voxels per class of the label scheme; ``params`` are
    the flattened scalar draws."""

    key: Annotated[str, Field(pattern=r"^[0-9]{9}$")]
    index: Annotated[int, Field(ge=0, lt=10**9)]
    split: str
    shard: str
    n_angles: Count | None
    class_voxels: list[Count]
    params: dict[str, bool | int | float | str]
