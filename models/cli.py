"""``simaq train | evaluate | segment``: the segmentation models' commands."""

from __future__ import annotations

import json

import typer

from factory.cli_options import AXES_HELP, EndpointUrl, Verbose
from factory.errors import UserError
from models.polarity import POLARITY_HELP


def _load_config_file(path: str | None) -> dict:
    if path is None:
        return {}
    import yaml

    try:
        with open(path, encoding="utf-8") as fh:
            data = yaml.safe_load(fh) or {}
    except OSError as err:
        raise UserError(f"--config: cannot read {path!r} ({err})") from None
    except yaml.YAMLError as err:
        raise UserError(f"--config: {path!r} is not valid YAML/JSON ({err})") from None
    if not isinstance(data, dict):
        raise UserError(f"--config: {path!r} must hold a mapping of training parameters")
    return data


def _print_table(result: dict) -> None:
    names = result["classes"]
    typer.echo(
        f"{result['split']}: {result['num_volumes']} volumes, {result['num_slices']} slices; "
        f"dataset {result['dataset']['content_sha256'][:16]}…, model trained on "
        f"{(result['model']['training_data_content_sha256'] or '?')[:16]}…"
    )
    typer.echo(f"{'class':<16}{'IoU pooled':>11}{'IoU/slice':>18}{'Dice/slice':>18}{'n':>7}")
    for name in names:
        pooled = result["pooled"][name]["iou"]
        ps = result["per_slice"][name]
        iou, dice = ps["iou"], ps["dice"]

        def ms(s):
            return "—" if s["mean"] is None else f"{s['mean']:.3f} ± {s['std']:.3f}"

        typer.echo(
            f"{name:<16}{'—' if pooled is None else f'{pooled:.3f}':>11}{ms(iou):>18}"
            f"{ms(dice):>18}{iou['n']:>7}"
        )


def train_cmd(
    data: list[str] = typer.Option(
        ...,
        "--data",
        help="dataset root (local or s3://); repeat it to train on a mixture of datasets",
    ),
    out: str = typer.Option(..., "--out", help="run directory (resumed if it has checkpoints)"),
    epochs: int | None = typer.Option(None, "--epochs", help="epochs (default: the preset's, 10)"),
    workers: int | None = typer.Option(None, "--workers", help="Ray Train workers"),
    use_gpu: bool = typer.Option(False, "--use-gpu", help="one GPU per worker"),
    batch_size: int | None = typer.Option(None, "--batch-size", help="stacks per step"),
    max_steps: int | None = typer.Option(None, "--max-steps", help="stop after S steps"),
    steps_per_epoch: int | None = typer.Option(
        None, "--steps-per-epoch", help="steps per worker and epoch (default: one pass)"
    ),
    model: str | None = typer.Option(
        None,
        "--model",
        help="unet25d (default), stack2d (slices as channels, 6× cheaper on a CPU), stack2d-dense "
        "(stack2d segmenting every slice of its stack), unet2d or unet3d (3D patches of --set "
        "window slices, every voxel supervised)",
    ),
    lr: float | None = typer.Option(None, "--lr", help="Adam learning rate (default 1e-4)"),
    seed: int | None = typer.Option(None, "--seed", help="seed of init, order, augmentation"),
    config: str | None = typer.Option(
        None, "--config", help="YAML/JSON file of training parameters (models.config)"
    ),
    sets: list[str] | None = typer.Option(
        None,
        "--set",
        help="override a training parameter: KEY=VALUE (YAML value), e.g. axis=0, patch=64, "
        "features=32, val_slices=16, checkpoint_every=50, cpus_per_worker=0.5 or "
        "augment.flip_p=0.2 (every field: models/config.py); repeatable, flags win",
    ),
    preset: str | None = typer.Option(
        None,
        "--preset",
        help="training preset: cpu (small network, minutes on a laptop), cpu-quality (a "
        "channel-stacked U-Net with the SimAQ augmentations, about 30 min on 2 cores), "
        "cpu-quality-light (the README's quality recipe: flips and intensity only, about 40 min), "
        "cpu-10min (cpu-quality's network for 600 steps, cpu's time: the zero-shot recipe) "
        "or reference (the SimAQ network, for a GPU); default: reference with --use-gpu, else cpu",
    ),
    address: str | None = typer.Option(
        None,
        "--address",
        help="existing Ray cluster: auto, HOST:PORT or ray://HOST:PORT "
        "(default: $RAY_ADDRESS, else a private local Ray)",
    ),
    verbose: Verbose = False,
    init: str | None = typer.Option(None, "--init", help="checkpoint to fine-tune from"),
    real: str | None = typer.Option(None, "--real", help="real tomogram (MRC/TIFF/NPY)"),
    real_labels: str | None = typer.Option(
        None, "--real-labels", help="its sparse labels (−1 = unannotated)"
    ),
    real_axes: str = typer.Option("auto", "--real-axes", help="of --real: " + AXES_HELP),
    real_voxel_nm: float | None = typer.Option(
        None, "--real-voxel-nm", help="voxel size of --real in nm (default: its header's)"
    ),
    real_polarity: str = typer.Option(
        "as-is", "--real-polarity", help="of --real: as-is (absorbing = bright) or inverted"
    ),
    endpoint_url: EndpointUrl = None,
    allow_bad_shards: bool = typer.Option(
        False, "--allow-bad-shards", help="skip shards failing their checksum (with a warning)"
    ),
) -> None:
    """Train a segmentation network on a dataset's shards with Ray Train (resumable)."""
    from factory.dataset.storage import Store
    from models.config import default_train_preset, parse_train_config
    from models.train import train

    cfg = parse_train_config(
        _load_config_file(config), preset=preset or default_train_preset(use_gpu), sets=sets,
        epochs=epochs, workers=workers, use_gpu=use_gpu or None, batch_size=batch_size,
        max_steps=max_steps, steps_per_epoch=steps_per_epoch, model=model, lr=lr, seed=seed,
        allow_bad_shards=allow_bad_shards or None,
    )  # fmt: skip
    summary = train(
        cfg, [Store(d, endpoint_url) for d in data], Store(out, endpoint_url),
        init=None if init is None else Store(init, endpoint_url), real=real,
        real_labels=real_labels, real_axes=real_axes, real_voxel_nm=real_voxel_nm,
        real_polarity=real_polarity.strip().lower(), progress=True,
        log=lambda msg: typer.echo(msg, err=True),
        address=address, verbose=verbose,
    )  # fmt: skip
    mt = summary["metrics"]
    typer.echo(
        f"epoch {mt.get('epoch')} step {mt.get('step')}: "
        f"loss {mt.get('loss', float('nan')):.4f}, "
        f"val mean IoU {mt.get('val_mean_iou', float('nan')):.3f}; "
        f"checkpoint {summary['checkpoint']}"
    )


def evaluate_cmd(
    model: str = typer.Option(
        ..., "--model", help="run directory, checkpoint directory or its model.pt"
    ),
    data: str | None = typer.Option(
        None, "--data", help="dataset root (local or s3://); or use --real"
    ),
    split: str = typer.Option("test", "--split", help="split to evaluate (--data)"),
    real: str | None = typer.Option(
        None, "--real", help="real tomogram (MRC, TIFF, NPY) to score instead of --data"
    ),
    real_labels: str | None = typer.Option(
        None, "--real-labels", help="its sparse labels, same shape (--ignore = unlabelled)"
    ),
    class_map: str | None = typer.Option(
        None,
        "--map",
        help="NAME=ID,...: model class NAME is label id ID (default: class k is id k); "
        "'cell' takes every non-background model class the map does not name, e.g. "
        "background=0,cell=1; classes neither named nor merged count as wrong",
    ),
    ignore: int = typer.Option(-1, "--ignore", help="label id of unlabelled voxels"),
    voxel_nm: float | None = typer.Option(
        None, "--voxel-nm", help="voxel size of --real in nm (default: its file header)"
    ),
    as_json: bool = typer.Option(False, "--json", help="print the result as JSON (no bar)"),
    out: str | None = typer.Option(
        None,
        "--out",
        help="directory for evaluation.json, slices.csv, violin_iou.png "
        "(--real: evaluation_real.json, real_planes.png)",
    ),
    batch_size: int = typer.Option(16, "--batch-size", help="stacks per forward pass"),
    max_samples: int | None = typer.Option(None, "--max-samples", help="evaluate at most N"),
    endpoint_url: EndpointUrl = None,
    allow_bad_shards: bool = typer.Option(False, "--allow-bad-shards"),
    tta: bool = typer.Option(
        False, "--tta", help="average the four flips of the slicing plane (4× the time)"
    ),
    axes: str = typer.Option("auto", "--axes", help="of --real: " + AXES_HELP),
    polarity: str = typer.Option("as-is", "--polarity", help="of --real: " + POLARITY_HELP),
) -> None:
    """Per-class IoU and Dice: over every slice of a dataset split (--data), or on the
    labelled voxels of a real tomogram beside Otsu baselines (--real, --real-labels)."""
    if (data is None) == (real is None):
        raise UserError("evaluate: give exactly one of --data DATASET or --real TOMOGRAM")
    if real is not None:
        _evaluate_real(
            model, real, real_labels, class_map=class_map, ignore=ignore, voxel_nm=voxel_nm,
            out=out, endpoint_url=endpoint_url, batch_size=batch_size, as_json=as_json, tta=tta,
            axes=axes, polarity=polarity,
        )  # fmt: skip
        return
    from factory.dataset.storage import Store
    from models.evaluate import evaluate_checkpoint

    result = evaluate_checkpoint(
        Store(model, endpoint_url),
        Store(data, endpoint_url),
        split=split,
        out=out,
        batch_size=batch_size,
        max_samples=max_samples,
        allow_bad_shards=allow_bad_shards,
        progress=not as_json,
        tta=tta,
    )
    if result.get("bad_shards"):
        typer.secho(f"skipped bad shards: {result['bad_shards']}", err=True, fg="yellow")
    if as_json:
        typer.echo(json.dumps(result, indent=1))
    else:
        _print_table(result)


def segment_cmd(
    input_paths: list[str] = typer.Argument(
        ..., metavar="INPUT...", help="tomogram(s) (MRC, TIFF, NPY)"
    ),
    model: str = typer.Option(
        ..., "--model", help="run directory, checkpoint directory or its model.pt"
    ),
    out: str = typer.Option(
        ...,
        "--out",
        help="labels file (.tif, .tiff, .mrc, .npy); with several INPUTs a directory, where "
        "each gets STEM.EXT in its own format, plus measurements.csv and summary.json",
    ),
    voxel_nm: float | None = typer.Option(
        None,
        "--voxel-nm",
        help="voxel size of INPUT in nm (default: its file header; required if it has none); "
        "INPUT is resampled to the model's training voxel size and back",
    ),
    fov: str = typer.Option(
        "cylinder", "--fov", help="normalise inside the FOV cylinder around Y, or 'all'"
    ),
    batch_size: int = typer.Option(16, "--batch-size", help="stacks per forward pass"),
    device: str | None = typer.Option(None, "--device", help="cpu, cuda (default: auto)"),
    min_radius_nm: list[str] = typer.Option(
        [], "--min-radius-nm", help="CLASS=NM: drop smaller objects (repeatable)"
    ),
    progress: bool = typer.Option(
        True, "--progress/--no-progress", help="progress bar on stderr while predicting"
    ),
    endpoint_url: EndpointUrl = None,
    tta: bool = typer.Option(
        False, "--tta", help="average the four flips of the slicing plane (4× the time)"
    ),
    axes: str = typer.Option("auto", "--axes", help=AXES_HELP),
    polarity: str = typer.Option("as-is", "--polarity", help=POLARITY_HELP),
) -> None:
    """Segment tomograms: labels (TIFF/MRC), object ids, a CSV of measurements and a JSON
    record of the voxel sizes used, per tomogram."""
    from factory.dataset.storage import Store
    from models.segment import segment_file, segment_files

    if voxel_nm is not None and voxel_nm <= 0:
        raise UserError(f"--voxel-nm: must be > 0, got {voxel_nm}")
    opts = dict(
        voxel_nm=voxel_nm, fov=fov, batch_size=batch_size, device=device,
        min_radius=min_radius_nm, progress=progress, log=typer.echo, tta=tta, axes=axes,
        polarity=polarity, warn=lambda msg: typer.echo(msg, err=True),
    )  # fmt: skip
    if len(input_paths) == 1:
        segment_file(Store(model, endpoint_url), input_paths[0], out, **opts)
        return
    summary = segment_files(Store(model, endpoint_url), input_paths, out, **opts)
    typer.echo(
        f"segmented {len(summary['segmented'])} of {len(input_paths)} tomograms into {out} "
        f"(measurements.csv, summary.json)"
    )
    if summary["failed"]:
        raise UserError(
            f"{len(summary['failed'])} of {len(input_paths)} refused: "
            + "; ".join(f"{f['input']}: {f['error']}" for f in summary["failed"])
        )


#: The commands this module adds to ``simaq`` (name, function; registered by ``cli.py``).
COMMANDS = (
    ("train", train_cmd),
    ("evaluate", evaluate_cmd),
    ("segment", segment_cmd),
)


def _evaluate_real(
    model: str,
    real: str,
    real_labels: str | None,
    *,
    as_json: bool,
    endpoint_url: str | None,
    **kwargs,
) -> None:
    """``simaq evaluate --real``: score, then print JSON or a table of IoU/Dice per class."""
    from factory.dataset.storage import Store
    from factory.tomo.axes import describe
    from models.evaluate import evaluate_real
    from models.polarity import describe as describe_polarity
    from models.polarity import disagreement

    if real_labels is None:
        raise UserError("--real-labels: required with --real (the sparse labels to score on)")
    if kwargs.get("voxel_nm") is not None and kwargs["voxel_nm"] <= 0:
        raise UserError(f"--voxel-nm: must be > 0, got {kwargs['voxel_nm']}")
    model_store = Store(model, endpoint_url)
    result = evaluate_real(model_store, real, real_labels, progress=not as_json, **kwargs)
    warning = disagreement(result["polarity"])
    if warning:
        typer.echo(warning, err=True)
    if as_json:
        typer.echo(json.dumps(result, indent=1))
        return
    methods = result["methods"]
    if result["header_note"]:
        typer.echo(f"{result['tomogram']}: {result['header_note']}")
    typer.echo(
        f"{result['tomogram']}: {result['labelled_voxels']} labelled voxels "
        f"({100 * result['labelled_fraction']:.2f} %), at {result['input_voxel_nm']:g} nm "
        f"({result['voxel_source']}); model at {result['model_voxel_nm']} nm; "
        f"{describe(result['axes'])}; {describe_polarity(result['polarity'])}"
    )
    typer.echo(f"{'class':<20}" + "".join(f"{m + ' IoU/Dice':>26}" for m in methods))

    def cell(m: str, name: str) -> str:
        s = methods[m]["per_class"][name]
        return "—" if s["iou"] is None else f"{s['iou']:.3f} / {s['dice']:.3f}"

    for name in methods["model"]["per_class"]:
        typer.echo(f"{name:<20}" + "".join(f"{cell(m, name):>26}" for m in methods))
