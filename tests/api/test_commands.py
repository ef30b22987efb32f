"""`zlh user …`, and the server commands' usage errors, through the real CLI."""

from __future__ import annotations

import os
import stat
from pathlib import Path

import pytest

from support import zlh
from zlh.api import accounts
from zlh.api.auth import TokenService
from zlh.api.commands import host_ports_for_containers
from zlh.api.db import Database
from zlh.api.errors import NotAuthenticated
from zlh.api.keys import load_or_create_key
from zlh.api.settings import ApiSettings, load_settings
from zlh.errors import ZlhError

CHEAP = {"ZLH_ARGON2_TIME_COST": "1", "ZLH_ARGON2_MEMORY_KIB": "64", "ZLH_ARGON2_PARALLELISM": "1"}


def run(data_dir: Path, *args: str, stdin: str = "", check: bool = True) -> tuple[int, str]:
    env = {**os.environ, **CHEAP, "ZLH_DATA_DIR": str(data_dir)}
    result = zlh(*args, input=stdin, env=env, check=check)
    return result.returncode, result.stdout + result.stderr


def test_user_commands_manage_accounts(tmp_path: Path) -> None:
    run(tmp_path, "user", "add", "alice", "--password-stdin", stdin="first-password\n")
    run(tmp_path, "user", "add", "root", "--admin", "--password-stdin", stdin="root-password\n")
    code, out = run(
        tmp_path, "user", "add", "alice", "--password-stdin", stdin="x" * 9, check=False
    )
    assert code == 1 and "already exists" in out
    code, out = run(
        tmp_path, "user", "add", "bob", "--password-stdin", stdin="short\n", check=False
    )
    assert code == 1 and "password must be" in out
    assert run(tmp_path, "user", "list")[1].splitlines() == ["1\talice\t-", "2\troot\tadmin"]
    run(tmp_path, "user", "passwd", "alice", "--password-stdin", stdin="second-password\n")
    db = Database(f"sqlite:///{tmp_path / 'zlh.db'}")
    try:
        assert accounts.authenticate(db, "alice", "second-password") is not None
        assert "ended 0 session" in run(tmp_path, "user", "disable", "alice")[1]
        assert accounts.authenticate(db, "alice", "second-password") is None
    finally:
        db.dispose()
    assert "alice\tdisabled" in run(tmp_path, "user", "list")[1]


def test_passwd_and_admin_end_the_users_sessions(tmp_path: Path) -> None:
    run(tmp_path, "user", "add", "alice", "--password-stdin", stdin="first-password\n")
    db = Database(f"sqlite:///{tmp_path / 'zlh.db'}")
    try:
        tokens = TokenService(db, b"k" * 32, ttl_s=60)
        alice = accounts.get_user(db, "alice")
        sessions = [tokens.issue(alice), tokens.issue(alice)]
        out = run(tmp_path, "user", "passwd", "alice", "--password-stdin", stdin="new-password\n")
        assert "ended 2 session(s)" in out[1]
        for issued in sessions:
            with pytest.raises(NotAuthenticated):
                tokens.verify(issued.token)
        session = tokens.issue(alice)
        assert "alice is an admin; ended 1 session(s)" in run(tmp_path, "user", "admin", "alice")[1]
        with pytest.raises(NotAuthenticated):
            tokens.verify(session.token)
        assert accounts.get_user(db, "alice").is_admin
        out = run(tmp_path, "user", "admin", "alice", "--remove")[1]
        assert "alice is no longer an admin; ended 0 session(s)" in out
        assert not accounts.get_user(db, "alice").is_admin
    finally:
        db.dispose()


def test_server_commands_refuse_bad_settings_with_one_line(tmp_path: Path) -> None:
    code, out = run(tmp_path, "api", "--backend", "process", check=False)
    assert code == 2 and "needs an artifact server" in out
    code, out = run(tmp_path, "up", "--listen", "nonsense", check=False)
    assert code == 2 and "listen" in out and "HOST:PORT" in out
    (tmp_path / "api.toml").write_text("poll_interval_s = -1\n")
    code, out = run(tmp_path, "up", check=False)
    assert code == 2 and "poll_interval_s" in out


def test_key_files_are_private_and_stable(tmp_path: Path) -> None:
    path = tmp_path / "keys" / "jwt.key"
    key = load_or_create_key(path)
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    assert load_or_create_key(path) == key and len(key) == 32
    path.chmod(0o644)
    with pytest.raises(ZlhError, match="readable by others"):
        load_or_create_key(path)


def test_containers_may_reach_the_artifact_and_headscale_ports_on_the_host(
    tmp_path: Path,
) -> None:
    plain = ApiSettings(data_dir=tmp_path, backend="lxc")
    assert host_ports_for_containers(plain, "http://10.0.3.1:8780/artifacts") == [8780]
    tailnet = ApiSettings(
        data_dir=tmp_path,
        backend="lxc",
        headscale={"url": "http://127.0.0.1:8080", "login_server_url": "https://hs.example"},
    )
    assert host_ports_for_containers(tailnet, "http://10.0.3.1/artifacts") == [80, 443]


def test_retired_settings_in_api_toml_are_ignored_with_a_warning_and_unknown_ones_refused(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    config = tmp_path / "api.toml"
    config.write_text('login_failures_per_user = 5\n\n[front]\nlogin_path = "/login"\n')
    with caplog.at_level("WARNING", logger="zlh.settings"):
        settings = load_settings(config, data_dir=tmp_path)
    assert settings.front.public_origin is None  # loaded
    warned = [r.getMessage() for r in caplog.records]
    assert any("login_failures_per_user is no longer used" in w for w in warned), warned
    assert any("[front] login_path is no longer used" in w for w in warned), warned
    config.write_text("login_failures_per_usr = 5\n")
    code, out = run(tmp_path, "up", check=False)
    assert code == 2 and "login_failures_per_usr" in out
