"""schemathesis, every check, against /api/openapi.json on a running API with real agents.

The document and the behaviour must agree for people who generate clients from it: no 5xx,
every status and content type documented, a correct ``Allow`` on 405, schema-violating input
refused and schema-valid input accepted. It runs as a customer and as an admin against the
process backend (real agents, a real Node runtime), with a ready container at the vmid the
document gives as its example, so the container routes reach the agent instead of stopping
at 404. Hundreds of examples per operation, bounded by hypothesis' own limits.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
import schemathesis
from hypothesis import HealthCheck, given, settings

from api_kit import FAST, add_user, login, running, sse_events
from zlh.api.app import create_app
from zlh.api.catalog import StoreCatalog
from zlh.api.settings import ApiSettings
from zlh.backends import create_backend
from zlh.schemas.payload import MIN_VMID

pytestmark = pytest.mark.slow

EXAMPLES = 200
# What the run must not do to the state it stands on: end its own session, delete, stop or
# rebuild the container the other operations are pointed at (tests/api/test_lifecycle.py).
SKIPPED = {
    ("POST", "/api/auth/logout"),
    ("DELETE", "/api/dev/{vmid}"),
    ("POST", "/api/dev/{vmid}/stop"),
    ("POST", "/api/dev/{vmid}/restart"),
    ("POST", "/api/dev/{vmid}/rebuild"),
}
# Where a well-formed request can still be refused for what it names, as documented: a dev
# request's runtime, version and add-ons, and a runtime change's, are checked against the
# catalog, which changes while the platform runs (422 naming what it lacks); a workspace path
# is checked by the agent, which refuses hostile or malformed ones (400), missing ones (404),
# clashes (409) and non-empty
# directories (409). A new password equal to the current one is refused (422): a rule between
# two fields that a JSON schema cannot state. An API token's name must be unused among the
# caller's tokens, its expiry within api_token_max_days (a setting), the admin and metrics
# scopes are an admin's (403), every user's tokens (all=true) an admin's view (403), and a
# token id may be unknown or another user's (404). A share names a user, who
# must exist, be enabled and not own the container (422); only an existing share can be taken
# back (404). So are a preview's port and the page to land on (together, on this container's
# previews) and the ports never previewed (the platform's own).
CONFIG = """
[[operations]]
include-path-regex = '^/api/dev/[{]vmid[}]/shares'
checks.positive_data_acceptance.expected-statuses = ["2xx", "401", "403", "404", "409", "422"]

[[operations]]
include-name = "POST /api/dev"
checks.positive_data_acceptance.expected-statuses = ["2xx", "401", "403", "409", "422", "429"]

[[operations]]
include-path-regex = '^/api/dev/[{]vmid[}]/runtimes/'
checks.positive_data_acceptance.expected-statuses = ["2xx", "401", "403", "404", "409", "422"]

[[operations]]
include-name = "PATCH /api/dev/{vmid}"
checks.positive_data_acceptance.expected-statuses = ["2xx", "401", "403", "404", "409", "422"]

[[operations]]
include-name = "POST /api/auth/password"
checks.positive_data_acceptance.expected-statuses = ["2xx", "401", "403", "422", "429"]

[[operations]]
include-path-regex = '^/api/tokens'
checks.positive_data_acceptance.expected-statuses = ["2xx", "401", "403", "404", "422"]

[[operations]]
include-name = "GET /api/dev/{vmid}/ide-url"
checks.positive_data_acceptance.expected-statuses = ["2xx", "401", "403", "404", "409", "422"]

[[operations]]
include-path-regex = '^/api/dev/[{]vmid[}]/previews/'
checks.positive_data_acceptance.expected-statuses = ["2xx", "401", "403", "404", "409", "422"]

[[operations]]
include-path-regex = '^/api/dev/[{]vmid[}]/files'
checks.positive_data_acceptance.expected-statuses = ["2xx", "400", "401", "403", "404", "409"]
"""


@pytest.fixture(scope="module")
def api(
    tmp_path_factory: pytest.TempPathFactory, node_store: Path, node_server: str
) -> Iterator[tuple[str, dict[str, dict[str, str]]]]:
    data_dir = tmp_path_factory.mktemp("openapi")
    app = create_app(
        ApiSettings(data_dir=data_dir, **FAST),
        create_backend("process", data_dir=data_dir),
        catalog=StoreCatalog(node_store),
        artifact_base_url=node_server,
    )
    add_user(app, "root", admin=True)
    add_user(app, "alice")
    with running(app) as client:
        users = {"customer": login(client, "alice"), "admin": login(client, "root")}
        made = client.post("/api/dev", json={"runtime": "node"}, headers=users["customer"])
        assert made.json()["vmid"] == MIN_VMID
        events = sse_events(client, f"/api/dev/{MIN_VMID}/events", users["customer"])
        assert events[-1]["state"] == "ready", events[-1]
        try:
            yield str(client.base_url), users
        finally:  # the process backend's agents outlive the API
            for container in client.get("/api/dev", headers=users["admin"]).json():
                client.delete(f"/api/dev/{container['vmid']}", headers=users["admin"])


@pytest.mark.parametrize("who", ["customer", "admin"])
def test_the_api_does_what_its_openapi_document_says(
    api: tuple[str, dict[str, dict[str, str]]], who: str
) -> None:
    base_url, users = api
    headers = users[who]
    schema = schemathesis.openapi.from_url(
        f"{base_url}/api/openapi.json",
        headers=headers,
        config=schemathesis.config.SchemathesisConfig.from_str(CONFIG),
    )
    checked = []
    for result in schema.get_all_operations():
        operation = result.ok()
        if (operation.method.upper(), operation.path) in SKIPPED:
            continue

        @given(case=operation.as_strategy())
        @settings(
            max_examples=EXAMPLES,
            deadline=None,
            suppress_health_check=list(HealthCheck),
            database=None,
        )
        def agrees(case: schemathesis.Case) -> None:
            response = case.call(base_url=base_url, headers=headers)
            case.validate_response(response)

        agrees()
        checked.append(f"{operation.method.upper()} {operation.path}")
    assert "POST /api/dev" in checked and "GET /api/dev/{vmid}/files" in checked
