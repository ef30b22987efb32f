"""Which shared layers a container's pins need, and which ones are in use (``zlh.layers``).

A layer is in use while a container's configuration mounts it or a catalog entry pins its
artifact (the next container will want it); everything else is garbage for ``gc``.
"""

from __future__ import annotations

import asyncio
import logging

from zlh.api.catalog import CatalogSource
from zlh.api.db import Pins
from zlh.backends import Backend, LayerMount
from zlh.errors import ZlhError
from zlh.install import runtime_dir, service_dir
from zlh.layers import LayerStore
from zlh.schemas import Artifact, ArtifactKind, Catalog, addon_type

__all__ = ["collect_garbage", "in_use", "layer_users", "mounts_for"]

log = logging.getLogger(__name__)


async def mounts_for(
    store: LayerStore, runtime: str, version: str, pins: Pins, *, base_url: str
) -> tuple[LayerMount, ...]:
    """The layers of the runtime and every add-on ``pins`` name, built where missing (in
    parallel), as the mounts that show them where the agent installs them."""
    wanted: list[tuple[ArtifactKind, str, str, Artifact, str]] = [
        (ArtifactKind.RUNTIME, runtime, version, pins.runtime, runtime_dir(runtime, version))
    ]
    for name, pin in pins.addons.items():
        target = service_dir(addon_type(name).service_dir)
        wanted.append((ArtifactKind.ADDON, name, pin.version, pin.artifact, target))
    paths = await asyncio.gather(
        *(
            store.ensure(
                kind,
                name,
                ver,
                artifact.model_copy(update={"url": artifact.resolved_url(base_url)}),
            )
            for kind, name, ver, artifact, _ in wanted
        )
    )
    return tuple(
        LayerMount(source=path, target=w[-1]) for path, w in zip(paths, wanted, strict=True)
    )


def layer_users(backend: Backend, catalog: Catalog) -> dict[str, list[str]]:
    """Who uses each layer, by sha256: the vmids whose configuration mounts it, then
    ``catalog <name> <version>`` for each catalog entry that pins its artifact."""
    users: dict[str, list[str]] = {}
    for vmid, paths in sorted(backend.mounted_layers().items()):
        for path in paths:
            users.setdefault(path.name, []).append(str(vmid))
    for section in (catalog.runtimes, catalog.addons):
        for name, entry in section.items():
            for version in entry.versions:
                label = f"catalog {name} {version.version}"
                users.setdefault(version.artifact.sha256, []).append(label)
    return users


def in_use(backend: Backend, catalog: Catalog) -> set[str]:
    """The sha256 of every layer a container mounts or the catalog pins."""
    return set(layer_users(backend, catalog))


async def collect_garbage(store: LayerStore, backend: Backend, catalog: CatalogSource) -> None:
    """Remove the layers nothing uses any more (after a container is deleted)."""
    try:
        used = await asyncio.to_thread(in_use, backend, await catalog.get())
        removed = await asyncio.to_thread(store.gc, used)
        templates = await asyncio.to_thread(backend.collect_baked_templates, used)
    except (ZlhError, OSError) as exc:
        log.warning("shared layers were not collected: %s", exc)
        return
    for name in removed:
        log.info("removed layer %s: no container and no catalog entry uses it", name)
    for name in templates:
        log.info("removed CT template %s: no container and no catalog entry uses its layers", name)
