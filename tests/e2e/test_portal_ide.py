"""Open IDE: from the container page to the VS Code workbench through the platform's front."""

from __future__ import annotations

import pytest
from e2e_kit import Platform, Provisioned, Session, capture

pytestmark = [pytest.mark.e2e, pytest.mark.slow]

# What code-server 4.x logs on the console with nothing wrong: VS Code's proprietary signing
# module `vsda` is not shipped in code-server (two 404s; behind the front's nosniff the script's
# text/plain 404 is also "refused"), and the GitHub sign-in provider never registers offline.
# Closing the workbench logs its own shutdown complaints, so the tab is no longer watched then.
IDE_MISSING_VSDA = "/static/node_modules/vsda/rust/web/vsda"
IDE_NOISE = [
    r"^Refused to execute script from '[^']*/static/node_modules/vsda/rust/web/vsda\.js' "
    r"because its MIME type \('text/plain'\) is not executable",
    r"Timed out waiting for authentication provider 'github' to register",
]


def test_open_ide_shows_the_vs_code_workbench(
    alice: Session, platform: Platform, provisioned: Provisioned
) -> None:
    page = alice.page
    page.goto(f"{platform.base_url}/c/{provisioned.vmid}")
    ide = page.locator("#open-ide")
    assert ide.get_attribute("aria-disabled") == "false"
    with alice.context.expect_page() as opened:
        ide.click()
    tab = opened.value
    alice.console.expect_http(404, IDE_MISSING_VSDA)
    for pattern in IDE_NOISE:
        alice.console.allow(pattern)
    alice.console.attach(tab)
    tab.set_viewport_size({"width": 1280, "height": 800})
    tab.locator(".monaco-workbench").wait_for(timeout=120_000)
    assert tab.url.startswith(f"{platform.base_url}/dev/{provisioned.vmid}/ide/")
    assert tab.locator(".dialog-message-text", has_text="reconnect").count() == 0
    capture(tab, "ide")
    alice.console.detach(tab)
    tab.close()
