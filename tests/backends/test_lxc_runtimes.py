"""Each runtime is usable for what a developer does with it, in a real container, in the
environment the IDE's terminal has (dev's login shell): node runs a script, python makes a
venv, go builds a binary, java compiles with javac and runs.

The artifacts are the real builds (``zlh artifacts build``, shared download cache), served on
the bridge address as ``zlh up`` serves them.
"""

from __future__ import annotations

import contextlib
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

VMIDS = {"node": 9131, "python": 9132, "go": 9133, "java": 9134}
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
}


@pytest.fixture(scope="module")
def backend() -> Iterator[LxcBackend]:
    yield from lxc_backend(*VMIDS.values())


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


def payload(store: Path, url: str, name: str, vmid: int) -> dict[str, Any]:
    version, artifact = ArtifactStore(store).catalog().resolve(ArtifactKind.RUNTIME, name)
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


@pytest.mark.parametrize("name", list(VMIDS))
def test_hello_world_in_the_terminals_environment(
    name: str, backend: LxcBackend, store: Path, served: str
) -> None:
    vmid = VMIDS[name]
    with Agent(up(backend, vmid), f"secret-{vmid}") as agent:
        agent.provision(payload(store, served, name, vmid))
        status = agent.wait_for(settled, timeout_s=900)
        assert status["state"] == "ready", status
    # dev's login shell, as the console and code-server's terminal start it
    out = attach(backend, vmid, "su", "-", "dev", "-c", HELLO[name])
    assert out.strip().splitlines()[-1] == "hello 42", out
