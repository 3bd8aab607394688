"""``--suggest``: config overrides that move a dataset's preset towards a real tomogram.

Each rule reads the report's medians (synthetic) and the real volume's measurements and proposes a
``--set KEY=VALUE`` for the fields of :mod:`factory.acquisition.config` (and ``mount.kind`` once
that section exists; until then it is printed and marked pending):

* **dose** ``acquisition.noise.photons_per_pixel``: Poisson noise ∝ 1/sqrt(photons), so
  ``N_new = N_now · (ν_syn / ν_real)²`` with the noise-to-signal ratio ``ν = σ / sqrt(1 − σ²)``
  (σ: noise sd of :func:`metrics.noise_level` on the rank-normalised scale, whose total variance
  is 1). The rank normalisation compresses large differences, so for a dose far off the rule
  moves the right way but not all the way (100 → ~1000 photons when 5000 matches): run it again.
* **blur** ``acquisition.blur.sigma_vox``: an edge of width ``w`` has sharpness ∝ 1/w, with
  ``w² = w0² + σ²`` and ``w0² = 2`` voxels² (the 1-voxel smoothing of the measurement and about
  one voxel of reconstruction blur), so ``σ_new² = σ_now² + (w0² + σ_now²)(ρ² − 1)`` with
  ``ρ = S_syn / S_real`` (edge sharpness ratio), floored at 0.
* **tilt** ``acquisition.tilt.range_deg = 180 − 2α_real`` (α: estimated wedge half-angle).
* **mount** ``mount.kind=capillary`` and ``mount.outer_diameter_fov`` (the ring's diameter over
  the FOV width) when the real volume shows a capillary ring and fewer than half of the synthetic
  samples do (``grid`` in the opposite case). The cells must fit the capillary's lumen: on a preset
  made for grids this may also need smaller cells (or start from a capillary preset).

A rule proposes nothing when the two sides already agree within its tolerance.
"""

from __future__ import annotations

import math

import numpy as np

NOISE_TOL = math.log(1.15)
EDGE_TOL = math.log(1.08)
WEDGE_TOL_DEG = 5.0
W0_SQ = 2.0


def representative(dist) -> float:
    """One value of a config :class:`~factory.params.Dist` in its JSON form: the constant, the
    normal mean, the uniform midpoint or the median choice, clamped."""
    if isinstance(dist, (int, float)):
        return float(dist)
    if dist.get("const") is not None:
        v = dist["const"]
    elif dist.get("normal") is not None:
        v = dist["normal"][0]
    elif dist.get("uniform") is not None:
        v = 0.5 * (dist["uniform"][0] + dist["uniform"][1])
    else:
        v = float(np.median(dist["choice"]))
    if dist.get("clamp") is not None:
        v = min(max(v, dist["clamp"][0]), dist["clamp"][1])
    return float(v)


def field_exists(key: str) -> bool:
    """Whether the dotted ``key`` names a field of :class:`factory.config.SimConfig` (through
    unions of sections too, e.g. ``mount: GridMount | CapillaryMount``)."""
    import typing

    from pydantic import BaseModel

    from factory.config import SimConfig

    models = [SimConfig]
    for part in key.split("."):
        found = []
        for model in models:
            info = model.model_fields.get(part)
            if info is not None:
                found.extend(typing.get_args(info.annotation) or [info.annotation])
        if not found:
            return False
        models = [m for m in found if isinstance(m, type) and issubclass(m, BaseModel)]
        if not models and part != key.split(".")[-1]:
            return False
    return True


def _round(x: float, digits: int = 2) -> float:
    if x == 0 or not math.isfinite(x):
        return x
    return round(x, digits - 1 - int(math.floor(math.log10(abs(x)))))


def _item(key: str, value, reason: str) -> dict:
    return {"key": key, "value": value, "reason": reason, "exists": field_exists(key)}


def _nsr(sd: float) -> float:
    """Noise-to-signal ratio of a unit-variance volume whose noise sd is ``sd``."""
    sd = min(sd, 0.99)
    return sd / math.sqrt(1.0 - sd * sd)


def _noise_rule(acq: dict, syn: dict, real: dict) -> list[dict]:
    s, r = syn["noise_sd"]["median"], real["noise_sd"]
    if not (s > 0 and r > 0) or abs(math.log(s / r)) < NOISE_TOL:
        return []
    noise = acq.get("noise") or {}
    why = f"noise sd {s:.3g} vs real {r:.3g} (Poisson: photons ∝ 1/noise²)"
    if not noise.get("enabled", False):
        return [_item("acquisition.noise.enabled", True, why)] if s < r else []
    now = representative(noise.get("photons_per_pixel", 1e4))
    new = _round(min(max(now * (_nsr(s) / _nsr(r)) ** 2, 1.0), 1e9))
    return [_item("acquisition.noise.photons_per_pixel", new, f"{why}; now {now:g}")]


def _blur_rule(acq: dict, syn: dict, real: dict) -> list[dict]:
    s, r = syn["edge_sharpness_per_um"]["median"], real["edge_sharpness_per_um"]
    if not (s > 0 and r > 0) or abs(math.log(s / r)) < EDGE_TOL:
        return []
    blur = acq.get("blur") or {}
    now = representative(blur.get("sigma_vox", 1.0)) if blur.get("enabled", False) else 0.0
    new = math.sqrt(max(0.0, now**2 + (W0_SQ + now**2) * ((s / r) ** 2 - 1.0)))
    why = f"edge sharpness {s:.3g} vs real {r:.3g} /um; blur sigma now {now:g} vox"
    if new < 0.1:
        return [_item("acquisition.blur.enabled", False, why)] if now > 0 else []
    out = [] if blur.get("enabled", False) else [_item("acquisition.blur.enabled", True, why)]
    out.append(_item("acquisition.blur.sigma_vox", _round(new), why))
    kernel = blur.get("kernel_size", 5)
    if kernel is not None and 3.0 * new > (kernel - 1) / 2:
        out.append(_item("acquisition.blur.kernel_size", None, "kernel wide enough for 3 sigma"))
    return out


def _tilt_rule(acq: dict, syn: dict, real: dict) -> list[dict]:
    a_syn, a_real = syn["wedge_half_angle_deg"]["median"], real["wedge_half_angle_deg"]
    if not math.isfinite(a_syn) or abs(a_syn - a_real) < WEDGE_TOL_DEG:
        return []
    step = float((acq.get("tilt") or {}).get("step_deg", 1.0))
    new = min(180.0, max(2.0 * step, round((180.0 - 2.0 * a_real) / step) * step))
    why = f"missing-wedge half-angle {a_syn:.1f} deg vs real {a_real:.1f} deg"
    return [_item("acquisition.tilt.range_deg", float(new), why)]


def _mount_rule(config: dict, syn_capillary: float, real: dict) -> list[dict]:
    real_cap = bool(real["capillary"]["detected"])
    kind = (config.get("mount") or {}).get("kind")
    if real_cap and syn_capillary < 0.5 and kind != "capillary":
        r = real["capillary"]["radius_nm"]
        grid = config["grid"]
        fov_nm = min(grid["shape"][0], grid["shape"][2]) * float(grid["voxel_nm"])
        why = f"bright ring of radius {r:.0f} nm around Y (the cells must fit its lumen)"
        return [
            _item("mount.kind", "capillary", why),
            _item("mount.outer_diameter_fov", _round(2.0 * r / fov_nm), why),
        ]
    if not real_cap and syn_capillary >= 0.5 and kind == "capillary":
        return [_item("mount.kind", "grid", "no capillary ring in the real volume")]
    return []


def suggest(report: dict, config: dict) -> list[dict]:
    """The proposed overrides ``[{"key", "value", "reason", "exists"}]`` for a fidelity report
    (:func:`factory.fidelity.report.fidelity_report`) of a dataset with resolved ``config``."""
    acq = config.get("acquisition") or {}
    syn, real = report["summary"]["synthetic"], report["real"]["metrics"]
    out = _noise_rule(acq, syn, real) + _blur_rule(acq, syn, real) + _tilt_rule(acq, syn, real)
    return out + _mount_rule(config, report["summary"]["capillary_fraction"], real)


def format_value(value) -> str:
    """A YAML scalar for ``--set`` (``null``, ``true``, numbers, bare strings)."""
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, float) and value.is_integer():
        return str(int(value))
    return str(value)
