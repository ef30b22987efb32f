"""``/api/health``: open to anyone, ok while the database answers, 503 naming it when not."""

from __future__ import annotations

import dataclasses
from pathlib import Path

from agent_sim import SimBackend
from api_kit import make_app, running, services
from zlh.api.db import Database


def test_health_is_ok_without_a_session_while_the_database_answers(tmp_path: Path) -> None:
    with running(make_app(tmp_path, SimBackend())) as client:
        answer = client.get("/api/health")
    assert answer.status_code == 200
    assert answer.json() == {"service": "zlh", "status": "ok", "database": "ok"}


def test_health_is_503_naming_the_database_when_it_does_not_answer(tmp_path: Path) -> None:
    app = make_app(tmp_path, SimBackend())
    with running(app) as client:
        svc = services(app)
        # A PostgreSQL URL where nothing listens: the real driver fails to connect.
        gone = Database("postgresql+psycopg://zlh@127.0.0.1:1/zlh?connect_timeout=2")
        app.state.services = dataclasses.replace(svc, db=gone)
        answer = client.get("/api/health")
        app.state.services = svc
    assert answer.status_code == 503
    body = answer.json()
    assert body["status"] == "failing" and body["service"] == "zlh"
    assert body["database"].startswith("OperationalError")
