"""Installed runtimes on disk: which exist, which is active, and the dev user's PATH.

``/opt/zlh/runtimes/<runtime>/current`` is a relative symlink to the active version, replaced
atomically (new link, then ``rename``). ``/etc/profile.d/zlh-runtimes.sh`` puts every active
runtime's ``current/<bin>`` dirs on PATH for login shells, so switching versions needs no new
PATH, only a new link. Disk is the truth: nothing here is cached, so a restarted agent reports
exactly what is installed.
"""

from __future__ import annotations

import os
import shlex
from pathlib import Path

from zlh.agent.errors import Conflict, NotFound
from zlh.agent.paths import Layout
from zlh.atomic import write_atomically
from zlh.install.installed import Marker, is_mount_point, read_marker, retire
from zlh.schemas import InstalledRuntime, RuntimeName

__all__ = ["Runtimes"]

_PROFILE_HEADER = """\
# Written by zlh-agent: puts the active runtimes on PATH. Changes here are overwritten.
"""


def _atomic_write(path: Path, text: str, mode: int = 0o644) -> None:
    """Write ``text`` to ``path`` via a temp file and rename; nothing when it is already so."""
    try:
        if path.read_text() == text:
            return
    except OSError:
        pass
    path.parent.mkdir(parents=True, exist_ok=True)
    write_atomically(path, text, mode=mode)


class Runtimes:
    def __init__(self, layout: Layout) -> None:
        self.layout = layout

    def active_version(self, name: str) -> str | None:
        try:
            target = os.readlink(self.layout.current(name))
        except OSError:
            return None
        return target if "/" not in target else None

    def marker(self, name: str, version: str) -> Marker | None:
        return read_marker(self.layout.runtime(name, version))

    def installed(self) -> list[InstalledRuntime]:
        found = []
        for name in sorted(n.value for n in RuntimeName):
            directory = self.layout.runtimes / name
            if not directory.is_dir():
                continue
            active = self.active_version(name)
            for entry in sorted(directory.iterdir()):
                if entry.name.startswith(".") or entry.is_symlink():
                    continue
                marker = read_marker(entry)
                if marker is None:
                    continue
                found.append(
                    InstalledRuntime(
                        name=name,
                        version=entry.name,
                        path=str(entry),
                        sha256=marker.sha256,
                        active=entry.name == active,
                        metadata=marker.metadata,
                    )
                )
        return found

    def activate(self, name: str, version: str) -> None:
        if self.marker(name, version) is None:
            raise NotFound(f"runtime {name} {version} is not installed")
        if self.active_version(name) != version:
            link = self.layout.current(name)
            tmp = link.with_name(f".current.tmp-{os.getpid()}")
            tmp.unlink(missing_ok=True)
            os.symlink(version, tmp)
            os.replace(tmp, link)
        self.write_profile()

    def remove(self, name: str, version: str) -> None:
        target = self.layout.runtime(name, version)
        if not target.is_dir() or target.is_symlink():
            raise NotFound(f"runtime {name} {version} is not installed")
        if self.active_version(name) == version:
            raise Conflict(
                f"runtime {name} {version} is the active version; activate another one first"
            )
        if is_mount_point(target):
            raise Conflict(
                f"runtime {name} {version} is a shared layer the host mounts read-only: it "
                "cannot be removed from inside the container"
            )
        retire(target)

    def write_profile(self) -> None:
        lines = [_PROFILE_HEADER]
        for name in sorted(n.value for n in RuntimeName):
            version = self.active_version(name)
            marker = self.marker(name, version) if version else None
            if marker is None:
                continue
            for rel in reversed(marker.bin):
                bin_dir = shlex.quote(str(self.layout.current(name) / rel))
                lines.append(
                    f'case ":$PATH:" in *:{bin_dir}:*) ;; *) PATH={bin_dir}:"$PATH" ;; esac\n'
                )
        lines.append("export PATH\n")
        _atomic_write(self.layout.profile_script, "".join(lines))
