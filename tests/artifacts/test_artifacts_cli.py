"""``zlh artifacts add/list/verify/remove`` as an operator runs them: real files, real HTTP."""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import pty
import subprocess
from collections.abc import Callable
from pathlib import Path

import pytest

from support import ZLH, serve_store, zlh
from zlh.artifacts.store import ArtifactStore
from zlh.schemas import ArtifactKind, Catalog


def make_tarball(directory: Path, name: str, size: int = 200_000) -> Path:
    path = directory / name
    path.write_bytes(os.urandom(size))
    return path


def load(store: Path) -> Catalog:
    return Catalog.model_validate_json((store / "catalog.json").read_bytes())


def test_add_list_and_remove(tmp_path: Path) -> None:
    store = tmp_path / "store"
    source = make_tarball(tmp_path, "node-v22.tar.gz")
    added = zlh(
        "artifacts", "add", "runtime", "node", "22", "--file", str(source), "--store", str(store),
        "--upstream-version", "22.11.0", "--label", "channel=lts", "--bin", "bin",
    )  # fmt: skip
    digest = hashlib.sha256(source.read_bytes()).hexdigest()
    assert digest in added.stdout
    listed = zlh("artifacts", "list", "--store", str(store)).stdout
    assert "node" in listed
    assert "runtime/node/22/node-v22.tar.gz" in listed
    as_json = json.loads(zlh("artifacts", "list", "--json", "--store", str(store)).stdout)
    artifact = as_json["runtimes"]["node"]["versions"][0]["artifact"]
    assert artifact["sha256"] == digest
    assert artifact["metadata"]["labels"] == {"channel": "lts"}
    assert artifact["metadata"]["upstreamVersion"] == "22.11.0"

    zlh("artifacts", "remove", "runtime", "node", "22", "--store", str(store))
    assert load(store).runtimes == {}
    assert not (store / "runtime").exists()
    missing = zlh(
        "artifacts", "remove", "runtime", "node", "22", "--store", str(store), check=False
    )
    assert missing.returncode == 1
    assert "node" in missing.stderr


def test_store_defaults_to_the_data_dir(tmp_path: Path) -> None:
    source = make_tarball(tmp_path, "go.tar.gz")
    env = {**os.environ, "ZLH_DATA_DIR": str(tmp_path / "data")}
    zlh("artifacts", "add", "runtime", "go", "1.25", "--file", str(source), env=env)
    assert (tmp_path / "data/artifacts/runtime/go/1.25/go.tar.gz").is_file()
    explicit = tmp_path / "other"
    zlh("artifacts", "list", "--data-dir", str(explicit), env=env)
    assert not (explicit / "artifacts/catalog.json").exists()


def test_readding_the_same_bytes_succeeds_another_digest_needs_replace(tmp_path: Path) -> None:
    store = tmp_path / "store"
    first = make_tarball(tmp_path, "python.tar.gz")
    args = ("artifacts", "add", "runtime", "python", "3.12", "--store", str(store), "--file")
    zlh(*args, str(first))
    catalog_before = (store / "catalog.json").read_bytes()
    zlh(*args, str(first))
    assert (store / "catalog.json").read_bytes() == catalog_before

    other = make_tarball(tmp_path, "python-b.tar.gz")
    refused = zlh(*args, str(other), check=False)
    assert refused.returncode == 1
    assert "already in the catalog" in refused.stderr
    assert "--replace" in refused.stderr
    assert (store / "catalog.json").read_bytes() == catalog_before
    zlh(*args, str(other), "--replace")
    new_digest = hashlib.sha256(other.read_bytes()).hexdigest()
    assert load(store).resolve(ArtifactKind.RUNTIME, "python")[1].sha256 == new_digest


def _corrupt_digest(artifact: dict[str, object]) -> None:
    artifact["sha256"] = "sha256:" + str(artifact["sha256"])


def _drop_size(artifact: dict[str, object]) -> None:
    del artifact["size"]


def broken_store(
    tmp_path: Path, break_catalog: Callable[[dict[str, object]], None] | None
) -> tuple[Path, str]:
    """A store whose catalog.json breaks the schema one way; returns (store, broken text)."""
    store = ArtifactStore(tmp_path / "store")
    store.add_file("runtime", "node", "22", make_tarball(tmp_path, "node.tar.gz"))
    data = json.loads(store.catalog_path.read_text())
    node = data["runtimes"]["node"]
    if break_catalog is None:
        data["runtimes"]["ruby"] = node
    else:
        break_catalog(node["versions"][0]["artifact"])
    broken = json.dumps(data)
    store.catalog_path.write_text(broken)
    return store.root, broken


@pytest.mark.parametrize(
    ("break_catalog", "problem"),
    [
        (_corrupt_digest, "artifact.sha256: Value error, must be 64 lowercase hex digits"),
        (_drop_size, "runtimes.node.versions.0.artifact.size: Field required"),
        (None, "runtimes.ruby.[key]: Input should be 'node', 'python', 'go', 'java' or 'dotnet'"),
    ],
    ids=["wrong-digest-format", "missing-field", "unknown-runtime"],
)
def test_an_invalid_catalog_is_refused_naming_the_problem(
    tmp_path: Path, break_catalog: Callable[[dict[str, object]], None] | None, problem: str
) -> None:
    store, broken = broken_store(tmp_path, break_catalog)
    go = make_tarball(tmp_path, "go.tar.gz")
    for command in (("list",), ("add", "runtime", "go", "1.25", "--file", str(go))):
        result = zlh("artifacts", *command, "--store", str(store), check=False)
        assert result.returncode == 1, command
        assert "catalog.json is invalid" in result.stderr, command
        assert problem in result.stderr, command
    assert (store / "catalog.json").read_text() == broken
    assert not (store / "runtime/go").exists()


def test_verify_remove_and_serve_refuse_an_invalid_catalog_too(tmp_path: Path) -> None:
    store, broken = broken_store(tmp_path, _drop_size)
    for command in (("verify",), ("remove", "runtime", "node", "22"), ("serve",)):
        result = zlh("artifacts", *command, "--store", str(store), check=False)
        assert result.returncode == 1, command
        assert "artifact.size: Field required" in result.stderr, command
    assert (store / "catalog.json").read_text() == broken


def test_verify_fails_naming_modified_and_truncated_files(tmp_path: Path) -> None:
    store = tmp_path / "store"
    for name in ("node", "go", "java"):
        ArtifactStore(store).add_file(
            "runtime", name, "1", make_tarball(tmp_path, f"{name}.tar.gz")
        )
    ok = zlh("artifacts", "verify", "--store", str(store))
    assert "3 artifact(s) match" in ok.stdout

    modified = store / "runtime/node/1/node.tar.gz"
    data = bytearray(modified.read_bytes())
    data[1000] ^= 0xFF  # one flipped byte, same size
    modified.write_bytes(bytes(data))
    truncated = store / "runtime/java/1/java.tar.gz"
    os.truncate(truncated, 5000)

    result = zlh("artifacts", "verify", "--store", str(store), check=False)
    assert result.returncode == 1
    lines = result.stderr.splitlines()
    node_line = next(line for line in lines if str(modified) in line)
    assert "modified" in node_line
    java_line = next(line for line in lines if str(truncated) in line)
    assert "truncated" in java_line
    assert "5000B" in java_line
    assert not any("go.tar.gz" in line for line in lines)
    assert "2 of 3 artifact(s) do not match" in result.stderr


def test_add_url_downloads_and_checks_the_digest(tmp_path: Path) -> None:
    upstream = tmp_path / "upstream"
    source = make_tarball(tmp_path, "code-server-4.96.tar.gz", size=3_000_000)
    ArtifactStore(upstream).add_file("addon", "code-server", "4.96", source)
    digest = hashlib.sha256(source.read_bytes()).hexdigest()
    store = tmp_path / "store"
    for base in serve_store(upstream):
        url = f"{base}/addon/code-server/4.96/code-server-4.96.tar.gz"
        add = ("artifacts", "add", "addon", "code-server", "4.96", "--store", str(store))
        wrong = zlh(*add, "--url", url, "--sha256", "ab" * 32, check=False)
        assert wrong.returncode == 1
        assert f"has sha256 {digest}, expected {'ab' * 32}" in wrong.stderr
        assert not store.joinpath("addon").exists()

        missing = zlh(*add, "--url", f"{base}/nope.tar.gz", "--sha256", digest, check=False)
        assert missing.returncode == 1
        assert "answered 404" in missing.stderr

        no_digest = zlh(*add, "--url", url, check=False)
        assert no_digest.returncode == 2
        assert "--url needs --sha256" in no_digest.stderr

        zlh(*add, "--url", url, "--sha256", digest.upper())
    stored = store / "addon/code-server/4.96/code-server-4.96.tar.gz"
    assert stored.read_bytes() == source.read_bytes()
    artifact = load(store).resolve(ArtifactKind.ADDON, "code-server")[1]
    assert artifact.sha256 == digest
    assert artifact.bin == []
    assert artifact.metadata.source == url


def test_progress_bars_on_a_terminal_and_silence_otherwise(tmp_path: Path) -> None:
    source = make_tarball(tmp_path, "node.tar.gz", size=2_000_000)
    add = ("artifacts", "add", "runtime", "node", "22", "--file", str(source))
    piped = zlh(*add, "--store", str(tmp_path / "piped"))
    assert piped.stderr == ""

    main, terminal = pty.openpty()
    proc = subprocess.Popen(
        [*ZLH, *add, "--store", str(tmp_path / "tty")],
        stdin=subprocess.DEVNULL,
        stdout=subprocess.DEVNULL,
        stderr=terminal,
        env={**os.environ, "TERM": "xterm", "COLUMNS": "120"},
    )
    os.close(terminal)
    drawn = bytearray()
    with contextlib.suppress(OSError):  # EIO once the child has closed the terminal
        while data := os.read(main, 65536):
            drawn += data
    os.close(main)
    assert proc.wait(timeout=60) == 0
    assert b"runtime node 22" in drawn
    assert b"/2.0 MB" in drawn
