"""Running ``simaq`` in the test process, as ``main()`` does (exit codes and one-line errors)."""

from __future__ import annotations

import contextlib
import io
import sys

import pytest

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


def error_line(err: str) -> str:
    """The one ``error:`` line of ``err``; fails on a traceback or on several error lines."""
    lines = [ln for ln in err.splitlines() if ln.startswith("error:")]
    assert len(lines) == 1 and "Traceback" not in err, err
    return lines[0]
