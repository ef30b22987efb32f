"""``zlh doctor``: checks the host for what the platform needs and says how to fix what is not.

Each check answers ok, warn or fail with one line of why and one of how to fix. Failures make
the command exit non-zero; warnings do not (the platform runs, perhaps not as well).
"""

from __future__ import annotations

import argparse
import importlib
import os
import re
import shlex
import shutil
import socket
import stat
import subprocess
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from enum import StrEnum
from pathlib import Path

from zlh.cliargs import data_dir_from

__all__ = ["Check", "Outcome", "cmd_doctor", "run_checks"]

MIN_FREE_DISK_GB = 5.0
LXC_TOOLS = ("lxc-create", "lxc-copy", "lxc-start", "lxc-attach", "lxc-ls")
BRIDGE = "lxcbr0"


class Outcome(StrEnum):
    OK = "ok"
    WARN = "warn"
    FAIL = "fail"


@dataclass(frozen=True)
class Check:
    name: str
    outcome: Outcome
    detail: str
    fix: str = ""


@dataclass(frozen=True)
class Host:
    """What the checks look at; tests point these at their own directories."""

    data_dir: Path
    store: Path
    listen: str
    backend: str
    cgroup_root: Path = Path("/sys/fs/cgroup")
    net_root: Path = Path("/sys/class/net")
    # Modules of the public front that the install compiles (two of setup.py's HOT_PATH, and
    # the head scanner, which Cython compiles).
    front_modules: tuple[str, ...] = ("zlh.proxy.front", "zlh.proxy.relay", "zlh.proxy.scan")
    slot_registry: Path | None = (
        None  # the host's LXC slot registry (zlh.backends.lxc.slots.REGISTRY)
    )
    security_root: Path = Path("/sys/kernel/security")  # LSMs (AppArmor) show up here
    seccomp_profile: Path = Path("/usr/share/lxc/config/common.seccomp")
    # Where containers are told to fetch artifacts (None: not known, the check is skipped).
    artifact_url: str | None = None


def _root(host: Host) -> Iterator[Check]:
    if os.geteuid() == 0:
        yield Check("root", Outcome.OK, "running as root")
    elif host.backend == "lxc":
        yield Check(
            "root",
            Outcome.FAIL,
            "the lxc backend creates containers and needs root",
            "run as root, or try the platform without isolation: --backend process",
        )
    else:
        yield Check("root", Outcome.OK, f"not root, fine for the {host.backend} backend")


def _lxc(host: Host) -> Iterator[Check]:
    if host.backend != "lxc":
        return
    missing = [tool for tool in LXC_TOOLS if shutil.which(tool) is None]
    if missing:
        yield Check(
            "lxc", Outcome.FAIL, f"LXC tools missing: {', '.join(missing)}", "apt-get install lxc"
        )
    else:
        yield Check("lxc", Outcome.OK, "LXC tools installed")
    if shutil.which("debootstrap") is None:
        yield Check(
            "debootstrap",
            Outcome.FAIL,
            "debootstrap is needed to build the template",
            "apt-get install debootstrap",
        )
    if (host.net_root / BRIDGE).exists():
        yield Check("bridge", Outcome.OK, f"{BRIDGE} is up")
    else:
        yield Check(
            "bridge",
            Outcome.WARN,
            f"bridge {BRIDGE} does not exist yet",
            "zlh up brings it up; by hand: /usr/libexec/lxc/lxc-net start",
        )


def _slots(host: Host) -> Iterator[Check]:
    """The host-wide LXC slot registry: readable, and who shares the host."""
    if host.backend != "lxc":
        return
    from zlh.backends.base import BackendError
    from zlh.backends.lxc.slots import REGISTRY, SlotRegistry

    path = host.slot_registry or REGISTRY
    try:
        network = SlotRegistry(path).read()
    except BackendError as exc:
        yield Check(
            "slots",
            Outcome.FAIL,
            exc.message,
            f"restore {path} from a backup; move it away only when no zlh LXC container "
            "exists on this host",
        )
        return
    except OSError as exc:
        yield Check("slots", Outcome.WARN, f"cannot read {path}: {exc.strerror}", "run as root")
        return
    ports = ", ".join(str(p) for p in network.service_ports) or "none"
    reach = f"containers reach the host on DNS, DHCP and TCP port(s) {ports}"
    slots = network.slots
    if not slots:
        yield Check("slots", Outcome.OK, f"no zlh LXC container on this host yet ({path}); {reach}")
        return
    mine = str((host.data_dir / "lxc").resolve())
    ours = sum(1 for s in slots if s.lxcpath == mine)
    others = len({s.lxcpath for s in slots if s.lxcpath != mine})
    yield Check(
        "slots",
        Outcome.OK,
        f"{len(slots)} LXC container(s) on this host: {ours} of this data dir, "
        f"{len(slots) - ours} of {others} other data dir(s); {reach}",
    )


def _template(host: Host) -> Iterator[Check]:
    if host.backend != "lxc":
        return
    from zlh.backends.lxc.template import current_template

    template = current_template(host.data_dir / "lxc")
    if template is None:
        yield Check(
            "template",
            Outcome.FAIL,
            f"no LXC template under {host.data_dir / 'lxc'}: containers cannot be created",
            f"zlh template build --data-dir {host.data_dir}",
        )
    else:
        yield Check("template", Outcome.OK, f"{template.name} is built")


def _unprivileged(host: Host) -> Iterator[Check]:
    """Container root is not host root: user namespaces, the id range, template and clones."""
    if host.backend != "lxc":
        return
    from zlh.backends.lxc.idmap import (
        COUNT,
        OWNER,
        SUBGID,
        SUBUID,
        IdMap,
        SubIdFile,
        userns_problem,
    )
    from zlh.backends.lxc.template import TEMPLATE_PREFIX, current_template

    problem = userns_problem()
    if problem is not None:
        yield Check(
            "unprivileged",
            Outcome.FAIL,
            f"containers cannot run unprivileged: {problem}",
            "enable user namespaces; only if every customer is trusted: zlh up "
            "--allow-privileged (container root is then host root)",
        )
    else:
        uid = SubIdFile(SUBUID, "").owned(OWNER, COUNT)
        gid = SubIdFile(SUBGID, "").owned(OWNER, COUNT)
        where = (
            IdMap(uid, gid).label + f" ({OWNER}'s range in {SUBUID}, {SUBGID})"
            if uid is not None and gid is not None
            else f"a range for {OWNER} is added to {SUBUID} and {SUBGID} on first use"
        )
        yield Check("unprivileged", Outcome.OK, f"containers run unprivileged: {where}")
    lxcpath = host.data_dir / "lxc"
    template = current_template(lxcpath)
    if template is not None and IdMap.from_config(template.config.read_text()) is None:
        yield Check(
            "template mode",
            Outcome.FAIL if problem is None else Outcome.WARN,
            f"{template.name} is a privileged template: new containers would be privileged",
            f"zlh template build --data-dir {host.data_dir}",
        )
    privileged = sorted(
        config.parent.name
        for config in lxcpath.glob("*/config")
        if not config.parent.name.startswith(TEMPLATE_PREFIX)
        and IdMap.from_config(config.read_text(errors="replace")) is None
    )
    if privileged:
        yield Check(
            "privileged",
            Outcome.WARN,
            f"privileged (container root = host root): {', '.join(privileged)}",
            "zlh up makes containers unprivileged on start (running ones are restarted); "
            "a privileged template is replaced by zlh template build",
        )


def _confinement(host: Host) -> Iterator[Check]:
    """The kernel's other walls around a container: an LSM profile and a seccomp filter."""
    if host.backend != "lxc":
        return
    if (host.security_root / "apparmor").exists():
        yield Check("apparmor", Outcome.OK, "AppArmor: containers get LXC's generated profile")
    else:
        yield Check(
            "apparmor",
            Outcome.OK,
            "no AppArmor on this host: containers are held by their user namespace and seccomp",
        )
    if host.seccomp_profile.is_file():
        yield Check("seccomp", Outcome.OK, f"LXC's {host.seccomp_profile.name} filter applies")
    else:
        yield Check(
            "seccomp",
            Outcome.WARN,
            f"{host.seccomp_profile} is missing: containers start without a seccomp filter",
            "apt-get install --reinstall lxc",
        )


def _data_dir(host: Host) -> Iterator[Check]:
    """The data dir holds password hashes, sessions and keys: nobody else may read it."""
    from zlh.datadir import exposed

    path = host.data_dir
    try:
        mode = stat.S_IMODE(path.stat().st_mode)
    except FileNotFoundError:
        yield Check("data dir", Outcome.OK, f"{path} does not exist yet (created 0700)")
        return
    except OSError as exc:
        yield Check("data dir", Outcome.WARN, f"cannot read {path}: {exc.strerror}", "run as root")
        return
    found = exposed(path)
    if not found:
        yield Check("data dir", Outcome.OK, f"{path} is {mode:o}, its files are private")
        return
    dirs = [str(e.path) for e in found if e.is_dir]
    files = [str(e.path) for e in found if not e.is_dir]
    named = ", ".join(f"{e.path} ({stat.S_IMODE(e.mode):o})" for e in found)
    fixes = [f"chmod o-rwx,g-rw {shlex.join(dirs)}"] if dirs else []
    fixes += [f"chmod go-rwx {shlex.join(files)}"] if files else []
    yield Check(
        "data dir",
        Outcome.FAIL,
        f"{path} is {mode:o}; readable or listable by others (zlh up tightens them on start): "
        f"{named}",
        " && ".join(fixes),
    )


def _cgroup(host: Host) -> Iterator[Check]:
    if (host.cgroup_root / "cgroup.controllers").exists():
        controllers = (host.cgroup_root / "cgroup.controllers").read_text().split()
        missing = [c for c in ("memory", "pids", "cpu") if c not in controllers]
        if missing:
            yield Check(
                "cgroup",
                Outcome.WARN,
                f"cgroup v2 without {', '.join(missing)}",
                "container limits for those resources will not apply",
            )
        else:
            yield Check("cgroup", Outcome.OK, "cgroup v2 with memory, pids and cpu")
    elif (host.cgroup_root / "memory").exists():
        yield Check("cgroup", Outcome.OK, "cgroup v1 (memory controller present)")
    else:
        yield Check(
            "cgroup",
            Outcome.WARN,
            "no cgroup memory controller found",
            "container memory limits will not apply",
        )


def _disk(host: Host) -> Iterator[Check]:
    probe = host.data_dir
    while not probe.exists() and probe != probe.parent:
        probe = probe.parent
    free_gb = shutil.disk_usage(probe).free / 1e9
    if free_gb < MIN_FREE_DISK_GB:
        yield Check(
            "disk",
            Outcome.WARN,
            f"{free_gb:.1f} GB free under {probe}",
            f"keep at least {MIN_FREE_DISK_GB:.0f} GB free for artifacts and containers",
        )
    else:
        yield Check("disk", Outcome.OK, f"{free_gb:.1f} GB free under {probe}")


def _layers(host: Host) -> Iterator[Check]:
    """The shared layers (lxc): how much they hold, and whether any changed on disk."""
    from zlh.layers import LayerStore

    root = host.data_dir / "layers"
    if host.backend != "lxc" or not root.is_dir():
        return
    infos = LayerStore(root).infos()
    size_mb = sum(info.size for info in infos) / 1e6
    bad = [info for info in infos if info.problem is not None]
    if not bad:
        yield Check("layers", Outcome.OK, f"{len(infos)} shared layer(s), {size_mb:.0f} MB, intact")
        return
    named = "; ".join(f"{info.sha256[:12]} ({info.label}) {info.problem}" for info in bad)
    yield Check(
        "layers",
        Outcome.WARN,
        f"{len(bad)} of {len(infos)} shared layer(s) changed on disk: {named}; the platform "
        "rebuilds them before mounting them again",
        f"zlh layers verify --data-dir {host.data_dir}",
    )


def _port(host: Host) -> Iterator[Check]:
    address, _, port_text = host.listen.rpartition(":")
    try:
        port = int(port_text)
    except ValueError:
        yield Check(
            "port",
            Outcome.FAIL,
            f"--listen {host.listen!r} is not HOST:PORT",
            "give e.g. --listen 0.0.0.0:8080",
        )
        return
    with socket.socket(socket.AF_INET6 if ":" in address else socket.AF_INET) as sock:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            sock.bind((address.strip("[]") or "0.0.0.0", port))
        except OSError as exc:
            health = _running_platform(address, port)
            if health is not None:
                healthy = health.get("status") == "ok"
                yield Check(
                    "port",
                    Outcome.OK if healthy else Outcome.WARN,
                    f"zlh is running on {host.listen} (health {health.get('status')}, "
                    f"database {health.get('database')})",
                    "" if healthy else "see zlh-up.log in the data dir, or journalctl -u zlh",
                )
                return
            yield Check(
                "port",
                Outcome.FAIL,
                f"cannot listen on {host.listen}: {exc.strerror}",
                "stop what uses it, or pick another --listen",
            )
            return
    yield Check("port", Outcome.OK, f"{host.listen} is free")


def _running_platform(address: str, port: int) -> dict[str, object] | None:
    """What our own front on ``address:port`` says of its health, or None when what holds
    the port is not zlh (or does not answer)."""
    import httpx

    from zlh.api.routes.health import SERVICE
    from zlh.listen import local_address

    url = f"http://{local_address(address)}:{port}/api/health"
    try:
        body = httpx.get(url, timeout=3).json()
    except (httpx.HTTPError, ValueError):
        return None
    if not isinstance(body, dict) or body.get("service") != SERVICE:
        return None
    return body


def _artifacts(host: Host) -> Iterator[Check]:
    from zlh.artifacts.errors import ArtifactError
    from zlh.artifacts.store import ArtifactStore

    store = ArtifactStore(host.store)
    try:
        catalog = store.catalog()
        problems = store.verify()
    except ArtifactError as exc:
        yield Check(
            "catalog",
            Outcome.FAIL,
            exc.message,
            f"fix or remove {host.store / 'catalog.json'}, then zlh artifacts build node",
        )
        return
    if problems:
        names = ", ".join(f"{p.kind.value} {p.name} {p.version}" for p in problems)
        yield Check(
            "catalog",
            Outcome.FAIL,
            f"artifacts that do not match the catalog: {names}",
            "zlh artifacts verify shows why; rebuild or re-add them",
        )
    else:
        yield Check("catalog", Outcome.OK, f"catalog at {host.store} verifies")
    if not catalog.runtimes:
        yield Check(
            "runtimes", Outcome.FAIL, "the catalog has no runtime", "zlh artifacts build node"
        )
    else:
        yield Check("runtimes", Outcome.OK, "runtimes: " + ", ".join(sorted(catalog.runtimes)))
    if "code-server" not in catalog.addons:
        yield Check(
            "code-server",
            Outcome.FAIL,
            "no code-server artifact: no browser IDE",
            "zlh artifacts build code-server",
        )
    else:
        entry = catalog.addons["code-server"]
        yield Check("code-server", Outcome.OK, f"code-server {entry.default}")


def _front(host: Host) -> Iterator[Check]:
    plain = [
        name
        for name in host.front_modules
        if not (importlib.import_module(name).__file__ or "").endswith(".so")
    ]
    if plain:
        yield Check(
            "front",
            Outcome.WARN,
            f"the public front runs as plain Python ({', '.join(plain)}): "
            "about 1.6 times the CPU per proxied request",
            "reinstall with a C compiler (build-essential, python3-dev): make bootstrap, "
            'or ZLH_COMPILE_FRONT=1 pip install ".[api]"',
        )
    else:
        yield Check("front", Outcome.OK, "the public front's hot path is compiled (mypyc, Cython)")


def _container_reach(host: Host) -> Iterator[Check]:
    """From inside a running container of this data dir, the artifact URL containers are told:
    the one check that sees the address, the listener and the isolation rules together."""
    if host.backend != "lxc" or host.artifact_url is None or os.geteuid() != 0:
        return
    lxcpath = host.data_dir / "lxc"
    listed = subprocess.run(
        ["lxc-ls", "-P", str(lxcpath), "--running", "-1"],
        capture_output=True,
        text=True,
        check=False,
    )
    names = [n for n in listed.stdout.split() if re.fullmatch(r"zlh-\d+", n)]
    if not names:
        yield Check(
            "container reach",
            Outcome.OK,
            "no running container to fetch the artifacts from (checked once one runs)",
        )
        return
    url = host.artifact_url.rstrip("/") + "/catalog.json"
    fetch = subprocess.run(
        ["lxc-attach", "-P", str(lxcpath), "-n", names[0], "--", "python3", "-c", _FETCH, url],
        capture_output=True,
        text=True,
        check=False,
        timeout=60,
    )
    if fetch.returncode == 0:
        yield Check("container reach", Outcome.OK, f"{names[0]} fetches {url}")
        return
    reason = (fetch.stderr.strip().splitlines() or ["no answer"])[-1]
    yield Check(
        "container reach",
        Outcome.FAIL,
        f"{names[0]} cannot fetch {url}: {reason}",
        "is zlh up running? with lxc it must listen on 0.0.0.0 or the bridge address; if the "
        "artifacts are served elsewhere, set artifact_url_for_containers to where containers "
        "reach them",
    )


_FETCH = """
import sys, urllib.request
try:
    urllib.request.urlopen(sys.argv[1], timeout=10).read()
except Exception as exc:
    sys.exit(f"{type(exc).__name__}: {exc}")
"""


def _warm_pool(host: Host) -> Iterator[Check]:
    """The containers this data dir's platform keeps ready ahead of demand, and their cost."""
    from zlh.api.pool import read_summary
    from zlh.errors import ZlhError

    try:
        summary = read_summary(host.data_dir, host.store)
    except (ValueError, OSError, ZlhError) as exc:
        yield Check("warm pool", Outcome.WARN, f"cannot tell: {exc}", "zlh up says what is wrong")
        return
    if summary is None:
        yield Check("warm pool", Outcome.OK, "no database yet (zlh up makes it)")
    elif summary.wanted == 0 and summary.ready + summary.building == 0:
        yield Check("warm pool", Outcome.OK, "off (warm_pool = 0)")
    else:
        yield Check("warm pool", Outcome.OK, summary.line())


def _jobs(host: Host) -> Iterator[Check]:
    """Provisioning and lifecycle work under way, and any that no replica takes over."""
    from zlh.api.jobs import read_jobs
    from zlh.errors import ZlhError

    try:
        found = read_jobs(host.data_dir)
    except (ValueError, OSError, ZlhError) as exc:
        yield Check("jobs", Outcome.WARN, f"cannot tell: {exc}", "zlh up says what is wrong")
        return
    if found is None:
        yield Check("jobs", Outcome.OK, "no database yet (zlh up makes it)")
        return
    summary, lease_s = found
    if not summary.stranded:
        yield Check("jobs", Outcome.OK, summary.line())
        return
    vmids = ", ".join(map(str, summary.stranded[:10]))
    yield Check(
        "jobs",
        Outcome.WARN,
        f"{summary.line()}; containers {vmids}: their replica stopped over job_lease_s "
        f"({lease_s:g} s) ago and no replica took them over",
        "start zlh up on this database (a replica takes them at once)",
    )


CHECKS: tuple[Callable[[Host], Iterator[Check]], ...] = (
    _root,
    _lxc,
    _slots,
    _template,
    _unprivileged,
    _confinement,
    _data_dir,
    _cgroup,
    _disk,
    _layers,
    _port,
    _front,
    _artifacts,
    _container_reach,
    _warm_pool,
    _jobs,
)


def run_checks(host: Host) -> list[Check]:
    return [check for probe in CHECKS for check in probe(host)]


def _artifact_url(data_dir: Path, args: argparse.Namespace) -> str | None:
    """The URL ``zlh up`` with these settings tells containers, when it can be known without
    changing the host (the bridge must already be up)."""
    if args.backend != "lxc" or not (Path("/sys/class/net") / BRIDGE).exists():
        return None
    from zlh.api.commands import container_artifact_url
    from zlh.api.settings import load_settings
    from zlh.errors import ZlhError

    try:
        settings = load_settings(data_dir=data_dir, backend="lxc", listen=args.listen)
        return container_artifact_url(settings)
    except (ValueError, OSError, ZlhError):
        return None  # the settings are wrong: zlh up says how


def cmd_doctor(args: argparse.Namespace) -> int:
    data_dir = data_dir_from(args)
    host = Host(
        data_dir=data_dir,
        store=args.store or data_dir / "artifacts",
        listen=args.listen,
        backend=args.backend,
        artifact_url=_artifact_url(data_dir, args),
    )
    checks = run_checks(host)
    marks = {Outcome.OK: "ok  ", Outcome.WARN: "warn", Outcome.FAIL: "FAIL"}
    for check in checks:
        print(f"[{marks[check.outcome]}] {check.name}: {check.detail}")
        if check.fix and check.outcome is not Outcome.OK:
            print(f"       fix: {check.fix}")
    failed = [c for c in checks if c.outcome is Outcome.FAIL]
    print(f"{len(failed)} problem(s) found" if failed else "all checks passed")
    return 1 if failed else 0
