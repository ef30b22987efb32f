"""The LXC container template: debootstrapped Debian bookworm with the agent in a venv.

Layout under the LXC path (``<data dir>/lxc``)::

    zlh-template-<version>/config     LXC config every clone copies
    zlh-template-<version>/rootfs/    the root file system (overlay lower dir of every clone)
    zlh-template.current              the version clones are made from

Templates are versioned because every clone's overlay reads the template's rootfs: a rebuild
writes a new ``zlh-template-<version>`` next to the old one and only removes old versions no
clone still uses. The version hashes every input (suite, packages, boot files, the contents of
the agent wheels), so ``zlh template build`` is a no-op when nothing changed and rebuilds when
the agent changes. The debootstrapped base is cached by its own hash, so an agent change costs
a copy and a venv install, not a debootstrap.
"""

from __future__ import annotations

import hashlib
import logging
import os
import shutil
import subprocess
import sys
import tempfile
import zipfile
from dataclasses import dataclass
from pathlib import Path

from zlh.backends.base import AGENT_PORT, BackendError, BackendUnavailable
from zlh.backends.lxc.idmap import IdMap, shift_tree

__all__ = [
    "TEMPLATE_PREFIX",
    "TOKEN_PATH",
    "Template",
    "build_template",
    "copy_tree",
    "current_template",
    "export_template",
    "template_in_use",
]

log = logging.getLogger(__name__)

SUITE = "bookworm"
MIRROR = "http://deb.debian.org/debian"
TEMPLATE_PREFIX = "zlh-template-"
CURRENT_FILE = "zlh-template.current"
# The template's python3 (bookworm); the host builds the agent wheels for this version.
TEMPLATE_PYTHON = (3, 11)
PACKAGES = (
    "systemd",
    "systemd-sysv",
    "ifupdown",  # Proxmox writes /etc/network/interfaces into Debian CTs
    "python3",
    "python3-venv",
    "sudo",
    "ca-certificates",
    "procps",
    "iproute2",
    # what code-server needs at runtime (its Node is an artifact, these are not)
    "libstdc++6",
    "git",
    "openssh-client",
    "libgssapi-krb5-2",
)
AGENT_VENV = "/opt/zlh/agent-venv"
WHEELHOUSE_INSIDE = "/opt/zlh/wheelhouse"  # only during the build
TOKEN_PATH = "/etc/zlh/agent-token"
# Units a dev container never needs; masking them keeps boot at a fraction of a second.
MASKED_UNITS = (
    "apt-daily.timer",
    "apt-daily-upgrade.timer",
    "dpkg-db-backup.timer",
    "e2scrub_all.timer",
    "e2scrub_reap.service",
    "fstrim.timer",
    "systemd-networkd-wait-online.service",
    "systemd-timesyncd.service",
    "getty@.service",
    "console-getty.service",
    "container-getty@.service",
    "systemd-logind.service",
)
# Proxmox cannot write files into a CT through its API, but it writes `ssh-public-keys` into
# /root/.ssh/authorized_keys; the proxmox backend passes the secret there as a comment line.
TOKEN_FROM_SSH_KEYS = f"""#!/bin/sh
# Take the agent secret from a '# zlh-agent-token <secret>' line (Proxmox create) if none yet.
set -eu
[ -s {TOKEN_PATH} ] && exit 0
keys=/root/.ssh/authorized_keys
[ -f "$keys" ] || exit 0
token=$(sed -n 's/^# zlh-agent-token //p' "$keys" | head -n1)
[ -n "$token" ] || exit 0
umask 077
mkdir -p "$(dirname {TOKEN_PATH})"
printf '%s' "$token" > {TOKEN_PATH}
sed -i '/^# zlh-agent-token /d' "$keys"
"""
AGENT_UNIT = f"""[Unit]
Description=ZeroLagHub agent (provisioning and /status)
After=network.target
# keep retrying: the agent may wait for its token, and a crash loop must not end in "failed"
StartLimitIntervalSec=0

[Service]
ExecStartPre=/opt/zlh/bin/zlh-token-from-ssh-keys
# -OO: no docstrings in memory (the agent runs in every container: docs/performance.md). A
# flag, not PYTHONOPTIMIZE: the shells and add-ons the agent starts must not inherit it.
ExecStart={AGENT_VENV}/bin/python -OO -m zlh.cli agent --listen 0.0.0.0:{AGENT_PORT} \\
    --token-file {TOKEN_PATH} --root /
Restart=always
RestartSec=1

[Install]
WantedBy=multi-user.target
"""
INTERFACES = "auto lo\niface lo inet loopback\n"  # eth0 is configured by LXC before init


@dataclass(frozen=True)
class Template:
    lxcpath: Path
    version: str

    @property
    def name(self) -> str:
        return f"{TEMPLATE_PREFIX}{self.version}"

    @property
    def root(self) -> Path:
        return self.lxcpath / self.name

    @property
    def rootfs(self) -> Path:
        return self.root / "rootfs"

    @property
    def config(self) -> Path:
        return self.root / "config"


def _run(cmd: list[str], what: str, **kwargs: object) -> subprocess.CompletedProcess[str]:
    log.debug("running %s", " ".join(cmd))
    try:
        # Output goes to the caller's file when it gives one (stdout=), else is kept for errors.
        streams = {"stderr": subprocess.PIPE} if "stdout" in kwargs else {"capture_output": True}
        result = subprocess.run(cmd, text=True, check=False, **streams, **kwargs)  # type: ignore[call-overload]
    except FileNotFoundError as exc:
        raise BackendUnavailable(f"{what}: {cmd[0]} is not installed") from exc
    if result.returncode != 0:
        tail = (result.stderr or result.stdout or "").strip().splitlines()[-15:]
        raise BackendError(f"{what} failed ({result.returncode}): " + "\n".join(tail))
    return result  # type: ignore[no-any-return]


def copy_tree(source: Path, target: Path) -> None:
    """A root filesystem copied with owners, modes, links and xattrs (``cp -a``)."""
    _run(["cp", "-a", str(source), str(target)], f"copying {source}")


def source_tree() -> Path:
    """The zlh source checkout this code runs from (the wheel is built from it)."""
    import zlh

    root = Path(zlh.__file__).resolve().parents[2]
    if not (root / "pyproject.toml").is_file():
        raise BackendError(
            f"cannot build the agent wheel: no source tree with pyproject.toml above {root}; "
            "run `zlh template build` from a zlh checkout (pip install -e .)"
        )
    return root


def build_wheelhouse(dest: Path) -> None:
    """``zlh[agent]`` and its dependencies as wheels, for an offline install in the rootfs."""
    if sys.version_info[:2] != TEMPLATE_PYTHON:
        raise BackendError(
            f"the template's python is {'.'.join(map(str, TEMPLATE_PYTHON))} but this host runs "
            f"{sys.version_info.major}.{sys.version_info.minor}: build from a python "
            f"{'.'.join(map(str, TEMPLATE_PYTHON))} venv so the agent's wheels match"
        )
    dest.mkdir(parents=True, exist_ok=True)
    _run(
        [sys.executable, "-m", "pip", "wheel", "-q", "-w", str(dest), f"{source_tree()}[agent]"],
        "building the agent wheelhouse",
        # The agent never imports the compiled front (setup.py): a plain wheel is the same on
        # every build, so the template's version only changes when the agent's code does.
        env={k: v for k, v in os.environ.items() if k != "ZLH_COMPILE_FRONT"},
    )


def _wheel_digest(path: Path) -> str:
    """Hash of a wheel's contents (zip timestamps vary between identical builds)."""
    digest = hashlib.sha256(path.name.encode())
    with zipfile.ZipFile(path) as wheel:
        for name in sorted(wheel.namelist()):
            digest.update(name.encode() + b"\0" + wheel.read(name))
    return digest.hexdigest()


def base_version() -> str:
    spec = "\n".join([SUITE, MIRROR, *PACKAGES, "minbase"])
    return hashlib.sha256(spec.encode()).hexdigest()[:16]


def template_version(wheelhouse: Path, idmap: IdMap | None) -> str:
    """Hash of every input: a template for another id range (or a privileged one) differs."""
    digest = hashlib.sha256(base_version().encode())
    config = _config("X", "X", idmap)
    for text in (AGENT_UNIT, TOKEN_FROM_SSH_KEYS, INTERFACES, *MASKED_UNITS, config):
        digest.update(text.encode() + b"\0")
    for wheel in sorted(wheelhouse.glob("*.whl")):
        digest.update(_wheel_digest(wheel).encode())
    return digest.hexdigest()[:16]


def _config(name: str, rootfs: str, idmap: IdMap | None) -> str:
    """The template's LXC config, which every clone copies. With ``idmap`` the containers are
    unprivileged (userns.conf after common.conf, as LXC's own unprivileged templates do)."""
    lines = [
        "lxc.include = /usr/share/lxc/config/common.conf",
        *(idmap.config_lines() if idmap else []),
        "lxc.arch = linux64",
        f"lxc.uts.name = {name}",
        f"lxc.rootfs.path = dir:{rootfs}",
        "lxc.net.0.type = veth",
        "lxc.net.0.link = lxcbr0",
        "lxc.net.0.flags = up",
        "lxc.net.0.name = eth0",
        # systemd halts cleanly on SIGRTMIN+3 (the default SIGPWR is not a halt for it)
        "lxc.signal.halt = SIGRTMIN+3",
        "lxc.autodev = 1",
    ]
    if Path("/sys/kernel/security/apparmor").exists():
        lines.append("lxc.apparmor.profile = generated")
    return "\n".join(lines) + "\n"


def _debootstrap_base(cache_dir: Path) -> Path:
    """The debootstrapped rootfs for this package set, built once and cached."""
    base = cache_dir / f"base-{base_version()}"
    if (base / ".complete").exists():
        return base
    if shutil.which("debootstrap") is None:
        raise BackendUnavailable("debootstrap is not installed: apt-get install debootstrap")
    shutil.rmtree(base, ignore_errors=True)
    debs = cache_dir / "debs"
    debs.mkdir(parents=True, exist_ok=True)
    log.info("debootstrapping Debian %s into %s (a minute or two, once)", SUITE, base)
    _run(
        [
            "debootstrap",
            "--variant=minbase",
            f"--cache-dir={debs}",
            f"--include={','.join(PACKAGES)}",
            SUITE,
            str(base / "rootfs"),
            MIRROR,
        ],
        "debootstrap",
    )
    (base / ".complete").touch()
    return base


def _customise(rootfs: Path, wheelhouse: Path) -> None:
    """Install the agent venv offline, the boot unit, and make the rootfs clone-ready."""
    inside = rootfs / WHEELHOUSE_INSIDE.lstrip("/")
    shutil.copytree(wheelhouse, inside)
    env = {"PATH": "/usr/sbin:/usr/bin:/sbin:/bin", "LANG": "C.UTF-8", "HOME": "/root"}
    try:
        _run(
            ["chroot", str(rootfs), "python3", "-m", "venv", AGENT_VENV],
            "creating the agent venv",
            env=env,
        )
        _run(
            [
                "chroot",
                str(rootfs),
                f"{AGENT_VENV}/bin/pip",
                "install",
                "-q",
                "--no-index",
                "--no-cache-dir",
                "--find-links",
                WHEELHOUSE_INSIDE,
                "zlh[agent]",
            ],
            "installing zlh[agent] into the template",
            env=env,
        )
        # The bytecode -OO reads (*.opt-2.pyc) of the agent and the standard library, made
        # once here: else every new container's agent would compile it at its first start,
        # into the container's own layer.
        _run(
            [
                "chroot",
                str(rootfs),
                f"{AGENT_VENV}/bin/python",
                "-OO",
                "-m",
                "compileall",
                "-q",
                "-x",
                "/tests?/",  # test data with deliberate syntax errors (lib2to3)
                AGENT_VENV,
                "/usr/lib/python{}.{}".format(*TEMPLATE_PYTHON),
            ],
            "compiling the agent's bytecode",
            env=env,
        )
    finally:
        shutil.rmtree(inside, ignore_errors=True)
    (rootfs / "usr/local/bin/zlh").unlink(missing_ok=True)
    (rootfs / "usr/local/bin/zlh").symlink_to(f"{AGENT_VENV}/bin/zlh")
    helper = rootfs / "opt/zlh/bin/zlh-token-from-ssh-keys"
    helper.parent.mkdir(parents=True, exist_ok=True)
    helper.write_text(TOKEN_FROM_SSH_KEYS)
    helper.chmod(0o755)
    (rootfs / "etc/zlh").mkdir(mode=0o700, exist_ok=True)
    units = rootfs / "etc/systemd/system"
    (units / "zlh-agent.service").write_text(AGENT_UNIT)
    wants = units / "multi-user.target.wants"
    wants.mkdir(exist_ok=True)
    (wants / "zlh-agent.service").unlink(missing_ok=True)
    (wants / "zlh-agent.service").symlink_to("/etc/systemd/system/zlh-agent.service")
    for unit in MASKED_UNITS:
        (units / unit).unlink(missing_ok=True)
        (units / unit).symlink_to("/dev/null")
    (rootfs / "etc/network").mkdir(exist_ok=True)
    (rootfs / "etc/network/interfaces").write_text(INTERFACES)
    (rootfs / "etc/hosts").write_text("127.0.0.1 localhost\n::1 localhost\n")
    # Empty, not absent: systemd then generates a fresh id per clone at first boot.
    (rootfs / "etc/machine-id").write_text("")
    (rootfs / "var/lib/dbus/machine-id").unlink(missing_ok=True)
    for cache in (rootfs / "var/cache/apt/archives").glob("*.deb"):
        cache.unlink()


def current_template(lxcpath: Path) -> Template | None:
    try:
        version = (lxcpath / CURRENT_FILE).read_text().strip()
    except FileNotFoundError:
        return None
    template = Template(lxcpath, version)
    return template if template.config.is_file() else None


def template_in_use(lxcpath: Path) -> set[str]:
    """Names of templates some clone's overlay still reads."""
    used = set()
    for config in lxcpath.glob("*/config"):
        if config.parent.name.startswith(TEMPLATE_PREFIX):
            continue
        for line in config.read_text(errors="replace").splitlines():
            if line.startswith("lxc.rootfs.path") and TEMPLATE_PREFIX in line:
                tail = line.split(TEMPLATE_PREFIX, 1)[1]
                used.add(TEMPLATE_PREFIX + tail.split("/", 1)[0])
    return used


def build_template(
    data_dir: Path, *, idmap: IdMap | None, force: bool = False
) -> tuple[Template, bool]:
    """Build (or find) the current template; returns it and whether it was built now.

    With ``idmap`` (the default everywhere but a host that cannot run user namespaces) the
    rootfs is shifted into the containers' id range once, here, so clones start unprivileged.
    """
    if os.geteuid() != 0:
        raise BackendUnavailable("building the LXC template needs root (debootstrap, chroot)")
    data_dir = data_dir.resolve()  # paths end up in LXC configs and debootstrap's options
    lxcpath = data_dir / "lxc"
    cache_dir = data_dir / "cache" / "template"
    lxcpath.mkdir(parents=True, exist_ok=True)
    # The rootfs is read by every container user: its modes must not inherit a caller's umask
    # of 077 (zlh up keeps the data dir private).
    umask = os.umask(0o022)
    try:
        with tempfile.TemporaryDirectory(prefix="zlh-wheelhouse-") as tmp:
            wheelhouse = Path(tmp)
            build_wheelhouse(wheelhouse)
            template = Template(lxcpath, template_version(wheelhouse, idmap))
            if template.config.is_file() and not force:
                (lxcpath / CURRENT_FILE).write_text(template.version + "\n")
                return template, False
            base = _debootstrap_base(cache_dir)
            staging = lxcpath / f".{template.name}.partial"
            shutil.rmtree(staging, ignore_errors=True)
            staging.mkdir()
            log.info("building template %s", template.name)
            copy_tree(base / "rootfs", staging / "rootfs")
            _customise(staging / "rootfs", wheelhouse)
        if idmap is not None:
            shifted = shift_tree(staging / "rootfs", idmap)
            log.info("template shifted into %s (%d entries)", idmap.label, shifted)
        (staging / "config").write_text(_config(template.name, str(template.rootfs), idmap))
    finally:
        os.umask(umask)
    shutil.rmtree(template.root, ignore_errors=True)
    staging.rename(template.root)
    (lxcpath / CURRENT_FILE).write_text(template.version + "\n")
    _remove_unused(lxcpath, keep=template.name)
    return template, True


def _remove_unused(lxcpath: Path, *, keep: str) -> None:
    used = template_in_use(lxcpath)
    for old in lxcpath.glob(f"{TEMPLATE_PREFIX}*"):
        if old.name != keep and old.name not in used and old.is_dir():
            log.info("removing unused template %s", old.name)
            shutil.rmtree(old, ignore_errors=True)


def export_template(data_dir: Path, output: Path | None) -> Path:
    """Write the current template's rootfs as a Proxmox CT template tarball."""
    template = current_template(data_dir / "lxc")
    if template is None:
        raise BackendError(f"no template under {data_dir / 'lxc'}: run `zlh template build`")
    if output is None:
        output = data_dir / f"debian-12-zlh_{template.version}_amd64.tar.zst"
    if not output.name.endswith((".tar.gz", ".tar.xz", ".tar.zst")):
        raise BackendError(f"{output}: Proxmox CT templates end in .tar.gz, .tar.xz or .tar.zst")
    output.parent.mkdir(parents=True, exist_ok=True)
    partial = output.with_name(output.name + ".partial")
    compress = {"gz": "gzip", "xz": "xz", "zst": "zstd -T0"}[output.name.rsplit(".", 1)[1]]
    tar = ["tar", "--numeric-owner", "--xattrs", "-I", compress, "-C", str(template.rootfs)]
    idmap = IdMap.from_config(template.config.read_text())
    if idmap is not None:
        # Proxmox shifts a CT template into its own range when it creates an unprivileged CT,
        # so the tarball holds container ids: tar runs inside the containers' user namespace,
        # where the shifted owners read as 0.. again.
        tar = [
            "lxc-usernsexec",
            "-m",
            f"u:0:{idmap.uid_start}:{idmap.count}",
            "-m",
            f"g:0:{idmap.gid_start}:{idmap.count}",
            "--",
            *tar,
        ]
    try:
        with partial.open("wb") as out:
            _run([*tar, "-cf", "-", "."], "exporting the template", stdout=out)
        partial.rename(output)
    finally:
        partial.unlink(missing_ok=True)
    return output
