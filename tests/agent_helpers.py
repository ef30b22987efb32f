"""Test parts for the agent: synthetic tarballs (good and hostile), a misbehaving artifact server
that records what it was asked, payload builders and a real ``zlh agent`` subprocess."""

from __future__ import annotations

import asyncio
import hashlib
import io
import json
import os
import signal
import socket
import subprocess
import tarfile
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import httpx
from aiohttp import web

from support import ZLH, free_port, wait_for_port

TOKEN = "agent-test-secret"
AUTH = {"Authorization": f"Bearer {TOKEN}"}

# -- tarballs --------------------------------------------------------------------------------


@dataclass(frozen=True)
class Member:
    name: str
    kind: bytes = tarfile.REGTYPE
    data: bytes = b""
    mode: int = 0o644
    link: str = ""


def file(name: str, data: bytes = b"x", mode: int = 0o644) -> Member:
    return Member(name, tarfile.REGTYPE, data, mode)


def directory(name: str) -> Member:
    return Member(name, tarfile.DIRTYPE, mode=0o755)


def symlink(name: str, target: str) -> Member:
    return Member(name, tarfile.SYMTYPE, mode=0o777, link=target)


def hardlink(name: str, target: str) -> Member:
    return Member(name, tarfile.LNKTYPE, link=target)


def special(name: str, kind: bytes) -> Member:
    return Member(name, kind)


HELLO = b"#!/bin/sh\necho hello from the runtime\n"


def runtime_members(top: str = "node-v22") -> list[Member]:
    """A small runtime-shaped tree: bin/ with an executable and a relative link, lib/."""
    return [
        directory(top),
        directory(f"{top}/bin"),
        file(f"{top}/bin/hello", HELLO, 0o755),
        symlink(f"{top}/bin/hi", "hello"),
        directory(f"{top}/lib"),
        file(f"{top}/lib/data.txt", b"payload " * 100),
        hardlink(f"{top}/lib/data-again.txt", f"{top}/lib/data.txt"),
    ]


def tarball(members: list[Member], fmt: str = "tar.gz") -> bytes:
    raw = io.BytesIO()
    mode = {"tar.gz": "w:gz", "tar.xz": "w:xz", "tar": "w"}.get(fmt, "w")
    with tarfile.open(fileobj=raw, mode=mode) as tar:  # type: ignore[call-overload]
        for m in members:
            info = tarfile.TarInfo(m.name)
            info.type = m.kind
            info.mode = m.mode
            info.linkname = m.link
            info.size = len(m.data) if m.kind == tarfile.REGTYPE else 0
            info.uid = info.gid = 1000
            tar.addfile(info, io.BytesIO(m.data) if m.kind == tarfile.REGTYPE else None)
    data = raw.getvalue()
    if fmt == "tar.zst":
        import zstandard

        return zstandard.ZstdCompressor().compress(data)
    return data


def sha256(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


# -- the artifact server ---------------------------------------------------------------------


@dataclass
class Behaviour:
    data: bytes
    drop_at: int | None = None  # close the connection after this byte offset ...
    drops: int = 0  # ... this many times (-1: every time)
    gate_at: int | None = None  # pause at this offset until `gate` is set (first request only)
    gate: threading.Event = field(default_factory=threading.Event)
    ignore_range: bool = False  # answer 200 with the whole file, like a server without Range


@dataclass(frozen=True)
class Request:
    path: str
    range: str | None


class ArtifactServer:
    """A real HTTP server (thread) with per-file misbehaviour and a log of every GET."""

    def __init__(self) -> None:
        self.files: dict[str, Behaviour] = {}
        self.requests: list[Request] = []
        self._lock = threading.Lock()
        server = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, *_args: object) -> None:
                pass

            def do_GET(self) -> None:
                server._get(self)

        self.httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.httpd.daemon_threads = True
        self.url = f"http://127.0.0.1:{self.httpd.server_address[1]}"
        self._thread = threading.Thread(
            target=self.httpd.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True
        )
        self._thread.start()

    def add(self, name: str, data: bytes, **behaviour: Any) -> str:
        self.files[name] = Behaviour(data, **behaviour)
        return f"{self.url}/{name}"

    def gets(self, name: str) -> list[Request]:
        with self._lock:
            return [r for r in self.requests if r.path == f"/{name}"]

    def close(self) -> None:
        for b in self.files.values():
            b.gate.set()
        self.httpd.shutdown()
        self.httpd.server_close()

    def _get(self, h: BaseHTTPRequestHandler) -> None:
        rng = h.headers.get("Range")
        with self._lock:
            self.requests.append(Request(h.path, rng))
            first = len([r for r in self.requests if r.path == h.path]) == 1
        b = self.files.get(h.path.lstrip("/"))
        if b is None:
            h.send_error(404)
            return
        if b.ignore_range:
            rng = None
        start = int(rng.removeprefix("bytes=").split("-")[0]) if rng else 0
        body = b.data[start:]
        h.send_response(206 if rng else 200)
        if rng:
            h.send_header("Content-Range", f"bytes {start}-{len(b.data) - 1}/{len(b.data)}")
        h.send_header("Content-Length", str(len(body)))
        h.send_header("ETag", f'"{sha256(b.data)[:16]}"')
        h.end_headers()
        end = len(b.data)
        if b.drop_at is not None and b.drops != 0:
            end = max(start, b.drop_at)
            with self._lock:
                b.drops -= 1 if b.drops > 0 else 0
        try:
            if first and b.gate_at is not None and start < b.gate_at:
                h.wfile.write(b.data[start : b.gate_at])
                h.wfile.flush()
                b.gate.wait(120)
                start = b.gate_at
            h.wfile.write(b.data[start:end])
            h.wfile.flush()
        except OSError:
            return
        if end < len(b.data):
            h.close_connection = True
            h.connection.shutdown(socket.SHUT_RDWR)


@contextmanager
def artifact_server() -> Iterator[ArtifactServer]:
    server = ArtifactServer()
    try:
        yield server
    finally:
        server.close()


# -- payloads --------------------------------------------------------------------------------


def artifact(
    url: str, data: bytes, *, fmt: str = "tar.gz", strip: int = 1, **over: Any
) -> dict[str, Any]:
    art = {
        "url": url,
        "sha256": sha256(data),
        "size": len(data),
        "format": fmt,
        "stripComponents": strip,
        "bin": ["bin"],
    }
    art.update(over)
    return art


def payload(
    art: dict[str, Any], *, name: str = "node", version: str = "22", vmid: int = 101, **over: Any
) -> dict[str, Any]:
    data: dict[str, Any] = {
        "vmid": vmid,
        "runtime": {"name": name, "version": version, "artifact": art},
        "addons": [],
        "devUser": {"name": "dev", "home": "/home/dev", "workspace": "/home/dev/workspace"},
    }
    data.update(over)
    return data


# -- a real agent process ----------------------------------------------------------------------


class AgentClient:
    """What tests do with an agent, whichever way it runs: ``http`` is an authorised client."""

    http: httpx.Client
    where = ""

    def status(self) -> dict[str, Any]:
        resp = self.http.get("/status")
        assert resp.status_code == 200, resp.text
        return resp.json()  # type: ignore[no-any-return]

    def provision(self, body: dict[str, Any]) -> httpx.Response:
        return self.http.post("/provision", json=body)

    def wait_for(
        self, check: Callable[[dict[str, Any]], bool], *, timeout_s: float = 60.0
    ) -> dict[str, Any]:
        return poll(self.status, check, timeout_s=timeout_s, what=self.where)


class AgentProcess(AgentClient):
    """``zlh agent`` as an operator starts it, on a free port, with its own --root."""

    def __init__(self, root: Path, *extra: str) -> None:
        self.root = root
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        token = root.parent / f"{root.name}.token"
        token.write_text(TOKEN + "\n")
        self.argv = [
            *ZLH,
            "agent",
            "--listen",
            f"127.0.0.1:{self.port}",
            "--token-file",
            str(token),
            "--root",
            str(root),
            "--bind-host",
            "127.0.0.1",
            *extra,
        ]
        self.log = root.parent / f"{root.name}.agent.log"
        self.where = f"agent log {self.log}"
        self.proc: subprocess.Popen[bytes] | None = None
        self.http = httpx.Client(base_url=self.url, headers=AUTH, timeout=30)

    def start(self) -> AgentProcess:
        with self.log.open("ab") as out:
            self.proc = subprocess.Popen(self.argv, stdout=out, stderr=subprocess.STDOUT)
        try:
            wait_for_port("127.0.0.1", self.port, proc=self.proc, timeout_s=60)
        except AssertionError:
            self.stop()
            raise AssertionError(f"zlh agent did not start:\n{self.log.read_text()}") from None
        return self

    def kill9(self) -> None:
        assert self.proc is not None
        self.proc.send_signal(signal.SIGKILL)
        self.proc.wait(10)

    def stop(self) -> None:
        self.http.close()
        if self.proc is not None and self.proc.poll() is None:
            self.proc.terminate()
            self.proc.wait(30)


def poll(
    get: Callable[[], dict[str, Any]],
    check: Callable[[dict[str, Any]], bool],
    *,
    timeout_s: float = 60.0,
    what: str = "",
) -> dict[str, Any]:
    """Call ``get`` until ``check`` holds (a deadline, not a sleep-as-synchronisation)."""
    deadline = time.monotonic() + timeout_s
    last: dict[str, Any] = {}
    while time.monotonic() < deadline:
        last = get()
        if check(last):
            return last
        time.sleep(0.05)
    raise AssertionError(f"condition not met in {timeout_s}s ({what}); last: {json.dumps(last)}")


def settled(status: dict[str, Any]) -> bool:
    return status["state"] in ("ready", "failed")


def kill_recorded_process(root: Path, name: str) -> None:
    """End a supervised process an agent left behind (its pid file lives under --root)."""
    pid_file = root / "var/lib/zlh-agent/run" / f"{name}.pid"
    try:
        pid = int(json.loads(pid_file.read_text())["pid"])
        os.killpg(pid, signal.SIGKILL)
    except (OSError, ValueError, KeyError):
        pass


class InProcessAgent(AgentClient):
    """The agent app (``create_app``) on a real socket in a background event loop, so a test can
    pass an ``AgentConfig`` (fast retries, short health intervals) and still talk real HTTP."""

    def __init__(self, config: Any) -> None:
        from zlh.agent.app import create_app

        self.app = create_app(config, TOKEN)
        self.loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self.loop.run_forever, daemon=True)
        self._thread.start()
        self.runner = web.AppRunner(self.app)
        self._call(self.runner.setup())
        port = free_port()
        self._call(web.TCPSite(self.runner, "127.0.0.1", port).start())
        self.url = f"http://127.0.0.1:{port}"
        self.http = httpx.Client(base_url=self.url, headers=AUTH, timeout=30)

    def _call(self, coro: Any) -> Any:
        return asyncio.run_coroutine_threadsafe(coro, self.loop).result(120)

    def close(self) -> None:
        self.http.close()
        self._call(self.runner.cleanup())
        self.loop.call_soon_threadsafe(self.loop.stop)
        self._thread.join(30)
        self.loop.close()


@contextmanager
def in_process_agent(root: Path, **config: Any) -> Iterator[InProcessAgent]:
    from zlh.agent.config import AgentConfig
    from zlh.install.download import RetryPolicy

    config.setdefault("retry", RetryPolicy(attempts=3, backoff_s=0.01, read_timeout_s=10))
    agent = InProcessAgent(AgentConfig(root=root, bind_host="127.0.0.1", **config))
    try:
        yield agent
    finally:
        agent.close()
