"""The file routes over real HTTP: confinement under attack, uploads, ranges, errors."""

from __future__ import annotations

import os
import shutil
import socket
import stat
import tempfile
import threading
import time
import urllib.parse
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from hostile_paths import hostile_paths, through_links
from hypothesis import HealthCheck, assume, given, settings
from hypothesis import strategies as st

from support import LiveAgent as Live
from support import serve_agent_app
from zlh.agent.devuser import DevEnvironment
from zlh.agent.lazy_routes import setup_files_routes
from zlh.agent.runas import DevIdentity
from zlh.agent.workspace import BadPath, parse_client_path

TOKEN = "test-container-secret"
AUTH = {"Authorization": f"Bearer {TOKEN}"}

LIMIT = 256 * 1024
LINKS = ["out", "sib", "inner/up", "prefix", "inner/abs"]


def snapshot(base: Path, skip: Path) -> dict[str, tuple[Any, ...]]:
    """Everything under ``base`` except ``skip``: type, mode, size, mtime and content."""
    seen: dict[str, tuple[Any, ...]] = {}
    for dirpath, dirnames, filenames in os.walk(base):
        here = Path(dirpath)
        dirnames[:] = [d for d in dirnames if here / d != skip]
        for name in dirnames + filenames:
            path = here / name
            st_ = path.lstat()
            if stat.S_ISREG(st_.st_mode):
                content: object = path.read_bytes()
            elif stat.S_ISLNK(st_.st_mode):
                content = os.readlink(path)
            else:
                content = None
            seen[str(path.relative_to(base))] = (st_.st_mode, st_.st_size, st_.st_mtime_ns, content)
    return seen


class Tree:
    """A workspace with links planted to an /etc-like outside dir and a sibling, served live."""

    def __init__(self, base: Path, live: Live) -> None:
        self.base = base
        self.root = base / "workspace"
        self.outside = base / "outside"
        self.live = live
        self.client = httpx.Client(base_url=live.url, headers=AUTH, timeout=30)

    def outside_state(self) -> dict[str, tuple[Any, ...]]:
        return snapshot(self.base, self.root)


def plant(base: Path) -> None:
    root = base / "workspace"
    (root / "inner").mkdir(parents=True)
    (root / "inner" / "file.txt").write_text("inside")
    for outside in ("outside", "outside/etc", "sibling", "workspace2"):
        (base / outside).mkdir()
    (base / "outside" / "canary.txt").write_text("canary")
    (base / "outside" / "etc" / "passwd").write_text("root:x:0:0")
    (base / "sibling" / "canary.txt").write_text("sibling")
    (base / "workspace2" / "canary.txt").write_text("prefix")
    (root / "out").symlink_to(base / "outside")
    (root / "sib").symlink_to(base / "sibling")
    (root / "prefix").symlink_to("../workspace2")
    (root / "inner" / "up").symlink_to("../../outside")
    (root / "inner" / "abs").symlink_to(base / "outside" / "etc")


@pytest.fixture(scope="module")
def tree(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Tree]:
    base = tmp_path_factory.mktemp("files")
    plant(base)
    dev = DevEnvironment("dev", DevIdentity.current(home=base), base, base / "workspace")

    def setup(app: Any) -> None:
        setup_files_routes(app, environment=lambda: dev, max_upload_bytes=LIMIT)

    with serve_agent_app(setup, token=TOKEN) as live:
        t = Tree(base, live)
        yield t
        t.client.close()


def request(tree: Tree, op: str, path: str, wire: bool) -> httpx.Response:
    """One file operation naming ``path``; ``wire`` sends it percent-encoded only once."""
    client = tree.client
    query = (
        "path=" + urllib.parse.quote(path, safe="/%", errors="surrogatepass")
        if wire
        else urllib.parse.urlencode({"path": path}, errors="surrogatepass")
    )
    if op == "list":
        return client.get(f"/files?{query}")
    if op == "read":
        return client.get(f"/files/content?{query}")
    if op == "write":
        return client.put(f"/files/content?{query}", content=b"pwned")
    if op == "delete":
        return client.delete(f"/files?{query}&recursive=true")
    if op == "mkdir":
        return client.post("/files/mkdir", json={"path": path, "parents": True})
    if op == "move-from":
        return client.post("/files/move", json={"source": path, "destination": "inner/moved"})
    if op == "move-to":
        return client.post(
            "/files/move", json={"source": "inner/file.txt", "destination": path, "overwrite": True}
        )
    raise AssertionError(op)


def must_be_refused(path: str) -> bool:
    """Hostile as the agent receives it: refused by the parser or passing through a link.

    Sent on the wire unencoded, ``src/%2e%2e`` arrives as ``src/..``: harmless, it stays inside.
    """
    try:
        parts = parse_client_path(path).parts
    except BadPath:
        return True
    links = [tuple(link.split("/")) for link in LINKS]
    return any(len(parts) > len(link) and parts[: len(link)] == link for link in links)


OPS = ["list", "read", "write", "delete", "mkdir", "move-from", "move-to"]


@settings(
    max_examples=300, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(
    op=st.sampled_from(OPS),
    path=st.one_of(hostile_paths(), through_links(LINKS)),
    wire=st.booleans(),
)
def test_hostile_requests_get_4xx_and_touch_nothing_outside(
    tree: Tree, op: str, path: str, wire: bool
) -> None:
    if "\udcc0" in path and op in ("mkdir", "move-from", "move-to"):
        wire = True  # a lone surrogate cannot travel in JSON; send it in the query instead
        op = {"mkdir": "list", "move-from": "read", "move-to": "write"}[op]
    refused = must_be_refused(urllib.parse.unquote(path) if wire else path)
    assume(refused or op in ("list", "read"))  # a benign write would only reshape the fixture
    before = tree.outside_state()
    response = request(tree, op, path, wire)
    if refused:
        assert 400 <= response.status_code < 500, (op, path, response.status_code, response.text)
        assert response.json()["message"]
    assert tree.outside_state() == before
    assert (tree.root / "inner" / "file.txt").read_text() == "inside"


@pytest.mark.parametrize("op", ["list", "read"])
@pytest.mark.parametrize("link", LINKS)
def test_a_planted_link_is_never_followed(tree: Tree, op: str, link: str) -> None:
    before = tree.outside_state()
    response = request(tree, op, link, wire=False)
    assert response.status_code == 400
    assert "symbolic link" in response.json()["message"]
    assert tree.outside_state() == before


def test_listing_shows_links_as_links(tree: Tree) -> None:
    listing = tree.client.get("/files", params={"path": "inner"}).json()
    assert listing["display"] == "workspace/inner"
    entries = {e["name"]: e for e in listing["entries"]}
    assert entries["file.txt"]["type"] == "file" and entries["file.txt"]["size"] == 6
    assert entries["up"]["type"] == "symlink" and entries["up"]["target"] is None
    assert entries["file.txt"]["path"] == "inner/file.txt"


def test_upload_read_move_delete_round_trip(tree: Tree) -> None:
    client = tree.client
    assert client.post("/files/mkdir", json={"path": "rt/a/b", "parents": True}).status_code == 201
    data = os.urandom(100_000)
    put = client.put("/files/content", params={"path": "rt/a/b/data.bin"}, content=data)
    assert put.status_code == 201 and put.json()["size"] == len(data)
    assert client.get("/files/content", params={"path": "rt/a/b/data.bin"}).content == data
    moved = client.post("/files/move", json={"source": "rt/a/b/data.bin", "destination": "rt/d"})
    assert moved.status_code == 200 and moved.json()["display"] == "workspace/rt/d"
    assert (tree.root / "rt" / "d").read_bytes() == data
    assert client.delete("/files", params={"path": "rt/a"}).status_code == 409
    assert client.delete("/files", params={"path": "rt", "recursive": "true"}).status_code == 204
    assert not (tree.root / "rt").exists()


@pytest.mark.parametrize(
    ("header", "status", "span"),
    [
        ("bytes=10-19", 206, (10, 20)),
        ("bytes=990-", 206, (990, 1000)),
        ("bytes=-5", 206, (995, 1000)),
        ("bytes=0-99999", 206, (0, 1000)),
        ("bytes=5-1,7-9", 200, (0, 1000)),
        (None, 200, (0, 1000)),
    ],
)
def test_range_requests(tree: Tree, header: str | None, status: int, span: tuple[int, int]) -> None:
    data = bytes(range(256)) * 4
    data = data[:1000]
    tree.client.put("/files/content", params={"path": "ranged.bin"}, content=data)
    headers = {"Range": header} if header else {}
    response = tree.client.get("/files/content", params={"path": "ranged.bin"}, headers=headers)
    assert response.status_code == status
    assert response.content == data[span[0] : span[1]]
    if status == 206:
        assert response.headers["Content-Range"] == f"bytes {span[0]}-{span[1] - 1}/1000"


def test_unsatisfiable_range_is_416(tree: Tree) -> None:
    tree.client.put("/files/content", params={"path": "small.bin"}, content=b"abc")
    response = tree.client.get(
        "/files/content", params={"path": "small.bin"}, headers={"Range": "bytes=10-"}
    )
    assert response.status_code == 416
    assert response.headers["Content-Range"] == "bytes */3"


def leftovers(directory: Path) -> list[str]:
    return sorted(os.listdir(directory))


def test_upload_over_the_limit_declared_is_413_and_leaves_nothing(tree: Tree) -> None:
    (tree.root / "big1").mkdir()
    response = tree.client.put(
        "/files/content", params={"path": "big1/f"}, content=b"x" * (LIMIT + 1)
    )
    assert response.status_code == 413
    assert str(LIMIT) in response.json()["message"]
    assert leftovers(tree.root / "big1") == []


def test_upload_over_the_limit_streamed_is_413_and_leaves_nothing(tree: Tree) -> None:
    (tree.root / "big2").mkdir()

    def chunks() -> Iterator[bytes]:
        for _ in range(LIMIT // 4096 + 2):
            yield b"y" * 4096

    response = tree.client.put("/files/content", params={"path": "big2/f"}, content=chunks())
    assert response.status_code == 413
    assert leftovers(tree.root / "big2") == []


def wait_for(condition: Any, what: str, timeout_s: float = 10.0) -> None:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if condition():
            return
        time.sleep(0.02)
    raise AssertionError(f"timed out waiting for {what}")


def test_an_upload_cut_off_halfway_leaves_no_file(tree: Tree) -> None:
    directory = tree.root / "cut"
    directory.mkdir()
    url = urllib.parse.urlsplit(tree.live.url)
    head = (
        "PUT /files/content?path=cut/half.bin HTTP/1.1\r\n"
        f"Host: {url.netloc}\r\n{next(iter(AUTH))}: {AUTH['Authorization']}\r\n"
        f"Content-Length: {LIMIT}\r\n\r\n"
    )
    with socket.create_connection((url.hostname, url.port)) as sock:
        sock.sendall(head.encode() + b"z" * (LIMIT // 2))
        wait_for(lambda: leftovers(directory) != [], "the upload to start writing")
        assert all(name.startswith(".zlh-upload-") for name in leftovers(directory))
    wait_for(lambda: leftovers(directory) == [], "the cut upload to be removed")


def test_a_symlink_swapped_in_during_uploads_never_redirects_a_write(tree: Tree) -> None:
    """A thread flips race/d between a directory and a link to outside while uploads run."""
    race = tree.root / "race"
    (race / "d").mkdir(parents=True)
    (race / "d" / "victim").symlink_to(tree.outside / "canary.txt")
    before = tree.outside_state()
    stop = threading.Event()
    flips = 0

    def swapper() -> None:
        nonlocal flips
        while not stop.is_set():
            os.rename(race / "d", race / "d.real")
            os.symlink(tree.outside, race / "d")
            os.unlink(race / "d")
            os.rename(race / "d.real", race / "d")
            flips += 1

    statuses: list[int] = []

    def uploader(n: int) -> None:
        with httpx.Client(base_url=tree.live.url, headers=AUTH, timeout=30) as client:
            for i in range(60):
                name = "victim" if i % 3 == 0 else f"f{n}-{i}"
                response = client.put(
                    "/files/content", params={"path": f"race/d/{name}"}, content=b"raced"
                )
                statuses.append(response.status_code)

    thread = threading.Thread(target=swapper)
    thread.start()
    workers = [threading.Thread(target=uploader, args=(n,)) for n in range(3)]
    try:
        for worker in workers:
            worker.start()
        for worker in workers:
            worker.join()
    finally:
        stop.set()
        thread.join()
    assert flips > 10
    assert set(statuses) <= {201, 400, 404}, statuses
    assert tree.outside_state() == before
    assert (tree.outside / "canary.txt").read_text() == "canary"
    written = [n for n in os.listdir(race / "d") if n.startswith("f")]
    assert len(written) + ((race / "d" / "victim").is_file()) >= 1


@pytest.mark.parametrize(
    ("method", "url", "kwargs", "status", "words"),
    [
        ("GET", "/files?path=nope", {}, 404, "does not exist"),
        ("GET", "/files/content", {}, 400, "required"),
        ("GET", "/files?path=a&path=b", {}, 400, "2 times"),
        ("GET", "/files/content?path=inner", {}, 400, "is a directory"),
        ("POST", "/files/mkdir", {"json": {"path": "inner"}}, 409, "already exists"),
        ("POST", "/files/mkdir", {"json": {"pth": "x"}}, 422, "invalid"),
        ("DELETE", "/files?path=", {}, 400, "cannot be deleted"),
        ("DELETE", "/files?path=inner&recursive=maybe", {}, 400, "true or false"),
        ("PUT", "/files/content?path=inner&overwrite=false", {"content": b"x"}, 409, "directory"),
    ],
)
def test_errors_are_error_bodies(
    tree: Tree, method: str, url: str, kwargs: dict[str, Any], status: int, words: str
) -> None:
    response = tree.client.request(method, url, **kwargs)
    assert response.status_code == status
    assert words in response.json()["message"]


def test_missing_or_wrong_token_is_401(tree: Tree) -> None:
    with httpx.Client(base_url=tree.live.url) as anonymous:
        assert anonymous.get("/files").status_code == 401
        wrong = {"Authorization": "Bearer nope"}
        assert anonymous.put("/files/content?path=x", headers=wrong).status_code == 401
    assert not (tree.root / "x").exists()


@pytest.fixture
def world_readable_tmp() -> Iterator[Path]:
    """A temp dir another uid can reach (pytest's own tmp_path sits below a 0700 dir)."""
    if os.geteuid() != 0:
        pytest.skip("needs root")
    path = Path(tempfile.mkdtemp(prefix="zlh-files-"))
    path.chmod(0o755)
    yield path
    shutil.rmtree(path)


@pytest.mark.root
def test_as_root_files_belong_to_dev_and_the_kernel_checks_devs_rights(
    world_readable_tmp: Path,
) -> None:
    """With a real dev identity the fs threads act as dev; the rest of the agent stays root."""
    tmp_path = world_readable_tmp
    uid = gid = 54_321  # no passwd entry needed: only the numbers matter to the kernel
    who = DevIdentity(name="devtest", uid=uid, gid=gid, groups=(gid,), home=tmp_path)
    root = tmp_path / "workspace"
    (root / "locked").mkdir(parents=True)
    os.chown(root, uid, gid)

    def setup(app: Any) -> None:
        dev = DevEnvironment("devtest", who, tmp_path, root)
        setup_files_routes(app, environment=lambda: dev, max_upload_bytes=LIMIT)

    with (
        serve_agent_app(setup, token=TOKEN) as live,
        httpx.Client(base_url=live.url, headers=AUTH) as client,
    ):
        created = client.put("/files/content", params={"path": "mine.txt"}, content=b"hi")
        assert created.status_code == 201
        made = client.post("/files/mkdir", json={"path": "sub/deeper", "parents": True})
        assert made.status_code == 201
        locked = client.put("/files/content", params={"path": "locked/x"}, content=b"no")
        assert locked.status_code == 403 and "dev user" in locked.json()["message"]
    for path in (root / "mine.txt", root / "sub", root / "sub" / "deeper"):
        assert (path.stat().st_uid, path.stat().st_gid) == (uid, gid)
    assert os.listdir(root / "locked") == []
    fs_ids = Path("/proc/thread-self/status").read_text().split("Uid:")[1].split()[:4]
    assert fs_ids[3] == "0", "the calling thread must keep root's fsuid"


def test_before_provisioning_the_file_routes_answer_503() -> None:
    def setup(app: Any) -> None:
        setup_files_routes(app, environment=lambda: None, max_upload_bytes=LIMIT)

    with (
        serve_agent_app(setup, token=TOKEN) as live,
        httpx.Client(base_url=live.url, headers=AUTH) as client,
    ):
        response = client.get("/files")
    assert response.status_code == 503
    assert "not set up yet" in response.json()["message"]
