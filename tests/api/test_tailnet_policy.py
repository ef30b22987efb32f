"""The Headscale policy: valid HuJSON, default deny, each customer to their own containers only.

The policy is parsed the way Headscale reads it (HuJSON: JSON plus comments and trailing
commas, nothing else), then its ACLs are evaluated over a small tailnet of customer devices and
tagged containers, the way Headscale's policy v2 resolves ``user@`` (untagged nodes of that
user) and ``tag:…`` (nodes with that tag).
"""

from __future__ import annotations

import json
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest

from api_kit import PINS
from zlh.api.db import Container, Database, User
from zlh.api.tailnet.policy import HEADSCALE_CONFIG_SNIPPET, PolicyUser, render_policy
from zlh.cli import main

USERS = [
    PolicyUser(id=1, username="alice", vmids=[101, 103]),
    PolicyUser(id=2, username="bob_b", vmids=[102]),
    PolicyUser(id=3, username="carol", vmids=[]),
]


def parse_hujson(text: str) -> Any:
    """Standardise HuJSON (drop comments outside strings, trailing commas) and parse strictly."""
    out: list[str] = []
    i, in_string = 0, False
    while i < len(text):
        ch = text[i]
        if in_string:
            out.append(ch)
            if ch == "\\":
                out.append(text[i + 1])
                i += 1
            elif ch == '"':
                in_string = False
        elif ch == '"':
            in_string = True
            out.append(ch)
        elif text.startswith("//", i):
            i = text.index("\n", i) if "\n" in text[i:] else len(text)
            continue
        elif text.startswith("/*", i):
            i = text.index("*/", i) + 2
            continue
        else:
            out.append(ch)
        i += 1
    standard = "".join(out)
    # A trailing comma is a comma followed only by whitespace before a closing bracket.
    cleaned: list[str] = []
    for index, ch in enumerate(standard):
        if ch == "," and standard[index + 1 :].lstrip()[:1] in {"]", "}"}:
            continue
        cleaned.append(ch)
    return json.loads("".join(cleaned))


def allowed(policy: dict[str, Any], src: dict[str, Any], dst: dict[str, Any], port: int) -> bool:
    """Does any ACL let ``src`` open ``port`` on ``dst``? Nodes: {"user": id-name, "tags": []}."""

    def matches(selector: str, node: dict[str, Any]) -> bool:
        if selector == "*":
            return True
        if selector.endswith("@"):
            return not node["tags"] and node["user"] + "@" == selector
        if selector.startswith("group:"):
            return any(matches(m, node) for m in policy["groups"].get(selector, []))
        return selector in node["tags"]

    for rule in policy["acls"]:
        assert rule["action"] == "accept"
        if not any(matches(s, src) for s in rule["src"]):
            continue
        for target in rule["dst"]:
            selector, _, ports = target.rpartition(":")
            port_ok = ports == "*" or str(port) in ports.split(",")
            if port_ok and matches(selector, dst):
                return True
    return False


def laptop(user: str) -> dict[str, Any]:
    return {"user": user, "tags": []}


def container(owner: str, vmid: int) -> dict[str, Any]:
    # Container nodes register with a tagged key of their owner's Headscale user.
    return {"user": owner, "tags": [f"tag:zlh-vm-{vmid}"]}


ALICE, BOB = "zlh-1-alice", "zlh-2-bob.b"


def test_policy_is_valid_hujson_with_comments_and_an_explicit_acl_list() -> None:
    text = render_policy(USERS, now=datetime(2030, 1, 1, tzinfo=UTC))
    assert text.startswith("//") and ",\n}" in text  # comments and trailing commas: HuJSON
    policy = parse_hujson(text)
    assert set(policy) == {"groups", "tagOwners", "acls", "autoApprovers", "ssh"}
    with pytest.raises(json.JSONDecodeError):
        json.loads(text)  # it really is HuJSON, not plain JSON


def test_each_customer_reaches_only_their_own_containers_on_the_chosen_ports() -> None:
    policy = parse_hujson(render_policy(USERS, ports=[22, 8080]))
    assert allowed(policy, laptop(ALICE), container(ALICE, 101), 22)
    assert allowed(policy, laptop(ALICE), container(ALICE, 103), 8080)
    assert not allowed(policy, laptop(ALICE), container(ALICE, 101), 6000)  # the IDE port
    assert not allowed(policy, laptop(ALICE), container(BOB, 102), 22)
    assert allowed(policy, laptop(BOB), container(BOB, 102), 22)
    assert not allowed(policy, laptop(BOB), container(ALICE, 101), 22)
    assert not allowed(policy, laptop("zlh-3-carol"), container(ALICE, 101), 22)
    assert not allowed(policy, laptop(ALICE), laptop(BOB), 22)


def test_containers_reach_neither_each_other_nor_any_customer() -> None:
    policy = parse_hujson(render_policy(USERS, ports=[22, 6000]))
    nodes = [container(ALICE, 101), container(ALICE, 103), container(BOB, 102)]
    for src in nodes:
        for dst in [*nodes, laptop(ALICE), laptop(BOB)]:
            for port in (22, 6000, 8080):
                assert not allowed(policy, src, dst, port), (src, dst, port)
    assert all(not s.startswith("tag:") for rule in policy["acls"] for s in rule["src"])
    assert "*" not in json.dumps(policy["acls"])


def test_no_route_or_exit_node_is_ever_auto_approved_and_only_operators_own_tags() -> None:
    text = render_policy(USERS, operators=["ops"])
    policy = parse_hujson(text)
    assert policy["autoApprovers"] == {"routes": {}, "exitNode": []}
    for forbidden in ("0.0.0.0/0", "::/0", "autogroup:internet"):
        assert forbidden not in text
    assert policy["groups"] == {"group:zlh-operators": ["ops@"]}
    assert policy["tagOwners"] == {
        f"tag:zlh-vm-{v}": ["group:zlh-operators"] for v in (101, 102, 103)
    }


def test_no_containers_means_deny_all_not_allow_all() -> None:
    policy = parse_hujson(render_policy([]))
    assert policy["acls"] == []  # a missing "acls" would make Headscale allow everything


def test_config_snippet_turns_magic_dns_off_and_never_overrides_local_dns() -> None:
    lines = {line.split("#")[0].strip() for line in HEADSCALE_CONFIG_SNIPPET.splitlines()}
    assert {"magic_dns: false", "override_local_dns: false"} <= lines
    header = {
        line.removeprefix("//").split("#")[0].strip()
        for line in render_policy([]).splitlines()
        if line.startswith("//")
    }
    assert {"magic_dns: false", "override_local_dns: false"} <= header


def zlh(capsys: pytest.CaptureFixture[str], *args: str) -> tuple[int, str, str]:
    """The real ``zlh`` entry point, in process (a subprocess per call costs seconds here)."""
    code = main(list(args))
    out, err = capsys.readouterr()
    return code, out, err


def test_cli_writes_the_policy_from_a_json_list(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    users = tmp_path / "users.json"
    users.write_text(json.dumps([u.model_dump() for u in USERS]))
    target = tmp_path / "policy.hujson"
    code, _out, err = zlh(
        capsys,
        "tailnet",
        "policy",
        "--input",
        str(users),
        "--output",
        str(target),
        "--port",
        "2222",
    )
    assert code == 0, err
    assert "2 customer rule(s)" in err
    policy = parse_hujson(target.read_text())
    assert allowed(policy, laptop(ALICE), container(ALICE, 101), 2222)
    assert not allowed(policy, laptop(ALICE), container(ALICE, 101), 22)


def test_cli_refuses_bad_input_and_writes_nothing(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    users = tmp_path / "users.json"
    target = tmp_path / "policy.hujson"
    users.write_text(
        json.dumps(
            [{"id": 1, "username": "a", "vmids": [101]}, {"id": 2, "username": "b", "vmids": [101]}]
        )
    )
    code, _, err = zlh(capsys, "tailnet", "policy", "--input", str(users), "--output", str(target))
    assert code == 2 and "vmid 101 is listed for a and b" in err
    users.write_text('[{"id": "x"}]')
    code, _, err = zlh(capsys, "tailnet", "policy", "--input", str(users), "--output", str(target))
    assert code == 2 and "entry 0.id" in err
    code, _out, err = zlh(capsys, "tailnet", "policy", "--input", str(users), "--port", "70000")
    assert code == 2
    assert not target.exists()


def test_cli_reads_users_and_tailscale_containers_from_the_api_database(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    db = Database(f"sqlite:///{tmp_path / 'zlh.db'}")
    db.migrate()
    with db.session() as session:
        alice = User(username="alice", password_hash="!")
        session.add(alice)
        session.flush()
        for vmid, addons in ((101, ["tailscale"]), (102, ["code-server"])):
            session.add(
                Container(
                    vmid=vmid,
                    owner_id=alice.id,
                    runtime="node",
                    version="22",
                    addons=addons,
                    pins=PINS,
                    state="ready",
                    agent_nonce="n",
                )
            )
    db.dispose()
    code, out, err = zlh(capsys, "tailnet", "policy", "--data-dir", str(tmp_path))
    assert code == 0, err
    policy = parse_hujson(out)
    assert allowed(policy, laptop(f"zlh-{alice.id}-alice"), container("x", 101), 22)
    assert "tag:zlh-vm-102" not in out  # no tailscale addon, no tag
