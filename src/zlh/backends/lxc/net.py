"""The LXC backend's network: the ``lxcbr0`` bridge, static addresses, isolation rules.

Isolation (nftables, one table per family, replaced atomically and idempotently):

- ``bridge`` family, forward hook: a frame from one port of the bridge to another is dropped,
  so containers never reach each other at layer 2 (ARP included). The host talks to them
  through the bridge device itself, which is not "forwarding".
- ``inet`` family, forward hook: nothing is routed *into* the bridge unless it answers a
  connection a container opened. That stops a container hair-pinning through the host's
  routing to reach a neighbour, and any other machine reaching a container's agent port or
  :6000: only the host (its own sockets) talks to them.
- ``inet`` family, forward hook: nothing a container sends is routed to a link-local
  address, the cloud metadata services (``169.254.169.254``) included, whose answers hold the
  host's credentials.
- ``inet`` family, output hook: a new connection from the host into a bridge is refused unless
  its socket belongs to the platform's own user (``meta skuid``), so the host's other local
  users cannot reach a container's agent port or :6000 (``--auth none``) behind the front's
  login and ownership checks. Replies to connections containers opened (DNS, DHCP, the
  artifact server) are not new and pass; packets without a socket never match.
- ``inet`` family, input hook: from a bridge, the host itself only answers what containers
  need of it: replies to the host's own connections (the API asking an agent), DNS and DHCP
  (lxc-net's dnsmasq), ICMP, and the TCP ports of the platform's services that every instance
  registered (its artifact server; :mod:`zlh.backends.lxc.slots`). Everything else on any of
  the host's addresses (sshd, a database, the API's other ports, other daemons) is refused.
- Per container, the bridge port (``zlh<slot>``) only accepts frames from the container's own
  MAC and IP (``ports`` set), so one container cannot claim another's address and receive the
  API's requests to it.

The table is host-wide: it is always loaded with every container of every zlh data dir on the
host and every bridge they use (:mod:`zlh.backends.lxc.slots`), so one instance loading it
never takes another's containers off the bridge.

Traffic containers send through the host to elsewhere (the internet, via lxc-net's NAT) is
routed, not delivered to the host, and these rules leave it alone.
"""

from __future__ import annotations

import ipaddress
import logging
import os
import re
import shutil
import subprocess
from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from zlh.backends.base import BackendError, BackendUnavailable
from zlh.locks import flocked

if TYPE_CHECKING:
    from zlh.backends.lxc.slots import HostNetwork

__all__ = [
    "BRIDGE",
    "Bridge",
    "allocate_address",
    "ensure_bridge",
    "ensure_isolation",
    "file_lock",
    "forget_neighbour",
]

log = logging.getLogger(__name__)

BRIDGE = "lxcbr0"
LXC_NET = Path("/usr/libexec/lxc/lxc-net")
TABLE = "zlh_isolation"
# What containers always reach on the host: lxc-net's dnsmasq (DNS, DHCP).
DNS_PORT, DHCP_PORT = 53, 67
# Cloud metadata services (169.254.169.254 and the rest of IPv4 link-local; EC2's IPv6 one):
# the host's credentials are there, never a container's business.
METADATA_V4, METADATA_V6 = "169.254.0.0/16", "fd00:ec2::254"


@dataclass(frozen=True)
class Bridge:
    name: str
    interface: ipaddress.IPv4Interface  # the host's address on it, with the prefix

    @property
    def address(self) -> str:
        return str(self.interface.ip)

    @property
    def network(self) -> ipaddress.IPv4Network:
        return self.interface.network


def _run(cmd: list[str], what: str, *, stdin: str | None = None) -> str:
    try:
        result = subprocess.run(cmd, input=stdin, capture_output=True, text=True, check=False)
    except FileNotFoundError as exc:
        raise BackendUnavailable(f"{what}: {cmd[0]} is not installed") from exc
    if result.returncode != 0:
        raise BackendError(f"{what} failed: {(result.stderr or result.stdout).strip()}")
    return result.stdout


def _bridge_address(name: str) -> ipaddress.IPv4Interface | None:
    try:
        out = subprocess.run(
            ["ip", "-4", "-o", "addr", "show", "dev", name],
            capture_output=True,
            text=True,
            check=False,
        )
    except FileNotFoundError as exc:
        raise BackendUnavailable("iproute2 is not installed: apt-get install iproute2") from exc
    match = re.search(r"inet (\S+)", out.stdout)
    return ipaddress.IPv4Interface(match.group(1)) if match else None


def forget_neighbour(bridge: str, address: str) -> None:
    """Drop the host's ARP entry for ``address`` on ``bridge``: the address goes to a new
    container with another MAC. An entry the host keeps confirming (the poller's connections
    to the old container) stays REACHABLE for up to 45 s (``base_reachable_time``), then waits
    and probes the old MAC, so without this the new container's agent is unreachable for that
    long. Best effort: a failure only costs that wait."""
    try:
        _run(["ip", "neigh", "flush", "to", address, "dev", bridge], f"forgetting {address}")
    except (BackendError, BackendUnavailable) as exc:
        log.warning("%s", exc.message)


def ensure_bridge(name: str = BRIDGE) -> Bridge:
    """The bridge with its host address; starts LXC's own lxc-net when it is not up yet.

    With systemd, ``lxc-net.service`` brings ``lxcbr0`` up at boot; without it (containers,
    CI machines) we run the same script it runs.
    """
    interface = _bridge_address(name)
    if interface is None and name == BRIDGE and LXC_NET.exists():
        _run([str(LXC_NET), "start"], "starting lxcbr0 with lxc-net")
        interface = _bridge_address(name)
    if interface is None:
        raise BackendUnavailable(
            f'bridge {name} has no IPv4 address: set USE_LXC_BRIDGE="true" in '
            "/etc/default/lxc-net and start lxc-net (systemctl start lxc-net), or create it"
        )
    return Bridge(name, interface)


def _ruleset(bridges: Iterable[str], platform_uid: int, service_ports: Iterable[int]) -> str:
    """The whole isolation table; `add` then `delete` makes loading it idempotent."""
    names = ", ".join(f'"{name}"' for name in sorted(set(bridges)))
    others = f"oifname {{ {names} }} ct state new meta skuid != {platform_uid}"
    tcp_ports = ", ".join(str(p) for p in sorted({DNS_PORT, *service_ports}))
    return f"""
table bridge {TABLE}
delete table bridge {TABLE}
table bridge {TABLE} {{
    set ports {{ type ifname . ether_addr . ipv4_addr; }}
    chain forward {{
        type filter hook forward priority 0; policy accept;
        iifname "zlh*" drop
        oifname "zlh*" drop
    }}
    chain input {{
        type filter hook input priority 0; policy accept;
        iifname != "zlh*" accept
        ether type ip iifname . ether saddr . ip saddr @ports accept
        ether type arp iifname . ether saddr . arp saddr ip @ports accept
        ether type {{ ip, arp, ip6 }} drop
    }}
}}
table inet {TABLE}
delete table inet {TABLE}
table inet {TABLE} {{
    chain forward {{
        type filter hook forward priority 0; policy accept;
        oifname {{ {names} }} ct state established,related accept
        oifname {{ {names} }} drop
        iifname {{ {names} }} ip daddr {METADATA_V4} reject with icmpx type admin-prohibited
        iifname {{ {names} }} ip6 daddr {METADATA_V6} reject with icmpx type admin-prohibited
    }}
    chain output {{
        type filter hook output priority 0; policy accept;
        {others} meta l4proto tcp reject with tcp reset
        {others} reject with icmpx type admin-prohibited
    }}
    chain input {{
        type filter hook input priority 0; policy accept;
        iifname {{ {names} }} jump from_containers
    }}
    chain from_containers {{
        ct state established,related accept
        meta l4proto {{ icmp, ipv6-icmp }} accept
        udp dport {{ {DNS_PORT}, {DHCP_PORT} }} accept
        tcp dport {{ {tcp_ports} }} accept
        meta l4proto tcp reject with tcp reset
        reject with icmpx type admin-prohibited
    }}
}}
"""


def _nft(script: str, what: str) -> None:
    if shutil.which("nft") is None:
        raise BackendUnavailable("nftables is not installed: apt-get install nftables")
    _run(["nft", "-f", "-"], what, stdin=script)


def ensure_isolation(bridge: str, network: HostNetwork) -> None:
    """Load the isolation rules for ``bridge`` and the bridges of every container on the host
    (``network``), allowing each container's MAC and address on its own port only, new
    connections into the bridges from this process's user only (the platform's), and from
    the bridges to the host only the registered service ports."""
    bridges = [bridge, *(s.bridge for s in network.slots)]
    script = _ruleset(bridges, os.geteuid(), network.service_ports)
    for slot in network.slots:
        script += (
            f"add element bridge {TABLE} ports {{ {slot.veth} . {slot.mac} . {slot.address} }}\n"
        )
    _nft(script, "loading the container isolation rules")


@contextmanager
def file_lock(path: Path) -> Iterator[None]:
    """An exclusive lock across processes (two API processes on one data dir), its
    directory made first."""
    path.parent.mkdir(parents=True, exist_ok=True)
    with flocked(path):
        yield


def allocate_address(bridge: Bridge, taken: Iterable[str]) -> str:
    """The lowest free host address of the bridge's network (freed addresses come back)."""
    used = {ipaddress.IPv4Address(a) for a in taken} | {bridge.interface.ip}
    for host in bridge.network.hosts():
        if host not in used:
            return str(host)
    raise BackendError(f"no free address left on {bridge.name} ({bridge.network})")
