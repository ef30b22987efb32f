"""ArtifactServer as an ASGI app: range parsing, and mounting under a prefix like the API does."""

from __future__ import annotations

import asyncio
import hashlib
from pathlib import Path

import httpx
import pytest
from fastapi import FastAPI
from hypothesis import given
from hypothesis import strategies as st

from zlh.artifacts.server import ArtifactServer
from zlh.artifacts.store import ArtifactStore
from zlh.http_range import UNSATISFIABLE, ByteRange, parse_range


@pytest.mark.parametrize(
    ("header", "size", "expected"),
    [
        ("bytes=0-9", 100, ByteRange(0, 9)),
        ("bytes=90-", 100, ByteRange(90, 99)),
        ("bytes=90-1000", 100, ByteRange(90, 99)),
        ("bytes=-10", 100, ByteRange(90, 99)),
        ("bytes=-1000", 100, ByteRange(0, 99)),
        ("Bytes = 5-5", 100, ByteRange(5, 5)),
        ("bytes=100-", 100, UNSATISFIABLE),
        ("bytes=100-200", 100, UNSATISFIABLE),
        ("bytes=-0", 100, UNSATISFIABLE),
        ("bytes=0-", 0, UNSATISFIABLE),
        ("bytes=9-0", 100, None),
        ("bytes=0-1,5-6", 100, None),
        ("items=0-1", 100, None),
        ("bytes=a-b", 100, None),
        ("bytes=-", 100, None),
        ("bytes=1-x", 100, None),
        ("bytes", 100, None),
    ],
)
def test_parse_range(header: str, size: int, expected: ByteRange | str | None) -> None:
    assert parse_range(header, size) == expected


@given(size=st.integers(0, 10_000), first=st.integers(0, 20_000), last=st.integers(0, 20_000))
def test_a_satisfiable_range_always_lies_inside_the_file(size: int, first: int, last: int) -> None:
    for header in (f"bytes={first}-{last}", f"bytes={first}-", f"bytes=-{last}"):
        parsed = parse_range(header, size)
        if isinstance(parsed, ByteRange):
            assert 0 <= parsed.start <= parsed.end < size


@pytest.fixture
def store(tmp_path: Path) -> ArtifactStore:
    store = ArtifactStore(tmp_path / "store")
    source = tmp_path / "cs.tar.gz"
    source.write_bytes(b"code-server" * 1000)
    store.add_file("addon", "code-server", "4.96", source)
    return store


def request(app: object, method: str, path: str) -> httpx.Response:
    """One request through httpx's in-process ASGI transport."""

    async def send() -> httpx.Response:
        transport = httpx.ASGITransport(app=app)  # type: ignore[arg-type]
        async with httpx.AsyncClient(transport=transport, base_url="http://api") as client:
            return await client.request(method, path)

    return asyncio.run(send())


def test_mounted_under_a_prefix_it_serves_the_same_files(store: ArtifactStore) -> None:
    api = FastAPI()
    api.mount("/artifacts", ArtifactServer(store.root))
    response = request(api, "GET", "/artifacts/addon/code-server/4.96/cs.tar.gz")
    catalog = request(api, "GET", "/artifacts/catalog.json")
    outside = request(api, "GET", "/artifacts/%2e%2e/cs.tar.gz")  # the source, next to the store
    assert response.status_code == 200
    assert response.content == b"code-server" * 1000
    expected = hashlib.sha256(response.content).hexdigest()
    assert response.headers["etag"] == f'"{expected}"'
    assert catalog.json()["addons"]["code-server"]["default"] == "4.96"
    assert outside.status_code == 404


def test_other_methods_are_refused_with_allow(store: ArtifactStore) -> None:
    response = request(ArtifactServer(store.root), "POST", "/catalog.json")
    assert response.status_code == 405
    assert response.headers["allow"] == "GET, HEAD"
    assert response.json()["message"] == "method not allowed"


def test_chunk_size_must_be_positive(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="chunk_size"):
        ArtifactServer(tmp_path, chunk_size=0)


def test_websocket_upgrades_are_refused(tmp_path: Path) -> None:
    sent: list[dict[str, object]] = []

    async def receive() -> dict[str, object]:
        return {"type": "websocket.connect"}

    async def send(message: dict[str, object]) -> None:
        sent.append(message)

    scope = {"type": "websocket", "path": "/catalog.json", "headers": []}
    asyncio.run(ArtifactServer(tmp_path)(scope, receive, send))  # type: ignore[arg-type]
    assert sent == [{"type": "websocket.close", "code": 1008}]  # before accept: a 403
