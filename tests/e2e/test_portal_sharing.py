"""Sharing in Chromium: alice shares her container with bob from its page; bob's portal lists
it as shared by alice, he opens its IDE and runs a command in its terminal; alice stops sharing
and bob's open IDE WebSockets close within 5 s, after which the IDE and the API answer him 404.
A ``view`` share shows bob the status and no way into the IDE."""

from __future__ import annotations

import httpx
import pytest
from e2e_kit import (
    BOB,
    Platform,
    Provisioned,
    Session,
    capture,
    open_ide,
    open_ide_terminal,
    open_session,
    run_in_ide_terminal,
    sign_in,
)
from playwright.sync_api import Browser, Page, WebSocket, expect

pytestmark = [pytest.mark.e2e, pytest.mark.slow]

CLOSE_WITHIN_MS = 5_000


def _share(page: Page, platform: Platform, vmid: int, user: str, role: str) -> None:
    page.goto(f"{platform.base_url}/c/{vmid}")
    page.locator("#share-user").fill(user)
    page.locator("#share-role").select_option(role)
    page.get_by_role("button", name="Share", exact=True).click()
    expect(page.locator(f"#shares li[data-user={user}] .badge")).to_have_text(role)


def _stop_sharing(page: Page, platform: Platform, vmid: int, user: str) -> None:
    page.goto(f"{platform.base_url}/c/{vmid}")
    page.locator(f"#shares li[data-user={user}] button").click()
    page.locator("dialog.confirm").get_by_role("button", name="Stop sharing").click()
    expect(page.locator(f"#shares li[data-user={user}]")).to_have_count(0)


def _workspace_file(platform: Platform, vmid: int, name: str) -> str:
    path = platform.data_dir / "process" / str(vmid) / "root" / "home" / "dev" / "workspace" / name
    return path.read_text().strip() if path.exists() else ""


def test_bob_uses_alices_shared_ide_until_she_takes_it_back(
    alice: Session, browser: Browser, platform: Platform, provisioned: Provisioned
) -> None:
    vmid = provisioned.vmid
    _share(alice.page, platform, vmid, BOB, "use")
    capture(alice.page, "container-shared")

    bob = open_session(browser)
    sockets: list[WebSocket] = []
    bob.context.on("page", lambda page: page.on("websocket", lambda ws: sockets.append(ws)))
    try:
        sign_in(bob.page, platform.base_url, BOB)
        row = bob.page.locator("table.containers tr", has_text="shared by alice")
        expect(row).to_have_count(1)
        row.get_by_role("link").first.click()
        expect(bob.page.locator("#shared-by")).to_contain_text("Shared with you by alice")
        for owners_only in ("Delete", "Stop", "Rebuild", "Share"):
            expect(bob.page.get_by_role("button", name=owners_only, exact=True)).to_have_count(0)

        tab = open_ide(bob, platform, vmid)
        terminal = open_ide_terminal(tab)
        run_in_ide_terminal(
            tab,
            terminal,
            "echo shared-$((6*7)) > ~/workspace/bob-was-here.txt",
            lambda: _workspace_file(platform, vmid, "bob-was-here.txt") == "shared-42",
        )
        bob.console.detach(tab)  # the workbench complains of the lost connection, rightly
        ide = platform.ide_url(vmid).split("://", 1)[1]
        ide_sockets = [ws for ws in sockets if ide in ws.url and not ws.is_closed()]
        assert ide_sockets, f"bob's workbench opened no WebSocket to {ide}"

        _stop_sharing(alice.page, platform, vmid, BOB)
        for ws in ide_sockets:
            if not ws.is_closed():
                ws.wait_for_event("close", timeout=CLOSE_WITHIN_MS)
        again = tab.goto(platform.ide_url(vmid))
        assert again is not None and again.status == 404
        cookies = {c["name"]: c["value"] for c in bob.context.cookies(platform.base_url)}
        api = httpx.get(f"{platform.base_url}/api/dev/{vmid}", cookies=cookies)
        assert api.status_code == 404
    finally:
        bob.context.close()


def test_a_view_share_shows_bob_the_status_and_no_way_into_the_ide(
    alice: Session, browser: Browser, platform: Platform, provisioned: Provisioned
) -> None:
    vmid = provisioned.vmid
    _share(alice.page, platform, vmid, BOB, "view")
    bob = open_session(browser)
    try:
        sign_in(bob.page, platform.base_url, BOB)
        bob.page.goto(f"{platform.base_url}/c/{vmid}")
        expect(bob.page.locator("h1 .badge")).to_have_text("ready")
        expect(bob.page.locator("#shared-by")).to_contain_text("you can see its status")
        expect(bob.page.locator("#open-ide")).to_be_hidden()
        expect(bob.page.locator("nav.tabs a")).to_have_count(1)  # no files, no console
        capture(bob.page, "container-shared-view")
        ticket = bob.context.request.get(f"{platform.base_url}/api/dev/{vmid}/ide-url")
        assert ticket.status == 404
        portal_ide = bob.context.new_page()
        portal_ide.goto(f"{platform.base_url}/c/{vmid}/ide")
        expect(portal_ide.locator("#view-only")).to_contain_text("its IDE does not open for you")
    finally:
        bob.context.close()
        _stop_sharing(alice.page, platform, vmid, BOB)
