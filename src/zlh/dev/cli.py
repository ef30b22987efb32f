"""Arguments of ``zlh dev …`` and ``zlh token …``; the handlers live in ``zlh.dev.commands``
and ``zlh.dev.tokens``."""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any

from zlh.cliargs import add_data_dir, handler

_COMMANDS = "zlh.dev.commands"
_TOKENS = "zlh.dev.tokens"
# The API's scopes, spelled out here so the parser stays import-light (tests/test_cli*.py);
# tests/test_cli.py checks them against zlh.api.apitokens.Scope.
SCOPES = ("containers:read", "containers:write", "files", "console", "admin", "metrics")
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


def _group(commands: Any, name: str, words: str) -> Any:
    """``zlh NAME``: a group of commands (alone, it prints its own help)."""
    group = commands.add_parser(name, help=words)
    group.set_defaults(_group_parser=group)
    return group.add_subparsers(title=f"{name} commands", metavar="COMMAND")


def _command(sub: Any, name: str, words: str, target: str) -> argparse.ArgumentParser:
    """One command that talks to a running platform, its handler ``target``."""
    command: argparse.ArgumentParser = sub.add_parser(name, help=words)
    _connection(command)
    handler(command, target)
    return command


def register(commands: Any) -> None:
    words = "list, stop, start, restart, rebuild and share dev containers of a running platform"
    sub = _group(commands, "dev", words)
    _command(sub, "list", "the containers you may see, with their states", f"{_COMMANDS}:cmd_list")
    for action, words in (
        ("stop", "stop it: its disk stays, its memory is freed"),
        ("start", "start a stopped container"),
        ("restart", "stop it, then start it"),
        ("rebuild", "a fresh system from the current template, keeping /home/dev"),
    ):
        command = _command(sub, action, words, f"{_COMMANDS}:cmd_action")
        command.add_argument("vmid", type=int, metavar="VMID")
        command.add_argument(
            "--no-wait", action="store_true", help="return once asked, not once done"
        )
        command.set_defaults(action=action)
    share = _command(
        sub,
        "share",
        "let another user use it (IDE, console, files) or view it",
        f"{_COMMANDS}:cmd_share",
    )
    share.add_argument("vmid", type=int, metavar="VMID")
    share.add_argument("guest", metavar="USER", help="the user to share it with")
    share.add_argument(
        "--role", choices=("use", "view"), default="use", help="use (the default) or view"
    )
    unshare = _command(
        sub,
        "unshare",
        "take a share back (their IDE and console close)",
        f"{_COMMANDS}:cmd_unshare",
    )
    unshare.add_argument("vmid", type=int, metavar="VMID")
    unshare.add_argument("guest", metavar="USER", help="the user it is shared with")


def register_tokens(commands: Any) -> None:
    sub = _group(commands, "token", "make, list and revoke your API tokens on a running platform")
    create = _command(
        sub, "create", "make a token; its secret is printed once", f"{_TOKENS}:cmd_create"
    )
    create.add_argument("name", metavar="NAME")
    create.add_argument(
        "--scope",
        dest="scopes",
        action="append",
        required=True,
        choices=SCOPES,
        metavar="SCOPE",
        help=f"what it may do, repeatable: {', '.join(SCOPES)}",
    )
    create.add_argument(
        "--expires-in-days",
        type=int,
        default=None,
        metavar="N",
        help="its life (default and most: the platform's api_token_max_days)",
    )
    listing = _command(sub, "list", "your tokens (never their secrets)", f"{_TOKENS}:cmd_list")
    listing.add_argument("--all", action="store_true", help="admins: every user's")
    revoke = _command(sub, "revoke", "revoke a token at once", f"{_TOKENS}:cmd_revoke")
    revoke.add_argument("token_id", type=int, metavar="ID")
