"""The data dir is tightened in place: others lose every bit, the group its read and write
bits, a group traverse bit stays; ``lxc/`` and ``layers/`` are left alone and big trees only
lose their top."""

from __future__ import annotations

import os
import stat
import subprocess
import sys
from pathlib import Path

import pytest

from zlh.datadir import exposed, tighten

OWN_FILES = (
    "zlh.db",
    "zlh.db-wal",
    "zlh.db-shm",
    "jwt.key",
    "agent.key",
    "zlh-up.log",
    "api.toml",
    "admin-password",
    "run/leftover",
)


def mode(path: Path) -> int:
    return stat.S_IMODE(path.lstat().st_mode)


def old_install(data_dir: Path) -> Path:
    """A data dir as umask 022 left it: dirs 0755, files 0644."""
    data_dir.mkdir(mode=0o755)
    data_dir.chmod(0o755)
    for name in OWN_FILES:
        path = data_dir / name
        path.parent.mkdir(mode=0o755, exist_ok=True)
        path.write_text("secret\n")
        path.chmod(0o644)
    return data_dir


def test_files_lose_group_and_other_bits_and_dirs_keep_only_a_group_traverse(
    tmp_path: Path,
) -> None:
    data_dir = old_install(tmp_path / "data")
    changed = tighten(data_dir)
    for name in OWN_FILES:
        assert mode(data_dir / name) == 0o600, name
    assert mode(data_dir) == 0o710 and mode(data_dir / "run") == 0o710
    assert {c.path for c in changed} == {
        data_dir,
        data_dir / "run",
        *(data_dir / n for n in OWN_FILES),
    }
    assert exposed(data_dir) == []
    assert tighten(data_dir) == []  # a second start changes nothing


def test_a_private_data_dir_without_group_bits_stays_0700(tmp_path: Path) -> None:
    data_dir = tmp_path / "data"
    data_dir.mkdir(mode=0o700)
    (data_dir / "zlh.db").write_text("x")
    (data_dir / "zlh.db").chmod(0o640)
    tighten(data_dir)
    assert mode(data_dir) == 0o700 and mode(data_dir / "zlh.db") == 0o600


@pytest.mark.root
def test_the_group_traverse_grant_on_the_data_dir_is_kept_and_its_group_not_changed(
    tmp_path: Path,
) -> None:
    """The lxc backend grants the containers' mapped root group traverse (0710)."""
    data_dir = tmp_path / "data"
    data_dir.mkdir()
    os.chown(data_dir, -1, 165_536)
    data_dir.chmod(0o775)
    tighten(data_dir)
    assert mode(data_dir) == 0o710
    assert data_dir.stat().st_gid == 165_536


def test_lxc_and_layers_are_left_alone_and_big_trees_are_tightened_only_at_the_top(
    tmp_path: Path,
) -> None:
    data_dir = old_install(tmp_path / "data")
    names = ("lxc", "layers", "artifacts", "cache", "process")
    inner = {name: data_dir / name / "deep" / "file" for name in names}
    for path in inner.values():
        path.parent.mkdir(parents=True)
        path.parent.parent.chmod(0o755)
        path.write_text("x")
        path.chmod(0o644)
    tighten(data_dir)
    assert mode(data_dir / "lxc") == 0o755
    assert mode(data_dir / "layers") == 0o755  # containers read them; their modes are checked
    for name, path in inner.items():
        assert mode(path) == 0o644, name  # not walked
        assert mode(path.parent) == 0o755, name
    for name in ("artifacts", "cache", "process"):
        assert mode(data_dir / name) == 0o710, name


def test_symlinks_in_the_data_dir_are_not_followed(tmp_path: Path) -> None:
    data_dir = old_install(tmp_path / "data")
    outside = tmp_path / "elsewhere.txt"
    outside.write_text("not ours")
    outside.chmod(0o644)
    (data_dir / "link").symlink_to(outside)
    (data_dir / "dirlink").symlink_to(tmp_path)
    tighten(data_dir)
    assert mode(outside) == 0o644


def test_a_database_and_keys_outside_the_data_dir_are_tightened_too(tmp_path: Path) -> None:
    data_dir = old_install(tmp_path / "data")
    elsewhere = tmp_path / "db"
    elsewhere.mkdir()
    files = [elsewhere / "zlh.db", elsewhere / "zlh.db-wal", elsewhere / "jwt.key"]
    for path in files:
        path.write_text("x")
        path.chmod(0o644)
    changed = tighten(data_dir, [*files, elsewhere / "absent", data_dir / "zlh.db"])
    assert [mode(p) for p in files] == [0o600] * 3
    assert [c.path for c in changed].count(data_dir / "zlh.db") == 1


def test_prepare_creates_the_data_dir_0700_and_what_is_written_afterwards_is_0600(
    tmp_path: Path,
) -> None:
    data_dir = tmp_path / "new" / "data"
    script = (
        "import sys; from pathlib import Path; from zlh.datadir import prepare_data_dir\n"
        "d = Path(sys.argv[1]); prepare_data_dir(d)\n"
        "(d / 'zlh-up.log').write_text('x'); (d / 'run').mkdir()\n"
    )
    subprocess.run([sys.executable, "-c", script, str(data_dir)], check=True, umask=0o022)
    assert mode(data_dir) == 0o700
    assert mode(data_dir / "zlh-up.log") == 0o600
    assert mode(data_dir / "run") == 0o700


def test_a_zlh_up_that_cannot_start_its_backend_leaves_the_umask_and_the_data_dir_alone(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from zlh.cli import main

    monkeypatch.setattr(os, "geteuid", lambda: 1000)  # the lxc backend refuses to start
    data_dir = tmp_path / "data"
    data_dir.mkdir(mode=0o755)
    data_dir.chmod(0o755)
    before = os.umask(0o022)
    try:
        assert main(["up", "--data-dir", str(data_dir), "--listen", "127.0.0.1:1"]) == 1
        assert os.umask(0o022) == 0o022
    finally:
        os.umask(before)
    assert mode(data_dir) == 0o755
