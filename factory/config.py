"""The one configuration model of the factory: validated, hashed, loaded from presets or files.

A config is a tree of strict pydantic models (unknown keys are errors). Each stage owns its section:
``phantom`` (:mod:`factory.phantom.config`), ``acquisition`` and ``reconstruction``
(:mod:`factory.acquisition.config`), ``dataset`` (:mod:`factory.dataset.config`). Random quantities
are :class:`Dist` values, drawn with the stage's random streams (:mod:`factory.rng`).

Array convention everywhere: volumes are (Z, Y, X) with **Y the tilt axis**; the beam runs along Z
at 0°. Lengths are in voxels unless a field name says otherwise (``_nm``, ``_um``); LAC in 1/µm.
"""

from __future__ import annotations

import hashlib
import json
from importlib import resources
from pathlib import Path

import yaml
from pydantic import Field, ValidationError, model_serializer, model_validator

from factory.acquisition.config import AcquisitionConfig, ReconstructionConfig
from factory.dataset.config import DatasetConfig
from factory.errors import ConfigError
from factory.params import Dist, StrictModel  # noqa: F401  (Dist re-exported)
from factory.phantom.config import CapillaryMount, GridMount, PhantomConfig


class GridConfig(StrictModel):
    """The voxel grid shared by phantom, acquisition and reconstruction."""

    shape: tuple[int, int, int] = Field(description="(Z, Y, X) in voxels; Y is the tilt axis")
    voxel_nm: float = Field(gt=0, description="isotropic voxel edge in nm")

    @model_validator(mode="after")
    def _check(self) -> GridConfig:
        for axis, n in zip("ZYX", self.shape, strict=True):
            if n < 8:
                raise ValueError(f"shape[{axis}] must be >= 8 voxels, got {n}")
        return self

    @property
    def voxel_um(self) -> float:
        return self.voxel_nm * 1e-3


class LabelsConfig(StrictModel):
    scheme: str = Field(
        "full", description="label scheme of schemas/labels.json: full, simaq4 or mount"
    )

    @model_validator(mode="after")
    def _check(self) -> LabelsConfig:
        from schemas import label_scheme

        label_scheme(self.scheme)
        return self


class SimConfig(StrictModel):
    """The whole, fully resolved configuration of a dataset."""

    name: str = Field(description="preset or experiment name, recorded in the manifest")
    energy_ev: float = Field(
        517.0, ge=284.0, le=543.0, description="photon energy in eV (water window)"
    )
    grid: GridConfig
    labels: LabelsConfig = LabelsConfig()
    mount: GridMount | CapillaryMount = Field(
        GridMount(),
        discriminator="kind",
        description="the sample mount: grid (ice slab, limited tilt; default) or capillary (glass "
        "capillary along the tilt axis, medium, full rotation)",
    )
    phantom: PhantomConfig = PhantomConfig()
    acquisition: AcquisitionConfig = AcquisitionConfig()
    reconstruction: ReconstructionConfig = ReconstructionConfig()
    dataset: DatasetConfig = DatasetConfig()

    @model_validator(mode="after")
    def _check_sections(self) -> SimConfig:
        """Cross-field checks: a section may define ``check_with(config)`` (e.g. vs the grid)."""
        for name in ("mount", "phantom", "acquisition", "reconstruction", "dataset"):
            check = getattr(getattr(self, name), "check_with", None)
            if check is not None:
                check(self)
        return self

    @model_serializer(mode="wrap")
    def _drop_default_mount(self, handler):
        """The default mount (a bare grid, today's behaviour) is left out of the resolved config, so
        configs written before mounts existed keep their JSON and sha256 (it parses back to it)."""
        data = handler(self)
        if self.mount == GridMount():
            data.pop("mount", None)
        return data

    def to_json(self) -> dict:
        """The resolved config as a JSON-safe dict (what the manifest records)."""
        return self.model_dump(mode="json")

    @property
    def sha256(self) -> str:
        """sha256 of the canonical JSON of the resolved config."""
        return config_sha256(self.to_json())


def config_sha256(data: dict) -> str:
    canon = json.dumps(data, sort_keys=True, separators=(",", ":"), ensure_ascii=True)
    return hashlib.sha256(canon.encode()).hexdigest()


def _format_validation_error(err: ValidationError) -> str:
    first = err.errors()[0]
    loc = ".".join(str(p) for p in first["loc"] if not str(p).startswith("function-"))
    msg = first["msg"].removeprefix("Value error, ")
    value = first.get("input")
    shown = repr(value) if not isinstance(value, dict) else "{...}"
    more = f" (and {len(err.errors()) - 1} more)" if len(err.errors()) > 1 else ""
    return f"config field {loc or '<root>'}: {msg}; got {shown}{more}"


_DIST_KINDS = ("const", "normal", "uniform", "choice")


def deep_merge(base: dict, over: dict) -> dict:
    """Merge ``over`` into ``base``; a dict naming a Dist kind replaces the old value whole."""
    out = dict(base)
    for k, v in over.items():
        merge = isinstance(v, dict) and isinstance(out.get(k), dict)
        if merge and not any(kind in v for kind in _DIST_KINDS):
            out[k] = deep_merge(out[k], v)
        else:
            out[k] = v
    return out


def parse_config(data: dict, overrides: dict | None = None):
    """Validate a config dict (plus optional nested ``overrides``) into a SimConfig.

    Raises :class:`ConfigError` with a one-line message naming the field and the value.
    """
    if not isinstance(data, dict):
        raise ConfigError(f"config: must be a mapping, got {type(data).__name__}")
    if overrides:
        data = deep_merge(data, overrides)
    try:
        return SimConfig.model_validate(data)
    except ValidationError as err:
        raise ConfigError(_format_validation_error(err)) from None
    except ValueError as err:  # raised by validators outside pydantic's wrapping
        raise ConfigError(f"config: {err}") from None


def preset_names() -> list[str]:
    files = resources.files("factory").joinpath("presets").iterdir()
    return sorted(p.name.removesuffix(".yaml") for p in files if p.name.endswith(".yaml"))


def _read_yaml(text: str, source: str) -> dict:
    try:
        data = yaml.safe_load(text)
    except yaml.YAMLError as err:
        raise ConfigError(f"config {source}: not valid YAML/JSON ({err})") from None
    if not isinstance(data, dict):
        raise ConfigError(f"config {source}: must be a mapping at the top level")
    return data


def load_preset(name: str, overrides: dict | None = None):
    """Load a preset shipped in ``factory/presets/NAME.yaml``."""
    if name not in preset_names():
        raise ConfigError(f"preset: unknown preset {name!r} (known: {', '.join(preset_names())})")
    text = resources.files("factory").joinpath("presets", f"{name}.yaml").read_text("utf-8")
    return parse_config(_read_yaml(text, f"preset {name}"), overrides)


def load_config(path: str | Path, overrides: dict | None = None):
    """Load a config file (YAML or JSON)."""
    p = Path(path)
    if not p.is_file():
        raise ConfigError(f"config: file not found: {str(p)!r}")
    return parse_config(_read_yaml(p.read_text("utf-8"), str(p)), overrides)


def parse_overrides(items: list[str]) -> dict:
    """Turn ``["acquisition.dose=1000", "grid.shape=[64,64,64]"]`` into a nested dict (YAML values)."""
    out: dict = {}
    for item in items:
        if "=" not in item:
            raise ConfigError(f"expected KEY=VALUE, got {item!r}", param="set")
        key, raw = item.split("=", 1)
        node = out
        parts = key.strip().split(".")
        if not all(parts):
            raise ConfigError(f"expected KEY=VALUE with a dotted KEY, got {item!r}", param="set")
        for part in parts[:-1]:
            node = node.setdefault(part, {})
            if not isinstance(node, dict):
                raise ConfigError(
                    f"{key.strip()!r} conflicts with another `set` of {part!r}", param="set"
                )
        try:
            node[parts[-1]] = yaml.safe_load(raw)
        except yaml.YAMLError as err:
            why = str(getattr(err, "problem", "") or "not valid YAML")
            raise ConfigError(
                f"{key.strip()}: value {raw!r} is not valid YAML ({why})", param="set"
            ) from None
    return out
