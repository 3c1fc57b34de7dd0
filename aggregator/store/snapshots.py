"""The clustersnapshot table: the leader's saved clusterer states, newest kept.

Bodies are opaque bytes here (aggregator/cluster/snapshot.py makes and reads
them); headers are read without bodies, so choosing a snapshot costs little.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime

from sqlalchemy import delete, func
from sqlalchemy import select as select_columns
from sqlmodel import Session, col

from aggregator.store.models import ClusterSnapshot
from aggregator.store.views import from_db, to_db

KEPT = 2  # snapshots kept: the newest, and one before it in case the newest is unusable


@dataclass(frozen=True)
class SnapshotHeader:
    """A stored snapshot without its body."""

    id: int
    fingerprint: str
    created_at: datetime
    latest_at: datetime
    decisions: int
    term: int
    checksum: str
    size: int  # bytes of the body


def save(
    session: Session,
    *,
    fingerprint: str,
    created_at: datetime,
    latest_at: datetime,
    decisions: int,
    term: int,
    checksum: str,
    body: bytes,
) -> int:
    """Add a snapshot and drop all but the newest `KEPT`; its id. The caller commits."""
    row = ClusterSnapshot(
        fingerprint=fingerprint,
        created_at=to_db(created_at),
        latest_at=to_db(latest_at),
        decisions=decisions,
        term=term,
        checksum=checksum,
        body=body,
    )
    session.add(row)
    session.flush()
    assert row.id is not None
    kept = select_columns(col(ClusterSnapshot.id)).order_by(col(ClusterSnapshot.id).desc())
    newest = list(session.connection().execute(kept.limit(KEPT)).scalars())
    session.exec(delete(ClusterSnapshot).where(col(ClusterSnapshot.id).not_in(newest)))
    return row.id


def headers(session: Session) -> list[SnapshotHeader]:
    """The stored snapshots, newest first, without their bodies."""
    rows = session.connection().execute(
        select_columns(
            col(ClusterSnapshot.id),
            col(ClusterSnapshot.fingerprint),
            col(ClusterSnapshot.created_at),
            col(ClusterSnapshot.latest_at),
            col(ClusterSnapshot.decisions),
            col(ClusterSnapshot.term),
            col(ClusterSnapshot.checksum),
            func.length(col(ClusterSnapshot.body)),
        ).order_by(col(ClusterSnapshot.id).desc())
    )
    return [
        SnapshotHeader(
            id=row[0],
            fingerprint=row[1],
            created_at=from_db(row[2]),
            latest_at=from_db(row[3]),
            decisions=row[4],
            term=row[5],
            checksum=row[6],
            size=int(row[7] or 0),
        )
        for row in rows
    ]


def body(session: Session, snapshot_id: int) -> bytes | None:
    found = (
        session.connection()
        .execute(
            select_columns(col(ClusterSnapshot.body)).where(col(ClusterSnapshot.id) == snapshot_id)
        )
        .scalar()
    )
    return None if found is None else bytes(found)
