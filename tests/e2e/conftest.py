"""The platform for real, once per session: ``zlh up --backend process`` over a store holding a
real Node runtime and real code-server, three users, and one Chromium.

The container the portal tests share is created through the New page by ``provisioned``, which
records what the container page showed on the way to ready; the provisioning test asserts on
that record, the files, console and IDE tests reuse the container.
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from pathlib import Path

import pytest
from e2e_kit import (
    ALICE,
    CHROMIUM,
    CHROMIUM_ARGS,
    Platform,
    Provisioned,
    Session,
    add_corrupt_node_versions,
    capture,
    open_session,
    running_platform,
    sign_in,
    watch_provisioning,
)
from playwright.sync_api import Browser, sync_playwright

from support import copy_catalog_entry, free_port
from zlh.schemas import ArtifactKind


@pytest.fixture(scope="session")
def e2e_store(
    node_store: Path, code_server_store: Path, tmp_path_factory: pytest.TempPathFactory
) -> Path:
    """One store with both real artifacts (node 22, the default, and 24 to upgrade to), combined
    with ``zlh artifacts add``, and two corrupt node versions for the failure tests."""
    store = tmp_path_factory.mktemp("e2e-store")
    copy_catalog_entry(node_store, store, ArtifactKind.RUNTIME, "node")
    copy_catalog_entry(node_store, store, ArtifactKind.RUNTIME, "node", "24")
    copy_catalog_entry(code_server_store, store, ArtifactKind.ADDON, "code-server")
    add_corrupt_node_versions(store, tmp_path_factory.mktemp("e2e-corrupt"))
    return store


@pytest.fixture(scope="session")
def platform(e2e_store: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Platform]:
    """The platform with its IDEs on a second port (the form ``zlh up`` defaults to)."""
    data_dir = tmp_path_factory.mktemp("e2e-platform")
    ide_origin = f"http://127.0.0.1:{free_port()}"
    with running_platform(e2e_store, data_dir, ide_origin, free_port()) as platform:
        yield platform


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
        page.get_by_role("radio", name="Node.js").check()
        page.get_by_role("radio", name="22", exact=True).check()
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
