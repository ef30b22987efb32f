"""Confinement: hostile client paths are refused, and no operation follows a link out."""

from __future__ import annotations

import os
import unicodedata
from pathlib import Path

import pytest
from hostile_paths import hostile_paths
from hypothesis import given
from hypothesis import strategies as st

from zlh.agent.workspace import (
    BadPath,
    Conflict,
    NotFound,
    RelPath,
    Workspace,
    parse_client_path,
)
from zlh.schemas.files import EntryType


@given(hostile_paths())
def test_hostile_paths_are_refused_with_a_message(raw: str) -> None:
    with pytest.raises(BadPath) as caught:
        parse_client_path(raw)
    assert caught.value.status_code == 400
    assert "refused" in caught.value.message


@given(
    st.lists(
        st.text(
            st.characters(blacklist_categories=("Cs",), blacklist_characters="/\\\x00%\ufffd"),
            min_size=1,
            max_size=20,
        ).filter(lambda s: s not in (".", "..") and "\u2024" not in s and "\uff0e" not in s),
        max_size=5,
    )
)
def test_plain_names_are_kept_byte_for_byte(names: list[str]) -> None:
    # Names whose NFKC form is a dot name or holds a separator are refused on purpose.
    if any(
        unicodedata.normalize("NFKC", n) in (".", "..")
        or any(c in unicodedata.normalize("NFKC", n) for c in "/\\")
        for n in names
    ):
        return
    assert parse_client_path("/".join(names)).parts == tuple(names)


@pytest.mark.parametrize(
    ("raw", "parts"),
    [
        ("", ()),
        (".", ()),
        ("a/./b/", ("a", "b")),
        ("a//b", ("a", "b")),
        ("a/../b", ("b",)),
        ("a/b/../..", ()),
        ("100%.txt", ("100%.txt",)),
        ("caf\u00e9", ("caf\u00e9",)),
        ("cafe\u0301", ("cafe\u0301",)),  # NFD stays NFD: Linux names are bytes
    ],
)
def test_benign_paths_resolve_lexically(raw: str, parts: tuple[str, ...]) -> None:
    assert parse_client_path(raw).parts == parts


def test_display_is_relative_to_workspace() -> None:
    assert parse_client_path("src/app.py").display == "workspace/src/app.py"
    assert RelPath().display == "workspace/"


@pytest.fixture
def tree(tmp_path: Path) -> tuple[Workspace, Path]:
    root = tmp_path / "workspace"
    outside = tmp_path / "outside"
    (root / "d").mkdir(parents=True)
    outside.mkdir()
    (outside / "canary").write_text("canary")
    (root / "out").symlink_to(outside)
    (root / "rel").symlink_to("d/file")
    (root / "d" / "file").write_text("inside")
    return Workspace(root), outside


def test_symlinks_are_listed_as_links_with_inside_targets_only(
    tree: tuple[Workspace, Path],
) -> None:
    workspace, _ = tree
    entries = {e.name: e for e in workspace.list_dir(RelPath()).entries}
    assert entries["out"].type == EntryType.SYMLINK and entries["out"].target is None
    assert entries["rel"].type == EntryType.SYMLINK and entries["rel"].target == "d/file"
    assert entries["d"].type == EntryType.DIR


@pytest.mark.parametrize("path", ["out", "out/canary", "rel"])
def test_no_operation_follows_a_link(tree: tuple[Workspace, Path], path: str) -> None:
    workspace, outside = tree
    rel = parse_client_path(path)
    with pytest.raises(BadPath, match="symbolic link"):
        workspace.open_read(rel)
    if path != "rel":
        with pytest.raises(BadPath, match="symbolic link"):
            workspace.list_dir(rel)
    with pytest.raises(BadPath, match="symbolic link"):
        workspace.begin_upload(parse_client_path(path + "/new"), overwrite=True)
    assert sorted(os.listdir(outside)) == ["canary"]


def test_a_directory_swapped_for_a_link_during_an_upload_keeps_the_write_inside(
    tree: tuple[Workspace, Path],
) -> None:
    workspace, outside = tree
    root = workspace.root
    upload = workspace.begin_upload(parse_client_path("d/new.txt"), overwrite=False)
    (root / "d").rename(root / "d.moved")
    (root / "d").symlink_to(outside)
    upload.write(b"payload")
    upload.commit()
    assert sorted(os.listdir(outside)) == ["canary"]
    assert (root / "d.moved" / "new.txt").read_bytes() == b"payload"


def test_upload_without_overwrite_refuses_an_existing_file(tree: tuple[Workspace, Path]) -> None:
    workspace, _ = tree
    with pytest.raises(Conflict, match="already exists"):
        workspace.begin_upload(parse_client_path("d/file"), overwrite=False)


def test_aborted_upload_leaves_nothing(tree: tuple[Workspace, Path]) -> None:
    workspace, _ = tree
    upload = workspace.begin_upload(parse_client_path("d/partial"), overwrite=True)
    upload.write(b"half")
    upload.abort()
    assert os.listdir(workspace.root / "d") == ["file"]


def test_move_refuses_to_replace_unless_asked(tree: tuple[Workspace, Path]) -> None:
    workspace, _ = tree
    (workspace.root / "other").write_text("other")
    with pytest.raises(Conflict):
        workspace.move(RelPath(("other",)), RelPath(("d", "file")), overwrite=False)
    workspace.move(RelPath(("other",)), RelPath(("d", "file")), overwrite=True)
    assert (workspace.root / "d" / "file").read_text() == "other"


def test_move_into_itself_and_root_operations_are_refused(tree: tuple[Workspace, Path]) -> None:
    workspace, _ = tree
    with pytest.raises(BadPath, match="into itself"):
        workspace.move(RelPath(("d",)), RelPath(("d", "sub")), overwrite=False)
    with pytest.raises(BadPath):
        workspace.delete(RelPath(), recursive=True)
    with pytest.raises(BadPath):
        workspace.move(RelPath(), RelPath(("x",)), overwrite=False)


def test_delete_needs_recursive_for_a_non_empty_directory(tree: tuple[Workspace, Path]) -> None:
    workspace, _ = tree
    with pytest.raises(Conflict, match="recursive=true"):
        workspace.delete(RelPath(("d",)), recursive=False)
    workspace.delete(RelPath(("d",)), recursive=True)
    with pytest.raises(NotFound):
        workspace.list_dir(RelPath(("d",)))


def test_deleting_a_link_removes_the_link_not_its_target(tree: tuple[Workspace, Path]) -> None:
    workspace, outside = tree
    workspace.delete(RelPath(("out",)), recursive=True)
    assert (outside / "canary").read_text() == "canary"
    assert not (workspace.root / "out").is_symlink()


def test_a_workspace_root_that_is_a_link_is_refused(tmp_path: Path) -> None:
    (tmp_path / "real").mkdir()
    (tmp_path / "workspace").symlink_to(tmp_path / "real")
    with pytest.raises(Conflict, match="not a directory"):
        Workspace(tmp_path / "workspace").list_dir(RelPath())


def test_reading_a_fifo_is_refused_without_blocking(tree: tuple[Workspace, Path]) -> None:
    workspace, _ = tree
    os.mkfifo(workspace.root / "pipe")
    with pytest.raises(BadPath, match="not a regular file"):
        workspace.open_read(RelPath(("pipe",)))
    entries = {e.name: e.type for e in workspace.list_dir(RelPath()).entries}
    assert entries["pipe"] == EntryType.OTHER
