"""Open IDE: from the container page to the VS Code workbench through the platform's front."""

from __future__ import annotations

import httpx
import pytest
from e2e_kit import Platform, Provisioned, Session, capture

pytestmark = [pytest.mark.e2e, pytest.mark.slow]

# What code-server logs in a browser with no network beyond the platform: its extension
# gallery and update checks are disabled or unreachable, and it says so on the console.
IDE_OFFLINE_NOISE = [
    r"marketplace|gallery|extensions?[ .]",
    r"Failed to load resource: net::ERR_",
]


def test_open_ide_shows_the_vs_code_workbench(
    alice: Session, platform: Platform, provisioned: Provisioned
) -> None:
    probe = httpx.get(f"{platform.base_url}/dev/{provisioned.vmid}/ide", follow_redirects=False)
    if probe.status_code == 404:
        pytest.skip("zlh up does not start the public front yet: /dev/<vmid>/ide is the API's 404")
    page = alice.page
    page.goto(f"{platform.base_url}/c/{provisioned.vmid}")
    ide = page.locator("#open-ide")
    assert ide.get_attribute("aria-disabled") == "false"
    with alice.context.expect_page() as opened:
        ide.click()
    tab = opened.value
    for pattern in IDE_OFFLINE_NOISE:
        alice.console.allow(pattern)
    alice.console.attach(tab)
    tab.set_viewport_size({"width": 1280, "height": 800})
    tab.locator(".monaco-workbench").wait_for(timeout=120_000)
    assert tab.url == f"{platform.base_url}/dev/{provisioned.vmid}/ide/"
    assert tab.locator(".dialog-message-text", has_text="reconnect").count() == 0
    capture(tab, "ide")
