"""Settings an older ``api.toml`` may still carry: accepted with a warning that says what
replaced them, so an upgrade never stops a platform over a key that no longer does anything."""

from __future__ import annotations

import logging
from collections.abc import Mapping
from typing import Any

__all__ = ["drop_retired"]

log = logging.getLogger("zlh.settings")


def drop_retired(values: Any, retired: Mapping[str, str], *, table: str = "") -> Any:
    """``values`` without the ``retired`` keys, each warned about once with its replacement
    (``retired[key]``); anything but a dict passes untouched (pydantic reports it)."""
    if not isinstance(values, dict):
        return values
    kept = dict(values)
    for key, instead in retired.items():
        if key in kept:
            del kept[key]
            name = f"[{table}] {key}" if table else key
            log.warning("setting %s is no longer used and is ignored: %s", name, instead)
    return kept
