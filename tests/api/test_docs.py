"""``/api/docs`` and ``/api/openapi.json``: behind login, Swagger UI served from this host."""

from __future__ import annotations

import re
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from agent_sim import SimBackend
from api_kit import PASSWORD, add_user, make_app, running


@pytest.fixture
def client(tmp_path: Path) -> Iterator[httpx.Client]:
    app = make_app(tmp_path, SimBackend())
    add_user(app, "alice")
    with running(app) as client:
        yield client


def _sign_in(client: httpx.Client) -> None:
    login = {"username": "alice", "password": PASSWORD}
    assert client.post("/api/auth/login", json=login).status_code == 200


@pytest.mark.parametrize("path", ["/api/docs", "/api/openapi.json"])
def test_signed_out_an_api_client_gets_401_and_a_browser_the_sign_in_page(
    client: httpx.Client, path: str
) -> None:
    api = client.get(path, headers={"Accept": "application/json"})
    assert api.status_code == 401 and api.json()["message"].startswith("not logged in")
    page = client.get(path, headers={"Accept": "text/html,application/xhtml+xml"})
    assert page.status_code == 303
    assert page.headers["location"] == f"/login?next={path}"


def test_signed_in_the_docs_load_only_from_this_host(client: httpx.Client) -> None:
    _sign_in(client)
    page = client.get("/api/docs", headers={"Accept": "text/html"})
    assert page.status_code == 200 and page.headers["content-type"].startswith("text/html")
    csp = page.headers["content-security-policy"]
    assert "default-src 'self'" in csp and "script-src 'self'" in csp
    assets = re.findall(r'(?:src|href)="([^"]+)"', page.text)
    assert "/portal/vendor/swagger-ui/swagger-ui-bundle.js" in assets
    for asset in assets:
        if asset.startswith("data:"):
            continue
        assert asset.startswith("/") and not asset.startswith("//"), asset
        assert client.get(asset).status_code == 200, asset
    schema = client.get("/api/openapi.json").json()
    assert "/api/auth/password" in schema["paths"]
    assert "/api/docs" not in schema["paths"]
