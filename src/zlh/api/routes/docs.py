"""``/api/docs`` and ``/api/openapi.json``, for signed-in users only.

FastAPI's own docs page loads Swagger UI from a CDN; this one serves it from the portal's
vendored npm package (``swagger-ui-dist``), so the page makes no request beyond this host
and runs under the portal's Content-Security-Policy. Signed out, an API client gets 401 and
a browser asking for a page is sent to the sign-in page, which brings it back here.
"""

from __future__ import annotations

from typing import Any
from urllib.parse import quote

from fastapi import APIRouter, Request, Response
from fastapi.responses import FileResponse, JSONResponse, RedirectResponse

from zlh.api.deps import Svc, current_user
from zlh.api.errors import NotAuthenticated
from zlh.portal import DOCS_PAGE, PAGE_HEADERS

router = APIRouter()

LOGIN_PATH = "/login"


def _signed_in(request: Request, svc: Svc) -> Response | None:
    """None when signed in; else the redirect to sign in for a browser (401 for others)."""
    try:
        current_user(request, svc)
    except NotAuthenticated:
        if "text/html" not in request.headers.get("accept", ""):
            raise
        target = quote(request.url.path, safe="/")
        return RedirectResponse(f"{LOGIN_PATH}?next={target}", status_code=303)
    return None


@router.get("/api/docs", include_in_schema=False)
def docs(request: Request, svc: Svc) -> Response:
    return _signed_in(request, svc) or FileResponse(
        DOCS_PAGE, media_type="text/html", headers=PAGE_HEADERS
    )


@router.get("/api/openapi.json", include_in_schema=False)
def openapi(request: Request, svc: Svc) -> Response:
    refused = _signed_in(request, svc)
    if refused is not None:
        return refused
    schema: dict[str, Any] = request.app.openapi()
    return JSONResponse(schema)
