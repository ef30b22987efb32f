"""Payload and status: the wire shape operators and the agent rely on, shared by API and agent."""

from __future__ import annotations

from typing import Any

import pytest
from pydantic import ValidationError

from zlh.schemas import AgentState, AgentStatus, ProvisionPayload, validation_problems

ART = {
    "url": "http://10.0.3.1/a/node-22.tar.gz",
    "sha256": "0" * 64,
    "size": 1,
    "format": "tar.gz",
    "stripComponents": 1,
    "bin": ["bin"],
}


def payload(**overrides: Any) -> dict[str, Any]:
    data: dict[str, Any] = {
        "vmid": 101,
        "runtime": {"name": "node", "version": "22", "artifact": ART},
        "addons": [
            {
                "name": "code-server",
                "version": "4.139.1",
                "artifact": ART,
                "options": {"basePath": "/dev/101/ide", "port": 6000},
            }
        ],
        "devUser": {"name": "dev", "home": "/home/dev", "workspace": "/home/dev/workspace"},
    }
    data.update(overrides)
    return data


def test_example_payload_parses() -> None:
    parsed = ProvisionPayload.model_validate(payload())
    cs = parsed.addon("code-server")
    assert cs is not None and cs.options.port == 6000
    assert parsed.dev_user.workspace == "/home/dev/workspace"
    assert parsed.model_dump(mode="json")["devUser"]["home"] == "/home/dev"


def test_tailscale_key_is_secret_in_repr_and_dumps_but_the_agents_copy() -> None:
    ts = {
        "name": "tailscale",
        "version": "1.80.0",
        "artifact": ART,
        "options": {"loginServer": "https://hs.example", "authKey": "hskey-secret-123"},
    }
    parsed = ProvisionPayload.model_validate(payload(addons=[ts]))
    assert "hskey-secret-123" not in repr(parsed)
    assert "hskey-secret-123" not in parsed.model_dump_json()
    assert "hskey-secret-123" not in str(parsed.model_dump(mode="json"))
    # Only the agent's copy carries it, and it reads back whole.
    clear = parsed.json_with_secrets()
    assert '"authKey":"hskey-secret-123"' in clear
    assert ProvisionPayload.model_validate_json(clear) == parsed


@pytest.mark.parametrize(
    ("overrides", "field"),
    [
        ({"vmid": 5}, "vmid"),
        ({"runtime": {"name": "ruby", "version": "3", "artifact": ART}}, "runtime.name"),
        ({"runtime": {"name": "node", "version": "../x", "artifact": ART}}, "runtime.version"),
        ({"devUser": {"name": "dev", "home": "/home/../etc", "workspace": "/w"}}, "devUser.home"),
        ({"addons": [{"name": "vim", "version": "1", "artifact": ART, "options": {}}]}, "addons.0"),
    ],
)
def test_invalid_payload_names_the_field(overrides: dict[str, Any], field: str) -> None:
    with pytest.raises(ValidationError) as info:
        ProvisionPayload.model_validate(payload(**overrides))
    fields = [p.field for p in validation_problems(info.value)]
    assert any(f.startswith(field) for f in fields), fields


def test_status_carries_the_spec_fields_verbatim() -> None:
    status = AgentStatus(workspace_root="/home/dev/workspace", agent_version="0.1.0")
    wire = status.model_dump(mode="json")
    for name in (
        "workspaceRoot",
        "runtimeInstallPath",
        "runtimeInstalled",
        "codeServerInstalled",
        "codeServerRunning",
    ):
        assert name in wire
    assert wire["state"] == "idle"
    assert AgentState.READY.is_terminal and not AgentState.PROVISIONING.is_terminal
