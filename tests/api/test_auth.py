"""Sessions: login, cookie and Bearer, and every way a token must stop working (401)."""

from __future__ import annotations

import base64
import json
import time
from pathlib import Path

import httpx
import jwt
from fastapi import FastAPI

from agent_sim import SimBackend
from api_kit import PASSWORD, add_user, login, make_app, running, services
from zlh.api import accounts
from zlh.api.ratelimit import LoginThrottle
from zlh.api.settings import ApiSettings

ATTACKER = "203.0.113.66"


def _b64(data: dict[str, object]) -> str:
    return base64.urlsafe_b64encode(json.dumps(data).encode()).rstrip(b"=").decode()


def test_login_sets_a_strict_httponly_cookie_that_authenticates(tmp_path: Path) -> None:
    app = make_app(tmp_path, SimBackend())
    add_user(app, "alice")
    with running(app) as client:
        response = client.post("/api/auth/login", json={"username": "alice", "password": PASSWORD})
        assert response.status_code == 200
        cookie = response.headers["set-cookie"]
        assert cookie.startswith("zlh_session=")  # plain http: no __Host- prefix, no Secure
        for attribute in ("HttpOnly", "SameSite=strict", "Path=/"):
            assert attribute.lower() in cookie.lower()
        assert "secure" not in cookie.lower() and "domain" not in cookie.lower()
        assert client.get("/api/auth/me").json()["username"] == "alice"
        client.cookies.clear()
        assert client.get("/api/auth/me").status_code == 401


def test_over_https_the_cookie_is_host_prefixed_and_secure_and_the_front_reads_that_name(
    tmp_path: Path,
) -> None:
    app = make_app(tmp_path, SimBackend(), front={"public_origin": "https://zlh.example.com"})
    add_user(app, "alice")
    settings = services(app).settings
    assert settings.session_cookie_name == "__Host-zlh_session"
    assert settings.front_settings.session_cookie == "__Host-zlh_session"  # what `zlh up` runs
    with running(app) as client:
        response = client.post("/api/auth/login", json={"username": "alice", "password": PASSWORD})
        cookie = response.headers["set-cookie"]
        assert cookie.startswith("__Host-zlh_session=")
        for attribute in ("Secure", "HttpOnly", "SameSite=strict", "Path=/"):
            assert attribute.lower() in cookie.lower()
        assert "domain" not in cookie.lower()
        token = response.json()["token"]
        as_cookie = {"Cookie": f"__Host-zlh_session={token}"}
        assert client.get("/api/auth/me", headers=as_cookie).status_code == 200
        plain = client.get("/api/auth/me", headers={"Cookie": f"zlh_session={token}"})
        assert plain.status_code == 401  # the unprefixed name means nothing here


def test_the_cookie_name_follows_cookie_secure_and_cookie_name_everywhere(tmp_path: Path) -> None:
    cases = [
        ({}, "zlh_session"),
        ({"front": {"public_origin": "http://zlh.lan:8780"}}, "zlh_session"),
        ({"cookie_secure": True}, "__Host-zlh_session"),
        ({"front": {"public_origin": "https://a.example"}, "cookie_secure": False}, "zlh_session"),
        ({"cookie_name": "sid", "front": {"public_origin": "https://a.example"}}, "__Host-sid"),
    ]
    for overrides, name in cases:
        settings = ApiSettings(data_dir=tmp_path, **overrides)
        assert (settings.session_cookie_name, settings.front_settings.session_cookie) == (
            name,
            name,
        ), overrides


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


def _throttled_app(tmp_path: Path, **overrides: object) -> tuple[FastAPI, list[float]]:
    """An app whose login throttle runs on a clock the test moves; the API's own peer
    (loopback) is a trusted proxy, so X-Forwarded-For names the client."""
    app = make_app(tmp_path, SimBackend(), trusted_proxies=["127.0.0.1"], **overrides)
    now = [1000.0]
    settings = services(app).settings
    services(app).login_throttle = LoginThrottle(
        free_per_user_address=settings.login_free_failures,
        free_per_address=settings.login_failures_per_address,
        base_s=settings.login_backoff_base_s,
        max_s=settings.login_backoff_max_s,
        forget_s=settings.login_window_s,
        clock=lambda: now[0],
    )
    return app, now


def _login(client: httpx.Client, name: str, password: str, address: str) -> httpx.Response:
    body = {"username": name, "password": password}
    return client.post("/api/auth/login", json=body, headers={"X-Forwarded-For": address})


def test_fifty_wrong_passwords_from_one_address_do_not_stop_alice_elsewhere(
    tmp_path: Path,
) -> None:
    app, _now = _throttled_app(tmp_path, login_free_failures=3)
    add_user(app, "alice")
    with running(app) as client:
        codes = [_login(client, "alice", "guess", ATTACKER).status_code for _ in range(50)]
        assert codes.count(401) == 3 and codes.count(429) == 47  # the clock never moved
        assert codes[:3] == [401, 401, 401]
        refused = _login(client, "alice", PASSWORD, ATTACKER)
        assert refused.status_code == 429  # not even the right password is checked there
        assert int(refused.headers["retry-after"]) >= 1
        assert "too many failed logins" in refused.json()["message"]
        assert _login(client, "alice", PASSWORD, "198.51.100.20").status_code == 200
        failed = [e for e in services(app).audit.entries() if e.action == "login-failed"]
        assert len(failed) == 3  # refused attempts are not password checks
        assert {(e.actor, e.address) for e in failed} == {("alice", ATTACKER)}


def test_each_further_failure_doubles_the_wait_up_to_the_cap(tmp_path: Path) -> None:
    app, now = _throttled_app(
        tmp_path, login_free_failures=2, login_backoff_base_s=1.0, login_backoff_max_s=16.0
    )
    add_user(app, "alice")
    with running(app) as client:
        waits = []
        for _ in range(16):
            response = _login(client, "alice", "guess", ATTACKER)
            if response.status_code == 429:
                wait = int(response.headers["retry-after"])
                waits.append(wait)
                now[0] += wait  # the attacker waits exactly as told, then guesses again
        # Two free failures, then 1 s, doubling per failure, capped at 16 s.
        assert waits == [1, 2, 4, 8, 16, 16, 16]


def test_an_address_guessing_many_user_names_backs_off_for_all_of_them(tmp_path: Path) -> None:
    app, _now = _throttled_app(tmp_path, login_free_failures=3, login_failures_per_address=5)
    add_user(app, "alice")
    add_user(app, "bob")
    with running(app) as client:
        codes = [_login(client, f"user{n}", "guess", ATTACKER).status_code for n in range(6)]
        assert codes == [401] * 5 + [429]
        assert _login(client, "bob", PASSWORD, ATTACKER).status_code == 429
        assert _login(client, "bob", PASSWORD, "198.51.100.20").status_code == 200


def test_forwarded_for_is_ignored_unless_the_peer_is_a_trusted_proxy(tmp_path: Path) -> None:
    app = make_app(tmp_path, SimBackend(), login_free_failures=1)
    add_user(app, "alice")
    with running(app) as client:
        # The attacker cannot escape its back-off by claiming other addresses.
        codes = [
            _login(client, "alice", "guess", f"203.0.113.{n}").status_code for n in range(1, 4)
        ]
        assert codes == [401, 429, 429]
        failed = [e for e in services(app).audit.entries() if e.action == "login-failed"]
        assert [e.address for e in failed] == ["127.0.0.1"]
