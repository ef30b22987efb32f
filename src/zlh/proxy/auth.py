"""Who is calling: a session token in, a :class:`Principal` (or nobody) out.

The front finds the token (the portal's session cookie, else ``Authorization: Bearer``) and asks
an :class:`Authenticator`. :class:`JwtAuthenticator` is the platform's: HS256 only (the
algorithm is pinned, so ``alg: none`` and key-confusion tokens fail), ``exp``, ``sub`` and
``sid`` required. Verified tokens are cached (LRU, bounded) until they expire, so the hot path is
one dict lookup; revocation is checked by the front on every request against the route table,
never cached.

Claims the API must put in its tokens: ``sub`` (user id, string), ``sid`` (session id, string),
``exp``, ``iat`` (used by ``RouteTable.revoke_user``), ``iss`` when an ``issuer`` is
configured, and ``admin: true`` for admins (without it an admin is an ordinary user here).

With an ``audience`` the authenticator takes only tokens made for it, which must name the one
container they open (``vmid``): the IDE cookie (``zlh.proxy.tickets``). Without one, a token
carrying any ``aud`` is refused, so IDE cookies and tickets never pass as sessions.
"""

from __future__ import annotations

import time
from collections import OrderedDict
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, Final, Protocol

import jwt

__all__ = [
    "Authenticator",
    "JwtAuthenticator",
    "Principal",
    "SessionCookieSplitter",
    "bearer_token",
    "split_session_cookie",
    "verify_jwt",
]

ALGORITHM: Final = "HS256"  # the only one signed or accepted: no `none`, no key confusion
# The claims each kind of platform token must carry (the API issues sessions; the front's
# ticket desk issues tickets and IDE cookies, zlh.proxy.tickets).
SESSION_CLAIMS: Final = ("exp", "iat", "sub", "sid")
IDE_COOKIE_CLAIMS: Final = (*SESSION_CLAIMS, "vmid")
TICKET_CLAIMS: Final = ("exp", "sub", "sid", "vmid", "jti", "siat", "sexp")


def verify_jwt(
    token: bytes | str,
    key: bytes | str,
    *,
    claims: Sequence[str],
    issuer: str | None = None,
    audience: str | None = None,
    verify_exp: bool = True,
) -> dict[str, Any]:
    """The platform's one check of its JWTs: HS256 signature, ``claims`` present, ``issuer``
    and ``audience`` when given (a token with an ``aud`` fails where none is expected), and
    expiry unless the caller checks it against a clock of its own. Raises ``jwt.PyJWTError``."""
    return jwt.decode(
        token,
        key,
        algorithms=[ALGORITHM],
        issuer=issuer,
        audience=audience,
        options={"require": list(claims), "verify_exp": verify_exp},
    )


@dataclass(frozen=True, slots=True)
class Principal:
    user_id: str
    sid: str
    is_admin: bool
    expires_at: float
    issued_at: float = 0.0
    vmid: int = 0  # the one container an IDE cookie opens; 0: a session, not bound to one
    # A signed-out visitor of container ``vmid``'s public preview on this port (no user, no
    # session): what the route table closes when the owner makes the preview private again.
    public_port: int = 0


class Authenticator(Protocol):
    def authenticate(self, token: bytes) -> Principal | None:
        """The principal ``token`` proves, or None (bad signature, expired, malformed).

        Called on the event loop for every request: it must not block. Revocation is not its
        job (the front checks the route table after it)."""


def split_session_cookie(
    cookie_name: bytes, cookies: Sequence[bytes], drop: tuple[bytes, ...] = ()
) -> tuple[bytes, tuple[bytes, ...]]:
    """The session cookie's value (b"" if absent) and the Cookie headers without it nor the
    cookies named in ``drop`` (a header left empty is dropped; every other cookie is kept as
    sent)."""
    prefix = cookie_name + b"="
    dropped = tuple(name + b"=" for name in drop)
    token = b""
    others: list[bytes] = []
    for header in cookies:
        if prefix not in header and not any(d in header for d in dropped):
            others.append(header)
            continue
        kept = []
        for part in header.split(b";"):
            part = part.strip()
            if part.startswith(prefix):
                token = token or part[len(prefix) :].strip(b'"')
            elif part and not part.startswith(dropped):
                kept.append(part)
        if kept:
            others.append(b"; ".join(kept))
    return token, tuple(others)


class SessionCookieSplitter:
    """:func:`split_session_cookie` for one cookie name, remembering recent Cookie headers.

    A browser sends the same Cookie header with every request of a page load, and splitting it
    is a measurable share of a small proxied GET; the answer depends on the header alone. The
    memory is bounded (cleared when full), like the JWT cache that holds the same tokens.
    """

    __slots__ = ("_cache", "_drop", "_limit", "_name")

    def __init__(self, cookie_name: bytes, limit: int = 4096, drop: tuple[bytes, ...] = ()) -> None:
        self._name = cookie_name
        self._drop = drop
        self._limit = limit
        self._cache: dict[bytes, tuple[bytes, tuple[bytes, ...]]] = {}

    def split(self, cookies: Sequence[bytes]) -> tuple[bytes, tuple[bytes, ...]]:
        if len(cookies) != 1:
            return split_session_cookie(self._name, cookies, self._drop)
        header = cookies[0]
        found = self._cache.get(header)
        if found is None:
            if len(self._cache) >= self._limit:
                self._cache.clear()
            found = self._cache[header] = split_session_cookie(self._name, cookies, self._drop)
        return found


def bearer_token(authorization: bytes | None) -> bytes:
    """The token of ``Authorization: Bearer <token>``, else b""."""
    if authorization is None:
        return b""
    scheme, _, token = authorization.strip().partition(b" ")
    return token.strip() if scheme.lower() == b"bearer" else b""


class JwtAuthenticator:
    def __init__(
        self,
        key: bytes | str,
        *,
        issuer: str | None = None,
        audience: str | None = None,
        cache_size: int = 4096,
    ) -> None:
        if len(key) < 32:
            raise ValueError("the JWT signing key must be at least 32 bytes for HS256")
        if cache_size < 1:
            raise ValueError(f"cache_size must be >= 1, got {cache_size}")
        self._key = key
        self._issuer = issuer
        self._audience = audience
        self._claims = IDE_COOKIE_CLAIMS if audience else SESSION_CLAIMS
        self._cache: OrderedDict[bytes, Principal] = OrderedDict()
        self._cache_size = cache_size

    def authenticate(self, token: bytes) -> Principal | None:
        cached = self._cache.get(token)
        if cached is not None:
            if cached.expires_at > time.time():
                self._cache.move_to_end(token)
                return cached
            del self._cache[token]
            return None
        principal = self._verify(token)
        if principal is not None:
            self._cache[token] = principal
            if len(self._cache) > self._cache_size:
                self._cache.popitem(last=False)
        return principal

    def _verify(self, token: bytes) -> Principal | None:
        try:
            claims = verify_jwt(
                token, self._key, claims=self._claims, issuer=self._issuer, audience=self._audience
            )
        except jwt.PyJWTError:
            return None
        sid, admin, iat = claims["sid"], claims.get("admin", False), claims.get("iat", 0)
        vmid = claims.get("vmid", 0)
        if (
            not isinstance(sid, str)
            or not sid
            or not isinstance(admin, bool)
            or not isinstance(vmid, int)
            or (self._audience is not None and vmid <= 0)
        ):
            return None
        return Principal(
            user_id=claims["sub"],
            sid=sid,
            is_admin=admin,
            expires_at=float(claims["exp"]),
            issued_at=float(iat),
            vmid=vmid if self._audience is not None else 0,
        )
