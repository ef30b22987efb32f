"""``/api/dev/{vmid}/events``: Server-Sent Events of state and progress until ready, failed or
stopped (nothing more happens without a new request), or until a ready container's runtime
version change is done (``PATCH /api/dev/{vmid}``)."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator

from fastapi import APIRouter
from fastapi.responses import StreamingResponse

from zlh.api.apitokens import Scope
from zlh.api.containers import container_event
from zlh.api.db import ContainerState
from zlh.api.deps import Svc, VisibleContainer, require_scope
from zlh.api.events import sse
from zlh.api.routes import ERRORS
from zlh.api.services import Services
from zlh.schemas import RuntimeChangeState

router = APIRouter(prefix="/api/dev", tags=["dev"], responses=ERRORS)

KEEPALIVE_S = 15.0
_FINAL = {
    ContainerState.READY.value,
    ContainerState.FAILED.value,
    ContainerState.STOPPED.value,
    "deleted",
}


def _changing(svc: Services, vmid: int) -> bool:
    """The agent is installing another runtime version for this container right now."""
    container = svc.registry.get(vmid)
    change = container.status.runtime_change if container and container.status else None
    return change is not None and change.state is RuntimeChangeState.INSTALLING


@router.get(
    "/{vmid}/events",
    response_class=StreamingResponse,
    responses={200: {"content": {"text/event-stream": {}}}},
)
@require_scope(Scope.CONTAINERS_READ)
async def events(container: VisibleContainer, svc: Svc) -> StreamingResponse:
    """``event: status`` frames (state, reason, progress, error) from now until ready, failed
    or stopped, and while a runtime version change installs."""
    vmid = container.vmid

    async def stream() -> AsyncIterator[bytes]:
        async with svc.bus.subscribe(vmid) as queue:
            current = svc.registry.get(vmid)
            if current is None:
                return
            event = container_event(current)
            yield sse("status", event)
            while event.state not in _FINAL or _changing(svc, vmid):
                try:
                    async with asyncio.timeout(KEEPALIVE_S):
                        event = await queue.get()
                except TimeoutError:
                    yield b": keepalive\n\n"
                    continue
                yield sse("status", event)

    return StreamingResponse(
        stream(),
        media_type="text/event-stream",
        headers={"Cache-Control": "no-store", "X-Accel-Buffering": "no"},
    )
