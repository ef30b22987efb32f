"""The demo's conversation with the running platform, over its public HTTP interface only:
sign in, find or request the demo container, follow its SSE progress, probe its IDE."""

from __future__ import annotations

import time
from collections.abc import Callable
from pathlib import Path

import httpx

from zlh.api.bodies import ContainerOut
from zlh.atomic import write_atomically
from zlh.dev.client import PlatformClient, api_error
from zlh.errors import ZlhError

__all__ = ["DEMO_ADDONS", "DEMO_RUNTIME", "DemoClient"]

DEMO_RUNTIME = "node"
DEMO_ADDONS = ("code-server",)
IDE_TIMEOUT_S = 120.0
_GONE = {"failed", "deleting"}


class DemoClient(PlatformClient):
    def demo_container(self, record: Path, say: Callable[[str], None]) -> ContainerOut:
        """The container an earlier demo made (its vmid is kept in ``record``), else a new one.

        Only that one is ever reused or deleted: the admin's list holds every user's
        containers, and none of them is the demo's to take. A failed demo container is deleted
        (its reason shown), so the quota never fills with them.
        """
        earlier = self._recorded(record)
        if earlier is not None and earlier.state == "failed":
            say(f"removing failed demo container {earlier.vmid} ({earlier.error})")
            self.http.delete(f"/api/dev/{earlier.vmid}")
        elif earlier is not None and earlier.state not in _GONE:
            say(f"reusing demo container {earlier.vmid} ({earlier.state})")
            return earlier
        response = self.http.post(
            "/api/dev", json={"runtime": DEMO_RUNTIME, "addons": list(DEMO_ADDONS)}
        )
        if response.status_code != 202:
            raise api_error(response, "requesting the demo container")
        container = ContainerOut.model_validate(response.json())
        write_atomically(record, f"{container.vmid}\n", mode=0o600)
        say(f"requested demo container {container.vmid} ({DEMO_RUNTIME} {container.version})")
        return container

    def _recorded(self, record: Path) -> ContainerOut | None:
        """The recorded demo container, if the record names one that still exists."""
        try:
            vmid = int(record.read_text().strip())
        except (FileNotFoundError, ValueError):
            return None
        response = self.http.get(f"/api/dev/{vmid}")
        if response.status_code == 404:
            return None
        if response.status_code != 200:
            raise api_error(response, f"reading the demo container {vmid}")
        return ContainerOut.model_validate(response.json())

    def wait_ready(self, vmid: int, timeout_s: float, say: Callable[[str], None]) -> None:
        """Follow the progress stream, saying each new state and step, until ready."""
        started = time.monotonic()
        last: tuple[str, str | None] | None = None
        while time.monotonic() - started < timeout_s:
            for event in self.events(vmid):
                step = event.progress.step.value if event.progress else None
                if (event.state, step) != last:
                    last = (event.state, step)
                    detail = ""
                    if event.progress is not None:
                        detail = f" · {step} {event.progress.percent:.0f}%"
                        if event.progress.message:
                            detail += f" {event.progress.message}"
                    say(f"[{time.monotonic() - started:5.1f}s] {event.state}{detail}")
                if event.state == "ready":
                    return
                if event.state == "failed":
                    raise ZlhError(f"demo container {vmid} failed: {event.error}")
            # The stream ended without a final state (server restart): follow it again.
        raise ZlhError(f"demo container {vmid} not ready within {timeout_s:.0f}s")

    def open_ide(self, vmid: int, timeout_s: float = IDE_TIMEOUT_S) -> str:
        """The IDE's URL on the IDE origin, once it answers 200 there (503/502 while
        code-server starts), reached the way a browser gets in: a ticket from ``ide-url``
        exchanged for the IDE cookie. A 404 means nothing serves the IDE there."""
        response = self.http.get(f"/api/dev/{vmid}/ide-url")
        if response.status_code != 200:
            raise api_error(response, f"asking for a ticket to the IDE of {vmid}")
        url = response.json()["url"]
        deadline = time.monotonic() + timeout_s
        with httpx.Client(timeout=30.0, follow_redirects=True) as browser:
            try:
                page = browser.get(url)  # the ticket, then the IDE with the cookie it set
                while page.status_code != 200 and page.url.path != "/_zlh/auth":
                    if page.status_code == 404 or time.monotonic() > deadline:
                        break
                    time.sleep(0.5)
                    page = browser.get(page.url)
            except httpx.TransportError as exc:
                raise ZlhError(f"the IDE origin does not answer at {url}: {exc}") from exc
        if page.status_code != 200:
            raise api_error(page, f"opening the IDE at {page.url}")
        return str(page.url.copy_with(query=None))  # code-server adds ?folder=
