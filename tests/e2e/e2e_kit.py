"""Helpers of the browser tests: the platform under test, Chromium, console watching, screenshots.

Chromium is Debian's (``/usr/bin/chromium``) driven by Playwright's sync API through
``executable_path``; ``playwright install`` is never run.
"""

from __future__ import annotations

import asyncio
import io
import os
import re
import subprocess
import tarfile
import time
import uuid
from collections.abc import Callable, Coroutine, Iterator, Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TypeVar

import httpx
from playwright.sync_api import (
    Browser,
    BrowserContext,
    ConsoleMessage,
    Error,
    Locator,
    Page,
    expect,
)

from support import REPO, ZLH, wait_for_port, zlh

T = TypeVar("T")
CHROMIUM = Path("/usr/bin/chromium")
CHROMIUM_ARGS = [
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    # The IDE origin's host-name and wildcard forms (tests/e2e/test_ide_origin_attack.py).
    "--host-resolver-rules=MAP ide.test 127.0.0.1, MAP *.ide.test 127.0.0.1",
]
DESKTOP = {"width": 1280, "height": 800}
PHONE = {"width": 390, "height": 844}
SHOTS = REPO / "test-results" / "portal"
PROVISION_TIMEOUT_S = 600.0

PASSWORD = "a long portal password"
ALICE, BOB, ADMIN = "alice", "bob", "boss"

# Fast polling and cheap password hashing: the flows stay real, the waits get short.
FAST_ENV = {
    "ZLH_POLL_INTERVAL_S": "0.5",
    "ZLH_POLL_INTERVAL_PROVISIONING_S": "0.2",
    "ZLH_ARGON2_TIME_COST": "1",
    "ZLH_ARGON2_MEMORY_KIB": "64",
    "ZLH_ARGON2_PARALLELISM": "1",
}


@dataclass
class Platform:
    """``zlh up --backend process`` running for the session; IDEs on ``ide_origin`` (the
    second-port form: ``http://127.0.0.1:<another port>``)."""

    base_url: str
    data_dir: Path
    proc: subprocess.Popen[bytes]
    ide_origin: str

    def ide_url(self, vmid: int) -> str:
        """The IDE's first page on the IDE origin (path forms; the wildcard's is ``/``)."""
        if "*." in self.ide_origin:
            return self.ide_origin.replace("*", str(vmid), 1) + "/"
        return f"{self.ide_origin}/dev/{vmid}/ide/"

    def workspace(self, vmid: int) -> Path:
        """Where the process backend keeps a container's workspace on this host."""
        return self.data_dir / "process" / str(vmid) / "root" / "home" / "dev" / "workspace"


def off_loop(coro: Coroutine[Any, Any, T]) -> T:
    """Run ``coro`` on its own loop in a worker thread: Playwright's sync API keeps a loop
    running in this one while the browser lives, and asyncio.run refuses to nest."""
    with ThreadPoolExecutor(1) as pool:
        return pool.submit(asyncio.run, coro).result()


def api_login(client: httpx.Client, user: str) -> dict[str, str]:
    """Sign ``user`` in over the API; the headers that carry the session (no cookie kept)."""
    response = client.post("/api/auth/login", json={"username": user, "password": PASSWORD})
    response.raise_for_status()
    client.cookies.clear()
    return {"Authorization": f"Bearer {response.json()['token']}"}


def wait_for_container(
    client: httpx.Client,
    auth: dict[str, str],
    vmid: int,
    done: Callable[[dict[str, Any]], Any],
    *,
    timeout_s: float = 300.0,
) -> dict[str, Any]:
    """Poll ``GET /api/dev/{vmid}`` until ``done(container)``; a failed container fails."""
    deadline = time.monotonic() + timeout_s
    while True:
        found: dict[str, Any] = client.get(f"/api/dev/{vmid}", headers=auth).json()
        if done(found):
            return found
        assert found["state"] != "failed", found
        assert time.monotonic() < deadline, f"container {vmid}: {found}"
        time.sleep(0.5)


def platform_env(data_dir: Path, extra: Mapping[str, str] | None = None) -> dict[str, str]:
    # Admins may open other users' IDEs here: the attack tests need an admin in one.
    env = {**os.environ, **FAST_ENV, "ZLH_DATA_DIR": str(data_dir), "ZLH_ADMIN_IDE_ACCESS": "1"}
    return {**env, **(extra or {})}


@contextmanager
def running_platform(
    store: Path,
    data_dir: Path,
    ide_origin: str,
    port: int,
    *,
    cli: Sequence[str] = ZLH,
    env_extra: Mapping[str, str] | None = None,
) -> Iterator[Platform]:
    """``zlh up`` (the ``cli`` command: the checkout's, or an installed one) on ``port`` with
    ``ide_origin``, alice, bob and the admin; every container is deleted when it stops (the
    process backend's agents outlive ``zlh up``). ``env_extra``: settings of its own."""
    env = platform_env(data_dir, env_extra)
    for name, admin in ((ALICE, False), (BOB, False), (ADMIN, True)):
        args = ["user", "add", name, "--password-stdin", "--data-dir", str(data_dir)]
        zlh(*args, *(["--admin"] if admin else []), input=PASSWORD + "\n", env=env)
    log = (data_dir / "up.log").open("ab")
    argv = [*cli, "up", "--backend", "process", "--store", str(store)]
    argv += ["--listen", f"127.0.0.1:{port}", "--ide-origin", ide_origin]
    proc = subprocess.Popen(argv, env=env, stdout=log, stderr=log)
    base_url = f"http://127.0.0.1:{port}"
    try:
        wait_for_port("127.0.0.1", port, proc=proc, timeout_s=60)
        yield Platform(base_url=base_url, data_dir=data_dir, proc=proc, ide_origin=ide_origin)
    finally:
        try:
            if proc.poll() is None:
                delete_all_containers(base_url)
        finally:
            if proc.poll() is None:
                proc.terminate()
                proc.wait(timeout=60)
            log.close()


def delete_all_containers(base_url: str) -> None:
    """Delete every container as the admin: the process backend's agents (and their
    code-server) keep running when ``zlh up`` stops, so a session must remove what it made."""
    with httpx.Client(base_url=base_url, timeout=120) as client:
        login = client.post("/api/auth/login", json={"username": ADMIN, "password": PASSWORD})
        login.raise_for_status()
        # A script, not a page: Bearer (a cookie-authenticated DELETE needs this site's Origin).
        client.cookies.clear()
        client.headers["Authorization"] = f"Bearer {login.json()['token']}"
        for container in client.get("/api/dev").raise_for_status().json():
            if not container["pool"]:  # nobody's, not even an admin's to delete
                client.delete(f"/api/dev/{container['vmid']}").raise_for_status()


def _tarball(path: Path, members: dict[str, bytes]) -> Path:
    with tarfile.open(path, "w:gz") as tar:
        for name, data in members.items():
            info = tarfile.TarInfo(name)
            info.size, info.mode = len(data), 0o755
            tar.addfile(info, io.BytesIO(data))
    return path


def add_corrupt_node_versions(store: Path, scratch: Path) -> None:
    """Two node versions that must fail to provision: ``23``, whose stored tarball was cut to
    half after it was added (size and digest no longer match), and ``21``, a tarball holding
    ``../evil`` (the agent refuses to extract it)."""
    small = _tarball(scratch / "node-23.tar.gz", {"bin/node": b"#!/bin/sh\necho fake\n" * 100})
    zlh("artifacts", "add", "runtime", "node", "23", "--file", str(small), "--store", str(store))
    stored = store / "runtime" / "node" / "23" / small.name
    os.truncate(stored, stored.stat().st_size // 2)
    evil = _tarball(scratch / "node-21.tar.gz", {"../evil": b"outside\n"})
    zlh("artifacts", "add", "runtime", "node", "21", "--file", str(evil), "--store", str(store))


@dataclass
class ConsoleWatch:
    """Every console error and uncaught exception of a page, minus what a test expects.

    ``expect_http(401, "/api/auth/login")`` accepts Chromium's "Failed to load resource" line
    for a request the page makes on purpose and handles (a wrong password, the signed-out probe).
    """

    errors: list[str] = field(default_factory=list)
    allowed: list[re.Pattern[str]] = field(default_factory=list)

    def attach(self, page: Page) -> None:
        page.on("console", self._console)
        page.on("pageerror", self._uncaught)

    def detach(self, page: Page) -> None:
        """Stop listening (before closing a page whose shutdown is noisy by design)."""
        page.remove_listener("console", self._console)
        page.remove_listener("pageerror", self._uncaught)

    def _uncaught(self, exc: Error) -> None:
        self.errors.append(f"uncaught: {exc}")

    def _console(self, message: ConsoleMessage) -> None:
        if message.type == "error":
            self.errors.append(f"{message.text} (at {message.location.get('url', '?')})")

    def expect_http(self, status: int, url_part: str) -> None:
        self.allowed.append(
            re.compile(
                rf"^Failed to load resource: the server responded with a status of {status} "
                rf".*\(at [^)]*{re.escape(url_part)}[^)]*\)$"
            )
        )

    def allow(self, pattern: str) -> None:
        self.allowed.append(re.compile(pattern))

    def unexpected(self) -> list[str]:
        return [e for e in self.errors if not any(p.search(e) for p in self.allowed)]

    def assert_clean(self) -> None:
        assert self.unexpected() == [], "browser console errors:\n" + "\n".join(self.unexpected())


# What code-server 4.x logs on the console with nothing wrong: VS Code's proprietary signing
# module `vsda` is not shipped in code-server (two 404s; behind the front's nosniff the script's
# text/plain 404 is also "refused"), and, offline, the GitHub sign-in provider never registers
# and the built-in extensions' update check cannot reach open-vsx.org.
# Closing the workbench logs its own shutdown complaints, so the tab is no longer watched then.
IDE_MISSING_VSDA = "/static/node_modules/vsda/rust/web/vsda"
IDE_NOISE = [
    r"^Refused to execute script from '[^']*/static/node_modules/vsda/rust/web/vsda\.js' "
    r"because its MIME type \('text/plain'\) is not executable",
    r"Timed out waiting for authentication provider 'github' to register",
    r"open-vsx\.org",
    # The workbench's own race when a part it lays out is not in the DOM yet (seen once with
    # the terminal opened right after the README preview); the page goes on working.
    r"^uncaught: Cannot read properties of null \(reading 'classList'\)$",
]
WORKBENCH_TIMEOUT_MS = 120_000


def open_ide(session: Session, platform: Platform, vmid: int) -> Page:
    """Click Open IDE on the container page; returns the new tab once the workbench shows on
    the IDE origin, its console watched with code-server's known noise allowed."""
    page = session.page
    page.goto(f"{platform.base_url}/c/{vmid}")
    ide = page.locator("#open-ide")
    assert ide.get_attribute("aria-disabled") == "false"
    with session.context.expect_page() as opened:
        ide.click()
    tab = opened.value
    session.console.expect_http(404, IDE_MISSING_VSDA)
    for pattern in IDE_NOISE:
        session.console.allow(pattern)
    session.console.attach(tab)
    tab.set_viewport_size({"width": 1280, "height": 800})
    tab.locator(".monaco-workbench").wait_for(timeout=WORKBENCH_TIMEOUT_MS)
    assert tab.url.startswith(platform.ide_url(vmid))
    return tab


def open_ide_terminal(page: Page) -> Locator:
    """Open a terminal in the IDE's workbench and give it the keyboard; returns its screen.

    The workbench opens the workspace's README once it has started; that preview takes the
    focus, and keys typed meanwhile would go to it, so the terminal is opened after it. The
    preview is a frame of its own that keeps the workbench's keys: the explorer takes the focus
    back before the terminal's key.
    """
    page.locator(".tab", has_text="README.md").wait_for(timeout=60_000)
    page.locator(".explorer-folders-view").click()
    page.keyboard.press("Control+Backquote")
    terminal = page.locator(".terminal-wrapper .xterm-screen").first
    terminal.wait_for(timeout=60_000)
    terminal.click()  # the Welcome page keeps the focus otherwise
    page.wait_for_function(
        "document.activeElement?.classList.contains('xterm-helper-textarea')", timeout=10_000
    )
    return terminal


def run_in_ide_terminal(
    page: Page, terminal: Locator, line: str, done: Callable[[], bool], *, timeout_s: float = 20.0
) -> None:
    """Type ``line`` into the IDE terminal until ``done()`` says its effect is there.

    Keys typed before the terminal's shell has started are lost, and the renderer draws on a
    canvas (no text to read back): a retry starts on a fresh line (Ctrl-C).
    """
    for attempt in range(3):
        if attempt:
            terminal.click()
            page.keyboard.press("Control+C")
        page.keyboard.type(line + "\n")
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            if done():
                return
            page.wait_for_timeout(200)
    raise AssertionError(f"the IDE terminal did not run {line!r}")


def sign_in(page: Page, base_url: str, user: str, password: str = PASSWORD) -> None:
    """Use the sign-in form the way a person does; returns once the dashboard shows."""
    if "/login" not in page.url:
        page.goto(f"{base_url}/login")
    page.get_by_label("User name").fill(user)
    page.get_by_label("Password").fill(password)
    page.get_by_role("button", name="Sign in").click()
    page.wait_for_selector("#account button")


def settle(page: Page) -> None:
    """Wait two animation frames: layout and paint caught up with the last change."""
    page.evaluate("() => new Promise((r) => requestAnimationFrame(() => requestAnimationFrame(r)))")


def page_width(page: Page) -> int:
    return int(page.evaluate("document.scrollingElement.scrollWidth"))


def capture(page: Page, name: str) -> list[Path]:
    """Screenshots at 1280x800 and 390x844; at the phone width the page must not scroll
    sideways. The page is left at the desktop size."""
    SHOTS.mkdir(parents=True, exist_ok=True)
    paths = []
    for size in (DESKTOP, PHONE):
        page.set_viewport_size(size)
        settle(page)
        if size is PHONE:
            assert page_width(page) <= PHONE["width"], f"{name}: the page scrolls sideways"
        path = SHOTS / f"{name}-{size['width']}x{size['height']}.png"
        page.screenshot(path=str(path))
        paths.append(path)
    page.set_viewport_size(DESKTOP)
    settle(page)
    return paths


def unlabelled_controls(page: Page) -> list[str]:
    """Form controls a screen reader could not name (no label, aria-label or aria-labelledby)."""
    result: list[str] = page.evaluate(
        """() => [...document.querySelectorAll(
                'input:not([type=hidden]), select, textarea, button')]
            .filter((el) => !(el.labels && el.labels.length) && !el.getAttribute('aria-label')
                && !el.getAttribute('aria-labelledby')
                && !(el.tagName === 'BUTTON' && el.textContent.trim()))
            .map((el) => el.outerHTML.slice(0, 120))"""
    )
    return result


def focus_ring(page: Page) -> str:
    """The focused element's visible focus indicator (outline or box-shadow), '' if none."""
    result: str = page.evaluate(
        """() => {
            const el = document.activeElement;
            if (!el || el === document.body) return '';
            const s = getComputedStyle(el);
            if (s.outlineStyle !== 'none' && parseFloat(s.outlineWidth) > 0) {
                return 'outline ' + s.outlineColor;
            }
            return s.boxShadow === 'none' ? '' : 'box-shadow ' + s.boxShadow;
        }"""
    )
    return result


# -- browser sessions and the container page -----------------------------------------------


@dataclass
class Session:
    """One browser context (its own cookies) with a page whose console is watched."""

    context: BrowserContext
    page: Page
    console: ConsoleWatch


def open_session(browser: Browser) -> Session:
    context = browser.new_context(viewport=DESKTOP, accept_downloads=True)
    page = context.new_page()
    watch = ConsoleWatch()
    watch.attach(page)
    return Session(context, page, watch)


SNAPSHOT_JS = """() => ({
    badge: document.querySelector('h1 .badge')?.textContent ?? '',
    steps: [...document.querySelectorAll('#steps li')]
        .map((li) => [li.dataset.step, li.dataset.state, li.textContent]),
    detail: document.getElementById('progress-detail')?.textContent ?? '',
    elapsed: document.getElementById('elapsed')?.textContent ?? '',
    percent: document.getElementById('progress')?.value ?? null,
    failure: document.getElementById('failure')?.textContent ?? '',
})"""


@dataclass
class Provisioned:
    """A container alice asked for on the New page, and what its page showed until ready."""

    vmid: int
    snapshots: list[dict[str, Any]]
    console_errors: list[str]


def watch_provisioning(page: Page, *, screenshot: str | None = None) -> list[dict[str, Any]]:
    """Sample the container page until its state is final; screenshot it once mid-download."""
    snapshots: list[dict[str, Any]] = []
    deadline = time.monotonic() + PROVISION_TIMEOUT_S
    while time.monotonic() < deadline:
        snap: dict[str, Any] = page.evaluate(SNAPSHOT_JS)
        snapshots.append(snap)
        if snap["badge"] in {"ready", "failed"}:
            return snapshots
        if screenshot and re.search(r"\d+% · .+ of ", snap["detail"]):  # a download, in bytes
            capture(page, screenshot)
            screenshot = None
        page.wait_for_timeout(200)
    raise AssertionError(f"not ready within {PROVISION_TIMEOUT_S}s: {snapshots[-1]}")


# ---------------------------------------------------------------- port previews

# A dev server as small as can be: the page says which path it was asked for and the text of
# message.txt, and a hand-written WebSocket (RFC 6455 handshake, text frames) pushes the new
# text whenever the file changes: a hot reload, without reloading the page.
DEV_SERVER = r"""
const http = require("http"), crypto = require("crypto");
const fs = require("fs"), path = require("path");
const port = Number(process.argv[2]);
const file = path.join(__dirname, "message.txt");
const sockets = new Set();
const text = () => fs.readFileSync(file, "utf8").trim();
const escape = (s) => s.replace(/&/g, "&amp;").replace(/</g, "&lt;");
const page = (url) => `<!doctype html><meta charset=utf-8><title>dev server</title>
<p id=path>${escape(url)}</p><p id=msg>${escape(text())}</p><p id=ws>connecting</p>
<script>
window.loadedAt = Date.now();
const ws = new WebSocket(new URL("hmr", location.href).href.replace(/^http/, "ws"));
ws.onopen = () => { document.getElementById("ws").textContent = "open"; };
ws.onclose = () => { document.getElementById("ws").textContent = "closed"; };
ws.onmessage = (e) => { document.getElementById("msg").textContent = e.data; };
</script>`;
const server = http.createServer((req, res) => {
  res.writeHead(200, { "Content-Type": "text/html; charset=utf-8", "Cache-Control": "no-store" });
  res.end(page(req.url));
});
server.on("upgrade", (req, socket) => {
  const key = req.headers["sec-websocket-key"] + "258EAFA5-E914-47DA-95CA-C5AB0DC85B11";
  const accept = crypto.createHash("sha1").update(key).digest("base64");
  socket.write("HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\n" +
    "Connection: Upgrade\r\nSec-WebSocket-Accept: " + accept + "\r\n\r\n");
  sockets.add(socket);
  const forget = () => sockets.delete(socket);
  socket.on("close", forget);
  socket.on("error", forget);
  socket.on("data", (d) => { if ((d[0] & 0x0f) === 8) socket.end(); });
});
const frame = (t) => {
  const b = Buffer.from(t);
  return Buffer.concat([Buffer.from([0x81, b.length]), b]);  // under 126 bytes here
};
fs.watchFile(file, { interval: 100 }, () => { for (const s of sockets) s.write(frame(text())); });
server.listen(port, "0.0.0.0", () => fs.writeFileSync(path.join(__dirname, "listening"), "yes\n"));
"""

# What a page served by a preview tries against the portal with the browser's cookies.
STEAL = """async (portal) => {
  try {
    const r = await fetch(portal + "/api/dev", {credentials: "include"});
    return "status " + r.status + " " + (await r.text()).slice(0, 80);
  } catch (e) { return "blocked"; }
}"""


def write_file(client: httpx.Client, auth: dict[str, str], vmid: int, path: str, data: str) -> None:
    put = client.put(
        f"/api/dev/{vmid}/files/content", params={"path": path}, content=data, headers=auth
    )
    assert put.status_code in (200, 201), put.text


def put_dev_server(client: httpx.Client, auth: dict[str, str], vmid: int) -> str:
    folder = f"preview-{uuid.uuid4().hex[:8]}"
    assert client.post(
        f"/api/dev/{vmid}/files/mkdir", json={"path": folder}, headers=auth
    ).is_success
    write_file(client, auth, vmid, f"{folder}/devserver.js", DEV_SERVER)
    write_file(client, auth, vmid, f"{folder}/message.txt", "first\n")
    return folder


def wait_for_file(path: Path, timeout_s: float = 60) -> None:
    deadline = time.monotonic() + timeout_s
    while not path.exists():
        assert time.monotonic() < deadline, f"{path} never appeared"
        time.sleep(0.2)


def hot_reload_works(
    tab: Page, client: httpx.Client, auth: dict[str, str], vmid: int, folder: str, word: str
) -> None:
    expect(tab.locator("#ws")).to_have_text("open", timeout=15_000)
    loaded_at = tab.evaluate("window.loadedAt")
    write_file(client, auth, vmid, f"{folder}/message.txt", word + "\n")
    expect(tab.locator("#msg")).to_have_text(word, timeout=15_000)
    assert tab.evaluate("window.loadedAt") == loaded_at  # the same page: no reload
