"""The IDE of a container taken from the warm pool: the admin's dashboard shows the pool, alice's
request takes its ready container, its workbench opens in Chromium on the IDE origin and its
terminal runs a command in the container's own ``dev`` home."""

from __future__ import annotations

import contextlib
import json
import os
import signal
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
from e2e_kit import (
    ADMIN,
    ALICE,
    Platform,
    api_login,
    open_ide,
    open_ide_terminal,
    open_session,
    run_in_ide_terminal,
    running_platform,
    sign_in,
    wait_for_container,
)
from playwright.sync_api import Browser

from api_kit import wait_for
from support import free_port

pytestmark = [pytest.mark.e2e, pytest.mark.slow]

BUILD_S = 300.0


def _stop_pool_agents(data_dir: Path) -> None:
    """The pool's agents outlive ``zlh up`` (process backend) and no user may delete them:
    end them by the pids the backend recorded."""
    base = data_dir / "process"
    for state_file in base.glob("*/state.json") if base.exists() else []:
        pid = json.loads(state_file.read_text()).get("pid")
        if isinstance(pid, int):
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGTERM)


@pytest.fixture
def pool_platform(e2e_store: Path, tmp_path: Path) -> Iterator[Platform]:
    ide_origin = f"http://127.0.0.1:{free_port()}"
    try:
        env = {"ZLH_WARM_POOL": '{"node": 1}'}
        with running_platform(e2e_store, tmp_path, ide_origin, free_port(), env_extra=env) as p:
            yield p
    finally:
        _stop_pool_agents(tmp_path)


def _ready_pool_vmid(client: httpx.Client, admin: dict[str, str]) -> int:
    def ready() -> int | None:
        pool = [c for c in client.get("/api/dev", headers=admin).json() if c["pool"]]
        return pool[0]["vmid"] if pool and pool[0]["state"] == "ready" else None

    vmid: int = wait_for(ready, timeout_s=BUILD_S, what="a ready pool container")
    return vmid


def test_an_ide_taken_from_the_warm_pool_opens_and_its_terminal_runs_in_devs_home(
    pool_platform: Platform, browser: Browser
) -> None:
    platform = pool_platform
    with httpx.Client(base_url=platform.base_url, timeout=30) as client:
        admin = api_login(client, ADMIN)
        pooled = _ready_pool_vmid(client, admin)

        boss = open_session(browser)
        sign_in(boss.page, platform.base_url, ADMIN)
        line = boss.page.locator("[data-pool]")
        line.wait_for()
        assert line.text_content() == "Warm pool: 1 ready of 1 wanted, 2048 MB of memory."
        row = boss.page.locator("tr", has=boss.page.locator(".badge.pool"))
        assert row.locator("a").count() == 0  # nobody's: no page, no IDE to open
        boss.context.close()
        boss.console.assert_clean()

        alice_auth = api_login(client, ALICE)
        request = {"runtime": "node", "addons": ["code-server"]}
        created = client.post("/api/dev", json=request, headers=alice_auth)
        assert created.status_code == 202, created.text
        vmid = created.json()["vmid"]
        assert vmid == pooled
        wait_for_container(client, alice_auth, vmid, lambda c: c["state"] == "ready", timeout_s=120)

    alice = open_session(browser)
    sign_in(alice.page, platform.base_url, ALICE)
    tab = open_ide(alice, platform, vmid)
    terminal = open_ide_terminal(tab)
    out = platform.workspace(vmid) / "from-the-pool.txt"
    run_in_ide_terminal(
        tab,
        terminal,
        'echo "$HOME" > ~/workspace/from-the-pool.txt',
        lambda: out.exists() and out.read_text().endswith("\n"),
    )
    assert out.read_text().strip() == str(platform.workspace(vmid).parent)
    alice.console.detach(tab)  # what the workbench logs while it is torn down is not ours
    alice.context.close()
    alice.console.assert_clean()
