"""The front's traffic counters (zlh.proxy.metrics) move with real traffic, per route class,
and reach a scrape through zlh.api.metrics' collector."""

from __future__ import annotations

import os

import httpx
from prometheus_client.parser import text_string_to_metric_families
from proxy_kit import Harness, ide_session, wait_until
from test_websocket import open_ws

from zlh.api.metrics import FrontCollector, Metrics
from zlh.proxy import Front


def _scrape(front: Front) -> dict[tuple[str, str], float]:
    """(sample name, route) -> value, as Prometheus would read it."""
    metrics = Metrics()
    metrics.register(FrontCollector(front))
    samples: dict[tuple[str, str], float] = {}
    for family in text_string_to_metric_families(metrics.render().decode()):
        for sample in family.samples:
            if "route" in sample.labels:
                samples[sample.name, sample.labels["route"]] = sample.value
    return samples


def test_requests_and_bytes_are_counted_by_route_class(harness: Harness) -> None:
    with harness.other_front() as (front, routes):
        vmid = harness.add_route("alice", routes=routes)
        size = 300_000
        with httpx.Client(timeout=5) as client:
            ide = client.get(
                f"http://127.0.0.1:{front.ide_port}/dev/{vmid}/ide/big?size={size}",
                headers=ide_session("alice", vmid),
            )
            assert ide.status_code == 200 and len(ide.content) == size
            upload = client.post(f"http://127.0.0.1:{front.port}/upload", content=b"u" * 50_000)
            assert upload.json() == {"received": 50_000}
            # Refused at the front: a request all the same, and nothing relayed for it.
            refused = client.get(f"http://127.0.0.1:{front.ide_port}/dev/{vmid}/ide/")
            assert refused.status_code == 401
        seen = _scrape(front)
    assert seen["zlh_front_requests_total", "ide"] == 2
    assert seen["zlh_front_requests_total", "api"] == 1
    assert seen["zlh_front_requests_total", "preview"] == 0
    assert size < seen["zlh_front_sent_bytes_total", "ide"] < size + 1000
    assert seen["zlh_front_received_bytes_total", "ide"] < 1000  # one relayed head
    assert 50_000 < seen["zlh_front_received_bytes_total", "api"] < 51_000
    assert seen["zlh_front_sent_bytes_total", "api"] < 1000


def test_websockets_open_and_their_bytes_by_route_class(harness: Harness) -> None:
    with harness.other_front() as (front, routes):
        vmid = harness.add_route("alice", routes=routes)
        with (
            open_ws(front.ide_port, f"/dev/{vmid}/ide/ws") as ide,
            open_ws(front.port, "/api/ws", user=None) as api,
        ):
            noise = os.urandom(10_000)  # incompressible: the client deflates its messages
            ide.send(noise)
            assert ide.recv(timeout=5) == noise
            api.send("up")
            assert api.recv(timeout=5) == "up"
            during = harness.call(_scrape, front)
        assert during["zlh_front_websockets_open", "ide"] == 1
        assert during["zlh_front_websockets_open", "api"] == 1
        assert during["zlh_front_received_bytes_total", "ide"] > 10_000  # head + masked frame
        assert during["zlh_front_sent_bytes_total", "ide"] > 10_000
        wait_until(lambda: harness.call(len, front._tunnels) == 0, what="tunnels ended")
        after = harness.call(_scrape, front)
    assert after["zlh_front_websockets_open", "ide"] == 0
    assert after["zlh_front_websockets_open", "api"] == 0


def test_two_fronts_in_one_process_count_apart(harness: Harness) -> None:
    with harness.other_front() as (one, _), harness.other_front() as (other, _):
        with httpx.Client(timeout=5) as client:
            assert client.get(f"http://127.0.0.1:{one.port}/x").status_code == 200
        assert _scrape(one)["zlh_front_requests_total", "api"] == 1
        assert _scrape(other)["zlh_front_requests_total", "api"] == 0
