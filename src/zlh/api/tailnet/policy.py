"""``zlh tailnet policy``: the Headscale policy that keeps every customer to their own containers.

Headscale with no policy lets every node reach every other, and code-server listens with
``--auth none``: without this policy any tailnet member could open any customer's IDE. The
policy is default-deny (Headscale allows only what ``acls`` lists, and an *empty* ``acls``
denies everything; a missing one would allow everything, so it is always written):

- each customer's own (untagged) devices, ``zlh-<id>-<name>@``, may reach their own containers'
  tags ``tag:zlh-vm-<vmid>`` on the chosen ports (SSH 22 by default);
- nothing else is listed, so containers reach neither each other nor any customer device
  (tagged nodes are not part of a user's devices in Headscale's policy v2, 0.26+);
- each tag is owned by ``group:zlh-operators`` only, so no customer can tag a device as a
  container; no ``autoApprovers``: no subnet route or exit node is ever approved by itself.

Users and containers come from the API's database (the data dir or config, like ``zlh api``),
or from ``--input FILE``, a JSON list ``[{"id": 7, "username": "alice", "vmids": [101]}]`` for
a Headscale host without database access. Run it again after containers come and go, then
reload Headscale (SIGHUP): Headscale reads the policy file only then.
"""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from pydantic import BaseModel, ConfigDict, Field, ValidationError

from zlh.api.tailnet.service import container_tag, headscale_user_name
from zlh.errors import UsageError
from zlh.schemas import tailnet_addon

__all__ = [
    "HEADSCALE_CONFIG_SNIPPET",
    "OPERATORS_GROUP",
    "PolicyUser",
    "build_policy",
    "cmd_policy",
    "render_policy",
]

OPERATORS_GROUP = "group:zlh-operators"

HEADSCALE_CONFIG_SNIPPET = """\
dns:
  magic_dns: false          # no MagicDNS
  override_local_dns: false # never take over a machine's resolvers (0.26+ defaults to true)
  nameservers:
    global: []
policy:
  mode: file
  path: /etc/headscale/zlh-policy.hujson
"""


class PolicyUser(BaseModel):
    """One platform user and the vmids of their containers that have the tailscale addon."""

    model_config = ConfigDict(extra="forbid")

    id: int = Field(ge=1)
    username: str = Field(min_length=1, max_length=64)
    vmids: list[int] = Field(default_factory=list)


@dataclass(frozen=True)
class _Policy:
    body: dict[str, Any]
    owners: dict[str, str] = field(default_factory=dict)  # acl source -> platform username


def build_policy(
    users: Iterable[PolicyUser], *, ports: Sequence[int] = (22,), operators: Sequence[str] = ()
) -> dict[str, Any]:
    """The policy as data (what :func:`render_policy` writes as HuJSON)."""
    return _build(users, ports=ports, operators=operators).body


def _build(
    users: Iterable[PolicyUser], *, ports: Sequence[int], operators: Sequence[str]
) -> _Policy:
    if not ports or any(not 1 <= p <= 65535 for p in ports):
        raise UsageError(f"ports must be 1-65535, got {list(ports)}")
    port_list = ",".join(str(p) for p in sorted(set(ports)))
    seen_vmids: dict[int, str] = {}
    acls: list[dict[str, Any]] = []
    tag_owners: dict[str, list[str]] = {}
    owners: dict[str, str] = {}
    for user in sorted(users, key=lambda u: u.id):
        for vmid in user.vmids:
            if vmid in seen_vmids:
                raise UsageError(
                    f"vmid {vmid} is listed for {seen_vmids[vmid]} and {user.username}"
                )
            seen_vmids[vmid] = user.username
        if not user.vmids:
            continue
        tags = [container_tag(v) for v in sorted(user.vmids)]
        for tag in tags:
            tag_owners[tag] = [OPERATORS_GROUP]
        source = headscale_user_name(user.id, user.username) + "@"
        owners[source] = user.username
        acls.append(
            {"action": "accept", "src": [source], "dst": [f"{tag}:{port_list}" for tag in tags]}
        )
    body: dict[str, Any] = {
        "groups": {OPERATORS_GROUP: [_headscale_login(o) for o in operators]},
        "tagOwners": tag_owners,
        "acls": acls,
        "autoApprovers": {"routes": {}, "exitNode": []},
        "ssh": [],
    }
    return _Policy(body, owners)


def _headscale_login(name: str) -> str:
    return name if "@" in name else name + "@"


_COMMENTS = {
    "groups": "Operators own the container tags; customers own none.",
    "tagOwners": "One tag per container, given by its pre-auth key; only operators may set it.",
    "acls": "Default deny: only these rules allow traffic. Each customer's own devices reach "
    "their own containers, nothing else. No rule has a container as its source.",
    "autoApprovers": "Nothing is approved by itself: no subnet routes, no exit nodes.",
    "ssh": "No Tailscale SSH rules: SSH goes to the container's own sshd on the ports above.",
}


def render_policy(
    users: Iterable[PolicyUser],
    *,
    ports: Sequence[int] = (22,),
    operators: Sequence[str] = (),
    now: datetime | None = None,
) -> str:
    """HuJSON: JSON with ``//`` comments and trailing commas, as Headscale reads it."""
    policy = _build(users, ports=ports, operators=operators)
    stamp = (now or datetime.now(UTC)).strftime("%Y-%m-%dT%H:%M:%SZ")
    lines = [
        "// Headscale policy for ZeroLagHub dev containers, written by `zlh tailnet policy`",
        f"// at {stamp}. Regenerate it when containers come and go, then reload Headscale.",
        "//",
        "// Headscale config.yaml must also have:",
        *(f"//   {line}" for line in HEADSCALE_CONFIG_SNIPPET.splitlines()),
        "{",
    ]
    for key, value in policy.body.items():
        lines.append(f"  // {_COMMENTS[key]}")
        if key == "acls" and value:
            lines.append('  "acls": [')
            for rule in value:
                lines.append(f"    // {policy.owners[rule['src'][0]]}")
                lines.append(f"    {json.dumps(rule)},")
            lines.append("  ],")
            continue
        rendered = json.dumps(value, indent=2).replace("\n", "\n  ")
        lines.append(f"  {json.dumps(key)}: {rendered},")
    lines.append("}")
    return "\n".join(lines) + "\n"


def users_from_json(path: Path) -> list[PolicyUser]:
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError) as exc:
        raise UsageError(f"cannot read users from {path}: {exc}") from exc
    if not isinstance(data, list):
        raise UsageError(f"{path} must hold a JSON list of {{id, username, vmids}}")
    users = []
    for index, item in enumerate(data):
        try:
            users.append(PolicyUser.model_validate(item))
        except ValidationError as exc:
            problem = exc.errors()[0]
            where = ".".join(str(p) for p in problem["loc"]) or "(entry)"
            raise UsageError(f"{path}: entry {index}.{where}: {problem['msg']}") from None
    return users


def users_from_database(args: argparse.Namespace) -> list[PolicyUser]:
    """Every user with their containers that asked for the tailscale addon."""
    from sqlalchemy import select

    from zlh.api.commands import database_from
    from zlh.api.db import Container, User

    db = database_from(args)  # a data dir never set up has no users yet: an empty policy
    try:
        with db.session() as session:
            users = {u.id: u.username for u in session.scalars(select(User))}
            vmids: dict[int, list[int]] = {}
            for container in session.scalars(select(Container)).unique():
                if tailnet_addon(container.addons) is not None:
                    vmids.setdefault(container.owner_id, []).append(container.vmid)
    finally:
        db.dispose()
    return [
        PolicyUser(id=uid, username=name, vmids=vmids.get(uid, [])) for uid, name in users.items()
    ]


def cmd_policy(args: argparse.Namespace) -> int:
    users = users_from_json(args.input) if args.input else users_from_database(args)
    text = render_policy(users, ports=args.port or [22], operators=args.operator)
    if args.output is None:
        sys.stdout.write(text)
        return 0
    tmp = args.output.with_name(f".{args.output.name}.tmp")
    tmp.write_text(text, encoding="utf-8")
    tmp.replace(args.output)
    rules = sum(1 for u in users if u.vmids)
    print(
        f"wrote {args.output}: {rules} customer rule(s); reload Headscale to apply", file=sys.stderr
    )
    return 0
