"""Copy a node's database, every table and row, into an empty PostgreSQL database.

What moves a single node onto PostgreSQL (``zlh db copy``). The target is migrated to this
code's newest revision, which the source must be at too, so both hold the same tables; the
column types are read off the migrated target and used for both sides (SQLite's text
timestamps, 0/1 booleans and JSON text come back as Python values, and go in as PostgreSQL
ones). Primary keys are copied as they are, then every serial sequence is set past the
largest key, so the next insert does not collide.

All of it (migrations included: PostgreSQL's DDL is transactional) is one transaction on the
target, committed only after every table's row count matched the source's; a failure, or a
dry run, rolls it all back and leaves the target as it was. The source is read in one
snapshot (SQLite: an explicit ``BEGIN``; PostgreSQL: a repeatable-read transaction) and never
written.
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field

from alembic.runtime.migration import MigrationContext
from sqlalchemy import Engine, MetaData, Table, create_engine, func, insert, inspect, select
from sqlalchemy.engine import Connection, make_url
from sqlalchemy.exc import SQLAlchemyError

from zlh.api.db.engine import head_revision, upgrade
from zlh.errors import ZlhError

__all__ = ["CopyRefused", "CopyReport", "copy_database", "safe_url"]

ALEMBIC_TABLE = "alembic_version"
BATCH_ROWS = 1000
# Two copies into one target wait for each other instead of both inserting.
_LOCK_KEY = 0x7A6C_6864_6263  # "zlhdbc"


class CopyRefused(ZlhError):
    """The source or the target is not in a state to copy from or into; nothing written."""


class _DryRun(Exception):
    """Raised inside the target transaction to roll a dry run back."""


@dataclass
class CopyReport:
    revision: str
    rows: dict[str, int] = field(default_factory=dict)
    # "table.column" → the value its sequence hands out next.
    sequences: dict[str, int] = field(default_factory=dict)
    seconds: float = 0.0
    dry_run: bool = False

    @property
    def total(self) -> int:
        return sum(self.rows.values())


def safe_url(url: str) -> str:
    """``url`` with its password masked, for messages."""
    return make_url(url).render_as_string(hide_password=True)


def copy_database(source_url: str, target_url: str, *, dry_run: bool = False) -> CopyReport:
    """Copy every table of ``source_url`` into the empty PostgreSQL ``target_url``.

    Raises :class:`CopyRefused` (nothing written) when the source is not at this code's
    revision, or the target holds rows, another revision, or tables of something else.
    """
    started = time.monotonic()
    head = head_revision()
    try:
        source, target = create_engine(source_url), create_engine(target_url)
    except (SQLAlchemyError, ImportError) as exc:  # e.g. a driver that is not installed
        raise ZlhError(
            f"cannot use the database URL: {_first_line(exc)} (the driver installed with zlh "
            "is psycopg: postgresql+psycopg://…)"
        ) from exc
    try:
        with _snapshot(source) as reading, _connected(target) as writing:
            _require_revision(reading, head, source_url)
            report = CopyReport(revision=head, dry_run=dry_run)
            try:
                with writing.begin():
                    writing.execute(select(func.pg_advisory_xact_lock(_LOCK_KEY)))
                    tables = _prepare_target(writing, head, target_url)
                    _require_same_tables(reading, tables)
                    for table in tables:
                        report.rows[table.name] = _copy_table(reading, writing, table)
                    report.sequences = _advance_sequences(writing, tables)
                    _verify(reading, writing, tables, report.rows)
                    report.seconds = time.monotonic() - started
                    if dry_run:
                        raise _DryRun
            except _DryRun:
                pass
            return report
    except SQLAlchemyError as exc:
        raise ZlhError(f"copy failed, nothing written: {_first_line(exc)}") from exc
    finally:
        source.dispose()
        target.dispose()


@contextmanager
def _snapshot(engine: Engine) -> Iterator[Connection]:
    """A connection that sees the source as of one moment, for every table."""
    with _connected(engine) as connection:
        if engine.dialect.name == "sqlite":
            # pysqlite opens no transaction before a SELECT: without this, each table would
            # be read as of its own moment.
            connection.exec_driver_sql("BEGIN")
        else:
            connection = connection.execution_options(isolation_level="REPEATABLE READ")
            connection.exec_driver_sql("SET TRANSACTION READ ONLY")
        try:
            yield connection
        finally:
            connection.rollback()


@contextmanager
def _connected(engine: Engine) -> Iterator[Connection]:
    try:
        connection = engine.connect()
    except SQLAlchemyError as exc:
        raise ZlhError(
            f"cannot connect to {safe_url(str(engine.url))}: {_first_line(exc)}"
        ) from exc
    with connection:
        yield connection


def _require_revision(connection: Connection, head: str, url: str) -> None:
    found = MigrationContext.configure(connection).get_current_revision()
    if found is None:
        raise CopyRefused(f"{safe_url(url)} holds no platform database (no migration revision)")
    if found != head:
        raise CopyRefused(
            f"the source database is at revision {found}, this zlh's is {head}: start this zlh "
            "version on it once (or run `zlh user list` with its --data-dir) so it is migrated, "
            "then copy again"
        )


def _prepare_target(connection: Connection, head: str, url: str) -> list[Table]:
    """The target's tables in foreign-key order, migrated to ``head`` if it was empty;
    refused unless every one of them is empty and at ``head``."""
    found = MigrationContext.configure(connection).get_current_revision()
    if found is None:
        foreign = inspect(connection).get_table_names()
        if foreign:
            raise CopyRefused(
                f"the target {safe_url(url)} holds tables of something else "
                f"({', '.join(sorted(foreign)[:5])}): copy into a new empty database "
                "(CREATE DATABASE …)"
            )
        upgrade(connection)
    elif found != head:
        raise CopyRefused(
            f"the target database is at revision {found}, the source at {head}: copy into a "
            "new empty database (CREATE DATABASE …)"
        )
    metadata = MetaData()
    metadata.reflect(connection)
    tables = [t for t in metadata.sorted_tables if t.name != ALEMBIC_TABLE]
    held = {t.name: n for t in tables if (n := _count(connection, t))}
    if held:
        listed = ", ".join(f"{name}: {n}" for name, n in held.items())
        raise CopyRefused(
            f"the target database already holds rows ({listed}); nothing written: copy into a "
            "new empty database (CREATE DATABASE …), never over a database a replica has used"
        )
    return tables


def _require_same_tables(connection: Connection, tables: list[Table]) -> None:
    theirs = set(inspect(connection).get_table_names()) - {ALEMBIC_TABLE}
    ours = {t.name for t in tables}
    if theirs != ours:
        raise CopyRefused(
            f"the source and the target differ in tables at the same revision: source only "
            f"{sorted(theirs - ours)}, target only {sorted(ours - theirs)}"
        )


def _copy_table(reading: Connection, writing: Connection, table: Table) -> int:
    """Every row of ``table``, read with the target's column types, inserted in batches."""
    copied = 0
    result = reading.execution_options(yield_per=BATCH_ROWS).execute(select(table))
    for batch in result.partitions():
        try:
            writing.execute(insert(table), [dict(row._mapping) for row in batch])
        except SQLAlchemyError as exc:  # e.g. a value SQLite let through (it checks no length)
            raise ZlhError(
                f"copy failed, nothing written: {table.name}, rows {copied + 1}-"
                f"{copied + len(batch)}: {_first_line(exc)}"
            ) from exc
        copied += len(batch)
    return copied


def _advance_sequences(connection: Connection, tables: list[Table]) -> dict[str, int]:
    """Set each serial column's sequence to hand out max + 1 next."""
    advanced: dict[str, int] = {}
    for table in tables:
        for column in table.primary_key.columns:
            sequence = connection.scalar(
                select(func.pg_get_serial_sequence(table.name, column.name))
            )
            if sequence is None:
                continue  # not serial: vmids, session ids and keys are given, not drawn
            top = connection.scalar(select(func.coalesce(func.max(column), 0)))
            following = int(top or 0) + 1
            connection.execute(select(func.setval(sequence, following, False)))
            advanced[f"{table.name}.{column.name}"] = following
    return advanced


def _verify(
    reading: Connection, writing: Connection, tables: list[Table], copied: dict[str, int]
) -> None:
    for table in tables:
        source, target = _count(reading, table), _count(writing, table)
        if not source == target == copied[table.name]:
            raise ZlhError(
                f"copy failed, nothing written: {table.name} has {source} row(s) in the source, "
                f"{copied[table.name]} copied, {target} in the target"
            )


def _count(connection: Connection, table: Table) -> int:
    return int(connection.scalar(select(func.count()).select_from(table)) or 0)


def _first_line(exc: BaseException) -> str:
    lines = str(getattr(exc, "orig", None) or exc).strip().splitlines()
    return lines[0] if lines else type(exc).__name__
