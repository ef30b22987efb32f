"""Rebuild on a real LXC container: a fresh system from the current template, /home/dev kept.

The home is the dev user's, as the agent makes it (``useradd --create-home``), filled as dev:
a workspace file, an installed code-server extension, and a link planted to ``/etc``. A file
root wrote outside the home is gone after the rebuild; the home is there with its owners, the
link still a link; the agent answers with the new secret at the same address. The second
template version is a hard-linked copy of the current one with a file of its own (a real
template build takes a minute; clones only read their template, so the copy behaves the same).

Needs root and the lxc backend's packages, like the other LXC tests (tests/backends/test_lxc.py).
"""

from __future__ import annotations

import asyncio
import os
import shutil
import subprocess
from collections.abc import Iterator

import pytest
from lxc_kit import agent_status, attach, lxc_backend, up

from zlh.backends import BackendError, ContainerSpec, RunState
from zlh.backends.lxc import LxcBackend
from zlh.backends.lxc.slots import rebuild_dir
from zlh.backends.lxc.template import CURRENT_FILE, Template, current_template

pytestmark = [pytest.mark.root, pytest.mark.slow]

VMID = 9401
HOME = "/home/dev"
EXTENSION = f"{HOME}/.local/share/code-server/extensions/acme.tool-1.0.0/package.json"
FILL_HOME = f"""
set -e
mkdir -p {HOME}/workspace "$(dirname {EXTENSION})"
echo mine > {HOME}/workspace/main.py
echo '{{"name": "tool"}}' > {EXTENSION}
ln -s /etc {HOME}/etc-link
"""


@pytest.fixture(scope="module")
def backend() -> Iterator[LxcBackend]:
    yield from lxc_backend(VMID)


@pytest.fixture
def next_template(backend: LxcBackend) -> Iterator[Template]:
    """Another template version (a hard-linked copy holding ``/etc/zlh-next``), for the test to
    make current; the real one is current again afterwards and the copy removed."""
    current = current_template(backend.lxcpath)
    assert current is not None
    following = Template(backend.lxcpath, f"{current.version}-next")
    shutil.rmtree(following.root, ignore_errors=True)
    following.root.mkdir()
    subprocess.run(["cp", "-al", str(current.rootfs), str(following.rootfs)], check=True)
    following.config.write_text(current.config.read_text().replace(current.name, following.name))
    marker = following.rootfs / "etc" / "zlh-next"
    marker.write_text("next\n")
    owner = (following.rootfs / "etc").stat()
    os.chown(marker, owner.st_uid, owner.st_gid)
    try:
        yield following
    finally:
        asyncio.run(backend.destroy(VMID))  # its clone reads the copy
        (backend.lxcpath / CURRENT_FILE).write_text(current.version + "\n")
        shutil.rmtree(following.root)


def _in(backend: LxcBackend, script: str) -> str:
    return attach(backend, VMID, "sh", "-c", script).strip()


def _home_files(backend: LxcBackend) -> str:
    """Each home entry with its owner (uid inside the container) and mode, links as links."""
    return _in(backend, f"cd {HOME} && find . -printf '%p %U:%G %m %y %l\\n' | sort")


def _rebuild(backend: LxcBackend, secret: str) -> None:
    asyncio.run(backend.rebuild(ContainerSpec(vmid=VMID, agent_secret=secret)))


def test_a_rebuild_gives_a_fresh_system_from_the_current_template_and_keeps_the_home(
    backend: LxcBackend, next_template: Template, monkeypatch: pytest.MonkeyPatch
) -> None:
    first = current_template(backend.lxcpath)
    created = up(backend, VMID, secret="old")
    assert first is not None and created.template == first.version
    assert agent_status(created, "old") == 200
    _in(backend, "useradd --create-home --shell /bin/bash --user-group dev")
    attach(backend, VMID, "runuser", "-u", "dev", "--", "sh", "-c", FILL_HOME)
    _in(backend, "echo outside > /opt/zlh/marker")
    home = _home_files(backend)
    assert "./etc-link 1000:1000 777 l /etc" in home and "./workspace/main.py 1000:1000" in home
    host_etc = os.stat("/etc")

    with pytest.raises(BackendError, match=f"container {VMID} is running: stop it"):
        _rebuild(backend, "new")
    asyncio.run(backend.stop(VMID))
    (backend.lxcpath / CURRENT_FILE).write_text(next_template.version + "\n")  # a new build

    # A rebuild that fails once the home is out of the old system keeps it aside ...
    def no_space(*_args: object) -> None:
        raise BackendError("cloning the template failed: no space left on device")

    monkeypatch.setattr(backend, "_clone", no_space)
    with pytest.raises(BackendError, match="no space left on device"):
        _rebuild(backend, "new")
    kept = rebuild_dir(backend.lxcpath, VMID)
    assert (kept / "home" / "workspace" / "main.py").read_text() == "mine\n"
    waiting = asyncio.run(backend.status(VMID))
    assert (waiting.state, waiting.address) == (RunState.STOPPED, created.address)
    assert [info.vmid for info in asyncio.run(backend.list())] == [VMID]
    with pytest.raises(BackendError, match="unfinished rebuild"):
        asyncio.run(backend.start(VMID))
    monkeypatch.undo()

    # ... and the next rebuild finishes it.
    _rebuild(backend, "new")
    rebuilt = asyncio.run(backend.status(VMID))
    assert rebuilt.state is RunState.STOPPED
    assert rebuilt.address == created.address
    assert rebuilt.template == next_template.version
    assert not kept.exists()
    started = asyncio.run(backend.start(VMID))
    assert started.address == created.address
    assert agent_status(started, "new") == 200
    assert agent_status(started, "old") == 401
    assert _home_files(backend) == home
    assert _in(backend, f"cat {HOME}/workspace/main.py {EXTENSION}") == 'mine\n{"name": "tool"}'
    assert _in(backend, "test -e /opt/zlh/marker && echo kept || echo gone") == "gone"
    assert _in(backend, "cat /etc/zlh-next") == "next"  # the system is the new template's
    assert _in(backend, "stat -c %U /etc") == "root"
    after = os.stat("/etc")
    assert (after.st_uid, after.st_gid, after.st_mode) == (
        host_etc.st_uid,
        host_etc.st_gid,
        host_etc.st_mode,
    )
