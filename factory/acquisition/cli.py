"""``simaq simulate``: one sample's phantom, sinogram and reconstruction as files and a montage."""

from __future__ import annotations

import json
from pathlib import Path

import typer

from factory.cli_options import Device, SampleArgs, sample_command
from factory.phantom.cli import prepare_output_dir, write_volume

# stems of the files `simulate` writes (volumes in either format)
SIMULATE_FILES = ("phantom", "labels", "sinogram", "recon", "noisy", "meta", "montage")


def write_montage(path: Path, fields: dict, title: str, class_names: list[str]) -> None:
    """PNG of the centre slices: phantom, labels, sinogram (centre Y row), reconstruction.

    Labels use the project's one palette (:mod:`schemas.palette`) with a legend of class names.
    """
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from schemas.palette import label_cmap, legend_handles

    phantom, labels, sino, recon = (fields[k] for k in ("phantom", "labels", "sinogram", "recon"))
    zc, yc = phantom.shape[0] // 2, phantom.shape[1] // 2
    panels = [
        ("phantom, XY at Z centre (LAC 1/µm)", phantom[zc], "gray"),
        ("labels, XY at Z centre", labels[zc], "labels"),
        ("phantom, ZX at Y centre", phantom[:, yc], "gray"),
        ("sinogram, angle × det at Y centre", sino[:, sino.shape[1] // 2], "gray"),
        ("reconstruction, XY at Z centre", recon[zc], "gray"),
        ("reconstruction, ZX at Y centre", recon[:, yc], "gray"),
    ]
    cmap, norm = label_cmap(class_names)
    fig, axes = plt.subplots(2, 3, figsize=(12, 9))
    for ax, (name, img, kind) in zip(axes.ravel(), panels, strict=True):
        ax.set_title(name, fontsize=9)
        ax.set_xticks([])
        ax.set_yticks([])
        if kind == "labels":
            ax.imshow(img, cmap=cmap, norm=norm, interpolation="nearest")
            continue
        aspect = "auto" if "sinogram" in name else "equal"
        im = ax.imshow(img, cmap="gray", aspect=aspect, interpolation="nearest")
        fig.colorbar(im, ax=ax, fraction=0.046, pad=0.02)
    fig.legend(
        handles=legend_handles(class_names),
        loc="lower center",
        ncols=min(len(class_names), 7),
        fontsize=8,
    )
    fig.suptitle(title, fontsize=10)
    fig.tight_layout(rect=(0, 0.05, 1, 1))
    fig.savefig(path, dpi=90)
    plt.close(fig)


def register(app: typer.Typer) -> None:
    @sample_command(app, "simulate")
    def simulate(args: SampleArgs, device: Device = "cpu") -> None:
        """Simulate one sample (phantom → acquisition → reconstruction) and write its files.

        Writes phantom, labels, sinogram, recon (and noisy, when kept) as TIFF or MRC, meta.json and
        montage.png (centre slices) into OUT.
        """
        import time

        from factory.sample import simulate_sample
        from schemas import label_scheme

        cfg, out, seed, index, fmt, overwrite = args
        prepare_output_dir(out, overwrite, SIMULATE_FILES)
        t0 = time.perf_counter()
        sample = simulate_sample(cfg, seed, index, device=device)
        elapsed = time.perf_counter() - t0
        written = []
        for name, arr in sample.fields.items():
            written.append(write_volume(out / name, arr, fmt, cfg.grid.voxel_nm).name)
        meta = {
            **sample.meta.to_json(),
            "config": cfg.to_json(),
            "files": written,
            "seconds": round(elapsed, 3),
        }
        (out / "meta.json").write_text(json.dumps(meta, indent=1, allow_nan=False), "utf-8")
        title = f"{cfg.name}  seed {seed}  index {index}"
        tilt = sample.meta.acquisition.get("tilt", {})
        if tilt:
            title += f"  tilt {tilt['range_deg']:.0f}° shift {tilt['shift_deg']:+.1f}°, "
            title += f"{tilt['n_projections']} projections"
        names = list(label_scheme(cfg.labels.scheme).names)
        write_montage(out / "montage.png", sample.fields, title, names)
        typer.echo(f"wrote {', '.join(written)}, meta.json, montage.png to {out} ({elapsed:.1f} s)")
