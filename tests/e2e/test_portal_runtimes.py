"""Runtime versions on the container page: alice's node 22 container lists 22 as active and
offers 24; Upgrade shows the install's progress and ends with 24 active, 22 still installed
(with Remove) and the page's header unchanged until reload; a terminal opened in the IDE then
runs node 24. The shared container is switched
back to 22 afterwards (22 is installed: no download), so other tests find it as it was."""

from __future__ import annotations

import httpx
import pytest
from e2e_kit import (
    ALICE,
    Platform,
    Provisioned,
    Session,
    api_login,
    capture,
    open_ide_terminal,
    run_in_ide_terminal,
    wait_for_container,
)
from playwright.sync_api import expect

pytestmark = [pytest.mark.e2e, pytest.mark.slow]


def test_upgrade_from_the_container_page(
    alice: Session, platform: Platform, provisioned: Provisioned
) -> None:
    page, vmid = alice.page, provisioned.vmid
    page.goto(f"{platform.base_url}/c/{vmid}")
    versions = page.locator("#runtime-versions")
    expect(versions.locator('li[data-version="22"]')).to_have_attribute("data-state", "active")
    row = versions.locator('li[data-version="24"]')
    expect(row).to_have_attribute("data-state", "available")
    try:
        row.get_by_role("button", name="Upgrade").click()
        expect(versions.locator('li[data-version="24"]')).to_have_attribute(
            "data-state", "active", timeout=120_000
        )
        old = versions.locator('li[data-version="22"]')
        expect(old).to_have_attribute("data-state", "installed")
        expect(old.get_by_role("button", name="Remove")).to_be_visible()
        expect(old.get_by_role("button", name="Switch")).to_be_visible()
        expect(page.locator("#runtime-message")).to_contain_text("node 24 is active")
        expect(page.locator("#runtime-progress")).to_be_hidden()
        capture(page, "container-runtime-upgraded")
        assert _node_version_in_a_new_ide_terminal(alice, platform, vmid).startswith("v24.")
    finally:
        with httpx.Client(base_url=platform.base_url, timeout=30) as client:
            auth = api_login(client, ALICE)
            back = {"runtime": "node", "version": "22"}
            client.patch(f"/api/dev/{vmid}", json=back, headers=auth)
            wait_for_container(client, auth, vmid, lambda c: c["version"] == "22", timeout_s=60)


def _node_version_in_a_new_ide_terminal(session: Session, platform: Platform, vmid: int) -> str:
    """``node --version`` typed into a terminal opened in the IDE now, as a person would."""
    out = platform.workspace(vmid) / "node-version.txt"
    out.unlink(missing_ok=True)
    tab = session.context.new_page()  # code-server's console noise is not the portal's
    try:
        tab.set_viewport_size({"width": 1280, "height": 800})
        tab.goto(f"{platform.base_url}/c/{vmid}/ide")
        tab.locator(".monaco-workbench").wait_for(timeout=120_000)
        terminal = open_ide_terminal(tab)
        run_in_ide_terminal(
            tab,
            terminal,
            "node --version > ~/workspace/node-version.txt",
            lambda: out.exists() and out.read_text().endswith("\n"),
        )
        return out.read_text().strip()
    finally:
        tab.close()
