"""write_atomically: all or nothing, exact permissions from the first byte, no temp file left."""

from __future__ import annotations

import os
import stat
from pathlib import Path

import pytest

from zlh.atomic import write_atomically


def test_the_file_holds_the_new_text_with_exactly_the_mode_asked_for(tmp_path: Path) -> None:
    path = tmp_path / "secret"
    path.write_text("old")
    old_umask = os.umask(0o077)  # a umask would have narrowed 0o644 to 0o600
    try:
        write_atomically(path, "new", mode=0o644)
    finally:
        os.umask(old_umask)
    assert path.read_text() == "new"
    assert stat.S_IMODE(path.stat().st_mode) == 0o644
    assert [p.name for p in tmp_path.iterdir()] == ["secret"]


def test_a_failed_write_keeps_the_old_file_and_leaves_no_temp(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    path = tmp_path / "state.json"
    path.write_text('{"old": true}')

    def refuse(src: object, dst: object) -> None:
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(os, "replace", refuse)
    with pytest.raises(OSError, match="No space left"):
        write_atomically(path, '{"new": true}')
    assert path.read_text() == '{"old": true}'
    assert [p.name for p in tmp_path.iterdir()] == ["state.json"]


def test_a_link_planted_at_the_temp_name_is_not_followed(tmp_path: Path) -> None:
    path = tmp_path / "authkey"
    victim = tmp_path / "victim"
    victim.write_text("untouched")
    (tmp_path / f".authkey.{os.getpid()}.partial").symlink_to(victim)
    write_atomically(path, "tskey-123", mode=0o600)
    assert victim.read_text() == "untouched"
    assert path.read_text() == "tskey-123" and not path.is_symlink()
    assert stat.S_IMODE(path.stat().st_mode) == 0o600


def test_a_durable_write_syncs_the_file_and_its_directory_before_returning(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    synced: list[str] = []
    real_fsync = os.fsync

    def fsync(fd: int) -> None:
        synced.append(os.readlink(f"/proc/self/fd/{fd}"))
        real_fsync(fd)

    monkeypatch.setattr(os, "fsync", fsync)
    path = tmp_path / "catalog.json"
    write_atomically(path, b"{}", durable=True)
    assert path.read_bytes() == b"{}"
    assert synced[-1] == str(tmp_path)  # the rename, after the data
    assert synced[0].startswith(str(tmp_path / ".catalog.json."))
    write_atomically(path, "plain")
    assert len(synced) == 2  # not durable: no fsync
