"""Options that several ``simaq`` commands share, declared once as Typer ``Annotated`` types.

A command declares ``endpoint_url: EndpointUrl = None``: the flag and its help live here, the
default in the command's signature (Typer's ``Annotated`` style). The commands that write one sample
as files (``simaq phantom``, ``simaq simulate``) are declared with :func:`sample_command`, which adds
their common options and resolves them to one config.
"""

from __future__ import annotations

import inspect
from collections.abc import Callable
from pathlib import Path
from typing import Annotated, Any, NamedTuple

import typer

from factory.errors import UserError

# --- datasets (the dataset and model commands) -----------------------------------------------------

EndpointUrl = Annotated[
    str | None,
    typer.Option(
        "--endpoint-url",
        help="S3 endpoint, e.g. http://127.0.0.1:9000 (default: $SIMAQ_S3_ENDPOINT, else AWS)",
    ),
]
AXES_HELP = (
    "array axis order of the file as beam Z, tilt axis Y and X, e.g. ZYX (the factory's) or YZX "
    "(IMOD before trimvol -rx); auto: detected from the missing wedge or the capillary, else ZYX"
)
DatasetRoot = Annotated[
    str, typer.Argument(help="dataset root (local or s3://) or its manifest.json")
]
Verbose = Annotated[
    bool, typer.Option("--verbose", "-v", help="show Ray's banners and the workers' logs")
]

# --- one sample written as files (``simaq phantom``, ``simaq simulate``) ---------------------------

OutDir = Annotated[Path, typer.Option("--out", help="output directory (created)")]
Preset = Annotated[
    str | None, typer.Option("--preset", help="preset name (demo, simaq-paper, full)")
]
ConfigFile = Annotated[Path | None, typer.Option("--config", help="config file (YAML/JSON)")]
Seed = Annotated[int, typer.Option("--seed", help="global seed")]
Index = Annotated[int, typer.Option("--index", help="sample index")]
Sets = Annotated[
    list[str] | None, typer.Option("--set", help="override KEY=VALUE (YAML value), repeatable")
]
Format = Annotated[str, typer.Option("--format", help="volume file format: tiff or mrc")]
Overwrite = Annotated[
    bool, typer.Option("--overwrite", help="replace the files of an earlier run in OUT")
]
Device = Annotated[str, typer.Option("--device", help="torch device (cpu, cuda)")]

#: Volume file formats of the one-sample commands.
FORMATS = ("tiff", "mrc")

_empty = inspect.Parameter.empty
#: (name, type, default) of the options :func:`sample_command` adds, in ``--help`` order: these
#: first, then the command's own options, then ``--overwrite``.
_SAMPLE_OPTIONS = (
    ("out", OutDir, _empty),
    ("preset", Preset, None),
    ("config", ConfigFile, None),
    ("seed", Seed, 0),
    ("index", Index, 0),
    ("set_", Sets, None),
    ("fmt", Format, "tiff"),
)
_SAMPLE_LAST = (("overwrite", Overwrite, False),)


def _keyword(name: str, annotation: Any, default: Any) -> inspect.Parameter:
    return inspect.Parameter(
        name, inspect.Parameter.KEYWORD_ONLY, annotation=annotation, default=default
    )


class SampleArgs(NamedTuple):
    """The common options of a one-sample command, checked, with the config they resolve to."""

    cfg: Any  # factory.config.SimConfig (imported on first use)
    out: Path
    seed: int
    index: int
    fmt: str
    overwrite: bool


def sample_args(
    out: Path,
    preset: str | None,
    config: Path | None,
    seed: int,
    index: int,
    set_: list[str] | None,
    fmt: str,
    overwrite: bool,
) -> SampleArgs:
    """Check the common options and load the config: exactly one of ``--preset`` and ``--config``,
    with the ``--set`` overrides applied. Raises :class:`UserError` (exit 2) on a bad one."""
    from factory.config import load_config, load_preset, parse_overrides

    if (preset is None) == (config is None):
        raise UserError("give exactly one of --preset NAME or --config FILE")
    if fmt not in FORMATS:
        raise UserError(f"--format: must be one of {', '.join(FORMATS)}, got {fmt!r}")
    if seed < 0:
        raise UserError(f"--seed: must be >= 0, got {seed}")
    if index < 0:
        raise UserError(f"--index: must be >= 0, got {index}")
    overrides = parse_overrides(set_ or [])
    cfg = load_preset(preset, overrides) if preset else load_config(config, overrides)
    return SampleArgs(cfg, out, seed, index, fmt, overwrite)


def sample_command(app: typer.Typer, name: str) -> Callable[[Callable], Callable]:
    """Decorator: register ``run(args: SampleArgs, **own)`` as the command ``simaq NAME``.

    The command takes the common options (``--out``, ``--preset`` | ``--config``, ``--seed``,
    ``--index``, ``--set``, ``--format``, ``--overwrite``) and ``run``'s own keyword parameters
    (Typer options); :func:`sample_args` checks the common ones before ``run`` is called. The help
    text is ``run``'s docstring.
    """

    def register(run: Callable) -> Callable:
        own = list(inspect.signature(run, eval_str=True).parameters.values())[1:]

        def command(**options: Any) -> Any:
            own_values = {p.name: options.pop(p.name) for p in own}
            return run(sample_args(**options), **own_values)

        table = [*_SAMPLE_OPTIONS, *((p.name, p.annotation, p.default) for p in own), *_SAMPLE_LAST]
        command.__signature__ = inspect.Signature(
            [_keyword(*row) for row in table]
        )  # Typer reads it
        command.__name__, command.__doc__ = run.__name__, run.__doc__
        app.command(name)(command)
        return run

    return register
