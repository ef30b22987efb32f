"""``zlh db copy`` benchmark: prints numbers, asserts nothing.

A SQLite data dir shaped like a busy node (``--users`` users, each with a session and an API
token, ``--containers`` containers with a status document and a share each, ``--audit``
audit rows) is copied into a fresh database of a throwaway PostgreSQL cluster
(tests/api/pg_cluster.py) by the real CLI; the wall time of the command and rows per second.

    .venv/bin/python bench/db_copy.py [--users 1000] [--containers 10000] [--audit 100000]
"""

from __future__ import annotations

import argparse
import subprocess
import sys
import tempfile
import time
from datetime import timedelta
from pathlib import Path

from sqlalchemy import insert

REPO = Path(__file__).resolve().parent.parent
sys.path[:0] = [str(REPO / "tests"), str(REPO / "tests" / "api")]

import pg_cluster  # noqa: E402

from api_kit import PINS  # noqa: E402
from support import ZLH  # noqa: E402
from zlh.api.db import ApiToken, AuditEntry, Container, Database, Session, Share, User  # noqa: E402
from zlh.api.db.models import utcnow  # noqa: E402
from zlh.schemas import AgentStatus  # noqa: E402


def fill(url: str, users: int, containers: int, audit: int) -> int:
    """Rows of every kind the platform writes, inserted in bulk; how many."""
    db = Database(url)
    db.migrate()
    now = utcnow()
    later = now + timedelta(days=1)
    status = AgentStatus.model_validate(
        {"state": "ready", "workspaceRoot": "/home/dev/workspace", "agentVersion": "1"}
    )
    with db.engine.begin() as conn:
        conn.execute(
            insert(User),
            [
                {"id": i, "username": f"u{i}", "password_hash": "$argon2id$x"}
                for i in range(1, users + 1)
            ],
        )
        conn.execute(
            insert(Session),
            [
                {"id": f"s{i}", "user_id": i, "created_at": now, "expires_at": later}
                for i in range(1, users + 1)
            ],
        )
        conn.execute(
            insert(ApiToken),
            [
                {
                    "user_id": i,
                    "name": "ci",
                    "scopes": ["containers:read"],
                    "secret_sha256": f"{i:064x}",
                    "created_at": now,
                    "expires_at": later,
                }
                for i in range(1, users + 1)
            ],
        )
        rows = []
        for n in range(containers):
            rows.append(
                {
                    "vmid": 100 + n,
                    "owner_id": 1 + n % users,
                    "runtime": "node",
                    "version": "22",
                    "addons": ["code-server"],
                    "pins": PINS,
                    "state": "ready",
                    "agent_nonce": f"{n:032x}",
                    "status": status,
                    "created_at": now,
                    "updated_at": now,
                }
            )
        conn.execute(insert(Container.__table__), rows)  # type: ignore[arg-type]
        conn.execute(
            insert(Share),
            [
                {"vmid": 100 + n, "user_id": 1 + (n + 1) % users, "role": "use"}
                for n in range(containers)
            ],
        )
        conn.execute(
            insert(AuditEntry),
            [
                {
                    "actor": f"u{1 + n % users}",
                    "action": "create",
                    "vmid": 100 + n % containers,
                    "detail": "x" * 40,
                }
                for n in range(audit)
            ],
        )
    db.dispose()
    return users * 3 + containers * 2 + audit


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--users", type=int, default=1000)
    parser.add_argument("--containers", type=int, default=10_000)
    parser.add_argument("--audit", type=int, default=100_000)
    args = parser.parse_args()
    data = Path(tempfile.mkdtemp(prefix="zlh-db-copy-"))
    rows = fill(f"sqlite:///{data / 'zlh.db'}", args.users, args.containers, args.audit)
    size_mb = (data / "zlh.db").stat().st_size / 2**20
    with pg_cluster.cluster() as server:
        target = pg_cluster.fresh_database(server)
        started = time.monotonic()
        result = subprocess.run(
            [*ZLH, "db", "copy", "--data-dir", str(data), "--to", target],
            capture_output=True,
            text=True,
            check=False,
        )
        took = time.monotonic() - started
    if result.returncode != 0:
        raise SystemExit(f"zlh db copy failed: {result.stderr.strip()}")
    print(result.stdout.strip())
    print(
        f"{rows} rows ({size_mb:.1f} MB SQLite) copied in {took:.1f} s wall (the command, "
        f"start to exit): {rows / took:,.0f} rows/s"
    )


if __name__ == "__main__":
    main()
