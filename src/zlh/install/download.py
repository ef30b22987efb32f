"""Streaming artifact download: hash while it flows, resume with ``Range``, never trust the wire.

The bytes go to a :class:`Sink` (the streaming extractor) as they arrive, so download and
extraction overlap like ``curl | tar``. A dropped connection is resumed from the byte it stopped
at (``Range: bytes=N-`` with ``If-Range`` on the server's ETag); a server that ignores the range
answers 200 and the already-received prefix is skipped, so the sink sees every byte exactly
once. Retries are bounded (consecutive failures without progress) with exponential backoff and
full jitter; 4xx answers are never retried. The size the payload pins is enforced as bytes arrive
and the sha256 is checked at the end: the caller must not use what the sink built before
:func:`fetch` returned.
"""

from __future__ import annotations

import asyncio
import hashlib
import random
import re
from collections.abc import Callable
from dataclasses import dataclass
from typing import Protocol

import aiohttp

from zlh.install.errors import DigestMismatch, DownloadError, SizeMismatch

__all__ = ["RetryPolicy", "Sink", "fetch"]

CHUNK_BYTES = 256 * 1024
_CONTENT_RANGE = re.compile(r"bytes (\d+)-(\d+)/(\d+|\*)")


class Sink(Protocol):
    async def write(self, chunk: bytes) -> None: ...


@dataclass(frozen=True)
class RetryPolicy:
    """How hard to try. ``attempts`` counts consecutive failures that received no new byte."""

    attempts: int = 5
    backoff_s: float = 0.2
    max_backoff_s: float = 5.0
    connect_timeout_s: float = 10.0
    read_timeout_s: float = 30.0

    def delay_s(self, failures: int) -> float:
        return random.uniform(0.0, min(self.max_backoff_s, self.backoff_s * 2 ** (failures - 1)))


class _Retryable(Exception):
    """A failure worth another attempt (dropped connection, 5xx, short body)."""


@dataclass
class _Transfer:
    url: str
    size: int
    sink: Sink
    on_bytes: Callable[[int], None]
    done: int = 0
    etag: str | None = None

    def __post_init__(self) -> None:
        self.digest = hashlib.sha256()

    def headers(self) -> dict[str, str]:
        if not self.done:
            return {}
        headers = {"Range": f"bytes={self.done}-"}
        if self.etag:
            headers["If-Range"] = self.etag
        return headers

    def skip_for(self, resp: aiohttp.ClientResponse) -> int:
        """How many leading body bytes we already have; checks the announced size."""
        if resp.status == 200:
            announced = resp.content_length
            if announced is not None and announced != self.size:
                raise SizeMismatch(
                    f"size mismatch for {self.url}: the server sends {announced} bytes, "
                    f"the payload pins {self.size}"
                )
            return self.done
        if resp.status == 206:
            match = _CONTENT_RANGE.fullmatch(resp.headers.get("Content-Range", ""))
            if match is None or int(match.group(1)) != self.done:
                raise DownloadError(
                    f"{self.url} answered a range request from byte {self.done} with "
                    f"Content-Range {resp.headers.get('Content-Range')!r}"
                )
            if match.group(3) != "*" and int(match.group(3)) != self.size:
                raise SizeMismatch(
                    f"size mismatch for {self.url}: the server has {match.group(3)} bytes, "
                    f"the payload pins {self.size}"
                )
            return 0
        if resp.status >= 500 or resp.status == 429:
            raise _Retryable(f"HTTP {resp.status} {resp.reason}")
        raise DownloadError(f"{self.url} answered HTTP {resp.status} {resp.reason}")

    async def take(self, chunk: bytes) -> None:
        if self.done + len(chunk) > self.size:
            raise SizeMismatch(
                f"size mismatch for {self.url}: the server sends more than the "
                f"{self.size} bytes the payload pins"
            )
        self.digest.update(chunk)
        await self.sink.write(chunk)
        self.done += len(chunk)
        self.on_bytes(self.done)

    async def _read(self, resp: aiohttp.ClientResponse) -> None:
        skip = self.skip_for(resp)
        self.etag = resp.headers.get("ETag") or self.etag
        async for chunk in resp.content.iter_chunked(CHUNK_BYTES):
            if skip:
                drop = min(skip, len(chunk))
                chunk, skip = chunk[drop:], skip - drop
                if not chunk:
                    continue
            await self.take(chunk)

    async def attempt(self, session: aiohttp.ClientSession, policy: RetryPolicy) -> None:
        timeout = aiohttp.ClientTimeout(
            total=None, sock_connect=policy.connect_timeout_s, sock_read=policy.read_timeout_s
        )
        async with session.get(self.url, headers=self.headers(), timeout=timeout) as resp:
            try:
                await self._read(resp)
            except BaseException:
                resp.close()  # never hand a half-read (or lying) connection back to the pool
                raise
        if self.done < self.size:
            raise _Retryable(f"the connection ended at byte {self.done} of {self.size}")


async def fetch(
    session: aiohttp.ClientSession,
    url: str,
    *,
    size: int,
    sha256: str,
    sink: Sink,
    policy: RetryPolicy,
    on_bytes: Callable[[int], None] = lambda _done: None,
) -> None:
    """Stream ``url`` into ``sink``; raise unless exactly ``size`` bytes hashing to ``sha256``."""
    transfer = _Transfer(url=url, size=size, sink=sink, on_bytes=on_bytes)
    failures = attempts = 0
    while transfer.done < size or attempts == 0:
        attempts += 1
        before = transfer.done
        try:
            await transfer.attempt(session, policy)
        except (_Retryable, aiohttp.ClientError, TimeoutError) as exc:
            failures = 0 if transfer.done > before else failures + 1
            if failures >= policy.attempts:
                raise DownloadError(
                    f"download of {url} failed after {attempts} attempts, at byte "
                    f"{transfer.done} of {size}: {str(exc) or type(exc).__name__}"
                ) from exc
        else:
            break
        await asyncio.sleep(policy.delay_s(failures or 1))
    actual = transfer.digest.hexdigest()
    if actual != sha256:
        raise DigestMismatch(f"sha256 mismatch for {url}: expected {sha256}, got {actual}")
