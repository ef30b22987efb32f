"""``zlh artifacts serve`` over real HTTP: validators, ranges, HEAD, and no way out of the store."""

from __future__ import annotations

import hashlib
import os
import socket
from collections.abc import Iterator
from pathlib import Path
from urllib.parse import urlsplit

import httpx
import pytest

from support import serve_store, zlh
from zlh.schemas import ArtifactKind, Catalog

SECRET = b"outside the store: must never be served"
ARTIFACT = "runtime/node/22/node-v22.tar.gz"


@pytest.fixture(scope="module")
def store(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A store with one 3 MB artifact, a secret next to it and links in and out of it."""
    base = tmp_path_factory.mktemp("serve")
    (base / "secret.txt").write_bytes(SECRET)
    source = base / "node-v22.tar.gz"
    source.write_bytes(os.urandom(3_000_000))
    store = base / "store"
    zlh("artifacts", "add", "runtime", "node", "22", "--file", str(source), "--store", str(store))
    (store / "leak.txt").symlink_to(base / "secret.txt")
    (store / "runtime" / "escape").symlink_to(base)
    (store / "latest.tar.gz").symlink_to(store / ARTIFACT)  # inside the store: allowed
    return store


@pytest.fixture(scope="module")
def server(store: Path) -> Iterator[str]:
    yield from serve_store(store)


def raw_get(base_url: str, target: str) -> tuple[int, bytes]:
    """Send ``target`` byte for byte (httpx would normalise it) and return (status, body)."""
    parts = urlsplit(base_url)
    request = f"GET {target} HTTP/1.1\r\nHost: {parts.netloc}\r\nConnection: close\r\n\r\n"
    with socket.create_connection((parts.hostname, parts.port), timeout=10) as sock:
        sock.sendall(request.encode("latin-1"))
        chunks = []
        while data := sock.recv(65536):
            chunks.append(data)
    response = b"".join(chunks)
    head, _, body = response.partition(b"\r\n\r\n")
    return int(head.split(b" ", 2)[1]), body


def artifact_sha256(store: Path) -> str:
    catalog = Catalog.model_validate_json((store / "catalog.json").read_bytes())
    return catalog.resolve(ArtifactKind.RUNTIME, "node")[1].sha256


@pytest.mark.parametrize(
    "target",
    [
        "/../secret.txt",
        "/runtime/../../secret.txt",
        "/%2e%2e/secret.txt",
        "/%2E%2E/secret.txt",
        "/%2e%2e%2fsecret.txt",
        "/..%2fsecret.txt",
        "/%252e%252e/secret.txt",
        "/%252e%252e%252fsecret.txt",
        "/runtime/node/..%5c..%5c..%5csecret.txt",
        "//secret.txt",
        "/leak.txt",
        "/runtime/escape/secret.txt",
        "/catalog.json%00",
        "/%00/../secret.txt",
        "/.lock",
        "/runtime/node/22/",
        "/",
    ],
)
def test_nothing_outside_the_store_or_hidden_is_served(server: str, target: str) -> None:
    status, body = raw_get(server, target)
    assert status == 404
    assert SECRET not in body


def test_absolute_paths_and_absolute_form_targets_stay_inside(server: str, store: Path) -> None:
    secret = store.parent / "secret.txt"
    for target in (str(secret), "/" + str(secret), f"http://example.com{secret}"):
        status, body = raw_get(server, target)
        assert status in {400, 404}, target
        assert SECRET not in body


def test_the_same_requests_reach_files_inside_the_store(server: str, store: Path) -> None:
    # The control for the refusals above: these paths exist and are served.
    assert raw_get(server, "/latest.tar.gz") == (200, (store / ARTIFACT).read_bytes())
    assert raw_get(server, "/runtime/node/%32%32/node-v22.tar.gz")[0] == 200
    status, body = raw_get(server, "/catalog.json")
    assert status == 200
    assert Catalog.model_validate_json(body).resolve(ArtifactKind.RUNTIME, "node")[0] == "22"


def test_a_partial_download_resumes_with_a_range_request(server: str, store: Path) -> None:
    url = f"{server}/{ARTIFACT}"
    received = bytearray()
    with httpx.stream("GET", url) as first:
        assert first.status_code == 200
        etag = first.headers["etag"]
        for chunk in first.iter_raw(64 * 1024):
            received += chunk
            if len(received) >= 1_000_000:
                break  # the connection drops mid-file
    size = (store / ARTIFACT).stat().st_size
    rest = httpx.get(url, headers={"Range": f"bytes={len(received)}-", "If-Range": etag})
    assert rest.status_code == 206
    assert rest.headers["content-range"] == f"bytes {len(received)}-{size - 1}/{size}"
    assert int(rest.headers["content-length"]) == size - len(received)
    assembled = bytes(received) + rest.content
    assert hashlib.sha256(assembled).hexdigest() == artifact_sha256(store)


def test_ranges_in_every_form(server: str, store: Path) -> None:
    url = f"{server}/{ARTIFACT}"
    data = (store / ARTIFACT).read_bytes()
    size = len(data)
    middle = httpx.get(url, headers={"Range": "bytes=100-199"})
    assert (middle.status_code, middle.content) == (206, data[100:200])
    tail = httpx.get(url, headers={"Range": "bytes=-10"})
    assert (tail.status_code, tail.content) == (206, data[-10:])
    assert tail.headers["content-range"] == f"bytes {size - 10}-{size - 1}/{size}"
    beyond = httpx.get(url, headers={"Range": f"bytes={size}-"})
    assert beyond.status_code == 416
    assert beyond.headers["content-range"] == f"bytes */{size}"
    several = httpx.get(url, headers={"Range": "bytes=0-1,5-6"})
    assert (several.status_code, len(several.content)) == (200, size)
    stale = httpx.get(url, headers={"Range": "bytes=0-9", "If-Range": '"not-the-etag"'})
    assert (stale.status_code, stale.content) == (200, data)


def test_head_gives_the_get_headers_without_a_body(server: str) -> None:
    for path in (ARTIFACT, "catalog.json"):
        get = httpx.get(f"{server}/{path}")
        head = httpx.head(f"{server}/{path}")
        assert head.status_code == get.status_code == 200
        assert head.content == b""
        without_date = {k: v for k, v in get.headers.items() if k != "date"}
        assert {k: v for k, v in head.headers.items() if k != "date"} == without_date
        assert int(get.headers["content-length"]) == len(get.content)


def test_etag_is_the_sha256_and_if_none_match_gives_304(server: str, store: Path) -> None:
    url = f"{server}/{ARTIFACT}"
    response = httpx.head(url)
    assert response.headers["etag"] == f'"{artifact_sha256(store)}"'
    assert response.headers["accept-ranges"] == "bytes"
    assert response.headers["content-type"] == "application/gzip"
    etag = response.headers["etag"]
    for validator in (etag, f"W/{etag}", f'"other", {etag}', "*"):
        cached = httpx.get(url, headers={"If-None-Match": validator})
        assert cached.status_code == 304, validator
        assert cached.content == b""
        assert cached.headers["etag"] == etag
    assert httpx.get(url, headers={"If-None-Match": '"other"'}).status_code == 200


def test_catalog_etag_follows_its_content(store: Path, tmp_path: Path) -> None:
    # A server of its own: this test changes the catalog.
    mine = tmp_path / "store"
    source = tmp_path / "go.tar.gz"
    source.write_bytes(b"go")
    zlh("artifacts", "add", "runtime", "go", "1.24", "--file", str(source), "--store", str(mine))
    for base in serve_store(mine):
        first = httpx.get(f"{base}/catalog.json")
        assert first.headers["cache-control"] == "no-cache"
        assert httpx.get(f"{base}/catalog.json", headers={"If-None-Match": first.headers["etag"]})
        zlh("artifacts", "remove", "runtime", "go", "1.24", "--store", str(mine))
        second = httpx.get(f"{base}/catalog.json", headers={"If-None-Match": first.headers["etag"]})
        assert second.status_code == 200
        assert second.headers["etag"] != first.headers["etag"]
        assert Catalog.model_validate_json(second.content).runtimes == {}
        assert httpx.get(f"{base}/runtime/go/1.24/go.tar.gz").status_code == 404


def test_a_client_leaving_mid_download_does_not_hurt_the_next(server: str, store: Path) -> None:
    url = f"{server}/{ARTIFACT}"
    for _ in range(3):
        with httpx.stream("GET", url) as response:
            next(response.iter_raw(1024))
    assert hashlib.sha256(httpx.get(url).content).hexdigest() == artifact_sha256(store)
