"""Helpers shared by tests in every directory: import them with ``from support import …``.

(They live here, not in conftest.py: several conftest.py files share the module name
``conftest``, so ``from conftest import …`` finds whichever was imported last.)
"""

from __future__ import annotations

import asyncio
import json
import os
import re
import shutil
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from aiohttp import web
from websockets.sync.client import ClientConnection

from zlh.agent.token import AgentToken
from zlh.agent.web_errors import bearer_auth, error_envelope
from zlh.schemas import ArtifactKind, Catalog

REPO = Path(__file__).resolve().parent.parent
# Registry downloads (wheels, npm tarballs) are cached here across runs; CI starts empty.
CACHE_DIR = Path(os.environ.get("ZLH_TEST_CACHE", REPO / ".data" / "test-cache"))
ZLH = [sys.executable, "-m", "zlh.cli"]


def zlh(*args: str, check: bool = True, **kwargs: object) -> subprocess.CompletedProcess[str]:
    """Run the real ``zlh`` CLI in a subprocess, the way an operator would."""
    result = subprocess.run([*ZLH, *args], capture_output=True, text=True, check=False, **kwargs)  # type: ignore[call-overload]
    if check and result.returncode != 0:
        raise AssertionError(f"zlh {' '.join(args)} failed ({result.returncode}):\n{result.stderr}")
    return result  # type: ignore[no-any-return]


def free_port(host: str = "127.0.0.1") -> int:
    with socket.socket() as sock:
        sock.bind((host, 0))
        return int(sock.getsockname()[1])


def free_port_pair(host: str = "127.0.0.1") -> int:
    """A free port whose next port is free too: `zlh up` serves IDEs on listen port + 1."""
    while True:
        port = free_port(host)
        with socket.socket() as sock:
            try:
                sock.bind((host, port + 1))
            except OSError:
                continue
        return port


def wait_for_port(
    host: str, port: int, *, timeout_s: float = 30.0, proc: subprocess.Popen[bytes] | None = None
) -> None:
    """Poll until something accepts on host:port (not a sleep: returns as soon as it listens)."""
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if proc is not None and proc.poll() is not None:
            raise AssertionError(f"process exited with {proc.returncode} before listening")
        try:
            with socket.create_connection((host, port), timeout=0.5):
                return
        except OSError:
            time.sleep(0.05)
    raise AssertionError(f"nothing listened on {host}:{port} within {timeout_s}s")


def serve_store(store: Path, host: str = "127.0.0.1") -> Iterator[str]:
    """``zlh artifacts serve`` over ``store`` on ``host``, yielding its base URL."""
    port = free_port()
    proc = subprocess.Popen(
        [*ZLH, "artifacts", "serve", "--store", str(store), "--listen", f"{host}:{port}"],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        wait_for_port(host, port, proc=proc)
        yield f"http://{host}:{port}"
    finally:
        proc.terminate()
        proc.wait(timeout=10)


# -- agent routes served from a thread, behind the agent's own middlewares ---------------------


@dataclass
class LiveAgent:
    url: str
    port: int

    @property
    def ws_url(self) -> str:
        return "ws" + self.url.removeprefix("http")


@contextmanager
def serve_agent_app(setup: Callable[[web.Application], None], *, token: str) -> Iterator[LiveAgent]:
    """Run an aiohttp app built by ``setup`` on 127.0.0.1 (random port) in its own thread,
    behind the agent's own middlewares (error envelope, bearer secret)."""
    ready = threading.Event()
    state: dict[str, Any] = {}
    loop = asyncio.new_event_loop()

    async def start() -> web.AppRunner:
        app = web.Application(middlewares=[error_envelope, bearer_auth(AgentToken(token))])
        setup(app)
        runner = web.AppRunner(app)
        await runner.setup()
        await web.TCPSite(runner, "127.0.0.1", 0).start()
        state["port"] = runner.addresses[0][1]
        return runner

    def run() -> None:
        asyncio.set_event_loop(loop)
        try:
            state["runner"] = loop.run_until_complete(start())
        except BaseException as exc:
            state["error"] = exc
            return
        finally:
            ready.set()
        loop.run_forever()

    thread = threading.Thread(target=run, name="agent-under-test", daemon=True)
    thread.start()
    if not ready.wait(30) or "error" in state:
        raise AssertionError(f"test agent did not start: {state.get('error')}")
    try:
        yield LiveAgent(url=f"http://127.0.0.1:{state['port']}", port=state["port"])
    finally:
        asyncio.run_coroutine_threadsafe(state["runner"].cleanup(), loop).result(30)
        loop.call_soon_threadsafe(loop.stop)
        thread.join(30)
        loop.close()


# -- a console client (agent or API relay), and process checks ---------------------------------

MARK = rb"<<([^<>\r\n]*)>>"


class ConsoleClient:
    """A console client: types lines, waits for marked output, collects control messages."""

    def __init__(self, ws: ClientConnection) -> None:
        self.ws = ws
        self.buffer = b""
        self.controls: list[dict[str, Any]] = []

    def type(self, line: str) -> None:
        self.ws.send(line.encode() + b"\n")

    def ask(self, expression: str, timeout_s: float = 15.0) -> str:
        """Run ``echo <<EXPR>>`` split so the typed line itself never matches the marker."""
        self.type(f'echo "<""<{expression}>"">"')
        return self.expect(MARK, timeout_s).group(1).decode()

    def expect(self, pattern: bytes, timeout_s: float = 15.0) -> re.Match[bytes]:
        deadline = time.monotonic() + timeout_s
        while not (match := re.search(pattern, self.buffer)):
            left = deadline - time.monotonic()
            if left <= 0:
                raise AssertionError(f"no {pattern!r} in {self.buffer[-500:]!r}")
            self.receive(left)
        self.buffer = self.buffer[match.end() :]
        return match

    def receive(self, timeout_s: float) -> None:
        message = self.ws.recv(timeout=timeout_s)
        if isinstance(message, str):
            self.controls.append(json.loads(message))
        else:
            self.buffer += message

    def control(self, kind: str, timeout_s: float = 15.0) -> dict[str, Any]:
        deadline = time.monotonic() + timeout_s
        while not any(c["type"] == kind for c in self.controls):
            self.receive(max(deadline - time.monotonic(), 0.01))
        return next(c for c in self.controls if c["type"] == kind)


def descendants(pid: int) -> list[int]:
    """Every process under ``pid`` (its children, theirs, ...), by their parent pids."""
    children: dict[int, list[int]] = {}
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            parent = int(entry.joinpath("stat").read_text().rsplit(")", 1)[1].split()[1])
        except OSError:  # gone meanwhile
            continue
        children.setdefault(parent, []).append(int(entry.name))
    found, todo = [], list(children.get(pid, []))
    while todo:
        current = todo.pop()
        found.append(current)
        todo.extend(children.get(current, []))
    return found


def pid_gone(pid: int) -> bool:
    """The process has exited (a zombie only its reaper, init, still has to collect)."""
    try:
        state = Path(f"/proc/{pid}/stat").read_bytes().rsplit(b")", 1)[1].split()[0]
    except (FileNotFoundError, ProcessLookupError):
        return True
    return state == b"Z"


# -- zlh built the way a user builds it ---------------------------------------------------------


def copy_checkout(dest: Path) -> Path:
    """This checkout's sources at ``dest`` (with the portal's npm packages; without git, venvs,
    tests, earlier builds and compiled modules), to build zlh from as a user would."""
    shutil.copytree(
        REPO,
        dest,
        ignore=shutil.ignore_patterns(
            ".git",
            ".venv",
            ".data",
            "build",
            "dist",
            "*.egg-info",
            "*.so",
            "test-results",
            "tests",
            "bench",
            "__pycache__",
        ),
    )
    return dest


def outside_env(**extra: str) -> dict[str, str]:
    """This process's environment without what points Python at the checkout's venv or has a
    build compile the front (``make test`` sets ZLH_COMPILE_FRONT), plus ``extra``."""
    dropped = {"PYTHONPATH", "VIRTUAL_ENV", "ZLH_COMPILE_FRONT"}
    return {**{k: v for k, v in os.environ.items() if k not in dropped}, **extra}


def copy_catalog_entry(
    source: Path, target: Path, kind: ArtifactKind, name: str, version_name: str | None = None
) -> None:
    """Add ``source``'s ``kind``/``name`` artifact to ``target`` with ``zlh artifacts add``,
    carrying every field of its catalog entry (format, strip, bin dirs, metadata, labels): the
    default version, made the default in ``target`` too, or ``version_name``."""
    catalog = Catalog.model_validate_json((source / "catalog.json").read_text())
    entries = catalog.runtimes if kind is ArtifactKind.RUNTIME else catalog.addons
    entry = next(e for n, e in entries.items() if n == name)
    version = next(v for v in entry.versions if v.version == (version_name or entry.default))
    art = version.artifact
    meta = art.metadata
    args = [
        *("artifacts", "add", kind.value, name, version.version),
        *("--file", str(source / art.url), "--store", str(target)),
        *(("--default",) if version_name is None else ()),
        *("--format", art.format.value, "--strip-components", str(art.strip_components)),
        *(a for d in art.bin for a in ("--bin", d)),
        *(("--upstream-version", meta.upstream_version) if meta.upstream_version else ()),
        *(("--source", meta.source) if meta.source else ()),
        *(a for k, v in meta.labels.items() for a in ("--label", f"{k}={v}")),
    ]
    zlh(*args)
