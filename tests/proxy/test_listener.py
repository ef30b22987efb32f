"""The client side over raw sockets: malformed input, limits, pipelining, keep-alive, timeouts."""

from __future__ import annotations

import json
import socket
import time
from typing import Any

import httptools
from proxy_kit import Harness, ide_cookie


class Responses:
    """Parses the responses a raw socket receives, in order."""

    def __init__(self) -> None:
        self.done: list[dict[str, Any]] = []
        self._current: dict[str, Any] = {}
        self._parser = httptools.HttpResponseParser(self)

    def on_message_begin(self) -> None:
        self._current = {"headers": {}, "body": b""}

    def on_header(self, name: bytes, value: bytes) -> None:
        self._current["headers"][name.decode().lower()] = value.decode()

    def on_headers_complete(self) -> None:
        self._current["status"] = self._parser.get_status_code()

    def on_body(self, body: bytes) -> None:
        self._current["body"] += body

    def on_message_complete(self) -> None:
        self.done.append(self._current)

    def read(self, sock: socket.socket, count: int, timeout_s: float = 5.0) -> bool:
        """Read until ``count`` responses arrived; True if the peer then closed."""
        sock.settimeout(timeout_s)
        while len(self.done) < count:
            data = sock.recv(65536)
            if not data:
                return True
            self._parser.feed_data(data)
        return False


def connect(harness: Harness, port: int | None = None) -> socket.socket:
    return socket.create_connection(("127.0.0.1", port or harness.front.port), timeout=5)


def closed_by_peer(sock: socket.socket, timeout_s: float = 5.0) -> bool:
    sock.settimeout(timeout_s)
    try:
        while sock.recv(65536):
            pass
    except ConnectionResetError:
        return True
    return True


def test_malformed_request_line_gets_400_and_the_connection_closes(harness: Harness) -> None:
    with connect(harness) as sock:
        sock.sendall(b"GARBAGE\x01 / HTTP/1.1\r\n\r\n")
        got = Responses()
        got.read(sock, 1)
        assert got.done[0]["status"] == 400
        assert json.loads(got.done[0]["body"])["message"] == "malformed request"
        assert closed_by_peer(sock)


def test_huge_request_head_gets_431(harness: Harness) -> None:
    with connect(harness) as sock:
        sock.sendall(
            b"GET /api/x HTTP/1.1\r\nHost: a\r\n" + b"X-Big: " + b"b" * 40000 + b"\r\n\r\n"
        )
        got = Responses()
        got.read(sock, 1)
        assert got.done[0]["status"] == 431
        assert closed_by_peer(sock)


def test_content_length_with_transfer_encoding_is_refused_as_smuggling(harness: Harness) -> None:
    with connect(harness) as sock:
        sock.sendall(
            b"POST /api/x HTTP/1.1\r\nHost: a\r\nContent-Length: 4\r\n"
            b"Transfer-Encoding: chunked\r\n\r\n0\r\n\r\n"
        )
        got = Responses()
        got.read(sock, 1)
        assert got.done[0]["status"] == 400
    assert all(r["method"] != "POST" or r["path"] != "/api/x" for r in harness.seen("/api/x"))


def test_pipelined_requests_are_answered_in_order(harness: Harness) -> None:
    vmid = harness.add_route("alice")
    cookie = f"Cookie: zlh_ide={ide_cookie('alice', vmid)}\r\n".encode()
    requests = b"".join(
        b"GET /dev/%d/ide/p%d HTTP/1.1\r\nHost: a\r\n%s\r\n" % (vmid, i, cookie) for i in range(5)
    )
    refused = b"GET /dev/%d/ide/p5 HTTP/1.1\r\nHost: a\r\n\r\n" % vmid  # no session: 401
    last = (
        b"POST /dev/%d/ide/p6 HTTP/1.1\r\nHost: a\r\n%sContent-Length: 3\r\n"
        b"Connection: close\r\n\r\nabc" % (vmid, cookie)
    )
    with connect(harness, harness.front.ide_port) as sock:
        sock.sendall(requests + refused + last)
        got = Responses()
        got.read(sock, 7)
        assert closed_by_peer(sock)
    assert [r["status"] for r in got.done] == [200] * 5 + [401, 200]
    paths = [json.loads(r["body"]).get("path") for r in got.done]
    assert paths == [f"/p{i}" for i in range(5)] + [None, "/p6"]


def test_keep_alive_serves_many_requests_on_one_client_connection(harness: Harness) -> None:
    with connect(harness) as sock:
        got = Responses()
        for i in range(10):
            sock.sendall(b"GET /api/k%d HTTP/1.1\r\nHost: a\r\n\r\n" % i)
            assert not got.read(sock, i + 1)
    assert [json.loads(r["body"])["path"] for r in got.done] == [f"/api/k{i}" for i in range(10)]


def test_http10_client_gets_a_complete_response_and_a_close(harness: Harness) -> None:
    with connect(harness) as sock:
        sock.sendall(b"GET /api/old HTTP/1.0\r\n\r\n")
        got = Responses()
        got.read(sock, 1)
        assert closed_by_peer(sock)
    assert got.done[0]["status"] == 200
    assert json.loads(got.done[0]["body"])["path"] == "/api/old"


def test_hop_by_hop_headers_and_those_named_by_connection_are_removed(harness: Harness) -> None:
    with connect(harness) as sock:
        sock.sendall(
            b"GET /api/hop HTTP/1.1\r\nHost: a\r\nConnection: keep-alive, X-Hop-Secret\r\n"
            b"X-Hop-Secret: 1\r\nKeep-Alive: timeout=5\r\nTE: trailers\r\nUpgrade: foo\r\n"
            b"Proxy-Connection: keep-alive\r\nX-End-To-End: yes\r\n\r\n"
        )
        got = Responses()
        got.read(sock, 1)
    names = {name.lower() for name, _ in json.loads(got.done[0]["body"])["headers"]}
    assert "x-end-to-end" in names
    for hop in ("x-hop-secret", "keep-alive", "te", "upgrade", "proxy-connection"):
        assert hop not in names, hop


def test_slow_request_head_gets_408(harness: Harness) -> None:
    with (
        harness.other_front(header_timeout_s=0.3) as (front, _),
        connect(harness, front.port) as sock,
    ):
        sock.sendall(b"GET /api/slow HTTP/1.1\r\nHost: a\r\n")  # and never the blank line
        started = time.monotonic()
        got = Responses()
        got.read(sock, 1)
        assert got.done[0]["status"] == 408
        assert closed_by_peer(sock)
        assert time.monotonic() - started < 3


def test_idle_keep_alive_connection_is_closed_after_the_timeout(harness: Harness) -> None:
    with (
        harness.other_front(keepalive_timeout_s=0.3) as (front, _),
        connect(harness, front.port) as sock,
    ):
        sock.sendall(b"GET /api/idle HTTP/1.1\r\nHost: a\r\n\r\n")
        got = Responses()
        assert not got.read(sock, 1)
        started = time.monotonic()
        assert closed_by_peer(sock)
        assert 0.2 < time.monotonic() - started < 3


def test_expect_100_continue_is_relayed_before_the_body_is_sent(harness: Harness) -> None:
    vmid = harness.add_route("alice")
    with connect(harness, harness.front.ide_port) as sock:
        sock.sendall(
            b"POST /dev/%d/ide/upload HTTP/1.1\r\nHost: a\r\nCookie: zlh_ide=%s\r\n"
            b"Content-Length: 5\r\nExpect: 100-continue\r\n\r\n"
            % (vmid, ide_cookie("alice", vmid).encode())
        )
        sock.settimeout(5)
        assert sock.recv(65536).startswith(b"HTTP/1.1 100 Continue\r\n\r\n")
        sock.sendall(b"12345")
        got = Responses()
        got.read(sock, 1)
    assert got.done[0]["status"] == 200
    assert json.loads(got.done[0]["body"]) == {"received": 5}
