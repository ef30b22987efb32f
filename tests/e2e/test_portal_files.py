"""The Files tab in Chromium: upload (picker and drag and drop), list, download, delete."""

from __future__ import annotations

import base64
import os
from pathlib import Path

import pytest
from e2e_kit import Platform, Provisioned, Session, capture
from playwright.sync_api import Page

pytestmark = [pytest.mark.e2e, pytest.mark.slow]

DROP_JS = """([name, data]) => {
    const bytes = Uint8Array.from(atob(data), (c) => c.charCodeAt(0));
    const transfer = new DataTransfer();
    transfer.items.add(new File([bytes], name, { type: 'application/octet-stream' }));
    const zone = document.getElementById('drop-zone');
    for (const type of ['dragenter', 'dragover', 'drop']) {
        const init = { dataTransfer: transfer, bubbles: true, cancelable: true };
        zone.dispatchEvent(new DragEvent(type, init));
    }
}"""


def _open_files(page: Page, base_url: str, vmid: int) -> None:
    page.goto(f"{base_url}/c/{vmid}")
    page.get_by_role("link", name="Files").click()
    page.locator("#drop-zone").wait_for()


def _download(page: Page, name: str) -> bytes:
    with page.expect_download() as info:
        page.get_by_role("link", name=name, exact=True).click()
    download = info.value
    assert download.suggested_filename == name
    return Path(download.path()).read_bytes()


def _delete(page: Page, name: str, *, confirm: bool, question: str = "") -> None:
    page.get_by_role("button", name=f"Delete {name}").click()
    dialog = page.locator("dialog[open]")
    assert (question or f"Delete {name}?") in dialog.inner_text()
    dialog.get_by_role("button", name="Delete" if confirm else "Cancel").click()
    dialog.wait_for(state="detached")


def test_upload_list_download_byte_identical_and_delete_with_confirmation(
    alice: Session, platform: Platform, provisioned: Provisioned
) -> None:
    page, vmid = alice.page, provisioned.vmid
    workspace = platform.workspace(vmid)
    picked, dropped = os.urandom(300_000), os.urandom(70_000) + b"\x00\xff end"
    _open_files(page, platform.base_url, vmid)

    page.locator("#upload-input").set_input_files(
        files=[{"name": "picked.bin", "mimeType": "application/octet-stream", "buffer": picked}]
    )
    page.locator("tr[data-name='picked.bin']").wait_for()
    page.evaluate(DROP_JS, ["dropped.bin", base64.b64encode(dropped).decode()])
    page.locator("tr[data-name='dropped.bin']").wait_for()
    assert (workspace / "picked.bin").read_bytes() == picked
    assert (workspace / "dropped.bin").read_bytes() == dropped
    size_cell = page.locator("tr[data-name='picked.bin'] td.num").inner_text()
    assert size_cell == "293.0 KB"
    assert page.get_by_text("picked.bin uploaded (293.0 KB)").is_visible()
    capture(page, "files")

    assert _download(page, "picked.bin") == picked
    assert _download(page, "dropped.bin") == dropped

    _delete(page, "dropped.bin", confirm=False)
    assert page.locator("tr[data-name='dropped.bin']").count() == 1
    assert (workspace / "dropped.bin").exists()
    for name in ("dropped.bin", "picked.bin"):
        _delete(page, name, confirm=True)
        page.locator(f"tr[data-name='{name}']").wait_for(state="detached")
        assert not (workspace / name).exists()


def _answer_prompt(page: Page, label: str, text: str) -> None:
    dialog = page.locator("dialog[open]")
    dialog.get_by_label(label).fill(text)
    dialog.get_by_role("button", name="OK").click()
    dialog.wait_for(state="detached")


def test_new_folder_breadcrumbs_and_rename(
    alice: Session, platform: Platform, provisioned: Provisioned
) -> None:
    page, vmid = alice.page, provisioned.vmid
    workspace = platform.workspace(vmid)
    _open_files(page, platform.base_url, vmid)

    page.get_by_role("button", name="New folder").click()
    _answer_prompt(page, "Folder name", "notes")
    page.get_by_role("button", name="notes/").click()
    page.get_by_text("This folder is empty.").wait_for()
    assert page.url.endswith("/files?path=notes")
    crumbs = page.get_by_role("navigation", name="Folder")
    assert crumbs.inner_text().split() == ["workspace", "/", "notes"]

    page.locator("#upload-input").set_input_files(
        files=[{"name": "draft.txt", "mimeType": "text/plain", "buffer": b"first draft\n"}]
    )
    page.locator("tr[data-name='draft.txt']").wait_for()
    page.get_by_role("button", name="Rename draft.txt").click()
    _answer_prompt(page, "New name for draft.txt", "final.txt")
    page.locator("tr[data-name='final.txt']").wait_for()
    assert (workspace / "notes" / "final.txt").read_bytes() == b"first draft\n"
    assert not (workspace / "notes" / "draft.txt").exists()

    crumbs.get_by_role("button", name="workspace").click()
    page.locator("tr[data-name='notes']").wait_for()
    _delete(page, "notes", confirm=True, question="Delete the folder notes and everything in it?")
    page.locator("tr[data-name='notes']").wait_for(state="detached")
    assert not (workspace / "notes").exists()
