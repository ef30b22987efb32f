"""Asking for a container on the New page and watching it provision, or fail, in Chromium."""

from __future__ import annotations

import re
from pathlib import Path

import httpx
import pytest
from e2e_kit import (
    BOB,
    Platform,
    Provisioned,
    Session,
    api_login,
    capture,
    off_loop,
    sign_in,
    wait_for_container,
    watch_provisioning,
)
from playwright.sync_api import expect

from zlh.backends import create_backend
from zlh.schemas import Catalog

pytestmark = [pytest.mark.e2e, pytest.mark.slow]


def test_new_page_shows_the_catalog_as_cards_with_the_default_version_chosen(
    alice: Session, platform: Platform, e2e_store: Path
) -> None:
    catalog = Catalog.model_validate_json((e2e_store / "catalog.json").read_text())
    node = catalog.runtimes["node"]
    default = next(v for v in node.versions if v.version == node.default)
    page = alice.page
    page.get_by_role("link", name="New dev container").click()

    runtimes = page.locator("#runtime").get_by_role("radio")
    versions = page.locator("#version").get_by_role("radio")
    versions.first.wait_for()
    names = runtimes.evaluate_all("(rs) => rs.map((r) => r.value)")
    assert names == list(catalog.runtimes)
    assert page.get_by_role("radio", name="Node.js").is_checked()
    offered = versions.evaluate_all("(rs) => rs.map((r) => r.value)")
    assert sorted(offered) == sorted(v.version for v in node.versions)
    chosen = page.get_by_role("radio", name=node.default, exact=True)
    assert chosen.is_checked()
    # The card says what the version is: its summary, upstream version, download size, source.
    card = page.locator(f"label.choice[for='version-{node.default}']")
    assert card.locator(".badge").inner_text() == "default"
    about = chosen.get_attribute("aria-describedby")
    text = page.locator(f"#{about}").inner_text()
    meta = default.artifact.metadata
    assert meta.labels.get("summary", f"Node.js {meta.upstream_version}") in text
    assert f"Upstream {meta.upstream_version}" in text
    assert f"{default.artifact.size / 2**20:.1f} MB download" in text
    assert str(meta.source) in text
    # Clicking anywhere on another card chooses it.
    other = next(v.version for v in node.versions if v.version != node.default)
    page.locator(f"label.choice[for='version-{other}'] .choice-about").click()
    assert page.get_by_role("radio", name=other, exact=True).is_checked()
    assert not chosen.is_checked()
    assert page.get_by_label("code-server").is_checked()
    capture(page, "new-container")


def test_container_page_lists_each_step_with_percent_and_elapsed_until_ready(
    provisioned: Provisioned,
) -> None:
    snaps = provisioned.snapshots
    assert provisioned.console_errors == []
    final = snaps[-1]
    assert final["badge"] == "ready", final
    steps = [step for step, _, _ in final["steps"]]
    assert steps == [
        "dev-user",
        "runtime-download",
        "runtime-extract",
        "runtime-activate",
        "addon-download",
        "addon-install",
        "addon-start",
        "ready",
    ]
    assert {state for _, state, _ in final["steps"]} == {"done"}
    assert final["percent"] == 100
    assert re.fullmatch(r"Ready after \d+m \d+s", final["elapsed"]), final["elapsed"]
    # On the way: steps became active in order, with a percent and a running clock.
    active = [
        next(s for s, state, _ in snap["steps"] if state == "active")
        for snap in snaps
        if any(state == "active" for _, state, _ in snap["steps"])
    ]
    assert active, "no step was ever shown as in progress"
    seen = list(dict.fromkeys(active))
    assert seen == [s for s in steps if s in seen], f"steps out of order: {seen}"
    assert any(re.search(r" · \d+%", snap["detail"]) for snap in snaps), snaps[:3]
    # Downloads count bytes (this sample is also when container-provisioning-*.png was taken).
    download = re.compile(r"· \d+% · [\d.]+ [KMG]?B of [\d.]+ [KMG]?B$")
    assert any(download.search(snap["detail"]) for snap in snaps), [s["detail"] for s in snaps]
    assert any(re.fullmatch(r"Elapsed \d+m \d+s", snap["elapsed"]) for snap in snaps)


@pytest.mark.parametrize(
    ("version", "step", "reason"),
    [
        (
            "23",
            "Downloading the runtime",
            r"size mismatch .* sends \d+ bytes, the payload pins \d+",
        ),
        ("21", "Unpacking and verifying the runtime", r"'\.\./evil'"),
    ],
    ids=["truncated-tarball", "tarball-with-dotdot"],
)
def test_corrupt_artifact_shows_the_failed_step_and_reason(
    alice: Session, platform: Platform, version: str, step: str, reason: str
) -> None:
    page = alice.page
    page.goto(f"{platform.base_url}/new")
    page.get_by_role("radio", name=version, exact=True).check()
    page.get_by_label("code-server").uncheck()
    page.get_by_role("button", name="Create").click()
    page.wait_for_url(re.compile(r"/c/\d+$"))
    final = watch_provisioning(page)[-1]

    assert final["badge"] == "failed", final
    failed = [words for _, state, words in final["steps"] if state == "failed"]
    assert failed == [step], final["steps"]
    alert = page.get_by_role("alert")
    assert f"Provisioning failed at the step “{step}”" in alert.inner_text()
    assert re.search(reason, page.locator("#failure-reason").inner_text())
    assert page.locator("#open-ide").get_attribute("aria-disabled") == "true"
    capture(page, f"container-failed-{version}")
    # Delete asks first, then the dashboard no longer lists it.
    vmid = int(page.url.rsplit("/", 1)[1])
    page.get_by_role("button", name="Delete").click()
    dialog = page.locator("dialog[open]")
    assert f"Delete container #{vmid}?" in dialog.inner_text()
    dialog.get_by_role("button", name="Delete").click()
    page.get_by_role("heading", name="Your dev containers").wait_for()
    assert page.get_by_role("link", name=f"#{vmid}", exact=True).count() == 0


def test_a_named_container_is_called_by_its_name_everywhere_and_names_do_not_repeat(
    alice: Session, platform: Platform
) -> None:
    page = alice.page
    name = "shop api"

    def create(with_name: str) -> None:
        page.goto(f"{platform.base_url}/new")
        page.get_by_label("Name (optional)").fill(with_name)
        page.get_by_label("code-server").uncheck()
        page.get_by_role("button", name="Create").click()

    create(name)
    page.wait_for_url(re.compile(r"/c/\d+$"))
    vmid = int(page.url.rsplit("/", 1)[1])
    label = f"{name} (#{vmid})"
    page.get_by_role("heading", name=re.compile(re.escape(label))).wait_for()
    page.goto(f"{platform.base_url}/")
    page.get_by_role("link", name=label, exact=True).wait_for()
    capture(page, "dashboard-named")
    alice.console.expect_http(409, "/api/dev")
    create(name)  # the same name again: refused in words, nothing made
    assert f"you already have a container named '{name}'" in page.get_by_role("alert").inner_text()
    assert "/new" in page.url
    page.goto(f"{platform.base_url}/c/{vmid}")
    alice.console.expect_http(404, f"/api/dev/{vmid}")  # a refresh in flight while it goes
    page.get_by_role("button", name="Delete").click()
    dialog = page.locator("dialog[open]")
    assert f"Delete container {label}?" in dialog.inner_text()
    dialog.get_by_role("button", name="Delete").click()
    page.get_by_role("heading", name="Your dev containers").wait_for()


def test_container_page_names_the_runtime_in_the_catalogs_words(
    alice: Session, platform: Platform, provisioned: Provisioned, e2e_store: Path
) -> None:
    catalog = Catalog.model_validate_json((e2e_store / "catalog.json").read_text())
    node = catalog.runtimes["node"]
    version = next(v for v in node.versions if v.version == "22")
    meta = version.artifact.metadata
    page = alice.page
    page.goto(f"{platform.base_url}/c/{provisioned.vmid}")
    runtime = page.locator("dl.fields dt", has_text=re.compile("^Runtime$")).locator("+ dd")
    expected = meta.labels.get("summary", f"Node.js {meta.upstream_version}")
    expect(runtime).to_have_text(expected)


def test_a_container_whose_agent_stopped_shows_unreachable_since_when_and_why(
    session: Session, platform: Platform
) -> None:
    with httpx.Client(base_url=platform.base_url, timeout=30) as client:
        bob = api_login(client, BOB)
        vmid = client.post("/api/dev", json={"runtime": "node"}, headers=bob).json()["vmid"]
        try:
            wait_for_container(client, bob, vmid, lambda c: c["state"] == "ready")
            off_loop(create_backend("process", data_dir=platform.data_dir).stop(vmid))
            gone = wait_for_container(client, bob, vmid, lambda c: c["state"] == "unreachable")
            sign_in(session.page, platform.base_url, BOB)
            for page in (f"{platform.base_url}/", f"{platform.base_url}/c/{vmid}"):
                session.page.goto(page)
                badge = session.page.locator(".badge.state-unreachable")
                expect(badge).to_have_text("agent unreachable")
                # Why, on hover: the poller's last error, as the API reports it.
                assert badge.get_attribute("title") == gone["error"]
                assert gone["error"].startswith("agent missed 3 polls: agent at http://")
                assert gone["error"].endswith("/status is unreachable: connection refused")
                since = badge.locator("+ .since")
                expect(since).to_have_text(re.compile(r"^since \S"))
            # The container page says it in words too, and its provisioning stays done.
            words = session.page.locator("#unreachable")
            expect(words).to_contain_text(f"since {since.inner_text().removeprefix('since ')}")
            expect(words).to_contain_text(gone["error"])
            expect(session.page.locator("#steps li[data-step=ready]")).to_have_attribute(
                "data-state", "done"
            )
            capture(session.page, "container-unreachable")
        finally:
            session.page.goto("about:blank")  # the container page would miss it once deleted
            client.delete(f"/api/dev/{vmid}", headers=bob)


def test_the_dashboard_and_the_new_page_say_how_many_containers_of_the_quota_are_held(
    alice: Session, platform: Platform
) -> None:
    page = alice.page
    me = alice.context.request.get(f"{platform.base_url}/api/auth/me").json()
    held, limit = me["containersHeld"], me["containerLimit"]
    assert limit == 3  # max_containers_per_user's default
    expected = f"You hold {held} of {limit} containers"
    page.goto(f"{platform.base_url}/")
    expect(page.locator("#quota")).to_contain_text(expected)
    page.get_by_role("link", name="New dev container").click()
    expect(page.locator("#quota")).to_contain_text(expected)
