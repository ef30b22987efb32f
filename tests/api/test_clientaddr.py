"""The client's address: X-Forwarded-For believed only as far as trusted proxies vouch for it."""

from __future__ import annotations

import pytest

from zlh.api.clientaddr import UNKNOWN, parse_networks, resolve_client
from zlh.api.settings import ApiSettings

TRUSTED = parse_networks(["10.0.0.5", "192.168.0.0/16", "fd00::/8"])


@pytest.mark.parametrize(
    ("peer", "forwarded_for", "client"),
    [
        # No proxy trusted in the path: the TCP peer, whatever the header claims.
        ("198.51.100.9", ["6.6.6.6"], "198.51.100.9"),
        # A trusted proxy reports its client: the right-most untrusted hop.
        ("10.0.0.5", ["198.51.100.9"], "198.51.100.9"),
        # The client's own prepended claim stays ignored; chains of trusted proxies are walked.
        ("10.0.0.5", ["6.6.6.6, 198.51.100.9, 192.168.3.4"], "198.51.100.9"),
        ("10.0.0.5", ["6.6.6.6", "198.51.100.9"], "198.51.100.9"),  # several header lines
        # Over the front's unix socket (no peer) the front's appended hop comes last.
        (None, ["6.6.6.6, 198.51.100.9"], "198.51.100.9"),
        (None, ["6.6.6.6, 10.0.0.5"], "6.6.6.6"),
        (None, [], UNKNOWN),
        # IPv6, and IPv4 written as IPv6.
        ("fd00::1", ["2001:db8::7"], "2001:db8::7"),
        ("::ffff:10.0.0.5", ["198.51.100.9"], "198.51.100.9"),
        # Garbage is never a trusted proxy, so nothing left of it is believed.
        ("10.0.0.5", ["6.6.6.6, garbage"], "garbage"),
        # Everything trusted: the left-most hop is the best there is.
        ("10.0.0.5", ["192.168.1.1"], "192.168.1.1"),
    ],
)
def test_the_right_most_untrusted_hop_is_the_client(
    peer: str | None, forwarded_for: list[str], client: str
) -> None:
    assert resolve_client(peer, forwarded_for, TRUSTED) == client


def test_trusted_proxies_are_validated_and_normalised() -> None:
    settings = ApiSettings(trusted_proxies=["10.0.0.5", "192.168.1.7/16"])
    assert settings.trusted_proxies == ["10.0.0.5/32", "192.168.0.0/16"]
    with pytest.raises(ValueError, match=r"'proxy\.example' is not an IP address or CIDR"):
        ApiSettings(trusted_proxies=["proxy.example"])
