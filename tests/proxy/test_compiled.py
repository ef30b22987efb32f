"""On the platform host the front's hot path runs compiled: ``ZLH_COMPILE_FRONT=1`` (bootstrap's
default, and ``make test`` passes it on) has setup.py compile it with mypyc and the head scanner
with Cython. Without the flag the same modules run as plain Python and these checks skip."""

from __future__ import annotations

import ast
import importlib
import importlib.util
import os
import sys
from pathlib import Path

import pytest

SETUP = Path(__file__).resolve().parents[2] / "setup.py"

pytestmark = pytest.mark.skipif(
    os.environ.get("ZLH_COMPILE_FRONT", "").strip().lower() not in {"1", "true", "yes", "on"},
    reason="the front was not asked to be compiled (ZLH_COMPILE_FRONT)",
)


def _hot_path() -> tuple[str, ...]:
    for node in ast.parse(SETUP.read_text()).body:
        if isinstance(node, ast.Assign) and getattr(node.targets[0], "id", "") == "HOT_PATH":
            names: tuple[str, ...] = ast.literal_eval(node.value)
            return names
    raise AssertionError(f"no HOT_PATH in {SETUP}")


@pytest.mark.parametrize("name", [*_hot_path(), "scan"])
def test_hot_path_module_is_imported_compiled(name: str) -> None:
    module = importlib.import_module(f"zlh.proxy.{name}")
    assert module.__file__ is not None
    assert module.__file__.endswith(".so"), f"{module.__file__}: run `make bootstrap`"


def test_the_compiled_group_lives_inside_the_package() -> None:
    importlib.import_module("zlh.proxy.front")
    group = sys.modules["zlh.proxy._compiled__mypyc"]
    assert group.__file__ is not None
    assert Path(group.__file__).parent == Path(importlib.import_module("zlh.proxy").__path__[0])
    assert importlib.util.find_spec("zlh_proxy__mypyc") is None


def test_the_front_uses_the_head_scanner_when_it_is_compiled() -> None:
    from zlh.proxy import listener, pool, scan

    assert scan.COMPILED
    assert listener.SCANNING and pool.SCANNING
