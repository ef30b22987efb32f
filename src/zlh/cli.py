"""The ``zlh`` command. One entry point, one subcommand per role.

Subcommand modules only declare their arguments (argparse, nothing heavy); the handler is
imported when it runs, so ``zlh agent`` inside a container never imports control-plane code.
Their shared helpers (``--data-dir``, handler targets) live in ``zlh.cliargs``: this entry point
imports the packages, never the other way round.
"""

from __future__ import annotations

import argparse
import importlib
import os
import sys
import traceback
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any, NoReturn

from zlh import __version__
from zlh.backends import BACKENDS
from zlh.cliargs import add_data_dir, handler
from zlh.errors import UsageError, ZlhError

__all__ = ["build_parser", "main"]

EXIT_USAGE = 2
EXIT_FAILURE = 1

Handler = Callable[[argparse.Namespace], int | None]


class _Parser(argparse.ArgumentParser):
    """argparse with a one-line error on bad usage (exit code 2), no usage dump."""

    def error(self, message: str) -> NoReturn:
        self.exit(EXIT_USAGE, f"{self.prog}: error: {message} (see '{self.prog} --help')\n")


def build_parser() -> argparse.ArgumentParser:
    from zlh.agent.cli import register as register_agent
    from zlh.api.cli import register as register_api
    from zlh.api.tailnet.cli import register as register_tailnet
    from zlh.artifacts.cli import register as register_artifacts
    from zlh.backends.cli import register as register_template
    from zlh.demo.cli import register as register_demo
    from zlh.dev.cli import register as register_dev
    from zlh.dev.cli import register_tokens

    parser = _Parser(prog="zlh", description="ZeroLagHub dev containers")
    parser.add_argument("--version", action="version", version=f"zlh {__version__}")
    commands = parser.add_subparsers(title="commands", metavar="COMMAND", parser_class=_Parser)
    register_artifacts(commands)
    register_agent(commands)
    register_api(commands)
    register_template(commands)
    register_tailnet(commands)
    _register_doctor(commands)
    register_demo(commands)
    register_dev(commands)
    register_tokens(commands)
    return parser


def _register_doctor(commands: Any) -> None:
    doctor = commands.add_parser(
        "doctor", help="check this host for what the platform needs and say how to fix it"
    )
    add_data_dir(doctor)
    doctor.add_argument("--store", type=Path, default=None, help="artifact store to verify")
    doctor.add_argument("--backend", choices=BACKENDS, default="lxc")
    doctor.add_argument("--listen", default="127.0.0.1:8780", metavar="HOST:PORT")
    handler(doctor, "zlh.doctor:cmd_doctor")


def _resolve(target: str) -> Handler:
    module_name, _, func_name = target.partition(":")
    func: Handler = getattr(importlib.import_module(module_name), func_name)
    return func


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    target: str | None = getattr(args, "_handler", None)
    if target is None:
        # A command group given without its subcommand (e.g. `zlh artifacts`).
        sub = getattr(args, "_group_parser", parser)
        sub.print_help(sys.stderr)
        return EXIT_USAGE
    try:
        return _resolve(target)(args) or 0
    except UsageError as exc:
        print(f"{parser.prog}: error: {exc.message}", file=sys.stderr)
        return EXIT_USAGE
    except ZlhError as exc:
        print(f"{parser.prog}: {exc.message}", file=sys.stderr)
        return EXIT_FAILURE
    except KeyboardInterrupt:
        return 130
    except OSError as exc:  # a path or port the command met that is not as it should be
        where = f": {exc.filename}" if exc.filename else ""
        print(f"{parser.prog}: {exc.strerror or exc}{where}", file=sys.stderr)
        _debug_traceback()
        return EXIT_FAILURE
    except Exception as exc:  # a bug: one line for the operator, the trace on request
        print(
            f"{parser.prog}: unexpected {type(exc).__name__}: {exc} (set ZLH_DEBUG=1 to see "
            "where, and report it)",
            file=sys.stderr,
        )
        _debug_traceback()
        return EXIT_FAILURE


def _debug_traceback() -> None:
    if os.environ.get("ZLH_DEBUG"):
        traceback.print_exc()


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
