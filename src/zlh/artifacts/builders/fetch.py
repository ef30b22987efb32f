"""Getting registry packages into the build cache, and the subprocess plumbing builders share.

Everything downloaded lands in the cache directory and is reused by later builds: a wheel or
``.deb`` already there is never fetched again. Downloads go through the registries' own clients
(pip, apt-get, npm), so their index configuration, certificates and hash checks apply.
"""

from __future__ import annotations

import hashlib
import os
import re
import subprocess
import sys
import zipfile
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path

from zlh.artifacts.errors import ArtifactError

__all__ = [
    "CA_BUNDLE",
    "BuildError",
    "ca_bundle",
    "deb_closure",
    "extract_wheel",
    "fetch_debs",
    "fetch_wheel",
    "run",
    "sha256_file",
    "unpack_debs",
]

# The wheels we use are built for these; pip does not widen a --platform tag on its own.
_WHEEL_PLATFORMS = ("manylinux_2_17_x86_64", "manylinux2014_x86_64", "manylinux_2_28_x86_64")
_OUTPUT_TAIL = 3000
CA_BUNDLE = Path("/etc/ssl/certs/ca-certificates.crt")  # Debian's, and the template's


def _platform_ok(tag: str) -> bool:
    return tag == "any" or all(
        part in _WHEEL_PLATFORMS or (part.endswith("_x86_64") and part.startswith("manylinux"))
        for part in tag.split(".")
    )


class BuildError(ArtifactError):
    """A build step failed: a download, a tool run, or a check of the built tree."""

    status_code = 500


def run(
    argv: Sequence[str | Path],
    *,
    what: str,
    cwd: Path | None = None,
    env: Mapping[str, str] | None = None,
    timeout_s: float = 1800.0,
) -> str:
    """Run ``argv``; its stdout on success, else a BuildError quoting the end of its output."""
    try:
        result = subprocess.run(
            [str(a) for a in argv],
            cwd=cwd,
            env=dict(env) if env is not None else None,
            capture_output=True,
            text=True,
            timeout=timeout_s,
            check=False,
        )
    except FileNotFoundError as exc:
        raise BuildError(f"{what}: {argv[0]} is not installed") from exc
    except subprocess.TimeoutExpired as exc:
        raise BuildError(f"{what}: gave up after {timeout_s:.0f}s") from exc
    if result.returncode != 0:
        output = (result.stdout + result.stderr)[-_OUTPUT_TAIL:]
        raise BuildError(f"{what} failed (exit {result.returncode}):\n{output.strip()}")
    return result.stdout


def ca_bundle() -> Path:
    """The build host's CA bundle (PEM), which builds turn into their runtime's trust store."""
    if not CA_BUNDLE.is_file():
        raise BuildError(f"{CA_BUNDLE} is missing: apt-get install ca-certificates")
    return CA_BUNDLE


def sha256_file(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as f:
        while chunk := f.read(1 << 20):
            digest.update(chunk)
    return digest.hexdigest()


def _wheel_prefix(distribution: str, version: str) -> str:
    """The file name prefix of a wheel (PEP 427 escapes runs of ``-_.`` to one ``_``)."""
    return f"{re.sub(r'[-_.]+', '_', distribution).lower()}-{version}-"


def fetch_wheel(distribution: str, version: str, cache_dir: Path) -> tuple[Path, bool]:
    """The linux x86_64 (or pure Python) wheel of ``distribution==version`` in the cache, and
    whether it was downloaded now (False: reused from the cache)."""
    target = cache_dir / "pypi"
    cached = _cached_wheel(target, distribution, version)
    if cached is not None:
        return cached, False
    target.mkdir(parents=True, exist_ok=True)
    platforms = [arg for p in _WHEEL_PLATFORMS for arg in ("--platform", p)]
    run(
        [
            sys.executable,
            "-m",
            "pip",
            "download",
            "--no-deps",
            "--only-binary=:all:",
            *platforms,
            "--dest",
            target,
            f"{distribution}=={version}",
        ],
        what=f"pip download {distribution}=={version}",
        env={**os.environ, "PIP_DISABLE_PIP_VERSION_CHECK": "1"},
    )
    cached = _cached_wheel(target, distribution, version)
    if cached is None:
        raise BuildError(f"pip download {distribution}=={version} left no wheel in {target}")
    return cached, True


def _cached_wheel(directory: Path, distribution: str, version: str) -> Path | None:
    if not directory.is_dir():
        return None
    prefix = _wheel_prefix(distribution, version)
    for path in sorted(directory.iterdir()):
        name = path.name.lower()
        platform = name.removesuffix(".whl").rsplit("-", 1)[-1]
        if name.startswith(prefix) and name.endswith(".whl") and _platform_ok(platform):
            return path
    return None


def extract_wheel(wheel: Path, member_prefix: str, dest: Path) -> None:
    """Extract the wheel members below ``member_prefix`` into ``dest``, keeping exec bits.

    ``zipfile`` drops Unix modes on extraction, so they are restored from each member's
    external attributes. Members that would land outside ``dest`` are refused.
    """
    prefix = member_prefix.rstrip("/") + "/"
    root = dest.resolve()
    try:
        with zipfile.ZipFile(wheel) as zf:
            members = [m for m in zf.infolist() if m.filename.startswith(prefix)]
            if not members:
                raise BuildError(f"{wheel.name} has nothing under {prefix!r}")
            for member in members:
                relative = member.filename[len(prefix) :]
                if not relative:
                    continue
                path = (root / relative).resolve()
                if root not in path.parents:
                    raise BuildError(f"{wheel.name}: member {member.filename!r} escapes the tree")
                if member.is_dir():
                    path.mkdir(parents=True, exist_ok=True)
                    continue
                path.parent.mkdir(parents=True, exist_ok=True)
                with zf.open(member) as src, path.open("wb") as out:
                    while chunk := src.read(1 << 20):
                        out.write(chunk)
                mode = (member.external_attr >> 16) & 0o777
                path.chmod(0o755 if mode & 0o111 else 0o644)
    except (zipfile.BadZipFile, OSError) as exc:
        raise BuildError(
            f"cannot extract {wheel}: {exc} (delete the file from the cache and build again)"
        ) from exc


def fetch_debs(packages: Sequence[str], cache_dir: Path) -> list[Path]:
    """The candidate ``.deb`` of each package, downloaded with ``apt-get download`` unless
    it is already in the cache. Versions come from the local apt lists (``apt-cache``)."""
    target = cache_dir / "apt"
    target.mkdir(parents=True, exist_ok=True)
    wanted: list[tuple[str, str]] = []
    for package in packages:
        # apt-get download writes name_version_arch.deb with ':' escaped as '%3a'.
        wanted.append((package, f"{package}_{deb_candidate(package).replace(':', '%3a')}_"))
    missing = [p for p, prefix in wanted if _cached_deb(target, prefix) is None]
    if missing:
        run(["apt-get", "download", *missing], what="apt-get download", cwd=target)
    debs: list[Path] = []
    for _package, prefix in wanted:
        deb = _cached_deb(target, prefix)
        if deb is None:
            raise BuildError(f"apt-get download did not produce {prefix}*.deb in {target}")
        debs.append(deb)
    return debs


def _cached_deb(directory: Path, prefix: str) -> Path | None:
    for arch in ("amd64", "all"):
        path = directory / f"{prefix}{arch}.deb"
        if path.is_file():
            return path
    return None


def unpack_debs(packages: Sequence[str], cache_dir: Path, root: Path) -> list[Path]:
    """The candidate ``.deb`` of each package (:func:`fetch_debs`), unpacked into ``root`` as
    dpkg would lay them out, without running any maintainer script."""
    debs = fetch_debs(packages, cache_dir)
    for deb in debs:
        run(["dpkg-deb", "-x", deb, root], what=f"dpkg-deb -x {deb.name}")
    return debs


_DEPENDS_RE = re.compile(r"^\s*\|?(?:Pre)?Depends:\s+([^\s<>:]+)", re.MULTILINE)


def deb_closure(roots: Sequence[str], keep: Callable[[str], bool]) -> list[str]:
    """``roots`` and, recursively, every package they depend on (any alternative) that ``keep``
    accepts, sorted; a dependency ``keep`` refuses is neither taken nor followed. From the
    local apt lists (``apt-cache depends``), no network."""
    found = set(roots)
    todo = list(roots)
    while todo:
        out = run(["apt-cache", "depends", *todo], what="apt-cache depends")
        todo = sorted({name for name in _DEPENDS_RE.findall(out) if keep(name)} - found)
        found.update(todo)
    return sorted(found)


def deb_candidate(package: str) -> str:
    """The version apt would install of ``package`` (from the local lists, no network)."""
    out = run(["apt-cache", "policy", package], what=f"apt-cache policy {package}")
    match = re.search(r"^\s*Candidate:\s*(\S+)", out, re.MULTILINE)
    if match is None or match.group(1) == "(none)":
        raise BuildError(f"apt has no candidate for {package} (run apt-get update?)")
    return match.group(1)
