"""The fidelity report: a dataset's reconstructions against one real tomogram.

Both sides are brought to the dataset's voxel size (``grid.voxel_nm`` of the manifest's config; the
real volume is resampled trilinearly), normalised identically (the training's rank normalisation in
the FOV cylinder, with the dataset's ``reconstruction.fov_inset_px``) and measured by
:func:`factory.fidelity.metrics.measure_volume`; each synthetic sample is compared with the real
volume (:func:`factory.fidelity.metrics.compare`) and the comparisons are summarised by their
median and spread (quartiles, range). The report is a JSON-safe dict; :func:`write_report` writes
``fidelity.json`` and a one-page ``fidelity.png``.
"""

from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np

from factory.errors import UserError
from factory.fidelity import metrics as M

MAX_REAL_PLANES = 128  # Y planes of the real volume kept (central slab) at the common voxel size

DEFINITIONS = {
    "histogram_overlap": (
        "sum over 64 bins on [-4, 4] of min(h_syn, h_real), histograms of (v - median)/IQR in "
        "the FOV",
        "higher is closer (1 = identical)",
    ),
    "wasserstein": ("1-D Wasserstein distance of the same scaled values (20k each)", "lower"),
    "band_power": (
        "mean |FFT|^2 of the windowed XZ planes in 5 equal radial bands 0..Nyquist / mean over "
        "the disk; compared as ln(P_syn/P_real) per band",
        "log ratio closer to 0 is closer",
    ),
    "spectral_slope": ("slope of log P vs log f, f in [f_N/32, f_N] (log bins)", "equal"),
    "noise_sd": ("MAD/0.6745 of v - G_1*v (XZ), white-noise calibrated, normalised scale", "equal"),
    "angular_energy": (
        "energy fraction per 5 deg bin of the angle from kz, annulus 0.1..0.9 f_N; compared by "
        "total variation 0.5*sum|a_syn - a_real|",
        "lower TV is closer",
    ),
    "wedge_fraction": ("energy fraction within +-(90 - tilt_max) of kz (dataset's tilt)", "equal"),
    "wedge_half_angle_deg": ("estimated missing-wedge half-angle, 0 = full rotation", "equal"),
    "edge_sharpness_per_um": ("P90 |grad(G_1*v)| (XZ, per um) / IQR(v)", "equal"),
    "autocorrelation_nm": ("lag where the radial autocorrelation (XZ) falls to 1/e, nm", "equal"),
    "distance": (
        "sqrt(mean(term^2)) over: 1-overlap, W1, RMS band log ratio, |d slope|, |ln noise ratio|, "
        "angular TV, |ln edge ratio|, |ln autocorrelation ratio|",
        "lower is closer (0 = identical)",
    ),
}


def summarise(values) -> dict:
    """``{"median", "q25", "q75", "min", "max", "n"}`` of finite ``values`` (NaN if none)."""
    v = np.asarray([x for x in values if x is not None and math.isfinite(x)], dtype=float)
    if v.size == 0:
        nan = float("nan")
        return {"median": nan, "q25": nan, "q75": nan, "min": nan, "max": nan, "n": 0}
    q25, q50, q75 = np.percentile(v, [25, 50, 75])
    return {
        "median": float(q50),
        "q25": float(q25),
        "q75": float(q75),
        "min": float(v.min()),
        "max": float(v.max()),
        "n": int(v.size),
    }


def load_recons(dataset, samples: int):
    """``(manifest, [(key, recon (Z, Y, X) float32)])``: the first ``samples`` samples in manifest
    order of ``dataset`` (a Store, or its root or manifest as a path or URL; shards verified
    against their sha256 as they are read)."""
    from factory.dataset.manifest import dataset_store, iter_samples, read_manifest

    store = dataset_store(dataset)
    url = store.url
    m = read_manifest(store)
    if "recon" not in m.fields:
        raise UserError(f"the dataset at {url!r} has no 'recon' field", param="data")
    out = []
    for rec in sorted(m.shards, key=lambda s: s.first_index):
        for s in iter_samples(store, rec, fields=m.fields):
            out.append((s["__key__"], np.asarray(s["recon"], dtype=np.float32)))
            if len(out) >= samples:
                return m, out
    if not out:
        raise UserError(f"the dataset at {url!r} has no samples", param="data")
    return m, out


def load_real(
    path: str, voxel_nm: float | None, axes: str = "auto"
) -> tuple[np.ndarray, float, str, dict]:
    """``(volume (Z, Y, X), voxel_nm, source, axes record)`` of the real tomogram:
    ``--real-voxel-nm`` wins, else the file header (neither known is a :class:`UserError`); the
    file's axis order is ``axes`` or, with ``"auto"``, detected (:mod:`factory.tomo.axes`)."""
    from factory.tomo.axes import resolve_axes, to_zyx
    from models.volume_io import input_voxel_nm, read_volume

    vol, header = read_volume(path, "real")
    nm, source = input_voxel_nm(voxel_nm, header, path, "real_voxel_nm")
    if not np.isfinite(vol).all():
        raise UserError(f"{path!r} holds NaN or infinite values", param="real")
    order, axes_info = resolve_axes(vol, axes, "real_axes")
    return to_zyx(vol, order), nm, source, axes_info


def common_grid(real: np.ndarray, real_nm: float, target_nm: float) -> np.ndarray:
    """The real volume at ``target_nm``: its central slab of at most :data:`MAX_REAL_PLANES` Y
    planes (counted at the target voxel size), resampled by :func:`metrics.resample`."""
    ny = real.shape[1]
    keep = max(1, min(ny, int(math.ceil(MAX_REAL_PLANES * target_nm / real_nm))))
    start = (ny - keep) // 2
    return M.resample(real[:, start : start + keep, :], real_nm, target_nm)


def nominal_wedge_deg(config: dict) -> float:
    """``90° − θmax`` of the dataset's tilt range (its representative value, see
    :func:`factory.fidelity.calibrate.representative`)."""
    from factory.fidelity.calibrate import representative

    tilt = ((config.get("acquisition") or {}).get("tilt") or {}).get("range_deg", 180.0)
    return max(0.0, 90.0 - representative(tilt) / 2.0)


def _public(profile: dict) -> dict:
    return {k: v for k, v in profile.items() if not k.startswith("_")}


def _summary(profiles: list[dict], comparisons: list[dict]) -> dict:
    keys = (
        "spectral_slope",
        "noise_sd",
        "wedge_fraction",
        "wedge_half_angle_deg",
        "edge_sharpness_per_um",
        "autocorrelation_nm",
    )
    syn = {k: summarise(p[k] for p in profiles) for k in keys}
    cmp_keys = ("histogram_overlap", "wasserstein", "distance", "spectral_slope_diff")
    cmp = {k: summarise(c[k] for c in comparisons) for k in cmp_keys}
    bands = np.asarray([c["band_log_ratio"] for c in comparisons])
    cmp["band_log_ratio_median"] = np.median(bands, axis=0).tolist()
    cmp["terms_median"] = {
        t: float(np.median([c["terms"][t] for c in comparisons])) for t in comparisons[0]["terms"]
    }
    return {
        "synthetic": syn,
        "comparison": cmp,
        "capillary_fraction": float(np.mean([p["capillary"]["detected"] for p in profiles])),
    }


def fidelity_report(
    data,
    real_path: str,
    *,
    real_voxel_nm: float | None = None,
    samples: int = 8,
    max_planes: int = 32,
    real_axes: str = "auto",
    real_polarity: str = "as-is",
) -> tuple[dict, dict]:
    """Measure up to ``samples`` reconstructions of the dataset ``data`` (a Store, or a path or
    URL) against ``real_path``.

    Returns ``(report, arrays)``: the JSON-safe report (definitions, inputs, the real volume's
    metrics, every sample's metrics and comparison, the summary) and, for the figure, the centre
    XZ planes of the normalised real volume and first sample. ``real_polarity`` ``inverted``:
    the real tomogram's absorbing material is dark (:mod:`models.polarity`); it is negated first.
    """
    if samples < 1:
        raise UserError(f"must be >= 1, got {samples}", param="samples")
    if real_polarity not in ("as-is", "inverted"):
        raise UserError(f"expected as-is or inverted, got {real_polarity!r}", param="real_polarity")
    real, real_nm, source, axes_info = load_real(real_path, real_voxel_nm, real_axes)
    if real_polarity == "inverted":
        real = -np.asarray(real, dtype=np.float32)
    from factory.dataset.storage import safe_url

    m, recons = load_recons(data, samples)
    cfg = m.config
    voxel_nm = float(cfg["grid"]["voxel_nm"])
    inset = float((cfg.get("reconstruction") or {}).get("fov_inset_px", 5))
    norm = {"method": "quantile", "fov_inset_px": inset, "fov": "cylinder"}
    wedge = nominal_wedge_deg(cfg)
    real_c = common_grid(real, real_nm, voxel_nm)
    real_p = M.measure_volume(
        real_c, voxel_nm, norm, nominal_wedge_deg=wedge, max_planes=max_planes
    )
    profiles, comparisons = [], []
    for _, vol in recons:
        p = M.measure_volume(vol, voxel_nm, norm, nominal_wedge_deg=wedge, max_planes=max_planes)
        profiles.append(p)
        comparisons.append(M.compare(p, real_p))
    report = {
        "definitions": {k: {"definition": d, "closer": c} for k, (d, c) in DEFINITIONS.items()},
        "dataset": {
            "url": safe_url(data),
            "name": m.name,
            "version": m.version,
            "content_sha256": m.content_sha256,
            "preset": cfg.get("name"),
            "voxel_nm": voxel_nm,
            "samples": [k for k, _ in recons],
            "recon_normalize": (cfg.get("reconstruction") or {}).get("normalize"),
        },
        "real": {
            "path": str(real_path),
            "shape": list(real.shape),
            "voxel_nm": real_nm,
            "voxel_source": source,
            "axes": axes_info,
            "polarity": real_polarity,
            "resampled_shape": list(real_c.shape),
            "metrics": _public(real_p),
        },
        "normalization": norm,
        "nominal_wedge_half_angle_deg": wedge,
        "per_sample": [
            {"key": k, "metrics": _public(p), "comparison": c}
            for (k, _), p, c in zip(recons, profiles, comparisons, strict=True)
        ],
        "summary": _summary(profiles, comparisons),
        "notes": _notes(cfg, real_c),
    }
    arrays = {
        "real": _centre_plane(M.prepare_volume(real_c, norm)),
        "synthetic": _centre_plane(M.prepare_volume(recons[0][1], norm)),
    }
    return report, arrays


def _centre_plane(vol: np.ndarray) -> np.ndarray:
    return vol[:, vol.shape[1] // 2, :]


def _notes(cfg: dict, real_c: np.ndarray) -> list[str]:
    notes = []
    if (cfg.get("reconstruction") or {}).get("normalize", "quantile") == "quantile":
        notes.append(
            "the dataset's recon is rank-normalised (reconstruction.normalize: quantile), so its "
            "intensity histogram is Gaussian by construction: the histogram metrics compare the "
            "real histogram's shape with a Gaussian; the training normalisation makes both "
            "identical, so they do not matter to a model trained on it"
        )
    if real_c.shape[1] < 4:
        notes.append(f"the real volume has only {real_c.shape[1]} Y plane(s) at the common voxel")
    return notes


def json_safe(obj):
    """``obj`` with NaN/inf floats as None and numpy scalars as Python numbers (strict JSON)."""
    if isinstance(obj, dict):
        return {k: json_safe(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [json_safe(v) for v in obj]
    if isinstance(obj, (np.floating, float)):
        return float(obj) if math.isfinite(obj) else None
    if isinstance(obj, np.integer):
        return int(obj)
    if isinstance(obj, np.bool_):
        return bool(obj)
    return obj


def write_report(report: dict, arrays: dict, out_dir: str) -> tuple[str, str]:
    """Write ``out_dir/fidelity.json`` and ``out_dir/fidelity.png``; return their paths."""
    out = Path(out_dir)
    try:
        out.mkdir(parents=True, exist_ok=True)
        js = out / "fidelity.json"
        js.write_text(json.dumps(json_safe(report), indent=1, allow_nan=False) + "\n")
        png = out / "fidelity.png"
        png.write_bytes(figure_png(report, arrays))
    except OSError as err:
        raise UserError(
            f"cannot write to {out_dir!r} ({err.strerror or err})", param="out"
        ) from None
    return str(js), str(png)


def _spectrum_panel(ax, report: dict) -> None:
    real = report["real"]["metrics"]
    for i, s in enumerate(report["per_sample"]):
        m = s["metrics"]
        ax.loglog(m["spectrum_f_per_nm"], m["spectrum"], color="C0", alpha=0.5,
                  label="synthetic" if i == 0 else None)  # fmt: skip
    ax.loglog(real["spectrum_f_per_nm"], real["spectrum"], color="C3", lw=2, label="real")
    ax.set(xlabel="frequency (cycles/nm)", ylabel="power", title="radial power spectrum (XZ)")
    ax.legend(fontsize=7)


def _profile_panel(ax, report: dict, key: str, x, title: str, xlabel: str) -> None:
    for i, s in enumerate(report["per_sample"]):
        ax.plot(x, s["metrics"][key], color="C0", alpha=0.5, label="synthetic" if i == 0 else None)
    ax.plot(x, report["real"]["metrics"][key], color="C3", lw=2, label="real")
    ax.set(title=title, xlabel=xlabel)
    ax.legend(fontsize=7)


def _text_panel(ax, report: dict) -> None:
    syn, real = report["summary"]["synthetic"], report["real"]["metrics"]
    cmp = report["summary"]["comparison"]
    lines = [f"{'metric':<24}{'real':>9}{'synthetic median [q25, q75]':>32}"]
    for k, v in syn.items():
        lines.append(
            f"{k:<24}{real[k]:>9.3g}   {v['median']:>9.3g} [{v['q25']:.3g}, {v['q75']:.3g}]"
        )
    for k in ("histogram_overlap", "wasserstein", "distance"):
        v = cmp[k]
        lines.append(f"{k:<24}{'':>9}   {v['median']:>9.3g} [{v['q25']:.3g}, {v['q75']:.3g}]")
    bands = ", ".join(f"{b:+.2f}" for b in cmp["band_log_ratio_median"])
    lines.append(f"band ln(P_syn/P_real): {bands}")
    ax.text(0.0, 1.0, "\n".join(lines), family="monospace", fontsize=7, va="top")
    ax.axis("off")


def figure_png(report: dict, arrays: dict) -> bytes:
    """The one-page figure: centre XZ planes (real, first sample), histograms, spectra, angular
    energy and the metric table (PNG bytes)."""
    import io

    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    fig = Figure(figsize=(15, 9.5))
    FigureCanvasAgg(fig)
    ax = fig.subplots(2, 3)
    for a, key, name in ((ax[0, 0], "real", "real"), (ax[0, 1], "synthetic", "synthetic #0")):
        a.imshow(arrays[key], cmap="gray", vmin=-2.5, vmax=2.5)
        a.set(title=f"{name}: XZ plane, normalised (rows Z)", xlabel="X", ylabel="Z")
    centres = np.linspace(*M.HIST_RANGE, M.HIST_BINS + 1)
    centres = 0.5 * (centres[1:] + centres[:-1])
    _profile_panel(ax[0, 2], report, "histogram", centres, "intensity histogram", "(v-med)/IQR")
    _spectrum_panel(ax[1, 0], report)
    angles = (np.arange(int(90 / M.ANGLE_BIN_DEG)) + 0.5) * M.ANGLE_BIN_DEG
    _profile_panel(ax[1, 1], report, "angular_energy", angles, "energy vs angle from kz", "deg")
    _text_panel(ax[1, 2], report)
    d = report["dataset"]
    fig.suptitle(
        f"fidelity: {d['name']} {d['version']} ({len(d['samples'])} samples) vs "
        f"{Path(report['real']['path']).name} at {d['voxel_nm']:g} nm; "
        f"distance {report['summary']['comparison']['distance']['median']:.3g}"
    )
    fig.tight_layout()
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=90)
    return buf.getvalue()
