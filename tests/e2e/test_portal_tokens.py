"""The portal's API tokens page in Chromium: make a token, use it from a program, revoke it."""

from __future__ import annotations

import re

import httpx
import pytest
from e2e_kit import Platform, Session, capture

pytestmark = [pytest.mark.e2e, pytest.mark.slow]


def test_a_token_made_in_the_portal_works_until_it_is_revoked_there(
    alice: Session, platform: Platform
) -> None:
    page = alice.page
    alice.context.grant_permissions(["clipboard-read", "clipboard-write"])
    page.get_by_role("link", name="API tokens").click()
    page.get_by_role("heading", name="API tokens").wait_for()
    page.get_by_label("Name").fill("portal-ci")
    page.get_by_role("checkbox", name=re.compile("^containers:read")).check()
    page.get_by_label("Expires in days").fill("2")
    page.get_by_role("button", name="Create token").click()
    secret = page.locator("#token-secret")
    secret.wait_for()
    token = secret.inner_text()
    assert re.fullmatch(r"zlh_[A-Za-z0-9_-]{43}", token)
    assert "shown only this once" in page.get_by_role("status").inner_text()
    page.get_by_role("button", name="Copy token").click()
    assert page.evaluate("navigator.clipboard.readText()") == token
    capture(page, "api-token-made")

    bearer = {"Authorization": f"Bearer {token}"}
    used = httpx.get(f"{platform.base_url}/api/dev", headers=bearer)
    assert used.status_code == 200, used.text
    # Its scope is all it may do.
    stop = httpx.post(f"{platform.base_url}/api/dev", json={"runtime": "node"}, headers=bearer)
    assert stop.status_code == 403 and "containers:write" in stop.json()["message"]

    page.reload()
    row = page.locator("table.tokens tbody tr", has_text="portal-ci")
    row.wait_for()
    cells = row.locator("td").all_inner_texts()
    assert cells[0:2] == ["portal-ci", "containers:read"] and cells[4] != "never"
    assert page.locator("#token-secret").count() == 0  # shown once, never again
    assert token not in page.content()

    row.get_by_role("button", name="Revoke portal-ci").click()
    page.get_by_role("dialog").get_by_role("button", name="Revoke").click()
    row.wait_for(state="detached")
    refused = httpx.get(f"{platform.base_url}/api/dev", headers=bearer)
    assert refused.status_code == 401
    assert refused.json()["message"] == "API token 'portal-ci' was revoked"


def test_a_customer_is_not_offered_the_operator_scopes(alice: Session, platform: Platform) -> None:
    page = alice.page
    page.goto(f"{platform.base_url}/tokens")
    page.get_by_role("heading", name="New token").wait_for()
    offered = page.locator("input[name=scope]").evaluate_all("(boxes) => boxes.map((b) => b.value)")
    assert offered == ["containers:read", "containers:write", "files", "console"]
