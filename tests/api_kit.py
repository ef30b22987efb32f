"""Building and running an API app for tests: temp data dir, small catalog, fast polls.

The app runs on a real uvicorn server in a thread (``running``) and tests talk to it with
httpx over loopback, the way the portal and the front do.
"""

from __future__ import annotations

import asyncio
import json
import os
import subprocess
import threading
import time
from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import httpx
import uvicorn
from fastapi import FastAPI

from agent_sim import SimBackend
from support import ZLH, serve_agent_app, wait_for_port, zlh
from zlh.api import accounts
from zlh.api.app import create_app
from zlh.api.catalog import StoreCatalog
from zlh.api.db import Container, ContainerState, Pins
from zlh.api.services import Services
from zlh.api.settings import ApiSettings
from zlh.backends import Backend
from zlh.schemas import AgentStatus, Artifact, ArtifactFormat, ArtifactKind, Catalog

PASSWORD = "correct horse battery"
FAST = {
    "poll_interval_s": 0.2,
    "poll_interval_provisioning_s": 0.05,
    "poll_timeout_s": 0.5,
    "poll_max_backoff_s": 0.4,
    "container_start_timeout_s": 5.0,
    "agent_answer_timeout_s": 5.0,
    "argon2_time_cost": 1,
    "argon2_memory_kib": 64,
    "argon2_parallelism": 1,
}


def artifact(name: str) -> Artifact:
    return Artifact(url=f"{name}.tar.gz", sha256="a" * 64, size=1, format=ArtifactFormat.TAR_GZ)


# What a container records when nothing in a test looks at its artifacts.
PINS = Pins(runtime=artifact("node-22"))


def ready_container(
    vmid: int,
    owner_id: int,
    *,
    address: str,
    agent_port: int,
    agent_nonce: str,
    status: AgentStatus,
) -> Container:
    """A ``ready`` node 22 container row whose agent is at ``address:agent_port``: what the
    poller's tests and benches seed by the thousand."""
    return Container(
        vmid=vmid,
        owner_id=owner_id,
        runtime="node",
        version="22",
        addons=[],
        pins=PINS,
        state=ContainerState.READY.value,
        agent_nonce=agent_nonce,
        address=address,
        agent_port=agent_port,
        code_server_port=6000,
        status=status,
    )


def write_catalog(store: Path) -> None:
    catalog = Catalog()
    for kind, name, version in [
        (ArtifactKind.RUNTIME, "node", "22"),
        (ArtifactKind.RUNTIME, "node", "20"),
        (ArtifactKind.RUNTIME, "python", "3.12"),
        (ArtifactKind.ADDON, "code-server", "4.99.0"),
    ]:
        catalog = catalog.with_version(kind, name, version, artifact(f"{name}-{version}"))
    store.mkdir(parents=True, exist_ok=True)
    (store / "catalog.json").write_text(json.dumps(catalog.model_dump(mode="json")))


def make_app(data_dir: Path, backend: Backend, **overrides: Any) -> FastAPI:
    store = data_dir / "artifacts"
    if not (store / "catalog.json").exists():
        write_catalog(store)
    return create_app(
        ApiSettings(data_dir=data_dir, **{**FAST, **overrides}),
        backend,
        catalog=StoreCatalog(store),
        artifact_base_url="http://127.0.0.1:9/artifacts",
    )


def services(app: FastAPI) -> Services:
    svc: Services = app.state.services
    return svc


@contextmanager
def running(app: FastAPI) -> Iterator[httpx.Client]:
    """Serve ``app`` on a free loopback port; yields a client with that base URL."""
    # As `zlh up` runs it: X-Forwarded-For is the app's to judge (trusted_proxies), not uvicorn's.
    config = uvicorn.Config(
        app, host="127.0.0.1", port=0, lifespan="on", log_level="warning", proxy_headers=False
    )
    server = uvicorn.Server(config)
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    deadline = time.monotonic() + 15
    while not server.started:
        if not thread.is_alive() or time.monotonic() > deadline:
            raise AssertionError("the API server did not start")
        time.sleep(0.01)
    port = server.servers[0].sockets[0].getsockname()[1]
    try:
        with httpx.Client(base_url=f"http://127.0.0.1:{port}", timeout=10) as client:
            yield client
    finally:
        backend = services(app).backend
        loop = services(app).registry._loop
        if isinstance(backend, SimBackend) and loop is not None and loop.is_running():
            asyncio.run_coroutine_threadsafe(backend.aclose(), loop).result(timeout=10)
        server.should_exit = True
        thread.join(timeout=15)


def add_user(app: FastAPI, name: str, *, admin: bool = False) -> None:
    accounts.create_user(services(app).db, name, PASSWORD, admin=admin)


def login(client: httpx.Client, name: str) -> dict[str, str]:
    """Log in; returns the Authorization header. The cookie jar is cleared (Bearer only)."""
    response = client.post("/api/auth/login", json={"username": name, "password": PASSWORD})
    assert response.status_code == 200, response.text
    client.cookies.clear()
    return {"Authorization": f"Bearer {response.json()['token']}"}


def wait_for(predicate: Any, *, timeout_s: float = 10.0, what: str = "condition") -> Any:
    """Poll ``predicate`` until it returns something truthy (never a bare sleep)."""
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        value = predicate()
        if value:
            return value
        time.sleep(0.02)
    raise AssertionError(f"timed out waiting for {what}")


def sse_events(
    client: httpx.Client, path: str, headers: dict[str, str], *, deadline_s: float = 90.0
) -> list[dict[str, Any]]:
    """Read an SSE stream to its end; the ``data`` of every ``status`` event.

    Fails (with what it saw) if the stream has not ended after ``deadline_s``: the server's
    keep-alive comments would otherwise keep a stuck stream open forever.
    """
    events: list[dict[str, Any]] = []
    deadline = time.monotonic() + deadline_s
    with client.stream("GET", path, headers=headers, timeout=20) as response:
        assert response.status_code == 200, response.read()
        assert response.headers["content-type"].startswith("text/event-stream")
        for line in response.iter_lines():
            if line.startswith("data: "):
                events.append(json.loads(line[len("data: ") :]))
            if time.monotonic() > deadline:
                raise AssertionError(f"{path} did not end within {deadline_s}s: {events[-3:]}")
    return events


# `zlh up` as a process: the whole platform with the process backend, polled fast.
FAST_ENV = {
    "ZLH_POLL_INTERVAL_S": "0.5",
    "ZLH_POLL_INTERVAL_PROVISIONING_S": "0.1",
    "ZLH_ARGON2_TIME_COST": "1",
    "ZLH_ARGON2_MEMORY_KIB": "64",
    "ZLH_ARGON2_PARALLELISM": "1",
}


def up_env(data_dir: Path) -> dict[str, str]:
    return {**os.environ, **FAST_ENV, "ZLH_DATA_DIR": str(data_dir)}


@contextmanager
def zlh_up(
    data_dir: Path,
    store: Path,
    port: int,
    *,
    extra_args: Sequence[str] = (),
    env: Mapping[str, str] | None = None,
    timeout_s: float = 30.0,
) -> Iterator[subprocess.Popen[bytes]]:
    """``zlh up --backend process`` over ``store`` on ``port``: real agents, real HTTP.
    ``env``: the environment instead of ``up_env(data_dir)``. Yields once it serves all of it
    (its log says so): the public port listens first, the IDE origin's and the front workers
    a moment later."""
    log_path = data_dir / "up.log"
    served_before = _serving_lines(log_path)
    log = log_path.open("ab")
    proc = subprocess.Popen(
        [
            *ZLH,
            "up",
            "--backend",
            "process",
            "--store",
            str(store),
            "--listen",
            f"127.0.0.1:{port}",
            *extra_args,
        ],
        env=dict(env) if env is not None else up_env(data_dir),
        stdout=log,
        stderr=log,
    )
    try:
        wait_for_port("127.0.0.1", port, proc=proc, timeout_s=timeout_s)
        wait_for(
            lambda: proc.poll() is not None or _serving_lines(log_path) > served_before,
            timeout_s=timeout_s,
            what="zlh up to serve",
        )
        yield proc
    finally:
        if proc.poll() is None:
            proc.terminate()
            proc.wait(timeout=30)
        log.close()


def _serving_lines(log_path: Path) -> int:
    """How many times ``zlh up`` logged that it serves (once per start) in ``log_path``."""
    try:
        return log_path.read_bytes().count(b" serving on http://")
    except FileNotFoundError:
        return 0


def add_cli_users(data_dir: Path) -> None:
    """alice and bob, and root the admin, made with ``zlh user add`` (as an operator does)."""
    for name, admin in (("alice", False), ("bob", False), ("root", True)):
        args = ["user", "add", name, "--password-stdin", "--data-dir", str(data_dir)]
        zlh(*args, *(["--admin"] if admin else []), input=PASSWORD + "\n", env=up_env(data_dir))


@contextmanager
def ready_on_a_real_agent(
    app: FastAPI, container: Container, home: Path, *, max_upload_bytes: int = 1 << 20
) -> Iterator[None]:
    """``container`` made ready on a real agent's files and console routes (serving
    ``home``/workspace as the current user), reached over HTTP with its own secret."""
    from zlh.agent.devuser import DevEnvironment
    from zlh.agent.lazy_routes import setup_console_routes, setup_files_routes
    from zlh.agent.runas import DevIdentity

    svc = services(app)
    dev = DevEnvironment("dev", DevIdentity.current(home=home), home, home / "workspace")

    def setup(agent_app: Any) -> None:
        setup_files_routes(agent_app, environment=lambda: dev, max_upload_bytes=max_upload_bytes)
        setup_console_routes(agent_app, environment=lambda: dev)

    with serve_agent_app(setup, token=svc.provisioning.secret(container)) as agent:
        svc.registry.update(
            container.vmid, state="ready", address="127.0.0.1", agent_port=agent.port
        )
        yield
