"""CPython 3.11 from Debian 12's own packages, unpacked into a prefix that works anywhere.

CPython finds its standard library relative to its executable (``<prefix>/bin/python3.11`` →
``<prefix>/lib/python3.11``), so Debian's ``/usr`` tree moved under another prefix runs from
there and never reads ``/usr/lib/python3.11``; ``check`` proves both from a foreign directory.
What this build is not: self-contained. Its extension modules link Debian 12's shared
libraries (libssl3, libsqlite3-0, libffi8, … everything ``python3.11`` depends on), which every
container built from our Debian 12 template has, and it needs glibc 2.36 or newer. The labels
say so. An operator who wants another CPython imports python-build-standalone's tarball
(docs/operations.md).

Debian strips pip from ensurepip and points it at ``/usr/share/python-wheels``; to make
``python3 -m venv`` work without that directory, the exact pip and setuptools wheels upstream
CPython 3.11 bundles are fetched from PyPI into ``ensurepip/_bundled``, where upstream puts them.
The same pip is also unpacked into the prefix's ``lib/python3/dist-packages`` (on ``sys.path``)
with ``bin/pip`` and ``bin/pip3`` wrappers that run it through the prefix's own python, so
``pip`` and ``python3 -m pip`` work in a new terminal; installing outside a venv goes to the
user's ``~/.local`` (``pip install --user``), the prefix being read-only to them.
"""

from __future__ import annotations

import os
import re
import shutil
import zipfile
from pathlib import Path

from zlh.artifacts.builders.base import BuildContext, Builder, Recipe, debian_recipe
from zlh.artifacts.builders.fetch import (
    BuildError,
    deb_candidate,
    fetch_wheel,
    run,
    sha256_file,
    unpack_debs,
)
from zlh.errors import UsageError

__all__ = ["PythonBuilder"]

KEY = "3.11"
PACKAGES = (
    "python3.11-minimal",
    "libpython3.11-minimal",
    "libpython3.11-stdlib",
    "python3.11",
    "python3.11-venv",
)
# What ensurepip in CPython 3.11 expects in ensurepip/_bundled (its _PROJECTS).
BUNDLED = (("pip", "22.3.1"), ("setuptools", "65.5.0"))
_DROP = ("share/doc", "share/man", "share/lintian", "share/applications", "share/pixmaps")
_REQUIRES = (
    "Debian 12 userland: glibc>=2.36 and the shared libraries python3.11 depends on"
    " (libssl3, libsqlite3-0, libffi8, libbz2-1.0, liblzma5, libncursesw6, libreadline8, ...)"
)


class PythonBuilder(Builder):
    name = "python"

    def recipe(self, version: str | None) -> Recipe:
        if version not in (None, KEY):
            raise UsageError(
                f"cannot build python {version!r}: this host's Debian packages give {KEY} only;"
                " import another CPython with `zlh artifacts add` (docs/operations.md)"
            )
        debian = deb_candidate("python3.11-minimal")
        upstream = debian.split("-")[0]
        top_dir = f"python-{upstream}-linux-x86_64"
        return debian_recipe(
            "python", KEY, "python3.11", debian, upstream=upstream, top_dir=top_dir, revision=2
        )

    def summary(self, recipe: Recipe) -> str:
        return f"CPython {recipe.upstream_version} with pip and venv"

    def assemble(self, recipe: Recipe, tree: Path, ctx: BuildContext) -> dict[str, str]:
        root = ctx.work_dir / "root"
        debs = unpack_debs(PACKAGES, ctx.cache_dir, root)
        tree.rmdir()
        (root / "usr").rename(tree)
        for drop in _DROP:
            shutil.rmtree(tree / drop, ignore_errors=True)
        _fix_absolute_links(tree)
        for link in ("python3", "python"):
            (tree / "bin" / link).unlink(missing_ok=True)
            os.symlink("python3.11", tree / "bin" / link)
        bundled = tree / "lib" / "python3.11" / "ensurepip" / "_bundled"
        bundled.mkdir(exist_ok=True)
        labels = {"debs": " ".join(d.name for d in debs), "requires": _REQUIRES}
        for name, version in BUNDLED:
            wheel, downloaded = fetch_wheel(name, version, ctx.cache_dir)
            if downloaded:
                ctx.downloads.append(wheel.name)
            shutil.copyfile(wheel, bundled / wheel.name)
            labels[f"{name}WheelSha256"] = sha256_file(wheel)
            if name == "pip":
                _install_pip(tree, wheel)
        return labels

    def check(self, recipe: Recipe, tree: Path) -> str:
        probe = (
            "import sys, ssl, sqlite3, json, ctypes, decimal, lzma, bz2, zlib, venv;"
            "print(sys.prefix); print(ssl.__file__); print(*sys.path, sep='\\n')"
        )
        env = {"PATH": "/usr/bin:/bin", "LANG": "C.UTF-8"}
        out = run(
            [tree / "bin" / "python3", "-c", probe], what="python3 -c", env=env, cwd=Path("/")
        )
        prefix, ssl_file, *path = out.splitlines()
        if Path(prefix).resolve() != tree.resolve():
            raise BuildError(f"bin/python3 thinks its prefix is {prefix}, not its tree {tree}")
        outside = [p for p in [ssl_file, *path] if p and not Path(p).resolve().is_relative_to(tree)]
        if outside:
            raise BuildError(f"bin/python3 reads outside its tree: {', '.join(outside)}")
        version = run([tree / "bin" / "python3", "--version"], what="python3 --version", env=env)
        if version.split() != ["Python", recipe.upstream_version]:
            raise BuildError(f"bin/python3 --version printed {version.strip()!r}")
        pip = run([tree / "bin" / "pip", "--version"], what="pip --version", env=env, cwd=Path("/"))
        if not pip.startswith("pip ") or not Path(pip.split()[3]).resolve().is_relative_to(tree):
            raise BuildError(f"bin/pip --version printed {pip.strip()!r}")
        return f"{version.strip()}, stdlib from its own prefix, {' '.join(pip.split()[:2])}"


_PIP_WRAPPER = """#!/bin/sh
# pip of the python beside this script, wherever the runtime was unpacked.
exec "$(dirname "$(readlink -f "$0")")/python3" -m pip "$@"
"""


def _install_pip(tree: Path, wheel: Path) -> None:
    """``wheel`` unpacked onto the prefix's ``sys.path``, and ``bin/pip``/``bin/pip3``."""
    site = tree / "lib" / "python3" / "dist-packages"
    site.mkdir(parents=True, exist_ok=True)
    with zipfile.ZipFile(wheel) as unpacked:
        unpacked.extractall(site)
    for name in ("pip", "pip3"):
        script = tree / "bin" / name
        script.unlink(missing_ok=True)
        script.write_text(_PIP_WRAPPER)
        script.chmod(0o755)


def _fix_absolute_links(tree: Path) -> None:
    """Debian links into /etc and /usr; inside the tree they must be relative or go."""
    for path in sorted(tree.rglob("*")):
        if not path.is_symlink():
            continue
        target = os.readlink(path)
        if not target.startswith("/"):
            continue
        inside = re.sub(r"^/usr/", "", target)
        if inside != target and (tree / inside).exists():
            path.unlink()
            os.symlink(os.path.relpath(tree / inside, path.parent), path)
        else:
            path.unlink()  # e.g. sitecustomize.py -> /etc/python3.11 (apport hook only)
