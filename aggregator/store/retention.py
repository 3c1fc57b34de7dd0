"""Retention: entries stored longer than the configured age leave, their identity stays.

An entry's age counts from when this service first stored it, never from the
outlet's date: a feed that lists week-old (or years-old) articles must not see them
removed as soon as they arrive, and their tombstones then keep them out for good.
Each removed entry leaves a tombstone (source id, key), so a feed that still lists
it does not bring it back as new. Ingest stamps a tombstone again whenever its
feed lists the entry, so a tombstone goes only once its feed has stopped listing
the entry for the retention age. Copies of a removed entry become originals; a
story left without entries is removed with its timeline memberships.
"""

from __future__ import annotations

from datetime import datetime

from sqlalchemy import delete, func, update
from sqlmodel import Session, col, select

from aggregator.store.clustering import refresh_story
from aggregator.store.models import Entry, Story, TimelineStory, Tombstone
from aggregator.store.portable import insert_ignoring_duplicates
from aggregator.store.views import to_db


def expire_batch(
    session: Session, cutoff: datetime, now: datetime, limit: int
) -> tuple[int, list[int]]:
    """Remove up to `limit` entries first stored before `cutoff`; (entries, stories removed).

    The caller commits (after fencing the transaction with its leader term).
    """
    rows = session.exec(
        select(Entry.id, Entry.source_id, Entry.key, Entry.story_id)
        .where(col(Entry.first_seen_at) < to_db(cutoff))
        .order_by(col(Entry.id))
        .limit(limit)
    ).all()
    if not rows:
        return 0, []
    ids = [row[0] for row in rows]
    insert_ignoring_duplicates(
        session,
        Tombstone,
        [{"source_id": row[1], "key": row[2], "removed_at": to_db(now)} for row in rows],
    )
    session.exec(update(Entry).where(col(Entry.duplicate_of).in_(ids)).values(duplicate_of=None))
    session.exec(delete(Entry).where(col(Entry.id).in_(ids)))
    removed = [
        story_id
        for story_id in sorted({row[3] for row in rows if row[3] is not None})
        if not refresh_story(session, story_id, now)
    ]
    if removed:
        session.exec(delete(TimelineStory).where(col(TimelineStory.story_id).in_(removed)))
        session.exec(delete(Story).where(col(Story.id).in_(removed)))
    return len(ids), removed


def expire_tombstones(session: Session, before: datetime) -> int:
    """Remove tombstones no feed has listed since `before`; how many. The caller commits."""
    result = session.exec(delete(Tombstone).where(col(Tombstone.removed_at) < to_db(before)))
    return int(result.rowcount or 0)


def tombstone_count(session: Session) -> int:
    return int(session.exec(select(func.count()).select_from(Tombstone)).one())
