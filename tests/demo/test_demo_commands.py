"""``zlh up`` and ``zlh demo`` on a host that cannot run LXC, and the demo's admin account."""

from __future__ import annotations

import os
import stat
import sys
from pathlib import Path

import pytest

from support import free_port_pair, zlh
from zlh.api import accounts
from zlh.api.commands import open_database
from zlh.api.settings import ApiSettings, load_settings
from zlh.cli import main
from zlh.demo.admin import PASSWORD_ENV, PASSWORD_FILE, ensure_admin
from zlh.errors import ZlhError

CHEAP = {"ZLH_ARGON2_TIME_COST": "1", "ZLH_ARGON2_MEMORY_KIB": "64", "ZLH_ARGON2_PARALLELISM": "1"}


def _env_without_lxc(tmp_path: Path) -> dict[str, str]:
    """The environment with a PATH holding only python, so no lxc-* tool is found."""
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    (bin_dir / "python3").symlink_to(sys.executable)
    return {**os.environ, "PATH": str(bin_dir)}


@pytest.mark.parametrize("command", ["up", "demo"])
def test_without_lxc_the_default_backend_names_the_packages_and_nothing_runs(
    command: str, tmp_path: Path
) -> None:
    data_dir = tmp_path / "data"
    port = free_port_pair()
    result = zlh(
        command,
        *("--data-dir", str(data_dir), "--listen", f"127.0.0.1:{port}"),
        check=False,
        env=_env_without_lxc(tmp_path),
        timeout=60,
    )
    assert result.returncode == 1, result.stdout + result.stderr
    assert "apt-get install lxc debootstrap nftables" in result.stderr
    # No silent fallback: no database, no artifacts, no process backend state.
    for left in ("zlh.db", "artifacts", "process", PASSWORD_FILE):
        assert not (data_dir / left).exists(), left


@pytest.mark.parametrize("command", ["up", "demo"])
def test_without_root_the_lxc_backend_points_at_the_explicit_process_backend(
    command: str,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    monkeypatch.setattr(os, "geteuid", lambda: 1000)
    code = main([command, "--data-dir", str(tmp_path), "--listen", f"127.0.0.1:{free_port_pair()}"])
    err = capsys.readouterr().err
    assert code == 1
    assert "needs root" in err and "--backend process" in err
    assert not (tmp_path / "zlh.db").exists()


@pytest.fixture
def settings(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> ApiSettings:
    for name, value in CHEAP.items():
        monkeypatch.setenv(name, value)
    monkeypatch.delenv(PASSWORD_ENV, raising=False)
    return load_settings(None, data_dir=tmp_path)


def _signs_in(settings: ApiSettings, password: str) -> bool:
    db = open_database(settings)
    try:
        return accounts.authenticate(db, "admin", password) is not None
    finally:
        db.dispose()


def test_admin_password_is_generated_once_kept_private_and_reused(settings: ApiSettings) -> None:
    first = ensure_admin(settings)
    assert first.created and len(first.password) >= 16
    assert stat.S_IMODE(first.password_file.stat().st_mode) == 0o600
    assert first.password_file.read_text().strip() == first.password
    again = ensure_admin(settings)
    assert not again.created and again.password == first.password
    assert _signs_in(settings, first.password)


def test_admin_password_from_the_environment_replaces_the_kept_one(
    settings: ApiSettings, monkeypatch: pytest.MonkeyPatch
) -> None:
    generated = ensure_admin(settings)
    monkeypatch.setenv(PASSWORD_ENV, "an operator's own password")
    chosen = ensure_admin(settings)
    assert chosen.password == "an operator's own password"
    assert chosen.password_file.read_text().strip() == chosen.password
    assert _signs_in(settings, chosen.password) and not _signs_in(settings, generated.password)


def test_admin_password_changed_by_hand_is_not_overwritten(settings: ApiSettings) -> None:
    kept = ensure_admin(settings)
    db = open_database(settings)
    try:
        accounts.set_password(db, "admin", "changed with zlh user passwd")
    finally:
        db.dispose()
    with pytest.raises(ZlhError, match=f"{PASSWORD_ENV}=") as raised:
        ensure_admin(settings)
    assert str(kept.password_file) in raised.value.message
    assert kept.password_file.read_text().strip() == kept.password
    assert _signs_in(settings, "changed with zlh user passwd")


def test_demo_with_a_bad_setting_names_it_before_building_anything(tmp_path: Path) -> None:
    (tmp_path / "api.toml").write_text("poll_interval_s = -1\n")
    args = ("demo", "--backend", "process", "--data-dir", str(tmp_path))
    result = zlh(*args, "--listen", f"127.0.0.1:{free_port_pair()}", check=False, timeout=60)
    assert result.returncode == 2
    assert "poll_interval_s" in result.stderr
    assert sorted(p.name for p in tmp_path.iterdir()) == ["api.toml"]
