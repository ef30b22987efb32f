"""Builds zlh. Everything is declared in pyproject.toml except this: with ``ZLH_COMPILE_FRONT=1``
(the platform host: ``scripts/bootstrap.sh``) the public front's hot path (``zlh.proxy``:
parsing, header rewriting, the relay, the WebSocket splice) is compiled with mypyc, and its
one-pass head scanner (``zlh.proxy.scan``, byte loops) with Cython, which together cut the
front's CPU per proxied request by about a third (docs/performance.md). Without it (a plain
``pip install .``, the agent's wheel for container templates) nothing is compiled and no C
compiler is needed: the modules are plain Python and run as they are. The build backend
(``build_backend/zlh_build.py``) reads the flag too and asks for Cython and mypy only then.

A built package also carries the portal's front-end files (xterm.js, Swagger UI) that
``src/zlh/portal/vendor.json`` lists, copied from the portal's npm packages (``npm ci`` first
when they are not installed), so an install from the wheel needs no npm.
"""

import json
import shutil
import subprocess
import sys
from pathlib import Path

from setuptools import setup
from setuptools.command.build_py import build_py

ROOT = Path(__file__).resolve().parent
PORTAL = ROOT / "src" / "zlh" / "portal"

# The in-tree build backend (pyproject.toml: backend-path) reads the same flag; it is on the
# path when the backend runs this file, but not for `python setup.py build_ext --inplace`.
sys.path.insert(0, str(ROOT / "build_backend"))
from zlh_build import FLAG, compile_front, require_compiler  # noqa: E402

# Modules on the per-request path, for mypyc (scan is Cython's). Not compiled: settings
# (pydantic), responses (errors only), feed and serving (start-up and the route feed).
HOT_PATH = (
    "auth",
    "front",
    "headers",
    "listener",
    "metrics",
    "pool",
    "relay",
    "routes",
    "websocket",
)


def ext_modules() -> list[object]:
    if not compile_front():
        return []
    require_compiler()
    try:
        from Cython.Build import cythonize
        from mypyc.build import mypycify
    except ImportError as missing:
        raise SystemExit(
            f"zlh: {FLAG}=1 needs Cython and mypy in the build environment ({missing.name} is "
            "not there): pip installs them itself, unless told --no-build-isolation"
        ) from None

    # One shared library for the group, inside the package: zlh/proxy/_compiled__mypyc.*.so.
    compiled = mypycify(
        [f"src/zlh/proxy/{name}.py" for name in HOT_PATH], group_name="zlh.proxy._compiled"
    )
    # scan.pxd gives the C types; the .py's annotations are for mypy, not for Cython.
    scanner = cythonize(
        "src/zlh/proxy/scan.py",
        compiler_directives={"language_level": 3, "annotation_typing": False},
        quiet=True,
    )
    return [*compiled, *scanner]


class BuildWithPortalFiles(build_py):
    """build_py, plus the vendored front-end files in ``zlh/portal/vendor/``."""

    def run(self) -> None:
        super().run()
        if self.editable_mode:
            return  # a checkout serves them from node_modules
        listed = json.loads((PORTAL / "vendor.json").read_text())
        packages = {name: entry for name, entry in listed.items() if name != "_"}
        if not all((PORTAL / "node_modules" / e["package"]).is_dir() for e in packages.values()):
            if shutil.which("npm") is None:
                raise SystemExit(
                    "building zlh needs npm for the portal's files (apt-get install npm)"
                )
            subprocess.run(
                ["npm", "ci", "--no-audit", "--no-fund", "--loglevel=error"], cwd=PORTAL, check=True
            )
        target = Path(self.build_lib) / "zlh" / "portal" / "vendor"
        for name, entry in packages.items():
            for file in entry["files"]:
                dest = target / name / file
                dest.parent.mkdir(parents=True, exist_ok=True)
                shutil.copyfile(PORTAL / "node_modules" / entry["package"] / file, dest)


setup(ext_modules=ext_modules(), cmdclass={"build_py": BuildWithPortalFiles})
