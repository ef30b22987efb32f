"""The dotnet (Mono) builder's cheap parts: its recipe says Mono, Debian's tool scripts run the
tree's own mono wherever the tree is moved, and only Mono's run-time packages are taken."""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

import pytest

from zlh.artifacts.builders import dotnet
from zlh.errors import UsageError

DEBIAN = "6.8.0.105+dfsg-3.3+deb12u1"


@pytest.fixture
def mono_candidate(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(dotnet, "deb_candidate", lambda package: DEBIAN)


@pytest.mark.usefixtures("mono_candidate")
def test_the_recipe_is_mono_under_a_key_that_says_so() -> None:
    builder = dotnet.MonoBuilder()
    recipe = builder.recipe(None)
    assert (recipe.name, recipe.key, recipe.upstream_version) == ("dotnet", "mono-6.8", "6.8.0.105")
    assert recipe.source == f"debian:mono-devel={DEBIAN}"
    assert builder.recipe("mono-6.8") == recipe
    summary = builder.summary(recipe)
    assert summary.startswith("Mono 6.8 C# toolchain (csc, mcs, mono) from Debian 12")
    assert "not the .NET SDK" in summary


@pytest.mark.usefixtures("mono_candidate")
@pytest.mark.parametrize("asked", ["8.0", "6.8", "mono-6.10"])
def test_another_version_is_refused_with_the_sdk_import_command(asked: str) -> None:
    with pytest.raises(UsageError, match=r"(?s)Mono only, as dotnet mono-6\.8.*--strip-comp"):
        dotnet.MonoBuilder().recipe(asked)


@pytest.mark.parametrize(
    ("name", "taken"),
    [
        ("mono-runtime", True),
        ("mono-devel", True),
        ("libmono-corlib4.5-cil", True),
        ("ca-certificates-mono", True),
        ("libmono-2.0-dev", False),
        ("libmono-cil-dev", False),
        ("libgdiplus", False),
        ("pkg-config", False),
    ],
)
def test_only_monos_run_time_packages_are_taken(name: str, taken: bool) -> None:
    assert dotnet._is_mono_package(name) is taken


def debian_bin(tree: Path) -> Path:
    """A bin/ like Debian's: a fake mono that echoes, two tool scripts, one diagnostic."""
    bin_dir = tree / "bin"
    bin_dir.mkdir(parents=True)
    (bin_dir / "mono-sgen").write_text('#!/bin/sh\necho "mono $*"\n')
    (bin_dir / "mono").symlink_to("mono-sgen")
    (bin_dir / "mcs").write_text(
        '#!/bin/sh\nexec /usr/bin/mono $MONO_OPTIONS /usr/lib/mono/4.5/mcs.exe "$@"\n'
    )
    (bin_dir / "xbuild").write_text(
        '#!/bin/sh\nMONO_GC_PARAMS="nursery-size=64m,$MONO_GC_PARAMS" exec /usr/bin/mono'
        ' $MONO_OPTIONS /usr/lib/mono/xbuild/14.0/bin/xbuild.exe "$@"\n'
    )
    (bin_dir / "mono-api-check").write_text('#!/bin/sh\nmono /usr/lib/mono/4.5/diff.exe "$@"\n')
    for path in bin_dir.iterdir():
        if not path.is_symlink():
            path.chmod(0o755)
    return bin_dir


def test_debians_scripts_run_the_trees_own_mono_after_the_tree_moves(tmp_path: Path) -> None:
    built = tmp_path / "build" / "mono"
    left_out = dotnet._relocate_scripts(debian_bin(built))
    assert left_out == ["mono-api-check"]
    moved = tmp_path / "opt" / "zlh" / "runtimes" / "dotnet" / "mono-6.8"
    moved.parent.mkdir(parents=True)
    shutil.copytree(built, moved, symlinks=True)
    shutil.rmtree(built)
    env = {"PATH": "/usr/bin:/bin", "MONO_OPTIONS": "--debug"}

    def run(tool: str, *args: str) -> str:
        out = subprocess.run(
            [moved / "bin" / tool, *args], capture_output=True, text=True, check=True, env=env
        )
        return out.stdout.strip()

    assert run("mcs", "Hello.cs") == f"mono --debug {moved}/lib/mono/4.5/mcs.exe Hello.cs"
    assert run("xbuild", "/version") == (
        f"mono --debug {moved}/lib/mono/xbuild/14.0/bin/xbuild.exe /version"
    )
