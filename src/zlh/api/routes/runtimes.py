"""``/api/dev/{vmid}`` runtime versions: upgrade or switch (``PATCH``) and removal of an
inactive installed version (``DELETE …/runtimes/{runtime}/{version}``). Owner or admin."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Path, Response

from zlh.api.apitokens import Scope
from zlh.api.bodies import ContainerOut, RuntimeChangeRequest
from zlh.api.deps import CurrentUser, OwnedContainer, Svc, require_scope
from zlh.api.routes import ERRORS
from zlh.schemas import RuntimeName
from zlh.schemas.artifact import VERSION_PATTERN, Version

router = APIRouter(prefix="/api/dev", tags=["dev"], responses=ERRORS)


@router.patch("/{vmid}", status_code=202)
@require_scope(Scope.CONTAINERS_WRITE)
async def change_runtime(
    body: RuntimeChangeRequest, container: OwnedContainer, user: CurrentUser, svc: Svc
) -> ContainerOut:
    """Upgrade or switch the container's runtime to another catalog version (422 names an
    unknown runtime or version, or another language; 409 unless the container is ready). The
    agent installs it (verified, atomic) and switches to it while the container stays usable;
    follow the download at ``/api/dev/{vmid}/events``. ``version`` changes once the new version
    is active; a failed install leaves the old one active, ``status.runtimeChange.error`` says
    why."""
    changed = await svc.runtime_changes.change(container, user.username, body.runtime, body.version)
    return svc.lifecycle.out(changed)


@router.delete("/{vmid}/runtimes/{runtime}/{version}", status_code=204)
@require_scope(Scope.CONTAINERS_WRITE)
async def remove_runtime(
    container: OwnedContainer,
    user: CurrentUser,
    svc: Svc,
    runtime: Annotated[RuntimeName, Path(description="the runtime, e.g. node")],
    version: Annotated[
        Version, Path(pattern=VERSION_PATTERN, description="an installed, inactive version")
    ],
) -> Response:
    """Remove an installed version's directory (404 if it is not installed; 409 for the
    active version, which the error names)."""
    await svc.runtime_changes.remove(container, user.username, runtime.value, version)
    return Response(status_code=204)
