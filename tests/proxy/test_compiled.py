"""The front's hot path runs compiled (setup.py compiles it with mypyc and the head scanner with
Cython at install time)."""

from __future__ import annotations

import ast
import importlib
import os
from pathlib import Path

import pytest

SETUP = Path(__file__).resolve().parents[2] / "setup.py"


def _hot_path() -> tuple[str, ...]:
    for node in ast.parse(SETUP.read_text()).body:
        if isinstance(node, ast.Assign) and getattr(node.targets[0], "id", "") == "HOT_PATH":
            names: tuple[str, ...] = ast.literal_eval(node.value)
            return names
    raise AssertionError(f"no HOT_PATH in {SETUP}")


@pytest.mark.skipif(bool(os.environ.get("ZLH_PURE_PYTHON")), reason="built without compiling")
@pytest.mark.parametrize("name", [*_hot_path(), "scan"])
def test_hot_path_module_is_imported_compiled(name: str) -> None:
    module = importlib.import_module(f"zlh.proxy.{name}")
    assert module.__file__ is not None
    assert module.__file__.endswith(".so"), f"{module.__file__}: run `make bootstrap`"


@pytest.mark.skipif(bool(os.environ.get("ZLH_PURE_PYTHON")), reason="built without compiling")
def test_the_front_uses_the_head_scanner_when_it_is_compiled() -> None:
    from zlh.proxy import listener, pool, scan

    assert scan.COMPILED
    assert listener.SCANNING and pool.SCANNING
