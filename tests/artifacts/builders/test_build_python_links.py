"""Debian's absolute links become relative inside the prefix, or go when they leave it."""

from __future__ import annotations

import os
from pathlib import Path

from zlh.artifacts.builders.python import _fix_absolute_links


def test_links_into_usr_become_relative_and_links_elsewhere_are_dropped(tmp_path: Path) -> None:
    tree = tmp_path / "usr"
    (tree / "lib" / "python3.11").mkdir(parents=True)
    (tree / "share" / "x").mkdir(parents=True)
    (tree / "share" / "x" / "data").write_text("d")
    (tree / "lib" / "python3.11" / "data").symlink_to("/usr/share/x/data")
    (tree / "lib" / "python3.11" / "sitecustomize.py").symlink_to("/etc/python3.11/sc.py")
    (tree / "lib" / "python3.11" / "gone").symlink_to("/usr/share/not-there")
    (tree / "lib" / "python3.11" / "rel").symlink_to("../../share/x/data")
    _fix_absolute_links(tree)
    lib = tree / "lib" / "python3.11"
    assert os.readlink(lib / "data") == "../../share/x/data"
    assert (lib / "data").read_text() == "d"
    assert not (lib / "sitecustomize.py").is_symlink()
    assert not (lib / "gone").is_symlink()
    assert os.readlink(lib / "rel") == "../../share/x/data"
