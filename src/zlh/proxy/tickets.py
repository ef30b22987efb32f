"""One-time tickets that carry a portal login over to the IDE origin, and the IDE cookie.

The portal's session cookie never reaches the IDE origin's checks (it is a different origin,
or, on a second port, the front refuses it there), so the browser crosses with a ticket: the
API mints it (``GET /api/dev/{vmid}/ide-url``, owner only), the front exchanges it at
``GET /_zlh/auth?ticket=…`` for the IDE cookie. Both are HS256 JWTs signed with the platform's
key, told apart from session tokens and from each other by ``aud``:

* ticket, ``aud`` :data:`TICKET_AUDIENCE`: ``sub``, ``sid`` (the portal session that minted it),
  ``vmid``, ``admin``, ``jti``, ``exp`` at most :data:`TICKET_TTL_S` ahead, ``sexp`` and
  ``siat`` (the session's own expiry and issue time). Single use: :class:`TicketDesk` keeps the
  ``jti`` of every ticket it took until the ticket would have expired anyway.
* IDE cookie, ``aud`` :data:`COOKIE_AUDIENCE`: ``sub``, ``sid``, ``vmid``, ``admin``, ``iat`` and
  ``exp`` of the portal session. Carrying the session's ``sid`` and ``iat`` makes every revocation
  of that session (logout, password change, user disabled) reach the IDE cookie through the
  route table as it is, and its open WebSockets close with it.

PyJWT refuses a token that has an ``aud`` when the decoder expects none, so neither is ever
accepted as a session by the API or the portal's side of the front, and a session token (no
``aud``) is never accepted where an audience is required.
"""

from __future__ import annotations

import hashlib
import os
import secrets
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Final

import jwt

from zlh.proxy.auth import ALGORITHM, TICKET_CLAIMS, JwtAuthenticator, verify_jwt

__all__ = [
    "AUTH_PATH",
    "COOKIE_AUDIENCE",
    "IDE_COOKIE",
    "TICKET_AUDIENCE",
    "TICKET_TTL_S",
    "Ticket",
    "TicketDesk",
    "mint_ticket",
]

AUTH_PATH: Final = "/_zlh/auth"  # where the IDE origin takes tickets
IDE_COOKIE: Final = "zlh_ide"
TICKET_AUDIENCE: Final = "zlh-ide-ticket"
COOKIE_AUDIENCE: Final = "zlh-ide"
TICKET_TTL_S: Final = 60
_PRUNE_EVERY_S: Final = 30.0


def mint_ticket(
    key: bytes,
    *,
    user_id: str,
    sid: str,
    vmid: int,
    admin: bool,
    session_issued_at: float,
    session_expires_at: float,
    issuer: str | None = None,
    now: float | None = None,
) -> str:
    """A ticket for ``vmid``, valid :data:`TICKET_TTL_S` (less if the session ends sooner)."""
    now = time.time() if now is None else now
    claims: dict[str, Any] = {
        "aud": TICKET_AUDIENCE,
        "sub": user_id,
        "sid": sid,
        "vmid": vmid,
        "admin": admin,
        "jti": secrets.token_urlsafe(16),
        "iat": int(now),
        "exp": int(min(now + TICKET_TTL_S, session_expires_at)),
        "siat": int(session_issued_at),
        "sexp": int(session_expires_at),
    }
    if issuer is not None:
        claims["iss"] = issuer
    return jwt.encode(claims, key, algorithm=ALGORITHM)


@dataclass(frozen=True, slots=True)
class Ticket:
    user_id: str
    sid: str
    vmid: int
    admin: bool
    session_issued_at: float
    session_expires_at: float


class TicketDesk:
    """The front's side: takes each ticket once, writes IDE cookies, verifies them.

    ``clock`` (epoch seconds) decides ticket expiry and how long used ``jti`` are kept; tests
    move it instead of sleeping. ``ledger``: a private directory that front workers in several
    processes share, so that a ticket is taken once among all of them (a file per used
    ticket, created with ``O_EXCL``, named after its expiry and removed after it).
    """

    def __init__(
        self,
        key: bytes,
        *,
        issuer: str | None = None,
        clock: Callable[[], float] = time.time,
        ledger: Path | None = None,
    ) -> None:
        self._key = key
        self._ledger = ledger
        self._issuer = issuer
        self._clock = clock
        self._used: dict[str, float] = {}  # jti -> the ticket's exp
        self._next_prune = 0.0
        self.authenticator = JwtAuthenticator(key, issuer=issuer, audience=COOKIE_AUDIENCE)

    def redeem(self, token: str) -> Ticket | None:
        """The ticket ``token`` proves, once; None when it is forged, expired or was used."""
        try:
            claims = verify_jwt(
                token,
                self._key,
                claims=TICKET_CLAIMS,
                issuer=self._issuer,
                audience=TICKET_AUDIENCE,
                verify_exp=False,  # checked below against self._clock
            )
        except jwt.PyJWTError:
            return None
        now = self._clock()
        self._prune(now)
        exp, jti, vmid = claims["exp"], claims["jti"], claims["vmid"]
        admin = claims.get("admin", False)
        if (
            not isinstance(exp, int)
            or exp <= now
            or not isinstance(jti, str)
            or jti in self._used
            or not isinstance(vmid, int)
            or vmid <= 0
            or not isinstance(admin, bool)
        ):
            return None
        self._used[jti] = float(exp)
        if self._ledger is not None and not _claim(self._ledger, jti, exp):
            return None
        return Ticket(
            user_id=str(claims["sub"]),
            sid=str(claims["sid"]),
            vmid=vmid,
            admin=admin,
            session_issued_at=float(claims["siat"]),
            session_expires_at=float(claims["sexp"]),
        )

    def cookie_value(self, ticket: Ticket) -> tuple[str, int]:
        """The IDE cookie for ``ticket`` and its Max-Age (what is left of the session)."""
        claims: dict[str, Any] = {
            "aud": COOKIE_AUDIENCE,
            "sub": ticket.user_id,
            "sid": ticket.sid,
            "vmid": ticket.vmid,
            "admin": ticket.admin,
            "iat": int(ticket.session_issued_at),
            "exp": int(ticket.session_expires_at),
        }
        if self._issuer is not None:
            claims["iss"] = self._issuer
        max_age = max(0, int(ticket.session_expires_at - self._clock()))
        return jwt.encode(claims, self._key, algorithm=ALGORITHM), max_age

    def _prune(self, now: float) -> None:
        if now < self._next_prune:
            return
        self._next_prune = now + _PRUNE_EVERY_S
        for jti in [j for j, exp in self._used.items() if exp <= now]:
            del self._used[jti]
        if self._ledger is not None:
            with os.scandir(self._ledger) as entries:
                for entry in entries:
                    exp, _, _ = entry.name.partition("-")
                    if exp.isdigit() and int(exp) <= now:
                        Path(entry.path).unlink(missing_ok=True)


def _claim(ledger: Path, jti: str, exp: int) -> bool:
    """Mark ``jti`` used in ``ledger``; False when another process did first."""
    name = f"{exp}-{hashlib.sha256(jti.encode()).hexdigest()[:32]}"
    try:
        os.close(os.open(ledger / name, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o600))
    except FileExistsError:
        return False
    return True
