"""``simaq phantom``: write one phantom (LAC and labels) as TIFF or MRC plus a JSON record."""

from __future__ import annotations

import json
from pathlib import Path

import typer

from factory.cli_options import FORMATS, Device, SampleArgs, sample_command
from factory.errors import UserError

# stems of the files `phantom` writes (volumes in either format)
PHANTOM_FILES = ("lac", "labels", "phantom")
_SUFFIXES = (".tif", ".tiff", ".mrc", ".json", ".png")


def prepare_output_dir(out: Path, overwrite: bool, stems: tuple[str, ...]) -> None:
    """Create ``out``; refuse a non-empty one unless ``overwrite`` (then remove our old files).

    With ``overwrite`` only the files a run of this command writes (``stems`` with any of our
    suffixes) are removed, so that no file of an earlier run is mixed with this run's; other files
    stay. Raises :class:`UserError` (exit 2) before anything is written.
    """
    if out.exists() and not out.is_dir():
        raise UserError(f"--out: {str(out)!r} exists and is not a directory")
    if out.is_dir() and any(out.iterdir()):
        if not overwrite:
            raise UserError(
                f"--out: {str(out)!r} exists and is not empty; refusing to overwrite it "
                "(use --overwrite to replace an earlier run's files)"
            )
        for stem in stems:
            for suffix in _SUFFIXES:
                (out / f"{stem}{suffix}").unlink(missing_ok=True)
    out.mkdir(parents=True, exist_ok=True)


def write_volume(path: Path, arr, fmt: str, voxel_nm: float) -> Path:
    """Write a (Z, Y, X) volume with its voxel size; returns the path written.

    TIFF: ImageJ hyperstack (opens in Fiji/napari) with the voxel size in µm in the resolution
    tags and ``spacing``. MRC: voxel size in Å in the header; uint8 labels are stored as int8
    (mode 0), since MRC has no unsigned 8-bit mode.
    """
    import numpy as np

    arr = np.ascontiguousarray(arr)
    um = voxel_nm * 1e-3
    if fmt == "tiff":
        import tifffile

        path = path.with_suffix(".tif")
        tifffile.imwrite(
            path,
            arr,
            imagej=True,
            resolution=(1.0 / um, 1.0 / um),
            metadata={"axes": "ZYX", "spacing": um, "unit": "um"},
        )
    elif fmt == "mrc":
        import mrcfile

        path = path.with_suffix(".mrc")
        data = arr.astype(np.int8) if arr.dtype == np.uint8 else arr.astype(np.float32, copy=False)
        with mrcfile.new(path, overwrite=True) as mrc:
            mrc.set_data(data)
            mrc.voxel_size = voxel_nm * 10.0
    else:
        raise UserError(f"--format: must be one of {', '.join(FORMATS)}, got {fmt!r}")
    return path


def register(app: typer.Typer) -> None:
    @sample_command(app, "phantom")
    def phantom(
        args: SampleArgs,
        scheme: str | None = typer.Option(
            None, "--scheme", help="label scheme of the labels file (default: the config's)"
        ),
        device: Device = "cpu",
    ) -> None:
        """Generate one yeast-cell phantom and write lac (1/µm, float32), labels and a JSON record.

        Files: OUT/lac.tif|mrc, OUT/labels.tif|mrc, OUT/phantom.json (objects placed, every drawn
        value, the label scheme, the resolved config and its sha256).
        """
        import time

        from schemas import label_scheme

        cfg, out, seed, index, fmt, overwrite = args
        try:
            lab_scheme = label_scheme(scheme or cfg.labels.scheme)
        except ValueError as err:
            raise UserError(f"--scheme: {err}") from None

        import torch

        from factory.phantom import generate_phantom
        from factory.rng import SEED_RULE

        try:
            dev = torch.device(device)
        except RuntimeError:
            raise UserError(f"--device: not a torch device: {device!r}") from None
        if dev.type == "cuda" and not torch.cuda.is_available():
            raise UserError(f"--device: {device!r} requested but CUDA is not available")
        prepare_output_dir(out, overwrite, PHANTOM_FILES)
        t0 = time.perf_counter()
        ph = generate_phantom(cfg, seed, index=index, device=dev)
        seconds = time.perf_counter() - t0
        lac = ph.lac.detach().cpu().numpy()
        labels = lab_scheme.apply(ph.labels.detach().cpu().numpy())

        vox = cfg.grid.voxel_nm
        written = [
            write_volume(out / "lac", lac, fmt, vox),
            write_volume(out / "labels", labels, fmt, vox),
        ]
        record = {
            "seed": seed,
            "index": index,
            "seed_rule": SEED_RULE,
            "shape_zyx": list(lac.shape),
            "voxel_nm": vox,
            "units": {"lac": "1/um", "lengths": "voxels", "centre_vox": "(z, y, x)"},
            "label_scheme": lab_scheme.to_json(),
            "meta": ph.meta,
            "objects": ph.objects,
            "config_sha256": cfg.sha256,
            "config": cfg.to_json(),
            "seconds": round(seconds, 3),
        }
        json_path = out / "phantom.json"
        json_path.write_text(json.dumps(record, indent=1), encoding="utf-8")
        written.append(json_path)
        counts = ", ".join(f"{k}={v}" for k, v in ph.meta["objects_per_class"].items())
        typer.echo(
            f"phantom {lac.shape} at {vox} nm in {seconds:.2f} s: "
            f"{ph.meta['cells_placed']} cell(s); {counts}"
        )
        for p in written:
            typer.echo(f"  {p}")
