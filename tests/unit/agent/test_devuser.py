"""The one decision point: only root with --root / creates a system user."""

from __future__ import annotations

import asyncio
import os
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
