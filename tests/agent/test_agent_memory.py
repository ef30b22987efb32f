"""What keeps the idle agent small (docs/performance.md): code that loads on first use,
aio-libs in pure Python, the heap trimmed after provisioning. The figures are
bench/agent_rss.py's; these tests check the mechanisms in a real ``zlh agent``."""

from __future__ import annotations

import asyncio
import os
import re
from pathlib import Path

import httpx
import pytest
from aiohttp import web

from agent_helpers import AgentProcess
from zlh.agent.lazy_routes import setup_console_routes
from zlh.agent.main import PURE_PYTHON_SWITCHES, pure_python_aio_libs
from zlh.agent.memory import HeapTrimmer, trim_heap

# Loaded by the first file browser or console request, never by an idle agent.
ON_FIRST_USE = {
    "zlh.agent.files",
    "zlh.agent.console",
    "zlh.agent.workspace",
    "zlh.agent.runas",
    "ctypes",
    "termios",
    "zlh.install.installer",
    "tarfile",
}
C_EXTENSIONS = {
    "aiohttp._http_parser",
    "aiohttp._websocket.reader_c",
    "multidict._multidict",
    "yarl._quoting_c",
    "frozenlist._frozenlist",
    "propcache._helpers_c",
}
PURE_PYTHON = {"aiohttp.http_parser", "multidict._multidict_py", "yarl._quoting_py"}
IMPORTED = re.compile(r"^import time:\s+\d+ \|\s+\d+ \| +(\S+)$", re.MULTILINE)


def imported(agent: AgentProcess) -> set[str]:
    """The modules the agent has imported so far (``-X importtime`` lines in its log)."""
    return set(IMPORTED.findall(agent.log.read_text()))


def test_an_idle_agent_loads_no_file_console_or_c_extension_code_until_it_is_used(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("PYTHONPROFILEIMPORTTIME", "1")  # the agent's stderr goes to its log
    agent = AgentProcess(tmp_path / "root").start()
    try:
        assert agent.http.get("/status").status_code == 200
        idle = imported(agent)
        assert "zlh.agent.routes" in idle and idle >= PURE_PYTHON
        assert not idle & (ON_FIRST_USE | C_EXTENSIONS)
        # Signed out, or with a forged secret: refused before any of that code loads.
        for headers in ({}, {"Authorization": "Bearer forged"}):
            for path in ("/files", "/files/content?path=a", "/console"):
                assert httpx.get(agent.url + path, headers=headers).status_code == 401
        assert not imported(agent) & ON_FIRST_USE
        # The first signed-in request loads it, and is answered as before.
        assert agent.http.get("/files").status_code == 503  # nothing provisioned yet
        assert {"zlh.agent.files", "zlh.agent.workspace"} <= imported(agent)
    finally:
        agent.stop()


def test_unknown_paths_and_methods_answer_as_before_without_loading_anything(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("PYTHONPROFILEIMPORTTIME", "1")
    agent = AgentProcess(tmp_path / "root").start()
    try:
        assert agent.http.post("/console").status_code == 405
        assert agent.http.patch("/files").status_code == 405
        assert agent.http.get("/files/nothing").status_code == 404
        assert not imported(agent) & ON_FIRST_USE
    finally:
        agent.stop()


def test_the_pure_python_switches_hold_for_the_import_only(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    for name in PURE_PYTHON_SWITCHES:
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("YARL_NO_EXTENSIONS", "")  # an operator keeping yarl's C code
    with pure_python_aio_libs():
        assert {os.environ[n] for n in PURE_PYTHON_SWITCHES if n != "YARL_NO_EXTENSIONS"} == {"1"}
        assert os.environ["YARL_NO_EXTENSIONS"] == ""
    # What the agent starts (shells, add-ons, useradd) inherits the environment it was given.
    assert [n for n in PURE_PYTHON_SWITCHES if n in os.environ] == ["YARL_NO_EXTENSIONS"]
    assert os.environ["YARL_NO_EXTENSIONS"] == ""


def test_the_switches_are_removed_even_when_the_import_fails(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    for name in PURE_PYTHON_SWITCHES:
        monkeypatch.delenv(name, raising=False)
    with pytest.raises(ImportError), pure_python_aio_libs():
        import zlh.agent.no_such_module  # type: ignore[import-not-found]  # noqa: F401
    assert not [n for n in PURE_PYTHON_SWITCHES if n in os.environ]


def test_the_heap_is_trimmed_once_all_the_work_has_ended() -> None:
    async def scenario() -> list[int]:
        done = asyncio.Event()
        trims: list[int] = []
        trimmer = HeapTrimmer(done.wait, trim=lambda: trims.append(len(trims)))
        trimmer.after_work()
        trimmer.after_work()  # more work while a trim waits: still one trim, at the end
        await asyncio.sleep(0)
        assert trims == []
        done.set()
        for _ in range(3):
            await asyncio.sleep(0)
        assert trims == [0]
        trimmer.after_work()  # the next provisioning: trimmed again when it ends
        for _ in range(3):
            await asyncio.sleep(0)
        await trimmer.close()
        return trims

    assert asyncio.run(scenario()) == [0, 1]


def test_a_trimmer_closed_while_work_runs_never_trims() -> None:
    async def scenario() -> list[str]:
        trims: list[str] = []
        trimmer = HeapTrimmer(asyncio.Event().wait, trim=lambda: trims.append("trim"))
        trimmer.after_work()
        await asyncio.sleep(0)
        await trimmer.close()
        return trims

    assert asyncio.run(scenario()) == []


def test_glibc_trims_the_heap() -> None:
    assert trim_heap()  # this machine's libc is glibc; elsewhere it returns False, no error


def test_the_console_refuses_to_start_without_what_it_needs(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    with pytest.raises(ValueError, match="max_consoles must be at least 1"):
        setup_console_routes(web.Application(), environment=lambda: None, max_consoles=0)
    monkeypatch.setenv("PATH", str(tmp_path))  # no setsid on it
    with pytest.raises(ValueError, match="setsid"):
        setup_console_routes(web.Application(), environment=lambda: None)
