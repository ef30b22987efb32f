"""An in-test Proxmox VE API server: the documented endpoints the backend calls, over TLS.

Response shapes follow the PVE API: every body is ``{"data": ...}``; state changes answer a
UPID string and run as tasks (``GET /nodes/{node}/tasks/{upid}/status`` says ``running``
once, then ``stopped`` with ``exitstatus`` ``OK`` or ``ERROR: …``); errors carry the reason in
the status line and a ``message``; a bad token gets 401; a call through an offline node gets
595 "No route to host". The token is not root@pam and holds ``privileges`` on ``/``: without
``Sys.Modify`` a privileged CT cannot be created (403), and for a privileged CT no feature flag
may be set, for an unprivileged one only ``nesting`` (403, "only allowed for root@pam"), as PVE
checks them. ``unprivileged`` defaults to 0 as before PVE 9 (9 defaults to 1), so a request
that omits it asks for a privileged CT. A clone copies its source's config, ``unprivileged``
included. Volumes are storage objects of their own (``volumes``): ``rootfs`` and ``mpN`` given as
``STORAGE:SIZE`` (on create, or a new ``mpN`` on ``PUT …/config``) allocate
``STORAGE:vm-<vmid>-disk-<n>``, which the config then names; destroying a CT frees the volumes
its config names; ``POST …/move_volume`` with ``target-vmid`` reassigns a mount point to another
CT on the same node (renamed to the new owner), with PVE's refusals (source running, key in
use, missing volume, rootfs, another node, a template, no ``VM.Config.Disk``). A volume's
``files`` stand for its contents. Knobs: ``fail_next_task`` (task ends with that exitstatus;
``tasks_before_failure`` lets that many tasks pass first), ``steal_next_id`` (another client
takes the id ``/cluster/nextid`` just returned).

Storages (``storages``: type, content types, shared) hold CT templates (``templates``, by
``(node, volid)``; node None: present on every node, as the operator's template is): listed by
``GET …/storage/{storage}/content`` (``Datastore.Audit`` or ``Datastore.AllocateSpace``),
uploaded by a multipart ``POST …/storage/{storage}/upload`` (``Datastore.AllocateTemplate``;
a storage without a path or without ``vztmpl`` content, a wrong extension and a checksum
mismatch refused as pve-storage does; the copy is an ``imgcopy`` task, the file kept under
``upload_dir``), removed by ``DELETE …/content/{volid}`` (``Datastore.Allocate``, an ``imgdel``
task). A CT created from an ostemplate that is not there fails its task with PVE's
``can't find file``.

Timings model (``timings``, all 0 by default): a task stays ``running`` for a modelled time:
create ``create_s`` + the template's size / ``extract_bytes_per_s``, upload its size /
``upload_bytes_per_s`` (counting the real transfer's time as part of it), start ``start_s``.
"""

from __future__ import annotations

import hashlib
import json
import mmap
import re
import shutil
import ssl
import subprocess
import tempfile
import threading
import time
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any
from urllib.parse import parse_qsl, urlsplit

from zlh.backends import create_backend
from zlh.backends.proxmox import ProxmoxBackend

TOKEN = "zlh@pve!zlh=3f1c2a9e-0000-4000-8000-000000000001"


def self_signed_cert(directory: Path) -> tuple[Path, Path]:
    """A certificate for 127.0.0.1 (the client verifies against it, TLS stays on)."""
    cert, key = directory / "pve.crt", directory / "pve.key"
    subprocess.run(
        [
            "openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "2",
            "-subj", "/CN=127.0.0.1", "-addext", "subjectAltName=IP:127.0.0.1",
            "-keyout", str(key), "-out", str(cert),
        ],
        check=True,
        capture_output=True,
    )  # fmt: skip
    return cert, key


class ApiError(Exception):
    def __init__(self, status: int, reason: str) -> None:
        self.status, self.reason = status, reason


@dataclass
class Timings:
    """How long tasks take (seconds, bytes per second); 0 and inf: at once."""

    create_s: float = 0.0
    extract_bytes_per_s: float = float("inf")
    upload_bytes_per_s: float = float("inf")
    start_s: float = 0.0


TEMPLATE_NAME = "debian-12-zlh_0123456789abcdef_amd64.tar.zst"
TEMPLATE = f"local:vztmpl/{TEMPLATE_NAME}"


@dataclass
class ProxmoxState:
    nodes: dict[str, dict[str, Any]] = field(default_factory=dict)
    cts: dict[int, dict[str, Any]] = field(default_factory=dict)
    tasks: dict[str, dict[str, Any]] = field(default_factory=dict)
    requests: list[tuple[str, str, dict[str, str]]] = field(default_factory=list)
    volumes: dict[str, dict[str, Any]] = field(default_factory=dict)
    privileges: set[str] = field(
        default_factory=lambda: {
            "VM.Allocate",
            "VM.Clone",
            "VM.Audit",
            "VM.Config.Disk",
            "Datastore.AllocateSpace",
            "Datastore.AllocateTemplate",
            "Datastore.Allocate",
            "Datastore.Audit",
        }
    )
    storages: dict[str, dict[str, Any]] = field(
        default_factory=lambda: {
            "local": {"type": "dir", "content": {"vztmpl", "iso", "backup"}, "shared": False},
            "local-lvm": {"type": "lvmthin", "content": {"images", "rootdir"}, "shared": False},
        }
    )
    # (node or None for every node, volid) -> {"size", "ctime", "path" (None: no bytes kept)}
    templates: dict[tuple[str | None, str], dict[str, Any]] = field(
        default_factory=lambda: {(None, TEMPLATE): {"size": 0, "ctime": 0, "path": None}}
    )
    timings: Timings = field(default_factory=Timings)
    upload_dir: Path = field(default_factory=lambda: Path(tempfile.mkdtemp(prefix="pve-store-")))
    fail_next_task: str | None = None
    tasks_before_failure: int = 0  # fail_next_task hits the task after this many more
    steal_next_id: bool = False
    lock: threading.Lock = field(default_factory=threading.Lock)
    _task_seq: int = 0

    def task(
        self,
        node: str,
        kind: str,
        vmid: int | str,
        apply: Any = None,
        *,
        duration_s: float = 0.0,
        failure: str | None = None,
    ) -> str:
        self._task_seq += 1
        upid = f"UPID:{node}:{self._task_seq:08X}:0012D687:65A1B2C3:{kind}:{vmid}:zlh@pve!zlh:"
        if self.fail_next_task and self.tasks_before_failure > 0:
            self.tasks_before_failure -= 1
        elif self.fail_next_task:
            failure, self.fail_next_task = self.fail_next_task, None
        self.tasks[upid] = {
            "polls": 0,
            "exitstatus": failure or "OK",
            "apply": apply,
            "done_at": time.monotonic() + duration_s,
        }
        return upid

    def template(self, node: str, volid: str) -> dict[str, Any] | None:
        """The CT template ``volid`` as ``node`` sees it (a shared storage: any node's)."""
        storage = volid.partition(":")[0]
        shared = self.storages.get(storage, {}).get("shared", False)
        for (where, name), info in self.templates.items():
            if name == volid and (where in (None, node) or shared):
                return info
        return None

    def next_id(self) -> int:
        return max([100, *[v + 1 for v in self.cts]])

    def allocate(self, storage: str, vmid: int, size_gb: str) -> str:
        """A new volume ``STORAGE:vm-<vmid>-disk-<n>`` (the first free n)."""
        n = 0
        while f"{storage}:vm-{vmid}-disk-{n}" in self.volumes:
            n += 1
        volid = f"{storage}:vm-{vmid}-disk-{n}"
        self.volumes[volid] = {"owner": vmid, "size": size_gb, "files": {}}
        return volid

    def rename(self, volid: str, vmid: int) -> str:
        """Reassign ``volid`` to ``vmid``: same storage and contents, the new owner's name."""
        volume = self.volumes.pop(volid)
        storage = volid.partition(":")[0]
        n = 0
        while f"{storage}:vm-{vmid}-disk-{n}" in self.volumes:
            n += 1
        new = f"{storage}:vm-{vmid}-disk-{n}"
        self.volumes[new] = {**volume, "owner": vmid}
        return new


class Handler(BaseHTTPRequestHandler):
    server: ProxmoxServer

    def log_message(self, format: str, *args: Any) -> None:
        pass

    def _handle(self, method: str) -> None:
        url = urlsplit(self.path)
        params = dict(parse_qsl(url.query))
        length = int(self.headers.get("Content-Length") or 0)
        state = self.server.state
        kind = self.headers.get("Content-Type", "")
        if length and kind.startswith("multipart/form-data"):
            boundary = kind.partition("boundary=")[2].strip('"').encode()
            params.update(_multipart(self.rfile, length, boundary, state.upload_dir))
        elif length:
            params.update(parse_qsl(self.rfile.read(length).decode()))
        try:
            if self.headers.get("Authorization") != f"PVEAPIToken={TOKEN}":
                raise ApiError(401, "invalid token value!")
            path = url.path.removeprefix("/api2/json")
            with state.lock:
                state.requests.append((method, path, params))
                data = route(state, method, path, params)
            body, status, reason = {"data": data}, 200, "OK"
        except ApiError as exc:
            body, status, reason = (
                {"data": None, "message": exc.reason + "\n"},
                exc.status,
                exc.reason,
            )
        raw = json.dumps(body).encode()
        self.send_response(status, reason)
        self.send_header("Content-Type", "application/json;charset=UTF-8")
        self.send_header("Content-Length", str(len(raw)))
        self.end_headers()
        self.wfile.write(raw)

    def do_GET(self) -> None:
        self._handle("GET")

    def do_POST(self) -> None:
        self._handle("POST")

    def do_PUT(self) -> None:
        self._handle("PUT")

    def do_DELETE(self) -> None:
        self._handle("DELETE")


def _multipart(rfile: Any, length: int, boundary: bytes, spool: Path) -> dict[str, str]:
    """A multipart body's fields; its file goes to ``/var/tmp/pveupload-…``'s stand-in under
    ``spool``: ``tmpfilename`` names it, ``filename`` is its name, as PVE's HTTP server does."""
    spool.mkdir(parents=True, exist_ok=True)
    started = time.monotonic()
    body = tempfile.NamedTemporaryFile(dir=spool, prefix="body-", delete=False)  # noqa: SIM115
    with body:
        left = length
        while left:
            chunk = rfile.read(min(left, 1 << 20))
            if not chunk:
                break
            body.write(chunk)
            left -= len(chunk)
    fields = {"_received_s": str(time.monotonic() - started)}  # the real transfer's time
    try:
        with open(body.name, "rb") as f, mmap.mmap(f.fileno(), 0, access=mmap.ACCESS_READ) as m:
            delimiter = b"--" + boundary
            start = m.find(delimiter) + len(delimiter) + 2
            while True:
                end = m.find(b"\r\n" + delimiter, start)
                if end < 0:
                    break
                head_end = m.find(b"\r\n\r\n", start, end)
                head = m[start:head_end].decode()
                name = re.search(r'name="([^"]*)"', head)
                filename = re.search(r'filename="([^"]*)"', head)
                if name and filename:
                    target = spool / f"pveupload-{time.monotonic_ns():x}"
                    with target.open("wb") as out:
                        for at in range(head_end + 4, end, 1 << 20):
                            out.write(m[at : min(at + (1 << 20), end)])
                    fields[name.group(1)] = filename.group(1)
                    fields["tmpfilename"] = str(target)
                elif name:
                    fields[name.group(1)] = m[head_end + 4 : end].decode()
                start = end + 2 + len(delimiter) + 2
    finally:
        Path(body.name).unlink()
    return fields


_VZTMPL_EXT = re.compile(r"[^/]+\.(?:tar|tar\.(?:gz|xz|zst|bz2))", re.IGNORECASE)


def _storage(state: ProxmoxState, storage: str) -> dict[str, Any]:
    config = state.storages.get(storage)
    if config is None:
        raise ApiError(500, f"storage '{storage}' does not exist")
    return config


def _upload(state: ProxmoxState, node: str, storage: str, p: dict[str, str]) -> str:
    """pve-storage's upload: checks in its order, then the copy as an ``imgcopy`` task."""
    tmp = Path(p.get("tmpfilename", ""))
    try:
        if "Datastore.AllocateTemplate" not in state.privileges:
            raise _perm_denied(f"/storage/{storage}, Datastore.AllocateTemplate")
        config = _storage(state, storage)
        if config["type"] not in {"dir", "nfs", "cifs", "cephfs"}:
            raise ApiError(500, f"can't upload to storage type '{config['type']}'")
        if not tmp.is_file():
            raise ApiError(500, "missing temporary file name")
        filename, content = p.get("filename", ""), p.get("content")
        if content != "vztmpl":
            raise ApiError(400, "Parameter verification failed.")  # iso/import: not ours
        if not _VZTMPL_EXT.fullmatch(filename):
            raise ApiError(400, "Parameter verification failed.")  # filename: wrong extension
        if "vztmpl" not in config["content"]:
            raise ApiError(500, f"storage '{storage}' does not support 'vztmpl' content")
    except ApiError:
        tmp.unlink(missing_ok=True)
        raise
    size = tmp.stat().st_size
    failure = None
    if p.get("checksum-algorithm") == "sha256":
        with tmp.open("rb") as f:
            got = hashlib.file_digest(f, "sha256").hexdigest()
        if got != p.get("checksum", "").lower():
            failure = f"checksum mismatch: got '{got}' != expect '{p.get('checksum')}'"
    volid = f"{storage}:vztmpl/{filename}"
    # The modelled transfer, less what the real one over loopback took already.
    received_s = float(p.get("_received_s", 0))
    kept = state.upload_dir / node / storage / filename

    def copy() -> None:
        kept.parent.mkdir(parents=True, exist_ok=True)
        shutil.move(tmp, kept)
        where = None if config["shared"] else node
        state.templates[(where, volid)] = {"size": size, "ctime": int(time.time()), "path": kept}

    if failure:
        tmp.unlink(missing_ok=True)
    return state.task(
        node,
        "imgcopy",
        "",
        copy,
        duration_s=max(0.0, size / state.timings.upload_bytes_per_s - received_s),
        failure=failure,
    )


def _storage_content(state: ProxmoxState, node: str, storage: str, p: dict[str, str]) -> Any:
    if not {"Datastore.Audit", "Datastore.AllocateSpace"} & state.privileges:
        raise _perm_denied(f"/storage/{storage}, Datastore.Audit|Datastore.AllocateSpace")
    _storage(state, storage)
    if p.get("content") not in (None, "vztmpl"):
        return []
    prefix = f"{storage}:vztmpl/"
    volids = sorted(
        {v for (_, v) in state.templates if v.startswith(prefix) and state.template(node, v)}
    )
    return [
        {"volid": v, "content": "vztmpl", "format": "tzst", **_listed(state.template(node, v))}
        for v in volids
    ]


def _listed(info: dict[str, Any] | None) -> dict[str, int]:
    return {"size": int((info or {}).get("size", 0)), "ctime": int((info or {}).get("ctime", 0))}


def _delete_volume(state: ProxmoxState, node: str, storage: str, volume: str) -> str:
    volid = volume if ":" in volume else f"{storage}:{volume}"
    if volid.partition(":")[0] != storage:
        raise ApiError(400, "Parameter verification failed.")  # storage ID mismatch
    if "Datastore.Allocate" not in state.privileges:
        raise _perm_denied(f"/storage/{storage}, Datastore.Allocate")
    info = state.template(node, volid)
    failure = None if info else f"volume '{volid}' does not exist"

    def free() -> None:
        key = next(k for k, v in state.templates.items() if k[1] == volid and v is info)
        path = state.templates.pop(key)["path"]
        if path is not None:
            Path(path).unlink(missing_ok=True)

    return state.task(node, "imgdel", storage, None if failure else free, failure=failure)


def _online(state: ProxmoxState, node: str) -> None:
    if node not in state.nodes:
        raise ApiError(500, f"hostname lookup '{node}' failed - failed to get address info")
    if state.nodes[node]["status"] != "online":
        raise ApiError(
            595, "Errors during connection establishment, proxy handler: No route to host"
        )


def _ct(state: ProxmoxState, node: str, vmid: int) -> dict[str, Any]:
    ct = state.cts.get(vmid)
    if ct is None or ct["node"] != node:
        raise ApiError(500, f"Configuration file 'nodes/{node}/lxc/{vmid}.conf' does not exist")
    return ct


_VOLUME_KEY = re.compile(r"rootfs|mp\d+")
_NEW_VOLUME = re.compile(r"([\w-]+):(\d+)((?:,.*)?)")  # STORAGE:SIZE[,options]


def volume_of(value: str) -> str:
    """The volume id a ``rootfs``/``mpN`` value names (its part before the first comma)."""
    return value.partition(",")[0]


def _allocate_new(state: ProxmoxState, vmid: int, config: dict[str, str]) -> None:
    """Turn every ``rootfs``/``mpN`` given as ``STORAGE:SIZE`` into an allocated volume."""
    for key, value in list(config.items()):
        if _VOLUME_KEY.fullmatch(key) and (m := _NEW_VOLUME.fullmatch(value)):
            storage, size, options = m.groups()
            volid = state.allocate(storage, vmid, size)
            config[key] = f"{volid}{options},size={size}G"


def _add_ct(state: ProxmoxState, node: str, vmid: int, config: dict[str, str]) -> None:
    config = dict(config)
    _allocate_new(state, vmid, config)
    state.cts[vmid] = {
        "node": node,
        "status": "stopped",
        "name": config["hostname"],
        "config": config,
    }


def _destroy_ct(state: ProxmoxState, vmid: int) -> None:
    ct = state.cts.pop(vmid)
    for key, value in ct["config"].items():
        if _VOLUME_KEY.fullmatch(key) or re.fullmatch(r"unused\d+", key):
            state.volumes.pop(volume_of(value), None)


def _move_volume(state: ProxmoxState, node: str, vmid: int, p: dict[str, str]) -> str:
    """PVE's ``move_volume`` to another CT (reassign), with its checks in its order."""
    key, target = p.get("volume", ""), p.get("target-vmid")
    if target and p.get("storage"):
        raise ApiError(400, "Parameter verification failed.")
    if not target:
        raise ApiError(400, "Parameter verification failed.")  # moving to a storage: not ours
    target_vmid = int(target)
    target_key = p.get("target-volume") or key
    if "VM.Config.Disk" not in state.privileges:
        raise _perm_denied(f"/vms/{target_vmid}, VM.Config.Disk")
    if "rootfs" in (key, target_key):
        raise ApiError(500, "Cannot move to/from 'rootfs'")
    for one in (vmid, target_vmid):
        if one not in state.cts:
            raise ApiError(500, f"could not find CT {one}")
    source, dest = state.cts[vmid], state.cts[target_vmid]
    if source["node"] != dest["node"]:
        raise ApiError(
            500, f"Both containers need to be on the same node ({source['node']} != {dest['node']})"
        )
    if source["config"].get("template") or dest["config"].get("template"):
        raise ApiError(500, "Can't move volumes from or to template CT")
    if key not in source["config"]:
        raise ApiError(500, f"volume '{key}' for container '{vmid}' does not exist")
    if target_key in dest["config"]:
        raise ApiError(
            500, f"Target volume key '{target_key}' is already in use for container '{target_vmid}'"
        )
    if source["status"] == "running":
        raise ApiError(
            500,
            "Cannot move in-use volume while the source CT is running - detach or shutdown first",
        )

    def reassign() -> None:
        value = source["config"].pop(key)
        volid = volume_of(value)
        new = state.rename(volid, target_vmid)
        dest["config"][target_key] = new + value[len(volid) :]

    return state.task(node, "move_volume", vmid, reassign)


def _perm_denied(what: str) -> ApiError:
    return ApiError(403, f"Permission check failed ({what})")


def _check_create_perms(state: ProxmoxState, p: dict[str, str]) -> None:
    """PVE's create_vm and check_ct_modify_config_perm, for a token that is not root@pam."""
    unprivileged = p.get("unprivileged", "0") == "1"
    if not unprivileged and "Sys.Modify" not in state.privileges:
        raise _perm_denied("/, Sys.Modify")
    if "features" in p:
        if not unprivileged:
            raise _perm_denied(
                "changing feature flags for privileged container is only allowed for root@pam"
            )
        names = {item.partition("=")[0] for item in p["features"].split(",") if item}
        if names - {"nesting"}:
            raise _perm_denied(
                "changing feature flags (except nesting) is only allowed for root@pam"
            )


def route(state: ProxmoxState, method: str, path: str, p: dict[str, str]) -> Any:
    if (method, path) == ("GET", "/nodes"):
        return [{"node": n, **info} for n, info in state.nodes.items()]
    if (method, path) == ("GET", "/cluster/nextid"):
        if "vmid" in p:
            if int(p["vmid"]) in state.cts:
                raise ApiError(400, f"VM {p['vmid']} already exists")
            return p["vmid"]
        vmid = state.next_id()
        if state.steal_next_id:  # another client creates it before we do
            state.steal_next_id = False
            node = next(iter(state.nodes))
            state.cts[vmid] = {"node": node, "status": "stopped", "name": "other", "config": {}}
        return str(vmid)
    if (method, path) == ("GET", "/cluster/resources"):
        return [
            {"id": f"lxc/{v}", "type": "lxc", "vmid": v, "node": c["node"], "status": c["status"],
             "name": c["name"], "tags": c["config"].get("tags", "")}
            for v, c in state.cts.items()
        ]  # fmt: skip
    match = re.fullmatch(r"/nodes/([^/]+)/(.*)", path)
    if not match:
        raise ApiError(501, f"Method '{method} {path}' not implemented")
    node, rest = match.groups()
    _online(state, node)
    if method == "GET" and (m := re.fullmatch(r"tasks/([^/]+)/status", rest)):
        task = state.tasks.get(m.group(1))
        if task is None:
            raise ApiError(400, "no such task")
        task["polls"] += 1
        if task["polls"] < 2 or time.monotonic() < task["done_at"]:
            return {"upid": m.group(1), "node": node, "status": "running"}
        if task["apply"] is not None and task["exitstatus"] == "OK":
            task.pop("apply")()
            task["apply"] = None
        return {
            "upid": m.group(1),
            "node": node,
            "status": "stopped",
            "exitstatus": task["exitstatus"],
        }
    if (method, rest) == ("POST", "lxc"):
        vmid = int(p["vmid"])
        if vmid in state.cts:
            raise ApiError(
                500,
                f"unable to create CT {vmid} - CT {vmid} already exists on node "
                f"'{state.cts[vmid]['node']}'",
            )
        if not p.get("ostemplate"):
            raise ApiError(400, "Parameter verification failed.")
        _check_create_perms(state, p)
        template = state.template(node, p["ostemplate"])
        if template is None:  # pve-container's restore_archive, in the worker
            return state.task(
                node, "vzcreate", vmid, failure=f"can't find file '{p['ostemplate']}'"
            )
        t = state.timings
        return state.task(
            node,
            "vzcreate",
            vmid,
            lambda: _add_ct(state, node, vmid, p),
            duration_s=t.create_s + template["size"] / t.extract_bytes_per_s,
        )
    if method == "POST" and (m := re.fullmatch(r"lxc/(\d+)/clone", rest)):
        source = _ct(state, node, int(m.group(1)))
        newid = int(p["newid"])
        if newid in state.cts:
            raise ApiError(500, f"CT {newid} already exists on node '{state.cts[newid]['node']}'")

        config = {**source["config"], "hostname": p.get("hostname", f"CT{newid}")}
        config.pop("template", None)
        for key in [k for k in config if _VOLUME_KEY.fullmatch(k)]:  # a linked clone's own copy
            volid = volume_of(config[key])
            size = state.volumes.get(volid, {}).get("size", "8")
            config[key] = f"{volid.partition(':')[0]}:{size}{config[key][len(volid) :]}"
        return state.task(node, "vzclone", newid, lambda: _add_ct(state, node, newid, config))
    if (m := re.fullmatch(r"lxc/(\d+)/config", rest)) and method in {"GET", "PUT"}:
        ct = _ct(state, node, int(m.group(1)))
        if method == "GET":  # flags come back as integers, and absent when never set
            config = {k: v for k, v in ct["config"].items() if k not in {"ssh-public-keys", "vmid"}}
            return {
                k: int(v) if k in {"unprivileged", "template"} else v for k, v in config.items()
            }
        added = {k: v for k, v in p.items() if _VOLUME_KEY.fullmatch(k) and k not in ct["config"]}
        if added and "Datastore.AllocateSpace" not in state.privileges:
            raise _perm_denied("/storage/local-lvm, Datastore.AllocateSpace")
        ct["config"].update(p)
        _allocate_new(state, int(m.group(1)), ct["config"])
        return None
    if method == "POST" and (m := re.fullmatch(r"lxc/(\d+)/status/(start|stop|shutdown)", rest)):
        vmid, action = int(m.group(1)), m.group(2)
        ct = _ct(state, node, vmid)

        def change() -> None:
            ct["status"] = "running" if action == "start" else "stopped"

        duration = state.timings.start_s if action == "start" else 0.0
        return state.task(node, f"vz{action}", vmid, change, duration_s=duration)
    if method == "GET" and (m := re.fullmatch(r"lxc/(\d+)/status/current", rest)):
        vmid = int(m.group(1))
        ct = _ct(state, node, vmid)
        running = ct["status"] == "running"
        # PVE: cpu is the share of its cores in use now (0..cpus), mem bytes; both 0 stopped.
        return {
            "vmid": vmid,
            "name": ct["name"],
            "status": ct["status"],
            "cpus": 1,
            "cpu": ct.get("cpu", 0.25) if running else 0,
            "mem": ct.get("mem", 64 * 1024 * 1024) if running else 0,
            "maxmem": 512 * 1024 * 1024,
        }
    if method == "DELETE" and (m := re.fullmatch(r"lxc/(\d+)", rest)):
        vmid = int(m.group(1))
        ct = _ct(state, node, vmid)
        if ct["status"] == "running":
            raise ApiError(500, f"CT {vmid} is running - destroy failed")
        return state.task(node, "vzdestroy", vmid, lambda: _destroy_ct(state, vmid))
    if method == "GET" and (m := re.fullmatch(r"storage/([^/]+)/content", rest)):
        return _storage_content(state, node, m.group(1), p)
    if method == "POST" and (m := re.fullmatch(r"storage/([^/]+)/upload", rest)):
        return _upload(state, node, m.group(1), p)
    if method == "DELETE" and (m := re.fullmatch(r"storage/([^/]+)/content/(.+)", rest)):
        return _delete_volume(state, node, m.group(1), m.group(2))
    if method == "POST" and (m := re.fullmatch(r"lxc/(\d+)/move_volume", rest)):
        _ct(state, node, int(m.group(1)))
        return _move_volume(state, node, int(m.group(1)), p)
    if method == "GET" and (m := re.fullmatch(r"lxc/(\d+)/interfaces", rest)):
        vmid = int(m.group(1))
        ct = _ct(state, node, vmid)
        if ct["status"] != "running":
            raise ApiError(500, f"CT {vmid} not running")
        return [
            {"name": "lo", "inet": "127.0.0.1/8", "hwaddr": "00:00:00:00:00:00"},
            {"name": "eth0", "inet": f"192.0.2.{vmid % 250}/24", "hwaddr": "bc:24:11:00:00:01"},
        ]
    raise ApiError(501, f"Method '{method} /nodes/{node}/{rest}' not implemented")


class ProxmoxServer(ThreadingHTTPServer):
    daemon_threads = True

    def __init__(self, cert: Path, key: Path) -> None:
        super().__init__(("127.0.0.1", 0), Handler)
        context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        context.load_cert_chain(cert, key)
        self.socket = context.wrap_socket(self.socket, server_side=True)
        self.state = ProxmoxState()
        self._thread = threading.Thread(target=self.serve_forever, daemon=True)

    @property
    def host(self) -> str:
        return f"127.0.0.1:{self.server_address[1]}"

    def __enter__(self) -> ProxmoxServer:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.shutdown()
        self.server_close()
        shutil.rmtree(self.state.upload_dir, ignore_errors=True)


def connection(server: ProxmoxServer, cert: tuple[Path, Path]) -> dict[str, str]:
    """The settings that reach ``server``: its token, TLS verified against ``cert``."""
    user, _, rest = TOKEN.partition("!")
    token_name, _, token_value = rest.partition("=")
    return {
        "host": server.host,
        "user": user,
        "token_name": token_name,
        "token_value": token_value,
        "verify_tls": str(cert[0]),
    }


def backend_for(
    server: ProxmoxServer,
    cert: tuple[Path, Path],
    *,
    data_dir: Path = Path("/nonexistent"),
    **overrides: object,
) -> ProxmoxBackend:
    """The proxmox backend talking to ``server`` (create mode from ``TEMPLATE`` by default)."""
    settings = {**connection(server, cert), "ostemplate": TEMPLATE, **overrides}
    backend = create_backend("proxmox", data_dir=data_dir, **settings)
    assert isinstance(backend, ProxmoxBackend)
    return backend
