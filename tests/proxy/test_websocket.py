"""WebSockets through the front with a real client: auth, Origin, splice, revocation, idleness."""

from __future__ import annotations

import itertools
import re
import socket
import time
from collections.abc import Callable

import pytest
from hypothesis import given
from hypothesis import strategies as st
from proxy_kit import Harness, headers_of, ide_cookie, token, wait_until
from websockets.exceptions import ConnectionClosed, InvalidStatus
from websockets.sync.client import ClientConnection, connect

from zlh.proxy import Route
from zlh.proxy.websocket import FrameTracker, close_frame


def open_ws(
    port: int,
    path: str,
    *,
    user: str | None = "alice",
    origin: str | None = None,
    ttl_s: float = 3600,
    sid: str = "",
    admin: bool = False,
) -> ClientConnection:
    """A browser's socket: to an IDE (``/dev/<vmid>/...``) with its IDE cookie, to the API with
    the portal's session cookie."""
    headers = {}
    ide = re.match(r"/dev/(\d+)/", path)
    if user is not None and ide is not None:
        value = ide_cookie(user, int(ide[1]), ttl_s=ttl_s, sid=sid, admin=admin)
        headers["Cookie"] = f"zlh_ide={value}; b=2"
    elif user is not None:
        headers["Cookie"] = f"zlh_session={token(user, ttl_s=ttl_s, sid=sid, admin=admin)}; b=2"
    return connect(
        f"ws://127.0.0.1:{port}{path}",
        additional_headers=headers,
        origin=origin,  # type: ignore[arg-type]
        ping_interval=None,  # the front must keep an idle tunnel without any traffic
        open_timeout=5,
        max_size=None,
    )


def refused_status(port: int, path: str, **kwargs: object) -> int:
    with pytest.raises(InvalidStatus) as refused:
        open_ws(port, path, **kwargs)  # type: ignore[arg-type]
    return refused.value.response.status_code


def close_code_within(ws: ClientConnection, seconds: float) -> tuple[int, str, float]:
    started = time.monotonic()
    with pytest.raises(ConnectionClosed) as closed:
        ws.recv(timeout=seconds)
    assert closed.value.rcvd is not None, "no close frame received (connection just dropped)"
    return closed.value.rcvd.code, closed.value.rcvd.reason, time.monotonic() - started


def test_text_and_binary_echo_and_the_container_never_sees_the_ide_cookie(
    harness: Harness,
) -> None:
    vmid = harness.add_route("alice")
    port = harness.front.ide_port
    with open_ws(port, f"/dev/{vmid}/ide/ws", origin=f"http://127.0.0.1:{port}") as ws:
        ws.send("hello")
        assert ws.recv(timeout=5) == "hello"
        ws.send(b"\x00" * 70000)
        assert ws.recv(timeout=5) == b"\x00" * 70000
        big = bytes(range(256)) * 20000  # 5 MB: exercises back-pressure both ways
        ws.send(big)
        assert ws.recv(timeout=10) == big
        pong = ws.ping(b"p")
        assert pong.wait(5)
    handshake = harness.seen("/ws")[-1]
    headers = headers_of(handshake)
    assert headers["cookie"] == "b=2"
    assert "zlh_ide" not in str(handshake)
    assert headers["host"] == f"127.0.0.1:{port}"
    assert headers["upgrade"].lower() == "websocket"


def test_close_code_and_reason_pass_through(harness: Harness) -> None:
    vmid = harness.add_route("alice")
    with open_ws(harness.front.ide_port, f"/dev/{vmid}/ide/ws") as ws:
        ws.send("close:4000:see you")
        assert close_code_within(ws, 5)[:2] == (4000, "see you")


def test_the_front_lets_go_of_tunnels_once_they_end(harness: Harness) -> None:
    vmid = harness.add_route("alice")
    front = harness.front
    open_tunnels = front._tunnels  # what close() terminates; must not grow for ever
    with (
        open_ws(front.ide_port, f"/dev/{vmid}/ide/ws") as ide,
        open_ws(front.port, "/api/ws", user=None) as api,
    ):
        for ws in (ide, api):
            ws.send("up")
            assert ws.recv(timeout=5) == "up"
        assert harness.call(len, open_tunnels) == 2
    wait_until(lambda: harness.call(len, open_tunnels) == 0, what="tunnels forgotten")


def test_foreign_origin_is_refused_and_own_origins_accepted(harness: Harness) -> None:
    vmid = harness.add_route("alice")
    port, ide_port = harness.front.port, harness.front.ide_port
    path = f"/dev/{vmid}/ide/ws"
    assert refused_status(ide_port, path, origin="https://evil.example") == 403
    assert refused_status(ide_port, path, origin="null") == 403
    assert refused_status(port, "/api/ws", origin="https://evil.example") == 403
    with open_ws(ide_port, path, origin=f"http://127.0.0.1:{ide_port}") as ws:
        ws.send("same host")
        assert ws.recv(timeout=5) == "same host"
    with harness.other_front(public_origin="https://zlh.example") as (front, routes):
        with open_ws(front.port, "/api/ws", user=None, origin="https://zlh.example") as ws:
            ws.send("portal origin")
            assert ws.recv(timeout=5) == "portal origin"
        # The portal's origin is not the IDE's: its pages have no business in an IDE socket,
        # and the IDE's pages none in the API's.
        vmid = harness.add_route("alice", routes=routes)
        path = f"/dev/{vmid}/ide/ws"
        assert refused_status(front.ide_port, path, origin="https://zlh.example") == 403
        ide_origin = f"http://127.0.0.1:{front.ide_port}"
        assert refused_status(front.port, "/api/ws", user=None, origin=ide_origin) == 403


def test_websocket_is_checked_like_http(harness: Harness) -> None:
    vmid = harness.add_route("alice")
    waiting = harness.add_route("alice", ready=False, reason="still provisioning")
    port = harness.front.ide_port
    assert refused_status(port, f"/dev/{vmid}/ide/ws", user=None) == 401
    assert refused_status(port, f"/dev/{vmid}/ide/ws", user="bob") == 404
    assert refused_status(port, f"/dev/{waiting}/ide/ws") == 503
    assert harness.seen(f"/dev/{vmid}") == []


def test_api_websockets_are_relayed_too(harness: Harness) -> None:
    with open_ws(harness.front.port, "/api/ws", user=None) as ws:
        ws.send("console")
        assert ws.recv(timeout=5) == "console"


def _revoke_session(h: Harness, vmid: int, user: str) -> None:
    h.routes.revoke_session(f"sid-{vmid}")


def _revoke_user(h: Harness, vmid: int, user: str) -> None:
    h.routes.revoke_user(user)


def _remove_container(h: Harness, vmid: int, user: str) -> None:
    h.routes.remove(vmid)


def _transfer_container(h: Harness, vmid: int, user: str) -> None:
    h.routes.update(vmid, Route("mallory", "127.0.0.1", h.upstream_port, ready=True))


@pytest.mark.parametrize(
    "revoke", [_revoke_session, _revoke_user, _remove_container, _transfer_container]
)
def test_losing_access_closes_the_open_ide_websocket_with_a_close_frame(
    harness: Harness, revoke: Callable[[Harness, int, str], None]
) -> None:
    user = f"user-{revoke.__name__}"  # revoke_user refuses this user's older tokens for good
    vmid = harness.add_route(user)
    with open_ws(harness.front.ide_port, f"/dev/{vmid}/ide/ws", user=user, sid=f"sid-{vmid}") as ws:
        ws.send("before")
        assert ws.recv(timeout=5) == "before"
        harness.call(revoke, harness, vmid, user)
        code, reason, seconds = close_code_within(ws, 5)
    assert code == 1008 and reason
    assert seconds < 5
    wait_until(lambda: harness.call(harness.routes.tunnel_count) == 0, what="tunnel forgotten")


def test_admin_tunnel_survives_a_transfer_that_closes_the_old_owners(harness: Harness) -> None:
    with harness.other_front(admin_ide_access=True) as (front, routes):
        vmid = harness.add_route("alice", routes=routes)
        port = front.ide_port
        with (
            open_ws(port, f"/dev/{vmid}/ide/ws") as owner,
            open_ws(port, f"/dev/{vmid}/ide/ws", user="root", admin=True) as admin,
        ):
            for ws in (owner, admin):
                ws.send("x")
                assert ws.recv(timeout=5) == "x"
            moved = Route("mallory", "127.0.0.1", harness.upstream_port, ready=True)
            harness.call(routes.update, vmid, moved)
            assert close_code_within(owner, 5)[0] == 1008
            admin.send("still here")
            assert admin.recv(timeout=5) == "still here"


def test_tunnel_closes_with_4401_when_the_session_expires(harness: Harness) -> None:
    vmid = harness.add_route("alice")
    # exp is whole seconds: 2..3 s from now, room for the handshake on a loaded machine
    with open_ws(harness.front.ide_port, f"/dev/{vmid}/ide/ws", ttl_s=3) as ws:
        code, reason, _ = close_code_within(ws, 6)
    assert (code, reason) == (4401, "session expired")


def test_idle_websocket_outlives_every_idle_window(harness: Harness) -> None:
    # Short windows, but not so short that a loaded machine misses one while the WebSocket
    # handshake itself is still on its way (0.2 s did, once, in a full run).
    windows = dict(
        keepalive_timeout_s=0.8,
        upstream_idle_timeout_s=0.8,
        header_timeout_s=0.8,
        read_timeout_s=0.8,
    )
    with harness.other_front(**windows) as (front, routes):
        vmid = harness.add_route("alice", routes=routes)
        with open_ws(front.ide_port, f"/dev/{vmid}/ide/ws") as ws:
            ws.send("hi")
            assert ws.recv(timeout=5) == "hi"
            # The mechanism is live on this front: an idle HTTP connection gets closed...
            with socket.create_connection(("127.0.0.1", front.port), timeout=5) as idle:
                idle.sendall(b"GET /api/x HTTP/1.1\r\nHost: a\r\n\r\n")
                while idle.recv(65536):
                    pass
            # ...while the WebSocket, silent for many times every window, still works.
            time.sleep(3.0)  # the condition under test: idleness, not synchronisation
            ws.send("still open")
            assert ws.recv(timeout=5) == "still open"


# ---------------------------------------------------------------- frame boundaries


def frame(payload_len: int, masked: bool) -> bytes:
    if payload_len < 126:
        header = bytes((0x82, payload_len | (0x80 if masked else 0)))
    elif payload_len < 65536:
        header = bytes((0x82, 126 | (0x80 if masked else 0))) + payload_len.to_bytes(2, "big")
    else:
        header = bytes((0x82, 127 | (0x80 if masked else 0))) + payload_len.to_bytes(8, "big")
    return header + (b"mask" if masked else b"") + b"p" * payload_len


@given(
    frames=st.lists(
        st.tuples(st.sampled_from([0, 1, 125, 126, 127, 65535, 65536, 70000]), st.booleans()),
        min_size=1,
        max_size=6,
    ),
    cuts=st.lists(st.integers(min_value=0, max_value=300000), max_size=12),
)
def test_frame_tracker_knows_every_boundary_however_reads_are_cut(
    frames: list[tuple[int, bool]], cuts: list[int]
) -> None:
    stream = b"".join(frame(n, m) for n, m in frames)
    boundaries, offset = {0}, 0
    for n, m in frames:
        offset += len(frame(n, m))
        boundaries.add(offset)
    points = sorted({0, len(stream), *(c for c in cuts if c < len(stream))})
    tracker = FrameTracker()
    for start, end in itertools.pairwise(points):
        assert tracker.feed(stream[start:end]) == end - start
        assert tracker.at_boundary == (end in boundaries)

    stopper = FrameTracker()
    first_cut = points[1] if len(points) > 1 else len(stream)
    stopper.feed(stream[:1])
    consumed = 1 + stopper.feed(stream[1:first_cut], stop=True)
    expected = min(b for b in boundaries if b >= 1)
    assert consumed == min(expected, first_cut)


def test_close_frame_is_an_unmasked_close_with_code_and_reason() -> None:
    assert close_frame(1008, "session revoked") == b"\x88\x11\x03\xf0session revoked"


def test_a_guest_opens_a_shared_ide_and_is_closed_out_when_the_share_is_taken_back(
    harness: Harness,
) -> None:
    vmid = harness.add_route("alice")
    shared = Route(
        "alice", "127.0.0.1", harness.upstream_port, ready=True, guests=frozenset({"bob"})
    )
    port = harness.front.ide_port
    assert refused_status(port, f"/dev/{vmid}/ide/ws", user="bob") == 404  # not shared yet
    harness.call(harness.routes.update, vmid, shared)
    with (
        open_ws(port, f"/dev/{vmid}/ide/ws") as owner,
        open_ws(port, f"/dev/{vmid}/ide/ws", user="bob") as guest,
    ):
        for ws in (owner, guest):
            ws.send("x")
            assert ws.recv(timeout=5) == "x"
        taken_back = Route("alice", "127.0.0.1", harness.upstream_port, ready=True)
        harness.call(harness.routes.update, vmid, taken_back)
        code, reason, seconds = close_code_within(guest, 5)
        assert (code, reason) == (1008, "access taken back") and seconds < 5
        owner.send("still here")
        assert owner.recv(timeout=5) == "still here"
    assert refused_status(port, f"/dev/{vmid}/ide/ws", user="bob") == 404
