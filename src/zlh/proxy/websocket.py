"""A WebSocket through the front: after the upstream's 101, bytes are spliced both ways.

Frames are not decoded and re-encoded: each side's reads are written to the other side as they
are, so close frames, codes and reasons, pings and pongs pass through untouched, and a tunnel
has no idle timeout (the front sends nothing of its own while it is open). Back-pressure: a
full write buffer on one side pauses reading on the other.

The front speaks up in one case only: when access is taken away (session revoked, user
disabled, container removed or transferred, session expired). It then sends the client a
proper close frame (1008 policy violation, or 4401 when the session expired) and drops the
upstream. To inject that frame without cutting one of the upstream's frames in half, the
upstream→client direction is followed frame by frame (:class:`FrameTracker`, a few integer
operations per read).
"""

from __future__ import annotations

import asyncio
import time
from enum import Enum
from typing import Final, cast

from zlh.proxy.auth import Principal
from zlh.proxy.metrics import RouteStats
from zlh.proxy.routes import RouteTable
from zlh.proxy.settings import ProxySettings

__all__ = ["CLOSE_SESSION_EXPIRED", "FrameTracker", "Tunnel", "close_frame"]

CLOSE_SESSION_EXPIRED: Final = 4401


class FrameTracker:
    """Follows frame boundaries in one direction of a WebSocket byte stream (RFC 6455 §5.2)."""

    __slots__ = ("_header", "_remaining")

    def __init__(self) -> None:
        self._header = b""  # an incomplete frame header carried over from the last read
        self._remaining = 0  # payload bytes of the current frame still to come

    @property
    def at_boundary(self) -> bool:
        return not self._remaining and not self._header

    def feed(self, data: bytes, *, stop: bool = False) -> int:
        """Account for ``data``; returns how many bytes were consumed: all of them, or with
        ``stop`` those up to the first frame boundary (0 when already at one)."""
        n, pos = len(data), 0
        while pos < n:
            remaining = self._remaining
            if remaining:
                if n - pos <= remaining:
                    self._remaining = remaining - (n - pos)
                    return n
                pos += remaining
                self._remaining = 0
                continue
            if stop and not self._header:
                return pos
            carried = self._header
            header = carried + data[pos : pos + 14 - len(carried)]  # a header is at most 14 B
            if len(header) < 2:
                self._header = header
                return n
            length = header[1] & 0x7F
            size = 2 + (2 if length == 126 else 8 if length == 127 else 0)
            size += 4 if header[1] & 0x80 else 0
            if len(header) < size:
                self._header = header
                return n
            if length == 126:
                length = int.from_bytes(header[2:4], "big")
            elif length == 127:
                length = int.from_bytes(header[2:10], "big")
            pos += size - len(carried)
            self._header = b""
            self._remaining = length
        return n


def close_frame(code: int, reason: str) -> bytes:
    """An unmasked (server-to-client) close frame."""
    payload = code.to_bytes(2, "big") + reason.encode()[:123]
    return bytes((0x88, len(payload))) + payload


class _State(Enum):
    OPEN = "open"
    CLOSING = "closing"  # the front closes: waiting for a frame boundary upstream→client
    CLOSE_SENT = "close-sent"  # our close frame is out: waiting for the client to hang up
    DONE = "done"


class _Side:
    """One end of a tunnel: back-pressure onto the other end (``peer``). An asyncio protocol
    by its methods, like :class:`~zlh.proxy.listener.ClientConnection`."""

    def __init__(self, tunnel: Tunnel, peer: asyncio.Transport) -> None:
        self._tunnel = tunnel
        self._peer = peer
        self._stats = tunnel.stats

    def eof_received(self) -> bool:
        return False

    def pause_writing(self) -> None:
        self._peer.pause_reading()

    def resume_writing(self) -> None:
        self._peer.resume_reading()


class _ClientSide(_Side):
    def data_received(self, data: bytes) -> None:
        if self._tunnel.state is _State.OPEN:
            self._stats.bytes_in += len(data)
            self._peer.write(data)
        # else: the client's close reply (or anything after our close frame): dropped

    def connection_lost(self, exc: Exception | None) -> None:
        self._tunnel.client_lost()


class _UpstreamSide(_Side):
    def data_received(self, data: bytes) -> None:
        tunnel = self._tunnel
        if tunnel.state is _State.OPEN:
            tunnel.tracker.feed(data)
            self._stats.bytes_out += len(data)
            self._peer.write(data)
        else:
            tunnel.upstream_data_while_closing(data)

    def connection_lost(self, exc: Exception | None) -> None:
        self._tunnel.upstream_lost()


class Tunnel:
    """One spliced WebSocket. IDE tunnels (``vmid``/``principal`` set) are registered in the
    route table so that revocations reach them; API tunnels are the API's to police. ``live``
    holds every tunnel from :meth:`start` until it is done (the front closes them all at exit);
    ``stats`` counts its bytes (zlh.proxy.metrics)."""

    def __init__(
        self,
        client: asyncio.Transport,
        upstream: asyncio.Transport,
        *,
        routes: RouteTable,
        settings: ProxySettings,
        live: set[Tunnel],
        stats: RouteStats,
        vmid: int = 0,
        principal: Principal | None = None,
    ) -> None:
        self.client = client
        self.stats = stats
        self.upstream = upstream
        self.vmid = vmid
        self.principal = principal
        self.state = _State.OPEN
        self.tracker = FrameTracker()
        self._routes = routes
        self._settings = settings
        self._live = live
        self._loop = asyncio.get_running_loop()
        self._close_frame = b""
        self._timer: asyncio.TimerHandle | None = None

    def start(self, client_rest: bytes, upstream_rest: bytes) -> None:
        """Splice from now on. ``*_rest`` are bytes each side sent right after the handshake."""
        self._live.add(self)
        self.client.set_protocol(cast(asyncio.Protocol, _ClientSide(self, self.upstream)))
        self.upstream.set_protocol(cast(asyncio.Protocol, _UpstreamSide(self, self.client)))
        if client_rest:
            self.upstream.write(client_rest)
        if upstream_rest:
            self.tracker.feed(upstream_rest)
            self.client.write(upstream_rest)
        self.client.resume_reading()
        self.upstream.resume_reading()
        principal = self.principal
        if principal is not None:
            self._routes.add_tunnel(self.vmid, principal, self)
            if self._settings.close_tunnels_at_session_expiry:
                self._timer = self._loop.call_later(
                    max(0.0, principal.expires_at - time.time()),
                    self.terminate,
                    CLOSE_SESSION_EXPIRED,
                    "session expired",
                )

    def terminate(self, code: int, reason: str) -> None:
        """Close the client with a close frame (at the next frame boundary) and the upstream."""
        if self.state is not _State.OPEN:
            return
        self.state = _State.CLOSING
        self._forget()
        self._close_frame = close_frame(code, reason)
        self._timer = self._loop.call_later(self._settings.close_grace_s, self._abort)
        self.upstream.pause_reading()
        if self.tracker.at_boundary:
            self._send_close()
        else:
            self.upstream.resume_reading()  # read on until the frame in flight is complete

    def upstream_data_while_closing(self, data: bytes) -> None:
        if self.state is not _State.CLOSING:
            return
        cut = self.tracker.feed(data, stop=True)
        if cut:
            self.client.write(data[:cut])
        if self.tracker.at_boundary:
            self._send_close()

    def client_lost(self) -> None:
        self._forget()
        self._done()
        self.upstream.close()

    def upstream_lost(self) -> None:
        if self.state is _State.OPEN:
            self._forget()
            self._done()
            self.client.close()  # after what is buffered: the upstream's close frame, if any
        elif self.state is _State.CLOSING:
            self._abort()  # cut mid-frame: no clean close frame is possible

    def _send_close(self) -> None:
        self.state = _State.CLOSE_SENT
        self.client.write(self._close_frame)
        if self.client.can_write_eof():
            self.client.write_eof()
        self.upstream.close()

    def _abort(self) -> None:
        self._done()
        self.client.abort()
        self.upstream.abort()

    def _done(self) -> None:
        self.state = _State.DONE
        self._live.discard(self)

    def _forget(self) -> None:
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        if self.principal is not None:
            self._routes.discard_tunnel(self.vmid, self)
