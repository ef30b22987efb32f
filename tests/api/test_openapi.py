"""schemathesis against /api/openapi.json on a running API: no input makes it answer 5xx.

Runs as an authenticated user (admin, so the admin-only routes are exercised too) against a
real server with the simulated agents; examples are bounded to keep the run under a minute.
"""

from __future__ import annotations

from collections.abc import Iterator

import pytest
import schemathesis
from agent_sim import SimBackend
from api_kit import add_user, login, make_app, running
from hypothesis import HealthCheck, given, settings
from schemathesis.checks import not_a_server_error


@pytest.fixture(scope="module")
def api(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[str, dict[str, str]]]:
    app = make_app(tmp_path_factory.mktemp("openapi"), SimBackend(), max_containers_per_user=3)
    add_user(app, "root", admin=True)
    with running(app) as client:
        headers = login(client, "root")
        client.post("/api/dev", json={"runtime": "node"}, headers=headers)
        yield str(client.base_url), headers


def test_no_generated_input_gets_a_5xx(api: tuple[str, dict[str, str]]) -> None:
    base_url, headers = api
    schema = schemathesis.openapi.from_url(f"{base_url}/api/openapi.json", headers=headers)
    checked = []
    for result in schema.get_all_operations():
        operation = result.ok()
        if operation.path == "/api/auth/logout":
            continue  # would end the session every other case runs with

        @given(case=operation.as_strategy())
        @settings(
            max_examples=15,
            deadline=None,
            suppress_health_check=list(HealthCheck),
            database=None,
        )
        def no_server_error(case: schemathesis.Case) -> None:
            response = case.call(base_url=base_url, headers=headers)
            case.validate_response(response, checks=[not_a_server_error])

        no_server_error()
        checked.append(f"{operation.method.upper()} {operation.path}")
    assert "POST /api/dev" in checked and "GET /api/dev/{vmid}" in checked
