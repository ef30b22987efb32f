"""The Headscale client against the in-test Headscale over real HTTP: fields, errors, retries."""

from __future__ import annotations

import asyncio
import os
import socket
from collections.abc import Awaitable, Callable
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import TypeVar

import httpx
import pytest
from headscale_server import HeadscaleServer
from pydantic import SecretStr

from zlh.api.tailnet.headscale import (
    HeadscaleAuthError,
    HeadscaleClient,
    HeadscaleConflict,
    HeadscaleError,
    HeadscaleNotFound,
    HeadscaleRejected,
    HeadscaleSettings,
    HeadscaleUnavailable,
    read_api_key,
)

T = TypeVar("T")


def run(
    server: HeadscaleServer, call: Callable[[HeadscaleClient], Awaitable[T]], **kw: object
) -> T:
    """Run one client call against ``server`` with fast retries."""

    async def go() -> T:
        options: dict[str, object] = {"retry_backoff_s": 0.001, **kw}
        async with HeadscaleClient(server.url, SecretStr(server.api_key), **options) as client:  # type: ignore[arg-type]
            return await call(client)

    return asyncio.run(go())


def in_an_hour() -> datetime:
    return datetime.now(UTC) + timedelta(hours=1)


def test_ensure_user_creates_the_user_once_then_finds_it_by_name(
    headscale: HeadscaleServer,
) -> None:
    first = run(headscale, lambda c: c.ensure_user("zlh-alice"))
    again = run(headscale, lambda c: c.ensure_user("zlh-alice"))
    assert first.id == again.id and first.name == "zlh-alice"
    assert [r.body for r in headscale.calls("POST", "/api/v1/user")] == [{"name": "zlh-alice"}]
    lookups = headscale.calls("GET", "/api/v1/user")
    assert [r.query for r in lookups] == [{"name": "zlh-alice"}] * 2


def test_find_user_ignores_other_users_even_if_the_server_lists_everybody(
    headscale: HeadscaleServer,
) -> None:
    headscale.add_user("zlh-bob")
    assert run(headscale, lambda c: c.find_user("zlh-alice")) is None


def test_preauth_key_is_created_with_the_exact_fields_and_the_numeric_user_id(
    headscale: HeadscaleServer,
) -> None:
    user_id = headscale.add_user("zlh-alice")
    expiration = datetime(2099, 1, 2, 3, 4, 5, tzinfo=UTC)
    key = run(
        headscale,
        lambda c: c.create_preauth_key(user_id, expiration=expiration, acl_tags=["tag:zlh-vm-101"]),
    )
    (call,) = headscale.calls("POST", "/api/v1/preauthkey")
    assert call.body == {
        "user": str(user_id),
        "reusable": False,
        "ephemeral": False,
        "expiration": "2099-01-02T03:04:05Z",
        "aclTags": ["tag:zlh-vm-101"],
    }
    assert call.headers["Authorization"] == f"Bearer {headscale.api_key}"
    stored = headscale.key(key.key.get_secret_value())
    assert (stored.user_id, stored.acl_tags, stored.expiration) == (
        user_id,
        ["tag:zlh-vm-101"],
        expiration,
    )
    assert key.id == stored.id and key.user is not None and key.user.id == user_id
    assert key.key.get_secret_value() not in repr(key)


def test_the_stand_in_refuses_a_user_name_where_headscale_wants_the_id(
    headscale: HeadscaleServer,
) -> None:
    headscale.add_user("zlh-alice")
    answer = httpx.post(
        f"{headscale.url}/api/v1/preauthkey",
        json={"user": "zlh-alice", "expiration": "2099-01-01T00:00:00Z"},
        headers={"Authorization": f"Bearer {headscale.api_key}"},
    )
    assert answer.status_code == 400
    assert answer.json()["code"] == 3 and "uint64 field user" in answer.json()["message"]


def test_key_for_an_unknown_user_is_not_found_and_not_retried(headscale: HeadscaleServer) -> None:
    with pytest.raises(HeadscaleNotFound, match="user not found"):
        run(headscale, lambda c: c.create_preauth_key(999, expiration=in_an_hour()))
    assert len(headscale.calls("POST", "/api/v1/preauthkey")) == 1


def test_expired_key_shows_as_expired_and_keeps_its_fields(headscale: HeadscaleServer) -> None:
    user_id = headscale.add_user("zlh-alice")

    async def create_expire_list(client: HeadscaleClient) -> tuple[SecretStr, list[bool]]:
        key = await client.create_preauth_key(user_id, expiration=in_an_hour())
        assert not key.expired()
        await client.expire_preauth_key(user_id, key.key)
        return key.key, [k.expired() for k in await client.list_preauth_keys(user_id)]

    secret, expired = run(headscale, create_expire_list)
    assert expired == [True]
    (call,) = headscale.calls("POST", "/api/v1/preauthkey/expire")
    assert call.body == {"user": str(user_id), "key": secret.get_secret_value()}


def test_expiring_an_unknown_key_is_not_found(headscale: HeadscaleServer) -> None:
    user_id = headscale.add_user("zlh-alice")
    with pytest.raises(HeadscaleNotFound, match="auth-key not found"):
        run(headscale, lambda c: c.expire_preauth_key(user_id, SecretStr("hskey-auth-nope")))


def test_expiring_another_users_key_is_refused(headscale: HeadscaleServer) -> None:
    alice, bob = headscale.add_user("zlh-alice"), headscale.add_user("zlh-bob")
    key = run(headscale, lambda c: c.create_preauth_key(alice, expiration=in_an_hour()))
    with pytest.raises(HeadscaleRejected, match="does not belong"):
        run(headscale, lambda c: c.expire_preauth_key(bob, key.key))
    assert not headscale.key(key.key.get_secret_value()).expiration < datetime.now(UTC)  # type: ignore[operator]


def test_a_key_that_would_already_be_expired_is_refused_before_any_request(
    headscale: HeadscaleServer,
) -> None:
    past = datetime.now(UTC) - timedelta(seconds=1)
    with pytest.raises(ValueError, match="must expire in the future"):
        run(headscale, lambda c: c.create_preauth_key(1, expiration=past))
    with pytest.raises(ValueError, match="not a Headscale tag"):
        run(headscale, lambda c: c.create_preauth_key(1, expiration=in_an_hour(), acl_tags=["VM"]))
    assert headscale.requests == []


def test_duplicate_user_is_a_conflict(headscale: HeadscaleServer) -> None:
    headscale.add_user("zlh-alice")
    with pytest.raises(HeadscaleConflict, match="UNIQUE constraint"):
        run(headscale, lambda c: c.create_user("zlh-alice"))
    assert len(headscale.calls("POST", "/api/v1/user")) == 1


def test_bad_api_key_is_an_auth_error_and_not_retried(headscale: HeadscaleServer) -> None:
    async def with_wrong_key() -> None:
        async with HeadscaleClient(headscale.url, SecretStr("hs-wrong")) as client:
            await client.find_user("zlh-alice")

    with pytest.raises(HeadscaleAuthError, match="rejected the API key"):
        asyncio.run(with_wrong_key())
    assert len(headscale.requests) == 1


def test_5xx_is_retried_until_it_succeeds(headscale: HeadscaleServer) -> None:
    headscale.fail_next(2, status=503)
    assert run(headscale, lambda c: c.ensure_user("zlh-alice")).name == "zlh-alice"
    assert len(headscale.calls("GET", "/api/v1/user")) == 3


def test_5xx_that_persists_ends_unavailable_after_max_attempts(headscale: HeadscaleServer) -> None:
    headscale.fail_next(10, status=502)
    with pytest.raises(HeadscaleUnavailable, match="502 \\(3 tries\\)"):
        run(headscale, lambda c: c.find_user("zlh-alice"), max_attempts=3)
    assert len(headscale.requests) == 3


def test_dropped_connection_is_retried(headscale: HeadscaleServer) -> None:
    headscale.drop_next(1)
    assert run(headscale, lambda c: c.find_user("zlh-alice")) is None
    assert len(headscale.requests) == 2


@pytest.mark.parametrize(
    ("status", "error"),
    [(400, HeadscaleRejected), (404, HeadscaleNotFound), (409, HeadscaleConflict)],
)
def test_4xx_is_never_retried(
    headscale: HeadscaleServer, status: int, error: type[HeadscaleError]
) -> None:
    headscale.fail_next(1, status=status, body='{"code": 3, "message": "nope", "details": []}')
    with pytest.raises(error, match="nope"):
        run(headscale, lambda c: c.find_user("zlh-alice"))
    assert len(headscale.requests) == 1


def test_nothing_listening_is_unavailable() -> None:
    async def go(url: str) -> None:
        async with HeadscaleClient(url, SecretStr("k"), max_attempts=2, retry_backoff_s=0) as c:
            await c.find_user("x")

    with socket.socket() as bound_not_listening:
        bound_not_listening.bind(("127.0.0.1", 0))
        url = f"http://127.0.0.1:{bound_not_listening.getsockname()[1]}"
        with pytest.raises(HeadscaleUnavailable, match=r"unreachable .*2 tries.*ConnectError"):
            asyncio.run(go(url))


def test_api_key_file_must_be_private_and_hold_one_key(tmp_path: Path) -> None:
    key_file = tmp_path / "headscale.key"
    key_file.write_text("hs-secret\n")
    os.chmod(key_file, 0o600)
    assert read_api_key(key_file).get_secret_value() == "hs-secret"
    os.chmod(key_file, 0o644)
    with pytest.raises(HeadscaleError, match="readable by others"):
        read_api_key(key_file)
    os.chmod(key_file, 0o600)
    key_file.write_text("")
    with pytest.raises(HeadscaleError, match="one key"):
        read_api_key(key_file)
    with pytest.raises(HeadscaleError, match="cannot read"):
        read_api_key(tmp_path / "missing")


def test_settings_name_their_units_and_refuse_non_http_urls() -> None:
    settings = HeadscaleSettings(url="https://hs.example.com/")
    assert settings.url == "https://hs.example.com" and settings.login_server == settings.url
    assert settings.container_key_lifetime_s < settings.customer_key_lifetime_s
    with pytest.raises(ValueError, match="http"):
        HeadscaleSettings(url="hs.example.com")
    with pytest.raises(HeadscaleError, match="not configured"):
        _ = HeadscaleSettings().login_server
