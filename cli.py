"""The ``simaq`` command line: one Typer app; each stage package registers its own commands.

Bad input (a :class:`factory.errors.UserError`) prints one line naming the field and value and exits
with code 2; heavy imports (torch, ray) happen inside the commands so ``--help`` stays fast.
"""

from __future__ import annotations

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
        "models.cli",
    ):
        try:
            mod = importlib.import_module(module)
        except ModuleNotFoundError as err:
            if err.name == module:  # that stage has no commands (yet)
                continue
            raise
        mod.register(app)


_register_all()


def main() -> None:
    """Console-script entry point (``simaq``)."""
    try:
        app()
    except UserError as err:
        typer.secho(f"error: {err}", err=True, fg=typer.colors.RED)
        sys.exit(2)


if __name__ == "__main__":
    main()
