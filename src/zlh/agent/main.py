"""``zlh agent``'s handler: loads the agent with aio-libs' pure-Python code, then serves.

aiohttp and the libraries under it (multidict, yarl, frozenlist, propcache) ship C extensions
that cost the idle agent 1.9 MB of resident memory, and buy it nothing it needs: it answers a
few requests a second (status polls, the file browser, a console), and a 256 MB upload or
download runs as fast through the pure-Python parser (docs/performance.md). Each library
reads its documented switch once, when it is imported. They are set for that import only, so
what the agent starts (the dev user's shells, add-ons, ``useradd``) sees the environment the
agent was given; a switch already set, even empty (to keep the C code), is left as it is.
"""

from __future__ import annotations

import argparse
import os
from collections.abc import Iterator
from contextlib import contextmanager

__all__ = ["PURE_PYTHON_SWITCHES", "cmd_agent", "pure_python_aio_libs"]

PURE_PYTHON_SWITCHES = (
    "AIOHTTP_NO_EXTENSIONS",
    "MULTIDICT_NO_EXTENSIONS",
    "YARL_NO_EXTENSIONS",
    "FROZENLIST_NO_EXTENSIONS",
    "PROPCACHE_NO_EXTENSIONS",
)


@contextmanager
def pure_python_aio_libs() -> Iterator[None]:
    """Within: aio-libs imported for the first time use their pure-Python implementations."""
    added = [name for name in PURE_PYTHON_SWITCHES if name not in os.environ]
    os.environ.update(dict.fromkeys(added, "1"))
    try:
        yield
    finally:
        for name in added:
            os.environ.pop(name, None)


def cmd_agent(args: argparse.Namespace) -> int:
    with pure_python_aio_libs():
        from zlh.agent.app import serve
    return serve(args)
