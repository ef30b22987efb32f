"""Every portal page: the dashboard's fields, labels, visible keyboard focus, narrow screens."""

from __future__ import annotations

import httpx
import pytest
from e2e_kit import (
    ADMIN,
    ALICE,
    PASSWORD,
    PHONE,
    Platform,
    Provisioned,
    Session,
    capture,
    focus_ring,
    page_width,
    sign_in,
    unlabelled_controls,
)

pytestmark = [pytest.mark.e2e, pytest.mark.slow]


def test_dashboard_shows_the_container_with_the_spec_status_fields_in_words(
    alice: Session, platform: Platform, provisioned: Provisioned
) -> None:
    page = alice.page
    page.goto(f"{platform.base_url}/")
    row = page.locator("table.containers tbody tr", has_text=f"#{provisioned.vmid}")
    row.wait_for()
    cells = row.locator("td").all_inner_texts()
    workspace = str(platform.workspace(provisioned.vmid))
    assert cells[:4] == [f"#{provisioned.vmid}", "node 22", "ready", workspace]
    assert cells[4].endswith("/opt/zlh/runtimes/node/22")
    assert cells[5:] == ["yes", "running", "Open IDE"]
    ide = row.get_by_role("link", name=f"Open the IDE of #{provisioned.vmid}")
    assert ide.get_attribute("href") == f"/c/{provisioned.vmid}/ide"  # the portal's IDE page
    capture(page, "dashboard")
    # On a phone the detail columns give way instead of widening the page.
    page.set_viewport_size(PHONE)
    assert row.locator("td:visible").count() == 4
    assert page_width(page) <= PHONE["width"]


@pytest.mark.parametrize(
    "path",
    ["/", "/new", "/password", "/tokens", "/c/{vmid}", "/c/{vmid}/files", "/c/{vmid}/console"],
)
def test_page_has_labelled_controls_and_fits_a_phone(
    alice: Session, platform: Platform, provisioned: Provisioned, path: str
) -> None:
    page = alice.page
    page.set_viewport_size(PHONE)
    page.goto(platform.base_url + path.format(vmid=provisioned.vmid))
    page.locator("main h1").wait_for()
    page.wait_for_load_state("networkidle")
    assert unlabelled_controls(page) == []
    assert page_width(page) <= PHONE["width"]


def test_keyboard_focus_is_visible_and_the_sign_in_form_works_from_the_keyboard(
    session: Session, platform: Platform
) -> None:
    page = session.page
    page.goto(f"{platform.base_url}/login")
    page.get_by_role("heading", name="Sign in").wait_for()
    assert unlabelled_controls(page) == []
    assert page.evaluate("document.activeElement.id") == "username", "sign-in starts elsewhere"
    assert focus_ring(page), "the focused user name field shows no focus ring"
    page.keyboard.type(ALICE)
    page.keyboard.press("Tab")
    assert page.evaluate("document.activeElement.id") == "password"
    assert focus_ring(page), "the focused password field shows no focus ring"
    page.keyboard.type(PASSWORD)
    page.keyboard.press("Tab")
    assert page.evaluate("document.activeElement.textContent") == "Sign in"
    assert focus_ring(page), "the focused button shows no focus ring"
    page.keyboard.press("Enter")
    page.get_by_role("heading", name="Your dev containers").wait_for()
    # On a fresh load, the first Tab reaches the (then visible) skip link.
    page.reload()
    page.get_by_role("heading", name="Your dev containers").wait_for()
    page.keyboard.press("Tab")
    assert page.evaluate("document.activeElement.textContent") == "Skip to content"
    assert focus_ring(page)
    assert page.get_by_role("link", name="Skip to content").bounding_box()["x"] >= 0
    page.keyboard.press("Enter")
    assert page.evaluate("document.activeElement.id") == "main"


def test_an_unknown_url_is_the_portals_styled_not_found_page_and_json_for_programs(
    alice: Session, platform: Platform
) -> None:
    page = alice.page
    alice.console.expect_http(404, "/no-such-page")
    response = page.goto(f"{platform.base_url}/no-such-page")
    assert response is not None and response.status == 404
    page.get_by_role("heading", name="Not found").wait_for()
    assert page.locator("header.topbar").is_visible()  # the portal itself, styled
    capture(page, "not-found")
    for path in ("/no-such-page", "/api/no-such-route"):
        answer = httpx.get(f"{platform.base_url}{path}", headers={"Accept": "application/json"})
        assert answer.status_code == 404 and answer.json()["message"] == "Not Found"
    api = httpx.get(f"{platform.base_url}/api/no-such-route", headers={"Accept": "text/html"})
    assert api.status_code == 404 and api.headers["content-type"] == "application/json"


def test_the_ide_origin_answers_an_unknown_container_with_a_page_in_the_portals_look(
    session: Session, platform: Platform
) -> None:
    page = session.page
    session.console.expect_http(404, "/no-such-page")
    response = page.goto(f"{platform.ide_origin}/no-such-page")
    assert response is not None and response.status == 404
    page.get_by_role("link", name="Your containers").wait_for()
    assert page.get_by_role("link", name="Your containers").get_attribute("href") == (
        f"{platform.base_url}/"
    )
    capture(page, "ide-origin-not-found")


def test_the_top_bar_keeps_one_height_and_names_the_account_in_words(
    session: Session, platform: Platform
) -> None:
    page = session.page
    page.goto(f"{platform.base_url}/login")
    page.locator("main h1").wait_for()
    signed_out = page.locator("header.topbar").bounding_box()
    sign_in(page, platform.base_url, ADMIN)
    account = page.locator("#account")
    assert account.inner_text().startswith(f"Signed in as {ADMIN} · operator")
    signed_in = page.locator("header.topbar").bounding_box()
    assert signed_out is not None and signed_in is not None
    assert signed_out["height"] == signed_in["height"]
