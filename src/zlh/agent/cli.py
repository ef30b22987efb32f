"""Arguments of ``zlh agent``. The handler lives in ``zlh.agent.main``."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

from zlh.cliargs import handler


def register(commands: Any) -> None:
    agent = commands.add_parser(
        "agent", help="run the in-container agent (provisioning, /status, files, console)"
    )
    agent.add_argument("--listen", required=True, metavar="HOST:PORT", help="address to listen on")
    agent.add_argument(
        "--token-file", required=True, type=Path, help="file holding the per-container secret"
    )
    agent.add_argument(
        "--root",
        type=Path,
        default=Path("/"),
        help="where the container paths (/opt/zlh, /home/dev) live; / in a real container",
    )
    agent.add_argument(
        "--bind-host",
        default=os.environ.get("ZLH_AGENT_BIND_HOST", "0.0.0.0"),
        help="address addons (code-server) listen on (env ZLH_AGENT_BIND_HOST, default 0.0.0.0;"
        " 127.0.0.1 under the process backend)",
    )
    agent.add_argument(
        "--artifact-base-url",
        default=None,
        metavar="URL",
        help="artifact server that relative artifact urls in payloads are joined onto",
    )
    handler(agent, "zlh.agent.main:cmd_agent")
