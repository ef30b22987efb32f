"""The agent's file browser routes: list, read (Range), upload, mkdir, move, delete.

Every filesystem call goes through :class:`~zlh.agent.workspace.Workspace` (confinement) on the
:class:`~zlh.agent.runas.FsRunner` (the dev user's identity). Errors are raised as
``ZlhError`` and leave as ``ErrorBody`` JSON through the agent's ``error_envelope`` middleware;
authentication is its ``bearer_auth`` middleware. These routes add neither of their own.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import TypeVar

from aiohttp import web
from pydantic import BaseModel, ValidationError

from zlh.agent.runas import DevEnvironmentSource, DevIdentity, FsRunner
from zlh.agent.web_errors import InvalidRequest, error_json
from zlh.agent.workspace import BadPath, RelPath, TooLarge, Workspace, parse_client_path
from zlh.errors import ZlhError
from zlh.http_range import UNSATISFIABLE, ByteRange, parse_range
from zlh.schemas.errors import validation_problems
from zlh.schemas.files import MkdirRequest, MoveRequest, PathResult

__all__ = ["FileRoutes", "NotProvisioned"]

CHUNK_BYTES = 256 * 1024

M = TypeVar("M", bound=BaseModel)


def _json(model: BaseModel, status: int = 200) -> web.Response:
    return web.json_response(model.model_dump(mode="json"), status=status)


def _path(request: web.Request, name: str = "path", *, default: str | None = None) -> RelPath:
    values = request.query.getall(name, [])
    if len(values) > 1:
        raise BadPath(f"query parameter {name!r} given {len(values)} times")
    if not values and default is None:
        raise BadPath(f"query parameter {name!r} is required")
    return parse_client_path(values[0] if values else str(default))


def _flag(request: web.Request, name: str, *, default: bool) -> bool:
    value = request.query.get(name)
    if value is None:
        return default
    if value.lower() in ("true", "1"):
        return True
    if value.lower() in ("false", "0"):
        return False
    raise BadPath(f"query parameter {name!r} must be true or false, got {value!r}")


async def _body(request: web.Request, model: type[M]) -> M:
    try:
        return model.model_validate_json(await request.read())
    except ValidationError as exc:
        raise InvalidRequest("invalid request body", validation_problems(exc)) from exc


class NotProvisioned(ZlhError):
    status_code = 503


class _Targets:
    """The workspace and fs threads of the current dev environment, built on first use.

    The dev user may only exist once the first payload is provisioned, so the environment is
    asked for on every request; each (workspace, identity) gets its runner once.
    """

    def __init__(self, environment: DevEnvironmentSource) -> None:
        self._environment = environment
        self._built: dict[tuple[Path, DevIdentity], tuple[Workspace, FsRunner]] = {}

    def get(self) -> tuple[Workspace, FsRunner]:
        dev = self._environment()
        if dev is None:
            raise NotProvisioned("the dev environment is not set up yet; provision the container")
        key = (dev.workspace, dev.identity)
        if key not in self._built:
            self._built[key] = (Workspace(dev.workspace), FsRunner(dev.identity))
        return self._built[key]

    def close(self) -> None:
        for _, runner in self._built.values():
            runner.close()


class FileRoutes:
    """The ``/files`` handlers; ``zlh.agent.lazy_routes`` mounts them."""

    def __init__(self, environment: DevEnvironmentSource, max_upload_bytes: int) -> None:
        self.targets = _Targets(environment)
        self.max_upload_bytes = max_upload_bytes

    async def list(self, request: web.Request) -> web.StreamResponse:
        rel = _path(request, default="")
        workspace, runner = self.targets.get()
        return _json(await runner.run(workspace.list_dir, rel))

    async def read(self, request: web.Request) -> web.StreamResponse:
        rel = _path(request)
        workspace, runner = self.targets.get()
        fd, size = await runner.run(workspace.open_read, rel)
        try:
            header = request.headers.get("Range")
            span = parse_range(header, size) if header else None
            if span == UNSATISFIABLE:
                refused = error_json(416, f"range {header!r} is outside the file ({size} bytes)")
                refused.headers["Content-Range"] = f"bytes */{size}"
                return refused
            start, end = (span.start, span.end + 1) if isinstance(span, ByteRange) else (0, size)
            response = web.StreamResponse(status=206 if span else 200)
            response.content_type = "application/octet-stream"
            response.content_length = end - start
            response.headers["Accept-Ranges"] = "bytes"
            response.headers["X-Content-Type-Options"] = "nosniff"
            if span:
                response.headers["Content-Range"] = f"bytes {start}-{end - 1}/{size}"
            await response.prepare(request)
            while start < end:
                chunk = await runner.run(os.pread, fd, min(CHUNK_BYTES, end - start), start)
                if not chunk:
                    break  # the file shrank while we sent it; the short body tells the client
                await response.write(chunk)
                start += len(chunk)
            await response.write_eof()
            return response
        finally:
            os.close(fd)

    async def write(self, request: web.Request) -> web.StreamResponse:
        rel = _path(request)
        overwrite = _flag(request, "overwrite", default=True)
        declared = request.content_length
        if declared is not None and declared > self.max_upload_bytes:
            raise self._too_large(rel)
        workspace, runner = self.targets.get()
        upload = await runner.run(workspace.begin_upload, rel, overwrite=overwrite)
        try:
            async for chunk in request.content.iter_chunked(CHUNK_BYTES):
                if upload.size + len(chunk) > self.max_upload_bytes:
                    raise self._too_large(rel)
                await runner.run(upload.write, chunk)
            if declared is not None and upload.size != declared:
                raise BadPath(f"upload cut off after {upload.size} of {declared} bytes")
            await runner.run(upload.commit)
        finally:
            # Synchronous on purpose: it must run even when the task is being cancelled. It only
            # unlinks our own temp name relative to the directory descriptor we hold.
            upload.abort()
        return _json(PathResult(path=rel.text, display=rel.display, size=upload.size), 201)

    def _too_large(self, rel: RelPath) -> TooLarge:
        return TooLarge(
            f"upload to {rel.display} is larger than the limit of {self.max_upload_bytes} bytes"
        )

    async def mkdir(self, request: web.Request) -> web.StreamResponse:
        body = await _body(request, MkdirRequest)
        rel = parse_client_path(body.path)
        workspace, runner = self.targets.get()
        await runner.run(workspace.mkdir, rel, parents=body.parents)
        return _json(PathResult(path=rel.text, display=rel.display), 201)

    async def move(self, request: web.Request) -> web.StreamResponse:
        body = await _body(request, MoveRequest)
        source, destination = parse_client_path(body.source), parse_client_path(body.destination)
        workspace, runner = self.targets.get()
        await runner.run(workspace.move, source, destination, overwrite=body.overwrite)
        return _json(PathResult(path=destination.text, display=destination.display))

    async def delete(self, request: web.Request) -> web.StreamResponse:
        rel = _path(request)
        recursive = _flag(request, "recursive", default=False)
        workspace, runner = self.targets.get()
        await runner.run(workspace.delete, rel, recursive=recursive)
        return web.Response(status=204)

    async def close(self, _app: web.Application) -> None:
        self.targets.close()
