"""Java: the OpenJDK 17 JDK from Debian 12's own packages, in a prefix that works anywhere.

``openjdk-17-jre-headless`` and ``openjdk-17-jdk-headless`` unpacked; the JDK's home
(``/usr/lib/jvm/java-17-openjdk-amd64`` in Debian) becomes the tree, so ``bin/`` has ``java``,
``javac``, ``jshell``, ``jar`` and the rest, and ``java Hello.java`` compiles and runs. Debian
keeps the JDK's configuration in ``/etc/java-17-openjdk`` and links it from the home: those
files are copied into the tree in place of the links. The CA certificates Debian would generate
at install time (``ca-certificates-java``) are made at build time instead, from this host's CA
bundle, by a Java program the new JDK compiles and runs (``lib/security/cacerts``, PKCS12,
password ``changeit`` as Java expects), so the build's ``check`` has already used ``javac``.

What it is not: self-contained. It links Debian 12's shared libraries (glibc 2.36, libstdc++,
zlib), which every container from our Debian 12 template has; AWT's extra libraries (fonts,
printing, sound) are not in the template, so desktop GUI code will not run. The labels say so.
"""

from __future__ import annotations

import os
import shutil
from pathlib import Path

from zlh.artifacts.builders.base import BuildContext, Builder, Recipe, debian_recipe
from zlh.artifacts.builders.fetch import (
    CA_BUNDLE,
    BuildError,
    ca_bundle,
    deb_candidate,
    run,
    unpack_debs,
)
from zlh.errors import UsageError

__all__ = ["JavaBuilder"]

KEY = "17"
PACKAGES = ("openjdk-17-jre-headless", "openjdk-17-jdk-headless")
HOME = "usr/lib/jvm/java-17-openjdk-amd64"  # the JDK's home inside the packages
_ENV = {"PATH": "/usr/bin:/bin", "LANG": "C.UTF-8"}  # what the JDK's tools run with at build
_REQUIRES = (
    "Debian 12 userland: glibc>=2.36, libstdc++6, zlib1g; no AWT desktop libraries"
    " (fonts, cups, alsa): headless only"
)
# Reads a PEM bundle into a PKCS12 trust store: Java's lib/security/cacerts.
_CACERTS_JAVA = """
import java.io.*;
import java.security.KeyStore;
import java.security.cert.*;

public class Cacerts {
    public static void main(String[] args) throws Exception {
        CertificateFactory factory = CertificateFactory.getInstance("X.509");
        KeyStore store = KeyStore.getInstance("PKCS12");
        store.load(null, null);
        int count = 0;
        try (InputStream in = new BufferedInputStream(new FileInputStream(args[0]))) {
            for (Certificate cert : factory.generateCertificates(in)) {
                store.setCertificateEntry("ca-" + count++, cert);
            }
        }
        try (OutputStream out = new FileOutputStream(args[1])) {
            store.store(out, "changeit".toCharArray());
        }
        System.out.println(count);
    }
}
"""
_HELLO_JAVA = (
    'class Hello { public static void main(String[] a) { System.out.println("hello " + 6 * 7); } }'
)


class JavaBuilder(Builder):
    name = "java"

    def recipe(self, version: str | None) -> Recipe:
        if version not in (None, KEY):
            raise UsageError(
                f"cannot build java {version!r}: this host's Debian packages give {KEY} only;"
                " import another JDK with `zlh artifacts add` (docs/operations.md)"
            )
        debian = deb_candidate(PACKAGES[1])
        upstream = debian.split("-")[0]
        return debian_recipe(
            "java",
            KEY,
            PACKAGES[1],
            debian,
            upstream=upstream,
            top_dir=f"jdk-{upstream}",
            revision=1,
        )

    def summary(self, recipe: Recipe) -> str:
        return f"OpenJDK {recipe.upstream_version} JDK: javac, jshell, jar (headless)"

    def assemble(self, recipe: Recipe, tree: Path, ctx: BuildContext) -> dict[str, str]:
        root = ctx.work_dir / "root"
        debs = unpack_debs(PACKAGES, ctx.cache_dir, root)
        tree.rmdir()
        (root / HOME).rename(tree)
        _localize_links(tree, root)
        shutil.rmtree(tree / "man", ignore_errors=True)
        source = ctx.work_dir / "Cacerts.java"
        source.write_text(_CACERTS_JAVA)
        cacerts = tree / "lib" / "security" / "cacerts"
        cacerts.unlink(missing_ok=True)
        count = run(
            [tree / "bin" / "java", source, ca_bundle(), cacerts],
            what="making lib/security/cacerts",
            env=_ENV,
        ).strip()
        return {
            "image": "jdk (javac, jshell, jar)",
            "javac": "yes",
            "cacerts": f"{count} CAs from the build host's {CA_BUNDLE}",
            "debs": " ".join(d.name for d in debs),
            "requires": _REQUIRES,
        }

    def check(self, recipe: Recipe, tree: Path) -> str:
        out = run([tree / "bin" / "java", "--version"], what="java --version", env=_ENV)
        first = out.splitlines()[0] if out else ""
        if recipe.upstream_version.split("+")[0] not in first:
            raise BuildError(f"bin/java --version printed {first!r}, not {recipe.upstream_version}")
        javac = run([tree / "bin" / "javac", "--version"], what="javac --version", env=_ENV)
        scratch = tree.parent / "check"
        scratch.mkdir(exist_ok=True)
        (scratch / "Hello.java").write_text(_HELLO_JAVA)
        hello = run(
            [tree / "bin" / "java", "Hello.java"], what="java Hello.java", env=_ENV, cwd=scratch
        )
        if hello.strip() != "hello 42":
            raise BuildError(f"java Hello.java printed {hello.strip()!r}")
        shutil.rmtree(scratch)
        return f"{first}, {javac.strip()}"


def _localize_links(tree: Path, root: Path) -> None:
    """The home's links to absolute paths: into the home itself made relative, to a file the
    packages put elsewhere (``/etc/java-17-openjdk``) replaced by a copy, the rest removed
    (``cacerts`` is made afterwards; docs links go nowhere useful)."""
    origin = "/" + HOME + "/"
    for path in sorted(tree.rglob("*")):
        if not path.is_symlink():
            continue
        target = os.readlink(path)
        if not target.startswith("/"):
            if not path.exists():
                path.unlink()  # a relative link out of the home (../../../share/doc)
            continue
        path.unlink()
        if target.startswith(origin) and (tree / target[len(origin) :]).exists():
            os.symlink(os.path.relpath(tree / target[len(origin) :], path.parent), path)
        elif (root / target.lstrip("/")).is_file():
            shutil.copyfile(root / target.lstrip("/"), path)
