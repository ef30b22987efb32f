"""tailscale: ``tailscaled`` supervised, then one ``tailscale up`` against the platform's Headscale.

The API side (Headscale pre-auth keys, the tailnet policy) is :mod:`zlh.api.tailnet`. The join
follows the platform's tailnet restrictions (docs/architecture.md): ``--accept-dns=false``
(no DNS takeover), ``--accept-routes=false``, never an exit node (no ``--exit-node`` or
``--advertise-exit-node``), hostname ``zlh-<vmid>`` unless the payload names one. The pre-auth
key never appears in an argv (``ps`` shows every argv to every user): it is written to a 0600
file in the agent's state dir and passed as ``--auth-key=file:<path>``, and the file is removed
once the join succeeded.
"""

from __future__ import annotations

import asyncio
import contextlib
from pathlib import Path

from zlh.agent.addons.base import Addon, AddonContext
from zlh.agent.errors import AddonError
from zlh.agent.supervise import ProcessSpec, Supervisor, run_once
from zlh.atomic import write_atomically
from zlh.schemas import AddonHealth, TailscaleAddon

__all__ = ["Tailscale"]

_UP_TIMEOUT_S = 60.0
_IP_TIMEOUT_S = 10.0
# tailscale's own processes get a bare environment: nothing of the agent's leaks into them.
_ENV = {"PATH": "/usr/bin:/bin"}


class Tailscale(Addon[TailscaleAddon]):
    name = "tailscale"

    def __init__(self, spec: TailscaleAddon, ctx: AddonContext) -> None:
        super().__init__(spec, ctx)
        self.state_dir = ctx.layout.state / "tailscale"
        self.key_file = self.state_dir / "authkey"
        self.socket = self.state_dir / "tailscaled.sock"
        self.supervisor: Supervisor | None = None
        self.joined = False
        self.error = ""
        self.ip: str | None = None  # the node's tailnet IPv4, once joined

    def binary(self, program: str) -> Path:
        for rel in (*self.spec.artifact.bin, "."):
            candidate = self.target / rel / program
            if candidate.is_file():
                return candidate
        raise AddonError(f"the tailscale artifact has no {program} (looked in its bin dirs)")

    @property
    def hostname(self) -> str:
        return self.spec.options.hostname or f"zlh-{self.ctx.vmid}"

    async def configure(self) -> None:
        self.state_dir.mkdir(parents=True, exist_ok=True, mode=0o700)
        key = self.spec.options.auth_key.get_secret_value()
        write_atomically(self.key_file, key, mode=0o600)

    def daemon_argv(self) -> tuple[str, ...]:
        tun = "tailscale0" if Path("/dev/net/tun").exists() else "userspace-networking"
        return (
            str(self.binary("tailscaled")),
            f"--state={self.state_dir / 'tailscaled.state'}",
            f"--socket={self.socket}",
            f"--tun={tun}",
        )

    def up_argv(self) -> tuple[str, ...]:
        return (
            str(self.binary("tailscale")),
            f"--socket={self.socket}",
            "up",
            f"--login-server={self.spec.options.login_server}",
            f"--auth-key=file:{self.key_file}",
            f"--hostname={self.hostname}",
            "--accept-dns=false",
            "--accept-routes=false",
        )

    async def start(self) -> None:
        if self.supervisor is None:
            self.supervisor = self.supervisor_for(
                ProcessSpec(name="tailscaled", argv=self.daemon_argv(), env=dict(_ENV))
            )
        self.supervisor.start()
        if self.joined or not self.key_file.exists():
            # Joined before (this run or an earlier one): only learn the address again.
            self.ip = self.ip or await self._query_ip()
            return
        try:
            code, out = await run_once(self.up_argv(), timeout_s=_UP_TIMEOUT_S, env=dict(_ENV))
        except TimeoutError as exc:
            raise AddonError(f"tailscale up did not finish within {_UP_TIMEOUT_S:g}s") from exc
        if code != 0:
            self.error = out[-500:]
            raise AddonError(f"tailscale up failed ({code}): {self.error}")
        self.joined = True
        self.key_file.unlink(missing_ok=True)
        self.ip = await self._query_ip()

    async def _query_ip(self) -> str | None:
        """``tailscale ip -4``; None when it cannot tell (not joined, daemon down)."""
        try:
            proc = await asyncio.create_subprocess_exec(
                str(self.binary("tailscale")),
                f"--socket={self.socket}",
                "ip",
                "-4",
                stdout=asyncio.subprocess.PIPE,
                stderr=asyncio.subprocess.DEVNULL,
                env=_ENV,
            )
            out, _ = await asyncio.wait_for(proc.communicate(), _IP_TIMEOUT_S)
        except (OSError, TimeoutError, AddonError):
            return None
        lines = out.decode(errors="replace").split()
        return lines[0] if proc.returncode == 0 and lines else None

    async def stop(self) -> None:
        if self.supervisor is not None:
            with contextlib.suppress(OSError):
                await self.supervisor.stop()

    def health(self) -> AddonHealth:
        supervisor = self.supervisor
        running = bool(supervisor and supervisor.running_pid() and self.joined)
        message = (supervisor.gave_up if supervisor else None) or self.error
        return AddonHealth(
            name=self.name,
            version=self.spec.version,
            installed=self.installed,
            running=running,
            restarts=supervisor.restarts if supervisor else 0,
            message=message or "",
        )
