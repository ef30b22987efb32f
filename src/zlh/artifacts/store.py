"""The artifact store: tarballs on disk plus ``catalog.json``, changed only atomically.

Layout::

    <root>/catalog.json                              the catalog, served as /catalog.json
    <root>/.lock                                     flock held around catalog read-modify-write
    <root>/<kind>/<name>/<version>/<file>            one tarball per version
    <root>/<kind>/<name>/<version>/.<file>.partial-*  a copy in progress, never referenced

Crash safety: a tarball is streamed into a hidden partial file next to its final place (hashed
and counted on the way, then fsynced), renamed into place, and only then does the catalog
change, by writing a temp file, fsyncing it and renaming it over ``catalog.json``. A kill at any
point leaves the previous catalog whole and never a catalog entry pointing at a partial file.
The one window left: ``--replace`` with the same file name, killed between the two renames,
leaves the new (complete) tarball under the old entry; ``verify`` reports it, re-running the add
repairs it. Partial files of dead processes are swept by the next add into the same directory.
"""

from __future__ import annotations

import contextlib
import fcntl
import os
import re
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from urllib.parse import unquote, urlsplit

from pydantic import TypeAdapter, ValidationError

from zlh.artifacts.errors import (
    ArtifactConflictError,
    ArtifactError,
    CatalogInvalidError,
    DigestMismatchError,
    DownloadError,
    UnknownArtifactError,
)
from zlh.artifacts.files import (
    CHUNK_SIZE,
    PartialFile,
    hash_file,
    read_chunks,
    sweep_partials,
)
from zlh.artifacts.progress import TransferProgress
from zlh.atomic import partial_glob, write_atomically
from zlh.schemas import (
    ADDONS,
    Artifact,
    ArtifactFormat,
    ArtifactKind,
    ArtifactMetadata,
    Catalog,
    CatalogLookupError,
    RuntimeName,
    validation_problems,
)
from zlh.schemas.artifact import Version

__all__ = ["CATALOG_FILE", "ArtifactStore", "VerifyProblem", "load_catalog"]

CATALOG_FILE = "catalog.json"
LOCK_FILE = ".lock"
_FILENAME_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._+-]{0,199}$")
_SHA256_RE = re.compile(r"^[0-9a-f]{64}$")
_PLACEHOLDER_SHA256 = "0" * 64
_VERSION = TypeAdapter(Version)
_CONNECT_TIMEOUT_S = 30.0
_READ_TIMEOUT_S = 120.0


@dataclass(frozen=True)
class VerifyProblem:
    """One catalog artifact whose file on disk does not match the catalog."""

    kind: ArtifactKind
    name: str
    version: str
    path: Path
    expected_sha256: str
    expected_size: int
    actual_sha256: str | None
    actual_size: int | None
    reason: str


def load_catalog(path: Path) -> Catalog:
    """The validated catalog at ``path``; an empty one if the file does not exist."""
    try:
        data = path.read_bytes()
    except FileNotFoundError:
        return Catalog()
    except OSError as exc:
        raise ArtifactError(f"cannot read {path}: {exc.strerror}") from exc
    try:
        return Catalog.model_validate_json(data)
    except ValidationError as exc:
        problems = "; ".join(f"{p.field}: {p.detail}" for p in validation_problems(exc))
        raise CatalogInvalidError(f"{path} is invalid: {problems}") from exc


class ArtifactStore:
    """A directory of tarballs and the catalog that pins them. Safe for concurrent writers."""

    def __init__(self, root: Path) -> None:
        self.root = root

    @property
    def catalog_path(self) -> Path:
        return self.root / CATALOG_FILE

    def catalog(self) -> Catalog:
        """The validated catalog; empty if there is none yet. CatalogInvalidError names why."""
        return load_catalog(self.catalog_path)

    def artifact_path(self, kind: ArtifactKind | str, name: str, version: str) -> Path:
        """Where the catalog's artifact for ``kind name version`` lives on disk."""
        kind_, name = _check_kind_name(kind, name)
        try:
            _, artifact = self.catalog().resolve(kind_, name, version)
        except CatalogLookupError as exc:
            raise UnknownArtifactError(exc.message) from exc
        return self._local_path(artifact, f"{kind_.value} {name} {version}")

    def add_file(
        self,
        kind: ArtifactKind | str,
        name: str,
        version: str,
        source: Path,
        *,
        filename: str | None = None,
        fmt: ArtifactFormat | None = None,
        strip_components: int = 1,
        bin_dirs: list[str] | None = None,
        metadata: ArtifactMetadata | None = None,
        expected_sha256: str | None = None,
        replace: bool = False,
        make_default: bool = False,
        progress: TransferProgress | None = None,
    ) -> Artifact:
        """Copy ``source`` (a file or a pipe) into the store and pin it in the catalog."""
        plan = self._plan(
            kind,
            name,
            version,
            filename or source.name,
            fmt=fmt,
            expected_sha256=expected_sha256,
            strip_components=strip_components,
            bin_dirs=bin_dirs,
            metadata=metadata,
        )
        try:
            src = source.open("rb")
            total = os.fstat(src.fileno()).st_size if source.is_file() else None
        except OSError as exc:
            raise ArtifactError(f"cannot read {source}: {exc.strerror}") from exc
        with src:
            return self._add(
                plan,
                read_chunks(src, source),
                total,
                replace=replace,
                make_default=make_default,
                progress=progress,
            )

    def add_url(
        self,
        kind: ArtifactKind | str,
        name: str,
        version: str,
        url: str,
        *,
        expected_sha256: str,
        filename: str | None = None,
        fmt: ArtifactFormat | None = None,
        strip_components: int = 1,
        bin_dirs: list[str] | None = None,
        metadata: ArtifactMetadata | None = None,
        replace: bool = False,
        make_default: bool = False,
        progress: TransferProgress | None = None,
    ) -> Artifact:
        """Download ``url`` into the store (refused unless it hashes to ``expected_sha256``)."""
        parts = urlsplit(url)
        if parts.scheme not in {"http", "https"} or not parts.netloc:
            raise ArtifactError(f"--url must be an http(s) URL, got {url!r}")
        plan = self._plan(
            kind,
            name,
            version,
            filename or unquote(parts.path.rsplit("/", 1)[-1]),
            fmt=fmt,
            expected_sha256=expected_sha256,
            strip_components=strip_components,
            bin_dirs=bin_dirs,
            metadata=metadata or ArtifactMetadata(source=url),
        )
        current = self.catalog().section(plan.kind).get(plan.name)
        existing = current.get(plan.version) if current else None
        if existing is not None and existing.sha256 == plan.expected_sha256:
            path = self._local_path(existing, plan.label)
            unchanged = not (make_default or replace)
            if path.is_file() and path.stat().st_size == existing.size and unchanged:
                return existing  # already there: nothing to download
        import httpx  # ~0.1 s to import: only for downloads

        timeout = httpx.Timeout(_CONNECT_TIMEOUT_S, read=_READ_TIMEOUT_S)
        headers = {"Accept-Encoding": "identity"}  # the bytes as stored, never re-encoded
        try:
            with httpx.stream(
                "GET", url, headers=headers, follow_redirects=True, timeout=timeout
            ) as response:
                if response.status_code != httpx.codes.OK:
                    raise DownloadError(f"GET {url} answered {response.status_code}")
                length = response.headers.get("content-length")
                return self._add(
                    plan,
                    response.iter_raw(CHUNK_SIZE),
                    int(length) if length and length.isdigit() else None,
                    replace=replace,
                    make_default=make_default,
                    progress=progress,
                )
        except httpx.HTTPError as exc:
            raise DownloadError(f"downloading {url} failed: {exc}") from exc

    def remove(self, kind: ArtifactKind | str, name: str, version: str) -> None:
        """Drop a version from the catalog, then its file. The default moves to the newest."""
        kind_, name = _check_kind_name(kind, name)
        with self._locked():
            current = self.catalog()
            try:
                _, artifact = current.resolve(kind_, name, version)
                updated = current.without_version(kind_, name, version)
            except CatalogLookupError as exc:
                raise UnknownArtifactError(exc.message) from exc
            self._write_catalog(updated)
            if not urlsplit(artifact.url).scheme:
                path = self.root / artifact.url
                path.unlink(missing_ok=True)
                self._prune_dirs(path.parent)

    def verify(self) -> list[VerifyProblem]:
        """Re-hash every local artifact of the catalog; one problem per file that differs."""
        problems: list[VerifyProblem] = []
        catalog = self.catalog()
        for kind in ArtifactKind:
            for name, entry in sorted(catalog.section(kind).items()):
                for item in entry.versions:
                    artifact = item.artifact
                    if urlsplit(artifact.url).scheme:
                        continue  # hosted elsewhere: not ours to check
                    path = self.root / artifact.url
                    problem = _check_file(path, artifact)
                    if problem is not None:
                        reason, actual_sha, actual_size = problem
                        problems.append(
                            VerifyProblem(
                                kind=kind,
                                name=name,
                                version=item.version,
                                path=path,
                                expected_sha256=artifact.sha256,
                                expected_size=artifact.size,
                                actual_sha256=actual_sha,
                                actual_size=actual_size,
                                reason=reason,
                            )
                        )
        return problems

    # -- internals -------------------------------------------------------------------------

    def _plan(
        self,
        kind: ArtifactKind | str,
        name: str,
        version: str,
        filename: str,
        *,
        fmt: ArtifactFormat | None,
        expected_sha256: str | None,
        strip_components: int,
        bin_dirs: list[str] | None,
        metadata: ArtifactMetadata | None,
    ) -> _Plan:
        """Check everything but the bytes before any copy starts."""
        kind_, name = _check_kind_name(kind, name)
        try:
            version = _VERSION.validate_python(version)
        except ValidationError as exc:
            detail = exc.errors(include_url=False)[0]["msg"]
            raise UnknownArtifactError(f"invalid version {version!r}: {detail}") from exc
        if not _FILENAME_RE.fullmatch(filename):
            raise UnknownArtifactError(
                f"invalid artifact file name {filename!r}: use letters, digits, '.', '_', '+', '-'"
                " and start with a letter or digit (choose another with --filename)"
            )
        if fmt is None:
            try:
                fmt = ArtifactFormat.from_filename(filename)
            except ValueError as exc:
                raise UnknownArtifactError(f"{exc} (or say which with --format)") from exc
        if expected_sha256 is not None:
            expected_sha256 = expected_sha256.lower()
            if not _SHA256_RE.fullmatch(expected_sha256):
                raise ArtifactError(f"--sha256 must be 64 hex digits, got {expected_sha256!r}")
        relative_dir = f"{kind_.value}/{name}/{version}"
        try:
            template = Artifact(
                url=f"{relative_dir}/{filename}",
                sha256=_PLACEHOLDER_SHA256,
                size=0,
                format=fmt,
                strip_components=strip_components,
                bin=_default_bin(kind_) if bin_dirs is None else bin_dirs,
                metadata=_with_created(metadata or ArtifactMetadata()),
            )
        except ValidationError as exc:
            problems = "; ".join(f"{p.field}: {p.detail}" for p in validation_problems(exc))
            raise ArtifactError(f"invalid artifact for {kind_.value} {name}: {problems}") from exc
        return _Plan(kind_, name, version, filename, expected_sha256, relative_dir, template)

    def _add(
        self,
        plan: _Plan,
        chunks: Iterable[bytes],
        total: int | None,
        *,
        replace: bool,
        make_default: bool,
        progress: TransferProgress | None,
    ) -> Artifact:
        # Refuse early (before a long copy) on a broken catalog or a known conflict.
        _check_conflict(self.catalog(), plan, plan.expected_sha256, replace=replace)
        directory = self.root / plan.relative_dir
        try:
            directory.mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            raise ArtifactError(f"cannot create {directory}: {exc.strerror}") from exc
        sweep_partials(directory)
        try:
            with PartialFile(directory, plan.filename) as partial:
                progress = progress or TransferProgress.quiet()
                with progress.transfer(plan.label, total) as advance:
                    for chunk in chunks:
                        partial.write(chunk)
                        advance(len(chunk))
                partial.finish()
                expected = plan.expected_sha256
                if expected is not None and partial.sha256 != expected:
                    raise DigestMismatchError(
                        f"{plan.filename} has sha256 {partial.sha256}, expected {expected}"
                        f" ({partial.size} bytes); nothing was added"
                    )
                artifact = plan.template.model_copy(
                    update={"sha256": partial.sha256, "size": partial.size}
                )
                return self._commit(plan, partial, artifact, replace, make_default)
        except BaseException:
            self._prune_dirs(directory)
            raise

    def _commit(
        self,
        plan: _Plan,
        partial: PartialFile,
        artifact: Artifact,
        replace: bool,
        make_default: bool,
    ) -> Artifact:
        """Under the lock: re-check conflicts, rename the file into place, rewrite the catalog."""
        with self._locked():
            current = self.catalog()
            existing = _check_conflict(current, plan, artifact.sha256, replace=replace)
            if existing is not None and existing.sha256 == artifact.sha256 and not replace:
                # Same bytes again: a no-op, except repairing a damaged file in place.
                # (With replace, the entry takes the new metadata below.)
                if existing.url == artifact.url:
                    partial.commit(self.root / artifact.url)
                entry = current.section(plan.kind)[plan.name]
                if make_default and entry.default != plan.version:
                    self._write_catalog(
                        current.with_version(
                            plan.kind, plan.name, plan.version, existing, make_default=True
                        )
                    )
                return existing
            partial.commit(self.root / artifact.url)
            self._write_catalog(
                current.with_version(
                    plan.kind, plan.name, plan.version, artifact, make_default=make_default
                )
            )
            if existing is not None and existing.url != artifact.url:
                (self.root / existing.url).unlink(missing_ok=True)
            return artifact

    def _local_path(self, artifact: Artifact, label: str) -> Path:
        if urlsplit(artifact.url).scheme:
            raise ArtifactError(f"{label} is hosted elsewhere ({artifact.url}), not in the store")
        return self.root / artifact.url

    @contextlib.contextmanager
    def _locked(self) -> Iterator[None]:
        """Exclusive flock on ``<root>/.lock``; the kernel drops it if the process dies."""
        try:
            self.root.mkdir(parents=True, exist_ok=True)
            fd = os.open(self.root / LOCK_FILE, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o644)
        except OSError as exc:
            raise ArtifactError(f"cannot lock the store {self.root}: {exc.strerror}") from exc
        try:
            fcntl.flock(fd, fcntl.LOCK_EX)
            # Whoever held the lock before us is done: its temp catalogs are garbage.
            for stale in self.root.glob(partial_glob(self.catalog_path)):
                stale.unlink(missing_ok=True)
            yield
        finally:
            os.close(fd)

    def _write_catalog(self, catalog: Catalog) -> None:
        data = (catalog.model_dump_json(indent=2, exclude_none=True) + "\n").encode()
        try:
            write_atomically(self.catalog_path, data, durable=True)
        except OSError as exc:
            raise ArtifactError(f"cannot write {self.catalog_path}: {exc.strerror}") from exc

    def _prune_dirs(self, directory: Path) -> None:
        """Remove ``directory`` and its parents below the root while they are empty."""
        root = self.root.resolve()
        current = directory.resolve()
        while current != root and root in current.parents:
            try:
                current.rmdir()
            except OSError:
                return
            current = current.parent


@dataclass(frozen=True)
class _Plan:
    kind: ArtifactKind
    name: str
    version: str
    filename: str
    expected_sha256: str | None
    relative_dir: str
    template: Artifact  # everything but sha256 and size, which the copy fills in

    @property
    def label(self) -> str:
        return f"{self.kind.value} {self.name} {self.version}"


def _check_kind_name(kind: ArtifactKind | str, name: str) -> tuple[ArtifactKind, str]:
    try:
        kind_ = ArtifactKind(kind)
    except ValueError:
        known = ", ".join(k.value for k in ArtifactKind)
        raise UnknownArtifactError(f"unknown artifact kind {kind!r} (known: {known})") from None
    names = [n.value for n in RuntimeName] if kind_ is ArtifactKind.RUNTIME else list(ADDONS)
    if name not in names:
        known = ", ".join(names)
        raise UnknownArtifactError(f"unknown {kind_.value} {name!r} (known: {known})")
    return kind_, name


def _check_conflict(
    catalog: Catalog, plan: _Plan, sha256: str | None, *, replace: bool
) -> Artifact | None:
    """The version's current artifact, if any; refuses another digest without ``replace``."""
    entry = catalog.section(plan.kind).get(plan.name)
    existing = entry.get(plan.version) if entry else None
    if existing is not None and sha256 is not None and existing.sha256 != sha256 and not replace:
        raise ArtifactConflictError(
            f"{plan.label} is already in the catalog with sha256 {existing.sha256},"
            f" not {sha256}; pass --replace to replace it"
        )
    return existing


def _check_file(path: Path, artifact: Artifact) -> tuple[str, str | None, int | None] | None:
    """(reason, actual sha256, actual size) when ``path`` does not hold ``artifact``."""
    try:
        if not path.is_file():
            return ("missing" if not path.exists() else "not a regular file"), None, None
        sha256, size = hash_file(path)
    except OSError as exc:
        return f"unreadable: {exc.strerror}", None, None
    if size < artifact.size:
        return "truncated", sha256, size
    if size > artifact.size:
        return "larger than recorded", sha256, size
    if sha256 != artifact.sha256:
        return "modified", sha256, size
    return None


def _default_bin(kind: ArtifactKind) -> list[str]:
    """Runtimes put ``bin`` on PATH unless told otherwise; addons are launched by path."""
    return ["bin"] if kind is ArtifactKind.RUNTIME else []


def _with_created(metadata: ArtifactMetadata) -> ArtifactMetadata:
    if metadata.created is not None:
        return metadata
    return metadata.model_copy(update={"created": datetime.now(UTC)})
