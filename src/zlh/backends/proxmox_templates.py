"""Baked CT templates: Proxmox's form of the shared layers (:mod:`zlh.layers`).

An API token may not bind-mount host directories into a CT (``mpN: /host/path`` is root@pam's),
so the layers cannot be mounted there. Instead the API host bakes them into a CT template: the
base template (``zlh template export``'s tarball) plus every layer's tree at its target
(``/opt/zlh/runtimes/<rt>/<ver>``, ``/opt/zlh/services/code-server``), owners 0:0, modes as on
disk, links stored as links (never followed), the install markers included. The agent's
install guard then finds the marker naming its payload's sha256 and skips the download, as it
does under a bind mount.

A template is made for exactly one set of layers: its name is the base template's with a digest
of the base name and every (sha256, target) pair, e.g.
``debian-12-zlh_<ver>-<12 hex>_amd64.tar.zst``, so a new catalog entry makes a new template and
an unchanged one is reused. Each is baked once under ``<data dir>/proxmox-templates/``: an
``flock`` per template against concurrent builders (threads and processes), written to a
partial file and renamed, with ``<digest>.json`` beside it naming its base, layers, size and
sha256 (what ``gc`` and the upload's checksum read). A second lock per template is held shared
while a container is being made from it and exclusively (never waiting) by ``remove``, so a
template is never removed from under a create.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import logging
import os
import subprocess
import tarfile
import time
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path

from zlh.backends.base import BackendError, LayerMount
from zlh.locks import flocked

__all__ = ["BakedTemplate", "TemplateBaker"]

log = logging.getLogger(__name__)

_DECOMPRESS = {
    ".tar.zst": ["zstd", "-dcq"],
    ".tar.gz": ["gzip", "-dc"],
    ".tar.xz": ["xz", "-dc"],
    ".tar.bz2": ["bzip2", "-dc"],
}
_CHUNK = 1 << 20


def _split(name: str) -> tuple[str, str]:
    """``debian-12-zlh_v1_amd64.tar.zst`` -> (``debian-12-zlh_v1``, ``_amd64``)."""
    for ext in _DECOMPRESS:
        if name.endswith(ext):
            stem = name.removesuffix(ext)
            head, sep, arch = stem.rpartition("_")
            return (head, f"_{arch}") if sep and head and "-" not in arch else (stem, "")
    raise BackendError(f"{name}: a CT template ends in {', '.join(_DECOMPRESS)}")


@dataclass(frozen=True)
class BakedTemplate:
    """One baked template on the API host, as its ``<digest>.json`` describes it."""

    name: str
    digest: str
    base: str  # the base template's file name
    layers: tuple[tuple[str, str], ...]  # (sha256, target), sorted
    size: int
    sha256: str

    @property
    def shas(self) -> frozenset[str]:
        return frozenset(sha for sha, _ in self.layers)


class TemplateBaker:
    """Baked templates of ``base`` under ``root``."""

    def __init__(self, base: Path, root: Path) -> None:
        self.base = base
        self.root = root
        self.prefix, self.arch = _split(base.name)

    # -- names -------------------------------------------------------------------------

    def digest(self, layers: Sequence[LayerMount]) -> str:
        pairs = sorted((m.source.name, m.target) for m in layers)
        text = "\n".join([self.base.name, *(f"{sha} {target}" for sha, target in pairs)])
        return hashlib.sha256(text.encode()).hexdigest()[:12]

    def name(self, digest: str) -> str:
        return f"{self.prefix}-{digest}{self.arch}.tar.zst"

    def path(self, name: str) -> Path:
        return self.root / name

    def baked(self, name: str) -> bool:
        """Whether ``name`` is one of ours (for the current base): prefix, digest, suffix."""
        middle = name.removeprefix(f"{self.prefix}-").removesuffix(f"{self.arch}.tar.zst")
        return (
            name.startswith(f"{self.prefix}-")
            and len(middle) == 12
            and all(c in "0123456789abcdef" for c in middle)
        )

    # -- baking --------------------------------------------------------------------------

    def bake(self, layers: Sequence[LayerMount]) -> BakedTemplate:
        """The template for exactly ``layers``, baked first if this host has none yet."""
        digest = self.digest(layers)
        self.root.mkdir(mode=0o700, parents=True, exist_ok=True)
        with self._flock(f".{digest}.build.lock", wait=True):
            found = self.read(digest)
            if found is not None and self.path(found.name).is_file():
                return found
            if not self.base.is_file():
                raise BackendError(f"the base CT template {self.base} is missing")
            started = time.monotonic()
            baked = self._bake(digest, layers)
            log.info(
                "baked CT template %s (%d layers, %.0f MB) in %.1fs",
                baked.name,
                len(layers),
                baked.size / 1e6,
                time.monotonic() - started,
            )
            return baked

    def _bake(self, digest: str, layers: Sequence[LayerMount]) -> BakedTemplate:
        name = self.name(digest)
        tar_path = self.root / f".{name}.tar.partial"
        partial = self.root / f".{name}.partial"
        try:
            self._decompress(tar_path)
            with tarfile.open(tar_path, "a", format=tarfile.GNU_FORMAT) as tar:
                names = set(tar.getnames())
                dot = any(n.startswith("./") for n in names)
                present = {n.removeprefix("./").rstrip("/") for n in names}
                for layer in sorted(layers, key=lambda m: m.target):
                    _add_layer(tar, layer, present, dot=dot)
            subprocess.run(
                ["zstd", "-q", "-T0", "-f", str(tar_path), "-o", str(partial)],
                check=True,
                capture_output=True,
            )
            sha, size = _sha256(partial)
            baked = BakedTemplate(
                name=name,
                digest=digest,
                base=self.base.name,
                layers=tuple(sorted((m.source.name, m.target) for m in layers)),
                size=size,
                sha256=sha,
            )
            partial.rename(self.path(name))
            self._write_index(baked)
            return baked
        except (OSError, tarfile.TarError, subprocess.CalledProcessError) as exc:
            detail = getattr(exc, "stderr", b"") or b""
            raise BackendError(
                f"baking CT template {name} failed: {exc} {detail.decode(errors='replace')}"
            ) from exc
        finally:
            tar_path.unlink(missing_ok=True)
            partial.unlink(missing_ok=True)

    def _decompress(self, out: Path) -> None:
        command = next(c for ext, c in _DECOMPRESS.items() if self.base.name.endswith(ext))
        with out.open("wb") as sink:
            subprocess.run([*command, str(self.base)], stdout=sink, check=True, stderr=-1)

    def _write_index(self, baked: BakedTemplate) -> None:
        index = self.root / f"{baked.digest}.json"
        partial = index.with_name(index.name + ".partial")
        record = {**baked.__dict__, "layers": [list(pair) for pair in baked.layers]}
        partial.write_text(json.dumps(record, indent=1) + "\n")
        partial.rename(index)

    # -- reading, using, removing -------------------------------------------------------

    def read(self, digest: str) -> BakedTemplate | None:
        try:
            record = json.loads((self.root / f"{digest}.json").read_text())
            return BakedTemplate(
                **{**record, "layers": tuple(tuple(pair) for pair in record["layers"])}
            )
        except (OSError, ValueError, TypeError, KeyError):
            return None

    def index(self) -> dict[str, BakedTemplate]:
        """Every template baked here (any base), by name."""
        if not self.root.is_dir():
            return {}
        found = (self.read(p.stem) for p in self.root.glob("*.json"))
        return {b.name: b for b in found if b is not None}

    @contextlib.contextmanager
    def using(self, baked: BakedTemplate) -> Iterator[None]:
        """Held while a container is made from ``baked``: ``removing`` leaves it alone."""
        with self._flock(f".{baked.digest}.use.lock", wait=True, shared=True):
            yield

    @contextlib.contextmanager
    def removing(self, digest: str) -> Iterator[bool]:
        """True (and held) when nothing is making a container from ``digest``'s template."""
        with self._flock(f".{digest}.use.lock", wait=False) as locked:
            yield locked

    def intact(self, baked: BakedTemplate) -> bool:
        """Whether the local tarball still has the sha256 it was baked with (read in full:
        checked before each upload, which is as rare)."""
        try:
            return _sha256(self.path(baked.name)) == (baked.sha256, baked.size)
        except OSError:
            return False

    def remove_local(self, baked: BakedTemplate) -> None:
        """The local tarball and its record (call inside :meth:`removing`)."""
        self.path(baked.name).unlink(missing_ok=True)
        (self.root / f"{baked.digest}.json").unlink(missing_ok=True)

    @contextlib.contextmanager
    def _flock(self, name: str, *, wait: bool, shared: bool = False) -> Iterator[bool]:
        self.root.mkdir(mode=0o700, parents=True, exist_ok=True)
        with flocked(self.root / name, wait=wait, shared=shared) as locked:
            yield locked


def _add_layer(tar: tarfile.TarFile, layer: LayerMount, present: set[str], *, dot: bool) -> None:
    """``layer``'s tree at its target: missing parents as root-owned 0755 directories, then
    every entry as it is on disk (``lstat``: a link is stored as a link), owned by 0:0."""
    prefix = "./" if dot else ""
    parts = layer.target.strip("/").split("/")
    for depth in range(1, len(parts)):
        parent = "/".join(parts[:depth])
        if parent not in present:
            info = tarfile.TarInfo(prefix + parent)
            info.type, info.mode = tarfile.DIRTYPE, 0o755
            info.mtime = int(layer.source.stat().st_mtime)
            tar.addfile(_root_owned(info))
            present.add(parent)
    top = "/".join(parts)
    for directory, dirs, files in os.walk(layer.source, followlinks=False):
        dirs.sort()
        rel = os.path.relpath(directory, layer.source)
        here = top if rel == "." else f"{top}/{rel}"
        tar.addfile(_root_owned(tar.gettarinfo(directory, prefix + here)))
        for entry in sorted(files) + [
            d for d in dirs if os.path.islink(os.path.join(directory, d))
        ]:
            path = os.path.join(directory, entry)
            info = _root_owned(tar.gettarinfo(path, f"{prefix}{here}/{entry}"))
            if info.isreg():
                with open(path, "rb", opener=_nofollow) as data:
                    tar.addfile(info, data)
            else:
                tar.addfile(info)


def _nofollow(path: str, flags: int) -> int:
    return os.open(path, flags | os.O_NOFOLLOW)


def _root_owned(info: tarfile.TarInfo) -> tarfile.TarInfo:
    info.uid = info.gid = 0
    info.uname = info.gname = "root"
    return info


def _sha256(path: Path) -> tuple[str, int]:
    digest, size = hashlib.sha256(), 0
    with path.open("rb") as f:
        while chunk := f.read(_CHUNK):
            digest.update(chunk)
            size += len(chunk)
    return digest.hexdigest(), size
