"""``zlh db copy``: move a node's database onto PostgreSQL (docs/operations.md, "From one host
to replicas"). The copy itself is :mod:`zlh.api.db.copy`; here are the checks an operator
needs first (the node is stopped, the source exists) and what to do next (the key files)."""

from __future__ import annotations

import argparse
import logging
import socket
from pathlib import Path

from sqlalchemy.engine import make_url
from sqlalchemy.exc import ArgumentError

from zlh.api.commands import settings_from
from zlh.api.db.copy import copy_database, safe_url
from zlh.api.settings import ApiSettings
from zlh.errors import UsageError

__all__ = ["cmd_db_copy", "platform_answers"]


def platform_answers(socket_path: Path) -> bool:
    """Whether a ``zlh up``/``zlh api`` serves on ``socket_path`` (the API's unix socket, made
    on start and removed on a clean stop; a socket left by a killed one does not answer)."""
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as probe:
        probe.settimeout(2.0)
        try:
            probe.connect(str(socket_path))
        except (FileNotFoundError, ConnectionRefusedError):
            return False
        except PermissionError:
            raise UsageError(
                f"cannot tell whether the platform runs on {socket_path} (permission denied): "
                "run this as the platform's user"
            ) from None
    return True


def _target(url: str) -> str:
    try:
        parsed = make_url(url)
    except ArgumentError:
        raise UsageError(
            f"--to {url!r} is not a database URL: postgresql+psycopg://USER@HOST/DB"
        ) from None
    if parsed.get_backend_name() != "postgresql":
        raise UsageError(
            f"--to {safe_url(url)}: the copy goes into PostgreSQL, e.g. "
            "postgresql+psycopg://USER@HOST/DB"
        )
    return url


def _source(settings: ApiSettings) -> str:
    if not settings.data_dir.is_dir():
        raise UsageError(
            f"no data dir at {settings.data_dir}: pass the --data-dir `zlh up` runs with"
        )
    url = make_url(settings.db_url)
    if url.get_backend_name() == "sqlite" and not (url.database and Path(url.database).is_file()):
        raise UsageError(f"no database at {url.database}: pass the --data-dir `zlh up` runs with")
    socket_path = settings.unix_socket or settings.data_dir / "run" / "api.sock"
    if platform_answers(socket_path):
        raise UsageError(
            f"the platform is running on {settings.data_dir} (its API answers on "
            f"{socket_path}): stop it first, so nothing changes during the copy"
        )
    return settings.db_url


def _key_files(settings: ApiSettings) -> list[Path]:
    """What every replica must hold byte for byte: the session key, the agent key (their
    secrets are derived from it, only nonces are in the database), and with a tailnet its
    sealing key and Headscale's API key."""
    keys = [settings.jwt_key_path, settings.agent_key_path]
    tailnet = settings.data_dir / "tailnet.key"
    if tailnet.is_file() or settings.headscale.enabled:
        keys.append(tailnet)
    if settings.headscale.api_key_file is not None:
        keys.append(settings.headscale.api_key_file)
    return keys


def cmd_db_copy(args: argparse.Namespace) -> int:
    # psycopg warns on stderr as it ends a batch a rejected row aborted; the error says it once.
    logging.getLogger("psycopg").setLevel(logging.ERROR)
    settings = settings_from(args)
    target = _target(args.to)
    source = _source(settings)
    if make_url(source) == make_url(target):
        raise UsageError("--to names the database the node already uses: nothing to copy")
    report = copy_database(source, target, dry_run=args.dry_run)
    verb = "would copy" if report.dry_run else "copied"
    print(f"{verb} {safe_url(source)} -> {safe_url(target)} (revision {report.revision})")
    for name, rows in report.rows.items():
        print(f"  {name:<16} {rows:>9} row(s)")
    sequences = ", ".join(f"{c} next {n}" for c, n in report.sequences.items())
    print(
        f"{report.total} row(s) in {len(report.rows)} table(s), counts verified per table, "
        f"in {report.seconds:.2f} s; sequences: {sequences or 'none'}"
    )
    if report.dry_run:
        print("dry run: rolled back, nothing written to the target")
        return 0
    keys = _key_files(settings)
    missing = [str(k) for k in keys[:2] if not k.is_file()]
    print(
        "copy these key files to every replica, same content, mode 0600 (their paths, or "
        "jwt_key_file/agent_key_file): " + " ".join(str(k) for k in keys)
    )
    if missing:
        print(f"warning: missing here: {' '.join(missing)} (a node that never started has none)")
    return 0
