"""The artifact HTTP server: a pure ASGI app over a store directory.

GET and HEAD only. Every response carries Content-Length, ETag (the sha256 for a catalog
artifact whose size still matches, else size+mtime), Last-Modified and Accept-Ranges; a single
``Range: bytes=…`` gets 206 with Content-Range (416 when unsatisfiable, several ranges get the
whole file), ``If-None-Match`` gets 304, ``If-Range`` guards a resumed download. Paths resolve
through :func:`zlh.artifacts.files.file_in_store`, so ``..``, hidden files and symlinks out of
the store are 404. Mountable under a ``root_path`` (the API mounts it at ``/artifacts/``).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
from collections.abc import Awaitable, Callable, MutableMapping
from dataclasses import dataclass
from email.utils import formatdate
from pathlib import Path
from typing import Any, BinaryIO

from zlh.artifacts.errors import ArtifactError
from zlh.artifacts.files import CHUNK_SIZE, file_in_store
from zlh.artifacts.store import CATALOG_FILE, load_catalog
from zlh.http_range import UNSATISFIABLE, ByteRange, parse_range
from zlh.schemas import ArtifactKind, ErrorBody

__all__ = ["OTHER", "ArtifactServer"]

# What ``downloads`` counts a file under that is not an artifact of the catalog.
OTHER = "other"

Scope = MutableMapping[str, Any]
Message = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[Message]]
Send = Callable[[Message], Awaitable[None]]

logger = logging.getLogger(__name__)

_CONTENT_TYPES = {
    ".json": b"application/json",
    ".gz": b"application/gzip",
    ".tgz": b"application/gzip",
    ".xz": b"application/x-xz",
    ".zst": b"application/zstd",
}


@dataclass(frozen=True)
class _Opened:
    path: Path  # real path inside the store
    file: BinaryIO
    size: int
    mtime: float
    etag: str
    artifact: str  # the catalog's kind/name/version, or OTHER


def _etag_matches(header: str, etag: str) -> bool:
    """Weak comparison, as If-None-Match requires."""
    tags = [t.strip().removeprefix("W/") for t in header.split(",")]
    return "*" in tags or etag in tags


class ArtifactServer:
    """ASGI app serving the files of the store at ``store_root``."""

    def __init__(self, store_root: Path, *, chunk_size: int = CHUNK_SIZE) -> None:
        if chunk_size <= 0:
            raise ValueError("chunk_size must be positive")
        self.root = Path(store_root)
        self._catalog_file = Path(os.path.realpath(self.root / CATALOG_FILE))
        self.chunk_size = chunk_size
        self._catalog_stamp: tuple[int, int, int] | None = None
        self._digests: dict[str, tuple[str, int, str]] = {}
        # Downloads started (GETs from the first byte), by catalog artifact: zlh.api.metrics.
        self.downloads: dict[str, int] = {}

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "lifespan":
            await _lifespan(receive, send)
            return
        if scope["type"] == "websocket":  # closing before accepting means 403
            await send({"type": "websocket.close", "code": 1008})
            return
        if scope["type"] != "http":
            raise ValueError(f"ArtifactServer serves http, not {scope['type']}")
        method = scope["method"]
        if method not in {"GET", "HEAD"}:
            await _error(send, 405, "method not allowed", [(b"allow", b"GET, HEAD")])
            return
        opened = await asyncio.to_thread(self._open, _route_path(scope).removeprefix("/"))
        if opened is None:
            await _error(send, 404, "no such file in the artifact store")
            return
        with opened.file:
            await self._respond(scope, receive, send, opened)

    def _open(self, relative: str) -> _Opened | None:
        """Resolve, open and describe the file (blocking: runs in a worker thread)."""
        path = file_in_store(self.root, relative)
        if path is None:
            return None
        try:
            file = path.open("rb")
        except OSError:
            return None
        st = os.fstat(file.fileno())
        entry = self._catalog_entry(path, st.st_size)
        if entry is None:
            return _Opened(
                path, file, st.st_size, st.st_mtime, f'"{st.st_size:x}-{st.st_mtime_ns:x}"', OTHER
            )
        return _Opened(path, file, st.st_size, st.st_mtime, f'"{entry[0]}"', entry[1])

    async def _respond(self, scope: Scope, receive: Receive, send: Send, opened: _Opened) -> None:
        size, etag = opened.size, opened.etag
        headers = [
            (b"etag", etag.encode()),
            (b"last-modified", formatdate(opened.mtime, usegmt=True).encode()),
            (b"accept-ranges", b"bytes"),
        ]
        if opened.path == self._catalog_file:
            headers.append((b"cache-control", b"no-cache"))
        request = {k.decode("latin-1"): v.decode("latin-1") for k, v in scope["headers"]}
        if_none_match = request.get("if-none-match")
        if if_none_match is not None and _etag_matches(if_none_match, etag):
            await send({"type": "http.response.start", "status": 304, "headers": headers})
            await send({"type": "http.response.body", "body": b""})
            return
        headers.append(
            (b"content-type", _CONTENT_TYPES.get(opened.path.suffix, b"application/octet-stream"))
        )
        status, start, length = 200, 0, size
        range_header = request.get("range")
        if_range = request.get("if-range")
        wants_range = scope["method"] == "GET" and range_header is not None
        if wants_range and (if_range is None or if_range.strip() == etag):
            parsed = parse_range(range_header or "", size)
            if parsed == UNSATISFIABLE:
                headers.append((b"content-range", f"bytes */{size}".encode()))
                await _error(send, 416, "range not satisfiable", headers)
                return
            if isinstance(parsed, ByteRange):
                status, start, length = 206, parsed.start, parsed.length
                headers.append(
                    (b"content-range", f"bytes {parsed.start}-{parsed.end}/{size}".encode())
                )
        headers.append((b"content-length", str(length).encode()))
        if scope["method"] == "GET" and start == 0 and opened.path != self._catalog_file:
            self.downloads[opened.artifact] = self.downloads.get(opened.artifact, 0) + 1
        await send({"type": "http.response.start", "status": status, "headers": headers})
        if scope["method"] == "HEAD" or length == 0:
            await send({"type": "http.response.body", "body": b""})
            return
        await self._stream(receive, send, opened.file, start, length)

    async def _stream(
        self, receive: Receive, send: Send, file: BinaryIO, start: int, length: int
    ) -> None:
        """Send ``length`` bytes from ``start``; stop early if the client leaves.

        Reads run in a worker thread (a cold disk never stalls the event loop) and one chunk
        ahead, so the next read overlaps sending the current chunk.
        """
        gone = asyncio.Event()

        async def watch_disconnect() -> None:
            while (await receive())["type"] != "http.disconnect":
                pass
            gone.set()

        def read(size: int) -> bytes:
            return file.read(min(self.chunk_size, size))

        watcher = asyncio.create_task(watch_disconnect())
        file.seek(start)
        remaining = length
        pending: asyncio.Future[bytes] | None = asyncio.ensure_future(
            asyncio.to_thread(read, remaining)
        )
        try:
            while pending is not None and not gone.is_set():
                chunk = await pending
                pending = None
                if not chunk:
                    raise ArtifactError(f"{file.name} shrank while being served")
                remaining -= len(chunk)
                if remaining > 0:
                    pending = asyncio.ensure_future(asyncio.to_thread(read, remaining))
                more = remaining > 0
                await send({"type": "http.response.body", "body": chunk, "more_body": more})
        finally:
            watcher.cancel()
            if pending is not None:  # a thread cannot be cancelled: let it finish its read
                with contextlib.suppress(Exception):
                    await asyncio.shield(pending)
            with contextlib.suppress(asyncio.CancelledError):
                await watcher

    def _catalog_entry(self, path: Path, size: int) -> tuple[str, str] | None:
        """The sha256 and kind/name/version if ``path`` is a catalog artifact of this size."""
        catalog_path = self.root / CATALOG_FILE
        try:
            st = catalog_path.stat()
            stamp = (st.st_ino, st.st_mtime_ns, st.st_size)
        except OSError:
            stamp = None
        if stamp != self._catalog_stamp:
            self._catalog_stamp = stamp
            self._digests = self._load_digests()
        digest = self._digests.get(str(path))
        if digest is None or digest[1] != size:
            return None
        return digest[0], digest[2]

    def _load_digests(self) -> dict[str, tuple[str, int, str]]:
        try:
            catalog = load_catalog(self.root / CATALOG_FILE)
        except ArtifactError as exc:
            logger.warning("artifact ETags fall back to size+mtime: %s", exc.message)
            return {}
        digests: dict[str, tuple[str, int, str]] = {}
        for kind in ArtifactKind:
            for name, entry in catalog.section(kind).items():
                for item in entry.versions:
                    local = file_in_store(self.root, item.artifact.url)
                    if local is not None:
                        label = f"{kind.value}/{name}/{item.version}"
                        digests[str(local)] = (item.artifact.sha256, item.artifact.size, label)
        return digests


def _route_path(scope: Scope) -> str:
    """The path below the mount point: servers put ``root_path`` in front of ``path``."""
    path: str = scope["path"]
    root_path: str = scope.get("root_path", "")
    if root_path and path.startswith(root_path):
        return path[len(root_path) :]
    return path


async def _error(
    send: Send, status: int, message: str, headers: list[tuple[bytes, bytes]] | None = None
) -> None:
    body = ErrorBody(message=message).model_dump_json(exclude_none=True).encode()
    # A 416 keeps the validators of the file; the body describes the error, not the file.
    extra = [(k, v) for k, v in headers or [] if k not in {b"content-type", b"content-length"}]
    extra += [(b"content-type", b"application/json"), (b"content-length", str(len(body)).encode())]
    await send({"type": "http.response.start", "status": status, "headers": extra})
    await send({"type": "http.response.body", "body": body})


async def _lifespan(receive: Receive, send: Send) -> None:
    while True:
        message = await receive()
        if message["type"] == "lifespan.startup":
            await send({"type": "lifespan.startup.complete"})
        elif message["type"] == "lifespan.shutdown":
            await send({"type": "lifespan.shutdown.complete"})
            return
