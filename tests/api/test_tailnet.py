"""Tailnet keys: made on provisioning, sealed at rest, shown once, regenerated, owner only.

Against the in-test Headscale over real HTTP and the API's real database and routes.
"""

from __future__ import annotations

import asyncio
import json
import logging
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import httpx
import pytest
from fastapi import FastAPI
from headscale_server import HeadscaleServer
from pydantic import SecretStr

from zlh.api.app import create_app
from zlh.api.catalog import StoreCatalog
from zlh.api.containers import Quota
from zlh.api.db import AddonPin, Container, Database, KeyValue, Pins, User
from zlh.api.services import Services
from zlh.api.settings import ApiSettings
from zlh.api.tailnet.headscale import HeadscaleClient, HeadscaleRejected, HeadscaleSettings
from zlh.api.tailnet.service import (
    KeySealer,
    Tailnet,
    TailnetError,
    TailnetStore,
    headscale_user_name,
)
from zlh.backends import Backend, BackendError, ContainerInfo, ContainerSpec, RunState, Usage
from zlh.schemas import (
    ADDONS,
    CODE_SERVER_PORT,
    Artifact,
    CodeServerOptions,
    ProvisionPayload,
    RuntimeName,
    RuntimeSpec,
    TailscaleAddon,
)

SHA = "0" * 64
ARTIFACT = {"url": "t.tar.gz", "sha256": SHA, "size": 1, "format": "tar.gz"}


def make_tailnet(headscale: HeadscaleServer, db: Database, data_dir: Path) -> Tailnet:
    settings = HeadscaleSettings(url=headscale.url, login_server_url="https://hs.example.test")

    def client() -> HeadscaleClient:
        return HeadscaleClient(headscale.url, SecretStr(headscale.api_key), retry_backoff_s=0.001)

    sealer = KeySealer.from_file(data_dir / "tailnet.key")
    return Tailnet(settings, sealer, TailnetStore(db), client_factory=client)


@pytest.fixture
def db(tmp_path: Path) -> Iterator[Database]:
    database = Database(f"sqlite:///{tmp_path / 'zlh.db'}")
    database.migrate()
    yield database
    database.dispose()


def payload_with(tailnet: Tailnet, vmid: int) -> ProvisionPayload:
    """The payload the API sends, with the tailscale options the tailnet gives."""
    access = tailnet.store.get(vmid)
    assert access is not None
    options = tailnet.container_options(access)
    return ProvisionPayload.model_validate(
        {
            "vmid": vmid,
            "runtime": {"name": "node", "version": "22", "artifact": ARTIFACT},
            "addons": [
                {
                    "name": "tailscale",
                    "version": "1.80.0",
                    "artifact": ARTIFACT,
                    "options": options.model_dump(),
                }
            ],
        }
    )


def test_provisioning_makes_a_tagged_container_key_and_an_untagged_customer_key(
    headscale: HeadscaleServer, db: Database, tmp_path: Path
) -> None:
    tailnet = make_tailnet(headscale, db, tmp_path)
    access = asyncio.run(tailnet.ensure_access(101, user_id=7, username="alice_w"))

    (user,) = headscale.users.values()
    assert user.name == headscale_user_name(7, "alice_w") == "zlh-7-alice.w"
    bodies = [call.body for call in headscale.calls("POST", "/api/v1/preauthkey")]
    for body in bodies:
        assert body["user"] == str(user.id)
        assert (body["reusable"], body["ephemeral"]) == (False, False)
        assert body["expiration"].endswith("Z")
    assert [b["aclTags"] for b in bodies] == [["tag:zlh-vm-101"], []]
    assert access.login_server == "https://hs.example.test"
    assert access.customer_key_shown_at is None


def test_container_key_reaches_the_payload_and_never_the_logs_or_the_database(
    headscale: HeadscaleServer, db: Database, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG)
    tailnet = make_tailnet(headscale, db, tmp_path)
    asyncio.run(tailnet.ensure_access(101, user_id=7, username="alice"))
    payload = payload_with(tailnet, 101)

    (container_key,) = [k for k in headscale.keys.values() if k.acl_tags == ["tag:zlh-vm-101"]]
    addon = payload.addon("tailscale")
    assert isinstance(addon, TailscaleAddon)
    assert addon.options.auth_key.get_secret_value() == container_key.key
    assert addon.options.hostname == "zlh-101"
    assert addon.options.login_server == "https://hs.example.test"
    assert container_key.key not in repr(payload)
    wire = payload.model_dump_json()
    assert container_key.key not in wire  # a SecretStr dumps masked; the agent client sends it
    assert caplog.records, "the test must capture the client's and the tailnet's logs"
    for secret in (k.key for k in headscale.keys.values()):
        assert secret not in caplog.text
        with db.session() as session:
            stored = str(session.get(KeyValue, "tailnet:101").value)  # type: ignore[union-attr]
        assert secret not in stored


def test_access_is_made_once_and_found_again_after_a_restart(
    headscale: HeadscaleServer, db: Database, tmp_path: Path
) -> None:
    first = asyncio.run(
        make_tailnet(headscale, db, tmp_path).ensure_access(101, user_id=7, username="a")
    )
    again = asyncio.run(
        make_tailnet(headscale, db, tmp_path).ensure_access(101, user_id=7, username="a")
    )
    assert first == again
    assert len(headscale.keys) == 2


def test_a_failed_customer_key_expires_the_container_key_and_records_nothing(
    headscale: HeadscaleServer, db: Database, tmp_path: Path
) -> None:
    tailnet = make_tailnet(headscale, db, tmp_path)
    refusal = '{"code": 3, "message": "invalid expiration", "details": []}'
    headscale.fail_next(1, status=400, body=refusal, path="/api/v1/preauthkey", skip=1)
    with pytest.raises(HeadscaleRejected, match="invalid expiration"):
        asyncio.run(tailnet.ensure_access(101, user_id=7, username="alice"))
    (container_key,) = headscale.keys.values()
    assert container_key.expiration is not None and container_key.expiration <= datetime.now(UTC)
    assert tailnet.store.get(101) is None


def test_the_customer_key_is_shown_once_then_masked(
    headscale: HeadscaleServer, db: Database, tmp_path: Path
) -> None:
    tailnet = make_tailnet(headscale, db, tmp_path)

    async def two_reads() -> tuple[Any, Any]:
        await tailnet.ensure_access(101, user_id=7, username="alice")
        return await tailnet.reveal(101), await tailnet.reveal(101)

    first, second = asyncio.run(two_reads())
    (customer_key,) = [k for k in headscale.keys.values() if not k.acl_tags]
    assert first.auth_key == customer_key.key and customer_key.key in first.join_command
    assert "--accept-dns=false" in first.join_command
    assert second.auth_key is None and customer_key.key not in second.model_dump_json()
    assert customer_key.key.startswith(second.auth_key_hint.rstrip("…"))
    assert second.shown_at is not None and "regenerate" in second.note


def test_regenerate_expires_the_old_key_and_shows_the_new_one_once(
    headscale: HeadscaleServer, db: Database, tmp_path: Path
) -> None:
    tailnet = make_tailnet(headscale, db, tmp_path)

    async def regenerate_then_read() -> tuple[Any, Any]:
        await tailnet.ensure_access(101, user_id=7, username="alice")
        return await tailnet.regenerate(101), await tailnet.reveal(101)

    (old,) = [k for k in headscale.keys.values() if not k.acl_tags] or [None]
    new_info, read_after = asyncio.run(regenerate_then_read())
    old, new = [k for k in headscale.keys.values() if not k.acl_tags]
    assert old.expiration is not None and old.expiration <= datetime.now(UTC)
    assert new_info.auth_key == new.key != old.key
    assert new.expiration is not None and new.expiration > datetime.now(UTC)
    assert read_after.auth_key is None
    (expire,) = headscale.calls("POST", "/api/v1/preauthkey/expire")
    assert expire.body == {"user": str(new.user_id), "key": old.key}


def test_release_expires_both_keys_and_forgets_the_container(
    headscale: HeadscaleServer, db: Database, tmp_path: Path
) -> None:
    tailnet = make_tailnet(headscale, db, tmp_path)

    async def make_and_release() -> None:
        await tailnet.ensure_access(101, user_id=7, username="alice")
        await tailnet.release(101)

    asyncio.run(make_and_release())
    now = datetime.now(UTC)
    assert all(k.expiration is not None and k.expiration <= now for k in headscale.keys.values())
    assert tailnet.store.get(101) is None


def test_a_sealed_key_does_not_open_for_another_container(tmp_path: Path) -> None:
    sealer = KeySealer.from_file(tmp_path / "tailnet.key")
    sealed = sealer.seal(SecretStr("hskey-auth-secret"), context="101:customer")
    assert sealer.open(sealed, context="101:customer").get_secret_value() == "hskey-auth-secret"
    with pytest.raises(TailnetError, match="does not open"):
        sealer.open(sealed, context="102:customer")
    with pytest.raises(TailnetError, match="does not open"):
        KeySealer.from_file(tmp_path / "other.key").open(sealed, context="101:customer")


# -- the routes, in the real API app ------------------------------------------------------------


class NoContainersBackend(Backend):
    """These tests drive no container: every container lives only in the database."""

    name = "none"

    async def create(self, spec: ContainerSpec) -> ContainerInfo:
        raise BackendError("this test runs no containers")

    async def start(self, vmid: int) -> ContainerInfo:
        raise BackendError("this test runs no containers")

    async def stop(self, vmid: int, *, timeout_s: float = 10.0) -> None:
        raise BackendError("this test runs no containers")

    async def destroy(self, vmid: int) -> None:
        return None

    async def rebuild(self, spec: ContainerSpec) -> ContainerInfo:
        raise BackendError("this test runs no containers")

    async def status(self, vmid: int) -> ContainerInfo:
        return ContainerInfo(vmid=vmid, state=RunState.ABSENT)

    async def list(self) -> list[ContainerInfo]:
        return []

    async def usage(self, vmids: Sequence[int]) -> dict[int, Usage]:
        return {}


@dataclass
class Api:
    client: httpx.AsyncClient
    svc: Services
    tailnet: Tailnet
    alice: User
    bob: User
    tokens: dict[str, str]

    def as_(self, who: str) -> dict[str, str]:
        return {"Authorization": f"Bearer {self.tokens[who]}"}

    def container(self, owner: User, addons: list[str]) -> Container:
        artifact = Artifact.model_validate(ARTIFACT)
        pins = Pins(
            runtime=artifact,
            addons={a: AddonPin(version="1", artifact=artifact) for a in addons},
        )
        return self.svc.registry.allocate(
            owner=owner, runtime="node", version="22", addons=addons, pins=pins, quota=Quota(10, 10)
        )


def add_user(db: Database, username: str) -> User:
    """A platform user that never logs in with a password (tokens are issued directly), so
    no argon2 hash is computed: these tests are about the tailnet routes, not about login."""
    user = User(username=username, password_hash="!")
    with db.session() as session:
        session.add(user)
    return user


def make_app(tmp_path: Path, headscale: HeadscaleSettings) -> FastAPI:
    """The real API app over a fresh data dir; no lifespan runs (no poller, no resume)."""
    settings = ApiSettings(data_dir=tmp_path, backend="process", headscale=headscale)
    return create_app(
        settings,
        NoContainersBackend(),
        catalog=StoreCatalog(tmp_path / "store"),
        artifact_base_url="http://127.0.0.1:9/artifacts",
    )


async def api_for(headscale: HeadscaleServer, tmp_path: Path) -> Api:
    key_file = tmp_path / "headscale.key"
    key_file.write_text(headscale.api_key)
    key_file.chmod(0o600)
    hs = HeadscaleSettings(url=headscale.url, api_key_file=key_file, retry_backoff_s=0.001)
    app = make_app(tmp_path, hs)
    svc: Services = app.state.services
    assert svc.tailnet is not None and app.state.tailnet is svc.tailnet
    alice, bob = (add_user(svc.db, name) for name in ("alice", "bob"))
    tokens = {u.username: svc.tokens.issue(u).token for u in (alice, bob)}
    transport = httpx.ASGITransport(app=app)
    client = httpx.AsyncClient(transport=transport, base_url="http://api.test")
    return Api(client, svc, svc.tailnet, alice, bob, tokens)


def run_api(headscale: HeadscaleServer, tmp_path: Path, scenario: Any) -> None:
    async def go() -> None:
        api = await api_for(headscale, tmp_path)
        try:
            await scenario(api)
        finally:
            await api.client.aclose()
            api.svc.db.dispose()

    asyncio.run(go())


def test_owner_reads_the_key_once_and_the_container_record_never_carries_keys(
    headscale: HeadscaleServer, tmp_path: Path
) -> None:
    async def scenario(api: Api) -> None:
        vmid = api.container(api.alice, ["code-server", "tailscale"]).vmid
        await api.svc.provisioning.ensure_tailnet(api.svc.registry.get(vmid))  # type: ignore[arg-type]
        first = await api.client.get(f"/api/dev/{vmid}/tailnet", headers=api.as_("alice"))
        second = await api.client.get(f"/api/dev/{vmid}/tailnet", headers=api.as_("alice"))
        record = await api.client.get(f"/api/dev/{vmid}", headers=api.as_("alice"))
        assert first.status_code == second.status_code == record.status_code == 200
        assert first.headers["cache-control"] == "no-store"
        (customer,) = [k for k in headscale.keys.values() if not k.acl_tags]
        (container,) = [k for k in headscale.keys.values() if k.acl_tags]
        assert first.json()["authKey"] == customer.key
        assert second.json()["authKey"] is None and customer.key not in second.text
        for secret in (customer.key, container.key):
            assert secret not in record.text
        assert container.key not in first.text
        actions = [(e.action, e.detail) for e in api.svc.audit.entries(vmid=vmid)]
        assert ("tailnet-view", "key shown") in actions
        assert ("tailnet-view", "key not shown (shown before)") in actions

    run_api(headscale, tmp_path, scenario)


def test_regenerate_route_answers_a_new_key_and_expires_the_old(
    headscale: HeadscaleServer, tmp_path: Path
) -> None:
    async def scenario(api: Api) -> None:
        vmid = api.container(api.alice, ["tailscale"]).vmid
        await api.svc.provisioning.ensure_tailnet(api.svc.registry.get(vmid))  # type: ignore[arg-type]
        (old,) = [k for k in headscale.keys.values() if not k.acl_tags]
        answer = await api.client.post(
            f"/api/dev/{vmid}/tailnet/regenerate", headers=api.as_("alice")
        )
        assert answer.status_code == 200
        assert old.expiration is not None and old.expiration <= datetime.now(UTC)
        assert answer.json()["authKey"] not in (None, old.key)
        assert next(e.action for e in api.svc.audit.entries(vmid=vmid)) == "tailnet-regenerate"

    run_api(headscale, tmp_path, scenario)


def test_a_non_owner_gets_404_on_the_tailnet_routes_and_changes_nothing(
    headscale: HeadscaleServer, tmp_path: Path
) -> None:
    async def scenario(api: Api) -> None:
        vmid = api.container(api.alice, ["tailscale"]).vmid
        await api.svc.provisioning.ensure_tailnet(api.svc.registry.get(vmid))  # type: ignore[arg-type]
        calls_before = len(headscale.requests)
        read = await api.client.get(f"/api/dev/{vmid}/tailnet", headers=api.as_("bob"))
        regen = await api.client.post(f"/api/dev/{vmid}/tailnet/regenerate", headers=api.as_("bob"))
        unknown = await api.client.get("/api/dev/99999/tailnet", headers=api.as_("bob"))
        assert read.status_code == regen.status_code == unknown.status_code == 404
        assert read.json()["message"] == f"no container {vmid}"
        assert len(headscale.requests) == calls_before
        access = api.tailnet.store.get(vmid)
        assert access is not None and access.customer_key_shown_at is None
        anonymous = await api.client.get(f"/api/dev/{vmid}/tailnet")
        assert anonymous.status_code == 401

    run_api(headscale, tmp_path, scenario)


def test_the_payload_is_the_registrys_build_of_each_addon(
    headscale: HeadscaleServer, tmp_path: Path
) -> None:
    """The payload the API sends equals, as a model, the registry's build of code-server and
    tailscale with the options only the API knows, and keeps the wire shape the agent reads."""

    async def scenario(api: Api) -> None:
        vmid = api.container(api.alice, ["code-server", "tailscale"]).vmid
        container = api.svc.registry.get(vmid)
        assert container is not None
        await api.svc.provisioning.ensure_tailnet(container)
        sent = api.svc.provisioning.payload(container)

        access = api.tailnet.store.get(vmid)
        assert access is not None
        base = api.svc.provisioning.artifact_base_url
        artifact = Artifact.model_validate({**ARTIFACT, "url": f"{base}/t.tar.gz"})
        ide = CodeServerOptions(base_path=f"/dev/{vmid}/ide", port=CODE_SERVER_PORT)
        tailnet = api.tailnet.container_options(access)
        expected = ProvisionPayload(
            vmid=vmid,
            runtime=RuntimeSpec(name=RuntimeName.NODE, version="22", artifact=artifact),
            addons=[
                ADDONS["code-server"].build(version="1", artifact=artifact, options=ide),
                ADDONS["tailscale"].build(version="1", artifact=artifact, options=tailnet),
            ],
        )
        assert sent == expected
        assert ProvisionPayload.model_validate_json(sent.json_with_secrets()) == expected
        wire = json.loads(sent.json_with_secrets())
        assert [a["options"] for a in wire["addons"]] == [
            {"basePath": f"/dev/{vmid}/ide", "port": 6000},
            {
                "loginServer": tailnet.login_server,
                "authKey": tailnet.auth_key.get_secret_value(),
                "hostname": f"zlh-{vmid}",
            },
        ]
        assert wire["runtime"]["artifact"]["url"] == f"{base}/t.tar.gz"

    run_api(headscale, tmp_path, scenario)


def test_a_container_without_the_addon_has_no_tailnet(
    headscale: HeadscaleServer, tmp_path: Path
) -> None:
    async def scenario(api: Api) -> None:
        vmid = api.container(api.alice, ["code-server"]).vmid
        answer = await api.client.get(f"/api/dev/{vmid}/tailnet", headers=api.as_("alice"))
        assert answer.status_code == 404 and "tailscale addon" in answer.json()["message"]

    run_api(headscale, tmp_path, scenario)


def test_the_provisioner_puts_the_container_key_on_the_wire_to_the_agent_only(
    headscale: HeadscaleServer, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """The payload the API builds carries the container key masked everywhere but in the body
    sent to the agent (a real HTTP server here, recording what it received)."""
    from aiohttp import web

    from zlh.api.agent_client import AgentClient

    caplog.set_level(logging.DEBUG)
    received: list[dict[str, Any]] = []

    async def provision(request: web.Request) -> web.Response:
        received.append(await request.json())
        return web.Response(status=202)

    async def scenario(api: Api) -> None:
        vmid = api.container(api.alice, ["tailscale"]).vmid
        container = api.svc.registry.get(vmid)
        assert container is not None
        await api.svc.provisioning.ensure_tailnet(container)
        payload = api.svc.provisioning.payload(container)
        app = web.Application()
        app.router.add_post("/provision", provision)
        runner = web.AppRunner(app)
        await runner.setup()
        site = web.TCPSite(runner, "127.0.0.1", 0)
        await site.start()
        port = runner.addresses[0][1]
        agents = AgentClient()
        try:
            await agents.provision(f"http://127.0.0.1:{port}", "s", payload, timeout_s=10)
        finally:
            await agents.close()
            await runner.cleanup()
        (container_key,) = [k for k in headscale.keys.values() if k.acl_tags]
        (body,) = received
        options = body["addons"][0]["options"]
        assert options == {
            "loginServer": headscale.url,
            "authKey": container_key.key,
            "hostname": f"zlh-{vmid}",
        }
        assert container_key.key not in payload.model_dump_json()
        assert container_key.key not in caplog.text

    run_api(headscale, tmp_path, scenario)


def test_a_dev_request_for_tailscale_is_refused_when_no_tailnet_is_configured(
    tmp_path: Path,
) -> None:
    async def go() -> None:
        app = make_app(tmp_path, HeadscaleSettings())
        svc: Services = app.state.services
        alice = add_user(svc.db, "alice")
        from zlh.api.bodies import DevRequest
        from zlh.api.errors import InvalidRequest

        with pytest.raises(InvalidRequest, match="needs a tailnet") as caught:
            await svc.provisioning.request(alice, DevRequest(runtime="node", addons=["tailscale"]))
        assert caught.value.validations[0].field == "addons"
        svc.db.dispose()

    asyncio.run(go())
