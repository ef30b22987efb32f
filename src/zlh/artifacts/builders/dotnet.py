""".NET cannot be built from the registries this platform builds from.

PyPI's ``dotnetcore2`` carries only the .NET Core 3.1 runtime (end of life since December 2022,
no SDK), and neither Debian's archive nor npm has a .NET SDK. Rather than put an unsupported
runtime into the catalog, ``zlh artifacts build dotnet`` refuses and says how to import
Microsoft's official tarball, which is what docs/operations.md describes.
"""

from __future__ import annotations

from typing import NoReturn

from zlh.artifacts.builders.fetch import BuildError

__all__ = ["IMPORT_COMMAND", "refuse"]

IMPORT_COMMAND = (
    "zlh artifacts add runtime dotnet 8.0 --url <dotnet-sdk-8.0.x-linux-x64.tar.gz URL>"
    " --sha256 <its sha256> --strip-components 0 --bin . --upstream-version 8.0.x"
)


def refuse() -> NoReturn:
    raise BuildError(
        "cannot build dotnet here: no reachable registry carries a current .NET SDK"
        " (PyPI's dotnetcore2 is only the end-of-life .NET Core 3.1 runtime)."
        f" Import Microsoft's official tarball instead:\n  {IMPORT_COMMAND}\n"
        "(docs/operations.md, section 'Runtime artifacts', has the steps)"
    )
