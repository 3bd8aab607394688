"""Starting or joining Ray as users meet it: a private local instance unless told otherwise.

``ray.init()`` with no address joins whatever Ray instance it finds on the machine ("Found multiple
active Ray instances ... connecting to latest cluster"), possibly a stranger's, and the run dies
when that instance stops. :func:`start_ray` therefore starts a *private* local instance
(``address="local"``) unless ``--address`` or ``$RAY_ADDRESS`` names a cluster, keeps Ray's banners
and the workers' output off the console unless ``verbose``, and checks an address before handing it
to Ray (which waits minutes for a GCS that does not answer).
"""

from __future__ import annotations

import logging
import os
import socket
import time
from urllib.parse import urlsplit

from factory.errors import UserError

# Ray warns on every start that token authentication is on (its default for local clusters).
_NOISY_LOGGERS = ("ray._private.authentication.authentication_token_setup",)
_ADDRESS_FORMS = "auto, HOST:PORT or ray://HOST:PORT"


def cluster_address(address: str | None) -> str | None:
    """The cluster to join: ``address``, else ``$RAY_ADDRESS``, else None (a private instance)."""
    return address or os.environ.get("RAY_ADDRESS") or None


def check_reachable(address: str, timeout_s: float = 5.0) -> None:
    """Fail fast on a ``HOST:PORT`` or ``ray://HOST:PORT`` nobody listens on.

    A TCP connect says so in milliseconds (refused) or ``timeout_s`` (filtered). ``auto`` and
    ``local`` are left to Ray, which fails fast for them.
    """
    if address in ("auto", "local"):
        return
    parts = urlsplit(address if "://" in address else f"gcs://{address}")
    if parts.scheme not in ("ray", "gcs"):
        raise UserError(f"expected {_ADDRESS_FORMS}, got {address!r}", param="address")
    try:
        host, port = parts.hostname, parts.port
    except ValueError:
        host = port = None
    if host and port is None and parts.scheme == "ray":
        port = 10001  # Ray Client's default port
    if not host or port is None:
        raise UserError(f"expected {_ADDRESS_FORMS}, got {address!r}", param="address")
    try:
        socket.create_connection((host, port), timeout=timeout_s).close()
    except OSError as err:
        reason = err.strerror or type(err).__name__
        raise UserError(
            f"cannot connect to Ray at {address!r} ({host}:{port}: {reason})", param="address"
        ) from None


def start_ray(
    address: str | None = None,
    *,
    verbose: bool = False,
    num_cpus: int | None = None,
    runtime_env: dict | None = None,
) -> bool:
    """Join the cluster at ``address`` (or ``$RAY_ADDRESS``) or start a private local Ray.

    Parameters
    ----------
    address : str or None
        ``auto``, ``HOST:PORT`` or ``ray://HOST:PORT``; None starts a private local instance that
        never attaches to another Ray running on the machine.
    verbose : bool
        Show Ray's banners, warnings and the workers' output (off by default).
    num_cpus : int, optional
        CPUs of a private instance (default: all of the machine's).
    runtime_env : dict, optional
        Ray runtime environment of the job (e.g. a ``worker_process_setup_hook``).

    Returns
    -------
    bool
        True if this call started or joined Ray (the caller then calls ``ray.shutdown()``);
        False if Ray was already initialised in this process (tests), which is reused.
    """
    import ray

    if ray.is_initialized():
        return False
    level = logging.INFO if verbose else logging.WARNING
    if not verbose:
        for name in _NOISY_LOGGERS:
            logging.getLogger(name).setLevel(logging.ERROR)
    kwargs: dict = {"logging_level": level, "log_to_driver": verbose}
    if runtime_env is not None:
        kwargs["runtime_env"] = runtime_env
    target = cluster_address(address)
    if target is None or target == "local":
        if num_cpus is not None:
            kwargs["num_cpus"] = num_cpus
        ray.init(address="local", include_dashboard=False, **kwargs)
        return True
    check_reachable(target)
    _join(ray, target, kwargs)
    return True


def _join(ray, target: str, kwargs: dict, attempts: int = 3) -> None:
    """``ray.init(address=target)``, retrying what a loaded head does transiently.

    A Ray Client head starts one server process per client and gives it 30 s
    (``RAY_CLIENT_SERVER_CHECK_CHANNEL_TIMEOUT_S``); on a busy head that start can time out and
    the client gets ``ConnectionAbortedError("Initialization failure from server ...")``. That
    one is retried after a pause; every other error is the user's and is reported at once.
    """
    for attempt in range(1, attempts + 1):
        try:
            ray.init(address=target, **kwargs)
            return
        except ConnectionAbortedError as err:
            if attempt == attempts:
                raise UserError(
                    f"cannot connect to Ray at {target!r} after {attempts} tries "
                    f"({_last_line(err)})",
                    param="address",
                ) from None
            ray.shutdown()
            time.sleep(2.0 * attempt)
        except (ConnectionError, ValueError, RuntimeError) as err:
            raise UserError(
                f"cannot connect to Ray at {target!r} ({_last_line(err)})", param="address"
            ) from None


def _last_line(err: BaseException) -> str:
    """The most specific line of an error (server tracebacks end with the cause)."""
    lines = [line.strip() for line in str(err).splitlines() if line.strip()]
    return lines[-1] if lines else type(err).__name__
