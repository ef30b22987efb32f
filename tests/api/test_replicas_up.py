"""Two ``zlh up --backend process --replica`` processes on one real PostgreSQL database, real
agents and a real code-server: what a user does on replica a shows on replica b.

Alice's request is made on a and its SSE progress read on b up to ready; her IDE is opened on
b's IDE origin with a ticket a minted (the same ticket replayed on a's IDE origin is refused
and sets no cookie: tickets are taken once on the whole platform, not once per host), and its
WebSocket (to code-server, through b's front) closes within 5 s of her signing out on a.
"""

from __future__ import annotations

import time
from pathlib import Path

import httpx
import pg_cluster
import pytest
from replica_kit import add_users, replicas_up
from websockets.exceptions import ConnectionClosed
from websockets.sync.client import connect

from api_kit import login, sse_events

pytestmark = pytest.mark.slow


def test_a_ticket_taken_on_b_is_refused_on_a_and_sign_out_on_a_closes_the_ide_on_b_in_5_s(
    ide_store: Path, tmp_path: Path, postgres_server: str
) -> None:
    db_url = pg_cluster.fresh_database(postgres_server)
    add_users(db_url, [("alice", False)])
    with (
        replicas_up(tmp_path, ide_store, db_url) as (a, b),
        httpx.Client(base_url=a.base_url, timeout=30) as on_a,
        httpx.Client(base_url=b.base_url, timeout=30) as on_b,
    ):
        alice = login(on_a, "alice")
        body = {"runtime": "node", "addons": ["code-server"]}
        created = on_a.post("/api/dev", json=body, headers=alice)
        assert created.status_code == 202, created.text
        vmid = created.json()["vmid"]
        events = sse_events(on_b, f"/api/dev/{vmid}/events", alice, deadline_s=240)
        assert events[-1]["state"] == "ready", (events[-3:], a.log()[-2000:])
        assert events[-1]["codeServerRunning"] is True
        assert any(e["state"] == "provisioning" for e in events), events

        # a mints the ticket; b's IDE origin takes it (the ticket is signed, not stored).
        minted = on_a.get(f"/api/dev/{vmid}/ide-url", headers=alice)
        assert minted.status_code == 200, minted.text
        ticket_url = minted.json()["url"].replace(a.ide_origin, b.ide_origin)
        assert ticket_url.startswith(b.ide_origin)
        exchanged = httpx.get(ticket_url, follow_redirects=False, timeout=30)
        assert exchanged.status_code == 303, exchanged.text
        cookie = exchanged.headers["set-cookie"].split(";")[0]
        # Stolen and replayed on a (another host: its own run dir): refused, and no cookie.
        replayed = httpx.get(
            ticket_url.replace(b.ide_origin, a.ide_origin), follow_redirects=False, timeout=30
        )
        assert replayed.status_code == 401, replayed.text
        assert "set-cookie" not in replayed.headers

        socket_url = b.ide_origin.replace("http", "ws", 1) + f"/dev/{vmid}/ide/"
        socket_url += "?reconnectionToken=replicas&reconnection=false"
        with connect(
            socket_url,
            origin=b.ide_origin,
            additional_headers={"Cookie": cookie},  # type: ignore[arg-type]
        ) as ide:
            signed_out = time.monotonic()  # from the request: the close may beat its answer
            assert on_a.post("/api/auth/logout", headers=alice).status_code == 204
            with pytest.raises(ConnectionClosed):
                while time.monotonic() - signed_out < 10:
                    ide.recv(timeout=10)
            closed_after = time.monotonic() - signed_out
        print(f"b closed the IDE WebSocket {closed_after * 1000:.0f} ms after the sign-out on a")
        assert closed_after < 5.0
        assert on_a.delete(f"/api/dev/{vmid}", headers=login(on_a, "alice")).status_code == 204
