"""Handlers of ``zlh up``, ``zlh api`` and ``zlh user …``."""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import getpass
import logging
import os
import resource
import signal
import socket
import sys
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import uvicorn
from pydantic import ValidationError

from zlh.api import accounts
from zlh.api.db import Database
from zlh.api.settings import ApiSettings, load_settings, url_port
from zlh.cliargs import data_dir_from
from zlh.datadir import PRIVATE_UMASK, prepare_data_dir
from zlh.errors import UsageError, ZlhError
from zlh.listen import WILDCARDS, local_address, parse_listen, require_free
from zlh.schemas import validation_problems

__all__ = [
    "cmd_api",
    "cmd_up",
    "cmd_user_add",
    "cmd_user_disable",
    "cmd_user_list",
    "open_database",
    "prepare_private",
    "serve",
    "settings_from",
]

logger = logging.getLogger("zlh.api")


def settings_from(args: argparse.Namespace, **explicit: Any) -> ApiSettings:
    """Settings for a command's ``--data-dir``/``--config`` and ``explicit`` flag values; a bad
    setting is a one-line UsageError naming the field."""
    try:
        return load_settings(
            getattr(args, "config", None), data_dir=data_dir_from(args), **explicit
        )
    except ValidationError as exc:
        problems = "; ".join(f"{p.field}: {p.detail}" for p in validation_problems(exc))
        raise UsageError(f"invalid settings: {problems}") from None
    except ValueError as exc:
        raise UsageError(str(exc)) from None


def _server_settings(args: argparse.Namespace, **explicit: Any) -> ApiSettings:
    settings = settings_from(
        args,
        backend=args.backend,
        listen=args.listen,
        unix_socket=args.unix_socket,
        allow_privileged=args.allow_privileged,
        ide_origin=args.ide_origin,
        replica=args.replica,
        front_workers=args.workers,
        **explicit,
    )
    if settings.replica is not None and settings.db_url.startswith("sqlite"):
        raise UsageError(
            "replicas share one PostgreSQL database: set database_url (env ZLH_DATABASE_URL) "
            "to postgresql+psycopg://…, or drop --replica to run a single node on SQLite"
        )
    return settings


def private_files(settings: ApiSettings) -> list[Path]:
    """Secrets the settings may place outside the data dir: key files, a SQLite database."""
    from sqlalchemy.engine import make_url

    files = [settings.jwt_key_path, settings.agent_key_path]
    url = make_url(settings.db_url)
    if url.get_backend_name() == "sqlite" and url.database and url.database != ":memory:":
        database = Path(url.database)
        files += [database, *(database.with_name(database.name + s) for s in _SQLITE_SIDE)]
    return files


_SQLITE_SIDE = ("-wal", "-shm", "-journal")


def prepare_private(settings: ApiSettings) -> None:
    """Umask 077, the data dir 0700 and its files 0600 (docs: zlh.datadir), before anything
    is written there."""
    prepare_data_dir(settings.data_dir, private_files(settings))


def require_listeners_free(settings: ApiSettings) -> None:
    """The public port and the IDE origin's port are free, before anything starts."""
    require_free(*parse_listen(settings.listen))
    if settings.ide_listen is not None:
        require_free(*settings.ide_listen, what="the IDE origin")
    if settings.metrics_listen is not None:
        require_free(*parse_listen(settings.metrics_listen), what="metrics_listen")


def container_artifact_url(settings: ApiSettings) -> str:
    """Where containers fetch the built-in store's artifacts: ``artifact_url_for_containers``
    when set, else ``zlh up``'s own listener as the backend's containers reach it (with lxc,
    the host's bridge address, which the listener must cover; UsageError otherwise)."""
    if settings.artifact_url_for_containers is not None:
        return settings.artifact_url_for_containers
    host, port = parse_listen(settings.listen)
    if settings.backend == "lxc":
        from zlh.backends.lxc import require_lxc
        from zlh.backends.lxc.net import ensure_bridge

        require_lxc()  # what a host without LXC or root lacks comes first
        bridge = ensure_bridge()
        if host not in WILDCARDS and host != bridge.address:
            raise UsageError(
                f"--listen {host}:{port}: LXC containers fetch artifacts from the host's bridge "
                f"address {bridge.address}, which this address does not cover; listen on "
                f"0.0.0.0:{port} or {bridge.address}:{port}, or serve the artifacts there "
                "yourself and set artifact_url_for_containers (docs/operations.md)"
            )
        host = bridge.address
    return f"http://{local_address(host)}:{port}/artifacts"


def cmd_up(args: argparse.Namespace) -> int:
    from zlh.api.app import create_app
    from zlh.api.catalog import StoreCatalog
    from zlh.artifacts.server import ArtifactServer

    settings = _server_settings(args, store_dir=args.store)
    if settings.store_path.exists() and not settings.store_path.is_dir():
        raise UsageError(
            f"the artifact store {settings.store_path} is a file, not a directory: "
            "pick another --store"
        )
    require_listeners_free(settings)
    artifact_url = container_artifact_url(settings)
    # First: a backend that cannot run here leaves nothing behind.
    backend = _private_backend(settings, artifact_url)
    store = settings.store_path
    store.mkdir(parents=True, exist_ok=True)
    app = create_app(
        settings,
        backend,
        catalog=StoreCatalog(store),
        artifact_base_url=artifact_url,
        store_app=ArtifactServer(store),
    )
    serve(app, settings)
    return 0


def cmd_api(args: argparse.Namespace) -> int:
    from zlh.api.app import create_app
    from zlh.api.catalog import HttpCatalog

    settings = _server_settings(args, artifact_server_url=args.artifact_server)
    if settings.artifact_server_url is None:
        raise UsageError(
            "zlh api needs an artifact server: --artifact-server URL or ZLH_ARTIFACT_SERVER_URL "
            "(or run `zlh up`, which has one built in)"
        )
    require_listeners_free(settings)
    artifact_url = settings.artifact_url_for_containers or settings.artifact_server_url
    backend = _private_backend(settings, artifact_url)
    app = create_app(
        settings,
        backend,
        catalog=HttpCatalog(settings.artifact_server_url, cache_s=settings.catalog_cache_s),
        artifact_base_url=artifact_url,
    )
    serve(app, settings)
    return 0


_STOP_SIGNALS = (signal.SIGINT, signal.SIGTERM)


class _Server(uvicorn.Server):
    """uvicorn's server, minus its signal re-raise.

    uvicorn shuts down on SIGINT/SIGTERM and then raises the signal again, which killed the
    process (exit -15) before the front was closed and the API's socket removed. Here the
    signal only asks for the shutdown, so ``zlh up`` stops in order and exits 0; a second ^C
    during the shutdown forces it, as with uvicorn.
    """

    # What SIGTERM starts instead of the shutdown, once (set by _serve): the drain.
    drain: Callable[[], None] | None = None

    @contextlib.contextmanager
    def capture_signals(self) -> Iterator[None]:
        loop = asyncio.get_running_loop()
        for sig in _STOP_SIGNALS:
            loop.add_signal_handler(sig, self._stop_signal, sig)
        try:
            yield
        finally:
            for sig in _STOP_SIGNALS:
                loop.remove_signal_handler(sig)
            self._captured_signals.clear()

    def _stop_signal(self, sig: int) -> None:
        drain, self.drain = self.drain, None
        if sig == signal.SIGTERM and drain is not None:
            drain()
        else:
            self.handle_exit(sig, None)


def _private_backend(settings: ApiSettings, artifact_url: str) -> Any:
    """The backend, created under umask 077, then the data dir made private. A backend that
    cannot run here leaves the umask as it was (and the data dir untouched)."""
    previous = os.umask(PRIVATE_UMASK)
    try:
        backend = _backend(settings, artifact_url)
    except BaseException:
        os.umask(previous)
        raise
    prepare_private(settings)
    return backend


def _backend(settings: ApiSettings, artifact_url: str) -> Any:
    """The configured backend; LXC containers get to reach the host's ports of the services
    they use (artifacts, Headscale) and no other host port."""
    from zlh.backends import create_backend  # type: ignore[attr-defined,unused-ignore]

    options: dict[str, Any] = {}
    if settings.backend in {"lxc", "proxmox"}:
        options["allow_privileged"] = settings.allow_privileged
    if settings.backend == "lxc":
        options["host_ports"] = host_ports_for_containers(settings, artifact_url)
    return create_backend(settings.backend, data_dir=settings.data_dir, **options)


def host_ports_for_containers(settings: ApiSettings, artifact_url: str) -> list[int]:
    """The ports of the services containers use, were they on the host: the artifact server
    and Headscale as containers are told to reach them."""
    headscale = settings.headscale.login_server_url or settings.headscale.url
    return sorted({url_port(url) for url in (artifact_url, headscale) if url})


def _unix_socket(path: Path) -> socket.socket:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.unlink(missing_ok=True)
    unix = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    unix.bind(str(path))
    os.chmod(path, 0o660)
    return unix


def serve(app: Any, settings: ApiSettings) -> None:
    """Run the front on ``listen`` and the API app behind it on its unix socket, until ^C.

    Both share one event loop: the front follows the API's route feed (asyncio queues) in
    memory, so a revoked session or a removed container reaches it at once.
    """
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(message)s")
    from zlh.proxy.serving import run

    raise_open_files_limit()
    run(_serve(app, settings), scheduling=settings.front_scheduling)


OPEN_FILES_WANTED = 65536  # what deploy/zlh.service sets (LimitNOFILE)


def raise_open_files_limit(wanted: int = OPEN_FILES_WANTED) -> None:
    """Raise this process's soft limit of open files towards ``wanted``, as far as the hard
    limit allows (its front workers inherit it). A replica keeps a connection to
    each agent of its share (10,000 on one replica after a takeover) beside the IDEs' sockets,
    and a shell's default soft limit of 1024 would fail the polls with "too many open files"
    when ``zlh up`` runs outside the systemd unit."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if hard != resource.RLIM_INFINITY:
        wanted = min(hard, wanted)
    if soft != resource.RLIM_INFINITY and soft < wanted:
        resource.setrlimit(resource.RLIMIT_NOFILE, (wanted, hard))
        logging.getLogger(__name__).info("open files limit raised from %d to %d", soft, wanted)


async def _serve(app: Any, settings: ApiSettings) -> None:
    from zlh.api.auth import ISSUER
    from zlh.api.frontworkers import FrontWorkers, WorkerConfig, default_workers
    from zlh.api.metrics import FrontCollector
    from zlh.api.metrics_listener import serve_metrics
    from zlh.proxy.auth import JwtAuthenticator, Principal
    from zlh.proxy.feed import follow
    from zlh.proxy.front import Front
    from zlh.proxy.routes import RouteTable
    from zlh.proxy.ticket_db import DbLedger
    from zlh.proxy.tickets import FileLedger, Ledger, TicketDesk
    from zlh.proxy.worker import drain as drain_front

    services = app.state.services
    unix_path = settings.unix_socket or settings.data_dir / "run" / "api.sock"
    unix = _unix_socket(unix_path)
    config = uvicorn.Config(
        app,
        lifespan="on",
        log_level="info",
        access_log=False,
        # X-Forwarded-For is read by zlh.api.clientaddr (trusted_proxies), not by uvicorn,
        # which would take the hop the client wrote.
        proxy_headers=False,
    )
    server = _Server(config)
    routes = RouteTable()
    loop = asyncio.get_running_loop()

    def ide_opened(user_id: str, vmid: int) -> None:
        services.lifecycle.note_activity(vmid, "ide")  # opening it is using it
        loop.run_in_executor(None, _record_ide_open, services, user_id, vmid)

    def audit_ide_open(principal: Principal, vmid: int) -> None:
        ide_opened(principal.user_id, vmid)

    front_settings = settings.front_settings.model_copy(
        update={
            "ide_origin": None if settings.ide_listen else settings.ide_origin,
            "admin_ide_access": settings.admin_ide_access,
        }
    )
    workers_count = settings.front_workers or default_workers()
    # Tickets are taken once among all front workers: a ledger they share (zlh.proxy.tickets);
    # replicas' on the database they share, so once on the whole platform.
    ledger_dir = settings.data_dir / "run" / "tickets"
    ticket_db = None if settings.db_url.startswith("sqlite") else settings.db_url
    if workers_count > 1:
        ledger_dir.mkdir(mode=0o700, parents=True, exist_ok=True)
    ledger: Ledger | None = None
    if ticket_db is not None:
        ledger = DbLedger(ticket_db)
    elif workers_count > 1:
        ledger = FileLedger(ledger_dir)
    front = Front(
        front_settings,
        routes,
        JwtAuthenticator(services.tokens.key, issuer=ISSUER),
        f"unix:{unix_path}",
        tickets=TicketDesk(services.tokens.key, issuer=ISSUER, ledger=ledger),
        on_ide_open=audit_ide_open,
        on_activity=services.lifecycle.note_activity,
        reuse_port=workers_count > 1,
    )
    workers = None
    if workers_count > 1:
        workers = FrontWorkers(
            workers_count - 1,
            WorkerConfig(
                listen=parse_listen(settings.listen),
                ide_listen=settings.ide_listen,
                api_upstream=f"unix:{unix_path}",
                settings=front_settings.model_dump(mode="json"),
                key=services.tokens.key,
                issuer=ISSUER,
                run_dir=settings.data_dir / "run",
                ledger=ledger_dir,
                ticket_db=ticket_db,
                drain_timeout_s=settings.drain_timeout_s,
                scheduling=settings.front_scheduling,
            ),
            services.feed,
            on_ide_open=ide_opened,
            on_activity=services.lifecycle.note_activity,
        )
    services.metrics.register(FrontCollector(front, workers))
    app.state.draining = False

    async def drain() -> None:
        """Stop taking WebSockets (and say so on /api/health/ready), let the open ones run
        up to drain_timeout_s, then shut down."""
        logger.info("draining: open WebSockets have %s s", settings.drain_timeout_s)
        app.state.draining = True
        deadline = loop.time() + settings.drain_timeout_s
        if workers is not None:
            workers.drain()
        await drain_front(front, settings.drain_timeout_s)
        if workers is not None:
            await workers.wait_drained(deadline - loop.time())
            await workers.close()
        # The fronts go before the API: none may answer 502 for an API that stopped.
        await front.close()
        server.should_exit = True

    draining: list[asyncio.Task[None]] = []
    server.drain = lambda: draining.append(asyncio.create_task(drain()))
    metrics_servers: list[asyncio.Server] = []

    async def listen_metrics(host: str, port: int) -> asyncio.Server:
        metrics_servers.append(await serve_metrics(services.metrics, host, port))
        return metrics_servers[-1]

    follower = asyncio.create_task(follow(services.feed, routes))
    api = asyncio.create_task(server.serve(sockets=[unix]))
    try:
        while not server.started:  # the app's lifespan (migrations, resume) runs first
            if api.done():
                api.result()
                raise ZlhError("the API stopped while starting")
            await asyncio.sleep(0.05)
        host, port = parse_listen(settings.listen)
        ide = settings.ide_listen
        listeners = [(settings.listen, front.start(host, port))]
        if ide is not None:
            listeners.append((f"{ide[0]}:{ide[1]} (the IDE origin)", front.start_ide(*ide)))
        if settings.metrics_listen is not None:
            where = f"{settings.metrics_listen} (metrics_listen)"
            listeners.append((where, listen_metrics(*parse_listen(settings.metrics_listen))))
        for where, listening in listeners:
            try:
                await listening
            except OSError as exc:
                server.should_exit = True
                for _, waiting in listeners:
                    waiting.close()
                raise ZlhError(f"cannot listen on {where}: {exc.strerror}") from exc
        if workers is not None:
            await workers.start()
        logger.info(
            "serving on http://%s, IDEs on %s (API on unix:%s, backend %s, %d front workers)",
            settings.listen,
            f"port {ide[1]}" if ide else settings.ide_origin,
            unix_path,
            settings.backend,
            workers_count,
        )
        await api
    finally:
        follower.cancel()
        if workers is not None:
            await workers.close()
        for metrics_server in metrics_servers:
            metrics_server.close()
        await front.close()
        if not api.done():
            server.should_exit = True
            await api
        if isinstance(ledger, DbLedger):
            ledger.dispose()  # its connections end with the front, not at the interpreter's exit
        unix.close()
        unix_path.unlink(missing_ok=True)


def _record_ide_open(services: Any, user_id: str, vmid: int) -> None:
    from zlh.api.audit import Action
    from zlh.api.db import User

    with services.db.session() as session:
        user = session.get(User, int(user_id))
        actor = user.username if user is not None else f"user#{user_id}"
    services.audit.record(actor, Action.OPEN, vmid, "IDE")


# -- users ---------------------------------------------------------------------------------


def database_from(args: argparse.Namespace) -> Database:
    """The data dir's database (made private, created and migrated when new), for commands."""
    settings = settings_from(args)
    prepare_private(settings)
    return open_database(settings)


def open_database(settings: ApiSettings) -> Database:
    """The accounts database of ``settings``, migrated, with the server's password hashing."""
    accounts.configure_hashing(
        time_cost=settings.argon2_time_cost,
        memory_kib=settings.argon2_memory_kib,
        parallelism=settings.argon2_parallelism,
    )
    db = Database(settings.db_url)
    db.migrate()
    return db


def _password(args: argparse.Namespace) -> str:
    if args.password_stdin:
        line = sys.stdin.readline()
        if not line:
            raise UsageError("--password-stdin: stdin is empty")
        return line.rstrip("\r\n")
    try:
        with open("/dev/tty"):  # what getpass asks on; without it, it would read stdin
            pass
        first = getpass.getpass("password: ")
        again = getpass.getpass("again: ")
    except (OSError, EOFError):
        raise UsageError(
            "no terminal to ask for the password on: give it on stdin with --password-stdin"
        ) from None
    if again != first:
        raise UsageError("the passwords differ")
    return first


def cmd_user_add(args: argparse.Namespace) -> int:
    user = accounts.create_user(database_from(args), args.name, _password(args), admin=args.admin)
    print(f"created {'admin ' if user.is_admin else ''}user {user.username} (id {user.id})")
    return 0


def cmd_user_list(args: argparse.Namespace) -> int:
    for user in accounts.list_users(database_from(args)):
        flags = [f for f, on in (("admin", user.is_admin), ("disabled", user.disabled)) if on]
        if user.idle_stop_after is not None:
            flags.append(f"idle-stop={user.idle_stop_after}s")
        print(f"{user.id}\t{user.username}\t{','.join(flags) or '-'}")
    return 0


def cmd_user_passwd(args: argparse.Namespace) -> int:
    revoked = accounts.set_password(database_from(args), args.name, _password(args))
    print(f"password of {args.name} changed; ended {len(revoked)} session(s)")
    return 0


def cmd_user_admin(args: argparse.Namespace) -> int:
    revoked = accounts.set_admin(database_from(args), args.name, not args.remove)
    role = "no longer an admin" if args.remove else "an admin"
    print(f"{args.name} is {role}; ended {len(revoked)} session(s)")
    return 0


def cmd_user_idle(args: argparse.Namespace) -> int:
    if args.seconds == "default":
        seconds = None
    elif args.seconds.isdigit():
        seconds = int(args.seconds)
    else:
        raise UsageError(f"SECONDS is a whole number of seconds or 'default', not {args.seconds!r}")
    accounts.set_idle_stop_after(database_from(args), args.name, seconds)
    words = {None: "after the platform's idle_stop_after", 0: "never"}
    when = words.get(seconds, f"after {seconds} s idle")
    print(f"containers of {args.name} stop {when}")
    return 0


def cmd_user_disable(args: argparse.Namespace) -> int:
    revoked = accounts.disable_user(database_from(args), args.name)
    print(f"disabled {args.name}; ended {len(revoked)} session(s)")
    return 0
