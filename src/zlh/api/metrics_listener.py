"""The separate ``metrics_listen`` address: ``GET /metrics`` and nothing else, unauthenticated.

For a Prometheus on a private network that cannot hold an admin session. Anyone who reaches
the address reads the metrics (counts, timings, per-vmid use: no names, no secrets), so bind
it to a private interface only (docs/operations.md). One request per connection; anything but
``GET``/``HEAD /metrics`` gets a JSON error.
"""

from __future__ import annotations

import asyncio
import logging
from typing import Final

from zlh.api.metrics import CONTENT_TYPE, Metrics
from zlh.schemas import ErrorBody

__all__ = ["serve_metrics"]

logger = logging.getLogger(__name__)

_HEAD_LIMIT: Final = 8192
_READ_TIMEOUT_S: Final = 10.0
_REASONS: Final = {
    200: "OK",
    400: "Bad Request",
    404: "Not Found",
    405: "Method Not Allowed",
    500: "Internal Server Error",
}


async def serve_metrics(metrics: Metrics, host: str, port: int) -> asyncio.Server:
    """Listen on ``host:port``; OSError when the address cannot be had."""

    async def handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            await _answer(metrics, reader, writer)
        except (ConnectionError, TimeoutError, asyncio.IncompleteReadError):
            pass
        except asyncio.LimitOverrunError:
            writer.write(_error(400, "request head too large"))
        except Exception as exc:  # a bug or a collector failing: say so, keep serving
            logger.exception("serving /metrics failed")
            writer.write(_error(500, "internal error", exc.__class__.__name__))
        finally:
            writer.close()

    return await asyncio.start_server(handle, host, port, limit=_HEAD_LIMIT, reuse_address=True)


async def _answer(
    metrics: Metrics, reader: asyncio.StreamReader, writer: asyncio.StreamWriter
) -> None:
    head = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), _READ_TIMEOUT_S)
    parts = head.split(b"\r\n", 1)[0].split()
    if len(parts) != 3 or not parts[2].startswith(b"HTTP/1."):
        writer.write(_error(400, "malformed request line"))
    elif parts[1].partition(b"?")[0] != b"/metrics":
        writer.write(_error(404, "not found", "only /metrics is served on this address"))
    elif parts[0] not in (b"GET", b"HEAD"):
        writer.write(_error(405, "method not allowed", extra=b"Allow: GET, HEAD\r\n"))
    else:
        body = await asyncio.to_thread(metrics.render)
        head_only = parts[0] == b"HEAD"
        writer.write(_response(200, CONTENT_TYPE, body, head_only=head_only))
    await writer.drain()


def _error(status: int, message: str, detail: str = "", *, extra: bytes = b"") -> bytes:
    body = ErrorBody(message=message, detail=detail).model_dump_json(exclude_none=True)
    return _response(status, "application/json", body.encode(), extra=extra)


def _response(
    status: int, content_type: str, body: bytes, *, head_only: bool = False, extra: bytes = b""
) -> bytes:
    head = (
        f"HTTP/1.1 {status} {_REASONS[status]}\r\nContent-Type: {content_type}\r\n"
        f"Content-Length: {len(body)}\r\nConnection: close\r\n"
    ).encode()
    return head + extra + b"\r\n" + (b"" if head_only else body)
