"""``zlh agent``: the in-container HTTP service, composed from route modules.

aiohttp (server and client) rather than the API's FastAPI stack: one agent runs in every
container, and a one-route aiohttp service idles at ~46 MB with pydantic vs ~52 MB for FastAPI
on uvicorn (docs/architecture.md, "Why aiohttp"); the agent needs no OpenAPI. It imports only
``zlh.schemas``, ``zlh.errors``, ``zlh.agent.*``, the standard library, aiohttp and pydantic;
installers and addons load what they need when a payload asks for it, the file browser and the
console on their first request (``zlh.agent.lazy_routes``).

Each route module adds its routes and lifecycle to the app; this module only composes them
behind the two middlewares (bearer secret, error envelope).
"""

from __future__ import annotations

import argparse
import contextlib
import logging
import os
from pathlib import Path

from aiohttp import web

from zlh.agent.config import AgentConfig
from zlh.agent.lazy_routes import setup_console_routes, setup_files_routes
from zlh.agent.ports import setup_ports_routes
from zlh.agent.provisioner import Provisioner
from zlh.agent.routes import setup_provision_routes
from zlh.agent.token import AgentToken
from zlh.agent.web_errors import bearer_auth, error_envelope
from zlh.errors import UsageError
from zlh.listen import parse_listen, require_free

__all__ = ["create_app", "read_token", "serve"]


def create_app(config: AgentConfig, secret: str, token_file: Path | None = None) -> web.Application:
    """The agent's app; ``token_file`` is where ``secret`` came from (a rotation rewrites it)."""
    token = AgentToken(secret, token_file)
    app = web.Application(middlewares=[error_envelope, bearer_auth(token)])
    provisioner = Provisioner(config)
    setup_provision_routes(app, provisioner, token)
    setup_ports_routes(app, provisioner)
    limit = config.max_upload_bytes
    setup_files_routes(app, environment=lambda: provisioner.dev, max_upload_bytes=limit)
    setup_console_routes(app, environment=lambda: provisioner.dev, max_consoles=config.max_consoles)
    return app


def _listen(value: str) -> tuple[str, int]:
    try:
        return parse_listen(value)
    except ValueError:
        raise UsageError(f"--listen {value!r}: expected HOST:PORT, e.g. 0.0.0.0:7070") from None


def read_token(path: Path) -> str:
    try:
        token = path.read_text().strip()
    except OSError as exc:
        raise UsageError(f"cannot read the token file {path}: {exc.strerror}") from exc
    if not token:
        raise UsageError(f"the token file {path} is empty")
    return token


def default_scheduling() -> None:
    """Put the agent, and so everything it starts for the customer, under the default Linux
    scheduling policy, whatever the process that started it had: the platform's front runs
    under ``SCHED_BATCH`` (zlh.proxy.serving), which children inherit."""
    with contextlib.suppress(AttributeError, OSError):  # not Linux: nothing to undo
        os.sched_setscheduler(0, os.SCHED_OTHER, os.sched_param(0))


def serve(args: argparse.Namespace) -> int:
    """Run the agent until it is stopped (``zlh agent``, through ``zlh.agent.main``)."""
    default_scheduling()
    host, port = _listen(args.listen)
    secret = read_token(args.token_file)
    require_free(host, port)
    config = AgentConfig(
        root=args.root.absolute(),
        bind_host=args.bind_host,
        artifact_base_url=args.artifact_base_url,
    )
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(message)s")
    web.run_app(
        create_app(config, secret, args.token_file),
        host=host,
        port=port,
        print=None,
        access_log=None,
    )
    return 0
