"""The client's address behind the front and any reverse proxies the operator trusts.

The front (``zlh.proxy``) appends the address of its own TCP peer to whatever
``X-Forwarded-For`` it received, and reaches the API over a unix socket (no peer address of
its own). So the API reads one list of hops, the right-most added last. Walking it from the
right, every hop in ``trusted_proxies`` is a proxy that reported the one before it; the first
hop that is not trusted is the client. A client can prepend what it likes, but never past a
proxy that is not trusted: with no trusted proxies the front's peer is the client.
"""

from __future__ import annotations

import ipaddress
from collections.abc import Iterable, Sequence
from contextvars import ContextVar

__all__ = ["UNKNOWN", "Network", "parse_networks", "request_address", "resolve_client"]

Network = ipaddress.IPv4Network | ipaddress.IPv6Network
UNKNOWN = "unknown"
# Longest text an address keeps (an IPv6 address with a zone fits); also the audit column's size.
MAX_ADDRESS_CHARS = 64
# The address of the request being served (set by zlh.api.guard): the audit log records it
# on every entry the request causes, in threads (asyncio.to_thread copies it) included.
request_address: ContextVar[str | None] = ContextVar("request_address", default=None)


def parse_networks(values: Iterable[str]) -> tuple[Network, ...]:
    """Addresses or CIDRs as networks; ValueError names the one that is neither."""
    networks = []
    for value in values:
        try:
            networks.append(ipaddress.ip_network(value.strip(), strict=False))
        except ValueError:
            raise ValueError(f"{value!r} is not an IP address or CIDR") from None
    return tuple(networks)


def _is_trusted(hop: str, trusted: Sequence[Network]) -> bool:
    try:
        address = ipaddress.ip_address(hop.strip("[]"))
    except ValueError:
        return False
    if isinstance(address, ipaddress.IPv6Address) and address.ipv4_mapped is not None:
        address = address.ipv4_mapped
    return any(address in network for network in trusted)


def resolve_client(
    peer: str | None, forwarded_for: Iterable[str], trusted: Sequence[Network]
) -> str:
    """The right-most hop of ``X-Forwarded-For`` + ``peer`` that is not a trusted proxy.

    ``peer`` is the TCP peer (None over the front's unix socket, whose own appended hop is
    then the right-most); ``forwarded_for`` the header's values in order.
    """
    hops = [hop.strip() for value in forwarded_for for hop in value.split(",") if hop.strip()]
    if peer:
        hops.append(peer)
    if not hops:
        return UNKNOWN
    for hop in reversed(hops):
        if not _is_trusted(hop, trusted):
            return hop[:MAX_ADDRESS_CHARS]
    return hops[0][:MAX_ADDRESS_CHARS]
