"""Provisioning routes: ``POST /provision``, ``GET /status``, the runtime versions: change
(``POST /runtime``), activation and removal, and the container secret's rotation
(``PUT /token``)."""

from __future__ import annotations

import asyncio
import functools
import json
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import TypeVar

from aiohttp import web
from pydantic import TypeAdapter, ValidationError

from zlh.agent.errors import Conflict
from zlh.agent.memory import HeapTrimmer
from zlh.agent.provisioner import Provisioner
from zlh.agent.status import build_status
from zlh.agent.token import AgentToken
from zlh.agent.web_errors import InvalidRequest
from zlh.schemas import (
    AgentState,
    FieldProblem,
    ProvisionPayload,
    RuntimeName,
    RuntimeSpec,
    TokenChange,
    validation_problems,
)
from zlh.schemas._base import WireModel
from zlh.schemas.artifact import Version

__all__ = ["PROVISIONER", "setup_provision_routes"]

PROVISIONER = web.AppKey("provisioner", Provisioner)
TRIMMER = web.AppKey("trimmer", HeapTrimmer)
BodyT = TypeVar("BodyT", bound=WireModel)


def _status(
    prov: Provisioner, status: int = 200, headers: dict[str, str] | None = None
) -> web.Response:
    body = build_status(prov).model_dump_json()
    return web.Response(text=body, status=status, content_type="application/json", headers=headers)


async def _body(request: web.Request, model: type[BodyT], what: str) -> BodyT:
    """The request's JSON body as ``model``; 422 naming the fields otherwise."""
    try:
        data = await request.json(loads=json.loads)
    except ValueError as exc:
        problem = FieldProblem(field="(body)", detail=f"not JSON: {exc}")
        raise InvalidRequest(f"the {what} is not valid JSON", [problem]) from exc
    try:
        return model.model_validate(data)
    except ValidationError as exc:
        problems = validation_problems(exc)
        fields = ", ".join(p.field for p in problems)
        raise InvalidRequest(f"invalid {what}: {fields}", problems) from exc


async def provision(request: web.Request) -> web.Response:
    prov = request.app[PROVISIONER]
    payload = await _body(request, ProvisionPayload, "provisioning payload")
    joined = prov.submit(payload)
    request.app[TRIMMER].after_work()
    return _status(prov, 202, {"X-Zlh-Joined": "true" if joined else "false"})


async def status(request: web.Request) -> web.Response:
    return _status(request.app[PROVISIONER])


async def change_runtime(request: web.Request) -> web.Response:
    """Install a runtime version beside the active one and switch to it (202 at once)."""
    prov = request.app[PROVISIONER]
    prov.change_runtime(await _body(request, RuntimeSpec, "runtime"))
    request.app[TRIMMER].after_work()
    return _status(prov, 202)


@functools.cache
def _version() -> TypeAdapter[str]:
    """Built on the first runtime route, not at start: an idle agent keeps no spare validator."""
    return TypeAdapter(Version)


def _runtime(request: web.Request) -> tuple[str, str]:
    name, version = request.match_info["name"], request.match_info["version"]
    problems = []
    if name not in {n.value for n in RuntimeName}:
        known = ", ".join(n.value for n in RuntimeName)
        problems.append(FieldProblem(field="name", detail=f"unknown runtime (known: {known})"))
    try:
        _version().validate_python(version)
    except ValidationError as exc:
        detail = exc.errors(include_url=False)[0]["msg"]
        problems.append(FieldProblem(field="version", detail=detail))
    if problems:
        raise InvalidRequest(f"no such runtime version: {name} {version}", problems)
    return name, version


async def activate(request: web.Request) -> web.Response:
    prov = request.app[PROVISIONER]
    name, version = _runtime(request)
    prov.runtimes.activate(name, version)
    return _status(prov)


async def remove(request: web.Request) -> web.Response:
    prov = request.app[PROVISIONER]
    name, version = _runtime(request)
    lock = prov.installer.lock(prov.layout.runtime(name, version))
    if lock.locked():
        raise Conflict(f"runtime {name} {version} is being installed; try again when done")
    async with lock:  # no install of this version can start while its tree goes away
        await asyncio.to_thread(prov.runtimes.remove, name, version)
    return _status(prov)


def token_route(token: AgentToken) -> Callable[[web.Request], Awaitable[web.Response]]:
    async def change_token(request: web.Request) -> web.Response:
        """Accept the body's secret from now on; the current one is refused after the answer."""
        body = await _body(request, TokenChange, "token change")
        await asyncio.to_thread(token.replace, body.token)
        return web.Response(status=204)

    return change_token


def setup_provision_routes(
    app: web.Application, provisioner: Provisioner, token: AgentToken
) -> None:
    app[PROVISIONER] = provisioner
    trimmer = app[TRIMMER] = HeapTrimmer(provisioner.wait_idle)
    app.router.add_put("/token", token_route(token))
    app.router.add_post("/provision", provision)
    app.router.add_get("/status", status)
    app.router.add_post("/runtime", change_runtime)
    app.router.add_post("/runtimes/{name}/{version}/activate", activate)
    app.router.add_delete("/runtimes/{name}/{version}", remove)

    async def lifecycle(_app: web.Application) -> AsyncIterator[None]:
        await provisioner.restore()
        if provisioner.state is AgentState.PROVISIONING:  # the persisted payload, again
            trimmer.after_work()
        yield
        await trimmer.close()
        await provisioner.close()

    app.cleanup_ctx.append(lifecycle)
