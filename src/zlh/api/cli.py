"""Arguments of ``zlh up``, ``zlh api`` and ``zlh user …``. Handlers live in
``zlh.api.commands`` and load only when a command runs."""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any

from zlh.backends import BACKENDS
from zlh.cliargs import add_data_dir, handler

_COMMANDS = "zlh.api.commands"


def _server_options(parser: argparse.ArgumentParser) -> None:
    add_data_dir(parser)
    parser.add_argument(
        "--backend",
        choices=BACKENDS,
        default=None,
        help="container backend (env ZLH_BACKEND, default lxc)",
    )
    parser.add_argument(
        "--listen",
        default=None,
        metavar="HOST:PORT",
        help="public address of the API and portal (env ZLH_LISTEN, default 127.0.0.1:8780)",
    )
    parser.add_argument(
        "--unix-socket",
        type=Path,
        default=None,
        metavar="PATH",
        help="also serve on this unix socket, for the public front (env ZLH_UNIX_SOCKET)",
    )
    parser.add_argument(
        "--ide-origin",
        default=None,
        metavar="URL",
        help="origin the IDEs are served on, never the portal's: https://ide.example.com, "
        "https://*.ide.example.com or http://HOST:PORT (a second port, listened on too); "
        "env ZLH_IDE_ORIGIN, default the listen port + 1",
    )
    parser.add_argument(
        "--allow-privileged",
        action="store_const",
        const=True,
        default=None,
        help="lxc: on a host without user namespaces, run privileged containers instead of "
        "refusing (container root = host root; env ZLH_ALLOW_PRIVILEGED)",
    )
    parser.add_argument(
        "--replica",
        default=None,
        metavar="NAME",
        help="run as one of several replicas sharing the PostgreSQL database_url, under this "
        "name (env ZLH_REPLICA, default <hostname>:<listen port>)",
    )
    parser.add_argument(
        "--workers",
        type=int,
        default=None,
        metavar="N",
        help="front processes sharing the public port (env ZLH_FRONT_WORKERS, default the "
        "number of cores, at most 8; 1: the front in the API's process only)",
    )
    parser.add_argument(
        "--config",
        type=Path,
        default=None,
        help="TOML settings file (env ZLH_CONFIG, default <data dir>/api.toml if present)",
    )


def register(commands: Any) -> None:
    up = commands.add_parser(
        "up", help="run the platform: API, portal, built-in artifact store and status poller"
    )
    _server_options(up)
    up.add_argument(
        "--store",
        type=Path,
        default=None,
        help="built-in artifact store served at /artifacts/ (default <data dir>/artifacts)",
    )
    handler(up, f"{_COMMANDS}:cmd_up")

    api = commands.add_parser(
        "api", help="run the API and poller only, with an external artifact server"
    )
    _server_options(api)
    api.add_argument(
        "--artifact-server",
        default=None,
        metavar="URL",
        help="base URL of the artifact server (env ZLH_ARTIFACT_SERVER_URL)",
    )
    handler(api, f"{_COMMANDS}:cmd_api")

    group = commands.add_parser("user", help="manage portal accounts")
    group.set_defaults(_group_parser=group)
    sub = group.add_subparsers(title="user commands", metavar="COMMAND")

    add = sub.add_parser("add", help="create a user (password from a prompt or stdin)")
    add.add_argument("name")
    add.add_argument("--admin", action="store_true", help="may see every container and the audit")
    add.add_argument(
        "--password-stdin", action="store_true", help="read the password from stdin's first line"
    )
    add_data_dir(add)
    handler(add, f"{_COMMANDS}:cmd_user_add")

    lst = sub.add_parser("list", help="list users")
    add_data_dir(lst)
    handler(lst, f"{_COMMANDS}:cmd_user_list")

    passwd = sub.add_parser("passwd", help="set a user's password and end all its sessions")
    passwd.add_argument("name")
    passwd.add_argument("--password-stdin", action="store_true")
    add_data_dir(passwd)
    handler(passwd, f"{_COMMANDS}:cmd_user_passwd")

    admin = sub.add_parser(
        "admin", help="grant (or with --remove take away) admin rights; ends the user's sessions"
    )
    admin.add_argument("name")
    admin.add_argument("--remove", action="store_true", help="take admin rights away")
    add_data_dir(admin)
    handler(admin, f"{_COMMANDS}:cmd_user_admin")

    idle = sub.add_parser(
        "idle",
        help="how long the user's containers may sit idle before they are stopped "
        "(overrides idle_stop_after for this user)",
    )
    idle.add_argument("name")
    idle.add_argument(
        "seconds", metavar="SECONDS|default", help="seconds (0: never), or default: the setting"
    )
    add_data_dir(idle)
    handler(idle, f"{_COMMANDS}:cmd_user_idle")

    _register_layers(commands)
    _register_db(commands)

    disable = sub.add_parser("disable", help="disable a user and end its sessions at once")
    disable.add_argument("name")
    add_data_dir(disable)
    handler(disable, f"{_COMMANDS}:cmd_user_disable")


def _register_layers(commands: Any) -> None:
    group = commands.add_parser(
        "layers", help="the host's shared, read-only layers of runtimes and add-ons"
    )
    group.set_defaults(_group_parser=group)
    sub = group.add_subparsers(title="layers commands", metavar="COMMAND")
    for name, help_text in (
        ("list", "each layer: size, what it holds, whether it is intact, who uses it"),
        ("verify", "read every byte of every layer; set aside the ones that changed"),
        ("gc", "remove the layers (and baked CT templates) no container and no catalog entry uses"),
    ):
        parser = sub.add_parser(name, help=help_text)
        add_data_dir(parser)
        parser.add_argument(
            "--backend", choices=BACKENDS, default=None, help="as `zlh up` (env ZLH_BACKEND)"
        )
        parser.add_argument(
            "--store", type=Path, default=None, help="as `zlh up` (default <data dir>/artifacts)"
        )
        parser.add_argument("--config", type=Path, default=None, help="as `zlh up`")
        if name == "gc":
            parser.add_argument(
                "--dry-run", action="store_true", help="say what would go, remove nothing"
            )
        handler(parser, f"zlh.api.layer_commands:cmd_layers_{name}")


def _register_db(commands: Any) -> None:
    group = commands.add_parser("db", help="the control plane's database")
    group.set_defaults(_group_parser=group)
    sub = group.add_subparsers(title="db commands", metavar="COMMAND")
    copy = sub.add_parser(
        "copy",
        help="copy every table of the node's database (stopped) into an empty PostgreSQL "
        "database, in one transaction, counts verified",
    )
    add_data_dir(copy)
    copy.add_argument("--config", type=Path, default=None, help="as `zlh up`")
    copy.add_argument(
        "--to",
        required=True,
        metavar="URL",
        help="the empty target database: postgresql+psycopg://USER@HOST/DB (migrated here)",
    )
    copy.add_argument(
        "--dry-run", action="store_true", help="copy and verify, then roll back: nothing written"
    )
    handler(copy, "zlh.api.db_commands:cmd_db_copy")
