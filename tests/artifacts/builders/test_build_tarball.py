"""Deterministic tarballs: same tree, same bytes; only safe entries; modes and owners fixed."""

from __future__ import annotations

import hashlib
import os
import re
import tarfile
from pathlib import Path

import pytest

from zlh.artifacts.builders.tarball import FIXED_MTIME, tree_size, write_tarball
from zlh.artifacts.errors import ArtifactError


def make_tree(root: Path, *, order: list[str]) -> Path:
    """A small runtime-like tree whose files are created in ``order``."""
    files = {
        "bin/tool": b"#!/bin/sh\necho hi\n",
        "lib/b.txt": b"b" * 5000,
        "lib/a.txt": b"a",
        "share/doc/readme": b"docs",
    }
    for name in order:
        path = root / name
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(files[name])
    (root / "bin" / "tool").chmod(0o700)
    (root / "lib" / "a.txt").chmod(0o600)
    (root / "bin" / "link").symlink_to("../lib/a.txt")
    return root


def pack(tree: Path, target: Path) -> str:
    write_tarball(tree, target, arcname="rt-1.0")
    return hashlib.sha256(target.read_bytes()).hexdigest()


def test_the_same_tree_packs_to_identical_bytes_whatever_its_mtimes_and_creation_order(
    tmp_path: Path,
) -> None:
    first = make_tree(
        tmp_path / "one", order=["bin/tool", "lib/b.txt", "lib/a.txt", "share/doc/readme"]
    )
    second = make_tree(
        tmp_path / "two", order=["share/doc/readme", "lib/a.txt", "lib/b.txt", "bin/tool"]
    )
    os.utime(second / "lib" / "b.txt", (1, 1))
    os.utime(second / "bin", (2_000_000_000, 2_000_000_000))
    assert pack(first, tmp_path / "one.tar.gz") == pack(second, tmp_path / "two.tar.gz")


def test_entries_are_sorted_owned_by_root_with_fixed_mtime_and_normalised_modes(
    tmp_path: Path,
) -> None:
    tree = make_tree(
        tmp_path / "t", order=["lib/b.txt", "bin/tool", "share/doc/readme", "lib/a.txt"]
    )
    write_tarball(tree, tmp_path / "t.tar.gz", arcname="rt-1.0")
    with tarfile.open(tmp_path / "t.tar.gz") as tar:
        members = tar.getmembers()
    names = [m.name for m in members]
    assert names == [
        "rt-1.0",
        "rt-1.0/bin",
        "rt-1.0/bin/link",
        "rt-1.0/bin/tool",
        "rt-1.0/lib",
        "rt-1.0/lib/a.txt",
        "rt-1.0/lib/b.txt",
        "rt-1.0/share",
        "rt-1.0/share/doc",
        "rt-1.0/share/doc/readme",
    ]
    assert {(m.uid, m.gid, m.uname, m.gname, m.mtime) for m in members} == {
        (0, 0, "root", "root", FIXED_MTIME)
    }
    modes = {m.name: m.mode for m in members}
    assert modes["rt-1.0/bin/tool"] == 0o755  # executable stays executable
    assert modes["rt-1.0/lib/a.txt"] == 0o644  # private file becomes world-readable
    assert modes["rt-1.0/share"] == 0o755
    link = next(m for m in members if m.name == "rt-1.0/bin/link")
    assert link.issym() and link.linkname == "../lib/a.txt"


def test_the_tarball_extracts_under_the_strictest_tar_filter_with_its_contents_intact(
    tmp_path: Path,
) -> None:
    tree = make_tree(
        tmp_path / "t", order=["bin/tool", "lib/a.txt", "lib/b.txt", "share/doc/readme"]
    )
    write_tarball(tree, tmp_path / "t.tar.gz", arcname="rt-1.0")
    out = tmp_path / "out"
    with tarfile.open(tmp_path / "t.tar.gz") as tar:
        tar.extractall(out, filter="data")
    assert (out / "rt-1.0" / "lib" / "b.txt").read_bytes() == b"b" * 5000
    assert (out / "rt-1.0" / "bin" / "link").read_bytes() == b"a"
    assert os.access(out / "rt-1.0" / "bin" / "tool", os.X_OK)


def test_progress_is_told_every_file_byte_exactly_once(tmp_path: Path) -> None:
    tree = make_tree(
        tmp_path / "t", order=["bin/tool", "lib/a.txt", "lib/b.txt", "share/doc/readme"]
    )
    seen: list[int] = []
    write_tarball(tree, tmp_path / "t.tar.gz", arcname="x", advance=seen.append)
    assert sum(seen) == tree_size(tree) == 18 + 5000 + 1 + 4


@pytest.mark.parametrize(
    ("where", "target"),
    [("bin/up", "../../outside"), ("deep/a/b", "../../../x"), ("abs", "/etc/passwd")],
)
def test_a_symlink_out_of_the_tree_is_refused_and_named(
    tmp_path: Path, where: str, target: str
) -> None:
    tree = tmp_path / "t"
    link = tree / where
    link.parent.mkdir(parents=True)
    link.symlink_to(target)
    expected = f"{where}: symlink to {target!r} points outside the tree"
    with pytest.raises(ArtifactError, match=re.escape(expected)):
        write_tarball(tree, tmp_path / "t.tar.gz", arcname="x")


def test_a_symlink_that_climbs_but_stays_inside_is_kept(tmp_path: Path) -> None:
    tree = tmp_path / "t"
    (tree / "a" / "b").mkdir(parents=True)
    (tree / "top").write_text("x")
    (tree / "a" / "b" / "link").symlink_to("../../top")
    write_tarball(tree, tmp_path / "t.tar.gz", arcname="x")
    with tarfile.open(tmp_path / "t.tar.gz") as tar:
        assert tar.getmember("x/a/b/link").linkname == "../../top"


def test_a_fifo_in_the_tree_is_refused(tmp_path: Path) -> None:
    tree = tmp_path / "t"
    tree.mkdir()
    os.mkfifo(tree / "pipe")
    with pytest.raises(ArtifactError, match="pipe: not a file, directory or symlink"):
        write_tarball(tree, tmp_path / "t.tar.gz", arcname="x")
