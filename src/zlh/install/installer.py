"""Verified, atomic installs of artifacts (runtimes and addons alike).

An install streams the artifact into a staging directory beside the target
(``<parent>/.staging~<version>~<random>``), verifies size, sha256, every member and the ``bin``
dirs, writes the completion marker *inside* the staging directory, and only then renames it
onto the target. So the target directory appears complete with its marker in one atomic step:
"installed" means "marker present and its digest equals the payload's", and a half-written
directory can never pass for one. The guard reads one small file, so a repeated provisioning
costs milliseconds. Leftovers of a crash (staging, replaced or half-removed trees) are swept
before the next install of the same target and when the agent starts.

One lock per target: concurrent requests for the same target wait for the first and then find
its marker, so they cause exactly one download.
"""

from __future__ import annotations

import asyncio
import os
import shutil
import tempfile
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING

from zlh.install.download import RetryPolicy, fetch
from zlh.install.errors import DownloadError, InstallError
from zlh.install.extract import StreamExtractor
from zlh.install.installed import (
    MARKER_NAME,
    Marker,
    is_mount_point,
    leftover_name,
    read_marker,
    sweep,
)
from zlh.install.progress import ProgressTracker
from zlh.schemas import Artifact, ArtifactKind, ProvisionStep

if TYPE_CHECKING:
    import aiohttp

__all__ = ["InstallRequest", "Installer"]


def _swap(staging: Path, target: Path) -> None:
    if target.exists() or target.is_symlink():
        old = target.parent / (leftover_name(".old~", target) + os.urandom(4).hex())
        os.rename(target, old)
        os.rename(staging, target)
        shutil.rmtree(old, ignore_errors=True)
    else:
        os.rename(staging, target)


@dataclass(frozen=True)
class InstallRequest:
    kind: ArtifactKind
    name: str
    version: str
    artifact: Artifact
    target: Path

    @property
    def steps(self) -> tuple[ProvisionStep, ProvisionStep]:
        if self.kind is ArtifactKind.RUNTIME:
            return ProvisionStep.RUNTIME_DOWNLOAD, ProvisionStep.RUNTIME_EXTRACT
        return ProvisionStep.ADDON_DOWNLOAD, ProvisionStep.ADDON_INSTALL

    @property
    def label(self) -> str:
        return f"{self.kind.value} {self.name} {self.version}"


class Installer:
    def __init__(self, *, policy: RetryPolicy, artifact_base_url: str | None = None) -> None:
        self.policy = policy
        self.artifact_base_url = artifact_base_url
        self._session: aiohttp.ClientSession | None = None
        self._locks: dict[Path, asyncio.Lock] = {}

    def _http(self) -> aiohttp.ClientSession:
        if self._session is None:
            import aiohttp

            # auto_decompress off: a server's Content-Encoding must never change the bytes hashed.
            self._session = aiohttp.ClientSession(
                auto_decompress=False, trust_env=False, cookie_jar=aiohttp.DummyCookieJar()
            )
        return self._session

    async def close(self) -> None:
        if self._session is not None:
            await self._session.close()

    def lock(self, target: Path) -> asyncio.Lock:
        return self._locks.setdefault(target, asyncio.Lock())

    def _url(self, artifact: Artifact) -> str:
        if artifact.url.startswith(("http://", "https://")):
            return artifact.url
        if not self.artifact_base_url:
            raise DownloadError(
                f"artifact url {artifact.url!r} is relative and the agent has no "
                "--artifact-base-url"
            )
        return artifact.resolved_url(self.artifact_base_url)

    async def ensure(self, req: InstallRequest, tracker: ProgressTracker) -> tuple[Marker, bool]:
        """Install ``req`` unless already installed; returns the marker and whether it worked."""
        async with self.lock(req.target):
            marker = read_marker(req.target)
            if marker is not None and marker.sha256 == req.artifact.sha256:
                return marker, False
            if await asyncio.to_thread(is_mount_point, req.target):
                found = f"sha256 {marker.sha256}" if marker else "no readable marker"
                raise InstallError(
                    f"{req.label}: {req.target} is a read-only layer the host mounted, with "
                    f"{found}, not the payload's {req.artifact.sha256}: rebuild the container"
                )
            url = self._url(req.artifact)
            await asyncio.to_thread(sweep, req.target)
            req.target.parent.mkdir(parents=True, exist_ok=True)
            prefix = leftover_name(".staging~", req.target)
            staging = Path(tempfile.mkdtemp(prefix=prefix, dir=req.target.parent))
            try:
                # mkdtemp's 0700 would lock the dev user out of the installed tree.
                os.chmod(staging, 0o755)
                marker = await self._build(req, url, staging, tracker)
                await asyncio.to_thread(_swap, staging, req.target)
            except BaseException:
                shutil.rmtree(staging, ignore_errors=True)
                raise
            return marker, True

    async def _build(
        self, req: InstallRequest, url: str, staging: Path, tracker: ProgressTracker
    ) -> Marker:
        artifact = req.artifact
        download_step, extract_step = req.steps
        tracker.enter(download_step, f"downloading {req.label}", bytes_total=artifact.size)
        extractor = StreamExtractor(staging, artifact.format, artifact.strip_components)
        extractor.start()
        try:
            await fetch(
                self._http(),
                url,
                size=artifact.size,
                sha256=artifact.sha256,
                sink=extractor,
                policy=self.policy,
                on_bytes=tracker.bytes,
            )
        except BaseException:
            await extractor.abort()
            raise
        tracker.enter(extract_step, f"verifying {req.label}")
        await extractor.finish()
        for rel in artifact.bin:
            if not (staging / rel).is_dir():
                raise InstallError(
                    f"{req.label}: the artifact has no '{rel}' directory "
                    f"(after stripping {artifact.strip_components} path components)"
                )
        marker = Marker(
            kind=req.kind,
            name=req.name,
            version=req.version,
            sha256=artifact.sha256,
            size=artifact.size,
            url=url,
            format=artifact.format,
            strip_components=artifact.strip_components,
            bin=list(artifact.bin),
            metadata=artifact.metadata,
            installed_at=datetime.now(UTC),
        )
        marker_file = staging / MARKER_NAME
        marker_file.write_text(marker.model_dump_json(indent=2) + "\n")
        # Readable by every user whatever the umask: the host builds layers under 077.
        os.chmod(marker_file, 0o644)
        return marker
