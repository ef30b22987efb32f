"""Real LXC containers on this host: the default backend.

Every container is an overlay snapshot clone (``lxc-copy -s -B overlay``) of the current
template (see :mod:`zlh.backends.lxc.template`), named ``zlh-<vmid>`` under ``<data dir>/lxc``.
Its config carries everything the backend needs to find it again after an API restart: the
static address on ``lxcbr0`` (no DHCP: DHCP costs seconds per start), the fixed MAC and
host-side veth name the isolation rules name (:mod:`zlh.backends.lxc.net`), all three taken
from the host-wide slot registry (:mod:`zlh.backends.lxc.slots`) so that several data dirs can
run containers on one host, and the memory / CPU / pids limits for whichever cgroup version
the host runs. The agent secret is written into the clone's overlay upper dir before the
first start. Needs root and ``lxc``. The template a container's system comes from is read from
its config (the overlay's lower dir), so ``status`` and ``list`` report it after a restart too.

**Rebuild** gives a stopped container a fresh system from the current template and keeps its
home. ``/home/dev`` lives in the clone's own overlay layer (the template has no ``dev``), so the
rebuild renames it (one ``rename``: never copied, no link followed) into the container's rebuild
directory beside its own (:func:`zlh.backends.lxc.slots.rebuild_dir`), destroys the old clone,
clones the current template again with the same steps as ``create`` (same slot: address, MAC,
bridge port; resources and secret from the spec), renames the home back into the new layer and
removes the rebuild directory. Each step can be repeated, so an interrupted rebuild is finished
by the next one: while the rebuild directory exists the container counts as stopped, keeps its
slot, refuses to start (saying why), and ``destroy`` removes it with the container.

Containers are unprivileged (:mod:`zlh.backends.lxc.idmap`): their ids map into the platform's
subordinate range, so container root is nobody on the host. The template is shifted into that
range once when it is built; a container created before that (privileged) is migrated the first
time this backend sees it: stopped, its own overlay layer shifted, its lower layer swapped for a
shifted copy of the template it was cloned from, started again if it was running.
"""

from __future__ import annotations

import logging
import os
import re
import shutil
import socket
import stat
import subprocess
import threading
from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import Any

from zlh.atomic import fsync_dir, write_atomically
from zlh.backends.base import (
    AGENT_PORT,
    BackendError,
    BackendUnavailable,
    BlockingBackend,
    ContainerExists,
    ContainerInfo,
    ContainerSpec,
    LayerMount,
    Resources,
    RunState,
    Usage,
)
from zlh.backends.lxc.cgroup import cgroup_version, dirs_of_pid, payload_dirs, read_usage
from zlh.backends.lxc.idmap import IdMap, container_idmap, shift_tree
from zlh.backends.lxc.net import (
    BRIDGE,
    Bridge,
    ensure_bridge,
    ensure_isolation,
    file_lock,
    forget_neighbour,
)
from zlh.backends.lxc.slots import NAME_PREFIX, Slot, SlotRegistry, rebuild_dir
from zlh.backends.lxc.template import (
    TEMPLATE_PREFIX,
    TOKEN_PATH,
    Template,
    copy_tree,
    current_template,
)
from zlh.ports import CODE_SERVER_PORT

__all__ = ["LxcBackend", "cgroup_version", "require_lxc"]

log = logging.getLogger(__name__)

_NAME = re.compile(rf"^{NAME_PREFIX}(\d+)$")
_VETH = re.compile(r"^zlh(\d+)$")
_REBUILD = re.compile(rf"^\.{NAME_PREFIX}(\d+)\.rebuild$")
_SHIFTED = re.compile(r"-u\d+$")  # a privileged template's shifted copy (migration)
CPU_PERIOD_US = 100_000
LAYER_MOUNT_OPTIONS = "ro,bind,nodev,nosuid,create=dir"
INSTALL_HINT = "apt-get install lxc debootstrap nftables"
# Held from a clone's copy of the template until it is configured and holds its slot.
CREATE_LOCK = ".zlh-create.lock"


def require_lxc() -> None:
    """Raise BackendUnavailable saying what is missing for the lxc backend."""
    if shutil.which("lxc-start") is None or shutil.which("lxc-copy") is None:
        raise BackendUnavailable(f"the lxc backend needs the lxc package: {INSTALL_HINT}")
    if shutil.which("chrt") is None:
        raise BackendUnavailable("the lxc backend needs chrt: apt-get install util-linux")
    if os.geteuid() != 0:
        raise BackendUnavailable(
            "the lxc backend creates containers and needs root: run as root, or use "
            "--backend process (no isolation) on this machine"
        )


def limit_lines(resources: Resources, version: int) -> list[str]:
    quota = resources.cores * CPU_PERIOD_US
    memory = resources.memory_mb * 1024 * 1024
    if version == 2:
        return [
            f"lxc.cgroup2.memory.max = {memory}",
            f"lxc.cgroup2.cpu.max = {quota} {CPU_PERIOD_US}",
            f"lxc.cgroup2.pids.max = {resources.pids}",
        ]
    return [
        f"lxc.cgroup.memory.limit_in_bytes = {memory}",
        f"lxc.cgroup.cpu.cfs_period_us = {CPU_PERIOD_US}",
        f"lxc.cgroup.cpu.cfs_quota_us = {quota}",
        f"lxc.cgroup.pids.max = {resources.pids}",
    ]


def tun_lines(version: int) -> list[str]:
    prefix = "lxc.cgroup2" if version == 2 else "lxc.cgroup"
    return [
        f"{prefix}.devices.allow = c 10:200 rwm",
        "lxc.mount.entry = /dev/net/tun dev/net/tun none bind,create=file 0 0",
    ]


def layer_lines(layers: Iterable[LayerMount]) -> list[str]:
    """Bind mounts of shared layers: read-only, no devices, no set-uid; LXC makes the mount
    point in the container's own layer. The files belong to host root, which an unprivileged
    container does not map: its root cannot write them even after remounting read-write."""
    lines = []
    for layer in layers:
        if any(ch.isspace() for ch in str(layer.source)):
            raise BackendError(
                f"the layer {layer.source} has white space in its path, which an LXC mount "
                "entry cannot hold: use a data dir whose path has none"
            )
        target = layer.target.lstrip("/")
        lines.append(f"lxc.mount.entry = {layer.source} {target} none {LAYER_MOUNT_OPTIONS} 0 0")
    return lines


def _config_values(config: Path, key: str) -> list[str]:
    """Every value of a multi-valued key (``lxc.mount.entry``), in order."""
    try:
        text = config.read_text()
    except FileNotFoundError:
        return []
    values = []
    for line in text.splitlines():
        name, sep, rest = line.partition("=")
        if sep and name.strip() == key:
            values.append(rest.strip())
    return values


def _config_value(config: Path, key: str) -> str | None:
    """The last value of ``key`` (LXC's rule for single-valued keys)."""
    value = None
    try:
        text = config.read_text()
    except FileNotFoundError:
        return None
    for line in text.splitlines():
        name, sep, rest = line.partition("=")
        if sep and name.strip() == key:
            value = rest.strip()
    return value


def _set_config_values(config: Path, values: dict[str, str]) -> None:
    """Give each key of ``values`` that value in an LXC config (in place of its old lines)."""
    lines, seen = [], set()
    for line in config.read_text().splitlines():
        key = line.partition("=")[0].strip()
        if key in values:
            if key not in seen:
                lines.append(f"{key} = {values[key]}")
                seen.add(key)
            continue
        lines.append(line)
    lines += [f"{key} = {value}" for key, value in values.items() if key not in seen]
    write_atomically(config, "\n".join(lines) + "\n", mode=config.stat().st_mode & 0o777)


def _is_dir(path: Path) -> bool:
    """A directory itself, not a link to one."""
    try:
        return stat.S_ISDIR(os.lstat(path).st_mode)
    except FileNotFoundError:
        return False


class LxcBackend(BlockingBackend):
    """Unprivileged LXC 5 containers cloned from the template, on the ``lxcbr0`` bridge.

    ``allow_privileged`` lets a host that cannot run user namespaces run privileged
    containers instead of refusing (loudly warned); it never makes a capable host privileged.
    ``host_ports`` are the host's TCP ports the containers must reach (the artifact server's,
    a Headscale's on the host): registered for this data dir, they are the only host ports
    containers reach besides DNS and DHCP; ``None`` keeps what the data dir registered last.
    """

    name = "lxc"

    def __init__(
        self,
        *,
        data_dir: Path,
        bridge: str = BRIDGE,
        allow_privileged: bool = False,
        host_ports: Iterable[int] | None = None,
    ) -> None:
        require_lxc()
        self.idmap = container_idmap(allow_privileged=allow_privileged)
        self.data_dir = data_dir = data_dir.resolve()
        self.lxcpath = data_dir / "lxc"
        self._make_dirs()
        self.bridge_name = bridge
        self.slots = SlotRegistry(on_change=lambda network: ensure_isolation(bridge, network))
        if host_ports is not None:
            self.slots.serve(self.lxcpath, host_ports)
        self._bridge: Bridge | None = None
        self._network_lock = threading.Lock()  # the first operations may come at once
        self._host = socket.gethostname()
        if self.idmap is not None:
            for vmid in self._vmids():
                config = self._config(vmid)
                if config.is_file() and IdMap.from_config(config.read_text()) is None:
                    self._make_unprivileged(vmid, self.idmap)

    # -- helpers ---------------------------------------------------------------------------

    def _make_dirs(self) -> None:
        """The data dir and ``lxc/``, reachable by the containers' root and nobody else.

        LXC sets up an unprivileged container's root filesystem as its mapped root, which needs
        search permission on every directory above it: missing parents are made 0755 (whatever
        the umask), an existing one closed to it is refused with the reason, and the data dir
        and ``lxc/`` get group search for the mapped root group only (0710): other users may
        not read, write or pass through them.
        """
        for above in reversed(self.data_dir.parents):
            if not above.exists():
                above.mkdir()
                above.chmod(0o755)
            if self.idmap is not None:
                self._check_passable(above, self.idmap)
        self.data_dir.mkdir(mode=0o700, exist_ok=True)
        self.lxcpath.mkdir(mode=0o700, exist_ok=True)
        if self.idmap is None:
            return
        for directory in (self.data_dir, self.lxcpath):
            info = directory.stat()
            if info.st_gid != self.idmap.root_gid:
                os.chown(directory, -1, self.idmap.root_gid)
            mode = (info.st_mode & 0o700) | 0o010
            if info.st_mode & 0o777 != mode:
                os.chmod(directory, mode)

    def _check_passable(self, directory: Path, idmap: IdMap) -> None:
        info = directory.stat()
        if (
            info.st_mode & 0o001
            or (info.st_uid == idmap.root_uid and info.st_mode & 0o100)
            or (info.st_gid == idmap.root_gid and info.st_mode & 0o010)
        ):
            return
        raise BackendUnavailable(
            f"containers cannot reach their files under {self.data_dir}: {directory} "
            f"(mode {stat.S_IMODE(info.st_mode):o}) is closed to their root (host uid "
            f"{idmap.root_uid}); use a data dir below directories others may pass through "
            f"(the default /var/lib/zlh is), or chmod o+x {directory}"
        )

    def _name(self, vmid: int) -> str:
        return f"{NAME_PREFIX}{vmid}"

    def _config(self, vmid: int) -> Path:
        return self.lxcpath / self._name(vmid) / "config"

    def _lxc(self, tool: str, vmid: int | str, *args: str, what: str) -> str:
        name = vmid if isinstance(vmid, str) else self._name(vmid)
        cmd = [tool, "-P", str(self.lxcpath), "-n", name, *args]
        if tool == "lxc-start":  # a tenant's processes never inherit the front's SCHED_BATCH
            cmd = ["chrt", "--other", "0", *cmd]
        log.debug("running %s", " ".join(cmd))
        try:
            # Own session: lxc-start's monitor must outlive whatever started the API. Umask
            # 022: a clone's overlay dirs become its / and must not inherit zlh up's 077.
            result = subprocess.run(
                cmd,
                capture_output=True,
                text=True,
                check=False,
                start_new_session=True,
                umask=0o022,
            )
        except FileNotFoundError as exc:
            raise BackendUnavailable(f"{tool} not found: {INSTALL_HINT}") from exc
        if result.returncode != 0:
            detail = (result.stderr or result.stdout).strip().splitlines()[-5:]
            raise BackendError(f"{what} failed: " + " / ".join(detail))
        return result.stdout

    def _vmids(self) -> Iterator[int]:
        """Containers of this backend, from ``lxc-ls`` (the host's records, not memory)."""
        found = set()
        for name in self._lxc_ls():
            match = _NAME.match(name)
            if match:
                found.add(int(match.group(1)))
        for path in self.lxcpath.glob(f".{NAME_PREFIX}*.rebuild"):  # an unfinished rebuild
            match = _REBUILD.match(path.name)
            if match and path.is_dir():
                found.add(int(match.group(1)))
        yield from sorted(found)

    def _lxc_ls(self) -> list[str]:
        try:
            result = subprocess.run(
                ["lxc-ls", "-P", str(self.lxcpath), "-1"],
                capture_output=True,
                text=True,
                check=False,
            )
        except FileNotFoundError as exc:
            raise BackendUnavailable(f"lxc-ls not found: {INSTALL_HINT}") from exc
        if result.returncode != 0:
            raise BackendError(f"lxc-ls failed: {result.stderr.strip()}")
        return result.stdout.split()

    def _address(self, vmid: int) -> str | None:
        value = _config_value(self._config(vmid), "lxc.net.0.ipv4.address")
        if value:
            return value.split("/")[0]
        if self._rebuild_dir(vmid).is_dir():  # between two clones of a rebuild: its slot's
            slot = self.slots.get(self.lxcpath, vmid)
            return slot.address if slot else None
        return None

    def _rebuild_dir(self, vmid: int) -> Path:
        return rebuild_dir(self.lxcpath, vmid)

    def _template_of(self, vmid: int) -> str | None:
        """The version of the template the container's overlay reads (its config says)."""
        try:
            lower, _ = self._layers(vmid)
        except BackendError:
            return None
        name = lower.parent.name
        if lower.name != "rootfs" or not name.startswith(TEMPLATE_PREFIX):
            return None
        return _SHIFTED.sub("", name.removeprefix(TEMPLATE_PREFIX))

    def _network(self) -> Bridge:
        """Bridge up, this data dir's containers in the slot registry, isolation rules loaded
        for every container on the host; once per backend object (idempotent)."""
        with self._network_lock:
            if self._bridge is None:
                bridge = ensure_bridge(self.bridge_name)
                # Under the create lock: a clone that a create has copied but not yet
                # configured is that create's to register, not a container to adopt.
                with file_lock(self.lxcpath / CREATE_LOCK):
                    for vmid in self._vmids():
                        self._slot(vmid, bridge)
                self.slots.sync()
                self._bridge = bridge
            return self._bridge

    def _slot(self, vmid: int, bridge: Bridge) -> Slot:
        """``vmid``'s slot; a container from before the registry is adopted with the names
        its config has, unless another container on the host holds them (then it gets new
        ones, written to its config: a running container takes them at its next start)."""
        found = self.slots.get(self.lxcpath, vmid)
        if found is not None:
            return found
        config = self._config(vmid)
        veth = _VETH.match(_config_value(config, "lxc.net.0.veth.pair") or "")
        number = int(veth.group(1)) if veth else None
        address = self._address(vmid)
        slot = self.slots.claim(self.lxcpath, vmid, bridge, number=number, address=address)
        if slot.number != number or slot.address != address:
            log.warning(
                "container %s had bridge port %s at %s, missing or another container's on "
                "this host: it gets %s at %s (a running container at its next start)",
                vmid,
                veth.group(0) if veth else None,
                address,
                slot.veth,
                slot.address,
            )
            self._write_network(vmid, bridge, slot)
        return slot

    def _write_network(self, vmid: int, bridge: Bridge, slot: Slot) -> None:
        _set_config_values(
            self._config(vmid),
            {
                "lxc.net.0.hwaddr": slot.mac,
                "lxc.net.0.veth.pair": slot.veth,
                "lxc.net.0.ipv4.address": f"{slot.address}/{bridge.network.prefixlen}",
            },
        )

    def _state(self, vmid: int) -> RunState:
        if not self._config(vmid).is_file():
            return RunState.STOPPED if self._rebuild_dir(vmid).is_dir() else RunState.ABSENT
        try:
            out = self._lxc("lxc-info", vmid, "-s", "-H", what=f"lxc-info of {vmid}")
        except BackendError:
            if not self._config(vmid).is_file():  # destroyed meanwhile
                return RunState.ABSENT
            raise
        return RunState.RUNNING if out.strip() == "RUNNING" else RunState.STOPPED

    def _info(self, vmid: int) -> ContainerInfo:
        state = self._state(vmid)
        return ContainerInfo(
            vmid=vmid,
            state=state,
            address=self._address(vmid) if state.exists else None,
            agent_port=AGENT_PORT,
            code_server_port=CODE_SERVER_PORT,
            node=self._host,
            template=self._template_of(vmid) if state.exists else None,
        )

    # -- create ----------------------------------------------------------------------------

    def _template(self) -> Template:
        """The current template, built for this backend's id map (or privileged mode)."""
        template = current_template(self.lxcpath)
        build = f"`zlh template build --data-dir {self.data_dir}`"
        if template is None:
            raise BackendError(f"no container template under {self.lxcpath}: run {build} first")
        built_for = IdMap.from_config(template.config.read_text())
        if built_for != self.idmap:
            mode = f"unprivileged ({built_for.label})" if built_for else "privileged"
            raise BackendError(
                f"the current template {template.name} is for {mode} containers, this host runs "
                f"{'unprivileged (' + self.idmap.label + ')' if self.idmap else 'privileged'} "
                f"ones: run {build} to rebuild it"
            )
        return template

    def _create(self, spec: ContainerSpec) -> ContainerInfo:
        template = self._template()
        bridge = self._network()
        name = self._name(spec.vmid)
        with file_lock(self.lxcpath / CREATE_LOCK):
            if (self.lxcpath / name).exists() or self._rebuild_dir(spec.vmid).exists():
                raise ContainerExists(f"container {spec.vmid} already exists ({name})")
            try:
                slot = self._clone(spec, template, bridge)
            except BaseException:
                self._remove(spec.vmid)
                raise
        log.info("created container %s at %s (bridge port %s)", name, slot.address, slot.veth)
        return self._info(spec.vmid)

    def _clone(self, spec: ContainerSpec, template: Template, bridge: Bridge) -> Slot:
        """The container as a fresh overlay clone of ``template``, configured for ``spec`` with
        its slot (the one it holds, else a new one): what ``create`` and ``rebuild`` both do.
        Called under the create lock, for a name that is free."""
        self._lxc(
            "lxc-copy",
            template.name,
            "-N",
            self._name(spec.vmid),
            "-s",
            "-B",
            "overlay",
            what=f"cloning the template for container {spec.vmid}",
        )
        # Claimed once the clone's config exists: the registry drops slots without one.
        slot = self.slots.claim(self.lxcpath, spec.vmid, bridge)
        forget_neighbour(bridge.name, slot.address)  # an earlier container's MAC, if any
        self._configure(spec, bridge, slot)
        return slot

    def _configure(self, spec: ContainerSpec, bridge: Bridge, slot: Slot) -> None:
        version = cgroup_version()
        lines = [
            f"# zlh: container {spec.vmid}",
            f"lxc.net.0.link = {bridge.name}",
            f"lxc.net.0.hwaddr = {slot.mac}",
            f"lxc.net.0.veth.pair = {slot.veth}",
            f"lxc.net.0.ipv4.address = {slot.address}/{bridge.network.prefixlen}",
            f"lxc.net.0.ipv4.gateway = {bridge.address}",
            *limit_lines(spec.resources, version),
        ]
        if spec.tun:
            lines += tun_lines(version)
        lines += layer_lines(spec.layers)
        config = self._config(spec.vmid)
        with config.open("a") as handle:
            handle.write("\n" + "\n".join(lines) + "\n")
        self._write_secret(spec.vmid, spec.agent_secret)

    def _layers(self, vmid: int) -> tuple[Path, Path]:
        """The clone's overlay lower dir (a template's rootfs) and its own upper dir."""
        rootfs = _config_value(self._config(vmid), "lxc.rootfs.path") or ""
        kind, _, dirs = rootfs.partition(":")
        lower, _, upper = dirs.rpartition(":")
        if kind != "overlay" or not lower or not upper:
            raise BackendError(f"container {vmid} is not an overlay clone ({rootfs!r})")
        return Path(lower), Path(upper)

    def _write_secret(self, vmid: int, secret: str) -> None:
        """The agent's secret, in the fresh clone's (still empty) upper dir.

        A directory in the upper layer hides the attributes of the same directory below, so
        ``etc`` and ``etc/zlh`` are made with the template's own owner and mode (container
        root's, 0755 and 0700), and the file 0600 for container root.
        """
        lower, upper = self._layers(vmid)
        self._upper_dirs(lower, upper, "etc", TOKEN_PATH.lstrip("/").rsplit("/", 1)[0])
        owner = (lower / "etc").stat()
        target = upper / TOKEN_PATH.lstrip("/")
        fd = os.open(target, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_NOFOLLOW, 0o600)
        with os.fdopen(fd, "w") as handle:
            os.fchown(handle.fileno(), owner.st_uid, owner.st_gid)
            handle.write(secret)

    @staticmethod
    def _upper_dirs(lower: Path, upper: Path, *rels: str) -> None:
        """Directories ``rels`` (parents first) in a fresh clone's upper dir, each with the owner
        and mode of the same directory below (one in the upper layer hides those)."""
        for rel in rels:
            if not (upper / rel).exists():
                like = (lower / rel).stat()
                os.mkdir(upper / rel, 0o700)
                os.lchown(upper / rel, like.st_uid, like.st_gid)
                os.chmod(upper / rel, stat.S_IMODE(like.st_mode))

    def _remove(self, vmid: int, *, keep_slot: bool = False) -> None:
        """Remove a half-created clone (only called for a name we just checked was free)."""
        if (self.lxcpath / self._name(vmid)).exists():
            try:
                self._lxc("lxc-destroy", vmid, what=f"removing container {vmid}")
            except BackendError:
                shutil.rmtree(self.lxcpath / self._name(vmid), ignore_errors=True)
        if not keep_slot:
            self._release(vmid)

    # -- rebuild ---------------------------------------------------------------------------

    def _rebuild(self, spec: ContainerSpec) -> ContainerInfo:
        """A fresh system from the current template, ``/home/dev`` kept (module docstring).

        Every step is safe to repeat: the home is renamed into the rebuild directory once (a
        home already there is the container's; a ``home/dev`` in a clone's layer then is not,
        as nothing starts a container while its rebuild directory exists), the old clone is
        destroyed only once the home is out of it, and a failed clone is removed again, the
        slot and the home staying in the rebuild directory for the next rebuild.
        """
        vmid = spec.vmid
        state = self._state(vmid)
        if not state.exists:
            raise BackendError(f"container {vmid} does not exist")
        if state is RunState.RUNNING:
            raise BackendError(f"container {vmid} is running: stop it before rebuilding it")
        template = self._template()
        bridge = self._network()
        kept = self._rebuild_dir(vmid)
        home = kept / "home"
        if self._config(vmid).is_file():
            self._slot(vmid, bridge)  # registered before the config goes
            _, upper = self._layers(vmid)
            kept.mkdir(mode=0o700, exist_ok=True)
            if not os.path.lexists(home) and _is_dir(upper / "home" / "dev"):
                os.rename(upper / "home" / "dev", home)
                fsync_dir(kept)
            self._lxc("lxc-destroy", vmid, what=f"removing the old system of container {vmid}")
        with file_lock(self.lxcpath / CREATE_LOCK):
            try:
                slot = self._clone(spec, template, bridge)
            except BaseException:
                self._remove(vmid, keep_slot=True)
                raise
        if os.path.lexists(home):
            lower, upper = self._layers(vmid)
            self._upper_dirs(lower, upper, "home")
            os.rename(home, upper / "home" / "dev")
            fsync_dir(upper / "home")
        kept.rmdir()
        log.info(
            "rebuilt container %s from template %s at %s", vmid, template.version, slot.address
        )
        return self._info(vmid)

    # -- migration of privileged containers --------------------------------------------------

    def _make_unprivileged(self, vmid: int, idmap: IdMap) -> None:
        """Turn a privileged clone (made before containers were unprivileged) into an
        unprivileged one with its files and state: stopped (cleanly), its upper layer shifted,
        its lower layer pointed at a shifted copy of its template, started again if it ran."""
        was_running = self._state(vmid) is RunState.RUNNING
        log.warning(
            "container %s is privileged (container root is host root): making it "
            "unprivileged (%s)%s",
            vmid,
            idmap.label,
            "; it is stopped and started again" if was_running else "",
        )
        self._stop(vmid, 10.0)
        lower, upper = self._layers(vmid)
        shifted = self._shifted_template(lower, idmap)
        for layer in (upper, upper.parent / "work"):
            if layer.exists():
                shift_tree(layer, idmap)
        home = self.lxcpath / self._name(vmid)
        for directory in (home, home / "rootfs", upper.parent):  # what LXC itself would chown
            if directory.exists():
                os.lchown(directory, idmap.root_uid, idmap.root_gid)
        config = self._config(vmid)
        lines = config.read_text().replace(f"{lower}:", f"{shifted}:").splitlines()
        # userns.conf must follow common.conf (it clears what common.conf drops), as in the
        # template's own config.
        after = next((i + 1 for i, line in enumerate(lines) if line.endswith("/common.conf")), 0)
        lines[after:after] = idmap.config_lines()
        write_atomically(config, "\n".join(lines) + "\n", mode=config.stat().st_mode & 0o777)
        if was_running:
            self._start(vmid)

    def _shifted_template(self, lower: Path, idmap: IdMap) -> Path:
        """A copy of a privileged template's rootfs shifted into ``idmap`` (made once)."""
        source = lower.parent
        if source.parent != self.lxcpath or not source.name.startswith(TEMPLATE_PREFIX):
            raise BackendError(f"cannot migrate a clone of {lower}: no template of {self.lxcpath}")
        target = self.lxcpath / f"{source.name}-u{idmap.uid_start}"
        if not (target / "rootfs").is_dir():
            partial = target.with_name(f".{target.name}.partial")
            shutil.rmtree(partial, ignore_errors=True)
            partial.mkdir()
            copy_tree(lower, partial / "rootfs")
            shift_tree(partial / "rootfs", idmap)
            partial.rename(target)
        return target / "rootfs"

    # -- lifecycle -------------------------------------------------------------------------

    def _start(self, vmid: int) -> ContainerInfo:
        state = self._state(vmid)
        if not state.exists:
            raise BackendError(f"container {vmid} does not exist")
        if state is RunState.RUNNING:
            return self._info(vmid)
        if self._rebuild_dir(vmid).exists():
            raise BackendError(
                f"container {vmid} has an unfinished rebuild (its home is kept in "
                f"{self._rebuild_dir(vmid)}): rebuild it again to finish it"
            )
        slot = self._slot(vmid, self._network())
        self.slots.sync()  # the rules, should anything have flushed them since
        # A monitor killed hard leaves its veth behind, and the next start fails on it. The
        # name is this container's alone on the host (the registry), so deleting it is safe.
        subprocess.run(["ip", "link", "delete", slot.veth], capture_output=True, check=False)
        self._lxc("lxc-start", vmid, what=f"starting container {vmid}")
        self._lxc("lxc-wait", vmid, "-s", "RUNNING", "-t", "30", what=f"waiting for {vmid}")
        return self._info(vmid)

    def _stop(self, vmid: int, timeout_s: float) -> None:
        if self._state(vmid) is not RunState.RUNNING:
            return
        try:
            self._lxc(
                "lxc-stop",
                vmid,
                "-t",
                str(max(1, round(timeout_s))),
                what=f"stopping container {vmid}",
            )
        except BackendError as exc:
            log.warning("graceful stop of %s failed (%s); killing it", vmid, exc.message)
            self._lxc("lxc-stop", vmid, "-k", what=f"killing container {vmid}")
        if self._state(vmid) is RunState.RUNNING:
            raise BackendError(f"container {vmid} is still running after lxc-stop")

    def _destroy(self, vmid: int) -> None:
        kept = self._rebuild_dir(vmid)
        if not self._config(vmid).is_file() and not kept.exists():
            return
        if self._config(vmid).is_file():
            self._stop(vmid, 5.0)
            self._lxc("lxc-destroy", vmid, what=f"destroying container {vmid}")
        if kept.exists():
            shutil.rmtree(kept)  # never follows a link planted in the home
        self._release(vmid)
        log.info("destroyed container %s", self._name(vmid))

    def _release(self, vmid: int) -> None:
        """Give ``vmid``'s slot back, and the host's ARP entry for its address with it."""
        slot = self.slots.release(self.lxcpath, vmid)
        if slot is not None:
            forget_neighbour(slot.bridge, slot.address)

    def _list_all(self) -> list[ContainerInfo]:
        infos = (self._info(v) for v in sorted(self._vmids()))
        return [info for info in infos if info.state.exists]

    def get_state(self) -> dict[str, Any]:
        return {"lxcpath": str(self.lxcpath)}

    def layers_dir(self) -> Path:
        return self.data_dir / "layers"

    def mounted_layers(self) -> dict[int, list[Path]]:
        found: dict[int, list[Path]] = {}
        for vmid in self._vmids():
            for entry in _config_values(self._config(vmid), "lxc.mount.entry"):
                source, _, rest = entry.partition(" ")
                if rest.endswith(f" none {LAYER_MOUNT_OPTIONS} 0 0"):
                    found.setdefault(vmid, []).append(Path(source))
        return found

    def _usage(self, vmids: list[int]) -> dict[int, Usage]:
        """From the cgroup files; a container not at LXC's default place is found through
        its init process (one ``lxc-info`` each)."""
        version = cgroup_version()
        found: dict[int, Usage] = {}
        for vmid in vmids:
            dirs = payload_dirs(self._name(vmid), version) or self._init_dirs(vmid, version)
            if dirs is None:
                continue
            try:
                found[vmid] = read_usage(dirs, version)
            except (OSError, ValueError):
                continue  # stopped meanwhile
        return found

    def _init_dirs(self, vmid: int, version: int) -> tuple[Path, Path] | None:
        if not self._config(vmid).is_file():
            return None
        try:
            pid = self._lxc("lxc-info", vmid, "-p", "-H", what=f"lxc-info of {vmid}").strip()
        except BackendError:
            return None
        return dirs_of_pid(int(pid), version) if pid.isdigit() else None

    def _cgroup(self, vmid: int, key: str) -> int:
        return int(self._lxc("lxc-cgroup", vmid, key, what=f"reading {key} of {vmid}").strip())

    def memory_bytes(self, vmid: int) -> int:
        """Memory the running container's cgroup charges to the host (benchmarks, ops)."""
        v2 = cgroup_version() == 2
        return self._cgroup(vmid, "memory.current" if v2 else "memory.usage_in_bytes")

    def memory_limit_bytes(self, vmid: int) -> int:
        """The memory limit the running container's cgroup enforces."""
        v2 = cgroup_version() == 2
        return self._cgroup(vmid, "memory.max" if v2 else "memory.limit_in_bytes")
