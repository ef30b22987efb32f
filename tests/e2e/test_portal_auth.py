"""Signing in and out of the portal in Chromium, and who sees which container."""

from __future__ import annotations

import re

import httpx
import pytest
from e2e_kit import (
    ADMIN,
    ALICE,
    BOB,
    PASSWORD,
    Platform,
    Provisioned,
    Session,
    capture,
    open_session,
    sign_in,
)
from playwright.sync_api import Browser

pytestmark = [pytest.mark.e2e, pytest.mark.slow]


def test_wrong_password_shows_an_inline_error_then_the_right_one_signs_in(
    session: Session, platform: Platform
) -> None:
    page = session.page
    session.console.expect_http(401, "/api/auth/me")  # the signed-out probe on "/"
    session.console.expect_http(401, "/api/auth/login")  # the wrong password, shown inline
    page.goto(f"{platform.base_url}/")
    page.wait_for_url(re.compile(r"/login\?next=%2F$"))

    page.get_by_label("User name").fill(ALICE)
    page.get_by_label("Password").fill("not the password")
    page.get_by_role("button", name="Sign in").click()
    alert = page.get_by_role("alert")
    alert.wait_for()
    assert alert.inner_text() == "invalid user name or password"
    assert "/login" in page.url
    capture(page, "sign-in-error")

    page.get_by_label("Password").fill(PASSWORD)
    page.get_by_role("button", name="Sign in").click()
    page.get_by_role("heading", name="Your dev containers").wait_for()
    assert page.url == f"{platform.base_url}/"
    assert page.get_by_role("alert").count() == 0
    assert page.locator("#account").inner_text().startswith(f"Signed in as {ALICE}")


def test_sign_out_ends_the_session_and_the_dashboard_sends_back_to_sign_in(
    alice: Session, platform: Platform
) -> None:
    page = alice.page
    cookies = {c["name"]: c["value"] for c in alice.context.cookies()}
    assert cookies, "signing in set no session cookie"
    alice.console.expect_http(401, "/api/auth/me")

    page.get_by_role("button", name="Sign out").click()
    page.wait_for_url(re.compile(r"/login$"))
    page.goto(f"{platform.base_url}/")
    page.wait_for_url(re.compile(r"/login\?next=%2F$"))
    page.get_by_role("heading", name="Sign in").wait_for()
    assert page.get_by_role("heading", name="Your dev containers").count() == 0
    # The old cookie is dead at the API too, not only forgotten by the browser.
    answer = httpx.get(f"{platform.base_url}/api/dev", cookies=cookies)
    assert answer.status_code == 401


def test_expired_session_returns_to_sign_in_and_then_to_where_the_user_was_going(
    alice: Session, platform: Platform, provisioned: Provisioned
) -> None:
    page = alice.page
    alice.console.expect_http(401, "/api/auth/me")
    alice.context.clear_cookies()
    target = f"/c/{provisioned.vmid}/files"
    page.goto(f"{platform.base_url}{target}")
    page.wait_for_url(re.compile(r"/login\?next=%2Fc%2F\d+%2Ffiles$"))
    sign_in(page, platform.base_url, ALICE)
    page.wait_for_url(f"{platform.base_url}{target}")
    page.locator("#drop-zone").wait_for()


def test_users_see_only_their_containers_and_admins_see_all_with_owner(
    session: Session, platform: Platform, provisioned: Provisioned
) -> None:
    page = session.page
    page.goto(f"{platform.base_url}/login")
    sign_in(page, platform.base_url, BOB)
    page.get_by_text("No containers yet").wait_for()
    session.console.expect_http(404, f"/api/dev/{provisioned.vmid}")
    page.goto(f"{platform.base_url}/c/{provisioned.vmid}")
    assert page.get_by_role("alert").inner_text() == f"no container {provisioned.vmid}"

    page.get_by_role("button", name="Sign out").click()
    page.wait_for_url(re.compile(r"/login$"))
    sign_in(page, platform.base_url, ADMIN)
    page.get_by_role("heading", name="All dev containers").wait_for()
    row = page.locator("table.containers tbody tr", has_text=f"#{provisioned.vmid}")
    row.wait_for()
    assert row.locator("td").nth(1).inner_text() == ALICE
    capture(page, "dashboard-admin")


def test_api_docs_render_signed_in_with_no_request_leaving_the_host(
    alice: Session, platform: Platform
) -> None:
    page = alice.page
    requested: list[str] = []
    page.on("request", lambda request: requested.append(request.url))
    page.goto(f"{platform.base_url}/api/docs")
    page.locator(".swagger-ui .info .title", has_text="ZeroLagHub API").wait_for()
    page.locator(".opblock-summary-path", has_text="/api/auth/password").first.wait_for()
    capture(page, "api-docs")
    assert any(url.endswith("/api/openapi.json") for url in requested)
    foreign = [url for url in requested if not url.startswith(f"{platform.base_url}/")]
    assert foreign == [], foreign


def test_api_docs_signed_out_send_the_browser_to_sign_in_and_back(
    session: Session, platform: Platform
) -> None:
    page = session.page
    page.goto(f"{platform.base_url}/api/docs")
    page.wait_for_url(re.compile(r"/login\?next=/api/docs$"))
    page.get_by_label("User name").fill(ALICE)
    page.get_by_label("Password").fill(PASSWORD)
    page.get_by_role("button", name="Sign in").click()  # the docs are no portal view: a load
    page.wait_for_url(f"{platform.base_url}/api/docs")
    page.locator(".swagger-ui .info .title", has_text="ZeroLagHub API").wait_for()


def test_the_sign_in_page_says_how_long_to_wait_when_backed_off(
    session: Session, platform: Platform
) -> None:
    page = session.page
    session.console.expect_http(429, "/api/auth/login")
    # The API's answer while backed off, made up here: real back-off would slow other tests.
    page.route(
        "**/api/auth/login",
        lambda route: route.fulfill(
            status=429,
            headers={"Retry-After": "120", "Content-Type": "application/json"},
            body='{"message": "too many failed logins", "detail": "", "validations": []}',
        ),
    )
    page.goto(f"{platform.base_url}/login")
    page.get_by_label("User name").fill(ALICE)
    page.get_by_label("Password").fill("a guess")
    page.get_by_role("button", name="Sign in").click()
    alert = page.get_by_role("alert")
    alert.wait_for()
    assert alert.inner_text() == (
        "Too many failed sign-ins from your address. Try again in 2 minutes."
    )
    assert page.get_by_role("button", name="Sign in").is_disabled()


def test_changing_the_password_signs_out_the_other_sessions(
    browser: Browser, alice: Session, platform: Platform
) -> None:
    other = open_session(browser)
    try:
        other.page.goto(f"{platform.base_url}/login")
        sign_in(other.page, platform.base_url, ALICE)
        other_cookies = {c["name"]: c["value"] for c in other.context.cookies()}
        page = alice.page
        page.get_by_role("link", name="Password").click()
        new = "alice's new password"
        page.get_by_label("Current password").fill(PASSWORD)
        page.get_by_label("New password (at least 8 characters)").fill(new)
        page.get_by_label("New password again").fill(new)
        page.get_by_role("button", name="Change password").click()
        page.get_by_role("status").wait_for()
        capture(page, "password-changed")
        assert httpx.get(f"{platform.base_url}/api/dev", cookies=other_cookies).status_code == 401
        page.get_by_role("heading", name="Change password").wait_for()  # still signed in here
        # Back to the password every other test signs in with.
        page.get_by_label("Current password").fill(new)
        page.get_by_label("New password (at least 8 characters)").fill(PASSWORD)
        page.get_by_label("New password again").fill(PASSWORD)
        page.get_by_role("button", name="Change password").click()
        page.get_by_role("status").wait_for()
    finally:
        other.context.close()
