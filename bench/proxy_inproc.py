"""The front's own CPU per small proxied GET, in-process: no sockets, no kernel, no load generator.

A client connection and a pooled upstream connection of the real front (as installed, so
compiled when it is) get fake transports; each request is one ``data_received`` of a browser-
like GET on the client side and one of a code-server-like response on the upstream side. Two
ways, in turns:

* hot: the same request again and again (everything the front touches stays in the caches);
* cold: between requests, one byte per cache line of a buffer is written and some unrelated
  Python runs, as the load generator, the upstream and the kernel do between two wake-ups of
  the front on a shared box.

Prints the median over rounds of the per-round best µs per request for each side and each way.
docs/performance.md ("The front: where the CPU goes") gives its numbers: absolute numbers move
±20% between runs on a shared VM; compare hot and cold within one run.

    .venv/bin/python bench/proxy_inproc.py            # ROUNDS=5 REQUESTS=5000 POLLUTE_KB=4096
"""

from __future__ import annotations

import json
import os
import re
import statistics
import time
from typing import Any

from zlh.proxy import Front, JwtAuthenticator, ProxySettings, Route, RouteTable
from zlh.proxy.listener import ClientConnection
from zlh.proxy.pool import UpstreamAddress, UpstreamConnection
from zlh.proxy.tickets import Ticket, TicketDesk

ROUNDS = int(os.environ.get("ROUNDS", "5"))
REQUESTS = int(os.environ.get("REQUESTS", "5000"))
POLLUTE_KB = int(os.environ.get("POLLUTE_KB", "4096"))
KEY = b"k" * 32
BODY = b'{"ok":true,"pad":"' + b"x" * 180 + b'"}'
RESPONSE = (
    b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: %d\r\n"
    b"Date: Sat, 28 Nov 2026 11:00:00 GMT\r\nConnection: keep-alive\r\nKeep-Alive: timeout=5"
    b"\r\n\r\n" % len(BODY)
) + BODY


class FakeTransport:
    """What the front calls on a uvloop transport, doing nothing."""

    def __init__(self) -> None:
        self.last = b""

    def write(self, data: bytes) -> None:
        self.last = data

    def get_extra_info(self, name: str, default: Any = None) -> Any:
        return ("127.0.0.1", 5555) if name == "peername" else default

    def pause_reading(self) -> None: ...
    def resume_reading(self) -> None: ...
    def close(self) -> None: ...
    def abort(self) -> None: ...
    def is_closing(self) -> bool:
        return False


_BUFFER = bytearray(POLLUTE_KB * 1024)
_LINES = bytes(len(_BUFFER[::64]))
_DOC = {"a": [1, 2, 3], "b": {"c": "d" * 50}, "e": 1.5}


def pollute() -> None:
    """Evict what the front touched: a byte per cache line of the buffer, unrelated code."""
    _BUFFER[::64] = _LINES
    json.loads(json.dumps(_DOC))
    re.sub(r"x+", "y", "axxxbxxc")
    sorted(range(50), key=str)


async def measure() -> dict[str, list[float]]:
    routes = RouteTable()
    routes.update(100, Route(owner_id="bench-user", host="127.0.0.1", port=18000, ready=True))
    tickets = TicketDesk(KEY)
    front = Front(
        ProxySettings(), routes, JwtAuthenticator(KEY), "unix:/nonexistent.sock", tickets=tickets
    )
    now = time.time()
    cookie, _ = tickets.cookie_value(Ticket("bench-user", "b", 100, False, now, now + 3600))
    request = (
        b"GET /dev/100/ide/small.json HTTP/1.1\r\nHost: 127.0.0.1:8081\r\n"
        b"Cookie: zlh_ide=" + cookie.encode() + b"; session=x\r\n\r\n"
    )
    client_transport, upstream_transport = FakeTransport(), FakeTransport()
    # The IDE origin's listener (the second-port form): where IDEs are served.
    client = ClientConnection(front._dispatch_ide, front.settings, front._connections)
    client.connection_made(client_transport)  # type: ignore[arg-type]
    upstream = UpstreamConnection(front.pool, UpstreamAddress("127.0.0.1", 18000))
    upstream.connection_made(upstream_transport)  # type: ignore[arg-type]
    front.pool.put(upstream)
    client.data_received(request)
    upstream.data_received(RESPONSE)
    assert client_transport.last.endswith(BODY), "the fake exchange did not complete"

    clock = time.process_time
    results: dict[str, list[float]] = {}
    for _ in range(ROUNDS):
        for way in ("hot", "cold"):
            client_s = upstream_s = 0.0
            for _ in range(REQUESTS):
                if way == "cold":
                    pollute()
                t0 = clock()
                client.data_received(request)
                t1 = clock()
                upstream.data_received(RESPONSE)
                t2 = clock()
                client_s += t1 - t0
                upstream_s += t2 - t1
            results.setdefault(f"{way} client", []).append(client_s / REQUESTS * 1e6)
            results.setdefault(f"{way} upstream", []).append(upstream_s / REQUESTS * 1e6)
    t0 = clock()
    for _ in range(REQUESTS):
        clock()
    results["timer (subtract once per side)"] = [(clock() - t0) / REQUESTS * 1e6]
    return results


def main() -> None:
    import uvloop

    results = uvloop.run(measure())
    print(f"# {ROUNDS} rounds x {REQUESTS} requests, cold = {POLLUTE_KB} KB + code between")
    for name, values in results.items():
        print(f"{name:32s} median {statistics.median(values):6.2f} us  (rounds: "
              + " ".join(f"{v:.2f}" for v in values) + ")")  # fmt: skip
    hot = results["hot client"], results["hot upstream"]
    cold = results["cold client"], results["cold upstream"]
    for side, h, c in (("client", hot[0], cold[0]), ("upstream", hot[1], cold[1])):
        print(f"{side} side cold/hot: {statistics.median(c) / statistics.median(h):.2f}x")


if __name__ == "__main__":
    main()
