"""Handlers of ``zlh template build`` and ``zlh template export``."""

from __future__ import annotations

import argparse
import logging

from zlh.backends.lxc.idmap import container_idmap
from zlh.backends.lxc.template import build_template, export_template
from zlh.cliargs import data_dir_from

__all__ = ["cmd_template_build", "cmd_template_export"]


def cmd_template_build(args: argparse.Namespace) -> int:
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    idmap = container_idmap(allow_privileged=args.allow_privileged)
    template, built = build_template(data_dir_from(args), idmap=idmap, force=args.force)
    print(f"{'built' if built else 'up to date'}: {template.name} ({template.root})")
    return 0


def cmd_template_export(args: argparse.Namespace) -> int:
    path = export_template(data_dir_from(args), args.output)
    print(path)
    return 0
