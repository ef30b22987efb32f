"""``zlh layers list|verify|gc``: the host's shared layers, their sizes and users.

Users are read where the platform reads them (:mod:`zlh.api.layers`): the containers'
configurations on the backend and the catalog of the settings' store or artifact server.
"""

from __future__ import annotations

import argparse
import asyncio

from zlh.api.catalog import HttpCatalog, StoreCatalog
from zlh.api.commands import settings_from
from zlh.api.layers import in_use, layer_users
from zlh.backends import Backend, create_backend
from zlh.errors import UsageError, ZlhError
from zlh.layers import LayerStore
from zlh.schemas import Catalog

__all__ = ["cmd_layers_gc", "cmd_layers_list", "cmd_layers_verify"]


def _context(args: argparse.Namespace) -> tuple[LayerStore, Backend, Catalog]:
    settings = settings_from(args, backend=args.backend, store_dir=args.store)
    if not settings.data_dir.is_dir():
        raise UsageError(
            f"no data dir at {settings.data_dir}: pass the --data-dir `zlh up` runs with"
        )
    backend = create_backend(settings.backend, data_dir=settings.data_dir)
    root = backend.layers_dir()
    if root is None:
        raise UsageError(
            f"the {settings.backend} backend mounts no shared layers: every container installs "
            "its own runtime (see docs/operations.md, shared layers)"
        )
    source = (
        HttpCatalog(settings.artifact_server_url, cache_s=0)
        if settings.artifact_server_url
        else StoreCatalog(settings.store_path)
    )
    try:
        catalog = asyncio.run(source.get())
    except ZlhError as exc:
        raise ZlhError(f"cannot read the catalog, so not which layers it pins: {exc}") from exc
    return LayerStore(root), backend, catalog


def cmd_layers_list(args: argparse.Namespace) -> int:
    store, backend, catalog = _context(args)
    users = layer_users(backend, catalog)
    infos = store.infos()
    if not infos:
        print(f"no layers under {store.root}")
        return 0
    print("SHA256        SIZE      LAYER                      STATE  USED BY")
    total = 0
    for info in infos:
        total += info.size
        state = "ok" if info.problem is None else "BAD"
        used = ", ".join(users.get(info.sha256, [])) or "nothing (gc removes it)"
        print(
            f"{info.sha256[:12]}  {info.size / 2**20:7.1f}M  {info.label:<25}  {state:<5}  {used}"
        )
        if info.problem is not None:
            print(f"              {info.problem}; the next container that needs it rebuilds it")
    print(f"{len(infos)} layer(s), {total / 2**20:.1f} MB under {store.root}")
    return 0


def cmd_layers_verify(args: argparse.Namespace) -> int:
    """Every byte of every layer against its manifest; a layer that fails is set aside, and
    the next container that needs it gets it built again."""
    store, _backend, _catalog = _context(args)
    bad = 0
    for sha in store.shas():
        problem = store.check(sha, full=True)
        if problem is None:
            print(f"{sha[:12]}  ok")
            continue
        bad += 1
        store.set_aside(sha)
        print(f"{sha[:12]}  {problem}: set aside, the next container that needs it rebuilds it")
    return 1 if bad else 0


def cmd_layers_gc(args: argparse.Namespace) -> int:
    store, backend, catalog = _context(args)
    used = in_use(backend, catalog)
    removed = store.gc(used, dry_run=args.dry_run)
    verb = "would remove" if args.dry_run else "removed"
    for name in removed:
        print(f"{verb} {name}")
    for name in backend.collect_baked_templates(used, dry_run=args.dry_run):
        print(f"{verb} CT template {name}")
    print(f"{verb} {len(removed)} layer(s); {len(store.shas())} left under {store.root}")
    return 0
