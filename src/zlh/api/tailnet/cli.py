"""Arguments of ``zlh tailnet …``. Handlers live in ``zlh.api.tailnet.policy``."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from zlh.cliargs import add_data_dir, handler


def register(commands: Any) -> None:
    group = commands.add_parser("tailnet", help="the Headscale tailnet for advanced users")
    group.set_defaults(_group_parser=group)
    sub = group.add_subparsers(title="tailnet commands", metavar="COMMAND")

    policy = sub.add_parser(
        "policy",
        help="print the Headscale policy (HuJSON): each customer reaches only their containers",
    )
    policy.add_argument("--output", type=Path, help="write the policy to FILE instead of stdout")
    policy.add_argument(
        "--port",
        type=int,
        action="append",
        metavar="N",
        help="port customers may reach on their containers (repeatable; default 22)",
    )
    policy.add_argument(
        "--operator",
        action="append",
        default=[],
        metavar="USER",
        help="Headscale user allowed to set container tags (repeatable; default none)",
    )
    policy.add_argument(
        "--input",
        type=Path,
        help='users and vmids as JSON [{"id": 7, "username": "alice", "vmids": [101]}] '
        "instead of the API database",
    )
    policy.add_argument("--config", type=Path, help="the API's TOML settings (database URL)")
    add_data_dir(policy)
    handler(policy, "zlh.api.tailnet.policy:cmd_policy")
