"""zlh's PEP 517 build backend: setuptools', plus the public front's compilers when asked for.

A plain build (``pip install .``, the agent's wheel) compiles nothing and needs no C compiler:
the front runs as plain Python. ``ZLH_COMPILE_FRONT=1`` in the environment of the build (the
platform host: ``scripts/bootstrap.sh`` sets it) compiles the front's hot path (setup.py); only
then does the build need Cython, mypy (mypyc) and what mypyc type-checks, so only then are they
asked for (``get_requires_for_build_*``), and a missing compiler fails here, in one line, before
anything is downloaded. An environment variable rather than an extra: extras choose runtime
dependencies and never reach the build backend, and pip's build isolation installs only what
the backend asks for.
"""

from __future__ import annotations

import os
import shlex
import subprocess
import sysconfig
import tempfile
from pathlib import Path

from setuptools.build_meta import *  # noqa: F403 (every hook but the two below is setuptools')

FLAG = "ZLH_COMPILE_FRONT"
# mypyc compiles zlh.proxy's hot path and type-checks what it imports; Cython the head scanner.
COMPILE_REQUIRES = ["cython>=3.1", "mypy>=1.10", "pydantic>=2.7", "httptools>=0.6", "pyjwt>=2.8"]

_ON = {"1", "true", "yes", "on"}
_OFF = {"", "0", "false", "no", "off"}


def compile_front() -> bool:
    """Whether this build compiles the front; a value that is neither on nor off stops it."""
    value = os.environ.get(FLAG, "").strip().lower()
    if value not in _ON | _OFF:
        raise SystemExit(f"zlh: {FLAG}={os.environ[FLAG]!r}: set it to 1 (compile) or 0 (don't)")
    return value in _ON


def require_compiler() -> None:
    """Compile a file that includes Python.h the way setuptools would (``$CC``, else Python's
    own compiler), or stop the build with one line saying what is missing."""
    cc = shlex.split(os.environ.get("CC") or sysconfig.get_config_var("CC") or "cc")
    include = sysconfig.get_paths()["include"]
    with tempfile.TemporaryDirectory(prefix="zlh-cc-") as tmp:
        source = Path(tmp) / "probe.c"
        source.write_text("#include <Python.h>\nint zlh_probe(void) { return 0; }\n")
        try:
            probe = subprocess.run(
                [*cc, "-I", include, "-c", str(source), "-o", str(Path(tmp) / "probe.o")],
                capture_output=True,
                check=False,
            )
            works = probe.returncode == 0
        except OSError:
            works = False
    if not works:
        raise SystemExit(
            f"zlh: {FLAG}=1 compiles the public front and needs a C compiler and the Python "
            f"headers ({shlex.join(cc)} could not compile against {include}/Python.h): "
            "apt-get install build-essential python3-dev, or build without "
            f"{FLAG} for the plain-Python front"
        )


def _requires() -> list[str]:
    # setuptools' own hooks would run setup.py to find setup_requires; it declares none.
    if not compile_front():
        return []
    require_compiler()
    return list(COMPILE_REQUIRES)


def get_requires_for_build_wheel(config_settings: dict[str, object] | None = None) -> list[str]:
    return _requires()


def get_requires_for_build_editable(
    config_settings: dict[str, object] | None = None,
) -> list[str]:
    return _requires()
