"""A real aiohttp server, in a background thread, with the agent's Bearer-token semantics.

Stands in for the agent's ``app.py`` so the files and console routes can be tested over real
HTTP and WebSocket before (and independently of) the full agent.
"""

from __future__ import annotations

import asyncio
import hmac
import threading
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass

from aiohttp import web

TOKEN = "test-container-secret"
AUTH = {"Authorization": f"Bearer {TOKEN}"}


@web.middleware
async def bearer_auth(
    request: web.Request, handler: Callable[[web.Request], object]
) -> web.StreamResponse:
    sent = request.headers.get("Authorization", "")
    if not hmac.compare_digest(sent.encode(), f"Bearer {TOKEN}".encode()):
        return web.json_response({"message": "missing or wrong bearer token"}, status=401)
    return await handler(request)  # type: ignore[misc, no-any-return]


@dataclass
class Live:
    url: str
    loop: asyncio.AbstractEventLoop

    @property
    def ws_url(self) -> str:
        return "ws" + self.url.removeprefix("http")


@contextmanager
def serve(setup: Callable[[web.Application], None]) -> Iterator[Live]:
    """Run an app built by ``setup`` on 127.0.0.1 (random port) until the block ends."""
    ready = threading.Event()
    state: dict[str, object] = {}
    loop = asyncio.new_event_loop()

    async def start() -> web.AppRunner:
        app = web.Application(middlewares=[bearer_auth])
        setup(app)
        runner = web.AppRunner(app)
        await runner.setup()
        site = web.TCPSite(runner, "127.0.0.1", 0)
        await site.start()
        host, port = runner.addresses[0][:2]
        state["url"] = f"http://{host}:{port}"
        return runner

    def run() -> None:
        asyncio.set_event_loop(loop)
        try:
            state["runner"] = loop.run_until_complete(start())
        except BaseException as exc:
            state["error"] = exc
            ready.set()
            return
        ready.set()
        loop.run_forever()

    thread = threading.Thread(target=run, name="agent-under-test", daemon=True)
    thread.start()
    if not ready.wait(30) or "error" in state:
        raise AssertionError(f"test server did not start: {state.get('error')}")
    try:
        yield Live(url=str(state["url"]), loop=loop)
    finally:
        runner = state["runner"]
        assert isinstance(runner, web.AppRunner)
        asyncio.run_coroutine_threadsafe(runner.cleanup(), loop).result(30)
        loop.call_soon_threadsafe(loop.stop)
        thread.join(30)
        loop.close()
