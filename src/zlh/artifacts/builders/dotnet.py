"""The ``dotnet`` runtime's buildable version: Mono's C# toolchain from Debian 12's packages.

No reachable registry carries a current .NET SDK (PyPI's ``dotnetcore2`` is only the
end-of-life .NET Core 3.1 runtime), but Debian 12 has Mono 6.8. ``mono-devel`` and every
Mono package it needs (runtime, ``mcs``, the ``libmono-*-cil`` assemblies, xbuild,
``cert-sync``; not the ``-dev`` packages, which hold only headers and pkg-config files) are
unpacked, Debian's ``/usr`` becomes the tree and ``/etc/mono`` its ``etc/mono``. The catalog
key says what it is (``mono-6.8``), and so does its ``summary`` label: this is not the .NET
SDK and has no ``dotnet`` command. Microsoft's SDK is imported instead (``IMPORT_COMMAND``,
docs/operations.md).

Relocation: ``mono`` finds its assemblies and configuration from its own executable
(``/proc/self/exe``: ``<tree>/bin/mono-sgen`` → ``<tree>/lib/mono/4.5`` and
``<tree>/etc/mono/config``), so it needs no ``MONO_PATH`` or ``--config``. Debian's tool
scripts (``mcs``, ``xbuild``, ``cert-sync``, …) exec ``/usr/bin/mono /usr/lib/mono/…``; they
are rewritten to run the tree's own ``mono`` and assemblies, and the few scripts that reach
into ``/usr`` some other way (diagnostics) are left out. Debian ships no Roslyn: its C#
compiler is ``mcs`` (C# 7), which Debian also installs as ``mono-csc``; ``bin/csc`` is the
same, so ``csc Hello.cs && mono Hello.exe`` works as it does with Debian's packages.

What it is not: self-contained. It links Debian 12's glibc, libgcc and (for
``System.Native``) libgssapi-krb5-2, which the template has; libgdiplus (System.Drawing) is
not included. Mono trusts no CA until ``cert-sync --user`` imports the system bundle into the
user's store (Mono's machine store is ``/usr/share/.mono``, outside any relocated tree). The
labels say so.
"""

from __future__ import annotations

import re
import shutil
from pathlib import Path

from zlh.artifacts.builders.base import BuildContext, Builder, Recipe, debian_recipe
from zlh.artifacts.builders.fetch import (
    CA_BUNDLE,
    BuildError,
    ca_bundle,
    deb_candidate,
    deb_closure,
    run,
    unpack_debs,
)
from zlh.errors import UsageError

__all__ = ["IMPORT_COMMAND", "MonoBuilder"]

IMPORT_COMMAND = (
    "zlh artifacts add runtime dotnet 8.0 --url <dotnet-sdk-8.0.x-linux-x64.tar.gz URL>"
    " --sha256 <its sha256> --strip-components 0 --bin . --upstream-version 8.0.x"
    ' --label summary=".NET SDK 8.0.x (Microsoft)"'
)
ROOT_PACKAGE = "mono-devel"
_ENV = {"PATH": "/usr/bin:/bin", "LANG": "C.UTF-8"}
_DROP = ("share/doc", "share/man", "share/lintian", "share/.mono")
# Prints "hello 42", then where mono found the core library: inside the tree, not /usr/lib/mono.
_HELLO_CS = """class Hello { static void Main() {
    System.Console.WriteLine("hello " + 6 * 7);
    System.Console.WriteLine(typeof(object).Assembly.Location);
} }
"""
# Debian's tool scripts: `exec /usr/bin/mono $MONO_OPTIONS /usr/lib/mono/<tool>.exe …`.
_EXEC_RE = re.compile(r"exec /usr/bin/mono (\$MONO_OPTIONS )?/usr/lib/mono/(\S+)")
_PREFIX_LINE = (
    "# the tree this script is in, wherever it was unpacked\n"
    'prefix=$(dirname "$(dirname "$(readlink -f "$0")")")\n'
)
_REQUIRES = (
    "Debian 12 userland: glibc>=2.36, libgcc-s1, zlib1g, libgssapi-krb5-2;"
    " no libgdiplus (System.Drawing)"
)


def _is_mono_package(name: str) -> bool:
    """The Mono packages ``mono-devel`` pulls in, without headers and pkg-config files."""
    mono = name.startswith(("mono-", "libmono-")) or name == "ca-certificates-mono"
    return mono and not name.endswith("-dev")


class MonoBuilder(Builder):
    name = "dotnet"

    def recipe(self, version: str | None) -> Recipe:
        debian = deb_candidate(ROOT_PACKAGE)
        upstream = debian.split("+")[0]  # 6.8.0.105+dfsg-3.3+deb12u1 -> 6.8.0.105
        key = "mono-" + ".".join(upstream.split(".")[:2])
        if version not in (None, key):
            raise UsageError(
                f"cannot build dotnet {version!r}: this host's Debian packages give Mono only,"
                f" as dotnet {key}. Import Microsoft's .NET SDK instead:\n  {IMPORT_COMMAND}\n"
                "(docs/operations.md, section 'Runtime artifacts', has the steps)"
            )
        top_dir = f"mono-{upstream}-linux-x86_64"
        return debian_recipe(
            "dotnet", key, ROOT_PACKAGE, debian, upstream=upstream, top_dir=top_dir, revision=1
        )

    def summary(self, recipe: Recipe) -> str:
        major_minor = ".".join(recipe.upstream_version.split(".")[:2])
        return (
            f"Mono {major_minor} C# toolchain (csc, mcs, mono) from Debian 12"
            " — not the .NET SDK: no `dotnet` CLI"
        )

    def assemble(self, recipe: Recipe, tree: Path, ctx: BuildContext) -> dict[str, str]:
        root = ctx.work_dir / "root"
        packages = deb_closure([ROOT_PACKAGE], _is_mono_package)
        debs = unpack_debs(packages, ctx.cache_dir, root)
        tree.rmdir()
        (root / "usr").rename(tree)
        (tree / "etc").mkdir()
        (root / "etc" / "mono").rename(tree / "etc" / "mono")
        for drop in _DROP:
            path = tree / drop
            if path.is_symlink():
                path.unlink()  # share/.mono -> /etc/mono/certstore
            else:
                shutil.rmtree(path, ignore_errors=True)
        left_out = _relocate_scripts(tree / "bin")
        (tree / "bin" / "csc").symlink_to("mcs")
        return {
            "compiler": "csc and mcs are both mcs, Mono's C# compiler (C# 7);"
            " Debian ships no Roslyn",
            "certificates": f"none trusted until `cert-sync --user {CA_BUNDLE}` (once per user)",
            "debs": " ".join(d.name for d in debs),
            "leftOut": " ".join(left_out),
            "requires": _REQUIRES,
        }

    def check(self, recipe: Recipe, tree: Path) -> str:
        mono = tree / "bin" / "mono"
        out = run([mono, "--version"], what="mono --version", env=_ENV, cwd=Path("/"))
        first = out.splitlines()[0] if out else ""
        if f"version {recipe.upstream_version} " not in first:
            raise BuildError(f"bin/mono --version printed {first!r}, not {recipe.upstream_version}")
        scratch = tree.parent / "check"
        scratch.mkdir(exist_ok=True)
        (scratch / "Hello.cs").write_text(_HELLO_CS)
        own_corlib = (tree / "lib" / "mono" / "4.5" / "mscorlib.dll").resolve()
        for compiler in ("csc", "mcs"):
            (scratch / "Hello.exe").unlink(missing_ok=True)
            run([tree / "bin" / compiler, "Hello.cs"], what=compiler, env=_ENV, cwd=scratch)
            hello = run(
                [mono, "Hello.exe"], what=f"mono Hello.exe ({compiler})", env=_ENV, cwd=scratch
            )
            said, corlib = [*hello.splitlines(), "", ""][:2]
            if said != "hello 42" or Path(corlib).resolve() != own_corlib:
                raise BuildError(f"mono Hello.exe (built by {compiler}) printed {hello.strip()!r}")
        synced = run(
            [tree / "bin" / "cert-sync", "--user", ca_bundle()],
            what="cert-sync --user",
            env={**_ENV, "HOME": str(scratch)},
        )
        if "Import process completed" not in synced:
            raise BuildError(f"cert-sync --user printed {synced.strip()[-200:]!r}")
        shutil.rmtree(scratch)
        return (
            f"{first}; csc and mcs compiled Hello.cs, mono ran it with its own mscorlib;"
            " cert-sync --user works"
        )


def _relocate_scripts(bin_dir: Path) -> list[str]:
    """Make Debian's tool scripts run this tree's mono and assemblies; remove those that
    would still reach into ``/usr``. Returns the names removed."""
    removed = []
    for path in sorted(bin_dir.iterdir()):
        if path.is_symlink() or not path.is_file():
            continue
        text = path.read_bytes()
        if not text.startswith(b"#!"):
            continue  # mono-sgen, mono-hang-watchdog
        shebang, _, body = text.decode().partition("\n")
        body = _EXEC_RE.sub(r'exec "$prefix/bin/mono" \1"$prefix/lib/mono/\2"', body)
        if "/usr/" in body:
            path.unlink()
            removed.append(path.name)
            continue
        path.write_text(f"{shebang}\n{_PREFIX_LINE}{body}")
        path.chmod(0o755)
    return removed
