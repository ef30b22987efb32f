"""Every PromQL expression of the Grafana dashboard in deploy/ names metrics that a platform's
``/metrics`` really exposes (the ``zlh up`` set: API, built-in store and front)."""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

from prometheus_client.parser import text_string_to_metric_families

from agent_sim import SimBackend
from api_kit import FAST, write_catalog
from zlh.api.app import create_app
from zlh.api.catalog import StoreCatalog
from zlh.api.metrics import FrontCollector, Metrics
from zlh.api.settings import ApiSettings
from zlh.artifacts.server import ArtifactServer
from zlh.proxy import Front, JwtAuthenticator, ProxySettings, RouteTable

DASHBOARD = Path(__file__).resolve().parents[2] / "deploy" / "grafana" / "zlh-dashboard.json"
# Sample names a family of each type exposes (the text format's suffixes).
SUFFIXES = {
    "counter": ("_total",),
    "histogram": ("_bucket", "_sum", "_count"),
    "gauge": ("",),
}


def expressions(node: Any) -> list[str]:
    if isinstance(node, dict):
        found = [node["expr"]] if isinstance(node.get("expr"), str) else []
        return found + [e for value in node.values() for e in expressions(value)]
    if isinstance(node, list):
        return [e for item in node for e in expressions(item)]
    return []


def exposed(tmp_path: Path) -> set[str]:
    store = tmp_path / "artifacts"
    write_catalog(store)
    app = create_app(
        ApiSettings(data_dir=tmp_path, **FAST),
        SimBackend(),
        catalog=StoreCatalog(store),
        artifact_base_url="http://127.0.0.1:9/artifacts",
        store_app=ArtifactServer(store),
    )
    metrics: Metrics = app.state.services.metrics
    front = Front(ProxySettings(), RouteTable(), JwtAuthenticator(b"k" * 32), "127.0.0.1:9")
    metrics.register(FrontCollector(front))
    names = set()
    for family in text_string_to_metric_families(metrics.render().decode()):
        if family.name.endswith("_created"):
            continue  # prometheus_client's creation times of counters and histograms
        names |= {family.name + suffix for suffix in SUFFIXES[family.type]}
    return names


def test_every_dashboard_expression_names_exposed_metrics(tmp_path: Path) -> None:
    dashboard = json.loads(DASHBOARD.read_text())
    found = expressions(dashboard["panels"])
    assert len(found) >= 15
    names = exposed(tmp_path)
    used = set()
    for expr in found:
        referenced = set(re.findall(r"\bzlh_[a-z_]+\b", expr))
        assert referenced, f"no zlh metric in {expr!r}"
        assert referenced <= names, f"{expr!r} names {referenced - names}, not exposed"
        used |= referenced
    # The dashboard shows every family at least once.
    families = {re.sub(r"_(total|bucket|sum|count)$", "", name) for name in names}
    shown = {re.sub(r"_(total|bucket|sum|count)$", "", name) for name in used}
    assert families <= shown, f"not on the dashboard: {families - shown}"


def test_a_misspelt_expression_would_be_caught(tmp_path: Path) -> None:
    names = exposed(tmp_path)
    assert "zlh_front_request_total" not in names  # the real one is zlh_front_requests_total
    assert "zlh_containers_total" not in names  # a gauge has no _total
    assert {"zlh_front_requests_total", "zlh_containers", "zlh_poll_cycle_seconds_bucket"} <= names
