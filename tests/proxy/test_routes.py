"""The route table: validation, revocation rules, reconciling with the API's full view."""

from __future__ import annotations

import time

import pytest
from pydantic import ValidationError

from zlh.proxy import Principal, ProxySettings, Route, RouteTable, UpstreamAddress


class FakeTunnel:
    """Records terminate() like a real tunnel would be told to close."""

    def __init__(self) -> None:
        self.closed: tuple[int, str] | None = None

    def terminate(self, code: int, reason: str) -> None:
        self.closed = (code, reason)


def principal(user: str, sid: str = "s", *, admin: bool = False, iat: float = 0) -> Principal:
    return Principal(user, sid, admin, expires_at=time.time() + 60, issued_at=iat or time.time())


def test_route_refuses_nonsense() -> None:
    with pytest.raises(ValueError, match="port"):
        Route("u", "10.0.0.1", 0, ready=True)
    with pytest.raises(ValueError, match="owner_id"):
        Route("", "10.0.0.1", 6000, ready=True)


def test_revoke_user_refuses_older_tokens_but_not_newer_ones() -> None:
    table = RouteTable()
    old = principal("u", iat=time.time() - 10)
    table.revoke_user("u")
    assert table.is_revoked(old)
    assert not table.is_revoked(principal("u", iat=time.time() + 1))
    assert not table.is_revoked(principal("someone-else", iat=time.time() - 10))


def test_revoked_sessions_are_forgotten_once_their_tokens_expired() -> None:
    table = RouteTable()
    table.revoke_session("gone", expires_at=time.time() - 1)
    table.revoke_session("kept")
    assert table.is_revoked(principal("u", "kept"))
    assert not table.is_revoked(principal("u", "gone"))


def test_replace_all_reconciles_and_closes_tunnels_of_removed_routes() -> None:
    table = RouteTable()
    table.update(1, Route("a", "h", 6000, ready=True))
    table.update(2, Route("b", "h", 6000, ready=True))
    kept, dropped = FakeTunnel(), FakeTunnel()
    table.add_tunnel(1, principal("a"), kept)
    table.add_tunnel(2, principal("b"), dropped)
    table.replace_all({1: Route("a", "h", 6000, ready=False), 3: Route("c", "h", 6000, ready=True)})
    assert table.get(2) is None and table.get(3) is not None
    assert table.get(1) == Route("a", "h", 6000, ready=False)
    assert dropped.closed is not None and dropped.closed[0] == 1008
    assert kept.closed is None
    assert table.tunnel_count() == 1


def test_a_moved_container_closes_all_its_tunnels() -> None:
    table = RouteTable()
    table.update(1, Route("a", "h1", 6000, ready=True))
    admin = FakeTunnel()
    table.add_tunnel(1, principal("root", admin=True), admin)
    table.update(1, Route("a", "h2", 6000, ready=True))
    assert admin.closed == (1008, "container moved")


def test_settings_refuse_bad_values() -> None:
    with pytest.raises(ValidationError, match="public_origin"):
        ProxySettings(public_origin="zlh.example.com")
    with pytest.raises(ValidationError, match="session_cookie"):
        ProxySettings(session_cookie="a=b")
    with pytest.raises(ValidationError, match="login_pth"):  # unknown keys are refused
        ProxySettings(login_pth="/login")  # type: ignore[call-arg]
    assert (
        ProxySettings(public_origin="HTTPS://Zlh.Example/").public_origin == "https://zlh.example"
    )


def test_upstream_addresses_parse() -> None:
    assert UpstreamAddress.parse("unix:/run/zlh/api.sock") == UpstreamAddress(
        path="/run/zlh/api.sock"
    )
    assert UpstreamAddress.parse("/run/a.sock").path == "/run/a.sock"
    assert UpstreamAddress.parse("127.0.0.1:8781") == UpstreamAddress(host="127.0.0.1", port=8781)
    assert UpstreamAddress.parse("[::1]:80") == UpstreamAddress(host="::1", port=80)
    with pytest.raises(ValueError, match="host:port"):
        UpstreamAddress.parse("localhost")
