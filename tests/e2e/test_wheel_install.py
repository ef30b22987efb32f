"""zlh as an operator installs it without a checkout: the built wheel, pip-installed into a
clean venv (no npm there), serves the portal with its front-end files; the console page runs
xterm.js against a real container."""

from __future__ import annotations

import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
from e2e_kit import ALICE, PASSWORD, Session, capture, open_session, running_platform, sign_in
from playwright.sync_api import Browser, Response

from support import copy_checkout, free_port, outside_env

pytestmark = [pytest.mark.e2e, pytest.mark.slow]

READY_TIMEOUT_S = 300.0


@pytest.fixture(scope="module")
def installed(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """``bin/`` of a fresh venv with the wheel built from a copy of this checkout (plain
    Python: the compiled front is tested everywhere else) and its ``api`` extra installed."""
    work = tmp_path_factory.mktemp("wheel")
    tree = copy_checkout(work / "tree")
    wheels = work / "wheels"
    subprocess.run(
        [sys.executable, "-m", "pip", "wheel", "--no-deps", "-q", "-w", str(wheels), str(tree)],
        env=outside_env(),
        check=True,
    )
    (wheel,) = wheels.glob("zlh-*.whl")
    venv = work / "venv"
    subprocess.run([sys.executable, "-m", "venv", str(venv)], check=True)
    subprocess.run(
        [str(venv / "bin" / "pip"), "install", "-q", f"{wheel}[api]"], env=outside_env(), check=True
    )
    return venv / "bin"


def test_the_installed_wheel_carries_only_the_listed_front_end_files(installed: Path) -> None:
    site = next((installed.parent / "lib").glob("python3*/site-packages"))
    portal = site / "zlh" / "portal"
    assert (portal / "vendor" / "xterm" / "css" / "xterm.css").is_file()
    assert (portal / "vendor" / "swagger-ui" / "swagger-ui-bundle.js").is_file()
    assert not (portal / "node_modules").exists()


@pytest.fixture(scope="module")
def platform_from_wheel(
    installed: Path, e2e_store: Path, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[str]:
    data_dir = tmp_path_factory.mktemp("wheel-platform")
    ide_origin = f"http://127.0.0.1:{free_port()}"
    cli = [str(installed / "zlh")]
    with running_platform(e2e_store, data_dir, ide_origin, free_port(), cli=cli) as platform:
        yield platform.base_url


def _ready_container(base_url: str) -> int:
    with httpx.Client(base_url=base_url, timeout=30) as client:
        login = client.post("/api/auth/login", json={"username": ALICE, "password": PASSWORD})
        login.raise_for_status()
        client.cookies.clear()
        client.headers["Authorization"] = f"Bearer {login.json()['token']}"
        created = client.post("/api/dev", json={"runtime": "node", "version": "22"})
        assert created.status_code == 202, created.text
        vmid = int(created.json()["vmid"])
        deadline = time.monotonic() + READY_TIMEOUT_S
        while (state := client.get(f"/api/dev/{vmid}").json()["state"]) != "ready":
            assert state != "failed" and time.monotonic() < deadline, state
            time.sleep(0.5)
    return vmid


def test_the_console_page_of_an_installed_platform_runs_xterm(
    platform_from_wheel: str, browser: Browser
) -> None:
    base_url = platform_from_wheel
    vmid = _ready_container(base_url)
    session: Session = open_session(browser)
    missing: list[str] = []

    def note(response: Response) -> None:
        if response.status >= 400 and "/portal/" in response.url:
            missing.append(f"{response.status} {response.url}")

    try:
        session.page.on("response", note)
        sign_in(session.page, base_url, ALICE)
        page = session.page
        page.goto(f"{base_url}/c/{vmid}")
        page.get_by_role("link", name="Console").click()
        page.get_by_text("Connected to the container's shell.").wait_for()
        page.locator(".xterm").click()
        page.keyboard.type("echo from-the-wheel-$((6*7))\n")
        page.locator(".xterm-rows", has_text="from-the-wheel-42").wait_for()
        # xterm.css applied: it hides the helper textarea that takes the keystrokes.
        style = "e => getComputedStyle(e).opacity"
        assert page.locator(".xterm-helper-textarea").evaluate(style) == "0"
        capture(page, "console-from-wheel")
    finally:
        session.context.close()
    assert missing == []
    session.console.assert_clean()
