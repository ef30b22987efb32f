"""The OpenAPI document's security: which operations take a session, and which an API token.

Derived from the routes themselves, so the document cannot disagree with what is enforced: an
operation whose dependencies include :func:`zlh.api.deps.current_user` takes a session
(``session``: the login's JWT as ``Authorization: Bearer``; the portal's cookie works too), and
also an API token (``apiToken``) with the scope it declares (``deps.require_scope``).
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from typing import Any

from fastapi import FastAPI
from fastapi.dependencies.models import Dependant
from fastapi.routing import APIRoute, APIWebSocketRoute, RouteContext, iter_route_contexts
from starlette.routing import BaseRoute

from zlh.api.apitokens import PREFIX
from zlh.api.deps import current_user, declared_scope

__all__ = ["SCHEMES", "install_security", "takes_credentials"]

SCHEMES: dict[str, dict[str, str]] = {
    "session": {
        "type": "http",
        "scheme": "bearer",
        "bearerFormat": "JWT",
        "description": "a session token from POST /api/auth/login (the portal's cookie, too): "
        "may do whatever its user may",
    },
    "apiToken": {
        "type": "http",
        "scheme": "bearer",
        "bearerFormat": f"{PREFIX}…",
        "description": "an API token from POST /api/tokens: only the operations that list it, "
        "with the scope they name",
    },
}


def _calls(dependant: Dependant) -> Iterable[Callable[..., Any] | None]:
    yield dependant.call
    for sub in dependant.dependencies:
        yield from _calls(sub)


def takes_credentials(route: BaseRoute) -> bool:
    """Whether the route authenticates its caller through ``deps`` (the HTTP routes'
    dependency, or the console's own call of ``authenticate``)."""
    if isinstance(route, APIWebSocketRoute):
        return True  # the console authenticates in its body (deps.authenticate)
    return isinstance(route, APIRoute) and any(
        call is current_user for call in _calls(route.dependant)
    )


def install_security(app: FastAPI) -> None:
    """Make ``app.openapi()`` declare the schemes and, per operation, the accepted ones."""
    build = app.openapi

    def openapi() -> dict[str, Any]:
        if app.openapi_schema is None:
            schema = build()
            schema.setdefault("components", {})["securitySchemes"] = SCHEMES
            for context in iter_route_contexts(app.routes):
                _declare(schema, context)
        return app.openapi_schema or {}

    app.openapi = openapi  # type: ignore[method-assign]


def _declare(schema: dict[str, Any], context: RouteContext) -> None:
    route = context.original_route
    if not isinstance(route, APIRoute) or not route.include_in_schema:
        return
    if not takes_credentials(route):
        return
    accepted: list[dict[str, list[str]]] = [{"session": []}]
    scope = declared_scope(route)
    if scope is not None:
        accepted.append({"apiToken": [scope.value]})
    operations = schema["paths"].get(context.path_format, {})
    for method in context.methods or ():
        operation = operations.get(method.lower())
        if operation is not None:
            operation["security"] = accepted
