"""A hostile dev user plants links, hard links and FIFOs in its home; root's agent is not fooled.

The agent runs as root and prepares the dev home (workspace, ``.profile``) and code-server's
config there, also on every restart. dev owns that home, so every name the agent touches may be
a trap pointing at something only root may change (``/etc/ld.so.preload``) or read (a root-only
JSON file). These tests run as root with a dev identity that is a plain uid (no passwd entry is
needed: only the numbers matter to the kernel), plant each trap as dev would, run the agent's
own code paths, and check that nothing outside the home changed owner, mode or contents, that no
secret reached dev's files, and that the refusal names the path.
"""

from __future__ import annotations

import asyncio
import hashlib
import json
import os
import shutil
import stat
import tempfile
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from zlh.agent.addons.base import AddonContext
from zlh.agent.addons.code_server import DEFAULT_SETTINGS, USER_SETTINGS, CodeServer
from zlh.agent.config import AgentConfig
from zlh.agent.devuser import DevEnvironment, prepare_dev_home
from zlh.agent.errors import UnsafeDevHome
from zlh.agent.paths import Layout
from zlh.agent.runas import DevIdentity
from zlh.agent.supervise import ProcessSpec, Supervisor
from zlh.install.download import RetryPolicy
from zlh.install.installer import Installer
from zlh.schemas import CodeServerAddon

pytestmark = pytest.mark.root

DEV_UID = DEV_GID = 54_329
SECRET = "root-only-secret-4f1c"
BOUND_S = 30.0  # a FIFO read would block forever; the agent must answer well within this


@dataclass(frozen=True)
class Box:
    """A scratch machine: ``root`` (the agent's --root, root-owned), dev's home below it, and
    ``outside``: root-owned things a trap points at."""

    root: Path
    env: DevEnvironment
    outside: Path

    @property
    def home(self) -> Path:
        return self.env.home

    @property
    def etc(self) -> Path:
        return self.outside / "etc"

    @property
    def preload(self) -> Path:
        return self.etc / "ld.so.preload"

    @property
    def secret_json(self) -> Path:
        return self.outside / "secret.json"

    @property
    def private(self) -> Path:
        return self.outside / "private"


@pytest.fixture
def box() -> Iterator[Box]:
    if os.geteuid() != 0:
        pytest.skip("needs root: the agent acts as a dev uid that is not its own")
    root = Path(tempfile.mkdtemp(prefix="zlh-devhome-"))  # root-owned, 0755: dev can't swap
    root.chmod(0o755)
    try:
        outside = root / "outside"
        (outside / "etc").mkdir(parents=True)
        (outside / "etc" / "ld.so.preload").write_text("")
        (outside / "etc" / "passwd").write_text("root:x:0:0::/root:/bin/bash\n")
        secret = outside / "secret.json"
        secret.write_text(json.dumps({"token": SECRET}))
        secret.chmod(0o600)
        (outside / "private").mkdir(mode=0o700)
        (outside / "private" / "key").write_text(SECRET)
        home = root / "home" / "dev"
        home.mkdir(parents=True)
        os.chown(home, DEV_UID, DEV_GID)  # what useradd --create-home leaves
        identity = DevIdentity(
            name="devtest", uid=DEV_UID, gid=DEV_GID, groups=(DEV_GID,), home=home
        )
        env = DevEnvironment("devtest", identity, home, home / "workspace")
        yield Box(root, env, outside)
    finally:
        shutil.rmtree(root)


# -- what the tests observe --------------------------------------------------------------------


def snapshot(top: Path) -> dict[str, tuple[int, int, int, str]]:
    """Owner, group, mode and a content digest (entries, for a directory) of all below ``top``."""
    seen: dict[str, tuple[int, int, int, str]] = {}
    for path in [top, *sorted(top.rglob("*"))]:
        st = path.lstat()
        if stat.S_ISDIR(st.st_mode):
            digest = ",".join(sorted(p.name for p in path.iterdir()))
        else:
            digest = hashlib.sha256(path.read_bytes()).hexdigest()
        seen[str(path)] = (st.st_uid, st.st_gid, st.st_mode, digest)
    return seen


def everything_dev_owns_holds_no_secret(home: Path) -> None:
    """No dev-owned file below ``home`` holds the secret (a planted root-owned link may)."""
    for path in home.rglob("*"):
        st = path.lstat()
        if stat.S_ISREG(st.st_mode) and st.st_uid == DEV_UID:
            assert SECRET not in path.read_text(errors="replace"), path


def give_to_dev(box: Box, path: Path) -> None:
    os.lchown(path, DEV_UID, DEV_GID)


def dev_dirs(box: Box, rel: str) -> None:
    """``rel`` below the home as real directories dev made (for a trap deeper down)."""
    path = box.home
    for name in Path(rel).parts:
        path = path / name
        path.mkdir(exist_ok=True)
        give_to_dev(box, path)


def plant_symlink(box: Box, rel: str, target: Path) -> Path:
    where = box.home / rel
    dev_dirs(box, str(Path(rel).parent))
    where.symlink_to(target)
    give_to_dev(box, where)
    return where


# -- the agent's code paths --------------------------------------------------------------------


def code_server(box: Box) -> CodeServer:
    spec = CodeServerAddon.model_validate(
        {
            "name": "code-server",
            "version": "4.96.4",
            "artifact": {
                "url": "code-server.tar.gz",
                "sha256": "0" * 64,
                "size": 1,
                "format": "tar.gz",
            },
            "options": {"basePath": "/dev/101/ide"},
        }
    )
    layout = Layout(box.root)
    ctx = AddonContext(
        layout=layout,
        config=AgentConfig(root=box.root, bind_host="127.0.0.1"),
        installer=Installer(policy=RetryPolicy()),
        dev=box.env,
        vmid=101,
    )
    addon = CodeServer(spec, ctx)

    async def no_help_probe() -> frozenset[str]:  # no code-server is installed here
        return frozenset()

    addon._supported_flags = no_help_probe  # type: ignore[method-assign]
    return addon


def prepare(box: Box) -> None:
    asyncio.run(asyncio.wait_for(prepare_dev_home(Layout(box.root), box.env), BOUND_S))


def configure(box: Box) -> None:
    asyncio.run(asyncio.wait_for(code_server(box).configure(), BOUND_S))


def provision(box: Box) -> None:
    """What provisioning and restart recovery do in the dev home."""
    prepare(box)
    configure(box)


def refused(box: Box, rel: str) -> str:
    """Run the agent against the planted home; it must refuse, and touch nothing outside."""
    before = snapshot(box.outside)
    with pytest.raises(UnsafeDevHome) as caught:
        provision(box)
    assert snapshot(box.outside) == before
    everything_dev_owns_holds_no_secret(box.home)
    message = caught.value.message
    assert str(box.home / rel) in message, message
    assert caught.value.code == "unsafe-dev-home"
    return message


# -- a clean home ------------------------------------------------------------------------------


def test_a_clean_home_is_prepared_and_configured_as_dev_and_keeps_user_settings(
    box: Box,
) -> None:
    provision(box)
    settings = box.home / ".local/share/code-server/User/settings.json"
    config = box.home / ".config/code-server/config.yaml"
    made = [box.env.workspace, box.home / ".profile", config, settings, box.home / ".cache"]
    made += [box.home / ".local/state"]
    for path in made:
        st = path.lstat()
        assert (st.st_uid, st.st_gid) == (DEV_UID, DEV_GID), path
    assert "bind-addr: 127.0.0.1:" in config.read_text()
    assert json.loads(settings.read_text()) == {**DEFAULT_SETTINGS, **USER_SETTINGS}
    assert (box.env.workspace / "README.md").lstat().st_uid == DEV_UID

    mine = {**json.loads(settings.read_text()), "editor.fontSize": 17, "update.mode": "default"}
    mine["workbench.startupEditor"] = "none"  # a default the user changed stays changed
    settings.write_text(json.dumps(mine))
    provision(box)  # a restart re-runs the last payload
    again = json.loads(settings.read_text())
    assert again == {
        **DEFAULT_SETTINGS,
        **USER_SETTINGS,
        "editor.fontSize": 17,
        "workbench.startupEditor": "none",
    }
    assert (box.home / ".profile").read_text().count("zlh-agent") == 1


def test_a_root_owned_home_a_fresh_volume_mounted_there_is_given_to_dev(box: Box) -> None:
    """A Proxmox CT's home is a mount-point volume: root owns its top, mkfs left lost+found."""
    os.chown(box.home, 0, 0)
    (box.home / "lost+found").mkdir(mode=0o700)
    provision(box)
    assert (box.home.stat().st_uid, box.home.stat().st_gid) == (DEV_UID, DEV_GID)
    assert box.env.workspace.lstat().st_uid == DEV_UID
    assert (box.home / "lost+found").lstat().st_uid == 0  # only the home itself changes owner


def test_a_home_that_is_a_link_to_a_root_directory_is_refused_not_given_to_dev(box: Box) -> None:
    box.home.rmdir()
    box.home.symlink_to(box.private)
    before = snapshot(box.outside)
    with pytest.raises(UnsafeDevHome, match="not a directory"):
        prepare(box)
    assert snapshot(box.outside) == before
    assert box.private.stat().st_uid == 0


# -- symlinks ----------------------------------------------------------------------------------

DIRECTORIES = [
    ".config",
    ".config/code-server",
    ".local",
    ".local/share",
    ".local/share/code-server",
    ".local/share/code-server/User",
    ".local/state",
    ".cache",
    "workspace",
]


@pytest.mark.parametrize("rel", DIRECTORIES)
def test_a_directory_swapped_for_a_link_to_etc_is_refused_and_etc_untouched(
    box: Box, rel: str
) -> None:
    plant_symlink(box, rel, box.etc)
    message = refused(box, rel)
    assert "symbolic link" in message


FILES = [
    ".config/code-server/config.yaml",
    ".local/share/code-server/User/settings.json",
    ".profile",
]


@pytest.mark.parametrize("rel", FILES)
def test_a_file_swapped_for_a_link_to_a_root_file_is_refused_and_the_file_untouched(
    box: Box, rel: str
) -> None:
    plant_symlink(box, rel, box.preload)
    refused(box, rel)


def test_settings_linked_to_a_root_only_json_file_never_leak_it_into_dev_settings(
    box: Box,
) -> None:
    rel = ".local/share/code-server/User/settings.json"
    plant_symlink(box, rel, box.secret_json)
    refused(box, rel)
    assert box.secret_json.stat().st_mode & 0o777 == 0o600


# -- hard links and FIFOs ----------------------------------------------------------------------


@pytest.mark.parametrize("rel", FILES)
def test_a_hard_link_to_a_root_file_is_neither_read_nor_replaced(box: Box, rel: str) -> None:
    # fs.protected_hardlinks=1 stops dev from linking a file it does not own; a kernel without
    # it would not, so root plants the link here to stand for that kernel.
    target = box.secret_json if rel.endswith("settings.json") else box.preload
    dev_dirs(box, str(Path(rel).parent))
    os.link(target, box.home / rel)
    message = refused(box, rel)
    assert "hard links" in message
    assert target.stat().st_nlink == 2  # still linked: the agent neither wrote nor unlinked it


@pytest.mark.parametrize("rel", FILES[1:])
def test_a_fifo_where_a_file_is_read_is_refused_without_hanging(box: Box, rel: str) -> None:
    dev_dirs(box, str(Path(rel).parent))
    os.mkfifo(box.home / rel)
    give_to_dev(box, box.home / rel)
    message = refused(box, rel)
    assert "not a regular file" in message


def test_a_file_where_a_directory_belongs_is_refused(box: Box) -> None:
    (box.home / ".config").write_text("not a directory")
    give_to_dev(box, box.home / ".config")
    message = refused(box, ".config")
    assert "not a directory" in message


# -- restart recovery and children -------------------------------------------------------------


def test_restart_recovery_reports_the_refused_path_in_status(
    box: Box, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The provisioner re-runs the persisted payload at start; a trap fails it, named."""
    from zlh.agent import devuser
    from zlh.agent.provisioner import Provisioner
    from zlh.schemas import AgentState, ProvisionPayload, ProvisionStep

    plant_symlink(box, "workspace", box.etc)
    monkeypatch.setattr(devuser, "_identify", lambda _layout, _spec: box.env)
    payload = ProvisionPayload.model_validate(
        {
            "vmid": 101,
            "runtime": {
                "name": "node",
                "version": "22",
                "artifact": {
                    "url": "node.tar.gz",
                    "sha256": "0" * 64,
                    "size": 1,
                    "format": "tar.gz",
                },
            },
        }
    )
    layout = Layout(box.root)
    layout.payload_file.parent.mkdir(parents=True)
    layout.payload_file.write_text(payload.model_dump_json())
    before = snapshot(box.outside)

    async def restart() -> Provisioner:
        provisioner = Provisioner(AgentConfig(root=box.root, bind_host="127.0.0.1"))
        await provisioner.restore()
        await asyncio.wait_for(provisioner.wait_idle(), BOUND_S)
        await provisioner.close()
        return provisioner

    provisioner = asyncio.run(restart())
    assert provisioner.state is AgentState.FAILED
    error = provisioner.error
    assert error is not None and error.step is ProvisionStep.DEV_USER
    assert error.code == "unsafe-dev-home"
    assert f"{box.home / 'workspace'} is a symbolic link" in error.message
    assert snapshot(box.outside) == before


def test_a_child_run_as_dev_enters_the_workspace_as_dev_not_as_root(box: Box) -> None:
    """A workspace swapped for a link to a root-only directory: root's chdir would go there and
    hand the child a cwd dev could never reach; dev's own ``cd`` is refused."""
    plant_symlink(box, "workspace", box.private)
    log = box.root / "child.log"
    spec = ProcessSpec(
        name="probe",
        argv=("/bin/sh", "-c", "pwd; cat key"),
        env={"PATH": "/usr/bin:/bin"},
        cwd=box.env.workspace,
        user=box.env.identity,
    )
    sup = Supervisor(spec, pid_file=box.root / "probe.pid", log_file=log, max_fast_exits=1)

    async def run() -> None:
        sup.start()
        task = sup._task
        assert task is not None
        await asyncio.wait_for(task, BOUND_S)

    asyncio.run(run())
    assert sup.gave_up is not None
    output = log.read_text()
    assert SECRET not in output and str(box.private) not in output
    assert "can't cd" in output or "Permission denied" in output
