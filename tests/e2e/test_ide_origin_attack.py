"""The attack the IDE origin exists for, in Chromium, in all three forms of ``ide_origin``.

An admin (``admin_ide_access`` on) opens a customer's IDE; a page the customer serves from their
container through code-server's ``/proxy/<port>/`` then tries, with the admin's browser, to read
the API, change something through it and open a container's console, on the IDE's own origin
and on the portal's. Everything fails: the IDE origin serves nothing but IDEs, the portal's
answers are not readable across origins, its console refuses a foreign Origin, and nothing was
created. The second-port form reuses the session's platform; the host-name and wildcard forms
(``ide.test`` and ``*.ide.test``, resolved by Chromium's ``--host-resolver-rules``) each start
one of their own.
"""

from __future__ import annotations

import re
import time
from collections.abc import Iterator
from contextlib import ExitStack
from pathlib import Path

import httpx
import pytest
from e2e_kit import (
    ADMIN,
    ALICE,
    Platform,
    Provisioned,
    Session,
    api_login,
    running_platform,
    sign_in,
    wait_for_container,
)
from playwright.sync_api import expect
from websockets.sync.client import ClientConnection, connect

from support import free_port

pytestmark = [pytest.mark.e2e, pytest.mark.slow]

# The customer's page: each attempt's outcome, "blocked" when the browser refused it.
ATTACK_PAGE = """<!doctype html><meta charset=utf-8><title>attack</title><script>
const PORTAL = "%(portal)s", VMID = %(vmid)d;
const post = {method: "POST", headers: {"Content-Type": "text/plain"}, body: '{"runtime":"node"}'};
async function tryFetch(url, init) {
  try {
    const r = await fetch(url, {credentials: "include", ...init});
    return "status " + r.status + " " + (await r.text()).slice(0, 120);
  } catch (e) { return "blocked"; }
}
function trySocket(url) {
  return new Promise((resolve) => {
    let ws;
    try { ws = new WebSocket(url); } catch (e) { resolve("blocked"); return; }
    ws.onopen = () => { resolve("open"); ws.close(); };
    ws.onerror = () => resolve("blocked");
  });
}
const wsOf = (origin) => origin.replace(/^http/, "ws");
window.attack = (async () => ({
  readHere: await tryFetch("/api/dev"),
  readPortal: await tryFetch(PORTAL + "/api/dev"),
  writeHere: await tryFetch("/api/dev", post),
  writePortal: await tryFetch(PORTAL + "/api/dev", post),
  consoleHere: await trySocket(wsOf(location.origin) + "/api/dev/" + VMID + "/console"),
  consolePortal: await trySocket(wsOf(PORTAL) + "/api/dev/" + VMID + "/console"),
}))();
</script>"""


def _ready_container(platform: Platform) -> int:
    """A node container with code-server of alice's, once code-server runs."""
    with httpx.Client(base_url=platform.base_url, timeout=30) as client:
        alice = api_login(client, ALICE)
        body = {"runtime": "node", "addons": ["code-server"]}
        vmid: int = client.post("/api/dev", json=body, headers=alice).json()["vmid"]
        wait_for_container(
            client,
            alice,
            vmid,
            lambda found: (
                found["state"] == "ready" and (found["status"] or {}).get("codeServerRunning")
            ),
        )
        return vmid


@pytest.fixture(scope="module")
def forms(
    platform: Platform,
    provisioned: Provisioned,
    e2e_store: Path,
    tmp_path_factory: pytest.TempPathFactory,
) -> Iterator[dict[str, tuple[Platform, int]]]:
    """Each form's platform and a ready container of alice's there."""
    found = {"second-port": (platform, provisioned.vmid)}
    with ExitStack() as stack:
        for form, pattern in (("host", "http://ide.test:{}"), ("wildcard", "http://*.ide.test:{}")):
            port = free_port()
            data_dir = tmp_path_factory.mktemp(f"e2e-{form}")
            other = stack.enter_context(
                running_platform(e2e_store, data_dir, pattern.format(port), port)
            )
            found[form] = (other, _ready_container(other))
        yield found


def _console(platform: Platform, vmid: int, auth: dict[str, str]) -> ClientConnection:
    url = platform.base_url.replace("http", "ws", 1) + f"/api/dev/{vmid}/console"
    return connect(url, additional_headers=auth, open_timeout=10)


def _wait_for_port(port: int, timeout_s: float = 20.0) -> None:
    deadline = time.monotonic() + timeout_s
    while True:
        try:
            httpx.get(f"http://127.0.0.1:{port}/", timeout=1)
            return
        except httpx.TransportError:
            assert time.monotonic() < deadline, f"nothing listens on {port}"
            time.sleep(0.2)


@pytest.mark.parametrize("form", ["second-port", "host", "wildcard"])
def test_a_customer_page_in_an_admins_ide_reaches_neither_api_nor_console(
    session: Session, forms: dict[str, tuple[Platform, int]], form: str
) -> None:
    platform, vmid = forms[form]
    with httpx.Client(base_url=platform.base_url, timeout=30) as client:
        alice, boss = api_login(client, ALICE), api_login(client, ADMIN)
        before = client.get("/api/dev", headers=boss).json()
        page = ATTACK_PAGE % {"portal": platform.base_url, "vmid": vmid}
        client.post(f"/api/dev/{vmid}/files/mkdir", json={"path": f"attack-{form}"}, headers=alice)
        put = client.put(
            f"/api/dev/{vmid}/files/content",
            params={"path": f"attack-{form}/index.html"},
            content=page.encode(),
            headers=alice,
        )
        assert put.status_code == 201, put.text
        port = free_port()
        # The customer's server runs in their console's shell (closing the console ends it).
        with _console(platform, vmid, alice) as shell:
            command = f"cd attack-{form} && python3 -m http.server {port} --bind 127.0.0.1\n"
            shell.send(command.encode())
            _wait_for_port(port)

            tab = session.context.new_page()  # the IDE's console noise is not the portal's
            sign_in(tab, platform.base_url, ADMIN)
            tab.goto(f"{platform.base_url}/c/{vmid}")
            expect(tab.locator("#admin-ide-access")).to_be_visible()  # the banner
            tab.goto(f"{platform.base_url}/c/{vmid}/ide")  # the admin's ticket to the IDE
            tab.wait_for_url(re.compile("^" + re.escape(platform.ide_url(vmid))))
            tab.goto(f"{platform.ide_url(vmid)}proxy/{port}/index.html")
            outcomes: dict[str, str] = tab.evaluate("window.attack")
        after = client.get("/api/dev", headers=boss)
        audit = client.get("/api/audit", params={"vmid": vmid}, headers=boss).json()
    assert after.status_code == 200  # the admin's session is intact...
    assert len(after.json()) == len(before)  # ...and created nothing
    assert any(e["action"] == "admin-ide-open" and e["actor"] == ADMIN for e in audit)
    # No console of the platform's was opened in the admin's name (the API audits each).
    assert not [e for e in audit if e["detail"] == "console" and e["actor"] == ADMIN]
    for attempt, outcome in outcomes.items():
        if form == "wildcard" and attempt.endswith("Here"):
            # Every path of the container's own host is the container's: its code-server, not
            # the platform, answers (a socket to it may well open). The platform's side is
            # the portal's origin, checked below, and the audit above.
            continue
        # Refused by the browser, or an error from the front (401/403/404).
        refused = outcome == "blocked" or re.match(r"status (401|403|404) ", outcome)
        assert refused, f"{form}: {attempt} got through: {outcome}"
