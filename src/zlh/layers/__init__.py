"""Shared, verified, read-only layers of installed artifacts on the host (see ``store``)."""

from zlh.layers.store import LayerInfo, LayerStore

__all__ = ["LayerInfo", "LayerStore"]
