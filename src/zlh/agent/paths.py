"""Where the container paths live on this machine.

Every path of the container contract (docs/architecture.md),
``/opt/zlh/runtimes/<runtime>/<version>``, ``/opt/zlh/services/<addon>``,
``/etc/profile.d/zlh-runtimes.sh``, ``/home/dev/workspace``, is mapped beneath ``root``: ``/`` in
a real container, a scratch directory in tests and under the process backend. Nothing else in
the agent builds these paths by hand.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from zlh.install import RUNTIMES_DIR, SERVICES_DIR

__all__ = ["Layout"]


@dataclass(frozen=True)
class Layout:
    root: Path

    def __post_init__(self) -> None:
        if not self.root.is_absolute():
            object.__setattr__(self, "root", self.root.absolute())

    @property
    def is_real_root(self) -> bool:
        """True in a real container: the container paths are the paths themselves."""
        return self.root == Path("/")

    def path(self, spec_path: str) -> Path:
        """``spec_path`` (absolute, as the contract or a payload writes it) beneath ``root``."""
        if not spec_path.startswith("/"):
            raise ValueError(f"{spec_path!r} is not an absolute path")
        return self.root / spec_path.lstrip("/")

    @property
    def runtimes(self) -> Path:
        return self.path(RUNTIMES_DIR)

    def runtime(self, name: str, version: str) -> Path:
        return self.runtimes / name / version

    def current(self, name: str) -> Path:
        """The symlink naming the active version of runtime ``name``."""
        return self.runtimes / name / "current"

    @property
    def services(self) -> Path:
        return self.path(SERVICES_DIR)

    def service(self, addon: str) -> Path:
        return self.services / addon

    @property
    def profile_script(self) -> Path:
        return self.path("/etc/profile.d/zlh-runtimes.sh")

    @property
    def state(self) -> Path:
        """The agent's own state: last accepted payload, pid files, logs, addon secrets."""
        return self.path("/var/lib/zlh-agent")

    @property
    def payload_file(self) -> Path:
        return self.state / "payload.json"

    def pid_file(self, name: str) -> Path:
        return self.state / "run" / f"{name}.pid"

    def log_file(self, name: str) -> Path:
        return self.state / "logs" / f"{name}.log"
