"""Open IDE: from the container page to the VS Code workbench on the IDE origin (a ticket from
the portal, exchanged for the IDE cookie), from a signed-out browser through sign-in, and the
workspace the file API writes is the folder code-server's Explorer shows."""

from __future__ import annotations

import itertools
import time
import uuid

import httpx
import pytest
from e2e_kit import (
    ALICE,
    BOB,
    PASSWORD,
    WORKBENCH_TIMEOUT_MS,
    Platform,
    Provisioned,
    Session,
    capture,
    open_ide,
    open_session,
    sign_in,
)
from playwright.sync_api import Browser, Locator, Page, WebSocket, expect
from websockets.exceptions import InvalidStatus
from websockets.sync.client import connect

pytestmark = [pytest.mark.e2e, pytest.mark.slow]

# code-server's file watcher reports a change within a second or two once it runs; it starts
# some seconds after the Explorer first shows, and a file made before that never appears.
WATCH_TIMEOUT_MS = 30_000
PROBE_TIMEOUT_MS = 2_000


def _sign_in_on_the_way_to_the_ide(tab: Page, platform: Platform, vmid: int) -> None:
    """On the portal's sign-in page an IDE link led to: sign in as alice, land in the IDE."""
    tab.wait_for_url(f"{platform.base_url}/login?next=%2Fc%2F{vmid}%2Fide")
    tab.get_by_label("User name").fill(ALICE)
    tab.get_by_label("Password").fill(PASSWORD)
    tab.get_by_role("button", name="Sign in").click()
    tab.locator(".monaco-workbench").wait_for(timeout=WORKBENCH_TIMEOUT_MS)
    assert tab.url.startswith(platform.ide_url(vmid))


def _close_ide(session: Session, tab: Page) -> None:
    session.console.detach(tab)
    tab.close()


def test_open_ide_shows_the_vs_code_workbench_on_our_welcome(
    alice: Session, platform: Platform, provisioned: Provisioned
) -> None:
    tab = open_ide(alice, platform, provisioned.vmid)
    assert tab.locator(".dialog-message-text", has_text="reconnect").count() == 0
    # The workspace's README opens (its preview), not code-server's promotion page.
    editors = tab.locator(".tabs-container [role=tab]")
    expect(editors.filter(has_text="README.md")).to_have_count(1, timeout=WORKBENCH_TIMEOUT_MS)
    expect(tab.get_by_text("Deploy code-server for your team")).to_have_count(0)
    preview = tab.frame_locator("iframe.webview").frame_locator("iframe#active-frame")
    welcome = preview.get_by_role("heading", name="Welcome to your ZeroLagHub dev container")
    expect(welcome).to_be_visible(timeout=WORKBENCH_TIMEOUT_MS)
    assert tab.locator(".part.auxiliarybar:visible").count() == 0  # no empty side panel
    capture(tab, "ide")
    _close_ide(alice, tab)


def test_a_signed_out_browser_opening_the_ide_link_signs_in_lands_in_the_ide_and_signs_out(
    session: Session, platform: Platform, provisioned: Provisioned
) -> None:
    vmid = provisioned.vmid
    tab = session.context.new_page()  # code-server's console noise is not the portal's
    tab.goto(platform.ide_url(vmid))  # the IDE origin sends it to the portal, which to sign-in
    _sign_in_on_the_way_to_the_ide(tab, platform, vmid)
    # Signing out of the portal ends the IDE cookie it led to: the IDE asks for sign-in again.
    tab.goto(f"{platform.base_url}/")
    tab.get_by_role("button", name="Sign out").click()
    tab.wait_for_url(f"{platform.base_url}/login")
    tab.goto(platform.ide_url(vmid))
    tab.wait_for_url(f"{platform.base_url}/login?next=%2Fc%2F{vmid}%2Fide")
    tab.close()


NOTICE_TIMEOUT_MS = 15_000  # a WebSocket closing asks at once; the poll is every 10 s


def test_an_open_ide_tab_says_the_session_ended_after_sign_out_and_signs_in_again(
    alice: Session, platform: Platform, provisioned: Provisioned
) -> None:
    vmid = provisioned.vmid
    session = alice
    tab = open_ide(session, platform, vmid)
    session.console.detach(tab)  # the workbench complains of the lost connection, rightly
    notice = tab.locator("#zlh-session-ended")
    assert notice.count() == 0
    session.page.bring_to_front()
    session.page.get_by_role("button", name="Sign out").click()
    session.page.wait_for_url(f"{platform.base_url}/login")
    expect(notice).to_be_visible(timeout=NOTICE_TIMEOUT_MS)
    expect(notice.get_by_role("heading")).to_have_text("Your session has ended")
    capture(tab, "ide-session-ended")
    notice.get_by_role("link", name="Sign in again").click()
    _sign_in_on_the_way_to_the_ide(tab, platform, vmid)
    assert tab.locator("#zlh-session-ended").count() == 0
    tab.close()


def test_another_users_browser_session_gets_404_on_the_ide_over_http_and_websocket(
    session: Session, platform: Platform, provisioned: Provisioned
) -> None:
    vmid = provisioned.vmid
    sign_in(session.page, platform.base_url, BOB)
    session.console.expect_http(404, f"/api/dev/{vmid}")  # the IDE page asks for it first
    page = session.page
    page.goto(f"{platform.base_url}/c/{vmid}/ide")  # the portal's IDE link
    expect(page.get_by_text(f"no container {vmid}")).to_be_visible()
    assert page.url == f"{platform.base_url}/c/{vmid}/ide"  # never sent to the IDE origin
    # The same browser session's cookies on a real WebSocket handshake to the IDE origin, as
    # the workbench makes it (same origin), to a path code-server serves sockets on: the
    # portal's cookie opens nothing there.
    cookies = session.context.cookies(platform.base_url)
    assert cookies, "the sign-in left no session cookie"
    cookie = "; ".join(f"{c['name']}={c['value']}" for c in cookies)
    ide = platform.ide_url(vmid)
    socket_url = "ws" + ide.removeprefix("http") + "?reconnectionToken=e2e&reconnection=false"
    with pytest.raises(InvalidStatus) as refused:
        connect(socket_url, origin=platform.ide_origin, additional_headers={"Cookie": cookie})  # type: ignore[arg-type]
    assert refused.value.response.status_code == 401


def _put_file(session: Session, platform: Platform, vmid: int, path: str, data: bytes) -> None:
    """Upload through ``PUT /api/dev/{vmid}/files/content`` with the browser's own cookie."""
    url = f"{platform.base_url}/api/dev/{vmid}/files/content"
    # The browser's cookie, from this site's own origin (as the portal's pages send it).
    origin = {"Origin": platform.base_url}
    response = session.context.request.put(url, params={"path": path}, data=data, headers=origin)
    assert response.status == 201, response.text()
    assert (platform.workspace(vmid) / path).read_bytes() == data


def _mkdir(session: Session, platform: Platform, vmid: int, path: str) -> None:
    url = f"{platform.base_url}/api/dev/{vmid}/files/mkdir"
    origin = {"Origin": platform.base_url}
    response = session.context.request.post(url, data={"path": path}, headers=origin)
    assert response.status == 201, response.text()
    assert (platform.workspace(vmid) / path).is_dir()


def _explorer_item(tab: Page, name: str) -> Locator:
    """The Explorer row VS Code labels ``name`` (its accessible name is the bare file name)."""
    tree = tab.locator(".explorer-folders-view")
    return tree.get_by_role("treeitem", name=name, exact=True)


def _wait_for_watcher(session: Session, platform: Platform, vmid: int, tab: Page, tag: str) -> None:
    """Upload probe files until one shows in the Explorer: then code-server watches the folder."""
    deadline = time.monotonic() + WATCH_TIMEOUT_MS / 1000
    for n in itertools.count():
        probe = f"probe-{tag}-{n}.txt"
        _put_file(session, platform, vmid, probe, b"")
        try:
            expect(_explorer_item(tab, probe)).to_be_visible(timeout=PROBE_TIMEOUT_MS)
            return
        except AssertionError:
            if time.monotonic() > deadline:
                raise


def test_files_made_through_the_file_api_show_in_the_ide_explorer_and_open(
    alice: Session, platform: Platform, provisioned: Provisioned
) -> None:
    vmid, tag = provisioned.vmid, uuid.uuid4().hex[:8]
    before, folder, inner, after = (
        f"api-{tag}.txt",
        f"dir-{tag}",
        f"inner-{tag}.txt",
        f"late-{tag}.txt",
    )
    _put_file(alice, platform, vmid, before, f"made-through-the-api-{tag}\n".encode())
    _mkdir(alice, platform, vmid, folder)
    _put_file(alice, platform, vmid, f"{folder}/{inner}", b"inside\n")

    tab = open_ide(alice, platform, vmid)
    tab.keyboard.press("Control+Shift+E")  # show the Explorer (does nothing if it is showing)
    expect(_explorer_item(tab, before)).to_be_visible(timeout=WORKBENCH_TIMEOUT_MS)
    _explorer_item(tab, folder).click()
    expect(_explorer_item(tab, folder)).to_have_attribute("aria-expanded", "true")
    expect(_explorer_item(tab, inner)).to_be_visible()

    _wait_for_watcher(alice, platform, vmid, tab, tag)
    _put_file(alice, platform, vmid, after, f"made-after-load-{tag}\n".encode())
    expect(_explorer_item(tab, after)).to_be_visible(timeout=WATCH_TIMEOUT_MS)

    _explorer_item(tab, before).click()
    editor_tab = tab.locator(".tabs-container [role=tab]", has_text=before)
    expect(editor_tab).to_be_visible()
    expect(tab.locator(".editor-instance .view-lines")).to_contain_text(
        f"made-through-the-api-{tag}"
    )
    capture(tab, "ide-explorer")
    _close_ide(alice, tab)


CLOSE_WITHIN_MS = 5_000


def test_a_password_change_ends_the_other_sessions_open_ide_websocket_within_5_s(
    alice: Session, browser: Browser, platform: Platform, provisioned: Provisioned
) -> None:
    vmid = provisioned.vmid
    other = open_session(browser)  # alice's second browser, with the IDE open
    sockets: list[WebSocket] = []

    def watch(page: Page) -> None:
        page.on("websocket", lambda ws: sockets.append(ws))

    other.context.on("page", watch)
    try:
        sign_in(other.page, platform.base_url, ALICE)
        tab = open_ide(other, platform, vmid)
        ide = platform.ide_url(vmid).split("://", 1)[1]
        ide_sockets = [ws for ws in sockets if ide in ws.url and not ws.is_closed()]
        assert ide_sockets, (
            f"the workbench opened no WebSocket to {ide}: {[s.url for s in sockets]}"
        )
        other.console.detach(tab)  # the workbench complains of the lost connection, rightly
        old_cookies = {c["name"]: c["value"] for c in other.context.cookies(platform.base_url)}

        change_password(alice, platform, PASSWORD, NEW_PASSWORD)
        try:
            for ws in ide_sockets:
                if not ws.is_closed():
                    ws.wait_for_event("close", timeout=CLOSE_WITHIN_MS)
            api = httpx.get(f"{platform.base_url}/api/dev", cookies=old_cookies)
            assert api.status_code == 401
            expect(tab.locator("#zlh-session-ended")).to_be_visible(timeout=NOTICE_TIMEOUT_MS)
        finally:
            change_password(alice, platform, NEW_PASSWORD, PASSWORD)
    finally:
        other.context.close()


NEW_PASSWORD = "alice's other password"


def change_password(session: Session, platform: Platform, current: str, new: str) -> None:
    """``POST /api/auth/password`` from the portal's origin with the session's cookie."""
    response = session.context.request.post(
        f"{platform.base_url}/api/auth/password",
        data={"current": current, "new": new},
        headers={"Origin": platform.base_url},
    )
    assert response.status == 204, response.text()
