"""The few statements SQLite and PostgreSQL spell differently, written once for both."""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from typing import Any, TypeVar

from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.exc import DBAPIError, IntegrityError
from sqlmodel import Session, SQLModel

T = TypeVar("T")

# SQLSTATEs worth one more try: a unique key another worker inserted first,
# a deadlock, a serialisation failure.
_RETRY_STATES = {"23505", "40P01", "40001"}


def insert_ignoring_duplicates(
    session: Session, model: type[SQLModel], rows: Sequence[Mapping[str, Any]]
) -> None:
    """INSERT rows, skipping those whose primary key exists (ON CONFLICT DO NOTHING)."""
    if not rows:
        return
    table = model.__table__  # type: ignore[attr-defined]
    dialect = session.get_bind().dialect.name
    insert = postgresql.insert if dialect == "postgresql" else sqlite.insert
    session.exec(insert(table).values(list(rows)).on_conflict_do_nothing())


def retrying(session_factory: Callable[[], Session], work: Callable[[Session], T]) -> T:
    """Run `work` in a fresh session, once more if another worker's write collided."""
    for attempt in range(3):
        with session_factory() as session:
            try:
                return work(session)
            except DBAPIError as exc:
                session.rollback()
                if attempt == 2 or not _collided(exc):
                    raise
    raise AssertionError("unreachable")


def _collided(exc: DBAPIError) -> bool:
    if isinstance(exc, IntegrityError):
        return True
    return getattr(exc.orig, "sqlstate", None) in _RETRY_STATES
