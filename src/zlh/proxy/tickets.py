"""One-time tickets that carry a portal login over to the IDE origin, and the IDE cookie.

The portal's session cookie never reaches the IDE origin's checks (it is a different origin,
or, on a second port, the front refuses it there), so the browser crosses with a ticket: the
API mints it (``GET /api/dev/{vmid}/ide-url``, owner only), the front exchanges it at
``GET /_zlh/auth?ticket=…`` for the IDE cookie. Both are HS256 JWTs signed with the platform's
key, told apart from session tokens and from each other by ``aud``:

* ticket, ``aud`` :data:`TICKET_AUDIENCE`: ``sub``, ``sid`` (the portal session that minted it),
  ``vmid``, ``admin``, ``jti``, ``exp`` at most :data:`TICKET_TTL_S` ahead, ``sexp`` and
  ``siat`` (the session's own expiry and issue time). Single use: :class:`TicketDesk` keeps the
  ``jti`` of every ticket it took until the ticket would have expired anyway, and its ledger
  keeps them for every process that takes tickets: :class:`FileLedger` (a directory the front
  workers of one host share), or, when replicas on several hosts share PostgreSQL,
  :class:`~zlh.proxy.ticket_db.DbLedger` (a table all of them share: a stolen ticket is taken
  once on the whole platform, not once per host).
* IDE cookie, ``aud`` :data:`COOKIE_AUDIENCE`: ``sub``, ``sid``, ``vmid``, ``admin``, ``iat`` and
  ``exp`` of the portal session. Carrying the session's ``sid`` and ``iat`` makes every revocation
  of that session (logout, password change, user disabled) reach the IDE cookie through the
  route table as it is, and its open WebSockets close with it.

PyJWT refuses a token that has an ``aud`` when the decoder expects none, so neither is ever
accepted as a session by the API or the portal's side of the front, and a session token (no
``aud``) is never accepted where an audience is required.
"""

from __future__ import annotations

import asyncio
import hashlib
import logging
import os
import secrets
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Final, Protocol

import jwt

from zlh.proxy.auth import ALGORITHM, TICKET_CLAIMS, JwtAuthenticator, verify_jwt

__all__ = [
    "AUTH_PATH",
    "COOKIE_AUDIENCE",
    "IDE_COOKIE",
    "TICKET_AUDIENCE",
    "TICKET_TTL_S",
    "FileLedger",
    "Ledger",
    "Ticket",
    "TicketDesk",
    "mint_ticket",
]

AUTH_PATH: Final = "/_zlh/auth"  # where the IDE origin takes tickets
IDE_COOKIE: Final = "zlh_ide"
TICKET_AUDIENCE: Final = "zlh-ide-ticket"
COOKIE_AUDIENCE: Final = "zlh-ide"
TICKET_TTL_S: Final = 60
PRUNE_EVERY_S: Final = 30.0
# A database that does not answer within this refuses the ticket (the user asks for another).

log = logging.getLogger(__name__)


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
    move it instead of sleeping. ``ledger``: where the processes that take tickets record the
    ones taken, so that a ticket is taken once among all of them; None: this process alone.
    """

    def __init__(
        self,
        key: bytes,
        *,
        issuer: str | None = None,
        clock: Callable[[], float] = time.time,
        ledger: Ledger | None = None,
    ) -> None:
        self._key = key
        self._ledger = ledger
        self._issuer = issuer
        self._clock = clock
        self._used: dict[str, float] = {}  # jti -> the ticket's exp
        self._next_prune = 0.0
        self.authenticator = JwtAuthenticator(key, issuer=issuer, audience=COOKIE_AUDIENCE)

    def redeem(self, token: str) -> Ticket | None:
        """The ticket ``token`` proves, once; None when it is forged, expired or was used.
        Blocks on the ledger: the front calls :meth:`take`."""
        found = self._verified(token)
        if found is None:
            return None
        ticket, jti, exp = found
        if self._ledger is not None and not self._ledger.claim(jti, exp, self._clock()):
            return None
        return ticket

    async def take(self, token: str) -> Ticket | None:
        """:meth:`redeem`, with the ledger's write in a worker thread (off the event loop)."""
        found = self._verified(token)
        if found is None:
            return None
        ticket, jti, exp = found
        if self._ledger is not None and not await asyncio.to_thread(
            self._ledger.claim, jti, exp, self._clock()
        ):
            return None
        return ticket

    def _verified(self, token: str) -> tuple[Ticket, str, int] | None:
        """The ticket, its ``jti`` and expiry, when ``token`` is a good ticket this process has
        not taken before (now marked taken here); None otherwise."""
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
        ticket = Ticket(
            user_id=str(claims["sub"]),
            sid=str(claims["sid"]),
            vmid=vmid,
            admin=admin,
            session_issued_at=float(claims["siat"]),
            session_expires_at=float(claims["sexp"]),
        )
        return ticket, jti, exp

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
        self._next_prune = now + PRUNE_EVERY_S
        for jti in [j for j, exp in self._used.items() if exp <= now]:
            del self._used[jti]


class Ledger(Protocol):
    """The tickets taken, shared by every process that takes them."""

    def claim(self, jti: str, exp: int, now: float) -> bool:
        """Record ``jti`` (a ticket valid until ``exp``) taken; False when it was already, or
        cannot be recorded (a ticket is refused rather than taken twice). Blocking."""
        ...


def jti_hash(jti: str) -> str:
    return hashlib.sha256(jti.encode()).hexdigest()


class FileLedger:
    """A private directory the front workers of one host share: a file per ticket taken,
    created with ``O_EXCL``, named after its expiry and removed after it."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self._next_prune = 0.0

    def claim(self, jti: str, exp: int, now: float) -> bool:
        self._prune(now)
        name = f"{exp}-{jti_hash(jti)[:32]}"
        try:
            os.close(os.open(self.path / name, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o600))
        except FileExistsError:
            return False
        return True

    def _prune(self, now: float) -> None:
        if now < self._next_prune:
            return
        self._next_prune = now + PRUNE_EVERY_S
        with os.scandir(self.path) as entries:
            for entry in entries:
                exp, _, _ = entry.name.partition("-")
                if exp.isdigit() and int(exp) <= now:
                    Path(entry.path).unlink(missing_ok=True)
