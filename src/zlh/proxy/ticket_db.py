"""The IDE tickets' ledger in the PostgreSQL database the replicas share (``used_tickets``):
a ticket is taken once on the whole platform, whichever host's front it is shown to. Apart
from :mod:`zlh.proxy.tickets` so that the compiled front's modules never import SQLAlchemy."""

from __future__ import annotations

import logging
from typing import Final

from sqlalchemy import create_engine, text
from sqlalchemy.exc import SQLAlchemyError

from zlh.proxy.tickets import PRUNE_EVERY_S, jti_hash

__all__ = ["DbLedger"]

log = logging.getLogger(__name__)

_DB_TIMEOUT_S: Final = 5


class DbLedger:
    """The ``used_tickets`` table of the PostgreSQL database the replicas share: one row per
    ticket taken (the sha256 of its ``jti``, its expiry), inserted only if absent; expired rows
    are deleted now and then. A database error refuses the ticket."""

    def __init__(self, url: str) -> None:
        self._engine = create_engine(
            url,
            pool_size=1,
            max_overflow=3,
            pool_pre_ping=True,
            connect_args={"connect_timeout": _DB_TIMEOUT_S},
        )
        self._next_prune = 0.0

    def claim(self, jti: str, exp: int, now: float) -> bool:
        try:
            with self._engine.begin() as conn:
                conn.execute(text(f"SET LOCAL statement_timeout = {_DB_TIMEOUT_S * 1000}"))
                if now >= self._next_prune:
                    self._next_prune = now + PRUNE_EVERY_S
                    conn.execute(
                        text("DELETE FROM used_tickets WHERE expires_at <= :now"),
                        {"now": int(now)},
                    )
                inserted = conn.execute(
                    text(
                        "INSERT INTO used_tickets (jti_hash, expires_at) VALUES (:hash, :exp) "
                        "ON CONFLICT DO NOTHING RETURNING jti_hash"
                    ),
                    {"hash": jti_hash(jti), "exp": exp},
                ).first()
        except SQLAlchemyError as exc:
            problem = str(exc).splitlines()[0] if str(exc) else exc.__class__.__name__
            log.warning("a ticket was refused: its use cannot be recorded: %s", problem)
            return False
        return inserted is not None

    def dispose(self) -> None:
        self._engine.dispose()
