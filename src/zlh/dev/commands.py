"""``zlh dev list|stop|start|restart|rebuild|share|unshare``: sign in to the running platform
and ask it.

The password is ``--password-file``'s, else ``$ZLH_PASSWORD``, else, for the admin account,
the data dir's ``admin-password`` (what ``zlh demo`` wrote), else asked on the terminal.
"""

from __future__ import annotations

import argparse
import getpass
import os
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from zlh.api.bodies import ContainerOut
from zlh.cliargs import data_dir_from
from zlh.dev.cli import DEFAULT_URL
from zlh.dev.client import PlatformClient
from zlh.errors import UsageError, ZlhError

__all__ = ["cmd_action", "cmd_list", "cmd_share", "cmd_unshare", "signed_in"]

_ADMIN = "admin"
_PASSWORD_FILE = "admin-password"
WAIT_S = 600.0


def _password(args: argparse.Namespace, user: str) -> str:
    if args.password_file is not None:
        try:
            return Path(args.password_file).read_text().strip()
        except OSError as exc:
            raise UsageError(f"cannot read --password-file {args.password_file}: {exc}") from exc
    if password := os.environ.get("ZLH_PASSWORD"):
        return password
    kept = data_dir_from(args) / _PASSWORD_FILE
    if user == _ADMIN and os.access(kept, os.R_OK):
        return kept.read_text().strip()
    if sys.stdin.isatty():
        return getpass.getpass(f"password of {user}: ")
    raise UsageError(
        f"no password for {user}: give --password-file, set ZLH_PASSWORD, or run on a terminal"
    )


@contextmanager
def signed_in(args: argparse.Namespace) -> Iterator[PlatformClient]:
    url = args.url or os.environ.get("ZLH_URL") or DEFAULT_URL
    user = args.user or os.environ.get("ZLH_USER") or _ADMIN
    client = PlatformClient(url)
    try:
        client.sign_in(user, _password(args, user))
        yield client
    finally:
        client.close()


def _line(container: ContainerOut) -> str:
    reason = f" ({container.state_reason})" if container.state_reason else ""
    error = f": {container.error}" if container.error else ""
    return f"container {container.vmid}: {container.state}{reason}{error}"


def cmd_list(args: argparse.Namespace) -> int:
    with signed_in(args) as client:
        containers = client.containers()
    if not containers:
        print("no containers")
    for c in containers:
        runtime = f"{c.runtime} {c.version}"
        columns = f"{c.vmid:>6}  {c.name or '-':<16} {c.owner:<12} {runtime:<16} {c.state:<12}"
        print(f"{columns} {c.state_reason or ''}".rstrip())
    return 0


def _done(action: str, container: ContainerOut) -> bool:
    """Whether ``action`` has come to its end: stopped for a stop, else ready; failed, or a
    start that failed (stopped again, with its error), ends any of them."""
    if container.state == "failed" or (container.state == "stopped" and container.error):
        return True
    return container.state == ("stopped" if action == "stop" else "ready")


def cmd_action(args: argparse.Namespace) -> int:
    with signed_in(args) as client:
        container = client.act(args.vmid, args.action)
        print(_line(container), flush=True)
        if args.no_wait:
            return 0
        last = container.state
        deadline = time.monotonic() + WAIT_S
        # A restart's stream ends once it is stopped (a rebuild's, never before ready or failed);
        # the start that follows is read anew.
        while not _done(args.action, container) and time.monotonic() < deadline:
            for event in client.events(args.vmid):
                if event.state != last:
                    last = event.state
                    print(f"container {args.vmid}: {event.state}", flush=True)
            container = client.container(args.vmid)
    if not _done(args.action, container):
        raise ZlhError(f"{_line(container)}; not done after {WAIT_S:.0f}s")
    if container.state == "failed" or container.error:
        raise ZlhError(_line(container))
    return 0


def cmd_share(args: argparse.Namespace) -> int:
    with signed_in(args) as client:
        container = client.share(args.vmid, args.guest, args.role)
    shares = ", ".join(f"{s.user} ({s.role})" for s in container.shares)
    print(f"container {args.vmid}: shared with {shares}")
    return 0


def cmd_unshare(args: argparse.Namespace) -> int:
    with signed_in(args) as client:
        client.unshare(args.vmid, args.guest)
    print(f"container {args.vmid}: no longer shared with {args.guest}")
    return 0
