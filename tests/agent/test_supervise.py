"""The process supervisor: restarts, giving up on a crash loop, adopting an orphan."""

from __future__ import annotations

import asyncio
import json
import os
import signal
import subprocess
import sys
from pathlib import Path

from zlh.agent.supervise import ProcessSpec, Supervisor, _start_time

SLEEPER = (sys.executable, "-c", "import time; print('up', flush=True); time.sleep(600)")


def supervisor(tmp_path: Path, argv: tuple[str, ...], **kw: float) -> Supervisor:
    spec = ProcessSpec(name="t", argv=argv, env={"PATH": "/usr/bin:/bin"})
    return Supervisor(spec, pid_file=tmp_path / "t.pid", log_file=tmp_path / "t.log", **kw)  # type: ignore[arg-type]


async def until(check: object, timeout_s: float = 20.0) -> None:
    deadline = asyncio.get_running_loop().time() + timeout_s
    while not check():  # type: ignore[operator]
        if asyncio.get_running_loop().time() > deadline:
            raise AssertionError("condition not met")
        await asyncio.sleep(0.02)


def test_a_crash_loop_gives_up_and_says_why(tmp_path: Path) -> None:
    async def scenario() -> Supervisor:
        sup = supervisor(
            tmp_path, ("sh", "-c", "echo boom; exit 3"), max_fast_exits=3, backoff_s=0.01
        )
        sup.start()
        await until(lambda: sup.gave_up is not None)
        return sup

    sup = asyncio.run(scenario())
    assert sup.gave_up is not None
    assert "exited with code 3 3 times" in sup.gave_up and "boom" in sup.gave_up
    assert sup.restarts == 2


def test_a_killed_process_is_started_again(tmp_path: Path) -> None:
    async def scenario() -> tuple[int, int, int]:
        sup = supervisor(tmp_path, SLEEPER)
        sup.start()
        await until(lambda: sup.running_pid() is not None)
        first = sup.running_pid()
        assert first is not None
        os.kill(first, signal.SIGKILL)
        await until(lambda: sup.running_pid() not in (None, first))
        second = sup.running_pid()
        assert second is not None
        await sup.stop()
        return first, second, sup.restarts

    first, second, restarts = asyncio.run(scenario())
    assert first != second and restarts == 1
    assert not (tmp_path / "t.pid").exists()


def test_an_orphan_from_a_killed_agent_is_adopted_not_duplicated(tmp_path: Path) -> None:
    # What an agent killed with -9 leaves: its child still running, and the pid file.
    orphan = subprocess.Popen(SLEEPER, start_new_session=True)
    record = {"pid": orphan.pid, "started": _start_time(orphan.pid), "argv": list(SLEEPER)}
    (tmp_path / "t.pid").write_text(json.dumps(record))

    async def adopt() -> tuple[int | None, int | None]:
        sup = supervisor(tmp_path, SLEEPER)
        sup.start()
        await until(lambda: sup.running_pid() is not None)
        adopted = sup.running_pid()
        orphan.kill()
        await asyncio.to_thread(orphan.wait)
        await until(lambda: sup.running_pid() not in (None, orphan.pid))
        fresh = sup.running_pid()
        await sup.stop()
        return adopted, fresh

    try:
        adopted, fresh = asyncio.run(adopt())
    finally:
        orphan.kill()
        orphan.wait()
    assert adopted == orphan.pid
    assert fresh is not None and fresh != orphan.pid
