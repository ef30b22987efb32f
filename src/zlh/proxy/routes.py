"""What the front knows: vmid → where its IDE is and who owns it, and which sessions are revoked.

The API is the only writer, through five calls (``update``, ``remove``, ``replace_all``,
``revoke_session``, ``revoke_user``); the front reads on every request. Everything is in memory
and every call is O(1) or O(open tunnels): the API pushes a full ``replace_all`` after it starts
and a small call on each change.

The table also knows every open WebSocket tunnel, so that a change that takes access away
(logout, user disabled, container deleted or given to someone else, address changed) closes the
affected tunnels at once instead of when they next reconnect.
"""

from __future__ import annotations

import math
import time
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Final, Protocol

from zlh.proxy.auth import Principal
from zlh.proxy.pool import UpstreamAddress

__all__ = ["CLOSE_POLICY", "Route", "RouteTable", "Tunnel"]

# The WebSocket close code sent when the front takes access away (RFC 6455 "policy violation").
CLOSE_POLICY: Final = 1008


@dataclass(frozen=True, slots=True)
class Route:
    """Where container ``vmid``'s code-server listens and whether it can take requests.

    ``reason`` says why it is not ready ("still provisioning", "code-server is not running");
    the front shows it in the 503 page. A route that is not ready may have no address yet
    (``host=""``, ``port=0``).
    """

    owner_id: str
    host: str
    port: int
    ready: bool
    reason: str = ""
    # Stopped (by its owner or for being idle): opening its IDE starts it, in the portal.
    stopped: bool = False
    # Users its owner shared it with to use (their ids, as owner_id): they open it too.
    guests: frozenset[str] = frozenset()
    # Ports whose preview its owner made public: served to anyone, signed in or not.
    public_ports: frozenset[int] = frozenset()
    # Its system runs and ``host`` reaches it, code-server or not: its ports can be previewed.
    # None: as ``ready``.
    running: bool | None = None
    # The pool's key for this route's connections, made once here rather than per request.
    upstream: UpstreamAddress = field(init=False, repr=False, compare=False)

    def admits(self, user_id: str) -> bool:
        """``user_id`` owns it or may use it (admins are the front's to judge)."""
        return user_id == self.owner_id or user_id in self.guests

    def __post_init__(self) -> None:
        if not self.owner_id:
            raise ValueError("Route.owner_id must not be empty")
        if self.ready and not self.host:
            raise ValueError("a ready Route needs a host")
        if not (0 < self.port < 65536 or (self.port == 0 and not self.ready)):
            raise ValueError(f"Route.port must be 1..65535, got {self.port}")
        object.__setattr__(self, "upstream", UpstreamAddress(self.host, self.port))
        if self.running is None:
            object.__setattr__(self, "running", self.ready)
        elif self.running and not self.host:
            raise ValueError("a running Route needs a host")


class Tunnel(Protocol):
    """An open WebSocket through the front, as the route table sees it."""

    def terminate(self, code: int, reason: str) -> None:
        """Send the client a close frame with ``code``/``reason`` and drop both sides."""


class RouteTable:
    def __init__(self) -> None:
        self._routes: dict[int, Route] = {}
        self._revoked_sids: dict[str, float] = {}  # sid -> keep until (epoch s)
        self._users_revoked_at: dict[str, float] = {}  # tokens issued at or before are dead
        self._tunnels: dict[int, dict[Tunnel, Principal]] = {}  # vmid -> who opened each
        self._next_prune = 0.0

    # ---------------------------------------------------------------- reads (every request)
    def get(self, vmid: int) -> Route | None:
        return self._routes.get(vmid)

    def is_revoked(self, principal: Principal) -> bool:
        if principal.sid in self._revoked_sids:
            return True
        revoked_at = self._users_revoked_at.get(principal.user_id)
        return revoked_at is not None and principal.issued_at <= revoked_at

    def __len__(self) -> int:
        return len(self._routes)

    # ---------------------------------------------------------------- writes (from the API)
    def update(self, vmid: int, route: Route) -> None:
        """Add or change ``vmid``'s route; a new owner or address, or a share taken back, closes
        the tunnels losing access; a preview made private again closes its signed-out visitors'
        tunnels."""
        old = self._routes.get(vmid)
        self._routes[vmid] = route
        if old is None:
            return
        tunnels = self._tunnels.get(vmid, {})
        if (old.host, old.port) != (route.host, route.port):
            self._close(tunnels, "container moved")
        elif old.owner_id != route.owner_id or not old.guests <= route.guests:
            self._close(
                (t for t, p in tunnels.items() if not p.is_admin and not route.admits(p.user_id)),
                "access taken back",
            )
        if old.public_ports - route.public_ports:
            private = old.public_ports - route.public_ports
            self._close(
                (t for t, p in tunnels.items() if p.public_port in private), "preview not public"
            )

    def remove(self, vmid: int) -> None:
        """Forget ``vmid`` (container deleted); its open tunnels are closed. Absent is fine."""
        self._routes.pop(vmid, None)
        self._close(self._tunnels.pop(vmid, {}), "container removed")

    def replace_all(
        self, routes: Mapping[int, Route], revoked_sessions: Iterable[str] | None = None
    ) -> None:
        """Make the table equal to the API's full view (after a restart or a resync): these
        routes, and when given exactly these revoked sessions (newly revoked ones close)."""
        for vmid in [v for v in self._routes if v not in routes]:
            self.remove(vmid)
        for vmid, route in routes.items():
            self.update(vmid, route)
        if revoked_sessions is not None:
            revoked = set(revoked_sessions)
            for sid in [s for s in self._revoked_sids if s not in revoked]:
                del self._revoked_sids[sid]
            for sid in revoked - self._revoked_sids.keys():
                self.revoke_session(sid)

    def revoke_session(self, sid: str, *, expires_at: float | None = None) -> None:
        """Refuse session ``sid`` from now on and close its tunnels.

        ``expires_at`` is the token's own expiry: the entry is dropped after it, since the token
        is refused anyway by then. Without it the entry is kept while the process lives.
        """
        self._revoked_sids[sid] = math.inf if expires_at is None else expires_at
        self._close((t for t, p in self._all_tunnels() if p.sid == sid), "session revoked")
        self._prune()

    def revoke_user(self, user_id: str) -> None:
        """Refuse every token of ``user_id`` issued until now (disable, "log out everywhere")
        and close that user's tunnels. Tokens issued later (after re-enabling) work."""
        self._users_revoked_at[user_id] = time.time()
        self._close((t for t, p in self._all_tunnels() if p.user_id == user_id), "user revoked")

    # ---------------------------------------------------------------- tunnels (from the front)
    def add_tunnel(self, vmid: int, principal: Principal, tunnel: Tunnel) -> None:
        self._tunnels.setdefault(vmid, {})[tunnel] = principal

    def discard_tunnel(self, vmid: int, tunnel: Tunnel) -> None:
        tunnels = self._tunnels.get(vmid)
        if tunnels is not None:
            tunnels.pop(tunnel, None)
            if not tunnels:
                del self._tunnels[vmid]

    def tunnel_count(self) -> int:
        return sum(len(t) for t in self._tunnels.values())

    def _all_tunnels(self) -> Iterable[tuple[Tunnel, Principal]]:
        for tunnels in self._tunnels.values():
            yield from tunnels.items()

    def _close(self, tunnels: Iterable[Tunnel], reason: str) -> None:
        for tunnel in list(tunnels):  # terminate() discards from the sets we iterate
            tunnel.terminate(CLOSE_POLICY, reason)

    def _prune(self) -> None:
        now = time.time()
        if now < self._next_prune:
            return
        self._next_prune = now + 60.0
        for sid in [s for s, until in self._revoked_sids.items() if until < now]:
            del self._revoked_sids[sid]
