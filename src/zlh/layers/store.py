"""The host's shared layers: each verified artifact extracted once, read-only, under
``<data dir>/layers/<sha256>``, for backends that can mount them into containers.

A layer is built by the same installer the agent runs inside a container
(:class:`zlh.install.installer.Installer`: staging → verify → marker → rename), so its tree is
what the agent would have installed, and its completion marker names the artifact's sha256:
the agent's install guard, reading that marker through the mount, skips the download. Next to
the tree, ``<sha256>.manifest.json`` records every entry (:mod:`zlh.layers.manifest`); a layer
whose tree no longer matches its manifest, or that has none (a build cut short), is never
mounted: it is set aside (``.bad~<sha256>~…``, kept while a container may still have it
mounted) and built again.

Concurrent requests for one artifact build it once: one asyncio lock per layer in this
process, and an ``flock`` on ``.<sha256>.lock`` against other processes (``zlh layers gc``).
"""

from __future__ import annotations

import asyncio
import contextlib
import fcntl
import logging
import os
import shutil
import time
from collections.abc import AsyncIterator, Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path

from zlh.install.download import RetryPolicy
from zlh.install.installed import Marker, read_marker
from zlh.install.installer import Installer, InstallRequest
from zlh.install.progress import ProgressTracker
from zlh.layers.manifest import Manifest, full_check, quick_check, read_manifest, scan
from zlh.locks import flocked
from zlh.schemas import Artifact, ArtifactKind

__all__ = ["LayerInfo", "LayerStore"]

log = logging.getLogger("zlh.layers")

_SHA256 = frozenset("0123456789abcdef")
_SET_ASIDE = ".bad~"
NOT_BUILT = "is not built"


def _is_sha256(name: str) -> bool:
    return len(name) == 64 and set(name) <= _SHA256


@dataclass(frozen=True)
class LayerInfo:
    """One layer on disk, as ``zlh layers list`` shows it."""

    sha256: str
    path: Path
    marker: Marker | None
    size: int
    problem: str | None  # None: complete and unchanged (quick check)

    @property
    def label(self) -> str:
        m = self.marker
        return f"{m.kind.value} {m.name} {m.version}" if m else "(no marker)"


class LayerStore:
    """Layers under ``root``. ``recheck_after_s``: a layer checked this recently is handed out
    again without a new walk of its tree (ten concurrent requests cost one check)."""

    def __init__(self, root: Path, *, recheck_after_s: float = 1.0) -> None:
        self.root = root
        self.recheck_after_s = recheck_after_s
        self._installer: Installer | None = None
        self._locks: dict[str, asyncio.Lock] = {}
        self._checked_at: dict[str, float] = {}

    # -- paths --------------------------------------------------------------------------

    def path(self, sha256: str) -> Path:
        if not _is_sha256(sha256):
            raise ValueError(f"{sha256!r} is not a sha256")
        return self.root / sha256

    def manifest_path(self, sha256: str) -> Path:
        return self.root / f"{sha256}.manifest.json"

    def _lock_path(self, sha256: str) -> Path:
        return self.root / f".{sha256}.lock"

    def _make_root(self) -> None:
        # Containers' root (a mapped uid) must pass through to the bind mounts' sources;
        # nothing here is secret (artifacts any container may install), nothing writable.
        self.root.mkdir(mode=0o711, exist_ok=True)
        os.chmod(self.root, 0o711)

    # -- building -----------------------------------------------------------------------

    @property
    def installer(self) -> Installer:
        if self._installer is None:
            self._installer = Installer(policy=RetryPolicy())
        return self._installer

    async def close(self) -> None:
        installer, self._installer = self._installer, None
        if installer is not None:
            await installer.close()

    async def ensure(self, kind: ArtifactKind, name: str, version: str, artifact: Artifact) -> Path:
        """The verified layer of ``artifact`` (an absolute url), built first if needed."""
        sha = artifact.sha256
        path = self.path(sha)
        async with self._locks.setdefault(sha, asyncio.Lock()):
            checked = self._checked_at.get(sha)
            if checked is not None and time.monotonic() - checked < self.recheck_after_s:
                return path
            await asyncio.to_thread(self._make_root)
            async with self._flock(sha):
                problem = await asyncio.to_thread(self.check, sha)
                if problem is not None:
                    if problem != NOT_BUILT:
                        log.warning("layer %s %s: building it again", sha, problem)
                        await asyncio.to_thread(self._set_aside, sha)
                    await self._build(InstallRequest(kind, name, version, artifact, path))
            self._checked_at[sha] = time.monotonic()
        return path

    async def _build(self, request: InstallRequest) -> None:
        started = time.monotonic()
        await self.installer.ensure(request, ProgressTracker())
        manifest = await asyncio.to_thread(scan, request.target, request.artifact.sha256)
        await asyncio.to_thread(manifest.write, self.manifest_path(request.artifact.sha256))
        log.info(
            "built layer %s (%s) in %.1fs",
            request.artifact.sha256,
            request.label,
            time.monotonic() - started,
        )

    @contextlib.asynccontextmanager
    async def _flock(self, sha256: str) -> AsyncIterator[None]:
        """The layer's lock, waited for in a thread. Not ``flocked``: a cancelled wait must
        still release what the thread takes later, and closing this descriptor does."""
        fd = os.open(self._lock_path(sha256), os.O_RDWR | os.O_CREAT | os.O_NOFOLLOW, 0o600)
        try:
            await asyncio.to_thread(fcntl.flock, fd, fcntl.LOCK_EX)
            yield
        finally:
            os.close(fd)  # closing releases the lock

    # -- checking, listing, removing -------------------------------------------------------

    def check(self, sha256: str, *, full: bool = False) -> str | None:
        """None when the layer is complete and unchanged; else why it may not be used."""
        path = self.path(sha256)
        if not os.path.lexists(path) and not self.manifest_path(sha256).exists():
            return NOT_BUILT
        if not os.path.lexists(path):
            return "is missing its tree"
        if path.is_symlink() or not path.is_dir():
            return "is not a directory"
        marker = read_marker(path)
        if marker is None or marker.sha256 != sha256:
            return "has no marker naming its sha256"
        manifest: Manifest | None = read_manifest(self.manifest_path(sha256))
        if manifest is None or manifest.sha256 != sha256:
            return "has no manifest (its build was cut short)"
        problem = (full_check if full else quick_check)(path, manifest)
        return None if problem is None else f"changed on disk ({problem})"

    def _set_aside(self, sha256: str) -> None:
        """Move a layer that may not be used out of the way, kept: a running container may
        still have it mounted. ``gc`` removes it once no container names the layer."""
        path = self.path(sha256)
        if os.path.lexists(path):
            os.rename(path, self.root / f"{_SET_ASIDE}{sha256}~{os.urandom(4).hex()}")
        self.manifest_path(sha256).unlink(missing_ok=True)
        self._checked_at.pop(sha256, None)

    def set_aside(self, sha256: str) -> None:
        """Under the layer's lock: the next use builds it again (``zlh layers verify``)."""
        with self._flock_now(sha256, wait=True):
            self._set_aside(sha256)

    def shas(self) -> list[str]:
        if not self.root.is_dir():
            return []
        return sorted(p.name for p in self.root.iterdir() if _is_sha256(p.name))

    def infos(self) -> list[LayerInfo]:
        infos = []
        for sha in self.shas():
            manifest = read_manifest(self.manifest_path(sha))
            infos.append(
                LayerInfo(
                    sha256=sha,
                    path=self.path(sha),
                    marker=read_marker(self.path(sha)),
                    size=manifest.size if manifest else _du(self.path(sha)),
                    problem=self.check(sha),
                )
            )
        return infos

    def set_aside_dirs(self) -> list[Path]:
        if not self.root.is_dir():
            return []
        return sorted(p for p in self.root.iterdir() if p.name.startswith(_SET_ASIDE))

    def gc(self, in_use: Iterable[str], *, dry_run: bool = False) -> list[str]:
        """Remove every layer (and set-aside tree) whose sha256 is not ``in_use``; returns
        what went. A layer another process is building right now is left alone."""
        keep = set(in_use)
        removed = []
        for sha in self.shas():
            if sha in keep:
                continue
            with self._flock_now(sha, wait=False) as locked:
                if not locked:
                    continue
                if not dry_run:
                    self._remove(sha)
                removed.append(sha)
        for aside in self.set_aside_dirs():
            sha = aside.name.removeprefix(_SET_ASIDE).split("~")[0]
            if sha not in keep:
                if not dry_run:
                    shutil.rmtree(aside, ignore_errors=True)
                removed.append(aside.name)
        return removed

    def _remove(self, sha256: str) -> None:
        path = self.path(sha256)
        aside = self.root / f".removing~{sha256}~{os.urandom(4).hex()}"
        if os.path.lexists(path):
            os.rename(path, aside)
        self.manifest_path(sha256).unlink(missing_ok=True)
        shutil.rmtree(aside, ignore_errors=True)
        self._lock_path(sha256).unlink(missing_ok=True)
        self._checked_at.pop(sha256, None)

    @contextlib.contextmanager
    def _flock_now(self, sha256: str, *, wait: bool) -> Iterator[bool]:
        self._make_root()
        with flocked(self._lock_path(sha256), wait=wait) as locked:
            yield locked


def _du(path: Path) -> int:
    total = 0
    for directory, _dirs, files in os.walk(path):
        for name in files:
            with contextlib.suppress(OSError):
                total += os.lstat(os.path.join(directory, name)).st_size
    return total
