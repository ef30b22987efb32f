"""code-server from the npm package, installed by our Node 24 build, laid out self-contained.

The agent installs the tree at ``/opt/zlh/services/code-server`` and starts it as the container
contract says (docs/architecture.md): ``<dir>/lib/node <dir> --bind-addr … --auth …``. So the
tree is the npm package itself (``package.json`` ``main`` → ``out/node/entry.js``) with its
dependencies in its own ``node_modules``, plus ``lib/node`` (the Node 24 binary it was built
with, whose ABI the native modules match) and ``bin/code-server``, a wrapper like the one in
code-server's standalone releases.

Install gotchas: code-server 4.x refuses any Node but 24; its postinstall runs
``npm install`` in ``lib/vscode`` and ``lib/vscode/extensions`` through whatever ``npm`` is on
PATH, so our Node's ``bin`` goes first; ``npm_config_nodedir`` points node-gyp at the Node
headers we ship instead of downloading them; ``@vscode`` native modules need a C++ toolchain
and ``libkrb5-dev`` (scripts/bootstrap.sh installs them). The npm cache lives in the build
cache, so a second cold install downloads nothing.
"""

from __future__ import annotations

import re
import shutil
import tarfile
import tempfile
from pathlib import Path

from zlh.artifacts.builders.base import BuildContext, Builder, Recipe, pick_version
from zlh.artifacts.builders.fetch import BuildError, run, sha256_file
from zlh.artifacts.builders.node import NodeBuilder, node_env
from zlh.schemas import ArtifactKind

__all__ = ["CodeServerBuilder"]

PACKAGE = "code-server"
PINS = {"4.139.1": "4.139.1"}
DEFAULT = "4.139.1"
NODE_MAJOR = "24"
_FULL = re.compile(r"^4\.\d+\.\d+$")
_INSTALL_TIMEOUT_S = 1800.0
_WRAPPER = """#!/usr/bin/env sh
# Starts code-server with the Node it was built for, wherever this tree lives.
set -eu
ROOT="$(dirname "$(dirname "$(readlink -f "$0")")")"
exec "$ROOT/lib/node" "$ROOT" "$@"
"""


class CodeServerBuilder(Builder):
    name = "code-server"

    def recipe(self, version: str | None) -> Recipe:
        key, upstream = pick_version(
            PACKAGE, version, pins=PINS, default=DEFAULT, full=_FULL, key_of=lambda v: v
        )
        node = NodeBuilder().recipe(NODE_MAJOR)
        return Recipe(
            kind=ArtifactKind.ADDON,
            name=PACKAGE,
            key=key,
            upstream_version=upstream,
            package_version=upstream,
            # The node pin is part of the recipe: a new Node means new native modules.
            source=f"npm:{PACKAGE}@{upstream} ({node.source})",
            top_dir=f"code-server-{upstream}-linux-amd64",
            revision=1,
            bin_dirs=("bin",),
        )

    def summary(self, recipe: Recipe) -> str:
        node = NodeBuilder().recipe(NODE_MAJOR).upstream_version
        return f"code-server {recipe.upstream_version}: VS Code in the browser, on Node.js {node}"

    def assemble(self, recipe: Recipe, tree: Path, ctx: BuildContext) -> dict[str, str]:
        node_builder = NodeBuilder()
        node_recipe = node_builder.recipe(NODE_MAJOR)
        node = ctx.work_dir / "node"
        node.mkdir()
        node_labels = node_builder.assemble(node_recipe, node, ctx)
        node_builder.check(node_recipe, node)
        env = {
            **node_env(node),
            "npm_config_nodedir": str(node),
            "npm_config_cache": str(ctx.cache_dir / "npm"),
            "npm_config_fund": "false",
            "npm_config_audit": "false",
        }
        npm = [node / "bin" / "node", node / "lib/node_modules/npm/bin/npm-cli.js"]
        package = _fetch_package(npm, recipe.upstream_version, ctx, env)
        _extract_package(package, tree)
        ctx.log(f"{recipe.label}: npm ci (compiles native modules; minutes when cold)")
        run(
            [*npm, "ci", "--omit=dev"],
            what=f"npm ci in {PACKAGE}@{recipe.upstream_version}",
            cwd=tree,
            env=env,
            timeout_s=_INSTALL_TIMEOUT_S,
        )
        _remove_dangling_links(tree)
        shutil.copy2(node / "bin" / "node", tree / "lib" / "node")
        wrapper = tree / "bin" / "code-server"
        wrapper.parent.mkdir(exist_ok=True)
        wrapper.write_text(_WRAPPER)
        wrapper.chmod(0o755)
        return {
            "package": package.name,
            "packageSha256": sha256_file(package),
            "node": node_recipe.upstream_version,
            "nodeWheelSha256": node_labels["wheelSha256"],
        }

    def check(self, recipe: Recipe, tree: Path) -> str:
        # code-server writes a default config on every start: keep it out of the host's $HOME.
        with tempfile.TemporaryDirectory(prefix="code-server-check-") as home:
            env = {
                "PATH": "/usr/bin:/bin",
                "HOME": home,
                **{f"XDG_{d}_HOME": f"{home}/{d.lower()}" for d in ("CONFIG", "DATA", "CACHE")},
            }
            out = run(
                [tree / "bin" / "code-server", "--version"], what="code-server --version", env=env
            )
        # e.g. "4.139.1 53c2f32… with Code 1.139.1", after a log line or two.
        for line in out.splitlines():
            if line.startswith(f"{recipe.upstream_version} "):
                return f"code-server {line}"
        raise BuildError(f"code-server --version did not print {recipe.upstream_version}: {out!r}")


def _fetch_package(npm: list[Path], version: str, ctx: BuildContext, env: dict[str, str]) -> Path:
    """The package tarball from the npm registry (``npm pack``), cached."""
    target = ctx.cache_dir / "npm-packages"
    package = target / f"{PACKAGE}-{version}.tgz"
    if package.is_file():
        return package
    target.mkdir(parents=True, exist_ok=True)
    partial = ctx.work_dir / "pack"
    partial.mkdir()
    run(
        [*npm, "pack", f"{PACKAGE}@{version}", "--pack-destination", partial],
        what=f"npm pack {PACKAGE}@{version}",
        env=env,
    )
    (partial / package.name).replace(package)
    ctx.downloads.append(package.name)
    return package


def _extract_package(package: Path, tree: Path) -> None:
    """npm package tarballs hold one ``package/`` folder; it becomes ``tree``."""
    try:
        with tarfile.open(package) as tar:
            members = [m for m in tar.getmembers() if m.name.startswith("package/")]
            for member in members:
                member.name = member.name.removeprefix("package/")
            tar.extractall(tree, members=[m for m in members if m.name], filter="data")
    except (tarfile.TarError, OSError) as exc:
        raise BuildError(
            f"cannot extract {package}: {exc} (delete it from the cache and build again)"
        ) from exc


def _remove_dangling_links(tree: Path) -> None:
    """code-server's postinstall deletes files that ``node_modules/.bin`` links still name."""
    for path in tree.rglob("*"):
        if path.is_symlink() and not path.exists():
            path.unlink()
