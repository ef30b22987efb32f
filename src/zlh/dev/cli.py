"""Arguments of ``zlh dev …``; the handlers live in ``zlh.dev.commands``."""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any

from zlh.cliargs import add_data_dir, handler

_COMMANDS = "zlh.dev.commands"
DEFAULT_URL = "http://127.0.0.1:8780"


def _connection(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--url", default=None, help=f"the platform (env ZLH_URL, default {DEFAULT_URL})"
    )
    parser.add_argument("--user", default=None, help="sign in as (env ZLH_USER, default admin)")
    parser.add_argument(
        "--password-file",
        type=Path,
        default=None,
        help="the password's file (else env ZLH_PASSWORD, else the data dir's admin-password "
        "for admin, else asked)",
    )
    add_data_dir(parser)


def register(commands: Any) -> None:
    dev = commands.add_parser(
        "dev",
        help="list, stop, start, restart, rebuild and share dev containers of a running platform",
    )
    dev.set_defaults(_group_parser=dev)
    sub = dev.add_subparsers(title="dev commands", metavar="COMMAND")
    listing = sub.add_parser("list", help="the containers you may see, with their states")
    _connection(listing)
    handler(listing, f"{_COMMANDS}:cmd_list")
    for action, words in (
        ("stop", "stop it: its disk stays, its memory is freed"),
        ("start", "start a stopped container"),
        ("restart", "stop it, then start it"),
        ("rebuild", "a fresh system from the current template, keeping /home/dev"),
    ):
        command = sub.add_parser(action, help=words)
        command.add_argument("vmid", type=int, metavar="VMID")
        command.add_argument(
            "--no-wait", action="store_true", help="return once asked, not once done"
        )
        _connection(command)
        command.set_defaults(action=action)
        handler(command, f"{_COMMANDS}:cmd_action")
    share = sub.add_parser("share", help="let another user use it (IDE, console, files) or view it")
    share.add_argument("vmid", type=int, metavar="VMID")
    share.add_argument("guest", metavar="USER", help="the user to share it with")
    share.add_argument(
        "--role", choices=("use", "view"), default="use", help="use (the default) or view"
    )
    _connection(share)
    handler(share, f"{_COMMANDS}:cmd_share")
    unshare = sub.add_parser("unshare", help="take a share back (their IDE and console close)")
    unshare.add_argument("vmid", type=int, metavar="VMID")
    unshare.add_argument("guest", metavar="USER", help="the user it is shared with")
    _connection(unshare)
    handler(unshare, f"{_COMMANDS}:cmd_unshare")
