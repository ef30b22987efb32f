"""Sessions: login, cookie and Bearer, and every way a token must stop working (401)."""

from __future__ import annotations

import base64
import json
import time
from pathlib import Path

import jwt
from agent_sim import SimBackend
from api_kit import PASSWORD, add_user, login, make_app, running, services

from zlh.api import accounts


def _b64(data: dict[str, object]) -> str:
    return base64.urlsafe_b64encode(json.dumps(data).encode()).rstrip(b"=").decode()


def test_login_sets_a_strict_httponly_cookie_that_authenticates(tmp_path: Path) -> None:
    app = make_app(tmp_path, SimBackend())
    add_user(app, "alice")
    with running(app) as client:
        response = client.post("/api/auth/login", json={"username": "alice", "password": PASSWORD})
        assert response.status_code == 200
        cookie = response.headers["set-cookie"]
        for attribute in ("zlh_session=", "HttpOnly", "SameSite=strict", "Path=/"):
            assert attribute.lower() in cookie.lower()
        assert "secure" not in cookie.lower()  # plain http here
        assert client.get("/api/auth/me").json()["username"] == "alice"
        client.cookies.clear()
        assert client.get("/api/auth/me").status_code == 401
        behind_tls = client.post(
            "/api/auth/login",
            json={"username": "alice", "password": PASSWORD},
            headers={"X-Forwarded-Proto": "https"},
        )
        assert "secure" in behind_tls.headers["set-cookie"].lower()


def test_every_bad_token_gets_401_with_the_error_envelope(tmp_path: Path) -> None:
    app = make_app(tmp_path, SimBackend())
    add_user(app, "alice")
    add_user(app, "bob")
    svc = services(app)
    with running(app) as client:
        token = login(client, "alice")["Authorization"].split()[1]
        header, payload, signature = token.split(".")
        claims = jwt.decode(token, options={"verify_signature": False})
        flipped = signature[:-2] + ("AA" if signature[-2:] != "AA" else "BB")
        forged = jwt.encode({**claims, "sub": "2"}, b"x" * 32, algorithm="HS256")
        expired = jwt.encode(
            {**claims, "exp": int(time.time()) - 10}, svc.tokens.key, algorithm="HS256"
        )
        bad = {
            "tampered signature": f"{header}.{payload}.{flipped}",
            "tampered claims": f"{header}.{_b64({**claims, 'sub': '2'})}.{signature}",
            "alg none": f"{_b64({'alg': 'none', 'typ': 'JWT'})}.{_b64(claims)}.",
            "other key": forged,
            "expired": expired,
            "garbage": "not-a-token",
        }
        for name, value in bad.items():
            response = client.get("/api/dev", headers={"Authorization": f"Bearer {value}"})
            assert response.status_code == 401, name
            assert response.json()["message"], name
            assert response.headers["www-authenticate"] == "Bearer"
        assert client.get("/api/dev").status_code == 401  # no token at all


def test_logout_and_disable_revoke_tokens_at_once(tmp_path: Path) -> None:
    app = make_app(tmp_path, SimBackend())
    add_user(app, "alice")
    add_user(app, "bob")
    with running(app) as client:
        alice = login(client, "alice")
        other_alice = login(client, "alice")
        assert client.post("/api/auth/logout", headers=alice).status_code == 204
        assert client.get("/api/dev", headers=alice).status_code == 401
        assert client.get("/api/dev", headers=other_alice).status_code == 200  # own session
        sid = jwt.decode(alice["Authorization"].split()[1], options={"verify_signature": False})
        assert sid["sid"] in services(app).feed.snapshot().revoked_sessions

        bob = login(client, "bob")
        accounts.disable_user(services(app).db, "bob")  # as `zlh user disable` does
        assert client.get("/api/dev", headers=bob).status_code == 401
        failed = client.post("/api/auth/login", json={"username": "bob", "password": PASSWORD})
        assert failed.status_code == 401


def test_failed_logins_are_rate_limited_per_user_and_per_address(tmp_path: Path) -> None:
    app = make_app(tmp_path, SimBackend(), login_failures_per_user=3, login_failures_per_address=5)
    add_user(app, "alice")
    add_user(app, "bob")
    with running(app) as client:
        wrong = {"username": "alice", "password": "wrong password"}
        codes = [client.post("/api/auth/login", json=wrong).status_code for _ in range(4)]
        assert codes == [401, 401, 401, 429]
        limited = client.post("/api/auth/login", json={"username": "alice", "password": PASSWORD})
        assert limited.status_code == 429  # even the right password, while limited
        assert int(limited.headers["retry-after"]) > 0
        # bob is not limited by alice's failures, until the address limit is reached
        good_bob = {"username": "bob", "password": PASSWORD}
        assert client.post("/api/auth/login", json=good_bob).status_code == 200
        bad_bob = {"username": "bob", "password": "wrong password"}
        # alice's 3 counted failures + bob's 2 reach the address limit of 5
        assert [client.post("/api/auth/login", json=bad_bob).status_code for _ in "ab"] == [
            401,
            401,
        ]
        assert client.post("/api/auth/login", json=good_bob).status_code == 429
