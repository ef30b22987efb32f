"""The spec's dev environment: user ``dev``, home ``/home/dev``, workspace ``/home/dev/workspace``.

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
"""

from __future__ import annotations

import asyncio
import os
import pwd
import shlex
import shutil
from dataclasses import dataclass
from pathlib import Path

from zlh.agent.errors import DevUserError
from zlh.agent.paths import Layout
from zlh.agent.runas import DevIdentity
from zlh.schemas import DevUser

__all__ = ["DevEnvironment", "creates_system_user", "ensure_dev_environment"]


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

    def own(self, *paths: Path) -> None:
        """Give ``paths`` to the dev user (a no-op when dev is the current user)."""
        if self.is_system_user:
            for path in paths:
                os.chown(path, self.identity.uid, self.identity.gid)

    def make_dirs(self, *paths: Path) -> None:
        """Create each path and its missing parents below home, all owned by dev."""
        for path in paths:
            missing = []
            probe = path
            while not probe.exists() and probe != self.home.parent:
                missing.append(probe)
                probe = probe.parent
            path.mkdir(parents=True, exist_ok=True)
            self.own(*missing)


_PROFILE_MARK = "# zlh-agent: the active runtimes on PATH"


def _source_runtimes(layout: Layout, env: DevEnvironment) -> None:
    """Make the dev home's ``.profile`` source ``<root>/etc/profile.d/zlh-runtimes.sh``.

    Appended once (under a marker line) to whatever ``.profile`` already holds; bash reads
    ``.profile`` for login shells when there is no ``.bash_profile``, which the agent never
    writes.
    """
    profile = env.home / ".profile"
    try:
        current = profile.read_text()
    except FileNotFoundError:
        current = ""
    if _PROFILE_MARK in current:
        return
    script = shlex.quote(str(layout.profile_script))
    block = f"{_PROFILE_MARK}\nif [ -r {script} ]; then . {script}; fi\n"
    separator = "\n" if current and not current.endswith("\n") else ""
    profile.write_text(current + separator + block)
    env.own(profile)


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


def _ensure(layout: Layout, spec: DevUser) -> DevEnvironment:
    home = layout.path(spec.home)
    if creates_system_user(layout, os.geteuid()):
        identity = _create_user(spec)
    else:
        identity = DevIdentity.current(home=home)
    env = DevEnvironment(spec.name, identity, home, layout.path(spec.workspace))
    try:
        env.make_dirs(env.home, env.workspace)
    except OSError as exc:
        raise DevUserError(f"cannot create {env.workspace}: {exc.strerror}") from exc
    if not layout.is_real_root:
        try:
            _source_runtimes(layout, env)
        except OSError as exc:
            raise DevUserError(f"cannot write {env.home / '.profile'}: {exc.strerror}") from exc
    return env


async def ensure_dev_environment(layout: Layout, spec: DevUser) -> DevEnvironment:
    """Create (or find) the dev user, their home and workspace. Idempotent."""
    return await asyncio.to_thread(_ensure, layout, spec)
