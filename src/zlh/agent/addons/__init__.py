"""Addons of a dev container (code-server, tailscale) behind one interface (``base.Addon``).

Which class runs which addon is the registry's (``zlh.schemas.ADDONS``); implementations are
imported when a payload asks for them, not when the agent starts.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

from zlh.schemas import AddonSpec, addon_type

if TYPE_CHECKING:
    from zlh.agent.addons.base import Addon, AddonContext

__all__ = ["addon_class", "make_addon"]


def addon_class(name: str) -> type[Addon[Any]]:
    """The agent class the registry names for addon ``name``; UnknownAddon if it has none."""
    module, _, cls = addon_type(name).agent_class.partition(":")
    found: type[Addon[Any]] = getattr(importlib.import_module(f"{__name__}.{module}"), cls)
    return found


def make_addon(spec: AddonSpec, ctx: AddonContext) -> Addon[Any]:
    return addon_class(spec.name)(spec, ctx)
