"""The dataset card: ``README.md`` (Hugging Face style YAML header) and a preview figure.

The preview shows the centre slices of every field of one sample: for volumes (Z, Y, X) the XY plane
at the centre Z, XZ at the centre Y (a tilt-axis slice, one 2D problem) and YZ at the centre X, with
the label boundaries drawn over them; for the sinogram (n_angles, Y, det) the centre Y row
(angle × detector) and the centre projection (Y × detector).
"""

from __future__ import annotations

import io

import numpy as np

from schemas.dataset import Manifest

_TITLES = {
    "phantom": "phantom LAC (1/µm)",
    "recon": "reconstruction",
    "noisy": "noisy volume (1/µm)",
    "labels": "labels",
    "sinogram": "sinogram",
}


def _centre_slices(vol: np.ndarray) -> list[tuple[str, np.ndarray]]:
    z, y, x = (s // 2 for s in vol.shape)
    return [(f"XY, z={z}", vol[z]), (f"XZ, y={y}", vol[:, y, :]), (f"YZ, x={x}", vol[:, :, x])]


def preview_png(sample: dict, class_names: list[str] | None = None, title: str = "") -> bytes:
    """A PNG of the centre slices of every field of a decoded ``sample`` (see module docstring)."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    from schemas.palette import label_cmap, legend_handles

    fields = [f for f in ("phantom", "noisy", "recon", "labels", "sinogram") if f in sample]
    if not fields:
        raise ValueError("preview: the sample has no field to show")
    labels = sample.get("labels")
    ncls = max(len(class_names or []), int(labels.max()) + 1 if labels is not None else 1)
    names = list(class_names or []) + [f"class {i}" for i in range(len(class_names or []), ncls)]
    cmap, norm = label_cmap(names)
    fig = Figure(figsize=(10.5, 3.2 * len(fields)), dpi=80, layout="constrained")
    FigureCanvasAgg(fig)
    axes = fig.subplots(len(fields), 3, squeeze=False)
    for row, field in enumerate(fields):
        arr = np.asarray(sample[field], dtype=np.float32 if field != "labels" else np.uint8)
        if field == "sinogram":
            yc = arr.shape[1] // 2
            panels = [
                (f"angle × det, y={yc}", arr[:, yc, :]),
                (f"projection {arr.shape[0] // 2}", arr[arr.shape[0] // 2]),
            ]
            lab_panels = [None, None]
        else:
            panels = _centre_slices(arr)
            lab_panels = (
                [s for _, s in _centre_slices(labels)]
                if labels is not None and field != "labels" and labels.shape == arr.shape
                else [None] * 3
            )
        for col in range(3):
            ax = axes[row, col]
            ax.set_xticks([])
            ax.set_yticks([])
            if col >= len(panels):
                ax.set_axis_off()
                continue
            name, img = panels[col]
            if field == "labels":
                ax.imshow(img, cmap=cmap, norm=norm, interpolation="nearest")
            else:
                lo, hi = np.percentile(img, [1, 99]) if img.size else (0, 1)
                ax.imshow(
                    img,
                    cmap="gray",
                    vmin=lo,
                    vmax=hi if hi > lo else lo + 1,
                    aspect="auto" if field == "sinogram" else "equal",
                )
                lab = lab_panels[col]
                if lab is not None and lab.max() > 0:
                    ax.contour(
                        lab, levels=np.arange(0.5, ncls), cmap=cmap, norm=norm, linewidths=0.7
                    )
            ax.set_title(f"{_TITLES.get(field, field)}: {name}", fontsize=8)
    if class_names and labels is not None:
        handles = legend_handles(list(class_names))
        fig.legend(
            handles=handles, loc="outside lower center", ncols=min(len(handles), 7), fontsize=8
        )
    if title:
        fig.suptitle(title, fontsize=10)
    buf = io.BytesIO()
    fig.savefig(buf, format="png", metadata={"Software": None})
    return buf.getvalue()


def _fmt(v: float) -> str:
    return f"{v:.4g}"


def _table(title: str, *columns: str) -> list[str]:
    """A card section that is a Markdown table: its heading, the column names and the rule."""
    return [
        "",
        f"## {title}",
        "",
        "| " + " | ".join(columns) + " |",
        "|" + " --- |" * len(columns),
    ]


def _card_header(m: Manifest) -> list[str]:
    """The YAML front matter and the title of the card."""
    return [
        "---",
        f"pretty_name: {m.name} (simulated cryo soft X-ray tomography)",
        f"dataset_version: {m.version}",
        f"num_samples: {m.num_samples}",
        "splits:",
        *[f"  {k}: {v}" for k, v in m.splits.items()],
        "task_categories: [image-segmentation]",
        "tags: [cryo-soft-x-ray-tomography, simulated, webdataset, simaq]",
        f"content_sha256: {m.content_sha256}",
        "---",
        "",
        f"# {m.name} {m.version}",
        "",
        "Simulated cryo soft X-ray tomography of yeast-like cells: phantoms with voxel labels,",
        "their simulated tilt series and reconstructions (SimAQ method, Egebjerg & Wüstner,",
        "arXiv 2508.10821), written as WebDataset shards by the SimAQ data factory.",
    ]


def _card_provenance(m: Manifest, command: str) -> list[str]:
    """How it was generated: command, config hash, seed rule, code versions, grid (nm)."""
    code = m.code
    grid = m.config["grid"]
    return [
        "",
        "## How it was generated",
        "",
        f"- command: `{command}`",
        f"- config sha256: `{m.config_sha256}` (the full config is in `manifest.json`)",
        f"- seed: {m.seed}; per-sample seed rule: {m.seed_rule}",
        f"- code: simaq-factory {code.get('package')} (git {code.get('git_sha') or 'unknown'}"
        f"{', dirty' if code.get('dirty') else ''}), "
        f"torch {code.get('torch')}, ray {code.get('ray')}",
        f"- created: {m.created}",
        f"- grid: {grid['shape']} voxels (Z, Y, X) of {grid['voxel_nm']} nm; Y is the tilt axis",
    ]


def _card_fields(m: Manifest) -> list[str]:
    """The table of the shard members: dtype, shape (axes) and units of every array field."""
    lines = _table("Fields", "field", "member", "dtype", "shape", "units")
    for name, f in m.fields.items():
        if f.shape is None:
            continue
        shape = "×".join("n" if s is None else str(s) for s in f.shape)
        lines.append(f"| {name} | `KEY.{f.member}` | {f.dtype} | {shape} ({f.axes}) | {f.units} |")
    lines.append("| meta | `KEY.meta.json` | JSON | | seed, every drawn parameter, the objects |")
    return lines


def _card_splits(m: Manifest) -> list[str]:
    """Samples and shards per split, total size (MiB) and size per sample (KiB)."""
    lines = _table("Splits and shards", "split", "samples", "shards")
    for split, n in m.splits.items():
        k = len(m.split_shards(split))
        lines.append(f"| {split} | {n} | {k} |")
    total = m.total_bytes
    return lines + [
        "",
        f"{len(m.shards)} shards, {total / 2**20:.1f} MiB, "
        f"{total / max(m.num_samples, 1) / 2**10:.1f} KiB per sample. Samples of a shard are",
        "a fixed range of global indices; keys are those indices on 9 digits. `index.parquet`",
        "has one row per sample (key, split, shard, drawn parameters, class fractions).",
    ]


def _card_statistics(
    m: Manifest, class_fractions: dict[str, float], param_ranges: dict
) -> list[str]:
    """Voxel fraction per class (in label id order) and the range of every drawn parameter."""
    title = f"Class fractions (voxels, label scheme `{m.labels['scheme']}`)"
    lines = _table(title, "id", "class", "fraction")
    for i, (name, frac) in enumerate(class_fractions.items()):
        lines.append(f"| {i} | {name} | {frac:.4f} |")
    if param_ranges:
        lines += _table("Drawn parameters (range over the dataset)", "parameter", "min", "max")
        for name, (lo, hi) in param_ranges.items():
            lines.append(f"| {name} | {_fmt(lo)} | {_fmt(hi)} |")
    return lines


def _card_reading(m: Manifest) -> list[str]:
    """How to read the first shard with plain ``webdataset``, and the preview figure."""
    first = m.shards[0].url if m.shards else "shards/train-000000.tar"
    return [
        "",
        "## Reading it",
        "",
        "```python",
        "import webdataset as wds  # no project code needed",
        f'for s in wds.WebDataset("{first}", shardshuffle=False).decode():',
        '    recon, labels = s["'
        + _member(m, "recon")
        + '"], s.get("'
        + _member(m, "labels")
        + '")',
        "```",
        "",
        "Check it with `simaq verify DATASET`; `manifest.json` lists every shard with its sha256.",
        "",
        "![preview: centre slices of sample 0](preview.png)",
        "",
    ]


def _member(m: Manifest, field: str) -> str:
    spec = m.fields.get(field)
    return (spec.member if spec is not None else None) or f"{field}.npy"


def dataset_card(
    manifest: Manifest, class_fractions: dict[str, float], param_ranges: dict, command: str
) -> str:
    """The ``README.md`` text of a dataset from its manifest and index statistics.

    Parameters
    ----------
    manifest : Manifest
        The dataset's manifest.
    class_fractions : dict of str to float
        Voxel fraction of each class over the dataset, in label id order.
    param_ranges : dict of str to (float, float)
        ``(min, max)`` of every drawn parameter over the dataset (may be empty).
    command : str
        The command line that generated the dataset.
    """
    m = manifest
    return "\n".join(
        _card_header(m)
        + _card_provenance(m, command)
        + _card_fields(m)
        + _card_splits(m)
        + _card_statistics(m, class_fractions, param_ranges)
        + _card_reading(m)
    )
