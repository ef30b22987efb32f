"""The API on real LXC containers: a tiny runtime served to them, dev requests followed over SSE.

Every state change of a container is recorded as it arrives on ``/api/dev/{vmid}/events``,
with the monotonic time of its arrival, so tests and measurements judge phases from recorded
events, never from sleeps.
"""

from __future__ import annotations

import contextlib
import io
import itertools
import json
import tarfile
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
from fastapi import FastAPI
from lxc_kit import host_services

from api_kit import add_user, login, running, services
from support import serve_store
from zlh.api.app import create_app
from zlh.api.catalog import StoreCatalog
from zlh.api.settings import ApiSettings
from zlh.artifacts.store import ArtifactStore
from zlh.backends.lxc import LxcBackend
from zlh.schemas import ArtifactKind

CHEAP_HASHING = {"argon2_time_cost": 1, "argon2_memory_kib": 64, "argon2_parallelism": 1}


def tiny_runtime_store(store: Path) -> Path:
    """A store whose only runtime, node 22, is a few hundred bytes (a ``bin/node`` script):
    a provisioning cycle then costs the container's own start, not a download."""
    data = io.BytesIO()
    with tarfile.open(fileobj=data, mode="w:gz") as tar:
        script = b"#!/bin/sh\necho v22.0.0\n"
        for name, size, mode, kind in (
            ("node-tiny", 0, 0o755, tarfile.DIRTYPE),
            ("node-tiny/bin", 0, 0o755, tarfile.DIRTYPE),
            ("node-tiny/bin/node", len(script), 0o755, tarfile.REGTYPE),
        ):
            member = tarfile.TarInfo(name)
            member.type, member.mode, member.size = kind, mode, size
            tar.addfile(member, io.BytesIO(script) if size else None)
    tarball = store.parent / "node-tiny.tar.gz"
    store.mkdir(parents=True, exist_ok=True)
    tarball.write_bytes(data.getvalue())
    ArtifactStore(store).add_file(ArtifactKind.RUNTIME, "node", "22", tarball)
    return store


@dataclass(frozen=True)
class Seen:
    """One SSE ``status`` event as it arrived (``at``: monotonic seconds)."""

    at: float
    state: str
    error: str | None


@dataclass
class Cycle:
    vmid: int
    address: str | None
    requested_at: float
    events: list[Seen]

    @property
    def final(self) -> str:
        return self.events[-1].state if self.events else "none"

    @property
    def ready_s(self) -> float:
        """Request (POST sent) to the ready event."""
        return self.events[-1].at - self.requested_at

    def phases(self, state: str) -> list[float]:
        """How long each stretch in ``state`` lasted (its event to the next one)."""
        return [
            after.at - seen.at
            for seen, after in itertools.pairwise(self.events)
            if seen.state == state
        ]

    def timeline(self) -> str:
        return " ".join(
            f"{seen.at - self.requested_at:+.2f}s {seen.state}"
            + (f" ({seen.error})" if seen.error else "")
            for seen in self.events
        )


class LxcApi:
    """An API app on ``backend`` with a logged-in user, served on loopback."""

    def __init__(self, app: FastAPI, client: httpx.Client, headers: dict[str, str]) -> None:
        self.app = app
        self.client = client
        self.headers = headers

    def cycle(self, *, deadline_s: float = 120.0, hold_s: float = 0.0) -> Cycle:
        """POST a dev request, follow its events to ready or failed, DELETE it."""
        requested_at = time.monotonic()
        answer = self.client.post("/api/dev", json={"runtime": "node"}, headers=self.headers)
        assert answer.status_code == 202, answer.text
        vmid = int(answer.json()["vmid"])
        events = self.follow(vmid, deadline_s=deadline_s)
        time.sleep(hold_s)
        row = services(self.app).registry.get(vmid)
        address = row.address if row is not None else None
        deleted = self.client.delete(f"/api/dev/{vmid}", headers=self.headers, timeout=60)
        assert deleted.status_code == 204, deleted.text
        return Cycle(vmid, address, requested_at, events)

    def polled(self) -> set[int]:
        """The vmids the API's status poller polls now."""
        return services(self.app).poller.watched()

    def follow(self, vmid: int, *, deadline_s: float) -> list[Seen]:
        seen: list[Seen] = []
        deadline = time.monotonic() + deadline_s
        path = f"/api/dev/{vmid}/events"
        with self.client.stream("GET", path, headers=self.headers, timeout=20) as response:
            assert response.status_code == 200, response.read()
            for line in response.iter_lines():
                if line.startswith("data: "):
                    event: dict[str, Any] = json.loads(line[len("data: ") :])
                    if not seen or seen[-1].state != event["state"]:
                        seen.append(Seen(time.monotonic(), event["state"], event.get("error")))
                if time.monotonic() > deadline:
                    raise AssertionError(f"{path} did not end within {deadline_s}s: {seen}")
        return seen


@contextlib.contextmanager
def lxc_api(backend: LxcBackend, api_dir: Path, store: Path, **settings: Any) -> Iterator[LxcApi]:
    """The store served on the bridge (and opened to the containers), the API app on
    ``backend`` with ``settings`` over the defaults, and user alice logged in."""
    bridge = backend._network().address
    with (
        contextlib.contextmanager(serve_store)(store, bridge) as url,
        host_services(backend, url),
    ):
        app = create_app(
            ApiSettings(data_dir=api_dir, **{**CHEAP_HASHING, **settings}),
            backend,
            catalog=StoreCatalog(store),
            artifact_base_url=url,
        )
        add_user(app, "alice")
        with running(app) as client:
            yield LxcApi(app, client, login(client, "alice"))
