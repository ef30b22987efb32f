"""Addons of a dev container (code-server, tailscale) behind one interface (``base.Addon``).

Implementations are imported when a payload asks for them, not when the agent starts.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from zlh.schemas import CodeServerAddon, TailscaleAddon

if TYPE_CHECKING:
    from zlh.agent.addons.base import Addon, AddonContext

__all__ = ["make_addon"]


def make_addon(spec: CodeServerAddon | TailscaleAddon, ctx: AddonContext) -> Addon[Any]:
    if isinstance(spec, CodeServerAddon):
        from zlh.agent.addons.code_server import CodeServer

        return CodeServer(spec, ctx)
    from zlh.agent.addons.tailscale import Tailscale

    return Tailscale(spec, ctx)
