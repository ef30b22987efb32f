"""ArtifactStore: what lands on disk and in catalog.json, and what is refused."""

from __future__ import annotations

import fcntl
import hashlib
import json
import os
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest

from zlh.artifacts.errors import (
    ArtifactConflictError,
    ArtifactError,
    CatalogInvalidError,
    DigestMismatchError,
    UnknownArtifactError,
)
from zlh.artifacts.store import ArtifactStore
from zlh.schemas import ArtifactKind, ArtifactMetadata, Catalog


def tarball(directory: Path, name: str, payload: bytes) -> Path:
    path = directory / name
    path.write_bytes(payload)
    return path


def sha(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def files_below(root: Path) -> list[str]:
    return sorted(str(p.relative_to(root)) for p in root.rglob("*") if p.is_file())


@pytest.fixture
def store(tmp_path: Path) -> ArtifactStore:
    return ArtifactStore(tmp_path / "store")


def test_add_file_copies_hashes_and_pins_it_in_the_catalog(
    store: ArtifactStore, tmp_path: Path
) -> None:
    payload = os.urandom(3 * 1024 * 1024 + 17)  # spans several copy chunks
    source = tarball(tmp_path, "node-v22.tar.xz", payload)
    artifact = store.add_file(
        ArtifactKind.RUNTIME,
        "node",
        "22",
        source,
        metadata=ArtifactMetadata(upstream_version="22.11.0"),
    )
    assert artifact.url == "runtime/node/22/node-v22.tar.xz"
    assert artifact.sha256 == sha(payload)
    assert artifact.size == len(payload)
    assert artifact.format.value == "tar.xz"
    assert artifact.bin == ["bin"]
    assert artifact.metadata.upstream_version == "22.11.0"
    assert artifact.metadata.created is not None
    assert (store.root / artifact.url).read_bytes() == payload
    on_disk = Catalog.model_validate_json(store.catalog_path.read_bytes())
    assert on_disk.resolve(ArtifactKind.RUNTIME, "node") == ("22", artifact)
    assert store.artifact_path("runtime", "node", "22") == store.root / artifact.url
    assert files_below(store.root) == [".lock", "catalog.json", "runtime/node/22/node-v22.tar.xz"]


def test_adding_the_same_bytes_again_is_a_no_op(store: ArtifactStore, tmp_path: Path) -> None:
    source = tarball(tmp_path, "go.tar.gz", b"go bits")
    first = store.add_file("runtime", "go", "1.25", source)
    before = store.catalog_path.read_bytes()
    again = store.add_file("runtime", "go", "1.25", source)
    assert again == first
    assert store.catalog_path.read_bytes() == before


def test_another_digest_for_a_known_version_needs_replace(
    store: ArtifactStore, tmp_path: Path
) -> None:
    store.add_file("runtime", "go", "1.25", tarball(tmp_path, "go-old.tar.gz", b"old"))
    newer = tarball(tmp_path, "go-new.tar.gz", b"new")
    with pytest.raises(ArtifactConflictError, match=r"runtime go 1\.25 .*--replace"):
        store.add_file("runtime", "go", "1.25", newer)
    assert store.catalog().resolve(ArtifactKind.RUNTIME, "go")[1].sha256 == sha(b"old")
    assert files_below(store.root / "runtime") == ["go/1.25/go-old.tar.gz"]

    replaced = store.add_file("runtime", "go", "1.25", newer, replace=True)
    assert replaced.sha256 == sha(b"new")
    assert store.catalog().resolve(ArtifactKind.RUNTIME, "go")[1] == replaced
    assert files_below(store.root / "runtime") == ["go/1.25/go-new.tar.gz"]


def test_the_same_bytes_with_replace_take_the_new_metadata(
    store: ArtifactStore, tmp_path: Path
) -> None:
    source = tarball(tmp_path, "go.tar.gz", b"go")
    old = ArtifactMetadata(labels={"summary": "old words"})
    store.add_file("runtime", "go", "1.25", source, metadata=old)
    again = store.add_file("runtime", "go", "1.25", source, metadata=ArtifactMetadata())
    assert again.metadata.labels == {"summary": "old words"}  # without replace: a no-op
    new = ArtifactMetadata(labels={"summary": "new words"})
    replaced = store.add_file("runtime", "go", "1.25", source, metadata=new, replace=True)
    assert replaced.sha256 == sha(b"go") and replaced.metadata.labels == {"summary": "new words"}
    assert store.catalog().resolve(ArtifactKind.RUNTIME, "go")[1] == replaced
    assert files_below(store.root / "runtime") == ["go/1.25/go.tar.gz"]


def test_a_digest_mismatch_is_refused_and_leaves_nothing_behind(
    store: ArtifactStore, tmp_path: Path
) -> None:
    source = tarball(tmp_path, "python.tar.zst", b"python bits")
    with pytest.raises(DigestMismatchError, match="expected " + "0" * 64):
        store.add_file("runtime", "python", "3.12", source, expected_sha256="0" * 64)
    assert store.catalog() == Catalog()
    assert files_below(store.root) == []
    assert not (store.root / "runtime").exists()


@pytest.mark.parametrize(
    ("kind", "name", "version", "filename", "problem"),
    [
        ("runtime", "ruby", "3", "ruby.tar.gz", r"unknown runtime 'ruby' \(known: node, python"),
        ("addon", "node", "1", "x.tar.gz", r"unknown addon 'node' \(known: code-server"),
        ("plugin", "node", "1", "x.tar.gz", "unknown artifact kind 'plugin'"),
        ("runtime", "node", "../22", "x.tar.gz", r"invalid version '\.\./22'"),
        ("runtime", "node", "22", "x.zip", "cannot tell the archive format of 'x.zip'"),
        ("runtime", "node", "22", ".hidden.tar.gz", "invalid artifact file name '.hidden.tar.gz'"),
    ],
)
def test_names_the_schema_does_not_allow_are_refused_before_copying(
    store: ArtifactStore,
    tmp_path: Path,
    kind: str,
    name: str,
    version: str,
    filename: str,
    problem: str,
) -> None:
    source = tarball(tmp_path, "src.bin", b"bits")
    with pytest.raises(UnknownArtifactError, match=problem):
        store.add_file(kind, name, version, source, filename=filename)
    assert not store.root.exists()


def test_invalid_artifact_options_are_refused_naming_the_field(
    store: ArtifactStore, tmp_path: Path
) -> None:
    source = tarball(tmp_path, "node.tar.gz", b"bits")
    with pytest.raises(ArtifactError, match=r"bin\.0: .*'\.\./bin'"):
        store.add_file("runtime", "node", "22", source, bin_dirs=["../bin"])


def test_make_default_and_remove_move_the_default(store: ArtifactStore, tmp_path: Path) -> None:
    store.add_file("runtime", "node", "20", tarball(tmp_path, "n20.tar.gz", b"20"))
    store.add_file("runtime", "node", "22", tarball(tmp_path, "n22.tar.gz", b"22"))
    assert store.catalog().resolve(ArtifactKind.RUNTIME, "node")[0] == "20"
    store.add_file(
        "runtime", "node", "24", tarball(tmp_path, "n24.tar.gz", b"24"), make_default=True
    )
    assert store.catalog().resolve(ArtifactKind.RUNTIME, "node")[0] == "24"

    store.remove("runtime", "node", "24")
    assert store.catalog().resolve(ArtifactKind.RUNTIME, "node")[0] == "22"
    assert not (store.root / "runtime/node/24").exists()
    store.remove("runtime", "node", "20")
    store.remove("runtime", "node", "22")
    assert store.catalog().runtimes == {}
    assert not (store.root / "runtime").exists()
    with pytest.raises(UnknownArtifactError, match="node"):
        store.remove("runtime", "node", "22")


def test_verify_names_modified_truncated_and_missing_files(
    store: ArtifactStore, tmp_path: Path
) -> None:
    for name, version in [("node", "22"), ("go", "1.25"), ("java", "21")]:
        store.add_file("runtime", name, version, tarball(tmp_path, f"{name}.tar.gz", b"x" * 100))
    assert store.verify() == []
    modified = store.artifact_path("runtime", "node", "22")
    modified.write_bytes(b"y" * 100)
    truncated = store.artifact_path("runtime", "go", "1.25")
    truncated.write_bytes(b"x" * 40)
    missing = store.artifact_path("runtime", "java", "21")
    missing.unlink()

    problems = {p.path: p for p in store.verify()}
    assert set(problems) == {modified, truncated, missing}
    assert problems[modified].reason == "modified"
    assert problems[modified].actual_sha256 == sha(b"y" * 100)
    assert problems[truncated].reason == "truncated"
    assert problems[truncated].actual_size == 40
    assert problems[missing].reason == "missing"
    assert problems[missing].expected_sha256 == sha(b"x" * 100)


@pytest.mark.parametrize(
    ("mutate", "problem"),
    [
        (lambda a: a.update(sha256="ABC"), r"sha256: .*64 lowercase hex digits"),
        (lambda a: a.pop("size"), r"runtimes\.node\.versions\.0\.artifact\.size: Field required"),
        (lambda a: a.update(url="/etc/passwd"), r"url: .*must not start with '/'"),
    ],
    ids=["wrong-digest-format", "missing-field", "absolute-url"],
)
def test_an_invalid_catalog_is_refused_naming_the_problem(
    store: ArtifactStore, tmp_path: Path, mutate: object, problem: str
) -> None:
    store.add_file("runtime", "node", "22", tarball(tmp_path, "node.tar.gz", b"n"))
    data = json.loads(store.catalog_path.read_text())
    mutate(data["runtimes"]["node"]["versions"][0]["artifact"])  # type: ignore[operator]
    store.catalog_path.write_text(json.dumps(data))
    with pytest.raises(CatalogInvalidError, match=problem):
        store.catalog()
    # Writers refuse too, before copying anything.
    with pytest.raises(CatalogInvalidError):
        store.add_file("runtime", "go", "1", tarball(tmp_path, "go.tar.gz", b"g"))
    assert not (store.root / "runtime/go").exists()


def test_an_unknown_runtime_or_broken_json_in_the_catalog_is_refused(
    store: ArtifactStore,
) -> None:
    store.root.mkdir()
    store.catalog_path.write_text('{"schemaVersion": 1, "runtimes": {"ruby": {}}}')
    with pytest.raises(CatalogInvalidError, match=r"runtimes\.ruby\.\[key\]: Input should be"):
        store.catalog()
    store.catalog_path.write_text('{"schemaVersion": 1,')
    with pytest.raises(CatalogInvalidError, match="Invalid JSON"):
        store.catalog()


def test_stale_partial_files_are_swept_but_live_ones_kept(
    store: ArtifactStore, tmp_path: Path
) -> None:
    directory = store.root / "runtime/node/22"
    directory.mkdir(parents=True)
    stale = directory / ".node.tar.gz.partial-dead"
    stale.write_bytes(b"half")
    live = directory / ".node.tar.gz.partial-live"
    live.write_bytes(b"copying")
    young = directory / ".node.tar.gz.partial-young"
    young.write_bytes(b"just created")
    an_hour_ago = time.time() - 3600
    for path in (stale, live):
        os.utime(path, (an_hour_ago, an_hour_ago))
    with live.open("rb") as held:
        fcntl.flock(held.fileno(), fcntl.LOCK_EX)
        store.add_file("runtime", "node", "22", tarball(tmp_path, "node.tar.gz", b"n"))
    assert not stale.exists()
    assert live.exists()
    assert young.exists()


def test_concurrent_writers_lose_no_entry(store: ArtifactStore, tmp_path: Path) -> None:
    # Threads open the lock file separately, so flock serialises them like processes.
    versions = [f"1.{i}" for i in range(24)]
    sources = {v: tarball(tmp_path, f"go-{v}.tar.gz", v.encode()) for v in versions}
    with ThreadPoolExecutor(max_workers=8) as pool:
        list(pool.map(lambda v: store.add_file("runtime", "go", v, sources[v]), versions))
    entry = store.catalog().section(ArtifactKind.RUNTIME)["go"]
    assert sorted(e.version for e in entry.versions) == sorted(versions)
    assert store.verify() == []
