"""Port previews through the front: ``/dev/{vmid}/port/{port}/`` on the IDE origin (and
``{port}-{vmid}.<domain>`` with a wildcard one), both prefix modes, public previews, and the
attacks: another user, another container's cookie, signed out, refused ports, the portal's
origin, a foreign Origin, and a revoked public preview's open WebSockets."""

from __future__ import annotations

import dataclasses
from collections.abc import Iterator
from urllib.parse import parse_qs, urlsplit

import httpx
import pytest
from proxy_kit import Harness, UpstreamLog, headers_of, ide_client, ide_session, ticket, token
from test_websocket import close_code_within
from websockets.exceptions import InvalidStatus
from websockets.sync.client import connect

from zlh.ports import AGENT_PORT, CODE_SERVER_PORT
from zlh.proxy import RouteTable


@pytest.fixture
def app(harness: Harness) -> Iterator[tuple[int, UpstreamLog]]:
    """A dev server on another port of the container (the default upstream is code-server)."""
    with harness.other_upstream() as found:
        yield found


def set_public(harness: Harness, vmid: int, *ports: int, routes: RouteTable | None = None) -> None:
    table = harness.routes if routes is None else routes
    route = harness.call(table.get, vmid)
    assert route is not None
    harness.call(table.update, vmid, dataclasses.replace(route, public_ports=frozenset(ports)))


def preview(vmid: int, port: int, rest: str = "") -> str:
    return f"/dev/{vmid}/port/{port}/{rest}"


def seen_by(log: UpstreamLog) -> list[str]:
    with log.lock:
        return [r["path"] for r in log.requests]


# ---------------------------------------------------------------- modes


def test_the_owner_reaches_the_app_with_the_prefix_stripped_and_no_platform_credentials(
    harness: Harness, app: tuple[int, UpstreamLog]
) -> None:
    port, _ = app
    vmid = harness.add_route("alice")
    cookies = ide_session("alice", vmid)["Cookie"] + f"; zlh_session={token('alice')}; mine=1"
    with ide_client(harness.front.ide_port) as client:
        answer = client.get(
            preview(vmid, port, "hello?x=1"),
            headers={"Cookie": cookies, "Authorization": f"Bearer {token('alice')}"},
        )
    assert answer.status_code == 200
    assert answer.json()["path"] == "/hello?x=1"
    sent = headers_of(answer.json())
    assert sent["cookie"] == "mine=1"  # the IDE and portal cookies never reach the app
    assert "authorization" not in sent
    assert answer.headers["x-content-type-options"] == "nosniff"
    assert "sandbox" not in answer.headers["content-security-policy"]


def test_the_prefix_kept_mode_is_chosen_once_and_neither_flag_nor_cookie_reaches_the_app(
    harness: Harness, app: tuple[int, UpstreamLog]
) -> None:
    port, log = app
    vmid = harness.add_route("alice")
    base = preview(vmid, port)
    with ide_client(harness.front.ide_port) as client:
        client.cookies.set("zlh_ide", ide_session("alice", vmid)["Cookie"].split("=", 1)[1])
        chosen = client.get(base + "page?a=1&zlh-prefix=keep&b=2")
        assert chosen.status_code == 303
        assert chosen.headers["location"] == base + "page?a=1&b=2"
        assert f"zlh_prefix=keep; Path={base}; HttpOnly" in chosen.headers["set-cookie"]
        kept = client.get(base + "page?a=1&b=2")  # the jar sends the mode cookie back
        assert kept.json()["path"] == base + "page?a=1&b=2"
        assert "zlh_prefix" not in headers_of(kept.json()).get("cookie", "")
        assert client.get(base + "x?zlh-prefix=strip").status_code == 303  # back to stripped
        assert client.get(base + "x").json()["path"] == "/x"
        bad = client.get(base + "x?zlh-prefix=sideways")
        assert bad.status_code == 400 and "keep or strip" in bad.json()["message"]
    assert all("zlh-prefix" not in path for path in seen_by(log))


def test_a_preview_without_its_slash_is_redirected_to_it(harness: Harness) -> None:
    vmid = harness.add_route("alice")
    with ide_client(harness.front.ide_port) as client:
        answer = client.get(f"/dev/{vmid}/port/5173?q=1")
    assert answer.status_code == 308
    assert answer.headers["location"] == f"/dev/{vmid}/port/5173/?q=1"


def test_an_active_preview_counts_as_activity(
    harness: Harness, app: tuple[int, UpstreamLog]
) -> None:
    port, _ = app
    seen: list[tuple[int, str]] = []
    with harness.other_front(on_activity=lambda v, k: seen.append((v, k))) as (front, routes):
        vmid = harness.add_route("alice", routes=routes)
        with ide_client(front.ide_port) as client:
            for _ in range(3):  # a page and its assets: told once, not per request
                answer = client.get(preview(vmid, port), headers=ide_session("alice", vmid))
                assert answer.is_success
            assert client.get(preview(vmid, port)).status_code == 404  # signed out: no use
    assert seen == [(vmid, "preview")]


# ---------------------------------------------------------------- attacks


def test_another_user_and_another_containers_cookie_get_404(
    harness: Harness, app: tuple[int, UpstreamLog]
) -> None:
    port, log = app
    vmid = harness.add_route("alice")
    also_alices = harness.add_route("alice")
    bobs = harness.add_route("bob")
    with ide_client(harness.front.ide_port) as client:
        for headers in (
            ide_session("bob", vmid),  # a forged claim of another container is still bob's
            {"Cookie": ide_session("bob", bobs)["Cookie"]},
            ide_session("alice", also_alices),  # her cookie of another container
            {"Authorization": f"Bearer {token('bob')}"},
        ):
            answer = client.get(preview(vmid, port), headers=headers)
            assert answer.status_code == 404, headers
    assert seen_by(log) == []


def test_signed_out_is_404_and_a_forged_cookie_too(
    harness: Harness, app: tuple[int, UpstreamLog]
) -> None:
    port, log = app
    vmid = harness.add_route("alice")
    forged = ide_session("alice", vmid)["Cookie"][:-4] + "AAAA"
    with ide_client(harness.front.ide_port) as client:
        for headers in ({}, {"Cookie": forged}, {"Accept": "text/html"}):
            assert client.get(preview(vmid, port), headers=headers).status_code == 404
        assert client.get(f"/dev/999999/port/{port}/").status_code == 404  # same for none
    assert seen_by(log) == []


@pytest.mark.parametrize("port", [80, 1023, AGENT_PORT, CODE_SERVER_PORT, 70000])
def test_low_and_platform_ports_are_refused_with_a_clear_page(harness: Harness, port: int) -> None:
    vmid = harness.add_route("alice")
    with ide_client(harness.front.ide_port) as client:
        answer = client.get(preview(vmid, port), headers=ide_session("alice", vmid))
        page = client.get(
            preview(vmid, port), headers={**ide_session("alice", vmid), "Accept": "text/html"}
        )
    assert answer.status_code == 403
    assert "cannot be previewed" in answer.json()["detail"]
    assert "1024..65535" in page.text and page.headers["content-type"].startswith("text/html")


def test_the_containers_own_code_server_port_is_refused(harness: Harness) -> None:
    vmid = harness.add_route("alice")  # its code-server listens on the harness's upstream port
    with ide_client(harness.front.ide_port) as client:
        answer = client.get(
            preview(vmid, harness.upstream_port), headers=ide_session("alice", vmid)
        )
    assert answer.status_code == 403


def test_the_portal_origin_serves_no_preview(
    harness: Harness, app: tuple[int, UpstreamLog]
) -> None:
    port, log = app
    vmid = harness.add_route("alice", public_ports=frozenset({port}))
    bearer = {"Authorization": f"Bearer {token('alice')}", "Accept": "text/html"}
    with ide_client(harness.front.port) as client:
        assert client.get(preview(vmid, port), headers=bearer).status_code == 404
        assert client.get(preview(vmid, port)).status_code == 404
    assert seen_by(log) == []


def test_a_stopped_containers_preview_sends_its_owners_browser_to_start_it_and_back(
    harness: Harness, app: tuple[int, UpstreamLog]
) -> None:
    port, _ = app
    with harness.other_front(public_origin="http://portal.test") as (front, routes):
        vmid = harness.add_route("alice", routes=routes, ready=False, stopped=True)
        with ide_client(front.ide_port) as client:
            headers = {**ide_session("alice", vmid), "Accept": "text/html"}
            page = client.get(preview(vmid, port, "app?x=1&zlh-prefix=keep"), headers=headers)
            program = client.get(preview(vmid, port), headers=ide_session("alice", vmid))
    assert page.status_code == 303
    location = urlsplit(page.headers["location"])
    assert location.netloc == "portal.test" and location.path == f"/c/{vmid}/ide"
    query = parse_qs(location.query)
    assert query == {"port": [str(port)], "next": [preview(vmid, port, "app?x=1&zlh-prefix=keep")]}
    assert program.status_code == 503


def test_the_owners_websocket_needs_the_ide_origin_and_reaches_the_app(
    harness: Harness, app: tuple[int, UpstreamLog]
) -> None:
    port, _ = app
    vmid = harness.add_route("alice")
    url = f"ws://127.0.0.1:{harness.front.ide_port}{preview(vmid, port, 'ws')}"
    cookie = ide_session("alice", vmid)
    with pytest.raises(InvalidStatus) as refused:
        connect(url, additional_headers=cookie, origin="http://evil.test", open_timeout=5)  # type: ignore[arg-type]
    assert refused.value.response.status_code == 403
    own = f"http://127.0.0.1:{harness.front.ide_port}"
    with connect(url, additional_headers=cookie, origin=own, open_timeout=5) as ws:  # type: ignore[arg-type]
        ws.send("hot reload")
        assert ws.recv(timeout=5) == "hot reload"


# ---------------------------------------------------------------- public previews


def test_a_public_preview_opens_signed_out_sandboxed_and_private_again_is_404(
    harness: Harness, app: tuple[int, UpstreamLog]
) -> None:
    port, _ = app
    vmid = harness.add_route("alice")
    with ide_client(harness.front.ide_port) as client:
        assert client.get(preview(vmid, port)).status_code == 404  # never public by default
        set_public(harness, vmid, port)
        page = client.get(preview(vmid, port, "p"), headers={"Cookie": "zlh_session=x; a=1"})
        assert page.status_code == 200 and page.json()["path"] == "/p"
        assert headers_of(page.json())["cookie"] == "a=1"
        # Anyone's code on an origin other containers' IDEs share: an opaque origin.
        assert "sandbox allow-scripts" in page.headers["content-security-policy"]
        other = harness.add_route("alice")
        assert client.get(preview(other, port)).status_code == 404  # that port, that container
        set_public(harness, vmid)
        assert client.get(preview(vmid, port)).status_code == 404


def test_making_a_preview_private_closes_its_visitors_websockets_not_the_owners(
    harness: Harness, app: tuple[int, UpstreamLog]
) -> None:
    port, _ = app
    vmid = harness.add_route("alice", public_ports=frozenset({port}))
    url = f"ws://127.0.0.1:{harness.front.ide_port}{preview(vmid, port, 'ws')}"
    own = f"http://127.0.0.1:{harness.front.ide_port}"
    # A public preview carries nobody's credentials: any origin may open its sockets.
    with (
        connect(url, origin="http://elsewhere.test", open_timeout=5) as visitor,  # type: ignore[arg-type]
        connect(
            url, additional_headers=ide_session("alice", vmid), origin=own, open_timeout=5
        ) as owner,  # type: ignore[arg-type]
    ):
        visitor.send("hi")
        assert visitor.recv(timeout=5) == "hi"
        set_public(harness, vmid)
        code, reason, _ = close_code_within(visitor, 5)
        assert (code, reason) == (1008, "preview not public")
        owner.send("still here")
        assert owner.recv(timeout=5) == "still here"


# ---------------------------------------------------------------- tickets and the wildcard form


def test_a_ticket_lands_on_the_preview_it_was_asked_for(
    harness: Harness, app: tuple[int, UpstreamLog]
) -> None:
    port, _ = app
    vmid = harness.add_route("alice")
    target = preview(vmid, port, "app?x=1")
    with ide_client(harness.front.ide_port) as client:
        landed = client.get("/_zlh/auth", params={"ticket": ticket("alice", vmid), "next": target})
        assert landed.status_code == 303 and landed.headers["location"] == target
        assert client.get(target).json()["path"] == "/app?x=1"
        for bad in (
            "//evil.test/",
            "/\\evil.test",
            f"/dev/{vmid}/ide/",
            "/dev/1/port/5173/",
            f"/dev/{vmid}/port/1/../../../x",
            "https://evil.test/",
        ):
            refused = client.get(
                "/_zlh/auth", params={"ticket": ticket("alice", vmid), "next": bad}
            )
            assert refused.status_code == 400, bad
            assert "set-cookie" not in refused.headers


def test_the_wildcard_form_serves_each_preview_at_the_root_of_its_own_host(
    harness: Harness, app: tuple[int, UpstreamLog]
) -> None:
    port, log = app
    with harness.other_front(ide_origin="http://*.ide.test") as (front, routes):
        vmid = harness.add_route("alice", routes=routes)
        own = {"Host": f"{port}-{vmid}.ide.test"}
        with ide_client(front.port) as client:
            assert client.get("/", headers=own).status_code == 404  # no cookie for this host yet
            landed = client.get(
                "/_zlh/auth",
                params={"ticket": ticket("alice", vmid), "next": "/a?b=1"},
                headers=own,
            )
            assert landed.status_code == 303 and landed.headers["location"] == "/a?b=1"
            assert "Path=/;" in landed.headers["set-cookie"]
            client.cookies.clear()  # the jar knows no Host headers: send the cookie by hand
            cookie = {"Cookie": landed.headers["set-cookie"].split(";")[0]}
            assert client.get("/a?b=1", headers={**own, **cookie}).json()["path"] == "/a?b=1"
            kept = client.get(preview(vmid, port, "x"), headers={**own, **cookie})
            assert kept.json()["path"] == preview(vmid, port, "x")  # a base-path app's URL
            wrong = client.get(
                "/_zlh/auth",
                params={"ticket": ticket("alice", vmid)},
                headers={"Host": f"{port}-{vmid + 1}.ide.test"},
            )
            assert wrong.status_code == 404
            for label in ("0-1", f"{port}-0{vmid}", f"-{vmid}", f"{port}-", f"{port}-x"):
                answer = client.get("/", headers={"Host": f"{label}.ide.test", **cookie})
                assert answer.status_code == 404, label
            refused = client.get("/", headers={"Host": f"80-{vmid}.ide.test", **cookie})
            assert refused.status_code == 403
        set_public(harness, vmid, port, routes=routes)
        with ide_client(front.port) as stranger:
            page = stranger.get("/", headers=own)
            assert page.status_code == 200
            # Its own origin: no sandbox needed, nothing else lives there.
            assert "sandbox" not in page.headers["content-security-policy"]
    assert "/" in seen_by(log)


def test_a_public_preview_takes_a_form_post_from_anyone(
    harness: Harness, app: tuple[int, UpstreamLog]
) -> None:
    port, _ = app
    vmid = harness.add_route("alice", public_ports=frozenset({port}))
    with httpx.Client(base_url=f"http://127.0.0.1:{harness.front.ide_port}", timeout=5) as c:
        assert c.post(preview(vmid, port, "form"), content=b"x=1").json()["body_len"] == 3


def test_a_running_container_without_code_server_still_serves_its_previews(
    harness: Harness, app: tuple[int, UpstreamLog]
) -> None:
    port, _ = app
    vmid = harness.add_route("alice", ready=False, reason="code-server is not running")
    route = harness.call(harness.routes.get, vmid)
    harness.call(harness.routes.update, vmid, dataclasses.replace(route, running=True))
    with ide_client(harness.front.ide_port) as client:
        assert client.get(preview(vmid, port), headers=ide_session("alice", vmid)).is_success
        assert (
            client.get(f"/dev/{vmid}/ide/", headers=ide_session("alice", vmid)).status_code == 503
        )
