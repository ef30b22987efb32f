"""file_in_store: what every request for a stored file relies on."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from zlh.artifacts.files import file_in_store


@pytest.fixture
def root(tmp_path: Path) -> Path:
    (tmp_path / "secret").write_text("outside")
    root = tmp_path / "store"
    (root / "runtime/node/22").mkdir(parents=True)
    (root / "runtime/node/22/node.tar.gz").write_text("inside")
    (root / "catalog.json").write_text("{}")
    (root / ".lock").touch()
    (root / "out").symlink_to(tmp_path / "secret")
    (root / "outdir").symlink_to(tmp_path)
    (root / "in").symlink_to(root / "runtime/node/22/node.tar.gz")
    return root


@pytest.mark.parametrize(
    "relative",
    [
        "",
        "..",
        "../secret",
        "runtime/../../secret",
        "./catalog.json",
        "runtime//node/22/node.tar.gz",
        "/secret",
        ".lock",
        "runtime/node/22/.node.tar.gz.partial-x",
        "catalog.json\x00",
        "runtime\\..\\..\\secret",
        "out",
        "outdir/secret",
        "runtime/node/22",
        "missing",
    ],
)
def test_refused(root: Path, relative: str) -> None:
    assert file_in_store(root, relative) is None


def test_files_and_links_inside_the_store_resolve(root: Path) -> None:
    real = Path(os.path.realpath(root / "runtime/node/22/node.tar.gz"))
    assert file_in_store(root, "runtime/node/22/node.tar.gz") == real
    assert file_in_store(root, "in") == real
    assert file_in_store(root, "catalog.json") == Path(os.path.realpath(root / "catalog.json"))
