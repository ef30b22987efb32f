"""The front's HTTP behaviour under /dev/{vmid}/ide (on the IDE origin's port) and in front of
the API, end to end. The IDE origin itself (tickets, cookies, what it serves) is
test_ide_origin.py's."""

from __future__ import annotations

import socket
import time
from collections.abc import Iterator

import httpx
import jwt
import pytest
from proxy_kit import KEY, Harness, headers_of, ide_cookie, ide_session, token, wait_until

from zlh.proxy import Front, Principal, ProxySettings, Route, RouteTable


@pytest.fixture
def client(harness: Harness) -> Iterator[httpx.Client]:
    """A client of the IDE origin (the default front's second port)."""
    with httpx.Client(base_url=f"http://127.0.0.1:{harness.front.ide_port}", timeout=5) as c:
        yield c


def session(user: str, **kwargs: object) -> dict[str, str]:
    """A program's session on the IDE origin: a Bearer token (browsers hold the IDE cookie)."""
    return {"Authorization": f"Bearer {token(user, **kwargs)}"}  # type: ignore[arg-type]


def test_ide_without_trailing_slash_redirects_308_keeping_the_query(
    harness: Harness, client: httpx.Client
) -> None:
    vmid = harness.add_route("alice")
    response = client.get(f"/dev/{vmid}/ide?folder=/home/dev/workspace&x=1")
    assert response.status_code == 308
    assert response.headers["location"] == f"/dev/{vmid}/ide/?folder=/home/dev/workspace&x=1"


def test_shapes_under_dev_that_are_not_an_ide_path_get_404(client: httpx.Client) -> None:
    for path in ("/dev/", "/dev/abc/ide/", "/dev/100/other/", "/dev/0100/ide/", "/dev/1_0/ide/"):
        response = client.get(path, headers=session("alice"))
        assert response.status_code == 404, path
        assert response.json()["validations"] == []


def test_no_session_gets_401_in_the_error_envelope(harness: Harness, client: httpx.Client) -> None:
    vmid = harness.add_route("alice")
    response = client.get(f"/dev/{vmid}/ide/")
    assert response.status_code == 401
    body = response.json()
    assert set(body) == {"message", "detail", "validations"} and body["validations"] == []
    assert harness.seen(f"/dev/{vmid}") == []


def test_browser_without_session_is_sent_to_the_portal_page_that_fetches_a_ticket(
    harness: Harness, client: httpx.Client
) -> None:
    vmid = harness.add_route("alice")
    response = client.get(f"/dev/{vmid}/ide/?folder=/w", headers={"Accept": "text/html,*/*"})
    assert response.status_code == 303
    portal = f"http://127.0.0.1:{harness.front.port}"  # the second port's portal: same host
    assert response.headers["location"] == f"{portal}/c/{vmid}/ide"


@pytest.mark.parametrize(
    "bad_token",
    [
        pytest.param(token("alice", key=b"x" * 40), id="wrong-key"),
        pytest.param(token("alice", ttl_s=-10), id="expired"),
        pytest.param(
            jwt.encode({"sub": "alice", "sid": "s", "exp": 4102444800}, None, algorithm="none"),
            id="alg-none",
        ),
        pytest.param(
            jwt.encode({"sub": "alice", "exp": 4102444800}, KEY, algorithm="HS256"), id="no-sid"
        ),
        pytest.param(token("alice")[:-3] + "abc", id="tampered"),
        pytest.param("garbage", id="garbage"),
    ],
)
def test_invalid_tokens_are_refused_as_cookie_and_as_bearer(
    harness: Harness, client: httpx.Client, bad_token: str
) -> None:
    vmid = harness.add_route("alice")
    as_cookie = client.get(f"/dev/{vmid}/ide/", headers={"Cookie": f"zlh_ide={bad_token}"})
    as_bearer = client.get(f"/dev/{vmid}/ide/", headers={"Authorization": f"Bearer {bad_token}"})
    assert (as_cookie.status_code, as_bearer.status_code) == (401, 401)


def test_bearer_token_works_like_the_cookie(harness: Harness, client: httpx.Client) -> None:
    vmid = harness.add_route("alice")
    response = client.get(
        f"/dev/{vmid}/ide/x", headers={"Authorization": f"Bearer {token('alice')}"}
    )
    assert response.status_code == 200
    assert response.json()["path"] == "/x"


def test_other_users_container_is_the_same_404_as_an_absent_one(
    harness: Harness, client: httpx.Client
) -> None:
    vmid = harness.add_route("alice")
    not_mine = client.get(f"/dev/{vmid}/ide/", headers=session("bob"))
    harness.call(harness.routes.remove, vmid)
    absent = client.get(f"/dev/{vmid}/ide/", headers=session("bob"))
    assert not_mine.status_code == absent.status_code == 404
    assert not_mine.content == absent.content
    assert not_mine.json() == {"message": f"no container {vmid}", "detail": "", "validations": []}
    assert harness.seen(f"/dev/{vmid}") == []


def test_admin_opens_other_users_ides_only_with_admin_ide_access(
    harness: Harness, client: httpx.Client
) -> None:
    vmid = harness.add_route("alice")
    admin = session("root", admin=True)
    admin_cookie = {"Cookie": f"zlh_ide={ide_cookie('root', vmid, admin=True)}"}
    assert client.get(f"/dev/{vmid}/ide/who", headers=admin).status_code == 404
    assert client.get(f"/dev/{vmid}/ide/who", headers=admin_cookie).status_code == 404
    with harness.other_front(admin_ide_access=True) as (front, routes):
        vmid = harness.add_route("alice", routes=routes)
        admin_cookie = {"Cookie": f"zlh_ide={ide_cookie('root', vmid, admin=True)}"}
        base = f"http://127.0.0.1:{front.ide_port}/dev/{vmid}/ide"
        assert httpx.get(f"{base}/who", headers=admin, timeout=5).status_code == 200
        assert httpx.get(f"{base}/who", headers=admin_cookie, timeout=5).status_code == 200


def test_container_not_ready_answers_503_at_once_saying_why_and_links_the_portal(
    harness: Harness, client: httpx.Client
) -> None:
    vmid = harness.add_route("alice", ready=False, reason="code-server is not running")
    started = time.monotonic()
    response = client.get(f"/dev/{vmid}/ide/", headers=session("alice"))
    assert time.monotonic() - started < 3  # answered locally, never waits on the container
    assert response.status_code == 503
    assert response.headers["retry-after"] == "5"
    assert response.json()["detail"] == "code-server is not running"
    page = client.get(f"/dev/{vmid}/ide/", headers={**session("alice"), "Accept": "text/html"})
    assert page.status_code == 503 and "code-server is not running" in page.text
    assert page.headers["content-type"].startswith("text/html")
    assert '<meta http-equiv="refresh" content="5">' in page.text  # the IDE opens once ready
    # In the portal's look, linking back to the container's page there (the portal's origin:
    # the front's first port), and running nothing.
    portal = f"http://127.0.0.1:{harness.front.port}/"
    assert f'<a href="{portal}c/{vmid}">Container {vmid} in the portal</a>' in page.text
    assert f'<header><a href="{portal}">ZeroLagHub' in page.text
    assert page.headers["content-security-policy"].startswith("default-src 'none'")
    gone = client.get("/dev/99999/ide/", headers={**session("alice"), "Accept": "text/html"})
    assert gone.status_code == 404 and "http-equiv" not in gone.text  # nothing to wait for
    assert f'<a href="{portal}">Your containers</a>' in gone.text


def test_prefix_is_stripped_and_the_original_host_forwarded(
    harness: Harness, client: httpx.Client
) -> None:
    vmid = harness.add_route("alice")
    response = client.get(
        f"/dev/{vmid}/ide/static/out/x.js?v=1", headers={**session("alice"), "Host": "ide.example"}
    )
    seen = response.json()
    assert seen["path"] == "/static/out/x.js?v=1"
    headers = headers_of(seen)
    assert headers["host"] == "ide.example"
    assert headers["x-forwarded-host"] == "ide.example"
    assert headers["x-forwarded-proto"] == "http"
    assert headers["x-forwarded-for"] == "127.0.0.1"


def test_portal_cookie_and_authorization_never_reach_the_container(
    harness: Harness, client: httpx.Client
) -> None:
    vmid = harness.add_route("alice")
    jwt_token, ide = token("alice"), ide_cookie("alice", vmid)
    platform = (
        f"zlh_session={jwt_token}; __Host-zlh_session=x; __Secure-zlh_session=y; zlh_ide={ide}"
    )
    response = client.get(
        f"/dev/{vmid}/ide/echo",
        headers={"Cookie": f"a=1; {platform}; b=2", "Authorization": "Bearer junk"},
    )
    assert response.status_code == 200
    headers = headers_of(response.json())
    assert headers["cookie"] == "a=1; b=2"
    assert "authorization" not in headers
    assert jwt_token not in str(response.json()) and ide not in str(response.json())
    only_ide = client.get(f"/dev/{vmid}/ide/echo", headers=ide_session("alice", vmid))
    assert "cookie" not in headers_of(only_ide.json())


def test_spoofed_forwarded_headers_are_replaced(harness: Harness, client: httpx.Client) -> None:
    vmid = harness.add_route("alice")
    response = client.get(
        f"/dev/{vmid}/ide/echo",
        headers={
            **session("alice"),
            "X-Forwarded-For": "6.6.6.6",
            "X-Forwarded-Host": "evil.example",
            "Forwarded": "for=6.6.6.6",
        },
    )
    headers = headers_of(response.json())
    assert headers["x-forwarded-for"] == "127.0.0.1"
    assert headers["x-forwarded-host"] != "evil.example"
    assert "forwarded" not in headers


def test_the_api_gets_the_clients_forwarded_for_chain_with_the_peer_last(
    harness: Harness,
) -> None:
    """The API decides what of the chain to believe (its trusted_proxies); the peer comes last,
    so a client can never stand in for it."""
    portal = f"http://127.0.0.1:{harness.front.port}"
    with httpx.Client(base_url=portal, timeout=5) as client:
        response = client.get(
            "/api/echo",
            headers={"X-Forwarded-For": "6.6.6.6, 10.0.0.7", "Forwarded": "for=6.6.6.6"},
        )
        headers = headers_of(response.json())
        assert headers["x-forwarded-for"] == "6.6.6.6, 10.0.0.7, 127.0.0.1"
        assert "forwarded" not in headers
        assert headers_of(client.get("/api/echo").json())["x-forwarded-for"] == "127.0.0.1"


def test_proxied_responses_carry_security_headers(harness: Harness, client: httpx.Client) -> None:
    vmid = harness.add_route("alice")
    ide = client.get(f"/dev/{vmid}/ide/", headers=session("alice"))
    assert ide.headers["x-content-type-options"] == "nosniff"
    assert ide.headers["referrer-policy"] == "same-origin"
    assert ide.headers["content-security-policy"] == "frame-ancestors 'self'"
    assert ide.headers["set-cookie"] == "up=1; Path=/"  # the container's own cookies come back
    portal = httpx.get(f"http://127.0.0.1:{harness.front.port}/login", timeout=5)
    assert portal.headers["content-security-policy"] == "frame-ancestors 'self'"
    assert portal.headers["x-content-type-options"] == "nosniff"


def test_everything_else_goes_to_the_api_with_cookies_and_authorization(
    harness: Harness,
) -> None:
    response = httpx.post(
        f"http://127.0.0.1:{harness.front.port}/api/dev?x=1",
        timeout=5,
        headers={"Cookie": "zlh_session=abc; other=1", "Authorization": "Bearer abc"},
        json={"runtime": "node"},
    )
    assert response.status_code == 200
    seen = response.json()
    assert seen["path"] == "/api/dev?x=1" and seen["method"] == "POST"
    assert seen["body_len"] == len(b'{"runtime":"node"}')
    headers = headers_of(seen)
    assert headers["cookie"] == "zlh_session=abc; other=1"
    assert headers["authorization"] == "Bearer abc"


def test_api_upstream_on_a_unix_socket(harness: Harness) -> None:
    with harness.other_front(api_upstream=harness.unix_path) as (front, _):
        response = httpx.get(f"http://127.0.0.1:{front.port}/api/health", timeout=5)
    assert response.status_code == 200
    assert response.json()["path"] == "/api/health"


def test_revoked_session_and_revoked_user_are_refused_at_once(
    harness: Harness, client: httpx.Client
) -> None:
    vmid = harness.add_route("carol")
    for old in (session("carol", sid="carol-1"), ide_session("carol", vmid, sid="carol-1")):
        assert client.get(f"/dev/{vmid}/ide/", headers=old).status_code == 200
    harness.call(harness.routes.revoke_session, "carol-1")
    for old in (session("carol", sid="carol-1"), ide_session("carol", vmid, sid="carol-1")):
        assert client.get(f"/dev/{vmid}/ide/", headers=old).status_code == 401

    other = ide_session("carol", vmid, sid="carol-2")
    assert client.get(f"/dev/{vmid}/ide/", headers=other).status_code == 200
    harness.call(harness.routes.revoke_user, "carol")
    assert client.get(f"/dev/{vmid}/ide/", headers=other).status_code == 401


def test_route_changes_take_effect_on_the_next_request(
    harness: Harness, client: httpx.Client
) -> None:
    vmid = harness.add_route("dave")
    assert client.get(f"/dev/{vmid}/ide/", headers=session("dave")).status_code == 200
    moved = Route(owner_id="erin", host="127.0.0.1", port=harness.upstream_port, ready=True)
    harness.call(harness.routes.update, vmid, moved)
    assert client.get(f"/dev/{vmid}/ide/", headers=session("dave")).status_code == 404
    assert client.get(f"/dev/{vmid}/ide/", headers=session("erin")).status_code == 200
    harness.call(harness.routes.remove, vmid)
    assert client.get(f"/dev/{vmid}/ide/", headers=session("erin")).status_code == 404


def test_container_refusing_connections_gets_502_with_a_clear_body(
    harness: Harness, client: httpx.Client
) -> None:
    vmid = harness.add_route("alice")
    closed = Route(owner_id="alice", host="127.0.0.1", port=1, ready=True)
    harness.call(harness.routes.update, vmid, closed)
    response = client.get(f"/dev/{vmid}/ide/", headers=session("alice"))
    assert response.status_code == 502
    assert response.json()["message"] == f"code-server in container {vmid} refused the connection"


def test_container_not_answering_gets_504_after_the_read_timeout(harness: Harness) -> None:
    with harness.other_front(read_timeout_s=0.3) as (front, routes):
        vmid = harness.add_route("alice", routes=routes)
        started = time.monotonic()
        response = httpx.get(
            f"http://127.0.0.1:{front.ide_port}/dev/{vmid}/ide/slow?s=5",
            headers=session("alice"),
            timeout=5,
        )
    assert response.status_code == 504
    assert "did not answer in time" in response.json()["message"]
    assert time.monotonic() - started < 3


def test_upstream_connections_are_kept_alive_and_reused(
    harness: Harness, client: httpx.Client
) -> None:
    vmid = harness.add_route("alice")
    ports = {
        client.get(f"/dev/{vmid}/ide/n{i}", headers=session("alice")).json()["peer_port"]
        for i in range(20)
    }
    assert len(ports) == 1, f"the front opened {len(ports)} upstream connections for 20 requests"


def test_head_request_gets_headers_and_the_connection_stays_usable(
    harness: Harness, client: httpx.Client
) -> None:
    vmid = harness.add_route("alice")
    head = client.head(f"/dev/{vmid}/ide/big?size=100000", headers=session("alice"))
    assert head.status_code == 200 and head.headers["content-length"] == "100000"
    assert head.content == b""
    after = client.get(f"/dev/{vmid}/ide/big?size=10", headers=session("alice"))
    assert after.content == b"x" * 10


def test_stale_pooled_connection_is_retried_once_only_without_a_body(harness: Harness) -> None:
    """An upstream that drops every kept-alive connection at its second request (a restart
    between two requests): a GET succeeds on a fresh connection, a POST gets 502."""
    import asyncio

    async def second_request_kills(
        reader: asyncio.StreamReader, writer: asyncio.StreamWriter
    ) -> None:
        await reader.readuntil(b"\r\n\r\n")
        writer.write(b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok")
        await writer.drain()
        await reader.readuntil(b"\r\n\r\n")
        writer.close()

    server = harness.run(asyncio.start_server(second_request_kills, "127.0.0.1", 0))
    port = server.sockets[0].getsockname()[1]
    routes = RouteTable()
    try:
        with harness.other_front() as (front, routes):
            vmid = harness.add_route("alice", routes=routes)
            harness.call(routes.update, vmid, Route("alice", "127.0.0.1", port, ready=True))
            base = f"http://127.0.0.1:{front.ide_port}/dev/{vmid}/ide/"
            with httpx.Client(timeout=5, headers=session("alice")) as c:
                assert c.get(base).text == "ok"  # fresh connection, then pooled
                assert c.get(base).text == "ok"  # pooled one dies: retried on a fresh one
                assert c.post(base, content=b"data").status_code == 502  # no replay of bodies
    finally:
        server.close()


def test_chunked_upload_reaches_the_container_while_the_client_still_sends(
    harness: Harness, client: httpx.Client
) -> None:
    vmid = harness.add_route("alice")
    piece = b"u" * 256 * 1024

    def body() -> Iterator[bytes]:
        for i in range(1, 9):
            yield piece
            # The next piece only goes once the upstream has this one: a front that buffered
            # the body would never deliver it and this wait would fail.
            wait_until(
                lambda i=i: harness.log.upload_received >= i * len(piece),  # type: ignore[misc]
                what=f"piece {i} at the upstream",
            )

    response = client.post(f"/dev/{vmid}/ide/upload", content=body(), headers=session("alice"))
    assert response.json() == {"received": 8 * len(piece)}


def test_content_length_upload_is_streamed_too(harness: Harness, client: httpx.Client) -> None:
    vmid = harness.add_route("alice")
    piece = b"u" * 256 * 1024

    def body() -> Iterator[bytes]:
        for i in range(1, 5):
            yield piece
            wait_until(
                lambda i=i: harness.log.upload_received >= i * len(piece),  # type: ignore[misc]
                what=f"piece {i} at the upstream",
            )

    response = client.post(
        f"/dev/{vmid}/ide/upload",
        content=body(),
        headers={**session("alice"), "Content-Length": str(4 * len(piece))},
    )
    assert response.json() == {"received": 4 * len(piece)}


def test_response_body_streams_before_the_container_finishes(
    harness: Harness, client: httpx.Client
) -> None:
    vmid = harness.add_route("alice")
    harness.log.release.clear()
    received = 0
    with client.stream("GET", f"/dev/{vmid}/ide/stream?size=65536", headers=session("alice")) as r:
        for data in r.iter_raw():
            received += len(data)
            if received >= 65536:
                harness.log.release.set()  # only now does the upstream send the second half
    assert received == 2 * 65536
    assert r.headers["transfer-encoding"] == "chunked"


class BrokenAuthenticator:
    def authenticate(self, token: bytes) -> Principal | None:
        raise RuntimeError("database gone")


def test_a_failing_authenticator_gets_500_not_a_hang(harness: Harness) -> None:
    routes = RouteTable()
    front = Front(
        ProxySettings(), routes, BrokenAuthenticator(), f"127.0.0.1:{harness.upstream_port}"
    )
    harness.run(front.start_ide("127.0.0.1", 0))
    try:
        vmid = harness.add_route("alice", routes=routes)
        response = httpx.get(
            f"http://127.0.0.1:{front.ide_port}/dev/{vmid}/ide/",
            headers=session("alice"),
            timeout=5,
        )
        assert response.status_code == 500
    finally:
        harness.run(front.close())


def test_slow_client_pauses_the_container_instead_of_buffering_the_body(harness: Harness) -> None:
    vmid = harness.add_route("alice")
    size = 30_000_000
    cookie = f"zlh_ide={ide_cookie('alice', vmid)}".encode()
    with socket.create_connection(("127.0.0.1", harness.front.ide_port), timeout=10) as sock:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 64 * 1024)
        sock.sendall(
            b"GET /dev/%d/ide/big?size=%d HTTP/1.1\r\nHost: a\r\nCookie: %s\r\n\r\n"
            % (vmid, size, cookie)
        )

        def relay_state() -> tuple[bool, int]:
            """(upstream reading paused, bytes waiting in the front's client write buffer)."""
            for conn in harness.front._connections:
                current = conn._current
                exchange = current.handler if current is not None else None
                upstream = getattr(exchange, "upstream", None)
                if upstream is not None:
                    return (
                        not upstream.transport.is_reading(),
                        conn.transport.get_write_buffer_size(),
                    )
            return False, 0

        wait_until(lambda: harness.call(relay_state)[0], what="upstream paused by back-pressure")
        buffered = harness.call(relay_state)[1]
        assert buffered < 2_000_000, f"the front holds {buffered} bytes for a slow client"
        received = 0
        head, _, rest = sock.recv(65536).partition(b"\r\n\r\n")
        assert head.startswith(b"HTTP/1.1 200")
        received = len(rest)
        while received < size:
            data = sock.recv(1 << 20)
            assert data, f"connection closed after {received} of {size} bytes"
            received += len(data)
    assert received == size


def test_ide_page_loads_are_reported_once_each_not_assets_or_refusals(harness: Harness) -> None:
    opened: list[tuple[str, int]] = []
    routes = RouteTable()
    front = harness.start_front(
        routes, on_ide_open=lambda principal, vmid: opened.append((principal.user_id, vmid))
    )
    try:
        vmid = harness.add_route("alice", routes=routes)
        with httpx.Client(base_url=f"http://127.0.0.1:{front.ide_port}", timeout=5) as c:
            assert c.get(f"/dev/{vmid}/ide/", headers=session("alice")).status_code == 200
            assert (
                c.get(f"/dev/{vmid}/ide/static/app.js", headers=session("alice")).status_code == 200
            )
            assert c.get(f"/dev/{vmid}/ide/?folder=/w", headers=session("alice")).status_code == 200
            assert c.get(f"/dev/{vmid}/ide/", headers=session("bob")).status_code == 404
            assert c.get(f"/dev/{vmid}/ide/").status_code == 401
    finally:
        harness.run(front.close())
    assert opened == [("alice", vmid), ("alice", vmid)]
