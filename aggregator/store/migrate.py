"""Schema migrations: bring a database to the current Alembic revision, or say where it is.

`aggregator db upgrade` and a starting worker (worker.migrate_on_start) call
`upgrade`. The whole upgrade is one transaction holding a lock, so two workers
starting together migrate once. Databases made before migrations existed are
recognised by their tables and stamped with the revision they match.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass

from alembic import command
from alembic.config import Config
from alembic.runtime.migration import MigrationContext
from alembic.script import ScriptDirectory
from sqlalchemy import inspect, text
from sqlalchemy.engine import Connection, Engine
from sqlalchemy.exc import OperationalError

from aggregator.errors import StoreError

SCRIPT_LOCATION = "aggregator.store:migrations"
# Tables each revision introduced, newest first: how an unversioned database is placed.
_MARKERS = (("0002", "tombstone"), ("0001", "source"))
_PG_LOCK_KEY = 0x61676772  # any constant shared by every migrator


@dataclass(frozen=True)
class Upgrade:
    before: str | None  # None: the database was empty
    after: str

    @property
    def changed(self) -> bool:
        return self.before != self.after


def alembic_config(connection: Connection | None = None) -> Config:
    """Alembic's configuration, without an alembic.ini: the revisions ship in the package."""
    config = Config()
    config.set_main_option("script_location", SCRIPT_LOCATION)
    if connection is not None:
        config.attributes["connection"] = connection
    return config


def head_revision() -> str:
    head = ScriptDirectory.from_config(alembic_config()).get_current_head()
    assert head is not None, "the package ships at least one revision"
    return head


def current_revision(engine: Engine) -> str | None:
    """The revision the database is at; an unversioned database is placed by its tables."""
    with _translated(engine), engine.connect() as connection:
        return _current(connection) or _legacy_revision(connection)


def upgrade(engine: Engine, revision: str = "head") -> Upgrade:
    """Run every revision up to `revision` in one locked transaction."""
    with _translated(engine), engine.connect() as connection:
        _lock(connection)
        before = _current(connection)
        config = alembic_config(connection)
        if before is None and (legacy := _legacy_revision(connection)) is not None:
            command.stamp(config, legacy)
            before = legacy
        command.upgrade(config, revision)
        after = _current(connection)
        connection.commit()
    assert after is not None
    return Upgrade(before, after)


def ensure_current(engine: Engine) -> None:
    """Refuse to work on a schema older (or newer) than this version's."""
    current, head = current_revision(engine), head_revision()
    if current != head:
        raise StoreError(
            f"the database schema is at revision {current or 'none (empty)'} but this "
            f"version needs {head}; run `aggregator db upgrade` "
            "(or set worker.migrate_on_start = true)"
        )


def _current(connection: Connection) -> str | None:
    return MigrationContext.configure(connection).get_current_revision()


def _legacy_revision(connection: Connection) -> str | None:
    tables = set(inspect(connection).get_table_names())
    for revision, table in _MARKERS:
        if table in tables:
            return revision
    return None


def _lock(connection: Connection) -> None:
    # PostgreSQL: a transaction-scoped advisory lock; SQLite: take the write lock now,
    # which also makes its DDL transactional (pysqlite would otherwise autocommit it).
    if connection.dialect.name == "postgresql":
        connection.execute(text("SELECT pg_advisory_xact_lock(:key)"), {"key": _PG_LOCK_KEY})
    elif connection.dialect.name == "sqlite":
        connection.exec_driver_sql("BEGIN IMMEDIATE")


@contextmanager
def _translated(engine: Engine) -> Iterator[None]:
    """Turn a driver's connection failure into a StoreError naming the database."""
    try:
        yield
    except OperationalError as exc:
        where = engine.url.render_as_string(hide_password=True)
        raise StoreError(
            f"cannot migrate the database {where}: {exc.orig}; "
            "check database_url and that the server is running"
        ) from exc
