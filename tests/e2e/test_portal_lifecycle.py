"""Stop and start in Chromium: the container page's Stop button and what it says afterwards, the
IDE link of a stopped container, which starts it and goes on into the IDE by itself, and idle
auto-stop of an IDE left untouched while typing in another one keeps that one running."""

from __future__ import annotations

import re
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
from e2e_kit import (
    ALICE,
    BOB,
    Platform,
    Session,
    api_login,
    capture,
    open_ide_terminal,
    running_platform,
    sign_in,
    wait_for_container,
)
from playwright.sync_api import Page, expect

from support import free_port

pytestmark = [pytest.mark.e2e, pytest.mark.slow]

WORKBENCH_TIMEOUT_MS = 120_000


@pytest.fixture
def bobs_container(platform: Platform) -> Iterator[int]:
    """A ready node container of bob's with code-server, deleted afterwards."""
    with httpx.Client(base_url=platform.base_url, timeout=30) as client:
        bob = api_login(client, BOB)
        body = {"runtime": "node", "version": "22", "addons": ["code-server"]}
        created = client.post("/api/dev", json=body, headers=bob)
        assert created.status_code == 202, created.text
        vmid = int(created.json()["vmid"])
        try:
            wait_for_container(client, bob, vmid, lambda c: c["state"] == "ready")
            yield vmid
        finally:
            client.delete(f"/api/dev/{vmid}", headers=bob)


def test_stop_on_the_container_page_then_the_ide_link_starts_it_and_opens_the_ide(
    session: Session, platform: Platform, bobs_container: int
) -> None:
    vmid = bobs_container
    page = session.page
    page.goto(f"{platform.base_url}/login")
    sign_in(page, platform.base_url, BOB)
    page.goto(f"{platform.base_url}/c/{vmid}")
    expect(page.locator("#start-container")).to_be_hidden()
    page.locator("#stop-container").click()
    expect(page.locator("h1 .badge")).to_have_text("stopped", timeout=30_000)
    expect(page.locator("#state-reason")).to_contain_text("Stopped by user bob")
    expect(page.locator("#start-container")).to_be_visible()
    expect(page.locator("#stop-container")).to_be_hidden()
    capture(page, "container-stopped")
    agent = platform.data_dir / "process" / str(vmid) / "state.json"
    assert agent.exists()  # its disk stays

    # The IDE link of the stopped container, as a bookmark would open it.
    tab = session.context.new_page()
    tab.set_viewport_size({"width": 1280, "height": 800})
    tab.goto(platform.ide_url(vmid))
    tab.wait_for_url(re.compile(rf"/c/{vmid}/ide$"))
    expect(tab.locator("#starting h1")).to_have_text("Starting your container…")
    capture(tab, "ide-starting")
    tab.locator(".monaco-workbench").wait_for(timeout=WORKBENCH_TIMEOUT_MS)
    assert tab.url.startswith(platform.ide_url(vmid))
    tab.close()
    with httpx.Client(base_url=platform.base_url, timeout=30) as client:
        bob = api_login(client, BOB)
        started = client.get(f"/api/dev/{vmid}", headers=bob).json()
    assert started["state"] == "ready"
    assert started["stateReason"] == "started by user bob"


IDLE_S = 30  # idle_stop_after on the platform below; use is reported at most every 15 s


@pytest.fixture(scope="module")
def idle_platform(e2e_store: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Platform]:
    """A platform whose containers stop after IDLE_S idle, checked every second."""
    data_dir = tmp_path_factory.mktemp("e2e-idle")
    settings = {"ZLH_IDLE_STOP_AFTER": str(IDLE_S), "ZLH_IDLE_CHECK_INTERVAL_S": "1"}
    ide_origin = f"http://127.0.0.1:{free_port()}"
    with running_platform(
        e2e_store, data_dir, ide_origin, free_port(), env_extra=settings
    ) as platform:
        yield platform


def _ready_ide_container(client: httpx.Client, auth: dict[str, str]) -> int:
    body = {"runtime": "node", "version": "22", "addons": ["code-server"]}
    created = client.post("/api/dev", json=body, headers=auth)
    assert created.status_code == 202, created.text
    vmid = int(created.json()["vmid"])
    wait_for_container(client, auth, vmid, lambda c: c["state"] == "ready")
    return vmid


def _open_ide(session: Session, platform: Platform, vmid: int) -> Page:
    tab = session.context.new_page()
    tab.set_viewport_size({"width": 1280, "height": 800})
    tab.goto(f"{platform.base_url}/c/{vmid}/ide")  # the portal's IDE link
    tab.locator(".monaco-workbench").wait_for(timeout=WORKBENCH_TIMEOUT_MS)
    return tab


def test_an_untouched_ide_stops_as_idle_and_says_why_while_typing_keeps_another_running(
    session: Session, idle_platform: Platform
) -> None:
    platform = idle_platform
    page = session.page
    page.goto(f"{platform.base_url}/login")
    sign_in(page, platform.base_url, ALICE)
    with httpx.Client(base_url=platform.base_url, timeout=30) as client:
        alice = api_login(client, ALICE)
        untouched, typed = (_ready_ide_container(client, alice) for _ in range(2))
        left_alone = _open_ide(session, platform, untouched)
        working = _open_ide(session, platform, typed)
        terminal = open_ide_terminal(working)
        page.goto(f"{platform.base_url}/c/{typed}")
        expect(page.locator("#idle")).to_contain_text("stops in")
        # Type in one IDE's terminal every few seconds until the other has been stopped.
        deadline = time.monotonic() + 4 * IDLE_S
        while (state := client.get(f"/api/dev/{untouched}", headers=alice).json())[
            "state"
        ] != "stopped":
            assert time.monotonic() < deadline, state
            terminal.click()
            working.keyboard.type("echo still here\n")
            working.wait_for_timeout(3000)  # a person's pace, not a synchronisation
        assert state["stateReason"].startswith(
            f"stopped after {IDLE_S} s idle (last activity: IDE at "
        )
        # Typing goes on for longer than the limit: the other one runs on.
        until = time.monotonic() + IDLE_S + 5
        while time.monotonic() < until:
            terminal.click()
            working.keyboard.type("echo still here\n")
            working.wait_for_timeout(3000)
        kept = client.get(f"/api/dev/{typed}", headers=alice).json()
        assert kept["state"] == "ready"
        assert kept["lastActivity"]["kind"] == "terminal"
        page.goto(f"{platform.base_url}/c/{untouched}")
        expect(page.locator("#state-reason")).to_contain_text(f"Stopped after {IDLE_S} s idle")
        capture(page, "container-stopped-idle")
        left_alone.close()
        working.close()
