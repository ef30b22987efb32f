"""The file browser and console routes, whose code loads on their first request.

An idle agent answers ``/status`` and nothing else until someone opens the file browser or a
terminal; the code behind those routes (workspace confinement, the dev user's fs threads,
ctypes, PTY handling) is not imported before then, which keeps it out of the idle agent's
memory (docs/performance.md). The route table is fixed here at start, so unknown paths and
wrong methods answer as before, and the bearer middleware runs before anything loads: a request
without the secret never gets as far as importing these modules.

Each group's handlers are the methods of one object (``FileRoutes``, ``ConsoleRoutes``),
built by :class:`Deferred` on the group's first request.
"""

from __future__ import annotations

import shutil
from collections.abc import Awaitable, Callable, Mapping
from typing import TYPE_CHECKING, Generic, TypeVar

from aiohttp import web

if TYPE_CHECKING:
    from zlh.agent.console import ConsoleRoutes
    from zlh.agent.files import FileRoutes
    from zlh.agent.runas import DevEnvironmentSource

__all__ = ["Deferred", "setup_console_routes", "setup_files_routes"]

T = TypeVar("T")
Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]
Hook = Callable[[web.Application], Awaitable[None]]


class Deferred(Generic[T]):
    """``build()``, called on first use and kept."""

    def __init__(self, build: Callable[[], T]) -> None:
        self._build = build
        self._value: T | None = None

    def get(self) -> T:
        if self._value is None:
            self._value = self._build()
        return self._value

    def handler(self, pick: Callable[[T], Handler]) -> Handler:
        """A route handler that builds the object, then calls the method ``pick`` names."""

        async def handle(request: web.Request) -> web.StreamResponse:
            return await pick(self.get())(request)

        return handle

    def hook(self, pick: Callable[[T], Hook]) -> Hook:
        """An app signal (shutdown, cleanup) that runs only if the object was ever built."""

        async def run(app: web.Application) -> None:
            if self._value is not None:
                await pick(self._value)(app)

        return run


def setup_files_routes(
    app: web.Application, *, environment: DevEnvironmentSource, max_upload_bytes: int
) -> None:
    """Add the ``/files`` routes to the agent's app (its auth middleware covers them).

    ``environment`` returns the dev environment (workspace and identity), or None before the
    first provisioning created it (the routes then answer 503).
    """

    def build() -> FileRoutes:
        from zlh.agent.files import FileRoutes

        return FileRoutes(environment, max_upload_bytes)

    routes = Deferred(build)
    app.router.add_get("/files", routes.handler(lambda r: r.list))
    app.router.add_delete("/files", routes.handler(lambda r: r.delete))
    app.router.add_get("/files/content", routes.handler(lambda r: r.read), allow_head=False)
    app.router.add_put("/files/content", routes.handler(lambda r: r.write))
    app.router.add_post("/files/mkdir", routes.handler(lambda r: r.mkdir))
    app.router.add_post("/files/move", routes.handler(lambda r: r.move))
    app.on_cleanup.append(routes.hook(lambda r: r.close))


def setup_console_routes(
    app: web.Application,
    *,
    environment: DevEnvironmentSource,
    max_consoles: int = 8,
    env: Mapping[str, str] | None = None,
) -> None:
    """Add ``GET /console`` to the agent's app (its auth middleware covers it).

    ``environment`` returns the dev environment (workspace and identity), or None before the
    first provisioning created it (the route then answers 503).

    ``env`` adds to or overrides the shell's environment (HOME, USER, LOGNAME, SHELL, TERM,
    LANG, PATH); a login shell's ``/etc/profile`` may still reset PATH.

    What the console cannot work without is checked here, at start, not on the first request.
    """
    setsid = shutil.which("setsid")
    if setsid is None:
        raise ValueError("the console needs util-linux's setsid, which is not on PATH")
    if max_consoles < 1:
        raise ValueError(f"max_consoles must be at least 1, got {max_consoles}")
    extra_env = dict(env or {})

    def build() -> ConsoleRoutes:
        from zlh.agent.console import ConsoleRoutes

        return ConsoleRoutes(
            environment=environment, max_consoles=max_consoles, env=extra_env, setsid=setsid
        )

    routes = Deferred(build)
    app.router.add_get("/console", routes.handler(lambda r: r.open))
    app.on_shutdown.append(routes.hook(lambda r: r.shutdown))
