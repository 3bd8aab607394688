"""Running ``simaq`` in the test process, as ``main()`` does (exit codes and one-line errors), or
in a subprocess (:func:`cli_argv`), and a Typer app of one stage's commands (:func:`stage_app`)."""

from __future__ import annotations

import contextlib
import io
import sys

import pytest
import typer

import cli


def invoke(args: list[str]) -> tuple[int, str, str]:
    """``simaq ARGS`` in this process: (exit code, stdout, stderr)."""
    out, err = io.StringIO(), io.StringIO()
    old = sys.argv
    sys.argv = ["simaq", *args]
    try:
        with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
            try:
                cli.main()
                code = 0
            except SystemExit as exc:
                code = 0 if exc.code is None else exc.code
    finally:
        sys.argv = old
    return code, out.getvalue(), err.getvalue()


def run(monkeypatch, capsys, *args: str) -> tuple[int, str, str]:
    """``simaq ARGS`` in this process through pytest's fixtures: (exit code, stdout, stderr)."""
    monkeypatch.setattr(sys, "argv", ["simaq", *args])
    with pytest.raises(SystemExit) as exc:
        cli.main()
    out = capsys.readouterr()
    code = exc.value.code
    return (0 if code is None else code), out.out, out.err


def error_line(err: str, ray_logs: bool = False) -> str:
    """The one ``error:`` line of ``err``; fails on several error lines, or on a traceback unless
    Ray forwarded a worker's log (``ray_logs``)."""
    lines = [ln for ln in err.splitlines() if ln.startswith("error:")]
    assert len(lines) == 1, err
    assert ray_logs or "Traceback" not in err, err
    return lines[0]


def assert_stopped_not_retried(err: str) -> None:
    """``err`` of a ``train`` a data error stopped: no worker raised, nothing was retried. The
    driver warns of each restart itself ("warning: a training worker ..."); the session's Ray
    also forwards its workers' and Train controller's logs (with unrelated tracebacks of an
    overloaded machine at times): no worker's traceback, no failure decision of Ray Train and
    at most one start of the worker group."""
    assert "warning: a training worker" not in err, err[-3000:]
    assert not [ln for ln in err.splitlines() if "RayTrainWorker" in ln and "Traceback" in ln]
    assert "FailurePolicy" not in err and "WorkerGroupError" not in err, err[-3000:]
    assert err.count("Attempting to start training worker group") <= 1, err[-3000:]


def cli_argv(*args: str) -> list[str]:
    """The command line of ``simaq ARGS`` in a fresh Python process (for ``subprocess``)."""
    return [sys.executable, "-c", "import cli; cli.main()", *args]


def stage_app(register) -> typer.Typer:
    """A Typer app with only one stage's commands (``register`` of its ``cli`` module)."""
    app = typer.Typer()

    @app.callback()
    def main() -> None:
        """test app"""

    register(app)
    return app
