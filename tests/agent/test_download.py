"""The streaming download on its own: resume, servers without Range, bounded retries."""

from __future__ import annotations

import asyncio
import os

import aiohttp
import pytest

from agent_helpers import artifact_server, sha256
from zlh.agent.errors import DownloadError
from zlh.install.download import RetryPolicy, fetch

FAST = RetryPolicy(attempts=3, backoff_s=0.01)


class Collect:
    def __init__(self) -> None:
        self.data = bytearray()

    async def write(self, chunk: bytes) -> None:
        self.data += chunk


async def download(url: str, data: bytes) -> bytes:
    sink = Collect()
    async with aiohttp.ClientSession(auto_decompress=False) as session:
        await fetch(session, url, size=len(data), sha256=sha256(data), sink=sink, policy=FAST)
    return bytes(sink.data)


def test_a_server_that_ignores_range_is_resumed_by_skipping_what_we_have() -> None:
    data = os.urandom(1_000_000)
    with artifact_server() as server:
        url = server.add("f", data, drop_at=400_000, drops=1, ignore_range=True)
        assert asyncio.run(download(url, data)) == data
        requests = server.gets("f")
    assert [r.range for r in requests] == [None, "bytes=400000-"]


def test_http_errors_are_not_retried() -> None:
    with artifact_server() as server:
        with pytest.raises(DownloadError, match="HTTP 404"):
            asyncio.run(download(f"{server.url}/missing", b"x"))
        assert len(server.gets("missing")) == 1
