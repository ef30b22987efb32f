"""Port previews in Chromium: a dev server with a WebSocket hot reload, started in the IDE's
terminal, opened from the portal in both prefix modes; an edit shows without a reload; another
user gets 404; a public preview opens signed out, cannot read the portal's API with the
portal's cookie, and after it is made private again is 404 and its open socket closes. The
wildcard form serves the app at ``/`` of ``{port}-{vmid}.ide.test`` (``--host-resolver-rules``)."""

from __future__ import annotations

import re
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
from e2e_kit import (
    ALICE,
    BOB,
    STEAL,
    Platform,
    Provisioned,
    Session,
    api_login,
    hot_reload_works,
    open_ide_terminal,
    put_dev_server,
    running_platform,
    sign_in,
    wait_for_container,
    wait_for_file,
)
from playwright.sync_api import Browser, Page, expect
from websockets.sync.client import connect

from support import free_port

pytestmark = [pytest.mark.e2e, pytest.mark.slow]


def _open_from_portal(session: Session, row: str, name: str, lands_on: str) -> Page:
    """Click a preview's Open link; the new tab once it shows the preview at ``lands_on``
    (the portal's page fetched a ticket, the mode flag went into a cookie)."""
    with session.context.expect_page() as opened:
        session.page.locator(row).get_by_role("link", name=name, exact=True).click()
    tab = opened.value
    tab.wait_for_url(lands_on, timeout=30_000)
    return tab


def test_a_dev_server_started_in_the_ide_terminal_previews_in_both_modes_with_hot_reload(
    alice: Session, platform: Platform, provisioned: Provisioned, browser: Browser
) -> None:
    vmid, port = provisioned.vmid, free_port()
    page = alice.page
    with httpx.Client(base_url=platform.base_url, timeout=30) as client:
        auth = api_login(client, ALICE)
        folder = put_dev_server(client, auth, vmid)
        ide = alice.context.new_page()  # code-server's console noise is not the portal's
        ide.set_viewport_size({"width": 1280, "height": 800})
        ide.goto(f"{platform.base_url}/c/{vmid}/ide")
        ide.locator(".monaco-workbench").wait_for(timeout=120_000)
        open_ide_terminal(ide)
        ide.keyboard.type(f"cd ~/workspace/{folder} && node devserver.js {port}\n")
        wait_for_file(platform.workspace(vmid) / folder / "listening")

        page.goto(f"{platform.base_url}/c/{vmid}")
        row = f'#previews tr[data-port="{port}"]'
        expect(page.locator(row)).to_be_visible(timeout=15_000)
        expect(page.locator(row)).to_contain_text("0.0.0.0")

        preview_base = f"{platform.ide_origin}/dev/{vmid}/port/{port}/"
        stripped = _open_from_portal(alice, row, "Open", preview_base)
        expect(stripped.locator("#path")).to_have_text("/")
        hot_reload_works(stripped, client, auth, vmid, folder, "edited once")
        # A page of the preview cannot read the portal's API with the portal's cookie.
        assert stripped.evaluate(STEAL, platform.base_url) == "blocked"

        kept = _open_from_portal(alice, row, "Open with prefix", preview_base)
        expect(kept.locator("#path")).to_have_text(f"/dev/{vmid}/port/{port}/")
        hot_reload_works(kept, client, auth, vmid, folder, "edited twice")

        # Another user, signed in to the portal: the preview is not there for them.
        bob = browser.new_context()
        try:
            bob_page = bob.new_page()
            sign_in(bob_page, platform.base_url, BOB)
            assert bob_page.goto(preview_base).status == 404  # type: ignore[union-attr]
            bob_page.goto(f"{platform.base_url}/c/{vmid}/ide?port={port}&next=/")
            expect(bob_page.locator(".error").first).to_be_visible()
            assert not bob_page.url.startswith(platform.ide_origin)
        finally:
            bob.close()

        # Public: a signed-out browser opens it; made private again, it is 404 and the
        # visitor's open hot-reload socket closes.
        row_locator = page.locator(row)
        row_locator.get_by_role("button", name="Make public").click()
        expect(row_locator.locator(".badge.public")).to_have_text("public")
        stranger = browser.new_context()
        try:
            visitor = stranger.new_page()
            answer = visitor.goto(preview_base)
            assert answer is not None and answer.status == 200
            expect(visitor.locator("#path")).to_have_text("/")
            expect(visitor.locator("#ws")).to_have_text("open", timeout=15_000)
            row_locator.get_by_role("button", name="Make private").click()
            expect(row_locator.locator(".badge.public")).to_have_count(0)
            expect(visitor.locator("#ws")).to_have_text("closed", timeout=5_000)
            again = visitor.reload()
            assert again is not None and again.status == 404
        finally:
            stranger.close()
        for tab in (stripped, kept, ide):
            tab.close()


@pytest.fixture(scope="module")
def wildcard(e2e_store: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Platform]:
    port = free_port()
    data_dir = tmp_path_factory.mktemp("e2e-preview-wildcard")
    with running_platform(e2e_store, data_dir, f"http://*.ide.test:{port}", port) as found:
        yield found


def test_the_wildcard_form_serves_a_preview_at_the_root_of_its_own_host(
    session: Session, wildcard: Platform
) -> None:
    platform, port = wildcard, free_port()
    with httpx.Client(base_url=platform.base_url, timeout=30) as client:
        auth = api_login(client, ALICE)
        # No code-server: a running container's ports are previewed all the same.
        vmid = int(client.post("/api/dev", json={"runtime": "node"}, headers=auth).json()["vmid"])
        wait_for_container(client, auth, vmid, lambda c: c["state"] == "ready")
        folder = put_dev_server(client, auth, vmid)
        console_url = platform.base_url.replace("http", "ws", 1) + f"/api/dev/{vmid}/console"
        with connect(console_url, additional_headers=auth, open_timeout=10) as shell:
            shell.send(f"cd ~/workspace/{folder} && node devserver.js {port}\n".encode())
            wait_for_file(platform.workspace(vmid) / folder / "listening")
            page = session.page
            sign_in(page, platform.base_url, ALICE)
            page.goto(f"{platform.base_url}/c/{vmid}/ide?port={port}&next=/")
            own = f"http://{port}-{vmid}.ide.test:{platform.base_url.rsplit(':', 1)[1]}/"
            page.wait_for_url(re.compile("^" + re.escape(own) + "$"), timeout=30_000)
            expect(page.locator("#path")).to_have_text("/")
            hot_reload_works(page, client, auth, vmid, folder, "wildcard edit")
