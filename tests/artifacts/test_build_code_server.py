"""``zlh artifacts build code-server``: the npm package on our Node 24, started the contract's way.

The artifact is extracted to ``…/opt/zlh/services/code-server`` and started exactly as the
container contract says (``<dir>/lib/node <dir> --bind-addr … --auth none <workspace>``);
it is ready when ``/healthz`` and ``/?folder=`` both answer 200 (under the wrong Node, /healthz
answers while ``GET /`` fails, so the folder page is the real proof).
"""

from __future__ import annotations

import shutil
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
from build_helpers import build, unpack

from support import free_port, wait_for_port
from zlh.schemas import Artifact, ArtifactKind

# A cold build compiles code-server's native modules: minutes, more on a busy machine.
pytestmark = [pytest.mark.slow, pytest.mark.timeout(2400)]

READY_TIMEOUT_S = 120.0


def wait_for_200(url: str, proc: subprocess.Popen[bytes], deadline: float) -> httpx.Response:
    """Poll ``url`` until it answers 200; fail if the server dies or the deadline passes."""
    last = "no answer"
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise AssertionError(f"code-server exited with {proc.returncode}")
        try:
            response = httpx.get(url, timeout=10)
            if response.status_code == 200:
                return response
            last = f"HTTP {response.status_code}"
        except httpx.HTTPError as exc:
            last = repr(exc)
        time.sleep(0.2)
    raise AssertionError(f"{url} never answered 200 (last: {last})")


@pytest.fixture(scope="module")
def service(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[Path, Artifact]]:
    """The built code-server, extracted where the agent installs it (~850 MB, removed after)."""
    base = tmp_path_factory.mktemp("code-server")
    build("code-server", base / "store")
    version = next((base / "store" / "addon" / "code-server").iterdir()).name
    service = base / "opt" / "zlh" / "services" / "code-server"
    yield service, unpack(base / "store", ArtifactKind.ADDON, "code-server", version, service)
    shutil.rmtree(base)


def test_code_server_starts_from_its_service_dir_and_serves_a_folder(
    service: tuple[Path, Artifact], tmp_path: Path
) -> None:
    service_dir, artifact = service
    assert artifact.metadata.labels["node"].startswith("24.")
    assert (service_dir / "package.json").is_file() and (service_dir / "lib" / "node").is_file()

    workspace = tmp_path / "workspace"
    workspace.mkdir()
    home = tmp_path / "home"
    env = {
        "PATH": "/usr/bin:/bin",
        "HOME": str(home),
        **{f"XDG_{d}_HOME": str(home / d.lower()) for d in ("CONFIG", "DATA", "CACHE")},
    }
    port = free_port()
    argv = [
        service_dir / "lib" / "node",
        service_dir,
        "--bind-addr",
        f"127.0.0.1:{port}",
        "--auth",
        "none",
        "--disable-telemetry",
        "--disable-update-check",
        "--disable-workspace-trust",
        workspace,
    ]
    proc = subprocess.Popen(
        [str(a) for a in argv], env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL
    )
    try:
        deadline = time.monotonic() + READY_TIMEOUT_S
        wait_for_port("127.0.0.1", port, timeout_s=READY_TIMEOUT_S, proc=proc)
        health = wait_for_200(f"http://127.0.0.1:{port}/healthz", proc, deadline)
        assert health.json()["status"] in {"alive", "expired"}
        page = wait_for_200(f"http://127.0.0.1:{port}/?folder={workspace}", proc, deadline)
        assert "vscode" in page.text.lower()
    finally:
        proc.terminate()
        proc.wait(timeout=30)


def test_the_wrapper_script_runs_code_server_with_its_own_node(
    service: tuple[Path, Artifact], tmp_path: Path
) -> None:
    service_dir, artifact = service
    home = tmp_path / "home"
    out = subprocess.run(
        [service_dir / "bin" / "code-server", "--version"],
        capture_output=True,
        text=True,
        check=True,
        env={"PATH": "/usr/bin:/bin", "HOME": str(home), "XDG_CONFIG_HOME": str(home / "c")},
    )
    assert f"{artifact.metadata.upstream_version} " in out.stdout
