"""``GET /api/dev/{vmid}/ide-url``: a one-time ticket to the IDE origin, owner only, bound to
the caller's portal session; admins only with ``admin_ide_access``, audited. The front's side
of tickets and IDE cookies is tests/proxy/test_ide_origin.py."""

from __future__ import annotations

from pathlib import Path
from urllib.parse import parse_qs, urlsplit

import jwt
import pytest

from agent_sim import SimBackend
from api_kit import add_user, login, make_app, running, services
from zlh.proxy.tickets import TICKET_AUDIENCE, TICKET_TTL_S, TicketDesk


def _ticket_of(url: str) -> str:
    return parse_qs(urlsplit(url).query)["ticket"][0]


def _claims(key: bytes, url: str) -> dict[str, object]:
    claims: dict[str, object] = jwt.decode(
        _ticket_of(url), key, algorithms=["HS256"], audience=TICKET_AUDIENCE, issuer="zlh"
    )
    return claims


@pytest.mark.parametrize(
    ("ide_origin", "expected"),
    [
        (None, "http://127.0.0.1:8781/_zlh/auth"),  # the second port: listen + 1, same host
        ("http://127.0.0.1:9000", "http://127.0.0.1:9000/_zlh/auth"),
        ("https://ide.example.com", "https://ide.example.com/_zlh/auth"),
        ("https://*.ide.example.com", "https://{vmid}.ide.example.com/_zlh/auth"),
    ],
    ids=["unset", "second-port", "host", "wildcard"],
)
def test_the_owner_gets_a_one_time_ticket_url_on_the_ide_origin(
    tmp_path: Path, ide_origin: str | None, expected: str
) -> None:
    app = make_app(tmp_path, SimBackend(), ide_origin=ide_origin, listen="127.0.0.1:8780")
    add_user(app, "alice")
    with running(app) as client:
        alice = login(client, "alice")
        vmid = client.post("/api/dev", json={"runtime": "node"}, headers=alice).json()["vmid"]
        response = client.get(f"/api/dev/{vmid}/ide-url", headers=alice)
        assert response.status_code == 200
        assert response.headers["cache-control"] == "no-store"
        url = response.json()["url"]
        assert url.split("?")[0] == expected.format(vmid=vmid)
        token = alice["Authorization"].removeprefix("Bearer ")
        session = jwt.decode(token, options={"verify_signature": False})
        claims = _claims(services(app).tokens.key, url)
        assert (claims["sub"], claims["vmid"], claims["sid"]) == ("1", vmid, session["sid"])
        assert 0 < int(claims["exp"]) - int(claims["iat"]) <= TICKET_TTL_S  # type: ignore[call-overload]
        assert claims["sexp"] == session["exp"]
        again = client.get(f"/api/dev/{vmid}/ide-url", headers=alice).json()["url"]
        assert _claims(services(app).tokens.key, again)["jti"] != claims["jti"]


def test_nobody_but_the_owner_gets_a_ticket_and_admins_only_when_allowed(tmp_path: Path) -> None:
    for allowed in (False, True):
        app = make_app(tmp_path / str(allowed), SimBackend(), admin_ide_access=allowed)
        add_user(app, "alice")
        add_user(app, "bob")
        add_user(app, "root", admin=True)
        with running(app) as client:
            alice, bob, root = (login(client, n) for n in ("alice", "bob", "root"))
            vmid = client.post("/api/dev", json={"runtime": "node"}, headers=alice).json()["vmid"]
            assert client.get(f"/api/dev/{vmid}/ide-url").status_code == 401
            assert client.get(f"/api/dev/{vmid}/ide-url", headers=bob).status_code == 404
            as_admin = client.get(f"/api/dev/{vmid}/ide-url", headers=root)
            assert as_admin.status_code == (200 if allowed else 404)
            assert client.get(f"/api/dev/{vmid}", headers=root).status_code == 200  # views stay
            page = client.get(f"/api/dev/{vmid}", headers=alice).json()
            assert page["adminIdeAccess"] is allowed  # the portal's banner
            opened = [
                (e.actor, e.vmid, e.detail)
                for e in services(app).audit.entries()
                if e.action == "admin-ide-open"
            ]
            assert opened == ([("root", vmid, "owner alice")] if allowed else [])
            client.get(f"/api/dev/{vmid}/ide-url", headers=alice)  # the owner's: not audited
            actions = [e.action for e in services(app).audit.entries()]
            assert actions.count("admin-ide-open") == len(opened)


def test_the_ide_cookie_and_tickets_are_refused_by_the_api(tmp_path: Path) -> None:
    app = make_app(tmp_path, SimBackend())
    add_user(app, "alice")
    with running(app) as client:
        alice = login(client, "alice")
        vmid = client.post("/api/dev", json={"runtime": "node"}, headers=alice).json()["vmid"]
        value = _ticket_of(client.get(f"/api/dev/{vmid}/ide-url", headers=alice).json()["url"])
        redeemed = TicketDesk(services(app).tokens.key, issuer="zlh").redeem(value)
        assert redeemed is not None
        cookie, _ = TicketDesk(services(app).tokens.key, issuer="zlh").cookie_value(redeemed)
        for credential in (value, cookie):
            for headers in (
                {"Authorization": f"Bearer {credential}"},
                {"Cookie": f"zlh_session={credential}"},
            ):
                assert client.get("/api/dev", headers=headers).status_code == 401
                client.cookies.clear()
