"""The one decision point: only root with --root / creates a system user."""

from __future__ import annotations

import asyncio
import os
import subprocess
from pathlib import Path

from zlh.agent.devuser import creates_system_user, ensure_dev_environment
from zlh.agent.paths import Layout
from zlh.schemas import DevUser


def test_only_root_in_a_real_container_creates_users() -> None:
    assert creates_system_user(Layout(Path("/")), 0) is True
    assert creates_system_user(Layout(Path("/")), 1000) is False
    assert creates_system_user(Layout(Path("/srv/c1")), 0) is False


def test_under_a_root_dir_the_current_user_stands_in_for_dev(tmp_path: Path) -> None:
    env = asyncio.run(ensure_dev_environment(Layout(tmp_path), DevUser()))
    assert env.name == "dev"
    assert env.identity.uid == os.geteuid()
    assert env.workspace == tmp_path / "home/dev/workspace" and env.workspace.is_dir()
    assert not env.is_system_user


def test_under_a_root_dir_a_login_shell_finds_the_runtimes_despite_the_hosts_profile(
    tmp_path: Path,
) -> None:
    layout = Layout(tmp_path)
    env = asyncio.run(ensure_dev_environment(layout, DevUser()))
    bin_dir = tmp_path / "opt/zlh/runtimes/node/current/bin"
    bin_dir.mkdir(parents=True)
    tool = bin_dir / "zlh-probe-tool"
    tool.write_text("#!/bin/sh\necho from-the-runtime\n")
    tool.chmod(0o755)
    layout.profile_script.parent.mkdir(parents=True)
    layout.profile_script.write_text(f'PATH={bin_dir}:"$PATH"\nexport PATH\n')
    clean = {"HOME": str(env.home), "PATH": "/usr/bin:/bin", "TERM": "dumb"}
    out = subprocess.run(
        ["bash", "-l", "-c", "zlh-probe-tool"], env=clean, capture_output=True, text=True
    )
    assert out.stdout == "from-the-runtime\n", out.stderr


def test_the_dev_profile_keeps_what_it_held_and_is_written_once(tmp_path: Path) -> None:
    profile = tmp_path / "home/dev/.profile"
    profile.parent.mkdir(parents=True)
    profile.write_text("export EDITOR=vim")
    for _ in range(2):
        asyncio.run(ensure_dev_environment(Layout(tmp_path), DevUser()))
    text = profile.read_text()
    assert text.startswith("export EDITOR=vim\n")
    assert text.count(str(tmp_path / "etc/profile.d/zlh-runtimes.sh")) == 2  # test + source
    assert text.count("zlh-agent") == 1


def test_a_new_workspace_gets_the_welcome_readme_once_and_an_existing_one_none(
    tmp_path: Path,
) -> None:
    fresh = tmp_path / "fresh"
    asyncio.run(ensure_dev_environment(Layout(fresh), DevUser()))
    readme = fresh / "home/dev/workspace/README.md"
    assert readme.read_text().startswith("# Welcome to your ZeroLagHub dev container")
    readme.unlink()  # the user deleted it: a restart does not bring it back
    asyncio.run(ensure_dev_environment(Layout(fresh), DevUser()))
    assert not readme.exists()
    kept = tmp_path / "kept"
    (kept / "home/dev/workspace").mkdir(parents=True)  # the user's work from before
    asyncio.run(ensure_dev_environment(Layout(kept), DevUser()))
    assert list((kept / "home/dev/workspace").iterdir()) == []
