"""Cross-site request forgery: state changes carried by the portal cookie come from the portal.

The browser attaches the cookie to a form post or fetch from any site; only ``Origin`` (or
``Sec-Fetch-Site``) tells the API where the page that sent it lives. Bearer callers are judged
by their token alone.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from agent_sim import SimBackend
from api_kit import PASSWORD, add_user, make_app, running, services

EVIL = "https://evil.example"


@pytest.fixture
def client(tmp_path: Path) -> Iterator[httpx.Client]:
    """Signed in as alice with the portal cookie (in the client's jar), as a browser is."""
    app = make_app(tmp_path, SimBackend(), front={"public_origin": "http://zlh.example:8780"})
    add_user(app, "alice")
    with running(app) as client:
        login = {"username": "alice", "password": PASSWORD}
        response = client.post("/api/auth/login", json=login)
        assert response.status_code == 200 and "zlh_session" in client.cookies
        client.headers["X-Test-Token"] = response.json()["token"]
        yield client


def _bearer(client: httpx.Client) -> dict[str, str]:
    return {"Authorization": f"Bearer {client.headers['X-Test-Token']}"}


def _own_origin(client: httpx.Client) -> str:
    return str(client.base_url).rstrip("/")


def _containers(client: httpx.Client) -> int:
    return len(client.get("/api/dev").json())


def test_a_cross_origin_post_with_the_cookie_is_403_and_changes_nothing(
    client: httpx.Client,
) -> None:
    logout = client.post("/api/auth/logout", headers={"Origin": EVIL})
    assert logout.status_code == 403
    body = logout.json()
    assert body["detail"] == "cross-origin"
    assert body["message"].startswith(f"cross-origin POST refused: Origin {EVIL} is not")
    assert client.get("/api/auth/me").status_code == 200  # still signed in
    create = client.post("/api/dev", json={"runtime": "node"}, headers={"Origin": EVIL})
    assert create.status_code == 403
    assert _containers(client) == 0


def test_the_same_requests_with_a_bearer_token_work_from_anywhere(client: httpx.Client) -> None:
    headers = {"Origin": EVIL, **_bearer(client)}
    create = client.post("/api/dev", json={"runtime": "node"}, headers=headers)
    assert create.status_code == 202, create.text
    # The cookie rides along too, but the request is judged by its Bearer token.
    assert client.post("/api/auth/logout", headers=headers).status_code == 204
    assert client.get("/api/auth/me").status_code == 401  # that was the cookie's session


def test_same_origin_with_the_cookie_works(client: httpx.Client) -> None:
    own = {"Origin": _own_origin(client)}
    assert client.post("/api/dev", json={"runtime": "node"}, headers=own).status_code == 202
    public = {"Origin": "http://zlh.example:8780"}  # public_origin, whatever the Host
    assert client.post("/api/dev", json={"runtime": "node"}, headers=public).status_code == 202
    assert client.post("/api/auth/logout", headers=own).status_code == 204


@pytest.mark.parametrize(
    ("headers", "status"),
    [
        ({}, 403),
        ({"Sec-Fetch-Site": "cross-site"}, 403),
        ({"Sec-Fetch-Site": "same-site"}, 403),  # a sibling subdomain is another origin
        ({"Sec-Fetch-Site": "same-origin"}, 204),
    ],
)
def test_a_cookie_post_without_origin_needs_sec_fetch_site_same_origin(
    client: httpx.Client, headers: dict[str, str], status: int
) -> None:
    response = client.post("/api/auth/logout", headers=headers)
    assert response.status_code == status
    if status == 403:
        assert "carries no Origin" in response.json()["message"]


@pytest.mark.parametrize(
    "origin",
    [
        "null",
        "http://zlh.example:8780.evil.example",
        "http://127.0.0.1",  # the right host on another port is another origin
        "https://zlh.example:8780/path",
    ],
)
def test_look_alike_origins_are_other_sites(client: httpx.Client, origin: str) -> None:
    assert client.post("/api/auth/logout", headers={"Origin": origin}).status_code == 403


def test_reads_with_the_cookie_pass_from_anywhere(client: httpx.Client) -> None:
    assert client.get("/api/auth/me", headers={"Origin": EVIL}).status_code == 200


def test_no_other_site_can_sign_a_browser_in(tmp_path: Path) -> None:
    app = make_app(tmp_path, SimBackend())
    add_user(app, "mallory")
    with running(app) as client:
        login = {"username": "mallory", "password": PASSWORD}
        forged = client.post("/api/auth/login", json=login, headers={"Origin": EVIL})
        assert forged.status_code == 403 and "zlh_session" not in client.cookies
        assert [e.action for e in services(app).audit.entries()] == []
        assert client.post("/api/auth/login", json=login).status_code == 200  # a script
