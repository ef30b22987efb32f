"""A plain install -- the agent's, or anyone's ``pip install .`` -- needs no C compiler: the
build compiles the public front only when told ``ZLH_COMPILE_FRONT=1`` (the platform host), and
then a missing compiler stops it in one line. ``CC=false`` stands in for a machine without one:
setuptools, Cython and mypyc all build with ``$CC``."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from support import copy_checkout, outside_env

pytestmark = pytest.mark.slow

NO_COMPILER = {"CC": "false", "CXX": "false"}


@pytest.fixture(scope="module")
def tree(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return copy_checkout(tmp_path_factory.mktemp("plain-install") / "tree")


def test_the_agent_installs_from_the_checkout_without_a_c_compiler(
    tree: Path, tmp_path: Path
) -> None:
    venv = tmp_path / "venv"
    subprocess.run([sys.executable, "-m", "venv", str(venv)], check=True)
    subprocess.run(
        [str(venv / "bin" / "pip"), "install", "-q", f"{tree}[agent]"],
        env=outside_env(**NO_COMPILER),
        check=True,
    )
    (site,) = (venv / "lib").glob("python3*/site-packages")
    assert sorted(path.name for path in site.rglob("*.so") if "zlh" in path.name) == []
    assert sorted(site.glob("*mypyc*")) == []
    agent = subprocess.run(
        [str(venv / "bin" / "zlh"), "agent", "--help"], capture_output=True, text=True, check=True
    )
    assert "--token-file" in agent.stdout


def test_asking_for_the_compiled_front_without_a_compiler_fails_in_one_line(
    tree: Path, tmp_path: Path
) -> None:
    built = subprocess.run(
        [sys.executable, "-m", "pip", "wheel", "--no-deps", "-w", str(tmp_path), str(tree)],
        env=outside_env(ZLH_COMPILE_FRONT="1", **NO_COMPILER),
        capture_output=True,
        text=True,
        check=False,
    )
    assert built.returncode != 0
    ours = [line for line in built.stderr.splitlines() if "ZLH_COMPILE_FRONT=1" in line]
    assert len(ours) == 1, built.stderr
    assert "needs a C compiler and the Python headers" in ours[0]
    assert "apt-get install build-essential python3-dev" in ours[0]
    assert "Traceback" not in built.stderr
    assert list(tmp_path.glob("*.whl")) == []
