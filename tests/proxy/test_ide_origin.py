"""The IDE origin: one-time tickets for a container-scoped IDE cookie, nothing but IDEs served
there, no IDE on the portal's origin, and the headers that keep a container's pages in their
place. The default front listens for the IDE origin on a second port (``ide_port``)."""

from __future__ import annotations

import socket
import time

import httpx
import pytest
from proxy_kit import (
    KEY,
    Harness,
    ide_client,
    ide_cookie,
    ide_session,
    ticket,
    token,
    wait_until,
)

from zlh.api.auth import decode_token
from zlh.api.errors import NotAuthenticated
from zlh.proxy import JwtAuthenticator
from zlh.proxy.tickets import TICKET_TTL_S, TicketDesk


def exchange(client: httpx.Client, value: str, **headers: str) -> httpx.Response:
    return client.get("/_zlh/auth", params={"ticket": value}, headers=headers)


def cookie_attributes(response: httpx.Response) -> dict[str, str]:
    """The Set-Cookie's attributes (lower-case names; flags map to "")."""
    _, *attributes = response.headers["set-cookie"].split(";")
    pairs = (a.strip().partition("=") for a in attributes)
    return {name.lower(): value for name, _, value in pairs}


# ---------------------------------------------------------------- tickets


def test_a_ticket_opens_its_ide_once_and_a_second_use_is_401(harness: Harness) -> None:
    vmid = harness.add_route("alice")
    with ide_client(harness.front.ide_port) as client:
        value = ticket("alice", vmid)
        first = exchange(client, value)
        assert first.status_code == 303
        assert first.headers["location"] == f"/dev/{vmid}/ide/"
        assert first.headers["cache-control"] == "no-store"  # as every answer of the front's
        ide = client.get(f"/dev/{vmid}/ide/who")  # the jar sends the cookie back
        assert ide.status_code == 200 and ide.json()["path"] == "/who"
        client.cookies.clear()
        again = exchange(client, value)
    assert again.status_code == 401
    assert "set-cookie" not in again.headers


def test_the_ide_cookie_is_host_only_httponly_lax_and_scoped_to_the_container(
    harness: Harness,
) -> None:
    vmid = harness.add_route("alice")
    with ide_client(harness.front.ide_port) as client:
        response = exchange(client, ticket("alice", vmid, session_ttl_s=1800))
    name = response.headers["set-cookie"].split("=", 1)[0]
    attributes = cookie_attributes(response)
    assert name == "zlh_ide"
    assert attributes["path"] == f"/dev/{vmid}/"
    assert "domain" not in attributes  # host-only
    assert {"httponly", "samesite"} <= attributes.keys() and attributes["samesite"] == "Lax"
    assert "secure" not in attributes  # plain http here
    assert 1790 <= int(attributes["max-age"]) <= 1800  # the portal session's remaining life


def test_the_ide_cookie_is_secure_when_the_ide_origin_is_https(harness: Harness) -> None:
    with harness.other_front(ide_origin="https://*.ide.example") as (front, routes):
        vmid = harness.add_route("alice", routes=routes)
        with ide_client(front.port) as client:
            response = exchange(client, ticket("alice", vmid), Host=f"{vmid}.ide.example")
    assert response.status_code == 303
    assert "secure" in cookie_attributes(response)


def test_an_expired_ticket_is_401(harness: Harness) -> None:
    now = [time.time()]
    with harness.other_front(clock=lambda: now[0]) as (front, routes):
        vmid = harness.add_route("alice", routes=routes)
        fresh, late = ticket("alice", vmid, now=now[0]), ticket("alice", vmid, now=now[0])
        with ide_client(front.ide_port) as client:
            assert exchange(client, fresh).status_code == 303
            now[0] += TICKET_TTL_S + 1
            response = exchange(client, late)
    assert response.status_code == 401
    assert response.json()["message"] == "This IDE link has expired or was already used"


def test_a_ticket_or_cookie_for_one_container_opens_no_other(harness: Harness) -> None:
    mine, other = harness.add_route("alice"), harness.add_route("alice")
    with ide_client(harness.front.ide_port) as client:
        cookie_for_mine = ide_session("alice", mine)
        assert client.get(f"/dev/{mine}/ide/", headers=cookie_for_mine).status_code == 200
        assert client.get(f"/dev/{other}/ide/", headers=cookie_for_mine).status_code == 404
    with harness.other_front(ide_origin="http://*.ide.test") as (front, routes):
        mine, other = (harness.add_route("alice", routes=routes) for _ in range(2))
        with ide_client(front.port) as client:
            value = ticket("alice", mine)
            assert exchange(client, value, Host=f"{other}.ide.test").status_code == 404
            cookie = ide_session("alice", mine)
            response = client.get("/", headers={**cookie, "Host": f"{other}.ide.test"})
            assert response.status_code == 404


def test_the_portal_cookie_counts_for_nothing_on_the_ide_origin(harness: Harness) -> None:
    vmid = harness.add_route("alice")
    portal_token = token("alice")
    with ide_client(harness.front.ide_port) as client:
        for cookie in (f"zlh_session={portal_token}", f"zlh_ide={portal_token}"):
            response = client.get(f"/dev/{vmid}/ide/", headers={"Cookie": cookie})
            assert response.status_code == 401, cookie
        # A ticket is not a cookie either: it only works once, at /_zlh/auth.
        as_cookie = {"Cookie": f"zlh_ide={ticket('alice', vmid)}"}
        assert client.get(f"/dev/{vmid}/ide/", headers=as_cookie).status_code == 401


def test_the_ide_cookie_and_tickets_are_never_a_session() -> None:
    cookie, one_time = ide_cookie("alice", 200), ticket("alice", 200)
    portal = JwtAuthenticator(KEY)
    for value in (cookie, one_time):
        assert portal.authenticate(value.encode()) is None  # the front's portal side
        with pytest.raises(NotAuthenticated):
            decode_token(KEY, value)  # the API's (tests/api/test_ide_url.py: over HTTP)
    assert TicketDesk(KEY).redeem(cookie) is None  # and a cookie is no ticket


def test_a_ticket_of_a_revoked_session_is_401(harness: Harness) -> None:
    vmid = harness.add_route("alice")
    value = ticket("alice", vmid, sid="alice-logged-out")
    harness.call(harness.routes.revoke_session, "alice-logged-out")
    with ide_client(harness.front.ide_port) as client:
        assert exchange(client, value).status_code == 401


def test_a_cached_ide_cookie_is_refused_on_the_next_request_once_revoked(harness: Harness) -> None:
    vmid = harness.add_route("alice")
    cookie = ide_session("alice", vmid, sid="alice-cached")
    with ide_client(harness.front.ide_port) as client:  # one kept-alive connection throughout
        for _ in range(3):  # the first verifies the cookie; the others are served from memory
            assert client.get(f"/dev/{vmid}/ide/", headers=cookie).status_code == 200
        harness.call(harness.routes.revoke_session, "alice-cached")
        assert client.get(f"/dev/{vmid}/ide/", headers=cookie).status_code == 401


def test_a_cached_ide_cookie_is_refused_once_it_expires(harness: Harness) -> None:
    vmid = harness.add_route("alice")
    cookie = ide_session("alice", vmid, ttl_s=2)  # exp is whole seconds: 1..2 s from now
    with ide_client(harness.front.ide_port) as client:
        for _ in range(2):
            assert client.get(f"/dev/{vmid}/ide/", headers=cookie).status_code == 200
        wait_until(
            lambda: client.get(f"/dev/{vmid}/ide/", headers=cookie).status_code == 401,
            what="the expired IDE cookie refused",
        )


def test_admins_open_other_users_ides_only_with_admin_ide_access(harness: Harness) -> None:
    vmid = harness.add_route("alice")
    with ide_client(harness.front.ide_port) as client:
        assert exchange(client, ticket("root", vmid, admin=True)).status_code == 404
    with harness.other_front(admin_ide_access=True) as (front, routes):
        vmid = harness.add_route("alice", routes=routes)
        with ide_client(front.ide_port) as client:
            assert exchange(client, ticket("root", vmid, admin=True)).status_code == 303
            assert client.get(f"/dev/{vmid}/ide/").status_code == 200
            not_admin = ticket("bob", vmid)
            assert exchange(client, not_admin).status_code == 404


# ---------------------------------------------------------------- what each origin serves


@pytest.mark.parametrize(
    "path", ["/", "/login", "/api/dev", "/api/auth/me", "/artifacts/catalog.json", "/c/1/ide"]
)
def test_the_ide_origin_serves_nothing_but_ides(harness: Harness, path: str) -> None:
    relayed = len(harness.log.requests)
    with ide_client(harness.front.ide_port) as client:
        response = client.get(path, headers={"Authorization": f"Bearer {token('alice')}"})
    assert response.status_code == 404
    assert len(harness.log.requests) == relayed  # answered by the front, never the API


def test_a_host_named_ide_origin_is_told_apart_by_host(harness: Harness) -> None:
    with harness.other_front(ide_origin="http://ide.test") as (front, routes):
        vmid = harness.add_route("alice", routes=routes)
        with ide_client(front.port) as client:
            ide = {"Host": "ide.test"}
            assert client.get("/api/auth/me", headers=ide).status_code == 404
            assert client.get("/api/auth/me").json()["path"] == "/api/auth/me"  # the API
            value = ticket("alice", vmid)
            assert exchange(client, value, **ide).headers["location"] == f"/dev/{vmid}/ide/"
            page = client.get(f"/dev/{vmid}/ide/x", headers=ide)
            assert page.status_code == 200 and page.json()["path"] == "/x"


def test_the_wildcard_ide_origin_gives_each_container_its_own_host(harness: Harness) -> None:
    with harness.other_front(ide_origin="http://*.ide.test") as (front, routes):
        vmid = harness.add_route("alice", routes=routes)
        host = {"Host": f"{vmid}.ide.test"}
        with ide_client(front.port) as client:
            response = exchange(client, ticket("alice", vmid), **host)
            assert response.headers["location"] == "/"
            assert cookie_attributes(response)["path"] == "/"
            page = client.get("/api/dev?x=1", headers=host)  # the container's own path
            assert page.status_code == 200 and page.json()["path"] == "/api/dev?x=1"
            for other in ("ide.test", "x.ide.test", "0100.ide.test", f"{vmid}.a.ide.test"):
                assert client.get("/", headers={"Host": other}).status_code == 404, other


def test_the_portal_origin_no_longer_serves_the_ide(harness: Harness) -> None:
    vmid = harness.add_route("alice")
    bearer = {"Authorization": f"Bearer {token('alice')}"}
    with ide_client(harness.front.port) as client:
        page = client.get(f"/dev/{vmid}/ide/?folder=/w", headers=bearer)
        assert page.status_code == 303
        assert page.headers["location"] == f"/c/{vmid}/ide"  # the portal fetches a ticket there
        assert client.post(f"/dev/{vmid}/ide/x", headers=bearer).status_code == 404
        socket_upgrade = {**bearer, "Connection": "Upgrade", "Upgrade": "websocket"}
        assert client.get(f"/dev/{vmid}/ide/ws", headers=socket_upgrade).status_code == 404
    assert harness.seen(f"/dev/{vmid}") == []


# ---------------------------------------------------------------- response headers


@pytest.mark.parametrize("chunked", [False, True], ids=["scanned", "llhttp"])
def test_set_cookie_that_could_shadow_a_platform_cookie_is_stripped(
    harness: Harness, chunked: bool
) -> None:
    vmid = harness.add_route("alice")
    with ide_client(harness.front.ide_port) as client:
        response = client.get(
            f"/dev/{vmid}/ide/cookies",
            params={"chunked": "1"} if chunked else {},
            headers=ide_session("alice", vmid),
        )
    assert response.status_code == 200 and response.text == "ok"
    assert response.headers.get_list("set-cookie") == ["mine=1; Path=/"]
    api = httpx.get(f"http://127.0.0.1:{harness.front.port}/cookies", timeout=5)
    assert len(api.headers.get_list("set-cookie")) == 5  # the API's own cookies are its own


def test_ide_responses_carry_frame_ancestors_nosniff_and_a_referrer_policy(
    harness: Harness,
) -> None:
    with harness.other_front(public_origin="https://zlh.example") as (front, routes):
        vmid = harness.add_route("alice", routes=routes)
        with ide_client(front.ide_port) as client:
            response = client.get(f"/dev/{vmid}/ide/cookies", headers=ide_session("alice", vmid))
    policies = response.headers.get_list("content-security-policy")
    assert policies == ["default-src 'self'", "frame-ancestors 'self' https://zlh.example"]
    assert response.headers["x-content-type-options"] == "nosniff"
    assert response.headers["referrer-policy"] == "same-origin"


# ---------------------------------------------------------------- request targets


@pytest.mark.parametrize(
    "request_line",
    [b"GET http://127.0.0.1/api/dev HTTP/1.1", b"OPTIONS * HTTP/1.1"],
    ids=["absolute-form", "asterisk-form"],
)
def test_absolute_and_asterisk_form_targets_get_400_and_the_front_keeps_serving(
    harness: Harness, request_line: bytes
) -> None:
    for port in (harness.front.port, harness.front.ide_port):
        with socket.create_connection(("127.0.0.1", port), timeout=5) as sock:
            sock.sendall(request_line + b"\r\nHost: a\r\nConnection: close\r\n\r\n")
            answer = b""
            while data := sock.recv(65536):
                answer += data
        assert answer.startswith(b"HTTP/1.1 400 "), answer[:80]
        assert b"malformed request target" in answer
    assert httpx.get(f"http://127.0.0.1:{harness.front.port}/api/x", timeout=5).status_code == 200
