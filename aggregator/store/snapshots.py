"""The clustersnapshot tables: the leader's saved clusterer states, newest kept.

A snapshot is a header row and its parts, each part (a name) cut into pieces of
a megabyte (seq), so that it is written and read a piece at a time, never
held whole. Pieces are opaque bytes with a checksum here (aggregator/cluster/
snapshot.py makes and reads them). A snapshot is written as a draft (an empty
checksum) in short transactions, so that the leader never holds the database's
write lock for long, and becomes visible only when its header is completed.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from sqlalchemy import delete, func, insert, update
from sqlalchemy import select as select_columns
from sqlmodel import Session, col

from aggregator.store.models import ClusterSnapshot, ClusterSnapshotPart
from aggregator.store.views import from_db, to_db

KEPT = 2  # snapshots kept: the newest, and one before it in case the newest is unusable
FLUSH_BYTES = 2**20  # pieces written per transaction: one full piece (at most 1 MB)

# Stores one piece: (part name, seq, body, checksum of the body).
PutPiece = Callable[[str, int, bytes | bytearray, str], None]


@dataclass(frozen=True)
class SnapshotHeader:
    """A stored snapshot without its parts."""

    id: int
    fingerprint: str
    created_at: datetime
    latest_at: datetime
    decisions: int
    term: int
    checksum: str
    size: int  # bytes of its parts


@dataclass(frozen=True)
class PieceHeader:
    """One stored piece of a snapshot's part, without its body."""

    name: str
    seq: int
    checksum: str
    size: int


def start(
    session: Session,
    *,
    fingerprint: str,
    created_at: datetime,
    latest_at: datetime,
    decisions: int,
    term: int,
) -> int:
    """Add a draft snapshot (no parts yet); its id. The caller commits."""
    row = ClusterSnapshot(
        fingerprint=fingerprint,
        created_at=to_db(created_at),
        latest_at=to_db(latest_at),
        decisions=decisions,
        term=term,
        checksum="",
        size=0,
    )
    session.add(row)
    session.flush()
    assert row.id is not None
    return row.id


class Pieces:
    """Collects pieces of one snapshot and writes them about a megabyte per transaction."""

    def __init__(self, new_session: Callable[[], Session], snapshot_id: int) -> None:
        self._new_session = new_session
        self._id = snapshot_id
        self._rows: list[dict[str, Any]] = []
        self._bytes = 0
        self.size = 0

    def put(self, name: str, seq: int, body: bytes | bytearray, checksum: str) -> None:
        self._rows.append(
            {
                "snapshot_id": self._id,
                "name": name,
                "seq": seq,
                "checksum": checksum,
                "body": body,
            }
        )
        self._bytes += len(body)
        self.size += len(body)
        if self._bytes >= FLUSH_BYTES:
            self.flush()

    def flush(self) -> None:
        if self._rows:
            with self._new_session() as session:
                session.connection().execute(insert(ClusterSnapshotPart), self._rows)
                session.commit()
            self._rows, self._bytes = [], 0


def complete(session: Session, snapshot_id: int, *, checksum: str, size: int) -> bool:
    """Make a draft a stored snapshot, and drop all but the newest `KEPT` and every other
    draft (a leader that died while writing one); False if the draft is gone. The
    caller commits."""
    done = session.connection().execute(
        update(ClusterSnapshot)
        .where(col(ClusterSnapshot.id) == snapshot_id, col(ClusterSnapshot.checksum) == "")
        .values(checksum=checksum, size=size)
    )
    if done.rowcount != 1:
        return False
    kept = (
        select_columns(col(ClusterSnapshot.id))
        .where(col(ClusterSnapshot.checksum) != "")
        .order_by(col(ClusterSnapshot.id).desc())
        .limit(KEPT)
    )
    newest = list(session.connection().execute(kept).scalars())
    drop(session, [i for i in all_ids(session) if i not in newest])
    return True


def all_ids(session: Session) -> list[int]:
    found = session.connection().execute(select_columns(col(ClusterSnapshot.id))).scalars()
    return [int(i) for i in found if i is not None]


def drop(session: Session, snapshot_ids: list[int]) -> None:
    """Delete snapshots and their parts. The caller commits."""
    if snapshot_ids:
        session.connection().execute(
            delete(ClusterSnapshotPart).where(
                col(ClusterSnapshotPart.snapshot_id).in_(snapshot_ids)
            )
        )
        session.connection().execute(
            delete(ClusterSnapshot).where(col(ClusterSnapshot.id).in_(snapshot_ids))
        )


def headers(session: Session) -> list[SnapshotHeader]:
    """The stored snapshots, newest first, without their parts (drafts left out)."""
    rows = session.connection().execute(
        select_columns(
            col(ClusterSnapshot.id),
            col(ClusterSnapshot.fingerprint),
            col(ClusterSnapshot.created_at),
            col(ClusterSnapshot.latest_at),
            col(ClusterSnapshot.decisions),
            col(ClusterSnapshot.term),
            col(ClusterSnapshot.checksum),
            col(ClusterSnapshot.size),
        )
        .where(col(ClusterSnapshot.checksum) != "")
        .order_by(col(ClusterSnapshot.id).desc())
    )
    return [
        SnapshotHeader(
            id=int(row[0] or 0),
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


def pieces(session: Session, snapshot_id: int) -> list[PieceHeader]:
    """The pieces of a snapshot, by part name and seq, without their bodies."""
    rows = session.connection().execute(
        select_columns(
            col(ClusterSnapshotPart.name),
            col(ClusterSnapshotPart.seq),
            col(ClusterSnapshotPart.checksum),
            func.length(col(ClusterSnapshotPart.body)),
        ).where(col(ClusterSnapshotPart.snapshot_id) == snapshot_id)
    )
    # Sorted here, not by the database: its collation may order names otherwise.
    found = [PieceHeader(row[0], row[1], row[2], int(row[3] or 0)) for row in rows]
    return sorted(found, key=lambda p: (p.name, p.seq))


def piece(session: Session, snapshot_id: int, name: str, seq: int) -> bytes | None:
    found = (
        session.connection()
        .execute(
            select_columns(col(ClusterSnapshotPart.body)).where(
                col(ClusterSnapshotPart.snapshot_id) == snapshot_id,
                col(ClusterSnapshotPart.name) == name,
                col(ClusterSnapshotPart.seq) == seq,
            )
        )
        .scalar()
    )
    return None if found is None else bytes(found)
