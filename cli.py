"""The ``simaq`` command line: one Typer app; each stage package registers its own commands.

Bad input (a :class:`factory.errors.UserError`) prints one line naming the field and value and exits
with code 2; heavy imports (torch, ray) happen inside the commands so ``--help`` stays fast.
"""

from __future__ import annotations

import os
import sys

import typer

from factory.errors import UserError

app = typer.Typer(
    name="simaq",
    help="Simulated cryo soft X-ray tomography: a data factory and segmentation models (SimAQ).",
    no_args_is_help=True,
    pretty_exceptions_enable=False,
    add_completion=False,
)


def _register_all() -> None:
    import importlib

    for module in (
        "factory.tomo.cli",
        "factory.phantom.cli",
        "factory.acquisition.cli",
        "factory.dataset.cli",
        "factory.fidelity.cli",
        "models.cli",
    ):
        try:
            mod = importlib.import_module(module)
        except ModuleNotFoundError as err:
            if err.name == module:  # that stage has no commands (yet)
                continue
            raise
        commands = getattr(mod, "COMMANDS", None)  # (name, function) pairs, or a register(app)
        if commands is None:
            mod.register(app)
        for name, command in commands or ():
            app.command(name)(command)


def _version_callback(value: bool) -> None:
    if not value:
        return
    from factory.dataset.generate import code_info

    info = code_info()
    rev = info["git_sha"][:12] if info["git_sha"] else "unknown"
    if info["dirty"]:
        rev += "-dirty"
    typer.echo(f"simaq {info['package'] or 'unknown'} (code revision {rev})")
    raise typer.Exit()


@app.callback()
def _root(
    version: bool = typer.Option(
        False,
        "--version",
        callback=_version_callback,
        is_eager=True,
        help="print the package version and code revision, then exit",
    ),
) -> None:
    """Simulated cryo soft X-ray tomography: a data factory and segmentation models (SimAQ)."""


_register_all()


#: Library parameters whose CLI name is not ``--`` + the name with hyphens (see factory/errors.py).
PARAM_FLAGS = {"input_path": "INPUT", "path": "PATH"}


def _crash_log(err: BaseException) -> str:
    """Write the full traceback of an unexpected failure to a log file; return its path."""
    import tempfile
    import time
    import traceback

    folder = os.path.join(tempfile.gettempdir(), "simaq-logs")
    os.makedirs(folder, exist_ok=True)
    path = os.path.join(folder, f"simaq-{time.strftime('%Y%m%d-%H%M%S')}-{os.getpid()}.log")
    with open(path, "w", encoding="utf-8") as fh:
        fh.write("simaq " + " ".join(sys.argv[1:]) + "\n\n")
        traceback.print_exception(type(err), err, err.__traceback__, file=fh)
    return path


def main() -> None:
    """Console-script entry point (``simaq``).

    Bad input exits 2 with one line; an unexpected failure exits 1 with one line naming the cause
    and the log file that holds the full trace.
    """
    try:
        app()
    except UserError as err:
        typer.secho(f"error: {err.for_cli(PARAM_FLAGS)}", err=True, fg=typer.colors.RED)
        sys.exit(2)
    except KeyboardInterrupt:
        typer.secho("interrupted", err=True, fg=typer.colors.RED)
        sys.exit(130)
    except Exception as err:  # noqa: BLE001 - the last resort: one line, the trace in a file
        lines = str(err).strip().splitlines()
        cause = f"{type(err).__name__}: {lines[0][:300]}" if lines else type(err).__name__
        path = _crash_log(err)
        typer.secho(f"error: {cause} (full trace in {path})", err=True, fg=typer.colors.RED)
        sys.exit(1)


if __name__ == "__main__":
    main()
