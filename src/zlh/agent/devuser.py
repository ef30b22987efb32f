"""The container's dev environment: user ``dev``, home ``/home/dev``, workspace below it.

The one decision point is :func:`creates_system_user`: only an agent running as root with
``--root /`` (a real container) creates a passwd user. Anywhere else (tests, the process
backend on a shared host) the agent must not add users to the host, so the dev user is
recorded by name in ``/status`` and processes run as the current user, with the home and
workspace created beneath ``--root``.

Beneath a scratch ``--root`` the host's ``/etc/profile`` is the one login shells read, and it
neither reads ``<root>/etc/profile.d`` nor keeps the PATH it was given (Debian's resets it), so
a login shell there -- the console's, and the one code-server runs to resolve its terminals'
environment -- would find the host's ``node`` rather than the runtime. The dev home's
``.profile`` sources the runtimes' profile script to close that gap (:func:`_source_runtimes`).

Everything below the home is dev's and may be booby-trapped: the workspace and ``.profile`` are
made as dev, without following links, through :mod:`zlh.agent.devhome`.
"""

from __future__ import annotations

import asyncio
import errno
import os
import pwd
import shlex
import shutil
from dataclasses import dataclass
from pathlib import Path

from zlh.agent.devhome import DevHome, as_dev, make_home
from zlh.agent.errors import DevUserError, UnsafeDevHome
from zlh.agent.paths import Layout
from zlh.agent.runas import DevIdentity
from zlh.schemas import DevUser

__all__ = [
    "DevEnvironment",
    "creates_system_user",
    "ensure_dev_environment",
    "prepare_dev_home",
]


def creates_system_user(layout: Layout, euid: int) -> bool:
    return layout.is_real_root and euid == 0


@dataclass(frozen=True)
class DevEnvironment:
    """Who the dev user is here, and where their home and workspace are on this machine."""

    name: str
    identity: DevIdentity
    home: Path
    workspace: Path

    @property
    def is_system_user(self) -> bool:
        return not self.identity.is_current


_PROFILE_MARK = "# zlh-agent: the active runtimes on PATH"


def _source_runtimes(layout: Layout, home: DevHome) -> None:
    """Make the dev home's ``.profile`` source ``<root>/etc/profile.d/zlh-runtimes.sh``.

    Appended once (under a marker line) to whatever ``.profile`` already holds; bash reads
    ``.profile`` for login shells when there is no ``.bash_profile``, which the agent never
    writes.
    """
    profile = home.home / ".profile"
    current = home.read_bytes(profile) or b""
    if _PROFILE_MARK.encode() in current:
        return
    script = shlex.quote(str(layout.profile_script))
    block = f"{_PROFILE_MARK}\nif [ -r {script} ]; then . {script}; fi\n".encode()
    separator = b"\n" if current and not current.endswith(b"\n") else b""
    home.write_bytes(profile, current + separator + block)


def _passwd(name: str) -> pwd.struct_passwd | None:
    try:
        return pwd.getpwnam(name)
    except KeyError:
        return None


def _create_user(spec: DevUser) -> DevIdentity:
    entry = _passwd(spec.name)
    if entry is None:
        useradd = shutil.which("useradd")
        if useradd is None:
            raise DevUserError("cannot create the dev user: no useradd on this system")
        result = _run(
            [
                useradd,
                "--create-home",
                "--home-dir",
                spec.home,
                "--shell",
                "/bin/bash",
                "--user-group",
                spec.name,
            ]
        )
        if result:
            raise DevUserError(f"useradd {spec.name} failed: {result}")
        entry = pwd.getpwnam(spec.name)
    if entry.pw_uid == 0:
        raise DevUserError(f"user {spec.name!r} exists with uid 0; the dev user must not be root")
    return DevIdentity.lookup(spec.name)


def _run(argv: list[str]) -> str:
    """Run a short admin command; the error text on failure, '' on success."""
    import subprocess

    proc = subprocess.run(argv, capture_output=True, text=True, check=False)
    return "" if proc.returncode == 0 else (proc.stderr.strip() or f"exit {proc.returncode}")


def _identify(layout: Layout, spec: DevUser) -> DevEnvironment:
    home = layout.path(spec.home)
    if creates_system_user(layout, os.geteuid()):
        identity = _create_user(spec)
    else:
        identity = DevIdentity.current(home=home)
    return DevEnvironment(spec.name, identity, home, layout.path(spec.workspace))


def _make_home(env: DevEnvironment) -> None:
    try:
        make_home(env.home, env.identity)
    except OSError as exc:
        if exc.errno in (errno.ELOOP, errno.ENOTDIR):
            raise UnsafeDevHome(
                f"refusing to work in the dev home: {env.home} is not a directory "
                "(the agent does not follow links)"
            ) from exc
        raise DevUserError(f"cannot create {env.home}: {exc.strerror}") from exc


WELCOME = """# Welcome to your ZeroLagHub dev container

This folder, `~/workspace`, is yours: what you keep here stays with the container.

- **Terminal**: menu → Terminal → New Terminal. Your runtime is on `PATH`
  (`ls /opt/zlh/runtimes` shows which one); you are the user `dev`.
- **Files from your computer**: drag them into the Explorer, or use the portal's Files tab.
- **A web app you run here** (say on port 3000): open it at `proxy/3000/` below this IDE's
  address; it is served behind your sign-in, like the IDE.
- **Extensions** install from the Extensions view as in VS Code.

This file is written once, when the container is created. Edit or delete it as you like.
"""


def _fill_home(layout: Layout, env: DevEnvironment) -> None:
    """As dev: the workspace (with a welcome README when it is new), and (beneath a scratch
    root) ``.profile``."""
    home = DevHome(env.home)
    new_workspace = not home.exists(env.workspace)
    home.make_dirs(env.workspace)
    if new_workspace:
        home.write_bytes(env.workspace / "README.md", WELCOME.encode())
    if not layout.is_real_root:
        _source_runtimes(layout, home)


async def prepare_dev_home(layout: Layout, env: DevEnvironment) -> None:
    """Create ``env``'s home if missing, then its workspace and ``.profile`` as dev.

    Raises :class:`~zlh.agent.errors.UnsafeDevHome` naming the path when something dev planted
    (a symlink, a hard link, a FIFO) is in the way; nothing outside the home is touched.
    """
    await asyncio.to_thread(_make_home, env)
    try:
        await as_dev(env.identity, _fill_home, layout, env)
    except OSError as exc:
        raise DevUserError(f"cannot prepare {env.home} as {env.name}: {exc}") from exc


async def ensure_dev_environment(layout: Layout, spec: DevUser) -> DevEnvironment:
    """Create (or find) the dev user, their home and workspace. Idempotent."""
    env = await asyncio.to_thread(_identify, layout, spec)
    await prepare_dev_home(layout, env)
    return env
