"""Each runtime is usable for what a developer does with it, in a real container, in the
environment the IDE's terminal has (dev's login shell): node runs a script, python makes a
venv, go builds a binary, java compiles with javac and runs, dotnet (Mono) compiles with csc
and mcs and runs with mono.

The artifacts are the real builds (``zlh artifacts build``, shared download cache), served on
the bridge address as ``zlh up`` serves them. Beside them, a .NET SDK imported the way
docs/operations.md says (a stand-in tarball shaped like Microsoft's, with ``dotnet`` at its top
level) puts ``dotnet`` on the same PATH.
"""

from __future__ import annotations

import contextlib
import hashlib
import io
import tarfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from lxc_kit import Agent, attach, host_services, lxc_backend, settled, up

from support import CACHE_DIR, serve_store, zlh
from zlh.artifacts.store import ArtifactStore
from zlh.backends.lxc import LxcBackend
from zlh.schemas import ArtifactKind

pytestmark = [pytest.mark.root, pytest.mark.slow, pytest.mark.e2e]

VMIDS = {"node": 9131, "python": 9132, "go": 9133, "java": 9134, "dotnet": 9135}
SDK_VMID = 9136  # the imported .NET SDK
SDK_VERSION = "8.0.404"
# What a developer types first: it must print "hello 42".
HELLO = {
    "node": "node -e 'console.log(\"hello\", 6 * 7)'",
    "python": (
        "cd ~ && python3 -m venv .venv && .venv/bin/python -c 'print(\"hello\", 6 * 7)'"
        " && pip --version >/dev/null && python3 -m pip --version >/dev/null"
    ),
    "go": (
        'mkdir -p ~/hello && cd ~/hello && printf \'package main\\nimport "fmt"\\n'
        'func main() { fmt.Println("hello", 6*7) }\\n\' > main.go'
        " && go mod init hello >/dev/null 2>&1 && go build -o hello . && ./hello"
    ),
    "java": (
        "mkdir -p ~/j && cd ~/j && printf 'public class Hello { public static void main("
        'String[] a) { System.out.println("hello " + 6 * 7); } }\\n\' > Hello.java'
        " && javac Hello.java && java Hello"
    ),
    "dotnet": (
        "mkdir -p ~/cs && cd ~/cs && printf 'class Hello { static void Main() {"
        ' System.Console.WriteLine("hello " + 6 * 7); } }\\n\' > Hello.cs'
        " && csc Hello.cs && mono Hello.exe && mcs -out:Hello2.exe Hello.cs && mono Hello2.exe"
    ),
}
# What Microsoft's SDK tarball looks like to the agent: `dotnet` and its folders at the top.
FAKE_DOTNET = f"""#!/bin/sh
case "$1" in
  --version) echo {SDK_VERSION} ;;
  run) echo "hello 42" ;;
  *) echo "usage: dotnet [--version] [run]" >&2; exit 1 ;;
esac
"""


@pytest.fixture(scope="module")
def backend() -> Iterator[LxcBackend]:
    yield from lxc_backend(*VMIDS.values(), SDK_VMID)


@pytest.fixture(scope="module")
def store(tmp_path_factory: pytest.TempPathFactory) -> Path:
    built = tmp_path_factory.mktemp("runtimes-store")
    CACHE_DIR.mkdir(parents=True, exist_ok=True)
    zlh("artifacts", "build", *VMIDS, "--store", str(built), "--cache-dir", str(CACHE_DIR),
        timeout=3600)  # fmt: skip
    return built


@pytest.fixture(scope="module")
def served(backend: LxcBackend, store: Path) -> Iterator[str]:
    bridge = backend._network().address
    with contextlib.contextmanager(serve_store)(store, bridge) as url, host_services(backend, url):
        yield url


def payload(
    store: Path, url: str, name: str, vmid: int, version: str | None = None
) -> dict[str, Any]:
    version, artifact = ArtifactStore(store).catalog().resolve(ArtifactKind.RUNTIME, name, version)
    return {
        "vmid": vmid,
        "runtime": {
            "name": name,
            "version": version,
            "artifact": artifact.model_dump(mode="json") | {"url": artifact.resolved_url(url)},
        },
        "addons": [],
        "devUser": {"name": "dev", "home": "/home/dev", "workspace": "/home/dev/workspace"},
    }


def provisioned(backend: LxcBackend, vmid: int, spec: dict[str, Any]) -> None:
    with Agent(up(backend, vmid), f"secret-{vmid}") as agent:
        agent.provision(spec)
        status = agent.wait_for(settled, timeout_s=900)
        assert status["state"] == "ready", status


def in_login_shell(backend: LxcBackend, vmid: int, command: str) -> list[str]:
    """``command``'s output lines in dev's login shell, as the console and the IDE's terminal
    start it."""
    return attach(backend, vmid, "su", "-", "dev", "-c", command).strip().splitlines()


@pytest.mark.parametrize("name", list(VMIDS))
def test_hello_world_in_the_terminals_environment(
    name: str, backend: LxcBackend, store: Path, served: str
) -> None:
    vmid = VMIDS[name]
    provisioned(backend, vmid, payload(store, served, name, vmid))
    out = in_login_shell(backend, vmid, HELLO[name])
    assert out[-1] == "hello 42", out


def fake_sdk(directory: Path) -> Path:
    """A tarball shaped like Microsoft's SDK: ``./dotnet`` and ``./sdk/<version>/``."""
    path = directory / f"dotnet-sdk-{SDK_VERSION}-linux-x64.tar.gz"
    script = FAKE_DOTNET.encode()
    with tarfile.open(path, "w:gz") as tar:
        for name in ("./", "./sdk/", f"./sdk/{SDK_VERSION}/"):
            folder = tarfile.TarInfo(name)
            folder.type, folder.mode = tarfile.DIRTYPE, 0o755
            tar.addfile(folder)
        dotnet = tarfile.TarInfo("./dotnet")
        dotnet.size, dotnet.mode = len(script), 0o755
        tar.addfile(dotnet, io.BytesIO(script))
    return path


def test_an_imported_dotnet_sdk_runs_from_devs_login_shell(
    backend: LxcBackend, store: Path, served: str, tmp_path: Path
) -> None:
    sdk = fake_sdk(tmp_path)
    digest = hashlib.sha256(sdk.read_bytes()).hexdigest()
    microsoft = tmp_path / "microsoft"  # stands in for builds.dotnet.microsoft.com
    ArtifactStore(microsoft).add_file(ArtifactKind.RUNTIME, "dotnet", "8.0", sdk)
    with contextlib.contextmanager(serve_store)(microsoft) as upstream:
        # the command of docs/operations.md, "Runtime artifacts", word for word
        zlh("artifacts", "add", "runtime", "dotnet", "8.0",
            "--url", f"{upstream}/runtime/dotnet/8.0/{sdk.name}",
            "--sha256", digest, "--strip-components", "0", "--bin", ".",
            "--upstream-version", SDK_VERSION, "--source", "dotnet.microsoft.com",
            "--label", f"summary=.NET SDK {SDK_VERSION} (Microsoft)",
            "--store", str(store))  # fmt: skip
    entry = ArtifactStore(store).catalog().runtimes["dotnet"]
    assert entry.default == "mono-6.8"  # the build came first; an import does not move it
    artifact = entry.get("8.0")
    assert artifact is not None
    assert (artifact.sha256, artifact.strip_components, artifact.bin) == (digest, 0, ["."])
    assert artifact.metadata.upstream_version == SDK_VERSION
    assert artifact.metadata.source == "dotnet.microsoft.com"
    assert artifact.metadata.labels == {"summary": f".NET SDK {SDK_VERSION} (Microsoft)"}

    provisioned(backend, SDK_VMID, payload(store, served, "dotnet", SDK_VMID, "8.0"))
    assert in_login_shell(backend, SDK_VMID, "command -v dotnet && dotnet --version") == [
        "/opt/zlh/runtimes/dotnet/current/dotnet",
        SDK_VERSION,
    ]
    assert in_login_shell(backend, SDK_VMID, "cd ~ && dotnet run") == ["hello 42"]
