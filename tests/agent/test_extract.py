"""Streaming extraction: every format, stripping, and the member checks one by one."""

from __future__ import annotations

import asyncio
import os
import tarfile
from pathlib import Path

import pytest

from agent_helpers import directory, file, runtime_members, symlink, tarball
from zlh.agent.errors import ArchiveError, UnsafeArchive
from zlh.install.extract import MemberGuard, StreamExtractor
from zlh.schemas import ArtifactFormat


async def extract(data: bytes, dest: Path, fmt: ArtifactFormat, strip: int = 1) -> None:
    extractor = StreamExtractor(dest, fmt, strip)
    extractor.start()
    try:
        for i in range(0, len(data), 1000):
            await extractor.write(data[i : i + 1000])
    except BaseException:
        await extractor.abort()
        raise
    await extractor.finish()


@pytest.mark.parametrize("fmt", list(ArtifactFormat))
def test_every_format_extracts_with_stripped_components(
    fmt: ArtifactFormat, tmp_path: Path
) -> None:
    asyncio.run(extract(tarball(runtime_members(), fmt.value), tmp_path, fmt))
    assert (tmp_path / "bin/hello").read_bytes().startswith(b"#!/bin/sh")
    assert os.access(tmp_path / "bin/hello", os.X_OK)
    assert os.readlink(tmp_path / "bin/hi") == "hello"


def test_owner_and_group_write_bits_are_not_taken_from_the_archive(tmp_path: Path) -> None:
    data = tarball([directory("t"), file("t/f", b"x", 0o666)])
    asyncio.run(extract(data, tmp_path, ArtifactFormat.TAR_GZ))
    st = (tmp_path / "f").stat()
    assert st.st_uid == os.geteuid()  # the archive said uid 1000
    assert st.st_mode & 0o777 == 0o644


def test_garbage_is_a_bad_archive_not_a_crash(tmp_path: Path) -> None:
    with pytest.raises(ArchiveError, match="cannot extract"):
        asyncio.run(extract(os.urandom(5000), tmp_path, ArtifactFormat.TAR_GZ))


def test_stripping_everything_away_is_refused(tmp_path: Path) -> None:
    with pytest.raises(ArchiveError, match="holds no files"):
        asyncio.run(extract(tarball([file("only")]), tmp_path, ArtifactFormat.TAR_GZ, strip=1))


def member(
    name: str, kind: bytes = tarfile.REGTYPE, link: str = "", mode: int = 0o644
) -> tarfile.TarInfo:
    info = tarfile.TarInfo(name)
    info.type, info.linkname, info.mode = kind, link, mode
    return info


def test_an_absolute_name_cannot_hide_behind_stripping() -> None:
    with pytest.raises(UnsafeArchive, match="absolute"):
        MemberGuard(1)(member("/etc/passwd"), "/dest")


def test_a_symlink_chain_that_would_climb_out_is_refused() -> None:
    guard = MemberGuard(0)
    guard(member("a/b/l", tarfile.SYMTYPE, "../.."), "/dest")  # resolves to the top: fine
    with pytest.raises(UnsafeArchive, match="through another symlink"):
        guard(member("x", tarfile.SYMTYPE, "a/b/l/.."), "/dest")


def test_a_member_cannot_replace_a_symlink() -> None:
    guard = MemberGuard(0)
    guard(member("l", tarfile.SYMTYPE, "d"), "/dest")
    with pytest.raises(UnsafeArchive, match="through the symlink 'l'"):
        guard(member("l"), "/dest")


def test_setgid_directories_are_allowed_but_lose_the_bit() -> None:
    out = MemberGuard(0)(member("d", tarfile.DIRTYPE, mode=0o2775), "/dest")
    assert out is not None and out.mode == 0o755


def test_a_symlink_that_resolves_outside_on_disk_is_caught_after_extraction(tmp_path: Path) -> None:
    dest = tmp_path / "dest"
    dest.mkdir()
    (dest / "l").symlink_to(tmp_path)  # as if something slipped past the lexical checks
    guard = MemberGuard(0)
    guard.symlinks.add("l")
    with pytest.raises(UnsafeArchive, match="resolves outside"):
        guard.verify_links(dest)


def test_symlink_inside_is_fine(tmp_path: Path) -> None:
    data = tarball([directory("t"), directory("t/d"), symlink("t/l", "d"), file("t/d/x")])
    asyncio.run(extract(data, tmp_path, ArtifactFormat.TAR_GZ))
    assert (tmp_path / "l" / "x").exists()
