"""Proxmox VE clusters through their REST API (``proxmoxer``, API-token auth, TLS verified).

Containers are created from the CT template tarball ``zlh template export`` writes
(``POST /nodes/{node}/lxc`` with ``ostemplate``) or cloned from a template CT
(``POST /nodes/{node}/lxc/{template}/clone``), tagged ``zlh`` and named ``zlh-<vmid>``, so
``list()`` finds them from the cluster's own records. Every state change is a task: the
backend waits on its UPID and fails with the task's ``exitstatus``.

The agent secret: Proxmox's API cannot write files into a CT, but ``create`` accepts
``ssh-public-keys``, which it writes to ``/root/.ssh/authorized_keys``. The secret travels
there as a comment line the template's boot unit moves to ``/etc/zlh/agent-token``. Clones
get no such parameter, so clone mode needs the secret delivered another way (see
docs/operations.md); it is refused unless ``allow_clone_without_secret`` is set.

Containers are unprivileged (container root is a subordinate uid on the node): created with
``unprivileged=1``; a clone inherits the flag from its template, so a privileged template is
refused unless ``allow_privileged`` is set (then used with a warning).

``/home/dev`` is a mount-point volume of its own (``mp0``, ``home_gb`` GiB on the rootfs
storage), so a rebuild can keep it while the system is made anew under the same vmid. PVE
cannot give a new rootfs to an existing CT, nor renumber one, so the home is parked on a
*holder* CT (``zlh-home-<vmid>``, never started) while the old CT is destroyed and a new one is
made: ``move_volume`` with ``target-vmid`` reassigns ``mp0`` (both CTs stopped, on one node),
out to the holder and back. Each step is read off the cluster, so an interrupted rebuild goes
on from where it stopped; a word made for the rebuild, in the ``description`` of the holder
and of the new CT, tells the new system from the old one. A CT made before homes had their own
volume has no ``mp0`` and is not rebuilt (its home would be lost). ``template`` is None: the
cluster's records of a CT do not name the template it came from.

Shared layers: a token may not bind-mount host directories, so with ``template_file`` (the
base tarball on the API host) the layers a spec names are baked into a CT template made for
exactly that set (:mod:`zlh.backends.proxmox_templates`), uploaded once per node to
``template_storage`` and created from; the CT is tagged ``zlh-layers-<digest>`` so ``gc`` can
tell which sets are in use. Without ``template_file`` no layers are asked for, and the agent
installs everything itself.

proxmoxer and requests errors are translated into BackendError here, at the boundary.
"""

from __future__ import annotations

import builtins
import contextlib
import logging
import os
import secrets
import threading
import time
from collections.abc import Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Final

from zlh.backends.base import (
    AGENT_PORT,
    BackendError,
    BackendUnavailable,
    BlockingBackend,
    ContainerExists,
    ContainerInfo,
    ContainerSpec,
    LayerMount,
    RunState,
    Usage,
)
from zlh.backends.proxmox_templates import BakedTemplate, TemplateBaker

__all__ = ["ProxmoxBackend", "ProxmoxSettings"]

log = logging.getLogger(__name__)

TAG = "zlh"
NAME_PREFIX = "zlh-"
# The CT that holds a container's home while a rebuild replaces its system.
HOLDER_PREFIX = "zlh-home-"
HOLDER_TAG = "zlh-home"
HOME_VOLUME = "mp0"
HOME_PATH = "/home/dev"
# Unprivileged CTs only; nesting because the template boots systemd (252), whose service
# sandboxing needs it in an unprivileged CT. For an unprivileged CT a token with VM.Allocate
# may set nesting (any other feature flag is root@pam only).
CT_FEATURES = "nesting=1"
# The tag naming the baked template's layer set a CT was made from (zlh-layers-<digest>).
LAYERS_TAG = "zlh-layers-"


# status/current calls in flight at once when reading every container's use.
_USAGE_CALLS: Final = 8


@dataclass(frozen=True, kw_only=True)
class ProxmoxSettings:
    host: str  # API host (any cluster node), optionally host:port
    user: str  # the token's user, e.g. zlh@pve
    token_name: str
    token_value: str
    verify_tls: bool | str = True  # True, False (never in production) or a CA bundle path
    node: str | None = None  # None: the online node with the lowest load
    ostemplate: str | None = None  # e.g. local:vztmpl/debian-12-zlh_<version>_amd64.tar.zst
    clone_from: int | None = None  # a template CT's vmid, instead of ostemplate
    storage: str = "local-lvm"  # rootfs storage (create mode) and the home volume's
    home_gb: int = 10  # the /home/dev volume (mp0), kept across rebuilds
    bridge: str = "vmbr0"
    ip: str = "dhcp"  # net0 ip= (dhcp, or a CIDR when the operator pins one)
    task_timeout_s: float = 300.0  # per Proxmox task (create, start, stop, destroy)
    request_timeout_s: float = 30.0  # per HTTP request
    allow_clone_without_secret: bool = False
    # Accept a clone template that is not unprivileged (its clones would be privileged too);
    # ApiSettings.allow_privileged (ZLH_ALLOW_PRIVILEGED). Created CTs are always unprivileged.
    allow_privileged: bool = False
    # The base CT template tarball on the API host (`zlh template export`): containers get
    # their shared layers baked into a template made from it (uploaded to template_storage).
    # Not in clone mode. Without it (and ostemplate) the base is uploaded for layerless CTs.
    template_file: Path | None = None
    template_storage: str = "local"  # a storage with vztmpl content, for baked templates

    def __post_init__(self) -> None:
        if self.template_file is not None:
            if self.clone_from is not None:
                raise ValueError("template_file bakes CT templates: it needs create mode")
        elif (self.ostemplate is None) == (self.clone_from is None):
            raise ValueError("set exactly one of ostemplate (create) or clone_from (clone)")

    @classmethod
    def from_env(cls, **overrides: Any) -> ProxmoxSettings:
        """Settings from ``ZLH_PROXMOX_*`` variables; ``overrides`` win."""
        env = os.environ
        values: dict[str, Any] = {
            "host": env.get("ZLH_PROXMOX_HOST"),
            "user": env.get("ZLH_PROXMOX_USER"),
            "token_name": env.get("ZLH_PROXMOX_TOKEN_NAME"),
            "token_value": env.get("ZLH_PROXMOX_TOKEN_VALUE"),
            "node": env.get("ZLH_PROXMOX_NODE"),
            "ostemplate": env.get("ZLH_PROXMOX_OSTEMPLATE"),
            "storage": env.get("ZLH_PROXMOX_STORAGE", "local-lvm"),
            "bridge": env.get("ZLH_PROXMOX_BRIDGE", "vmbr0"),
            "template_storage": env.get("ZLH_PROXMOX_TEMPLATE_STORAGE", "local"),
        }
        if env.get("ZLH_PROXMOX_TEMPLATE_FILE"):
            values["template_file"] = Path(env["ZLH_PROXMOX_TEMPLATE_FILE"])
        if env.get("ZLH_PROXMOX_HOME_GB"):
            values["home_gb"] = int(env["ZLH_PROXMOX_HOME_GB"])
        if env.get("ZLH_PROXMOX_CLONE_FROM"):
            values["clone_from"] = int(env["ZLH_PROXMOX_CLONE_FROM"])
        verify = env.get("ZLH_PROXMOX_VERIFY_TLS", "true")
        values["verify_tls"] = {"true": True, "false": False}.get(verify.lower(), verify)
        values.update(overrides)
        missing = [k for k in ("host", "user", "token_name", "token_value") if not values.get(k)]
        if missing:
            names = ", ".join(f"ZLH_PROXMOX_{k.upper()}" for k in missing)
            raise BackendUnavailable(f"the proxmox backend needs {names} (see docs/operations.md)")
        return cls(**{k: v for k, v in values.items() if v is not None})


def _message(exc: Exception) -> str:
    """A person-readable reason from a proxmoxer/requests error."""
    status = getattr(exc, "status_code", None)
    if status is not None:
        detail = getattr(exc, "status_message", "") or ""
        content = getattr(exc, "content", "") or ""
        return f"HTTP {status} {detail} {content}".strip()
    return f"{type(exc).__name__}: {exc}"


def _load(node: dict[str, Any]) -> float:
    """CPU use (0..1 per node) plus memory use (0..1): the least loaded gets the container."""
    memory = float(node.get("mem", 0)) / max(float(node.get("maxmem", 1)), 1.0)
    return float(node.get("cpu", 0.0)) + memory


class ProxmoxBackend(BlockingBackend):
    """Containers on a Proxmox VE cluster."""

    name = "proxmox"

    def __init__(self, settings: ProxmoxSettings, *, data_dir: Path | None = None) -> None:
        try:
            from proxmoxer import ProxmoxAPI
        except ImportError as exc:  # pragma: no cover - an api-extra dependency
            raise BackendUnavailable(
                "the proxmox backend needs proxmoxer: pip install zlh[api]"
            ) from exc
        self.settings = settings
        host, _, port = settings.host.partition(":")
        self._api = ProxmoxAPI(
            host,
            port=int(port or 8006),
            user=settings.user,
            token_name=settings.token_name,
            token_value=settings.token_value,
            verify_ssl=settings.verify_tls,
            timeout=settings.request_timeout_s,
            service="PVE",
        )
        self._data_dir = data_dir
        # The baked CT templates (None without template_file: nothing is baked).
        self.baker = (
            TemplateBaker(settings.template_file, data_dir / "proxmox-templates")
            if settings.template_file is not None and data_dir is not None
            else None
        )
        self._uploads: dict[tuple[str, str], threading.Lock] = {}
        self._uploads_lock = threading.Lock()

    # -- HTTP ------------------------------------------------------------------------------

    def _call(self, method: str, path: str, what: str, **params: Any) -> Any:
        """One API call; every proxmoxer/requests failure becomes a BackendError."""
        resource = self._api(path.lstrip("/"))
        try:
            return getattr(resource, method)(**params)
        except Exception as exc:  # proxmoxer.ResourceException, requests.RequestException, …
            status = getattr(exc, "status_code", None)
            text = _message(exc)
            if status == 401:
                raise BackendUnavailable(f"{what}: Proxmox refused the API token ({text})") from exc
            if status == 595 or "no route" in text.lower():
                raise BackendError(f"{what}: node unreachable ({text})") from exc
            if "already exists" in text:
                raise ContainerExists(f"{what}: {text}") from exc
            raise BackendError(f"{what} failed: {text}") from exc

    def _wait_task(self, node: str, upid: str, what: str) -> None:
        deadline = time.monotonic() + self.settings.task_timeout_s
        delay = 0.1
        while True:
            task = self._call("get", f"nodes/{node}/tasks/{upid}/status", what)
            if task.get("status") == "stopped":
                exit_status = task.get("exitstatus", "")
                if exit_status != "OK":
                    raise BackendError(f"{what} failed: {exit_status or 'task ended without OK'}")
                return
            if time.monotonic() > deadline:
                raise BackendError(f"{what}: task {upid} still running after the timeout")
            time.sleep(delay)
            delay = min(delay * 2, 2.0)

    # -- placement -------------------------------------------------------------------------

    def _pick_node(self) -> str:
        if self.settings.node:
            return self.settings.node
        nodes = [
            n for n in self._call("get", "nodes", "listing nodes") if n.get("status") == "online"
        ]
        if not nodes:
            raise BackendError("no online Proxmox node")
        return str(min(nodes, key=_load)["node"])

    def _find(self, vmid: int) -> dict[str, Any] | None:
        """The cluster's record of our container ``vmid`` (node, status), or None."""
        for item in self._resources():
            if int(item["vmid"]) == vmid:
                return item
        return None

    def _resources(self) -> list[dict[str, Any]]:
        """Our containers (holders of a home under rebuild are not containers)."""
        return [i for i in self._all_cts() if not str(i.get("name", "")).startswith(HOLDER_PREFIX)]

    def _all_cts(self) -> list[dict[str, Any]]:
        items = self._call("get", "cluster/resources", "listing containers", type="vm")
        return [
            i
            for i in items
            if i.get("type") == "lxc" and str(i.get("name", "")).startswith(NAME_PREFIX)
        ]

    def _holder(self, vmid: int) -> dict[str, Any] | None:
        name = f"{HOLDER_PREFIX}{vmid}"
        return next((i for i in self._all_cts() if i.get("name") == name), None)

    def suggest_vmid(self, minimum: int = 100) -> int:
        """A free cluster-wide vmid from ``GET /cluster/nextid``, re-checked and retried."""
        candidate = max(int(self._call("get", "cluster/nextid", "allocating a vmid")), minimum)
        for _ in range(20):
            try:
                return int(self._call("get", "cluster/nextid", "checking a vmid", vmid=candidate))
            except ContainerExists as exc:
                log.info("vmid %s taken (%s), trying the next", candidate, exc.message)
                candidate += 1
        raise BackendError("could not find a free vmid after 20 tries")

    # -- sync operations -------------------------------------------------------------------

    def _info(self, vmid: int) -> ContainerInfo:
        try:
            item = self._find(vmid)
        except BackendError as exc:
            log.warning("status of %s unknown: %s", vmid, exc.message)
            raise
        if item is None:
            return ContainerInfo(vmid=vmid, state=RunState.ABSENT)
        node = str(item["node"])
        running = item.get("status") == "running"
        return ContainerInfo(
            vmid=vmid,
            state=RunState.RUNNING if running else RunState.STOPPED,
            address=self._address(node, vmid) if running else None,
            agent_port=AGENT_PORT,
            node=node,
        )

    def _usage(self, vmids: list[int]) -> dict[int, Usage]:
        """One ``cluster/resources`` for where each runs, then each running container's
        ``status/current`` (cpu: cores in use now, mem: bytes), a few at a time."""
        wanted = set(vmids)
        running = [
            (int(item["vmid"]), str(item["node"]))
            for item in self._resources()
            if int(item["vmid"]) in wanted and item.get("status") == "running"
        ]
        with ThreadPoolExecutor(_USAGE_CALLS, thread_name_prefix="proxmox-usage") as pool:
            found = pool.map(lambda pair: (pair[0], self._current(*pair)), running)
            return {vmid: usage for vmid, usage in found if usage is not None}

    def _current(self, vmid: int, node: str) -> Usage | None:
        try:
            current = self._call(
                "get", f"nodes/{node}/lxc/{vmid}/status/current", f"reading the use of {vmid}"
            )
        except BackendError as exc:
            log.info("use of container %s unknown: %s", vmid, exc.message)
            return None
        if current.get("status") != "running":
            return None
        return Usage(
            cpu_cores=float(current.get("cpu", 0.0)), memory_bytes=int(current.get("mem", 0))
        )

    def _address(self, node: str, vmid: int) -> str | None:
        interfaces = self._call("get", f"nodes/{node}/lxc/{vmid}/interfaces", "reading addresses")
        for interface in interfaces or []:
            inet = interface.get("inet")
            if interface.get("name") != "lo" and inet:
                return str(inet).split("/")[0]
        return None

    def _create(self, spec: ContainerSpec) -> ContainerInfo:
        if self._find(spec.vmid) is not None:
            raise ContainerExists(f"container {spec.vmid} already exists")
        node = self._pick_node()
        self._new_ct(node, spec, hostname=f"{NAME_PREFIX}{spec.vmid}", tags=TAG)
        what = f"giving container {spec.vmid} its home volume"
        home = f"{self.settings.storage}:{self.settings.home_gb},mp={HOME_PATH},backup=1"
        self._call("put", f"nodes/{node}/lxc/{spec.vmid}/config", what, **{HOME_VOLUME: home})
        return ContainerInfo(vmid=spec.vmid, state=RunState.STOPPED, node=node)

    def _new_ct(
        self,
        node: str,
        spec: ContainerSpec,
        *,
        hostname: str,
        tags: str,
        net0: str | None = None,
        description: str | None = None,
    ) -> None:
        """A CT ``spec.vmid`` on ``node`` from the template (created or cloned), no home yet."""
        s, r = self.settings, spec.resources
        if spec.tun:
            # /dev/net/tun needs raw lxc.* config, which only root@pam can set (not a token).
            log.warning(
                "container %s: tun requested; Proxmox CTs get it only via "
                "raw lxc config (see docs/operations.md); tailscale falls back to "
                "userspace networking",
                spec.vmid,
            )
        what = f"creating container {spec.vmid} on {node}"
        extra = {"description": description} if description else {}
        if s.clone_from is not None:
            if not s.allow_clone_without_secret:
                raise BackendError("clone mode cannot deliver the agent secret through the API")
            self._check_clone_template(node, s.clone_from)
            upid = self._call(
                "post",
                f"nodes/{node}/lxc/{s.clone_from}/clone",
                what,
                newid=spec.vmid,
                hostname=hostname,
                full=0,
            )
            self._wait_task(node, upid, what)
            self._call(
                "put",
                f"nodes/{node}/lxc/{spec.vmid}/config",
                what,
                memory=r.memory_mb,
                cores=r.cores,
                tags=tags,
                **({"net0": net0} if net0 else {}),
                **extra,
            )
        else:
            with self._ostemplate(node, spec.layers) as (ostemplate, digest):
                upid = self._call(
                    "post",
                    f"nodes/{node}/lxc",
                    what,
                    vmid=spec.vmid,
                    ostemplate=ostemplate,
                    hostname=hostname,
                    memory=r.memory_mb,
                    swap=0,
                    cores=r.cores,
                    rootfs=f"{s.storage}:{r.disk_gb}",
                    net0=net0 or f"name=eth0,bridge={s.bridge},ip={s.ip},firewall=1",
                    unprivileged=1,
                    features=CT_FEATURES,
                    tags=f"{tags};{LAYERS_TAG}{digest}" if digest else tags,
                    **extra,
                    **{"ssh-public-keys": f"# zlh-agent-token {spec.agent_secret}\n"},
                )
                self._wait_task(node, upid, what)

    # -- baked templates (shared layers) -----------------------------------------------------

    def layers_dir(self) -> Path | None:
        """The API host's layers, to bake from: only where a base template is configured."""
        if self.baker is None or self._data_dir is None:
            return None
        return self._data_dir / "layers"

    def mounted_layers(self) -> dict[int, builtins.list[Path]]:
        """The layers baked into the template each CT was made from (its ``zlh-layers-`` tag),
        as the API host's layer directories: what ``zlh layers gc`` keeps."""
        root = self.layers_dir()
        if self.baker is None or root is None:
            return {}
        found: dict[int, builtins.list[Path]] = {}
        for item in self._resources():
            tags = str(item.get("tags", "")).replace(",", ";").split(";")
            digest = next(
                (t.removeprefix(LAYERS_TAG) for t in tags if t.startswith(LAYERS_TAG)), ""
            )
            baked = self.baker.read(digest) if digest else None
            if baked is not None:
                found[int(item["vmid"])] = [root / sha for sha, _ in baked.layers]
        return found

    @contextlib.contextmanager
    def _ostemplate(
        self, node: str, layers: Sequence[LayerMount]
    ) -> Iterator[tuple[str, str | None]]:
        """The ostemplate volid for ``layers`` on ``node`` (baked and uploaded first where
        needed) and the layer set's digest; held while the CT is made from it."""
        s, baker = self.settings, self.baker
        if not layers and s.ostemplate:
            yield s.ostemplate, None
            return
        if baker is None:
            raise BackendError("baking CT templates needs template_file and the data dir")
        if not layers:
            yield self._ensure_uploaded(node, baker.base, None), None
            return
        baked = baker.bake(layers)
        with baker.using(baked):
            yield self._ensure_uploaded(node, baker.path(baked.name), baked), baked.digest

    def _template_volid(self, name: str) -> str:
        return f"{self.settings.template_storage}:vztmpl/{name}"

    def _templates_on(self, node: str) -> set[str]:
        storage = self.settings.template_storage
        items = self._call(
            "get",
            f"nodes/{node}/storage/{storage}/content",
            f"listing the CT templates on {storage} of {node}",
            content="vztmpl",
        )
        return {str(item.get("volid")) for item in items or []}

    def _ensure_uploaded(self, node: str, path: Path, baked: BakedTemplate | None) -> str:
        """``path``'s volid on the template storage of ``node``, uploaded once (one upload
        per node and template at a time; with its sha256 checked by PVE where known)."""
        storage, volid = self.settings.template_storage, self._template_volid(path.name)
        with self._uploads_lock:
            lock = self._uploads.setdefault((node, volid), threading.Lock())
        with lock:
            if volid in self._templates_on(node):
                return volid
            what = f"uploading CT template {path.name} to {storage} on {node}"
            if baked is not None and self.baker is not None and not self.baker.intact(baked):
                self.baker.remove_local(baked)
                raise BackendError(
                    f"{what}: it changed on this host since it was baked; removed, the next "
                    "container made from these layers bakes it again"
                )
            checksum = {"checksum": baked.sha256, "checksum-algorithm": "sha256"} if baked else {}
            try:
                data = path.open("rb")
            except OSError as exc:
                raise BackendError(f"{what}: {exc}") from exc
            with data:
                upid = self._call(
                    "post",
                    f"nodes/{node}/storage/{storage}/upload",
                    what,
                    content="vztmpl",
                    filename=data,
                    **checksum,
                )
            self._wait_task(node, upid, what)
            log.info("uploaded CT template %s to %s on %s", path.name, storage, node)
            return volid

    def collect_baked_templates(
        self, in_use: set[str], *, dry_run: bool = False
    ) -> builtins.list[str]:
        """Remove baked templates (on every online node's template storage and on this host)
        whose layers are not all ``in_use``, or that were baked from another base; one being
        used for a create right now is left alone. Returns the names removed."""
        baker = self.baker
        if baker is None:
            return []
        known = baker.index()
        nodes = [
            str(n["node"])
            for n in self._call("get", "nodes", "listing nodes")
            if n.get("status") == "online"
        ]
        stored = {node: self._templates_on(node) for node in nodes}
        prefix = self._template_volid("")
        names = set(known) | {
            v.removeprefix(prefix)
            for volids in stored.values()
            for v in volids
            if v.startswith(prefix) and baker.baked(v.removeprefix(prefix))
        }
        removed = []
        for name in sorted(names):
            baked = known.get(name)
            if baked is not None and baked.base == baker.base.name and baked.shas <= in_use:
                continue
            digest = baked.digest if baked else name.removeprefix(f"{baker.prefix}-")[:12]
            with baker.removing(digest) as free:
                if not free:
                    continue
                if not dry_run:
                    self._delete_template(nodes, name)
                    if baked is not None:
                        baker.remove_local(baked)
                removed.append(name)
        return removed

    def _delete_template(self, nodes: builtins.list[str], name: str) -> None:
        storage, volid = self.settings.template_storage, self._template_volid(name)
        for node in nodes:
            if volid not in self._templates_on(node):  # a shared storage: gone already
                continue
            what = f"removing CT template {name} from {storage} on {node}"
            upid = self._call("delete", f"nodes/{node}/storage/{storage}/content/{volid}", what)
            self._wait_task(node, upid, what)

    def _check_clone_template(self, node: str, template: int) -> None:
        """Clones inherit ``unprivileged`` from their template (the clone call cannot set it):
        a privileged template is refused unless the operator allowed privileged containers."""
        config = self._call(
            "get", f"nodes/{node}/lxc/{template}/config", f"reading template CT {template}"
        )
        if str(config.get("unprivileged", 0)) == "1":
            return
        message = (
            f"template CT {template} is privileged, and so would be its clones (container root "
            "= host root)"
        )
        if not self.settings.allow_privileged:
            raise BackendError(
                f"{message}; make an unprivileged template (pct restore --unprivileged 1 from a "
                "backup of it, then pct template), or set allow_privileged to accept it"
            )
        log.warning("%s: accepted because allow_privileged is set", message)

    def _lifecycle(self, vmid: int, action: str, **params: Any) -> None:
        item = self._find(vmid)
        if item is None:
            raise BackendError(f"container {vmid} does not exist")
        node = str(item["node"])
        what = f"{action} of container {vmid}"
        upid = self._call("post", f"nodes/{node}/lxc/{vmid}/status/{action}", what, **params)
        self._wait_task(node, upid, what)

    def _start(self, vmid: int) -> ContainerInfo:
        info = self._info(vmid)
        if not info.state.exists:
            raise BackendError(f"container {vmid} does not exist")
        if info.state is not RunState.RUNNING:
            self._lifecycle(vmid, "start")
        return self._info(vmid)

    def _stop(self, vmid: int, timeout_s: float) -> None:
        if self._info(vmid).state is not RunState.RUNNING:
            return
        try:
            self._lifecycle(vmid, "shutdown", timeout=max(1, round(timeout_s)))
        except BackendError as exc:
            log.warning("shutdown of %s failed (%s); stopping it hard", vmid, exc.message)
            self._lifecycle(vmid, "stop")

    def _destroy(self, vmid: int) -> None:
        """The CT, and the holder of its home if a rebuild of it was cut short."""
        holder = self._holder(vmid)
        if holder is not None:
            self._remove_ct(str(holder["node"]), int(holder["vmid"]))
        item = self._find(vmid)
        if item is None:
            return
        self._stop(vmid, 10.0)
        self._remove_ct(str(item["node"]), vmid)

    def _rebuild(self, spec: ContainerSpec) -> ContainerInfo:
        vmid = spec.vmid
        holder = self._holder(vmid)
        item = self._find(vmid)
        if item is None and holder is None:
            raise BackendError(f"container {vmid} does not exist")
        node = str((item or holder or {})["node"])
        config = self._config(node, vmid) if item is not None else {}
        if item is not None and item.get("status") == "running":
            raise BackendError(f"container {vmid} is running: stop it before a rebuild")
        if holder is None:
            if HOME_VOLUME not in config:
                raise BackendError(
                    f"container {vmid} keeps /home/dev on its rootfs (it was made before homes "
                    "had a volume of their own), so a rebuild would lose it; the container is "
                    "unchanged"
                )
            holder = self._make_holder(node, spec, config)
        holder_id = int(holder["vmid"])
        kept = self._config(node, holder_id)
        word = str(kept.get("description", "")).strip()  # PVE may end it with a newline
        # (A holder whose description was never set has no word: whatever runs is the old one.)
        new_system = (
            item is not None and bool(word) and str(config.get("description", "")).strip() == word
        )
        if item is not None and not new_system:
            if HOME_VOLUME in config:
                self._move_home(node, vmid, holder_id)
            self._remove_ct(node, vmid)  # the old system; its home is on the holder
        if not new_system:
            self._new_ct(
                node,
                spec,
                hostname=f"{NAME_PREFIX}{vmid}",
                tags=TAG,
                net0=kept.get("net0"),
                description=word,
            )
        if not (new_system and HOME_VOLUME in config):
            self._move_home(node, holder_id, vmid)
        self._remove_ct(node, holder_id)
        return ContainerInfo(vmid=vmid, state=RunState.STOPPED, node=node)

    def _make_holder(
        self, node: str, spec: ContainerSpec, config: dict[str, Any]
    ) -> dict[str, Any]:
        """A stopped CT that keeps ``spec.vmid``'s home (and its net0) during the rebuild; its
        description is the rebuild's word, which the new CT will carry too."""
        holder_id = self.suggest_vmid(spec.vmid + 1)
        holder = ContainerSpec(vmid=holder_id, agent_secret="-", resources=spec.resources)
        self._new_ct(
            node,
            holder,
            hostname=f"{HOLDER_PREFIX}{spec.vmid}",
            tags=HOLDER_TAG,
            net0=config.get("net0"),
            description=f"zlh rebuild {secrets.token_hex(8)}",
        )
        return {"vmid": holder_id, "node": node}

    def _move_home(self, node: str, source: int, target: int) -> None:
        what = f"moving the home volume of {source} to {target}"
        upid = self._call(
            "post",
            f"nodes/{node}/lxc/{source}/move_volume",
            what,
            volume=HOME_VOLUME,
            **{"target-vmid": target, "target-volume": HOME_VOLUME},
        )
        self._wait_task(node, upid, what)

    def _config(self, node: str, vmid: int) -> dict[str, Any]:
        config: dict[str, Any] = self._call(
            "get", f"nodes/{node}/lxc/{vmid}/config", f"reading the config of {vmid}"
        )
        return config

    def _remove_ct(self, node: str, vmid: int) -> None:
        what = f"destroying container {vmid}"
        upid = self._call("delete", f"nodes/{node}/lxc/{vmid}", what, purge=1)
        self._wait_task(node, upid, what)

    def _list_all(self) -> list[ContainerInfo]:
        return [self._info(int(item["vmid"])) for item in self._resources()]
