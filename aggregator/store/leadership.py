"""The leader lease: one worker at a time clusters, publishes and applies retention.

A row of the `leader` table names the owner, its term and until when it holds.
A worker takes the row when it is free or expired, which raises the term; the
holder renews it. Every write of the in-order work first renews the lease for
its own term in the same transaction (`fence`), so a former leader that stalled
past its lease finds its term gone and writes nothing. It works the same on
SQLite and PostgreSQL, and a leader that dies simply stops renewing.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timedelta

from sqlalchemy import and_, case, or_, update
from sqlmodel import Session, col

from aggregator.store.models import Leader
from aggregator.store.portable import insert_ignoring_duplicates
from aggregator.store.views import LeaderView, maybe_from_db, to_db

ROW = "clustering"


def acquire(
    session: Session, owner: str, known_term: int | None, now: datetime, lease_s: float
) -> int | None:
    """Take or renew the lease; the term held, or None when another worker holds it.

    The term stays when `owner` renews the term it knows, and grows otherwise, so
    a worker can tell whether anyone else led since it last did.
    """
    insert_ignoring_duplicates(session, Leader, [{"name": ROW, "term": 0}])
    moment = to_db(now)
    mine = and_(
        col(Leader.owner) == owner, col(Leader.term) == (-1 if known_term is None else known_term)
    )
    term = session.exec(
        update(Leader)
        .where(col(Leader.name) == ROW)
        .where(
            or_(
                col(Leader.owner) == owner,
                col(Leader.until).is_(None),
                col(Leader.until) < moment,
            )
        )
        .values(
            owner=owner,
            until=to_db(now + timedelta(seconds=lease_s)),
            term=case((mine, col(Leader.term)), else_=col(Leader.term) + 1),
        )
        .returning(col(Leader.term))
    ).first()
    session.commit()
    return None if term is None else int(term[0])


def fence(session: Session, held: Term, now: datetime) -> bool:
    """Renew the lease for `held.term` inside the caller's transaction; False if it was lost.

    Call it first in a transaction: on PostgreSQL the row stays locked until the
    commit, so nobody takes over halfway through the caller's writes.
    """
    result = session.exec(
        update(Leader)
        .where(col(Leader.name) == ROW, col(Leader.owner) == held.owner)
        .where(col(Leader.term) == held.term)
        .values(until=to_db(now + timedelta(seconds=held.lease_s)))
    )
    return bool(result.rowcount)


def resign(session: Session, owner: str) -> None:
    """Let another worker take over at once (the owner keeps its term if nobody does)."""
    session.exec(
        update(Leader).where(col(Leader.name) == ROW, col(Leader.owner) == owner).values(until=None)
    )
    session.commit()


def current(session: Session) -> LeaderView | None:
    row = session.get(Leader, ROW)
    if row is None:
        return None
    return LeaderView(owner=row.owner, term=row.term, until=maybe_from_db(row.until))


@dataclass(frozen=True)
class Term:
    """A worker's hold on the lease: the writes it fences must still belong to this term."""

    owner: str
    term: int
    lease_s: float
