"""Builds zlh. Everything is declared in pyproject.toml except this: the public front's hot path
(``zlh.proxy``: parsing, header rewriting, the relay, the WebSocket splice) is compiled with
mypyc, and its one-pass head scanner (``zlh.proxy.scan``, byte loops) with Cython, which
together cut the front's CPU per proxied request by about a third (docs/performance.md).
The modules stay plain Python; ``ZLH_PURE_PYTHON=1`` builds without compiling (the agent's
wheel for container templates is built that way: the agent never imports the front).
"""

import os

from setuptools import setup

# Modules on the per-request path, for mypyc (scan is Cython's). Not compiled: settings
# (pydantic), responses (errors only), feed and serving (start-up and the route feed).
HOT_PATH = ("auth", "front", "headers", "listener", "pool", "relay", "routes", "websocket")


def ext_modules() -> list[object]:
    if os.environ.get("ZLH_PURE_PYTHON"):
        return []
    from Cython.Build import cythonize
    from mypyc.build import mypycify

    compiled = mypycify([f"src/zlh/proxy/{name}.py" for name in HOT_PATH], group_name="zlh_proxy")
    # scan.pxd gives the C types; the .py's annotations are for mypy, not for Cython.
    scanner = cythonize(
        "src/zlh/proxy/scan.py",
        compiler_directives={"language_level": 3, "annotation_typing": False},
        quiet=True,
    )
    return [*compiled, *scanner]


setup(ext_modules=ext_modules())
