"""Stop and start in Chromium: the container page's Stop button and what it says afterwards, and
the IDE link of a stopped container, which starts it and goes on into the IDE by itself."""

from __future__ import annotations

import re
from collections.abc import Iterator

import httpx
import pytest
from e2e_kit import BOB, Platform, Session, api_login, capture, sign_in, wait_for_container
from playwright.sync_api import expect

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
    expect(page.locator(".badge")).to_have_text("stopped", timeout=30_000)
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
