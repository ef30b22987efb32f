"""The API against the shared misbehaving backends (tests/backends/fakes.py): every fault ends
in a clear ``failed`` state or a clean error, never a hang or a half-deleted record."""

from __future__ import annotations

from pathlib import Path

from api_kit import add_user, login, make_app, running, sse_events
from backends.fakes import CrashingBackend, NeverReadyBackend, SlowBackend
from zlh.backends import Backend


def _fails_with(tmp_path: Path, backend: Backend, **settings: float) -> str:
    app = make_app(tmp_path, backend, **settings)
    add_user(app, "alice")
    with running(app) as client:
        alice = login(client, "alice")
        vmid = client.post("/api/dev", json={"runtime": "node"}, headers=alice).json()["vmid"]
        final = sse_events(client, f"/api/dev/{vmid}/events", alice)[-1]
        assert final["state"] == "failed", final
        return str(final["error"])


def test_a_container_that_never_runs_fails_naming_the_wait(tmp_path: Path) -> None:
    error = _fails_with(tmp_path, NeverReadyBackend(), container_start_timeout_s=0.5)
    assert "did not" in error and "0.5s" in error


def test_a_backend_slower_than_the_start_timeout_fails(tmp_path: Path) -> None:
    error = _fails_with(tmp_path, SlowBackend(delay_s=2.0), container_start_timeout_s=0.5)
    assert "did not start within 0.5s" in error


def test_a_start_failure_fails_with_the_backends_message(tmp_path: Path) -> None:
    error = _fails_with(tmp_path, CrashingBackend(fail={"start"}))
    assert "start of container" in error and "injected failure" in error


def test_a_failed_destroy_answers_an_error_and_keeps_the_record(tmp_path: Path) -> None:
    backend = CrashingBackend(fail={"start", "destroy"})
    app = make_app(tmp_path, backend)
    add_user(app, "alice")
    with running(app) as client:
        alice = login(client, "alice")
        vmid = client.post("/api/dev", json={"runtime": "node"}, headers=alice).json()["vmid"]
        sse_events(client, f"/api/dev/{vmid}/events", alice)
        answer = client.delete(f"/api/dev/{vmid}", headers=alice)
        assert answer.status_code == 502
        assert "destroy of container" in answer.json()["message"]
        record = client.get(f"/api/dev/{vmid}", headers=alice).json()
        assert record["state"] == "deleting" and "delete failed" in record["error"]
        backend.fail.discard("destroy")
        assert client.delete(f"/api/dev/{vmid}", headers=alice).status_code == 204
        assert client.get(f"/api/dev/{vmid}", headers=alice).status_code == 404
