"""The process backend: real ``zlh agent`` subprocesses on loopback, no isolation."""

from __future__ import annotations

import asyncio
import logging
import os
import sys
import time
from pathlib import Path

import httpx
import pytest

from zlh.backends import (
    BackendError,
    ContainerExists,
    ContainerSpec,
    RunState,
    create_backend,
)
from zlh.backends.process import ProcessBackend, _alive


def wait_status(port: int, secret: str, *, timeout_s: float = 30.0) -> httpx.Response:
    """Poll the agent's /status until it answers (any HTTP status), with a deadline."""
    deadline = time.monotonic() + timeout_s
    while True:
        try:
            return httpx.get(
                f"http://127.0.0.1:{port}/status",
                headers={"Authorization": f"Bearer {secret}"},
                timeout=2,
            )
        except httpx.TransportError:
            if time.monotonic() > deadline:
                raise
            time.sleep(0.05)


def test_two_agents_run_side_by_side_with_their_own_ports_and_secrets(tmp_path: Path) -> None:
    backend = ProcessBackend(data_dir=tmp_path)

    async def up() -> list[int]:
        ports = []
        for vmid in (101, 102):
            await backend.create(ContainerSpec(vmid=vmid, agent_secret=f"secret-{vmid}"))
            info = await backend.start(vmid)
            assert info.state is RunState.RUNNING
            ports += [info.agent_port, info.code_server_port]
        return ports

    ports = asyncio.run(up())
    try:
        assert len(set(ports)) == 4
        a, b = ports[0], ports[2]
        assert wait_status(a, "secret-101").json()["state"] == "idle"
        assert wait_status(b, "secret-102").status_code == 200
        assert wait_status(a, "secret-102").status_code == 401
        assert wait_status(b, "secret-101").status_code == 401
        # each agent has its own root dir
        assert (tmp_path / "process" / "101" / "root").is_dir()
    finally:
        asyncio.run(backend.destroy(101))
        asyncio.run(backend.destroy(102))
    assert asyncio.run(backend.list()) == []


def test_a_new_backend_object_finds_running_agents_and_stops_them(tmp_path: Path) -> None:
    first = create_backend("process", data_dir=tmp_path)
    asyncio.run(first.create(ContainerSpec(vmid=7, agent_secret="s")))
    started = asyncio.run(first.start(7))
    wait_status(started.agent_port, "s")

    again = ProcessBackend(data_dir=tmp_path)  # as after an API restart
    [listed] = asyncio.run(again.list())
    assert listed == started
    asyncio.run(again.stop(7))
    assert asyncio.run(again.status(7)).state is RunState.STOPPED
    with pytest.raises(httpx.TransportError):
        httpx.get(f"http://127.0.0.1:{started.agent_port}/status", timeout=2)
    asyncio.run(again.start(7))  # a stopped container starts again on its ports
    assert wait_status(started.agent_port, "s").status_code == 200
    asyncio.run(again.destroy(7))
    asyncio.run(first.destroy(7))  # idempotent, also from the stale object
    assert asyncio.run(first.status(7)).state is RunState.ABSENT


def test_creating_an_existing_vmid_fails_and_keeps_the_existing_container(tmp_path: Path) -> None:
    backend = ProcessBackend(data_dir=tmp_path)
    info = asyncio.run(backend.create(ContainerSpec(vmid=5, agent_secret="original")))
    with pytest.raises(ContainerExists, match="container 5 already exists"):
        asyncio.run(backend.create(ContainerSpec(vmid=5, agent_secret="other")))
    assert (tmp_path / "process" / "5" / "agent-token").read_text() == "original"
    assert asyncio.run(backend.status(5)) == info
    asyncio.run(backend.destroy(5))


def test_stop_kills_an_agent_that_ignores_sigterm(tmp_path: Path) -> None:
    stubborn = [
        sys.executable,
        "-c",
        "import signal, time\nsignal.signal(signal.SIGTERM, signal.SIG_IGN)\ntime.sleep(600)",
    ]
    backend = ProcessBackend(data_dir=tmp_path, agent_command=stubborn)
    asyncio.run(backend.create(ContainerSpec(vmid=9, agent_secret="s")))
    asyncio.run(backend.start(9))
    state = backend._read(9)
    assert state is not None
    pid = state["pid"]
    started = time.monotonic()
    asyncio.run(backend.stop(9, timeout_s=0.5))
    assert time.monotonic() - started < 5
    assert not _alive(pid)
    assert asyncio.run(backend.status(9)).state is RunState.STOPPED
    asyncio.run(backend.destroy(9))


def test_it_warns_that_it_has_no_isolation(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    with caplog.at_level(logging.WARNING, logger="zlh.backends.process"):
        ProcessBackend(data_dir=tmp_path)
    assert "NO isolation" in caplog.text


def test_unknown_backend_name_is_refused(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="unknown backend 'docker'"):
        create_backend("docker", data_dir=tmp_path)


def _home_and_system(root: Path) -> None:
    """A provisioned container's files: the dev home (with a link a tenant planted in it,
    pointing out of the container) and a runtime installed outside it."""
    workspace = root / "home" / "dev" / "workspace"
    workspace.mkdir(parents=True)
    (workspace / "main.py").write_text("print('mine')\n")
    extension = root / "home/dev/.local/share/code-server/extensions/acme.tool-1.0.0"
    extension.mkdir(parents=True)
    (extension / "package.json").write_text('{"name": "tool"}\n')
    (root / "home" / "dev" / "etc").symlink_to("/etc")
    (root / "opt" / "zlh" / "runtimes").mkdir(parents=True)
    (root / "opt" / "zlh" / "runtimes" / "marker").write_text("installed\n")
    (root / "home" / "other").mkdir()


def test_a_rebuild_keeps_the_home_and_nothing_else_and_writes_the_new_secret(
    tmp_path: Path,
) -> None:
    backend = ProcessBackend(data_dir=tmp_path)
    created = asyncio.run(backend.create(ContainerSpec(vmid=11, agent_secret="old")))
    root = tmp_path / "process" / "11" / "root"
    _home_and_system(root)
    home_mode = (root / "home" / "dev").stat().st_mode

    rebuilt = asyncio.run(backend.rebuild(ContainerSpec(vmid=11, agent_secret="new")))

    assert rebuilt == created  # stopped, same ports, no template
    assert rebuilt.state is RunState.STOPPED and rebuilt.template is None
    assert sorted(p.name for p in root.iterdir()) == ["home"]
    assert sorted(p.name for p in (root / "home").iterdir()) == ["dev"]
    assert (root / "home/dev/workspace/main.py").read_text() == "print('mine')\n"
    extension = root / "home/dev/.local/share/code-server/extensions/acme.tool-1.0.0"
    assert (extension / "package.json").is_file()
    assert os.readlink(root / "home/dev/etc") == "/etc"  # still a link, /etc untouched
    assert Path("/etc/passwd").is_file()
    assert (root / "home" / "dev").stat().st_mode == home_mode
    assert (tmp_path / "process" / "11" / "agent-token").read_text() == "new"
    started = asyncio.run(backend.start(11))
    try:
        assert wait_status(started.agent_port, "new").status_code == 200
        assert wait_status(started.agent_port, "old").status_code == 401
    finally:
        asyncio.run(backend.destroy(11))


def test_a_rebuild_refuses_a_running_or_absent_container(tmp_path: Path) -> None:
    backend = ProcessBackend(data_dir=tmp_path)
    with pytest.raises(BackendError, match="container 12 does not exist"):
        asyncio.run(backend.rebuild(ContainerSpec(vmid=12, agent_secret="s")))
    asyncio.run(backend.create(ContainerSpec(vmid=12, agent_secret="s")))
    root = tmp_path / "process" / "12" / "root"
    (root / "opt").mkdir()
    started = asyncio.run(backend.start(12))
    try:
        wait_status(started.agent_port, "s")
        with pytest.raises(BackendError, match="container 12 is running: stop it"):
            asyncio.run(backend.rebuild(ContainerSpec(vmid=12, agent_secret="t")))
        assert (root / "opt").is_dir()
        assert (tmp_path / "process" / "12" / "agent-token").read_text() == "s"
    finally:
        asyncio.run(backend.destroy(12))


def test_an_interrupted_rebuild_loses_no_home_and_the_next_one_finishes_it(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    backend = ProcessBackend(data_dir=tmp_path)
    asyncio.run(backend.create(ContainerSpec(vmid=13, agent_secret="old")))
    directory = tmp_path / "process" / "13"
    _home_and_system(directory / "root")

    def broken(path: Path, *args: object, **kwargs: object) -> None:
        raise OSError(28, "No space left on device")

    monkeypatch.setattr("zlh.backends.process.write_atomically", broken)
    with pytest.raises(BackendError, match=r"cannot rebuild container 13: .*No space left"):
        asyncio.run(backend.rebuild(ContainerSpec(vmid=13, agent_secret="new")))
    # the home waits beside the root; the container refuses to start until it is rebuilt
    assert (directory / "rebuild/home/workspace/main.py").is_file()
    assert asyncio.run(backend.status(13)).state is RunState.STOPPED
    with pytest.raises(BackendError, match=r"unfinished rebuild .* rebuild it again"):
        asyncio.run(backend.start(13))
    monkeypatch.undo()

    asyncio.run(backend.rebuild(ContainerSpec(vmid=13, agent_secret="new")))
    assert (directory / "root/home/dev/workspace/main.py").read_text() == "print('mine')\n"
    assert os.readlink(directory / "root/home/dev/etc") == "/etc"
    assert not (directory / "root/opt").exists() and not (directory / "rebuild").exists()
    assert (directory / "agent-token").read_text() == "new"
    asyncio.run(backend.destroy(13))
    assert not directory.exists()
