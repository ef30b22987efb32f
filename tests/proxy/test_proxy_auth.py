"""Session tokens: where they are found and what the JWT authenticator accepts."""

from __future__ import annotations

import time

import jwt
import pytest
from proxy_kit import KEY, token

from zlh.proxy.auth import (
    JwtAuthenticator,
    SessionCookieSplitter,
    bearer_token,
    split_session_cookie,
)


def test_session_cookie_is_found_and_split_from_the_other_cookies() -> None:
    cookies = [b"a=1; zlh_session=tok1 ; b=2", b"c=3", b"zlh_session=tok9"]
    assert split_session_cookie(b"zlh_session", cookies) == (b"tok1", (b"a=1; b=2", b"c=3"))
    assert split_session_cookie(b"zlh_session", [b"xzlh_session=no"]) == (
        b"",
        (b"xzlh_session=no",),
    )


def test_the_splitter_answers_as_the_function_does_for_repeated_and_new_headers() -> None:
    splitter = SessionCookieSplitter(b"zlh_session", limit=2)
    headers = [b"zlh_session=t1; a=1", b"b=2", b"zlh_session=t3", b"zlh_session=t1; a=1"]
    for header in headers * 2:  # repeats come from memory, and the bound clears it on the way
        assert splitter.split([header]) == split_session_cookie(b"zlh_session", [header])
    both = [b"zlh_session=t1", b"c=3"]
    assert splitter.split(both) == (b"t1", (b"c=3",))
    assert splitter.split([]) == (b"", ())


def test_bearer_token_is_read_from_authorization() -> None:
    assert bearer_token(b"bearer  tok2 ") == b"tok2"
    assert bearer_token(b"Basic dXNlcjpw") == b""
    assert bearer_token(None) == b""


def test_valid_token_gives_the_principal_with_its_claims() -> None:
    auth = JwtAuthenticator(KEY)
    principal = auth.authenticate(token("u7", sid="s7", admin=True).encode())
    assert principal is not None
    assert (principal.user_id, principal.sid, principal.is_admin) == ("u7", "s7", True)
    assert principal.expires_at > time.time()


@pytest.mark.parametrize(
    "claims",
    [
        {"sub": "u", "sid": "s"},  # no exp
        {"sid": "s", "exp": 4102444800},  # no sub
        {"sub": "u", "sid": "", "exp": 4102444800},  # empty sid
        {"sub": "u", "sid": "s", "exp": 4102444800, "admin": "yes"},  # admin not a bool
    ],
)
def test_tokens_missing_required_claims_are_refused(claims: dict[str, object]) -> None:
    assert JwtAuthenticator(KEY).authenticate(jwt.encode(claims, KEY).encode()) is None


def test_other_algorithms_are_refused_even_with_the_right_key() -> None:
    claims = {"sub": "u", "sid": "s", "exp": 4102444800}
    assert JwtAuthenticator(KEY).authenticate(jwt.encode(claims, KEY, "HS384").encode()) is None


def test_a_cached_token_stops_working_when_it_expires() -> None:
    auth = JwtAuthenticator(KEY)
    short = token("u", ttl_s=2).encode()  # exp is whole seconds: 1..2 s from now
    first = auth.authenticate(short)
    assert first is not None and auth.authenticate(short) is first  # served from the cache
    deadline = first.expires_at + 0.05
    while time.time() < deadline:
        time.sleep(0.05)
    assert auth.authenticate(short) is None


def test_the_cache_stays_within_its_size() -> None:
    auth = JwtAuthenticator(KEY, cache_size=2)
    tokens = [token(f"u{i}").encode() for i in range(3)]
    principals = [auth.authenticate(t) for t in tokens]
    assert auth.authenticate(tokens[0]) is not principals[0]  # evicted, verified again
    assert auth.authenticate(tokens[2]) is principals[2]


def test_short_keys_are_refused() -> None:
    with pytest.raises(ValueError, match="32 bytes"):
        JwtAuthenticator(b"short")


def test_tokens_shaped_like_the_apis_are_accepted_with_its_issuer_only() -> None:
    from zlh.api.auth import ALGORITHM, ISSUER, decode_token

    now = int(time.time())
    claims = {"iss": ISSUER, "sub": "7", "sid": "s7", "iat": now, "exp": now + 60}
    api_token = jwt.encode(claims, KEY, algorithm=ALGORITHM)
    assert decode_token(KEY, api_token).sid == "s7"  # the API itself accepts it
    principal = JwtAuthenticator(KEY, issuer=ISSUER).authenticate(api_token.encode())
    assert principal is not None and (principal.user_id, principal.sid) == ("7", "s7")
    foreign = jwt.encode({**claims, "iss": "someone-else"}, KEY, algorithm=ALGORITHM)
    assert JwtAuthenticator(KEY, issuer=ISSUER).authenticate(foreign.encode()) is None
