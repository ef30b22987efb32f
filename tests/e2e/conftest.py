"""The platform for real, once per session: ``zlh up --backend process`` over a store holding a
real Node runtime and real code-server, three users, and one Chromium.

The container the portal tests share is created through the New page by ``provisioned``, which
records what the container page showed on the way to ready; the provisioning test asserts on
that record, the files, console and IDE tests reuse the container.
"""

from __future__ import annotations

import re
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest
from e2e_kit import (
    ADMIN,
    ALICE,
    BOB,
    CHROMIUM,
    CHROMIUM_ARGS,
    PASSWORD,
    Platform,
    Provisioned,
    Session,
    add_corrupt_node_versions,
    capture,
    copy_catalog_entry,
    delete_all_containers,
    open_session,
    platform_env,
    sign_in,
    watch_provisioning,
)
from playwright.sync_api import Browser, sync_playwright

from support import ZLH, free_port, wait_for_port, zlh
from zlh.schemas import ArtifactKind


@pytest.fixture(scope="session")
def e2e_store(
    node_store: Path, code_server_store: Path, tmp_path_factory: pytest.TempPathFactory
) -> Path:
    """One store with both real artifacts, combined with ``zlh artifacts add``, and two corrupt
    node versions for the failure tests."""
    store = tmp_path_factory.mktemp("e2e-store")
    copy_catalog_entry(node_store, store, ArtifactKind.RUNTIME, "node")
    copy_catalog_entry(code_server_store, store, ArtifactKind.ADDON, "code-server")
    add_corrupt_node_versions(store, tmp_path_factory.mktemp("e2e-corrupt"))
    return store


@pytest.fixture(scope="session")
def platform(e2e_store: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Platform]:
    data_dir = tmp_path_factory.mktemp("e2e-platform")
    env = platform_env(data_dir)
    for name, admin in ((ALICE, False), (BOB, False), (ADMIN, True)):
        args = ["user", "add", name, "--password-stdin", "--data-dir", str(data_dir)]
        zlh(*args, *(["--admin"] if admin else []), input=PASSWORD + "\n", env=env)
    port = free_port()
    log = (data_dir / "up.log").open("ab")
    argv = [*ZLH, "up", "--backend", "process", "--store", str(e2e_store)]
    proc = subprocess.Popen(
        [*argv, "--listen", f"127.0.0.1:{port}"], env=env, stdout=log, stderr=log
    )
    base_url = f"http://127.0.0.1:{port}"
    try:
        wait_for_port("127.0.0.1", port, proc=proc, timeout_s=60)
        yield Platform(base_url=base_url, data_dir=data_dir, proc=proc)
    finally:
        try:
            if proc.poll() is None:
                delete_all_containers(base_url)  # agents outlive `zlh up` by design
        finally:
            if proc.poll() is None:
                proc.terminate()
                proc.wait(timeout=60)
            log.close()


@pytest.fixture(scope="session")
def browser() -> Iterator[Browser]:
    if not CHROMIUM.exists():
        pytest.fail(f"{CHROMIUM} is missing: apt-get install chromium (scripts/bootstrap.sh)")
    with sync_playwright() as pw:
        chromium = pw.chromium.launch(executable_path=str(CHROMIUM), args=CHROMIUM_ARGS)
        yield chromium
        chromium.close()


@pytest.fixture
def session(browser: Browser) -> Iterator[Session]:
    """A fresh, signed-out browser session; the test fails on unexpected console errors."""
    s = open_session(browser)
    yield s
    s.context.close()
    s.console.assert_clean()


@pytest.fixture
def alice(session: Session, platform: Platform) -> Session:
    """``session`` signed in as alice through the sign-in form."""
    session.page.goto(f"{platform.base_url}/login")
    sign_in(session.page, platform.base_url, ALICE)
    return session


@pytest.fixture(scope="session")
def provisioned(platform: Platform, browser: Browser) -> Iterator[Provisioned]:
    s = open_session(browser)
    page = s.page
    try:
        page.goto(f"{platform.base_url}/login")
        sign_in(page, platform.base_url, ALICE)
        page.get_by_role("link", name="New dev container").click()
        page.get_by_label("Runtime").select_option("node")
        page.get_by_label("Version").select_option("22")
        page.get_by_label("code-server").check()
        page.get_by_role("button", name="Create").click()
        page.wait_for_url(re.compile(r"/c/\d+$"))
        vmid = int(page.url.rsplit("/", 1)[1])
        snapshots = watch_provisioning(page, screenshot="container-provisioning")
        if snapshots[-1]["badge"] == "ready":
            capture(page, "container-ready")
        yield Provisioned(vmid, snapshots, s.console.unexpected())
    finally:
        s.context.close()
