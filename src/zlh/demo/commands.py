"""Handler of ``zlh demo``: the steps of ``make run`` after bootstrap, in order."""

from __future__ import annotations

import argparse
import logging
import signal
import sys
import time
from pathlib import Path
from types import FrameType

import httpx

from zlh.api.commands import (
    container_artifact_url,
    prepare_private,
    require_listeners_free,
    settings_from,
)
from zlh.api.settings import ApiSettings
from zlh.cliargs import data_dir_from
from zlh.demo.admin import Credentials, ensure_admin
from zlh.demo.client import DemoClient
from zlh.demo.platform import UP_LOG, Platform, running_platform
from zlh.errors import UsageError, ZlhError
from zlh.listen import local_address, parse_listen

__all__ = ["cmd_demo"]

ARTIFACTS = ("node", "code-server")
# The vmid of the container this data dir's demo made: the only one a later demo reuses.
DEMO_RECORD = "demo-container"


def say(message: str) -> None:
    print(message, flush=True)


def cmd_demo(args: argparse.Namespace) -> int:
    logging.basicConfig(level=logging.WARNING, format="%(message)s")
    logging.getLogger("zlh").setLevel(logging.INFO)  # the template build's steps
    started = time.monotonic()
    data_dir = data_dir_from(args).resolve()
    try:
        host, port = parse_listen(args.listen)
    except ValueError as exc:
        raise UsageError(f"--listen: {exc}") from None
    if args.backend == "lxc":
        from zlh.backends.lxc import require_lxc

        require_lxc()
    args.data_dir = data_dir  # resolved: it goes into zlh up's argv and LXC configs
    settings = settings_from(
        args, backend=args.backend, listen=args.listen, allow_privileged=args.allow_privileged
    )
    prepare_private(settings)  # umask 077: the log, the password file, the database
    require_listeners_free(settings)  # before minutes of building
    container_artifact_url(settings)  # refuses a --listen the containers cannot reach, early

    say(f"== artifacts ({', '.join(ARTIFACTS)}) in {settings.store_path}")
    _build_artifacts(settings.store_path, args.cache_dir or data_dir / "cache")
    if args.backend == "lxc":
        say("== LXC template")
        from zlh.backends.lxc.idmap import container_idmap
        from zlh.backends.lxc.template import build_template

        idmap = container_idmap(allow_privileged=settings.allow_privileged)
        template, built = build_template(data_dir, idmap=idmap)
        say(f"{'built' if built else 'up to date'}: {template.name}")
    credentials = ensure_admin(settings)
    say(f"== admin account {credentials.username!r} {'created' if credentials.created else 'ok'}")

    argv = ["up", "--backend", args.backend, "--data-dir", str(data_dir), "--listen", args.listen]
    if settings.allow_privileged:
        argv.append("--allow-privileged")
    base_url = f"http://{local_address(host)}:{port}"
    say(f"== starting zlh up on {args.listen} (log: {data_dir / UP_LOG})")
    # Ctrl-C and SIGTERM (systemd, CI) stop the platform in order, even when this process was
    # started with SIGINT ignored (a background job of a non-interactive shell).
    signal.signal(signal.SIGINT, signal.default_int_handler)
    signal.signal(signal.SIGTERM, _interrupt)
    with running_platform(argv, base_url=base_url, log=data_dir / UP_LOG) as platform:
        try:
            ide_url = _demo_ide(platform, credentials, data_dir / DEMO_RECORD, args.timeout)
        except httpx.HTTPError as exc:
            platform.check_alive()
            raise ZlhError(f"talking to the platform at {base_url}: {exc}") from exc
        _print_ready(base_url, ide_url, credentials, settings, time.monotonic() - started)
        if args.exit_when_ready:
            return 0
        say("Ctrl-C stops the platform; the demo container keeps running and is reused next time.")
        try:
            code = platform.proc.wait()
        except KeyboardInterrupt:
            say("\nstopping the platform…")
            if platform.stop():
                say("platform stopped")
                return 0
            code = platform.proc.returncode
    raise ZlhError(f"zlh up exited with {code}:\n{platform.log_tail()}")


def _interrupt(signum: int, frame: FrameType | None) -> None:
    raise KeyboardInterrupt


def _build_artifacts(store: Path, cache_dir: Path) -> None:
    """Each builder skips what is already built (same recipe, file still hashes right)."""
    from zlh.artifacts.builders import build
    from zlh.artifacts.progress import TransferProgress
    from zlh.artifacts.store import ArtifactStore

    for name in ARTIFACTS:
        build(
            name,
            version=None,
            store=ArtifactStore(store),
            cache_dir=cache_dir,
            progress=TransferProgress(),
        )


def _demo_ide(platform: Platform, credentials: Credentials, record: Path, timeout_s: float) -> str:
    platform.wait_until_serving()
    client = DemoClient(platform.base_url)
    try:
        client.sign_in(credentials.username, credentials.password)
        container = client.demo_container(record, say)
        say(f"== provisioning demo container {container.vmid}")
        client.wait_ready(container.vmid, timeout_s, say)
        return client.open_ide(container.vmid)
    finally:
        client.close()


def _print_ready(
    base_url: str, ide_url: str, credentials: Credentials, settings: ApiSettings, took_s: float
) -> None:
    say(
        "\n"
        f"ZeroLagHub is running (backend {settings.backend}, data dir {settings.data_dir}), "
        f"ready in {took_s:.1f}s\n"
        f"  portal:   {base_url}/\n"
        f"  IDE:      {ide_url}\n"
        f"  user:     {credentials.username}\n"
        f"  password: {credentials.password}   (kept in {credentials.password_file}, 0600)\n"
    )
    sys.stdout.flush()
