"""code-server: the browser IDE on port 6000, run as the dev user and kept running.

Launched as the container contract says (docs/architecture.md), ``<dir>/lib/node <dir> --bind-addr
<host>:<port> --auth none <workspace>``, plus ``--disable-telemetry --disable-update-check
--disable-workspace-trust`` (without the last, the terminal waits on a trust dialog) and its own
``XDG_*`` dirs in the dev user's home, which it writes as dev without following links
(:mod:`zlh.agent.devhome`). Flags the installed version may not have are passed only if its
``--help`` lists them: ``--base-path`` (code-server 4.x rejects it and builds URLs relative to
the request path, so the platform's front strips the prefix instead) and
``--disable-getting-started-override`` (no "Deploy code-server for your team" page).

The workbench opens on the workspace's README (the agent's welcome, ``zlh.agent.devuser``)
with the secondary side bar closed: ``DEFAULT_SETTINGS``, which the user may change.

"Running" means both ``GET /healthz`` and ``GET /?folder=<workspace>`` answer 200 (under an
incompatible Node, ``/healthz`` answers while ``/`` fails with 500).
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import time
from pathlib import Path
from urllib.parse import quote

from zlh.agent.addons.base import Addon, AddonContext
from zlh.agent.devhome import DevHome, as_dev
from zlh.agent.errors import AddonError
from zlh.agent.paths import Layout
from zlh.agent.runas import DevIdentity
from zlh.agent.supervise import ProcessSpec, Supervisor, run_once
from zlh.schemas import AddonHealth, CodeServerAddon, addon_type

__all__ = ["DEFAULT_SETTINGS", "USER_SETTINGS", "CodeServer"]

# Written when settings.json lacks them; the user's own choice wins.
DEFAULT_SETTINGS: dict[str, object] = {
    "workbench.startupEditor": "readme",
    "workbench.secondarySideBar.defaultVisibility": "hidden",
    "workbench.tips.enabled": False,
}

# Enforced on every configure; other keys the user set are kept.
USER_SETTINGS: dict[str, object] = {
    "chat.disableAIFeatures": True,  # saves ~200 MB of memory per open IDE
    "telemetry.telemetryLevel": "off",
    "update.mode": "none",
    "extensions.autoCheckUpdates": False,
    "extensions.autoUpdate": False,
    "security.workspace.trust.enabled": False,
    "workbench.enableExperiments": False,
}
_PROBE_TIMEOUT_S = 3.0
# Between probes while code-server starts: a warm-pool hand-out waits on nothing else, and a
# probe of a port nobody listens on yet costs a refused connect.
_START_PROBE_S = 0.05
_HELP_TIMEOUT_S = 60.0
# Passed when --help lists them (argv() says where).
OPTIONAL_FLAGS = ("--base-path", "--disable-getting-started-override")


class CodeServer(Addon[CodeServerAddon]):
    name = "code-server"

    def __init__(self, spec: CodeServerAddon, ctx: AddonContext) -> None:
        super().__init__(spec, ctx)
        home = ctx.dev.home
        self.xdg = {
            "XDG_CONFIG_HOME": home / ".config",
            "XDG_DATA_HOME": home / ".local" / "share",
            "XDG_CACHE_HOME": home / ".cache",
            "XDG_STATE_HOME": home / ".local" / "state",
        }
        self.config_file = self.xdg["XDG_CONFIG_HOME"] / "code-server" / "config.yaml"
        self.settings_file = self.xdg["XDG_DATA_HOME"] / "code-server" / "User" / "settings.json"
        self.supervisor: Supervisor | None = None
        self._monitor: asyncio.Task[None] | None = None
        # The pid the last successful probe answered for: a restarted process is not "running"
        # on the strength of its predecessor's answer.
        self._healthy_pid: int | None = None
        self._flags: frozenset[str] = frozenset()  # of OPTIONAL_FLAGS, what --help lists

    @property
    def port(self) -> int:
        return self.spec.options.port

    @property
    def probe_host(self) -> str:
        host = self.ctx.config.bind_host
        return "127.0.0.1" if host in ("0.0.0.0", "") else ("::1" if host == "::" else host)

    async def configure(self) -> None:
        await as_dev(self.ctx.dev.identity, self._write_config)
        self._flags = await self._supported_flags()

    def _write_config(self) -> None:
        """As dev (:func:`as_dev`): config.yaml, and settings.json merged with USER_SETTINGS."""
        home = DevHome(self.ctx.dev.home)
        home.make_dirs(*self.xdg.values(), self.config_file.parent, self.settings_file.parent)
        home.write_bytes(
            self.config_file,
            f"bind-addr: {self.ctx.config.bind_host}:{self.port}\n"
            "auth: none\ncert: false\ndisable-telemetry: true\ndisable-update-check: true\n"
            "disable-workspace-trust: true\n".encode(),
        )
        settings = {**DEFAULT_SETTINGS, **self._user_settings(home), **USER_SETTINGS}
        home.write_bytes(self.settings_file, (json.dumps(settings, indent=2) + "\n").encode())

    def _user_settings(self, home: DevHome) -> dict[str, object]:
        """What settings.json holds now; nothing if it is missing or not a JSON object."""
        raw = home.read_bytes(self.settings_file)
        try:
            current = json.loads(raw) if raw else {}
        except ValueError:
            return {}
        return current if isinstance(current, dict) else {}

    async def _supported_flags(self) -> frozenset[str]:
        """Which of OPTIONAL_FLAGS ``--help`` lists; remembered per installed digest."""
        return await _probe_flags(
            self.ctx.layout, self.spec, self.target, self._env(), self.ctx.dev.identity
        )

    @classmethod
    async def warm(cls, spec: CodeServerAddon, layout: Layout) -> None:
        """A pool container learns what ``--help`` lists before its user comes (as the agent's
        own user: nobody's home exists yet), so the hand-out skips that run."""
        target = layout.service(addon_type(cls.name).service_dir)
        env = {
            "HOME": str(layout.state),
            "PATH": "/usr/local/bin:/usr/bin:/bin",
            "LANG": os.environ.get("LANG", "C.UTF-8"),
        }
        await _probe_flags(layout, spec, target, env, None)

    def _node_argv(self) -> list[str]:
        return _node_argv(self.target)

    def _env(self) -> dict[str, str]:
        dev = self.ctx.dev
        path = ":".join((*self.ctx.runtime_path, "/usr/local/bin", "/usr/bin", "/bin"))
        env = {
            "HOME": str(dev.home),
            "USER": dev.identity.name,
            "LOGNAME": dev.identity.name,
            "SHELL": dev.identity.shell,
            "PATH": path,
            "LANG": os.environ.get("LANG", "C.UTF-8"),
        }
        env.update({key: str(value) for key, value in self.xdg.items()})
        return env

    def argv(self) -> tuple[str, ...]:
        args = [
            *self._node_argv(),
            "--bind-addr",
            f"{self.ctx.config.bind_host}:{self.port}",
            "--auth",
            "none",
            "--disable-telemetry",
            "--disable-update-check",
            "--disable-workspace-trust",
        ]
        if "--base-path" in self._flags:
            args += ["--base-path", self.spec.options.base_path]
        if "--disable-getting-started-override" in self._flags:
            args.append("--disable-getting-started-override")
        return (*args, str(self.ctx.dev.workspace))

    def _process(self) -> ProcessSpec:
        return ProcessSpec(
            name=self.name,
            argv=self.argv(),
            env=self._env(),
            cwd=self.ctx.dev.workspace,
            user=self.ctx.dev.identity,
        )

    async def start(self) -> None:
        spec = self._process()
        if self.supervisor is None or self.supervisor.spec != spec:
            if self.supervisor is not None:
                await self.supervisor.stop()
            self.supervisor = self.supervisor_for(spec)
        self.supervisor.start()
        if self._monitor is None or self._monitor.done():
            self._monitor = asyncio.create_task(self._watch(), name="code-server-health")
        await self._wait_healthy(self.supervisor)

    async def _wait_healthy(self, supervisor: Supervisor) -> None:
        deadline = time.monotonic() + self.ctx.config.addon_start_timeout_s
        while not self._running():
            if supervisor.gave_up:
                raise AddonError(supervisor.gave_up)
            if time.monotonic() > deadline:
                raise AddonError(
                    f"code-server did not answer on port {self.port} within "
                    f"{self.ctx.config.addon_start_timeout_s:g}s; last output: "
                    f"{supervisor.tail()!r}"
                )
            await self._check()
            if not self._running():
                await asyncio.sleep(_START_PROBE_S)

    def _running(self) -> bool:
        pid = self.supervisor.running_pid() if self.supervisor else None
        return pid is not None and pid == self._healthy_pid

    async def _check(self) -> None:
        pid = self.supervisor.running_pid() if self.supervisor else None
        self._healthy_pid = pid if pid is not None and await self._probe() else None

    async def _watch(self) -> None:
        while True:
            await self._check()
            await asyncio.sleep(self.ctx.config.health_interval_s)

    async def _probe(self) -> bool:
        import aiohttp

        base = f"http://{self.probe_host}:{self.port}"
        folder = quote(str(self.ctx.dev.workspace), safe="/")
        timeout = aiohttp.ClientTimeout(total=_PROBE_TIMEOUT_S)
        try:
            async with aiohttp.ClientSession(timeout=timeout, trust_env=False) as session:
                for path in ("/healthz", f"/?folder={folder}"):
                    async with session.get(base + path, allow_redirects=False) as resp:
                        await resp.read()
                        if resp.status != 200:
                            return False
        except (aiohttp.ClientError, TimeoutError):
            return False
        return True

    async def stop(self) -> None:
        if self._monitor is not None:
            self._monitor.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._monitor
            self._monitor = None
        if self.supervisor is not None:
            await self.supervisor.stop()
        self._healthy_pid = None

    def health(self) -> AddonHealth:
        supervisor = self.supervisor
        running = self._running()
        message = ""
        if supervisor is not None and supervisor.gave_up:
            message = supervisor.gave_up
        elif supervisor is not None and not running:
            message = "starting" if supervisor.active else "stopped"
        return AddonHealth(
            name=self.name,
            version=self.spec.version,
            installed=self.installed,
            running=running,
            restarts=supervisor.restarts if supervisor else 0,
            message=message,
        )


def _node_argv(target: Path) -> list[str]:
    return [str(target / "lib" / "node"), str(target)]


async def _probe_flags(
    layout: Layout,
    spec: CodeServerAddon,
    target: Path,
    env: dict[str, str],
    user: DevIdentity | None,
) -> frozenset[str]:
    """Which of OPTIONAL_FLAGS ``--help`` of the code-server in ``target`` lists; remembered
    per installed digest."""
    cache = layout.state / "code-server-help.json"
    digest = spec.artifact.sha256
    with contextlib.suppress(OSError, ValueError, KeyError, TypeError):
        remembered = json.loads(cache.read_text())[digest]
        if isinstance(remembered, list):
            return frozenset(remembered)
    argv = [*_node_argv(target), "--help"]
    try:
        code, out = await run_once(argv, timeout_s=_HELP_TIMEOUT_S, env=env, user=user)
    except TimeoutError as exc:
        raise AddonError(f"code-server --help did not finish in {_HELP_TIMEOUT_S:g}s") from exc
    if code != 0:
        raise AddonError(f"code-server --help failed ({code}): {out[-500:]}")
    listed = frozenset(flag for flag in OPTIONAL_FLAGS if f"{flag} " in out)
    cache.parent.mkdir(parents=True, exist_ok=True)
    cache.write_text(json.dumps({digest: sorted(listed)}))
    return listed
