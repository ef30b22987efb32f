"""The subordinate id range, the refusal of hosts without user namespaces, and the shift."""

from __future__ import annotations

import logging
import os
import stat
import struct
from pathlib import Path

import pytest

from zlh.backends import BackendUnavailable
from zlh.backends.lxc import idmap as lxc_idmap
from zlh.backends.lxc.idmap import IdMap, SubIdFile, container_idmap, shift_tree

MAP = IdMap(100_000, 200_000)


def test_the_config_lines_round_trip_and_a_config_without_them_is_privileged() -> None:
    text = "lxc.arch = linux64\n" + "\n".join(MAP.config_lines()) + "\n"
    assert "lxc.include = /usr/share/lxc/config/userns.conf" in text
    assert IdMap.from_config(text) == MAP
    assert IdMap.from_config("lxc.arch = linux64\n") is None


def test_roots_own_range_is_used_and_a_new_one_avoids_every_other_range(tmp_path: Path) -> None:
    subuid = tmp_path / "subuid"
    subuid.write_text("alice:100000:65536\nbob:165536:65536\nroot:500000:70000\n")
    assert SubIdFile(subuid, "--add-subuids").register("root", 65_536) == 500_000
    assert SubIdFile(subuid, "").owned("carol", 65_536) is None
    # The lowest 65536-aligned range from 100000 that overlaps nobody's.
    assert SubIdFile(subuid, "").free_start(65_536) == 231_072


def test_a_range_is_registered_with_usermod_when_root_has_none(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    subuid = tmp_path / "subuid"
    subuid.write_text("alice:100000:65536\n")
    calls: list[list[str]] = []
    usermod = tmp_path / "usermod"
    usermod.write_text(
        f'#!/bin/sh\necho "$@" >> {tmp_path}/calls\necho "root:165536:65536" >> {subuid}\n'
    )
    usermod.chmod(0o755)
    monkeypatch.setenv("PATH", f"{tmp_path}:{os.environ['PATH']}")
    assert SubIdFile(subuid, "--add-subuids").register("root", 65_536) == 165_536
    calls = [line.split() for line in (tmp_path / "calls").read_text().splitlines()]
    assert calls == [["--add-subuids", "165536-231071", "root"]]
    # Registered once: the next start finds it.
    assert SubIdFile(subuid, "--add-subuids").register("root", 65_536) == 165_536
    assert len((tmp_path / "calls").read_text().splitlines()) == 1


def test_a_host_without_user_namespaces_is_refused_with_the_reason_and_the_opt_in(
    monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    reason = "user namespaces are disabled (user.max_user_namespaces = 0): sysctl -w …"
    monkeypatch.setattr(lxc_idmap, "userns_problem", lambda: reason)
    with pytest.raises(BackendUnavailable, match="runs unprivileged containers and this host"):
        container_idmap(allow_privileged=False)
    with pytest.raises(BackendUnavailable, match="--allow-privileged"):
        container_idmap(allow_privileged=False)
    with caplog.at_level(logging.WARNING, logger="zlh.backends.lxc.idmap"):
        assert container_idmap(allow_privileged=True) is None
    assert "PRIVILEGED" in caplog.text and reason in caplog.text


def test_the_opt_in_never_makes_a_capable_host_privileged(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(lxc_idmap, "userns_problem", lambda: None)
    monkeypatch.setattr(lxc_idmap, "platform_idmap", lambda: MAP)
    assert container_idmap(allow_privileged=True) == MAP


def test_this_host_can_create_user_namespaces() -> None:
    assert lxc_idmap.userns_problem() is None  # what the real-LXC tests rely on


@pytest.mark.root
def test_the_shift_moves_every_owner_keeps_setuid_and_capabilities_and_is_rerunnable(
    tmp_path: Path,
) -> None:
    if os.geteuid() != 0:
        pytest.skip("lchown to other users needs root")
    root = tmp_path / "rootfs"
    (root / "usr/bin").mkdir(parents=True)
    sudo = root / "usr/bin/sudo"
    sudo.write_text("#!/bin/sh\n")
    sudo.chmod(0o4755)
    ping = root / "usr/bin/ping"
    ping.write_text("#!/bin/sh\n")
    cap_net_raw = 1 << 13
    v2 = struct.pack("<IIIII", 0x02000001, cap_net_raw, 0, 0, 0)
    os.setxattr(ping, "security.capability", v2)
    home = root / "home/dev"
    home.mkdir(parents=True)
    os.chown(home, 1000, 1000)
    (root / "usr/bin/link").symlink_to("sudo")
    os.link(sudo, root / "usr/bin/sudoedit")

    changed = shift_tree(root, MAP)

    assert changed == 8  # rootfs, usr, bin, sudo (and its hard link once), ping, home, dev, link
    assert (root.stat().st_uid, root.stat().st_gid) == (100_000, 200_000)
    assert (home.stat().st_uid, home.stat().st_gid) == (101_000, 201_000)
    link = (root / "usr/bin/link").lstat()
    assert (link.st_uid, link.st_gid) == (100_000, 200_000)
    assert stat.S_IMODE(sudo.stat().st_mode) == 0o4755  # lchown cleared it; put back
    magic, permitted, _, _, _, rootid = struct.unpack(
        "<IIIIII", os.getxattr(ping, "security.capability")
    )
    assert (magic >> 24, magic & 1, permitted, rootid) == (3, 1, cap_net_raw, 100_000)
    assert shift_tree(root, MAP) == 0  # an interrupted shift can simply run again
