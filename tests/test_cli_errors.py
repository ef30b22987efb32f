"""No traceback reaches an operator: every command, given a data dir that is a file, a missing
store or data dir, a port in use, no terminal to ask a password on, or a file that is not
there, answers one line saying what is wrong, with exit 2 (usage) or 1 (runtime)."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from support import free_port_pair
from test_cli import _all_command_paths

CHEAP = {"ZLH_ARGON2_TIME_COST": "1", "ZLH_ARGON2_MEMORY_KIB": "64", "ZLH_ARGON2_PARALLELISM": "1"}


@pytest.fixture(scope="module")
def busy_port() -> Iterator[int]:
    with socket.socket() as held:
        held.bind(("127.0.0.1", 0))
        held.listen()
        yield held.getsockname()[1]


def cases(tmp: Path, port: int) -> dict[str, list[str]]:
    """A bad situation for every command (some get several); ``tmp/file`` is a plain file."""
    file, missing = str(tmp / "file"), str(tmp / "missing" / "deeper")
    busy = f"127.0.0.1:{port}"
    process = ["--backend", "process"]
    return {
        "artifacts add: no such tarball": [
            "artifacts",
            "add",
            "runtime",
            "node",
            "22",
            "--file",
            str(tmp / "none.tar.gz"),
            "--store",
            str(tmp / "store"),
        ],
        "artifacts add: store is a file": [
            "artifacts",
            "add",
            "runtime",
            "node",
            "22",
            "--file",
            file,
            "--store",
            file,
        ],
        "artifacts list: store is a file": ["artifacts", "list", "--store", file],
        "artifacts verify: store is a file": ["artifacts", "verify", "--store", file],
        "artifacts remove: nothing to remove": [
            "artifacts",
            "remove",
            "runtime",
            "node",
            "22",
            "--store",
            missing,
        ],
        "artifacts serve: no store": ["artifacts", "serve", "--store", missing],
        "artifacts serve: port in use": [
            "artifacts",
            "serve",
            "--store",
            str(tmp),
            "--listen",
            busy,
        ],
        "artifacts build: one --version for two artifacts": [
            "artifacts",
            "build",
            "node",
            "python",
            "--version",
            "22",
            "--store",
            str(tmp / "store"),
        ],
        "artifacts build: data dir is a file": ["artifacts", "build", "node", "--data-dir", file],
        "agent: no token file": ["agent", "--token-file", str(tmp / "none")],
        "agent: port in use": ["agent", "--listen", busy, "--token-file", file],
        "up: data dir is a file": ["up", *process, "--data-dir", file],
        "up: port in use": ["up", *process, "--data-dir", str(tmp / "up"), "--listen", busy],
        "up: store is a file": [
            "up",
            *process,
            "--data-dir",
            str(tmp / "up2"),
            "--store",
            file,
            "--listen",
            "127.0.0.1:8780",  # not reached: the store is refused before any port is checked
        ],
        "api: port in use": [
            "api",
            *process,
            "--data-dir",
            str(tmp / "api"),
            "--listen",
            busy,
            "--artifact-server",
            "http://127.0.0.1:9",
        ],
        "api: no artifact server": ["api", *process, "--data-dir", str(tmp / "api2")],
        "up: replica on SQLite": ["up", *process, "--data-dir", str(tmp / "up3"), "--replica", "a"],
        "up: bad replica name": ["up", *process, "--data-dir", str(tmp / "u4"), "--replica", "a b"],
        "up: replica lease not longer than its heartbeat": [
            *("up", *process, "--data-dir", str(tmp / "u5"), "--config", str(tmp / "lease.toml")),
        ],
        "up: no front workers": ["up", *process, "--data-dir", str(tmp / "u7"), "--workers", "0"],
        "api: too many workers": ["api", "--data-dir", str(tmp / "u6"), "--workers", "65"],
        "user add: no terminal": ["user", "add", "bob", "--data-dir", str(tmp / "users")],
        "user add: data dir is a file": ["user", "add", "bob", "--data-dir", file],
        "user list: data dir is a file": ["user", "list", "--data-dir", file],
        "user passwd: no terminal": ["user", "passwd", "bob", "--data-dir", str(tmp / "users")],
        "user admin: no such user": ["user", "admin", "zed", "--data-dir", str(tmp / "users")],
        "user disable: no such user": ["user", "disable", "zed", "--data-dir", missing],
        "user idle: not seconds": ["user", "idle", "bob", "soon", "--data-dir", missing],
        "template build: data dir is a file": ["template", "build", "--data-dir", file],
        "template export: no template": [
            "template",
            "export",
            "--data-dir",
            missing,
            "--output",
            str(tmp / "t.tar.zst"),
        ],
        "tailnet policy: data dir is a file": ["tailnet", "policy", "--data-dir", file],
        "tailnet policy: no such users file": [
            "tailnet",
            "policy",
            "--input",
            str(tmp / "none.json"),
        ],
        "doctor: data dir is a file": ["doctor", *process, "--data-dir", file],
        "demo: data dir is a file": ["demo", *process, "--data-dir", file],
        "demo: port in use": ["demo", *process, "--data-dir", str(tmp / "demo"), "--listen", busy],
        "dev list: no platform there": [
            "dev",
            "list",
            "--url",
            "http://127.0.0.1:9",
            "--password-file",
            file,
        ],
        "dev stop: no password": ["dev", "stop", "101", "--user", "alice"],
        "dev start: no password file": ["dev", "start", "101", "--password-file", missing],
        "dev restart: not a vmid": ["dev", "restart", "one-oh-one"],
        "token create: unknown scope": ["token", "create", "ci", "--scope", "everything"],
        "token create: no expiry": [
            "token",
            "create",
            "ci",
            "--scope",
            "files",
            "--expires-in-days",
            "0",
        ],
        "token list: no platform there": [
            "token",
            "list",
            "--url",
            "http://127.0.0.1:9",
            "--password-file",
            file,
        ],
        "token revoke: not an id": ["token", "revoke", "first"],
        "dev rebuild: no platform there": [
            "dev",
            "rebuild",
            "101",
            "--url",
            "http://127.0.0.1:9",
            "--password-file",
            file,
        ],
        "dev share: not a role": ["dev", "share", "101", "bob", "--role", "admin"],
        "layers list: no data dir": ["layers", "list", "--data-dir", missing],
        "layers verify: a backend without layers": [
            "layers",
            "verify",
            *process,
            "--data-dir",
            str(tmp),
        ],
        "layers gc: data dir is a file": ["layers", "gc", "--data-dir", file],
        "db copy: no data dir": ["db", "copy", "--data-dir", missing, "--to", "postgresql://a@b/c"],
        "db copy: not a database URL": ["db", "copy", "--data-dir", str(tmp), "--to", "nonsense"],
        "db copy: not PostgreSQL": ["db", "copy", "--data-dir", str(tmp), "--to", "sqlite:///x.db"],
        "db copy: no database in the data dir": [
            "db",
            "copy",
            "--data-dir",
            str(tmp),
            "--to",
            "postgresql+psycopg://nobody@127.0.0.1:9/zlh",
        ],
        "db copy: data dir is a file": ["db", "copy", "--data-dir", file, "--to", "postgresql://x"],
        "dev unshare: no platform there": [
            "dev",
            "unshare",
            "101",
            "bob",
            "--url",
            "http://127.0.0.1:9",
            "--password-file",
            file,
        ],
    }


def run(tmp: Path, argv: list[str]) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, **CHEAP, "ZLH_DATA_DIR": str(tmp / "default-data")}
    env.pop("ZLH_DEBUG", None)
    return subprocess.run(
        [sys.executable, "-m", "zlh.cli", *argv],
        capture_output=True,
        text=True,
        check=False,
        stdin=subprocess.DEVNULL,  # no terminal, as under cron, systemd or ssh -T
        start_new_session=True,
        env=env,
        timeout=120,
        cwd=tmp,
    )


def test_every_command_has_a_bad_situation_below() -> None:
    covered = {name.split(":")[0] for name in cases(Path("/x"), 1)}
    paths = _all_command_paths()
    leaves = {
        " ".join(p) for p in paths if not any(q[: len(p)] == p and len(q) > len(p) for q in paths)
    }
    assert leaves <= covered, f"commands without a bad-situation case: {leaves - covered}"


@pytest.mark.parametrize("case", list(cases(Path("/x"), 1)))
def test_a_bad_situation_is_one_line_and_exit_1_or_2(
    case: str, tmp_path: Path, busy_port: int
) -> None:
    (tmp_path / "file").write_text("not a directory\n")
    (tmp_path / "lease.toml").write_text("replica_heartbeat_s = 2\nreplica_lease_s = 1\n")
    result = run(tmp_path, cases(tmp_path, busy_port)[case])
    errors = [line for line in result.stderr.splitlines() if line.startswith("zlh")]
    assert "Traceback" not in result.stdout + result.stderr, result.stderr
    assert result.returncode in (1, 2), (result.returncode, result.stdout, result.stderr)
    assert len(errors) == 1, result.stderr


def test_the_tailnet_policy_of_a_data_dir_never_set_up_is_an_empty_policy(tmp_path: Path) -> None:
    result = run(tmp_path, ["tailnet", "policy", "--data-dir", str(tmp_path / "fresh")])
    assert result.returncode == 0 and "Traceback" not in result.stderr, result.stderr
    assert '"acls"' in result.stdout


@pytest.mark.parametrize(
    ("address", "named"), [("busy", "metrics_listen"), ("nowhere", "metrics_listen")]
)
def test_a_busy_or_malformed_metrics_listen_is_one_line(
    address: str, named: str, tmp_path: Path, busy_port: int
) -> None:
    value = f"127.0.0.1:{busy_port}" if address == "busy" else address
    config = tmp_path / "api.toml"
    config.write_text(f'metrics_listen = "{value}"\n')
    argv = ["up", "--backend", "process", "--data-dir", str(tmp_path / "up"), "--config"]
    result = run(tmp_path, [*argv, str(config), "--listen", f"127.0.0.1:{free_port_pair()}"])
    errors = [line for line in result.stderr.splitlines() if line.startswith("zlh")]
    assert "Traceback" not in result.stderr, result.stderr
    assert result.returncode in (1, 2)
    assert len(errors) == 1 and named in errors[0], result.stderr


def test_an_unknown_front_scheduling_is_one_line_naming_it(tmp_path: Path) -> None:
    config = tmp_path / "api.toml"
    config.write_text('front_scheduling = "realtime"\n')
    argv = ["up", "--backend", "process", "--data-dir", str(tmp_path / "up"), "--config"]
    result = run(tmp_path, [*argv, str(config), "--listen", f"127.0.0.1:{free_port_pair()}"])
    errors = [line for line in result.stderr.splitlines() if line.startswith("zlh")]
    assert "Traceback" not in result.stderr, result.stderr
    assert result.returncode in (1, 2)
    assert len(errors) == 1 and "front_scheduling" in errors[0], result.stderr
