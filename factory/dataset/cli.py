"""``simaq generate | verify | inspect | preview | publish``: the data factory's commands."""

from __future__ import annotations

import json
import shlex
import sys

import typer

from factory.cli_options import DatasetRoot, EndpointUrl, Verbose
from factory.errors import UserError


def parse_splits(text: str) -> dict[str, float]:
    """``"train=0.9,val=0.05,test=0.05"`` → ``{"train": 0.9, ...}``."""
    out: dict[str, float] = {}
    for item in filter(None, (p.strip() for p in text.split(","))):
        name, sep, value = item.partition("=")
        try:
            if not sep:
                raise ValueError
            out[name.strip()] = float(value)
        except ValueError:
            raise UserError(
                f"--splits: expected NAME=FRACTION[,NAME=FRACTION...], got {text!r}"
            ) from None
    if not out:
        raise UserError(f"--splits: no split given in {text!r}")
    return out


def load_generate_config(
    preset: str | None,
    config: str | None,
    sets: list[str],
    *,
    samples: int | None = None,
    shard_size: int | None = None,
    splits: str | None = None,
):
    """The config of a ``generate`` call: preset or file, ``--set`` overrides, then the flags."""
    from factory.config import load_config, load_preset, parse_config, parse_overrides

    if (preset is None) == (config is None):
        raise UserError("generate: give exactly one of --preset NAME or --config FILE")
    overrides = parse_overrides(sets or [])
    cfg = load_preset(preset, overrides) if preset else load_config(config, overrides)
    if samples is None and shard_size is None and splits is None:
        return cfg
    data = cfg.to_json()
    if samples is not None:
        data["dataset"]["num_samples"] = samples
    if shard_size is not None:
        data["dataset"]["shard_size"] = shard_size
    if splits is not None:
        data["dataset"]["splits"] = parse_splits(splits)
    return parse_config(data)


def generate(
    out: str = typer.Option(
        ..., "--out", help="dataset root: a local directory or s3://bucket/prefix"
    ),
    preset: str | None = typer.Option(
        None, "--preset", help="preset name (demo, simaq-paper, full)"
    ),
    config: str | None = typer.Option(None, "--config", help="config file (YAML or JSON)"),
    sets: list[str] = typer.Option(
        [], "--set", help="override a config field: KEY=VALUE (YAML value)"
    ),
    samples: int | None = typer.Option(
        None, "--samples", help="number of samples (dataset.num_samples)"
    ),
    seed: int = typer.Option(0, "--seed", help="global seed (every draw derives from it)"),
    shard_size: int | None = typer.Option(None, "--shard-size", help="samples per shard"),
    splits: str | None = typer.Option(None, "--splits", help="e.g. train=0.9,val=0.05,test=0.05"),
    workers: int | None = typer.Option(
        None, "--workers", help="Ray workers (default: fill the cluster)"
    ),
    gpus_per_worker: float | None = typer.Option(
        None,
        "--gpus-per-worker",
        help="GPUs per Ray worker (default 1 if the cluster has GPUs, else 0)",
    ),
    executor: str = typer.Option(
        "ray", "--executor", help="ray (actors) or local (in-process loop)"
    ),
    address: str | None = typer.Option(
        None, "--address", help="existing Ray cluster: auto, HOST:PORT or ray://HOST:PORT"
    ),
    resume: bool = typer.Option(
        False, "--resume", help="finish an interrupted run (same config and seed)"
    ),
    endpoint_url: EndpointUrl = None,
    verbose: Verbose = False,
) -> None:
    """Generate a sharded, versioned WebDataset of simulated samples."""
    from factory.dataset.generate import generate_dataset
    from factory.dataset.storage import Store, safe_url

    cfg = load_generate_config(
        preset, config, sets, samples=samples, shard_size=shard_size, splits=splits
    )
    if seed < 0:
        raise UserError(f"--seed: must be a non-negative integer, got {seed}")
    command = "simaq " + " ".join(shlex.quote(a) for a in sys.argv[1:])
    m = generate_dataset(
        cfg, Store(out, endpoint_url), seed=seed, executor=executor, workers=workers,
        gpus_per_worker=gpus_per_worker, address=address, resume=resume, progress=True,
        command=command, log=lambda msg: typer.echo(msg, err=True), verbose=verbose,
    )  # fmt: skip
    typer.echo(
        f"{m.name} {m.version}: {m.num_samples} samples in {len(m.shards)} shards "
        f"({m.total_bytes / 2**20:.1f} MiB) at {safe_url(out)}; "
        f"content_sha256 {m.content_sha256}"
    )


def verify(
    dataset: DatasetRoot,
    endpoint_url: EndpointUrl = None,
) -> None:
    """Check every shard against the manifest: size, sha256, and each member as readers check
    it (exit 1 if a shard does not match, 2 if one matches but its content is refused)."""
    from factory.dataset.manifest import read_manifest
    from factory.dataset.storage import Store
    from factory.dataset.tools import verify_dataset
    from schemas.dataset import WIDS_NAME

    store = Store(dataset, endpoint_url)
    problems = verify_dataset(store, progress=True)
    m = read_manifest(store)
    if problems:
        bad = [p for p in problems if not p.startswith(WIDS_NAME)]
        for p in problems:
            typer.secho(
                p if p.startswith(WIDS_NAME) else f"bad shard {p}", err=True,
                fg=typer.colors.RED,
            )  # fmt: skip
        what = [f"{len(bad)} of {len(m.shards)} shards do not match the manifest"] if bad else []
        if len(bad) < len(problems):
            what.append(f"{WIDS_NAME} does not match the manifest")
        typer.secho(f"verify: {'; '.join(what)}", err=True, fg=typer.colors.RED)
        raise typer.Exit(1)
    typer.echo(
        f"ok: {len(m.shards)} shards, {m.num_samples} samples match "
        f"(content_sha256 {m.content_sha256})"
    )


def inspect(
    dataset: DatasetRoot,
    as_json: bool = typer.Option(False, "--json", help="print JSON"),
    endpoint_url: EndpointUrl = None,
) -> None:
    """Version, counts, sizes, class fractions and drawn parameter ranges of a dataset."""
    from factory.dataset.storage import Store
    from factory.dataset.tools import inspect_dataset

    info = inspect_dataset(Store(dataset, endpoint_url))
    if as_json:
        typer.echo(json.dumps(info, indent=1))
        return
    typer.echo(f"{info['name']} {info['version']} (created {info['created']})")
    typer.echo(f"  content_sha256 {info['content_sha256']}")
    typer.echo(f"  config_sha256  {info['config_sha256']}, seed {info['seed']}")
    splits = ", ".join(f"{k} {v}" for k, v in info["splits"].items())
    typer.echo(f"  samples {info['num_samples']} ({splits}) in {info['num_shards']} shards")
    typer.echo(
        f"  size {info['bytes'] / 2**20:.2f} MiB, "
        f"{info['bytes_per_sample'] / 2**10:.1f} KiB/sample; "
        f"grid {info['grid']['shape']} at {info['grid']['voxel_nm']} nm"
    )
    for name, f in info["fields"].items():
        typer.echo(f"  field {name}: {f.get('dtype', '')} {f.get('shape', '')} [{f['member']}]")
    typer.echo(f"  class fractions ({info['label_scheme']}):")
    for name, frac in (info["class_fractions"] or {}).items():
        typer.echo(f"    {name:<16} {frac:.4f}")
    if info["param_ranges"]:
        typer.echo("  parameter ranges:")
        for name, (lo, hi) in info["param_ranges"].items():
            typer.echo(f"    {name:<40} {lo:.4g} .. {hi:.4g}")


def preview(
    dataset: DatasetRoot,
    index: int = typer.Option(0, "--index", help="global sample index"),
    out: str = typer.Option(..., "--out", help="PNG file to write"),
    endpoint_url: EndpointUrl = None,
) -> None:
    """Centre slices of every field of one sample, with the labels overlaid, as a PNG."""
    from factory.dataset.storage import Store
    from factory.dataset.tools import preview_dataset

    typer.echo(preview_dataset(Store(dataset, endpoint_url), index, out))


def publish(
    dataset: str = typer.Argument(..., help="dataset root (local or s3://)"),
    url: str = typer.Argument(
        ..., help="destination, e.g. s3://bucket/datasets (→ URL/NAME/VERSION)"
    ),
    endpoint_url: EndpointUrl = None,
) -> None:
    """Copy a dataset to object storage, verify the copy, and write its manifest there last."""
    from factory.dataset.storage import Store, safe_url
    from factory.dataset.tools import publish_dataset

    dest = publish_dataset(Store(dataset, endpoint_url), Store(url, endpoint_url), progress=True)
    typer.echo(f"published {safe_url(dest)}")


#: The commands this module adds to ``simaq`` (name, function; registered by ``cli.py``).
COMMANDS = (
    ("generate", generate),
    ("verify", verify),
    ("inspect", inspect),
    ("preview", preview),
    ("publish", publish),
)
