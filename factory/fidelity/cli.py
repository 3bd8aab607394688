"""``simaq fidelity``: a dataset's reconstructions against a real tomogram."""

from __future__ import annotations

import json

import typer

from factory.cli_options import AXES_HELP, EndpointUrl
from factory.fidelity.calibrate import format_value


def _print_summary(report: dict) -> None:
    syn, real = report["summary"]["synthetic"], report["real"]["metrics"]
    cmp = report["summary"]["comparison"]
    d = report["dataset"]
    typer.echo(
        f"{d['name']} {d['version']}: {len(d['samples'])} samples at {d['voxel_nm']:g} nm vs "
        f"{report['real']['path']} ({report['real']['voxel_nm']:g} nm from "
        f"{report['real']['voxel_source']}, resampled to {report['real']['resampled_shape']})"
    )
    typer.echo(f"  {'metric':<24}{'real':>10}  synthetic median [q25, q75]")
    for k, v in syn.items():
        typer.echo(f"  {k:<24}{real[k]:>10.4g}  {v['median']:.4g} [{v['q25']:.4g}, {v['q75']:.4g}]")
    for k in ("histogram_overlap", "wasserstein", "distance"):
        v = cmp[k]
        typer.echo(f"  {k:<24}{'':>10}  {v['median']:.4g} [{v['q25']:.4g}, {v['q75']:.4g}]")
    bands = ", ".join(f"{b:+.3f}" for b in cmp["band_log_ratio_median"])
    typer.echo(f"  band ln(P_syn/P_real) (5 bands to Nyquist): {bands}")
    cap = report["real"]["metrics"]["capillary"]
    typer.echo(
        f"  capillary ring: real {'yes' if cap['detected'] else 'no'}, "
        f"synthetic {report['summary']['capillary_fraction']:.0%} of samples"
    )
    for note in report["notes"]:
        typer.echo(f"  note: {note}")


def fidelity(
    data: str = typer.Option(
        ..., "--data", help="dataset root (local or s3://) or its manifest.json"
    ),
    real: str = typer.Option(..., "--real", help="real tomogram: .mrc/.rec/.tif/.npy"),
    real_voxel_nm: float | None = typer.Option(
        None, "--real-voxel-nm", help="voxel size of --real in nm (default: file header)"
    ),
    real_axes: str = typer.Option("auto", "--real-axes", help="of --real: " + AXES_HELP),
    real_polarity: str = typer.Option(
        "as-is", "--real-polarity", help="of --real: as-is (absorbing = bright) or inverted"
    ),
    out: str = typer.Option(..., "--out", help="directory for fidelity.json and fidelity.png"),
    samples: int = typer.Option(8, "--samples", help="synthetic samples compared (first N)"),
    suggest: bool = typer.Option(
        False, "--suggest", help="print --set overrides towards the real tomogram"
    ),
    as_json: bool = typer.Option(False, "--json", help="print the report as JSON"),
    endpoint_url: EndpointUrl = None,
) -> None:
    """Compare a dataset's reconstructions with a real tomogram (metrics, distance, PNG)."""
    from factory.config import preset_names
    from factory.dataset.manifest import read_manifest
    from factory.dataset.storage import Store
    from factory.fidelity.calibrate import suggest as make_suggestions
    from factory.fidelity.report import fidelity_report, json_safe, write_report

    dataset = Store(data, endpoint_url)
    report, arrays = fidelity_report(
        dataset, real, real_voxel_nm=real_voxel_nm, samples=samples, real_axes=real_axes,
        real_polarity=real_polarity.strip().lower(),
    )  # fmt: skip
    if suggest:
        config = read_manifest(dataset).config
        report["suggestions"] = make_suggestions(report, config)
    js, png = write_report(report, arrays, out)
    if as_json:
        typer.echo(json.dumps(json_safe(report), indent=1, allow_nan=False))
    else:
        _print_summary(report)
        typer.echo(f"wrote {js} and {png}")
    if suggest:
        preset = report["dataset"]["preset"]
        base = f"--preset {preset}" if preset in preset_names() else "--config CONFIG"
        for line in format_suggestions(report["suggestions"], base):
            typer.echo(line, err=as_json)


#: The commands this module adds to ``simaq`` (name, function; registered by ``cli.py``).
COMMANDS = (("fidelity", fidelity),)


def format_suggestions(items: list[dict], base: str) -> list[str]:
    """Printable lines: one ``--set KEY=VALUE  # reason`` per item, then the ``simaq generate``
    command (``base``: e.g. ``--preset demo``) with the overrides of existing fields; pending
    fields are marked."""
    if not items:
        return ["no change suggested: every rule is within its tolerance"]
    lines = []
    for it in items:
        note = "" if it["exists"] else "  [pending: no such config field in this version yet]"
        lines.append(f"--set {it['key']}={format_value(it['value'])}  # {it['reason']}{note}")
    sets = " ".join(
        f"--set {it['key']}={format_value(it['value'])}" for it in items if it["exists"]
    )
    if sets:
        lines.append(f"simaq generate {base} {sets} --out OUT")
    return lines
