"""``GET /metrics`` on simulated agents: who may read it, values that move with real actions,
a registry per app, and labels that carry nothing a user chose."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import httpx
import pytest
from prometheus_client.parser import text_string_to_metric_families
from pydantic import ValidationError

from agent_sim import SimBackend
from api_kit import PASSWORD, add_user, login, make_app, running, sse_events, wait_for
from zlh.api.settings import ApiSettings

Samples = dict[tuple[str, frozenset[tuple[str, str]]], float]


def scrape(client: httpx.Client, headers: dict[str, str]) -> Samples:
    response = client.get("/metrics", headers=headers)
    assert response.status_code == 200, response.text
    assert response.headers["content-type"].startswith("text/plain; version=0.0.4")
    return {
        (s.name, frozenset(s.labels.items())): s.value
        for family in text_string_to_metric_families(response.text)
        for s in family.samples
    }


def value(samples: Samples, name: str, **labels: str) -> float:
    return samples.get((name, frozenset(labels.items())), 0.0)


@contextmanager
def platform(tmp_path: Path) -> Iterator[tuple[SimBackend, httpx.Client, dict[str, str]]]:
    """The API on simulated agents, served, with alice and the admin root; root signed in."""
    backend = SimBackend()
    app = make_app(tmp_path, backend)
    add_user(app, "alice")
    add_user(app, "root", admin=True)
    with running(app) as client:
        yield backend, client, login(client, "root")


def test_only_an_admin_session_reads_the_metrics(tmp_path: Path) -> None:
    with platform(tmp_path) as (_, client, root):
        signed_out = client.get("/metrics")
        assert signed_out.status_code == 401
        assert signed_out.json()["message"].startswith("not logged in")
        forged = client.get("/metrics", headers={"Authorization": "Bearer not.a.token"})
        assert forged.status_code == 401
        alice = login(client, "alice")
        refused = client.get("/metrics", headers=alice)
        assert refused.status_code == 403
        assert refused.json()["message"] == "only administrators may do this"
        # A revoked admin session is refused too.
        assert client.post("/api/auth/logout", headers=root).status_code in (200, 204)
        assert client.get("/metrics", headers=root).status_code == 401
        # The portal's way: the session cookie.
        response = client.post("/api/auth/login", json={"username": "root", "password": PASSWORD})
        assert response.status_code == 200
        assert "zlh_containers" in client.get("/metrics").text


def test_an_admins_metrics_token_reads_the_metrics_and_no_other_token_does(
    tmp_path: Path,
) -> None:
    with platform(tmp_path) as (_, client, root):

        def token(scopes: list[str]) -> dict[str, str]:
            body = {"name": "-".join(scopes), "scopes": scopes, "expires_in_days": 1}
            made = client.post("/api/tokens", json=body, headers=root)
            assert made.status_code == 201, made.text
            return {"Authorization": f"Bearer {made.json()['token']}"}

        assert "zlh_containers" in client.get("/metrics", headers=token(["metrics"])).text
        wrong = client.get("/metrics", headers=token(["containers:read"]))
        assert wrong.status_code == 403
        assert wrong.json()["message"] == "this API token lacks the metrics scope"
        alice = login(client, "alice")
        asked = {"name": "scrape", "scopes": ["metrics"], "expires_in_days": 1}
        assert client.post("/api/tokens", json=asked, headers=alice).status_code == 403


def test_values_move_with_logins_provisioning_and_a_stop(tmp_path: Path) -> None:
    with platform(tmp_path) as (backend, client, root):
        alice = login(client, "alice")
        before = scrape(client, root)
        wrong = {"username": "alice", "password": "not it"}
        assert client.post("/api/auth/login", json=wrong).status_code == 401
        after = scrape(client, root)
        failures = value(after, "zlh_login_failures_total")
        assert failures == value(before, "zlh_login_failures_total") + 1

        created = client.post("/api/dev", json={"runtime": "node"}, headers=alice)
        assert created.status_code == 202, created.text
        vmid = created.json()["vmid"]
        assert sse_events(client, f"/api/dev/{vmid}/events", alice)[-1]["state"] == "ready"
        ready = scrape(client, root)
        assert value(ready, "zlh_containers", state="ready", runtime="node") == 1
        assert value(ready, "zlh_provision_seconds_count") == 1
        assert value(ready, "zlh_provision_step_seconds_count", step="container-start") == 1
        agent_steps = [
            labels
            for (name, labels), n in ready.items()
            if name == "zlh_provision_step_seconds_count"
            and n
            and ("step", "container-start") not in labels
        ]
        assert agent_steps, "no agent step was timed"
        assert value(ready, "zlh_poll_cycle_seconds_count") > 0
        assert value(ready, "zlh_poller_share_containers") >= 1  # one node polls every one
        assert value(ready, "zlh_replicas_live") == 0  # SQLite: no membership
        # The backend's figures are at most 5 s old (zlh.api.usage): this one comes soon.
        memory = backend.usage_of.memory_bytes
        wait_for(
            lambda: (
                value(scrape(client, root), "zlh_container_memory_bytes", vmid=str(vmid)) == memory
            ),
            timeout_s=15,
            what="the container's memory figure",
        )
        assert value(scrape(client, root), "zlh_container_cpu_seconds_total", vmid=str(vmid)) == 1.5

        assert client.post(f"/api/dev/{vmid}/stop", headers=alice).status_code == 202
        wait_for(
            lambda: (
                value(scrape(client, root), "zlh_containers", state="stopped", runtime="node") == 1
            ),
            what="the stopped count",
        )
        stopped = scrape(client, root)
        assert value(stopped, "zlh_containers", state="ready", runtime="node") == 0
        # Figures of a stopped container go once the cache (max 5 s) is refreshed.
        wait_for(
            lambda: (
                ("zlh_container_memory_bytes", frozenset({("vmid", str(vmid))}))
                not in scrape(client, root)
            ),
            timeout_s=15,
            what="the stopped container's figures to go",
        )


def test_no_label_carries_names_a_user_chose(tmp_path: Path) -> None:
    with platform(tmp_path) as (_, client, root):
        alice = login(client, "alice")
        body = {"runtime": "node", "name": "Secret-Project-7f3a"}
        created = client.post("/api/dev", json=body, headers=alice)
        assert created.status_code == 202, created.text
        vmid = created.json()["vmid"]
        assert sse_events(client, f"/api/dev/{vmid}/events", alice)[-1]["state"] == "ready"
        bad = {"username": "Mallory-<script>", "password": "x"}
        assert client.post("/api/auth/login", json=bad).status_code == 401
        text = client.get("/metrics", headers=root).text
        samples = scrape(client, root)
    for needle in ("Secret-Project-7f3a", "alice", "Mallory"):
        assert needle not in text
    allowed = {"state", "runtime", "step", "route", "artifact", "vmid", "le"}
    for _, labels in samples:
        assert {key for key, _ in labels} <= allowed, labels
        assert all(v.isdigit() for k, v in labels if k == "vmid"), labels


def test_each_app_has_a_registry_of_its_own(tmp_path: Path) -> None:
    with (
        platform(tmp_path / "one") as (_, one, one_root),
        platform(tmp_path / "two") as (_, two, two_root),
    ):
        wrong = {"username": "alice", "password": "not it"}
        assert one.post("/api/auth/login", json=wrong).status_code == 401
        assert value(scrape(one, one_root), "zlh_login_failures_total") == 1
        assert value(scrape(two, two_root), "zlh_login_failures_total") == 0


def test_the_metrics_address_is_off_unless_set_and_checked_when_set(tmp_path: Path) -> None:
    assert ApiSettings(data_dir=tmp_path).metrics_listen is None
    assert ApiSettings(data_dir=tmp_path, metrics_listen="10.0.0.5:9101").metrics_listen
    with pytest.raises(ValidationError, match="metrics_listen"):
        ApiSettings(data_dir=tmp_path, metrics_listen="nowhere")
