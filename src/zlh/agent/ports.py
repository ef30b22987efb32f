"""``GET /ports``: the TCP ports listening in the container, for port previews.

Read from ``/proc/net/tcp`` and ``/proc/net/tcp6`` (sockets in state LISTEN, ``0A``), the
container's own network namespace. The agent's own port and the addons' (code-server) are left
out: they are the platform's, never previewed. With the process backend there is no namespace
of its own, so this lists the host's listening ports (that backend isolates nothing).
"""

from __future__ import annotations

import ipaddress
from pathlib import Path

from aiohttp import web

from zlh.agent.provisioner import Provisioner
from zlh.schemas import CODE_SERVER_PORT, ListeningPort, ListeningPorts

__all__ = ["listening_ports", "setup_ports_routes"]

_TABLES = (Path("/proc/net/tcp"), Path("/proc/net/tcp6"))
_LISTEN = "0A"


def listening_ports(tables: tuple[Path, ...] = _TABLES) -> dict[int, str]:
    """Port → the address it listens on (a wildcard address wins over a specific one)."""
    found: dict[int, str] = {}
    for table in tables:
        try:
            lines = table.read_text().splitlines()[1:]
        except OSError:
            continue  # no IPv6 in this container
        for line in lines:
            fields = line.split()
            if len(fields) < 4 or fields[3] != _LISTEN:
                continue
            hex_address, _, hex_port = fields[1].partition(":")
            address = _address(hex_address)
            port = int(hex_port, 16)
            if port not in found or address.is_unspecified:
                found[port] = str(address)
    return found


def _address(hex_address: str) -> ipaddress.IPv4Address | ipaddress.IPv6Address:
    """The kernel prints each 32-bit word of the address in host (little-endian) order."""
    raw = bytes.fromhex(hex_address)
    words = b"".join(raw[i : i + 4][::-1] for i in range(0, len(raw), 4))
    return ipaddress.ip_address(words)


def setup_ports_routes(app: web.Application, provisioner: Provisioner) -> None:
    async def ports(request: web.Request) -> web.Response:
        own = {CODE_SERVER_PORT}
        sockname = request.transport.get_extra_info("sockname") if request.transport else None
        if isinstance(sockname, tuple):
            own.add(int(sockname[1]))
        payload = provisioner.payload
        for addon in payload.addons if payload is not None else ():
            port = getattr(getattr(addon, "options", None), "port", None)
            if isinstance(port, int):
                own.add(port)
        found = listening_ports()
        body = ListeningPorts(
            ports=[
                ListeningPort(port=port, address=address)
                for port, address in sorted(found.items())
                if port not in own
            ]
        )
        return web.json_response(text=body.model_dump_json())

    app.router.add_get("/ports", ports)
