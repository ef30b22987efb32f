"""Arguments of ``zlh template …``. Handlers live in ``zlh.backends.commands``."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from zlh.cliargs import add_data_dir, handler

_COMMANDS = "zlh.backends.commands"


def register(commands: Any) -> None:
    group = commands.add_parser(
        "template", help="the LXC container template (also a Proxmox CT template)"
    )
    group.set_defaults(_group_parser=group)
    sub = group.add_subparsers(title="template commands", metavar="COMMAND")

    build = sub.add_parser(
        "build", help="debootstrap Debian bookworm with the agent; a no-op when up to date"
    )
    build.add_argument("--force", action="store_true", help="rebuild even when up to date")
    build.add_argument(
        "--allow-privileged",
        action="store_true",
        help="on a host that cannot run unprivileged containers, build a privileged template "
        "(container root is host root: not for untrusted users)",
    )
    add_data_dir(build)
    handler(build, f"{_COMMANDS}:cmd_template_build")

    export = sub.add_parser("export", help="write the template as a Proxmox CT template tarball")
    export.add_argument(
        "--output",
        type=Path,
        default=None,
        help="tarball path ending in .tar.zst/.tar.gz/.tar.xz "
        "(default <data dir>/debian-12-zlh_<version>_amd64.tar.zst)",
    )
    add_data_dir(export)
    handler(export, f"{_COMMANDS}:cmd_template_export")
