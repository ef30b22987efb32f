"""Helpers of the real-LXC tests: containers up, their agents asked, commands run inside."""

from __future__ import annotations

import asyncio
import contextlib
import os
import socket
import subprocess
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from support import REPO, zlh
from zlh.api.settings import url_port
from zlh.backends import ContainerInfo, ContainerSpec, Resources, RunState
from zlh.backends.lxc import LxcBackend

DATA_DIR = Path(os.environ.get("ZLH_TEST_LXC_DIR", REPO / ".data" / "test-lxc"))


def lxc_backend(*vmids: int, data_dir: Path = DATA_DIR) -> Iterator[LxcBackend]:
    """A module's backend on the real template (built once per machine by ``zlh template
    build``, a no-op afterwards), with ``vmids`` destroyed before and after."""
    if os.geteuid() != 0:
        pytest.skip("real LXC containers need root")
    zlh("template", "build", "--data-dir", str(data_dir), timeout=1200)
    lxc = LxcBackend(data_dir=data_dir)
    for vmid in vmids:  # leftovers of an interrupted run
        asyncio.run(lxc.destroy(vmid))
    yield lxc
    for vmid in vmids:
        asyncio.run(lxc.destroy(vmid))


@contextlib.contextmanager
def host_services(backend: LxcBackend, *urls: str) -> Iterator[None]:
    """The ports of ``urls`` open to the containers on the host while the block runs, as
    `zlh up` opens its artifact server's (the isolation table refuses every other port)."""
    backend.slots.serve(backend.lxcpath, [url_port(url) for url in urls])
    try:
        yield
    finally:
        backend.slots.serve(backend.lxcpath, [])


def up(
    backend: LxcBackend, vmid: int, *, secret: str | None = None, **resources: int
) -> ContainerInfo:
    spec = ContainerSpec(
        vmid=vmid, agent_secret=secret or f"secret-{vmid}", resources=Resources(**resources)
    )
    asyncio.run(backend.create(spec))
    return asyncio.run(backend.start(vmid))


def running(backend: LxcBackend, vmid: int) -> ContainerInfo:
    """Container ``vmid`` running, whatever earlier tests left of it."""
    info = asyncio.run(backend.status(vmid))
    if info.state is RunState.RUNNING:
        return info
    return asyncio.run(backend.start(vmid)) if info.state.exists else up(backend, vmid)


def agent_status(info: ContainerInfo, secret: str, *, timeout_s: float = 60.0) -> int:
    """HTTP status of GET /status once the agent answers at all (polled with a deadline)."""
    deadline = time.monotonic() + timeout_s
    while True:
        try:
            response = httpx.get(
                f"{info.agent_url}/status",
                headers={"Authorization": f"Bearer {secret}"},
                timeout=2,
            )
            return response.status_code
        except httpx.TransportError:
            if time.monotonic() > deadline:
                raise
            time.sleep(0.1)


def attach(backend: LxcBackend, vmid: int, *command: str) -> str:
    result = subprocess.run(
        ["lxc-attach", "-P", str(backend.lxcpath), "-n", f"zlh-{vmid}", "--", *command],
        capture_output=True,
        text=True,
        timeout=60,
        check=True,
    )
    return result.stdout


CONNECT = """
import socket, sys
sock = socket.socket()
sock.settimeout(2)
try:
    sock.connect((sys.argv[1], int(sys.argv[2])))
    print("connected")
except OSError as exc:
    print("refused", exc)
"""


def connect_from(backend: LxcBackend, vmid: int, host: str, port: int) -> bool:
    return attach(backend, vmid, "python3", "-c", CONNECT, host, str(port)).startswith("conn")


def host_connects(host: str, port: int, *, timeout_s: float = 20.0) -> bool:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        try:
            with socket.create_connection((host, port), timeout=1):
                return True
        except OSError:
            time.sleep(0.1)
    return False


class Agent:
    """A container's agent over HTTP with its secret, as the API talks to it."""

    def __init__(self, info: ContainerInfo, secret: str) -> None:
        self.client = httpx.Client(
            base_url=info.agent_url, headers={"Authorization": f"Bearer {secret}"}, timeout=10
        )

    def __enter__(self) -> Agent:
        return self

    def __exit__(self, *_exc: object) -> None:
        self.client.close()

    def status(self) -> dict[str, Any]:
        deadline = time.monotonic() + 60
        while True:
            try:
                response = self.client.get("/status")
                response.raise_for_status()
                return dict(response.json())
            except httpx.TransportError:
                if time.monotonic() > deadline:
                    raise
                time.sleep(0.2)

    def provision(self, payload: dict[str, Any]) -> None:
        self.status()  # waits for the agent to answer at all (a fresh container boots)
        assert self.client.post("/provision", json=payload).status_code == 202

    def wait_for(self, done: Callable[[dict[str, Any]], bool], timeout_s: float) -> dict[str, Any]:
        deadline = time.monotonic() + timeout_s
        while not done(status := self.status()):
            assert time.monotonic() < deadline, status
            time.sleep(0.5)
        return status


def settled(status: dict[str, Any]) -> bool:
    return status["state"] in ("ready", "failed")
