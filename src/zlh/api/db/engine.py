"""The database handle: engine, sessions, and Alembic migrations run programmatically on start."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any, TypeVar

from alembic import command
from alembic.config import Config
from alembic.script import ScriptDirectory
from sqlalchemy import create_engine, event
from sqlalchemy.engine import Connection, Engine, make_url
from sqlalchemy.exc import SQLAlchemyError
from sqlalchemy.orm import Session, sessionmaker
from sqlalchemy.pool import ConnectionPoolEntry

from zlh.errors import ZlhError

__all__ = ["Database", "DatabaseError", "head_revision", "read_once", "upgrade"]

MIGRATIONS = Path(__file__).with_name("migrations")
T = TypeVar("T")


class DatabaseError(ZlhError):
    status_code = 503


def _alembic_config() -> Config:
    config = Config()
    config.set_main_option("script_location", str(MIGRATIONS))
    return config


def head_revision() -> str:
    """The newest migration this code knows (what ``migrate`` brings a database to)."""
    head = ScriptDirectory.from_config(_alembic_config()).get_current_head()
    if head is None:  # pragma: no cover - the package ships its migrations
        raise DatabaseError("no migrations found")
    return head


def upgrade(connection: Connection) -> None:
    """Run the migrations up to the head inside ``connection``'s transaction (PostgreSQL
    rolls the DDL back with it)."""
    config = _alembic_config()
    config.attributes["connection"] = connection
    command.upgrade(config, "head")


def read_once(url: str, read: Callable[[Session], T], *, what: str) -> T:
    """``read(session)`` on the database at ``url``, opened for just that (``zlh doctor``);
    DatabaseError naming ``what`` and the database (never its password) when it fails."""
    db = Database(url)
    try:
        with db.session() as session:
            return read(session)
    except SQLAlchemyError as exc:
        where = make_url(url).render_as_string(hide_password=True)
        raise DatabaseError(f"cannot read {what} from {where}: {str(exc).splitlines()[0]}") from exc
    finally:
        db.dispose()


def _sqlite_pragmas(dbapi_connection: Any, _record: Any) -> None:
    cursor = dbapi_connection.cursor()
    cursor.execute("PRAGMA foreign_keys=ON")
    cursor.execute("PRAGMA journal_mode=WAL")
    cursor.execute("PRAGMA busy_timeout=10000")
    cursor.execute("PRAGMA synchronous=NORMAL")
    cursor.close()


class Database:
    """One engine per process. ``session()`` commits on success and rolls back on error."""

    def __init__(self, url: str) -> None:
        parsed = make_url(url)
        kwargs: dict[str, Any] = {}
        if parsed.get_backend_name() == "sqlite":
            if parsed.database and parsed.database != ":memory:":
                Path(parsed.database).parent.mkdir(parents=True, exist_ok=True)
            kwargs["connect_args"] = {"check_same_thread": False}
        else:
            kwargs["pool_pre_ping"] = True
        self.url = url
        self.engine: Engine = create_engine(url, **kwargs)
        # PostgreSQL: the server processes of this engine's open connections, which name this
        # process as the sender of a notification (zlh.api.follower skips its own).
        self.backend_pids: set[int] = set()
        if parsed.get_backend_name() == "sqlite":
            event.listen(self.engine, "connect", _sqlite_pragmas)
        else:
            event.listen(self.engine, "connect", self._opened)
            for gone in ("close", "detach", "invalidate"):
                event.listen(self.engine, gone, self._closed)
        self._sessions = sessionmaker(self.engine, expire_on_commit=False)

    def _opened(self, dbapi_connection: Any, record: ConnectionPoolEntry) -> None:
        pid = getattr(getattr(dbapi_connection, "info", None), "backend_pid", None)
        if isinstance(pid, int):
            record.info["backend_pid"] = pid
            self.backend_pids.add(pid)

    def _closed(self, _dbapi_connection: Any, record: ConnectionPoolEntry, *_: Any) -> None:
        pid = record.info.pop("backend_pid", None)
        if pid is not None:
            self.backend_pids.discard(pid)

    def migrate(self) -> None:
        """Bring the schema to the newest revision (idempotent)."""
        try:
            with self.engine.begin() as connection:
                upgrade(connection)
        except SQLAlchemyError as exc:
            raise DatabaseError(
                f"cannot migrate the database {self.engine.url!r}: {exc.__class__.__name__}: "
                f"{str(exc).splitlines()[0]}"
            ) from exc

    @contextmanager
    def session(self) -> Iterator[Session]:
        with self._sessions() as session, session.begin():
            yield session

    def dispose(self) -> None:
        self.engine.dispose()
