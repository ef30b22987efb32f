"""Sessions follow password and role changes: old sessions get 401, at the API and the front."""

from __future__ import annotations

from pathlib import Path

import jwt

from agent_sim import SimBackend
from api_kit import PASSWORD, add_user, login, make_app, running, services, wait_for
from zlh.api import accounts
from zlh.api.db import User

NEW = "a much better password"


def _sid(session: dict[str, str]) -> str:
    token = session["Authorization"].split()[1]
    return str(jwt.decode(token, options={"verify_signature": False})["sid"])


def test_changing_the_password_ends_the_other_sessions_and_keeps_this_one(tmp_path: Path) -> None:
    app = make_app(tmp_path, SimBackend())
    add_user(app, "alice")
    add_user(app, "bob")
    with running(app) as client:
        old, current, bob = login(client, "alice"), login(client, "alice"), login(client, "bob")
        change = {"current": PASSWORD, "new": NEW}
        assert client.post("/api/auth/password", json=change, headers=current).status_code == 204
        assert client.get("/api/dev", headers=old).status_code == 401
        assert client.get("/api/dev", headers=current).status_code == 200
        assert client.get("/api/dev", headers=bob).status_code == 200  # nobody else's
        revoked = services(app).feed.snapshot().revoked_sessions
        assert _sid(old) in revoked and _sid(current) not in revoked  # the front refuses it too
        relogin = client.post("/api/auth/login", json={"username": "alice", "password": NEW})
        assert relogin.status_code == 200
        actions = [(e.actor, e.action) for e in services(app).audit.entries(actor="alice")]
        assert ("alice", "password") in actions


def test_a_wrong_current_password_is_403_and_a_weak_new_one_422(tmp_path: Path) -> None:
    app = make_app(tmp_path, SimBackend())
    add_user(app, "alice")
    with running(app) as client:
        other, session = login(client, "alice"), login(client, "alice")
        wrong = client.post(
            "/api/auth/password", json={"current": "not it", "new": NEW}, headers=session
        )
        assert wrong.status_code == 403
        assert wrong.json()["message"] == "the current password is wrong"
        for new in ("", "short"):
            weak = client.post(
                "/api/auth/password", json={"current": PASSWORD, "new": new}, headers=session
            )
            assert weak.status_code == 422
            assert [v["field"] for v in weak.json()["validations"]] == ["new"]
        assert client.get("/api/dev", headers=other).status_code == 200  # nothing changed
        signed_out = client.post("/api/auth/password", json={"current": PASSWORD, "new": NEW})
        assert signed_out.status_code == 401


def test_wrong_current_passwords_back_off_like_failed_logins(tmp_path: Path) -> None:
    app = make_app(tmp_path, SimBackend(), login_free_failures=2)
    add_user(app, "alice")
    with running(app) as client:
        session = login(client, "alice")
        guess = {"current": "guess", "new": NEW}
        codes = [
            client.post("/api/auth/password", json=guess, headers=session).status_code
            for _ in range(4)
        ]
        assert codes == [403, 403, 429, 429]


def test_an_operators_reset_or_role_change_ends_sessions_and_reaches_the_front(
    tmp_path: Path,
) -> None:
    app = make_app(tmp_path, SimBackend())
    add_user(app, "alice")
    add_user(app, "root", admin=True)
    svc = services(app)
    with running(app) as client:
        alice, root = login(client, "alice"), login(client, "root")
        accounts.set_password(svc.db, "alice", NEW)  # as `zlh user passwd`, another process
        accounts.set_admin(svc.db, "root", False)  # as `zlh user admin --remove`
        for session in (alice, root):
            assert client.get("/api/dev", headers=session).status_code == 401
            wait_for(
                lambda s=session: _sid(s) in svc.feed.snapshot().revoked_sessions,
                what="the revocation to reach the route feed",
            )


def test_the_role_comes_from_the_database_on_every_request(tmp_path: Path) -> None:
    app = make_app(tmp_path, SimBackend())
    add_user(app, "root", admin=True)
    with running(app) as client:
        root = login(client, "root")
        assert client.get("/api/audit", headers=root).status_code == 200
        with services(app).db.session() as session:  # behind the API's back: no revocation
            user = session.query(User).filter_by(username="root").one()
            user.is_admin = False
        refused = client.get("/api/audit", headers=root)
        assert refused.status_code == 403  # the token still says admin; the database does not
