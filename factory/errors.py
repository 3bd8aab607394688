"""Errors a user can act on. The CLI prints them as one line and exits with code 2."""

from __future__ import annotations


class UserError(ValueError):
    """Bad input from the user (config, arguments, data): the message names the field and value."""


class ConfigError(UserError):
    """An invalid configuration: the message names the dotted field path and the offending value."""
