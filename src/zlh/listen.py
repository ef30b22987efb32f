"""``HOST:PORT`` listen addresses: parsed one way everywhere, and checked before a command
starts anything, so a port in use is one line at once instead of a failure after start-up.

Standard library only: the agent uses it too.
"""

from __future__ import annotations

import socket

from zlh.errors import ZlhError

__all__ = ["WILDCARDS", "local_address", "parse_listen", "require_free"]

WILDCARDS = frozenset({"0.0.0.0", "::"})


def parse_listen(value: str) -> tuple[str, int]:
    """``HOST:PORT`` (``[::1]:PORT`` for IPv6) into its parts; ValueError names the problem."""
    host, sep, port = value.rpartition(":")
    host = host.strip("[]")
    if not sep or not host or not port.isdigit() or not 0 < int(port) < 65536:
        raise ValueError(f"{value!r} is not HOST:PORT with a port from 1 to 65535")
    return host, int(port)


def local_address(host: str) -> str:
    """How a client on this host names a listener on ``host`` in a URL: a wildcard (or no
    host) is loopback, an IPv6 address goes in brackets."""
    host = host.strip("[]")
    if not host or host in WILDCARDS:
        host = "127.0.0.1"
    return f"[{host}]" if ":" in host else host


def require_free(host: str, port: int, *, what: str = "") -> None:
    """ZlhError, saying what to do, when ``host:port`` cannot be listened on right now."""
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    with socket.socket(family) as probe:
        probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            probe.bind((host, port))
        except OSError as exc:
            where = f"[{host}]:{port}" if ":" in host else f"{host}:{port}"
            raise ZlhError(
                f"cannot listen on {where}{f' ({what})' if what else ''}: {exc.strerror}; stop "
                "what uses it (zlh doctor says whether it is zlh) or pick another --listen"
            ) from exc
