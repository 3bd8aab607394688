"""Errors a user can act on. The CLI prints them as one line and exits with code 2.

The library names its own parameters, not the CLI's flags: ``UserError("must be >= 1, got 0",
param="workers")`` reads ``workers: must be >= 1, got 0`` to a Python caller, and the CLI shows it
as ``--workers: must be >= 1, got 0`` (:meth:`UserError.for_cli`). Other parameters named in the
message are written in backticks (``pass `resume` to finish it``) and shown as flags too.
"""

from __future__ import annotations

import re
from collections.abc import Mapping

_PARAM_REF = re.compile(r"`([a-z_][a-z0-9_]*)`")


def flag_of(param: str, renames: Mapping[str, str] | None = None) -> str:
    """The CLI flag of a library parameter: ``real_labels`` → ``--real-labels`` (or a rename)."""
    if renames and param in renames:
        return renames[param]
    return "--" + param.replace("_", "-")


class UserError(ValueError):
    """Bad input from the user (config, arguments, data): the message names the field and value.

    ``param`` is the library parameter at fault (None when the message names its own field, e.g. a
    dotted config path or a shard).
    """

    def __init__(self, message: str, *, param: str | None = None):
        self.message = message
        self.param = param
        super().__init__(f"{param}: {message}" if param else message)

    def __reduce__(self):  # keyword-only ``param`` must survive pickling (Ray moves errors)
        return _rebuild, (type(self), self.message, self.param)

    def for_cli(self, renames: Mapping[str, str] | None = None) -> str:
        """The message with parameter names shown as the CLI's flags."""
        text = _PARAM_REF.sub(lambda m: flag_of(m[1], renames), self.message)
        return f"{flag_of(self.param, renames)}: {text}" if self.param else text


def _rebuild(cls: type[UserError], message: str, param: str | None) -> UserError:
    err = cls.__new__(cls)
    UserError.__init__(err, message, param=param)
    return err


class ConfigError(UserError):
    """An invalid configuration: the message names the dotted field path and the offending value."""
