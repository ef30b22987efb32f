"""The tailscale addon with a stand-in ``tailscale``/``tailscaled`` artifact served over HTTP.

No package registry here carries tailscale, so the artifact is synthetic: a tarball laid out
like the official static one (``tailscale_<ver>_amd64/{tailscale,tailscaled}``) whose two
programs are small Python scripts that record their argv, their environment and the key they
were pointed at, then behave: ``tailscaled`` stays up, ``tailscale up`` joins (or fails the way
a rejected key fails when the artifact is built with ``fail_join``), ``tailscale ip -4``
answers the node's address. Operators import the real tarball with ``zlh artifacts add``.
"""

from __future__ import annotations

import json
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from agent_helpers import (
    ArtifactServer,
    InProcessAgent,
    artifact,
    artifact_server,
    directory,
    file,
    in_process_agent,
    kill_recorded_process,
    payload,
    runtime_members,
    settled,
    tarball,
)

AUTH_KEY = "hskey-auth-standin12345-" + "s" * 64
TAILNET_IP = "100.64.0.7"
JOIN_REFUSED = "backend error: invalid key: unable to validate API key"

RECORDER = """\
import json, os, sys, time
here = os.path.dirname(os.path.abspath(__file__))
args = sys.argv[1:]
entry = {"program": os.path.basename(__file__), "argv": args, "env": dict(os.environ)}
for arg in args:
    if arg.startswith("--auth-key=file:"):
        with open(arg.split(":", 1)[1]) as f:
            entry["keyFromFile"] = f.read()
with open(os.path.join(here, "calls.jsonl"), "a") as log:
    log.write(json.dumps(entry) + "\\n")
"""

TAILSCALED = RECORDER + "while True:\n    time.sleep(3600)\n"

TAILSCALE = (
    RECORDER
    + """
FAIL_JOIN = @FAIL_JOIN@
if "up" in args:
    if FAIL_JOIN:
        print("@REFUSED@", file=sys.stderr)
        sys.exit(1)
    sys.exit(0)
if "ip" in args:
    print("@IP@")
    sys.exit(0)
sys.exit(0)
"""
)


def standin(*, fail_join: bool = False) -> bytes:
    """The synthetic artifact: official layout, recording programs."""
    top = "tailscale_1.80.0_amd64"
    shebang = f"#!{sys.executable}\n"
    script = (
        TAILSCALE.replace("@FAIL_JOIN@", str(fail_join))
        .replace("@REFUSED@", JOIN_REFUSED)
        .replace("@IP@", TAILNET_IP)
    )
    return tarball(
        [
            directory(top),
            file(f"{top}/tailscale", (shebang + script).encode(), 0o755),
            file(f"{top}/tailscaled", (shebang + TAILSCALED).encode(), 0o755),
        ]
    )


@pytest.fixture
def server() -> Iterator[ArtifactServer]:
    with artifact_server() as srv:
        yield srv


def tailscale_payload(server: ArtifactServer, *, fail_join: bool = False) -> dict[str, Any]:
    node = tarball(runtime_members())
    data = standin(fail_join=fail_join)
    name = "tailscale-fail.tar.gz" if fail_join else "tailscale.tar.gz"
    addon = {
        "name": "tailscale",
        "version": "1.80.0",
        "artifact": artifact(server.add(name, data), data, bin=[]),
        "options": {"loginServer": "https://hs.example.test", "authKey": AUTH_KEY},
    }
    return payload(artifact(server.add("node.tar.gz", node), node), addons=[addon])


def calls(root: Path) -> list[dict[str, Any]]:
    log = root / "opt/zlh/services/tailscale/calls.jsonl"
    return [json.loads(line) for line in log.read_text().splitlines()] if log.exists() else []


@pytest.fixture
def root(tmp_path: Path) -> Iterator[Path]:
    path = tmp_path / "root"
    yield path
    kill_recorded_process(path, "tailscaled")


@pytest.fixture
def agent(root: Path) -> Iterator[InProcessAgent]:
    with in_process_agent(root) as running:
        yield running


def test_join_uses_the_key_from_a_file_accepts_no_dns_and_no_exit_node(
    server: ArtifactServer, root: Path, agent: InProcessAgent
) -> None:
    assert agent.provision(tailscale_payload(server)).status_code == 202
    status = agent.wait_for(settled)
    assert status["state"] == "ready", status
    assert status["tailscaleInstalled"] and status["tailscaleRunning"]
    assert status["tailscaleIp"] == TAILNET_IP

    recorded = calls(root)
    (up,) = [c for c in recorded if c["program"] == "tailscale" and "up" in c["argv"]]
    argv = up["argv"]
    assert "--accept-dns=false" in argv and "--accept-routes=false" in argv
    assert "--login-server=https://hs.example.test" in argv
    assert "--hostname=zlh-101" in argv
    assert not [a for a in argv if "exit-node" in a]
    (key_arg,) = [a for a in argv if a.startswith("--auth-key=")]
    assert key_arg.startswith("--auth-key=file:") and up["keyFromFile"] == AUTH_KEY
    for call in recorded:
        assert AUTH_KEY not in json.dumps(call["argv"]) + json.dumps(call["env"])
    (daemon,) = [c for c in recorded if c["program"] == "tailscaled"]
    tun = [a for a in daemon["argv"] if a.startswith("--tun=")]
    expected = "--tun=tailscale0" if Path("/dev/net/tun").exists() else "--tun=userspace-networking"
    assert tun == [expected]
    # The key file is gone once the join succeeded.
    assert not Path(key_arg.split(":", 1)[1]).exists()


def test_a_failed_join_is_reported_in_status_with_the_reason(
    server: ArtifactServer, root: Path, agent: InProcessAgent
) -> None:
    assert agent.provision(tailscale_payload(server, fail_join=True)).status_code == 202
    status = agent.wait_for(settled)
    assert status["state"] == "failed"
    assert status["error"]["step"] == "addon-start"
    assert "tailscale up failed" in status["error"]["message"]
    assert JOIN_REFUSED in status["error"]["message"]
    assert status["tailscaleRunning"] is False and status["tailscaleIp"] is None
    (health,) = [a for a in status["addons"] if a["name"] == "tailscale"]
    assert JOIN_REFUSED in health["message"]
    assert AUTH_KEY not in json.dumps(status)
