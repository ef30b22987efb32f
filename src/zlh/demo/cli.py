"""Arguments of ``zlh demo``. The handler lives in ``zlh.demo.commands``."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from zlh.backends import LOCAL_BACKENDS
from zlh.cliargs import add_data_dir, handler

DEFAULT_LISTEN = "0.0.0.0:8780"


def register(commands: Any) -> None:
    demo = commands.add_parser(
        "demo",
        help="build what is missing, run the platform and a demo dev container, print the URLs",
    )
    add_data_dir(demo)
    demo.add_argument(
        "--backend",
        choices=LOCAL_BACKENDS,
        default="lxc",
        help="where the demo container runs (process: no isolation, no root needed)",
    )
    demo.add_argument(
        "--listen",
        default=DEFAULT_LISTEN,
        metavar="HOST:PORT",
        help=f"public address of the portal and IDE (default {DEFAULT_LISTEN}; with lxc the "
        "containers fetch artifacts here, so it must include the bridge address)",
    )
    demo.add_argument(
        "--allow-privileged",
        action="store_const",
        const=True,
        default=None,
        help="lxc on a host without user namespaces: privileged containers instead of a refusal "
        "(container root = host root)",
    )
    demo.add_argument(
        "--cache-dir",
        type=Path,
        default=None,
        help="download cache of the artifact builders (default <data dir>/cache)",
    )
    demo.add_argument(
        "--exit-when-ready",
        action="store_true",
        help="stop the platform and exit 0 once the IDE answers (for CI and timing)",
    )
    demo.add_argument(
        "--timeout",
        type=float,
        default=900.0,
        metavar="SECONDS",
        help="how long the demo container may take to become ready (default 900)",
    )
    handler(demo, "zlh.demo.commands:cmd_demo")
