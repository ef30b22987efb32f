"""What every command's arguments module uses: ``--data-dir`` and the lazy handler target.

At the bottom of the import graph (it imports only ``zlh.errors``): each package's ``cli.py``
and ``commands.py`` take these from here, and only the entry point ``zlh.cli`` imports those
packages, so nothing imports the entry point back.
"""

from __future__ import annotations

import argparse
import os
from pathlib import Path

from zlh.errors import UsageError

__all__ = ["DEFAULT_DATA_DIR", "add_data_dir", "data_dir_from", "handler"]

DEFAULT_DATA_DIR = Path("/var/lib/zlh")


def data_dir_from(args: argparse.Namespace) -> Path:
    """``--data-dir``, else ``$ZLH_DATA_DIR``, else ``/var/lib/zlh``."""
    explicit: Path | None = getattr(args, "data_dir", None)
    env = os.environ.get("ZLH_DATA_DIR")
    path = explicit if explicit is not None else Path(env) if env else DEFAULT_DATA_DIR
    if path.exists() and not path.is_dir():
        raise UsageError(f"the data dir {path} is a file, not a directory: pick another --data-dir")
    return path


def add_data_dir(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--data-dir",
        type=Path,
        default=None,
        help=f"state directory (env ZLH_DATA_DIR, default {DEFAULT_DATA_DIR})",
    )


def handler(parser: argparse.ArgumentParser, target: str) -> None:
    """Point ``parser`` at ``module:function``, imported only when the command runs."""
    parser.set_defaults(_handler=target)
