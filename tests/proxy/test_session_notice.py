"""The IDE tab's session notice: the front appends its script to the IDE's first page and
answers, itself, whether the IDE cookie still opens the container. Chromium's side (the notice
appearing after sign-out) is tests/e2e/test_portal_ide.py."""

from __future__ import annotations

import pytest
from proxy_kit import PAGE, Harness, headers_of, ide_client, ide_session

from zlh.proxy.routes import RouteTable
from zlh.proxy.sessionnotice import SCRIPT_PATH

HTML = {"Accept": "text/html,application/xhtml+xml", "Accept-Encoding": "gzip, br"}


@pytest.mark.parametrize("framing", ["length", "chunked"])
def test_the_ide_page_ends_with_the_notice_script_however_it_is_framed(
    harness: Harness, framing: str
) -> None:
    vmid = harness.add_route("alice")
    with ide_client(harness.front.ide_port) as client:
        page = client.get(
            f"/dev/{vmid}/ide/",
            params={"html": framing, "folder": "/w"},
            headers={**HTML, **ide_session("alice", vmid)},
        )
    assert page.status_code == 200
    assert page.content.startswith(PAGE)
    tag = page.content[len(PAGE) :].decode()
    assert tag.startswith(f'<script src="{SCRIPT_PATH.decode()}"')
    assert f'data-state="/dev/{vmid}/_zlh/session"' in tag
    assert f'data-signin="/dev/{vmid}/ide/"' in tag
    port = harness.front.port  # the portal is the IDE origin's port - 1 here
    assert f'data-portal="http://127.0.0.1:{port}/"' in tag
    # Asked for uncompressed, so the tag can be appended as it is.
    seen = harness.seen(f"/?html={framing}")[-1]
    assert "accept-encoding" not in headers_of(seen)


@pytest.mark.parametrize(
    ("path", "headers"),
    [
        ("/?html=gzip", HTML),  # compressed: appending would corrupt it
        ("/", HTML),  # JSON, not a page
        ("/x?html=length", HTML),  # not the IDE's first page
        ("/?html=length", {"Accept": "*/*"}),  # not a page load
    ],
)
def test_anything_but_the_plain_ide_page_passes_untouched(
    harness: Harness, path: str, headers: dict[str, str]
) -> None:
    vmid = harness.add_route("alice")
    with ide_client(harness.front.ide_port) as client:
        response = client.get(
            f"/dev/{vmid}/ide{path}", headers={**headers, **ide_session("alice", vmid)}
        )
    assert response.status_code == 200
    assert b"<script" not in response.content
    if "html=" in path:
        assert response.content == PAGE


def test_the_session_state_follows_the_ide_cookie(harness: Harness) -> None:
    vmid = harness.add_route("alice")
    relayed = len(harness.log.requests)
    state = f"/dev/{vmid}/_zlh/session"
    with ide_client(harness.front.ide_port) as client:
        assert client.get(state, headers=ide_session("alice", vmid, sid="s1")).status_code == 204
        anonymous = client.get(state)
        assert anonymous.status_code == 401 and anonymous.json()["message"] == "session ended"
        other = harness.add_route("bob")
        assert client.get(state, headers=ide_session("bob", other)).status_code == 404
        harness.call(harness.routes.revoke_session, "s1")
        assert client.get(state, headers=ide_session("alice", vmid, sid="s1")).status_code == 401
        harness.call(harness.routes.remove, vmid)
        assert client.get(state, headers=ide_session("alice", vmid, sid="s2")).status_code == 404
    assert len(harness.log.requests) == relayed  # the front's own answers, no container's


def test_a_container_cannot_answer_for_the_notice_in_the_wildcard_form(harness: Harness) -> None:
    with harness.other_front(ide_origin="http://*.ide.test") as (front, routes):
        vmid = harness.add_route("alice", routes=routes)
        host = {"Host": f"{vmid}.ide.test", **ide_session("alice", vmid)}
        relayed = len(harness.log.requests)
        with ide_client(front.port) as client:
            script = client.get(SCRIPT_PATH.decode(), headers=host)
            state = client.get("/_zlh/session", headers=host)
            page = client.get("/", params={"html": "chunked"}, headers={**HTML, **host})
        assert len(harness.log.requests) == relayed + 1  # only the page went to the container
    assert script.status_code == 200
    assert script.headers["content-type"].startswith("text/javascript")
    assert b"session" in script.content and script.headers["x-content-type-options"] == "nosniff"
    assert state.status_code == 204
    assert 'data-state="/_zlh/session" data-signin="/"' in page.text


def test_the_ide_pages_use_is_reported_for_idle_stop_only_with_an_ide_cookie_that_opens_it(
    harness: Harness,
) -> None:
    used: list[tuple[int, str]] = []
    routes = RouteTable()
    front = harness.start_front(routes, on_activity=lambda vmid, kind: used.append((vmid, kind)))
    try:
        vmid = harness.add_route("alice", routes=routes)
        other = harness.add_route("bob", routes=routes)
        state = f"/dev/{vmid}/_zlh/session"
        alice = ide_session("alice", vmid)
        relayed = len(harness.log.requests)
        with ide_client(front.ide_port) as client:
            for kind in ("terminal", "ide"):
                reported = client.post(state, params={"activity": kind}, headers=alice)
                assert reported.status_code == 204
            assert client.post(state, params={"activity": "cpu"}, headers=alice).status_code == 404
            assert client.post(state, headers=alice).status_code == 404  # no activity named
            assert client.post(state, params={"activity": "ide"}).status_code == 401
            foreign = ide_session("alice", other)  # a cookie of another container's path
            bobs = f"/dev/{other}/_zlh/session"
            assert client.post(bobs, params={"activity": "ide"}, headers=foreign).status_code == 404
            assert client.get(state, headers=alice).status_code == 204  # asking is not using
    finally:
        harness.run(front.close())
    assert used == [(vmid, "terminal"), (vmid, "ide")]
    assert len(harness.log.requests) == relayed  # the front's own answers, no container's


def test_a_browser_opening_a_stopped_containers_ide_is_sent_to_the_portal_to_start_it(
    harness: Harness,
) -> None:
    vmid = harness.add_route("alice", ready=False, reason="stopped", stopped=True)
    with ide_client(harness.front.ide_port) as client:
        page = client.get(f"/dev/{vmid}/ide/", headers={**HTML, **ide_session("alice", vmid)})
        program = client.get(f"/dev/{vmid}/ide/", headers=ide_session("alice", vmid))
    assert page.status_code == 303
    port = harness.front.port
    assert page.headers["location"] == f"http://127.0.0.1:{port}/c/{vmid}/ide"
    assert program.status_code == 503  # not a page load: says why, starts nothing
    assert "stopped" in program.json()["detail"]
