"""The portal: static pages served by the API at ``/`` (no separate server).

The pages are plain HTML, CSS and JavaScript modules in ``static/``; xterm.js and Swagger UI
(for ``/api/docs``, ``DOCS_PAGE``) come from npm: in a checkout from ``node_modules/`` beside
this file (``scripts/bootstrap.sh`` installs them), in an installed wheel from the copies of
the files ``vendor.json`` lists, in ``vendor/`` (setup.py). Every page path answers the same
``index.html``; the browser-side router picks the view.
"""

from __future__ import annotations

import json
import logging
import mimetypes
from pathlib import Path

from fastapi import FastAPI
from fastapi.responses import FileResponse
from starlette.staticfiles import StaticFiles

__all__ = [
    "DOCS_PAGE",
    "PAGE_HEADERS",
    "PORTAL_DIR",
    "mount_portal",
    "not_found_page",
    "wants_page",
]

log = logging.getLogger(__name__)

PORTAL_DIR = Path(__file__).resolve().parent
STATIC_DIR = PORTAL_DIR / "static"
NODE_MODULES = PORTAL_DIR / "node_modules"
BUNDLED = PORTAL_DIR / "vendor"  # a wheel's copies of the vendor.json files
DOCS_PAGE = STATIC_DIR / "docs.html"

# Pages may only be framed by ourselves, load nothing from elsewhere, and run no inline script.
# Inline *styles* are allowed: xterm.js writes its theme and cell metrics into <style> elements
# it creates at run time (no nonce option), and without them the terminal's text is invisible.
PAGE_HEADERS = {
    "Content-Security-Policy": (
        "default-src 'self'; script-src 'self'; style-src 'self' 'unsafe-inline'; "
        "img-src 'self' data:; "
        "connect-src 'self'; frame-ancestors 'self'; base-uri 'none'; form-action 'self'"
    ),
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "same-origin",
    "Cache-Control": "no-cache",
}
PAGE_PATHS = [
    "/",
    "/login",
    "/password",
    "/tokens",
    "/new",
    "/c/{vmid:int}",
    "/c/{vmid:int}/{tab}",
]


def vendor_dirs() -> dict[str, Path]:
    """Each vendored package's directory: the wheel's copy, else the checkout's npm package."""
    listed = json.loads((PORTAL_DIR / "vendor.json").read_text())
    return {
        name: BUNDLED / name if (BUNDLED / name).is_dir() else NODE_MODULES / entry["package"]
        for name, entry in listed.items()
        if name != "_"
    }


mimetypes.add_type("text/javascript", ".mjs")
mimetypes.add_type("text/javascript", ".js")


def wants_page(method: str, path: str, accept: str) -> bool:
    """A browser navigating to a page (not a script calling the API or fetching a file)."""
    api = path.startswith(("/api/", "/artifacts/", "/portal/"))
    return method in ("GET", "HEAD") and not api and "text/html" in accept


def not_found_page() -> FileResponse:
    """404 with the portal itself: its router shows its styled "Not found" for the path."""
    return FileResponse(
        STATIC_DIR / "index.html", status_code=404, media_type="text/html", headers=PAGE_HEADERS
    )


def mount_portal(app: FastAPI) -> None:
    """Serve the pages at their paths and the assets under ``/portal/``."""
    index = STATIC_DIR / "index.html"

    async def page() -> FileResponse:
        return FileResponse(index, media_type="text/html", headers=PAGE_HEADERS)

    for path in PAGE_PATHS:
        app.add_api_route(path, page, methods=["GET"], include_in_schema=False)
    for name, directory in vendor_dirs().items():
        if not directory.is_dir():
            log.warning(
                "the portal's %s files are missing (%s): its pages that use them will not "
                "work; run scripts/bootstrap.sh in a checkout, or install zlh from a wheel",
                name,
                directory,
            )
        else:
            app.mount(
                f"/portal/vendor/{name}", StaticFiles(directory=directory), name=f"vendor-{name}"
            )
    app.mount("/portal", StaticFiles(directory=STATIC_DIR), name="portal")
