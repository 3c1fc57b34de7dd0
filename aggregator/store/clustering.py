"""Queries of the cluster step: pending entries, the window's decisions, saving new ones.

Entries are read as plain column rows through the session's connection, and the
window's decisions a batch at a time, so that rebuilding the clusterer after a
restart holds no ORM objects for the whole window. Embeddings are stored with
their entries as opaque bytes (the pipeline encodes them), and merged stories
are folded into the story that absorbed them.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator, Mapping, Sequence
from datetime import datetime
from typing import Any
from urllib.parse import urlsplit

from sqlalchemy import bindparam, delete, func, literal, or_, update
from sqlalchemy import select as select_columns
from sqlmodel import Session, col, select

from aggregator.store.models import Entry, Source, Story, TimelineStory
from aggregator.store.views import from_db, to_db
from aggregator.types import Assignment, ClusterDoc
from aggregator.values import primary_language

RESTORE_BATCH = 2000

_DOC_COLUMNS = (
    col(Entry.id),
    col(Entry.title),
    col(Entry.text),
    col(Entry.url),
    col(Entry.sort_at),
    col(Entry.language),
    col(Source.name),
    col(Source.language),
)


def pending_docs(
    session: Session, limit: int, *, vectorless_by: datetime | None = None
) -> list[ClusterDoc]:
    """Entries not yet clustered, in the order the clusterer must see them.

    With `vectorless_by`, an entry without a stored vector is left out until it
    was stored (or rewritten) by then: the worker that stored it is computing it.
    """
    query = (
        select_columns(*_DOC_COLUMNS)
        .join(Source, col(Source.id) == col(Entry.source_id))
        .where(col(Entry.clustered).is_(False))
    )
    if vectorless_by is not None:
        query = query.where(
            or_(col(Entry.embedding).is_not(None), col(Entry.changed_at) <= to_db(vectorless_by))
        )
    query = query.order_by(col(Entry.sort_at), col(Entry.id)).limit(limit)
    return [_doc(row) for row in session.connection().execute(query).all()]


def docs_to_embed(session: Session, entry_ids: Sequence[int]) -> list[ClusterDoc]:
    """Those of the entries still waiting for their vector (not clustered, none stored)."""
    if not entry_ids:
        return []
    rows = session.connection().execute(
        select_columns(*_DOC_COLUMNS)
        .join(Source, col(Source.id) == col(Entry.source_id))
        .where(
            col(Entry.id).in_(list(entry_ids)),
            col(Entry.clustered).is_(False),
            col(Entry.embedding).is_(None),
        )
        .order_by(col(Entry.id))
    )
    return [_doc(row) for row in rows]


# A worker's vector never replaces one: the leader may have computed and used
# its own meanwhile, and a clustered entry keeps the vector its decision saw.
_FILL_VECTOR = (
    update(Entry)
    .where(
        col(Entry.id) == bindparam("entry_id"),
        col(Entry.embedding).is_(None),
        col(Entry.clustered).is_(False),
    )
    .values(embedding=bindparam("vector"))
)


def fill_embeddings(session: Session, vectors: Mapping[str, bytes]) -> int:
    """Store vectors computed at ingest, only where the entry still has none; how many.
    The caller commits."""
    if not vectors:
        return 0
    params = [{"entry_id": int(i), "vector": v} for i, v in vectors.items()]
    result = session.connection().execute(_FILL_VECTOR, params)
    return int(result.rowcount or 0)


def latest_clustered_at(session: Session) -> datetime | None:
    latest = session.exec(select(func.max(Entry.sort_at)).where(col(Entry.clustered))).one()
    return None if latest is None else from_db(latest)


def clustered_since(
    session: Session,
    since: datetime,
    *,
    embeddings: bool = False,
    entry_ids: Sequence[int] | None = None,
) -> Iterator[tuple[ClusterDoc, Assignment, bytes | None]]:
    """Stored decisions inside the window, oldest first, streamed in batches; with
    `entry_ids`, only those entries' (a few hundred at most: one IN list).

    With `embeddings`, each comes with its stored vector (None if it has none);
    without, the column is not read at all.
    """
    vector = col(Entry.embedding) if embeddings else literal(None).label("embedding")
    query = (
        select_columns(
            *_DOC_COLUMNS, col(Story.key), col(Entry.duplicate_of), vector, col(Entry.event_key)
        )
        .join(Source, col(Source.id) == col(Entry.source_id))
        .join(Story, col(Story.id) == col(Entry.story_id))
        .where(col(Entry.clustered), col(Entry.sort_at) >= to_db(since))
        .order_by(col(Entry.sort_at), col(Entry.id))
        .execution_options(yield_per=RESTORE_BATCH)
    )
    if entry_ids is not None:
        query = query.where(col(Entry.id).in_(list(entry_ids)))
    for row in session.connection().execute(query):
        doc = _doc(row)
        story_key, duplicate_of, stored, event_key = row[8], row[9], row[10], row[11]
        yield (
            doc,
            Assignment(
                doc_id=doc.id,
                story_id=str(story_key),
                duplicate_of=None if duplicate_of is None else str(duplicate_of),
                event_key=event_key or "",
            ),
            None if stored is None else bytes(stored),
        )


StoredDecision = tuple[int, datetime, str, str | None, str]


def decisions_since(session: Session, since: datetime) -> Iterator[StoredDecision]:
    """Where each clustered entry inside the window went, as stored now, in replay order:
    (entry id, time, story key, the entry it copies, event key); no texts, no vectors.
    Streamed: a big window holds a hundred thousand of them."""
    query = (
        select_columns(
            col(Entry.id),
            col(Entry.sort_at),
            col(Story.key),
            col(Entry.duplicate_of),
            col(Entry.event_key),
        )
        .join(Story, col(Story.id) == col(Entry.story_id))
        .where(col(Entry.clustered), col(Entry.sort_at) >= to_db(since))
        .order_by(col(Entry.sort_at), col(Entry.id))
        .execution_options(yield_per=RESTORE_BATCH)
    )
    for entry_id, sort_at, story_key, copy_of, event_key in session.connection().execute(query):
        yield (
            int(entry_id or 0),
            from_db(sort_at),
            str(story_key),
            None if copy_of is None else str(copy_of),
            event_key or "",
        )


def stored_embeddings(session: Session, entry_ids: Iterable[str]) -> dict[str, bytes]:
    """The stored vectors of those entries that have one, by entry id."""
    ids = [int(i) for i in entry_ids]
    rows = (
        session.connection()
        .execute(
            select_columns(col(Entry.id), col(Entry.embedding)).where(
                col(Entry.id).in_(ids), col(Entry.embedding).is_not(None)
            )
        )
        .all()
    )
    return {str(entry_id): bytes(vector) for entry_id, vector in rows if vector is not None}


def save_embeddings(session: Session, vectors: Mapping[str, bytes]) -> None:
    """Store each entry's vector; an entry removed meanwhile is skipped. The caller commits."""
    for entry_id, vector in vectors.items():
        session.exec(update(Entry).where(col(Entry.id) == int(entry_id)).values(embedding=vector))


def merge_stories(session: Session, merges: Sequence[tuple[str, str]], now: datetime) -> list[int]:
    """Fold each absorbed story into the one it went into, in the order given.

    Entries and timeline links move to the survivor, which is recounted and
    marked dirty; the absorbed story is deleted. A survivor the store no longer
    has (retention removed it) takes over the absorbed row under its own key, so
    a replay after a restart sees the survivor's key either way. Returns the
    ids of the stories deleted. The caller commits.
    """
    retired: list[int] = []
    for absorbed_key, into_key in merges:
        absorbed = session.exec(select(Story).where(col(Story.key) == absorbed_key)).first()
        if absorbed is None or absorbed.id is None or absorbed_key == into_key:
            continue  # removed by retention meanwhile: nothing stored to move
        into = session.exec(select(Story).where(col(Story.key) == into_key)).first()
        if into is None or into.id is None:
            absorbed.key = into_key
            absorbed.dirty = True
            absorbed.revision += 1
            session.flush()
            continue
        session.exec(
            update(Entry).where(col(Entry.story_id) == absorbed.id).values(story_id=into.id)
        )
        linked = set(
            session.exec(
                select(TimelineStory.timeline).where(TimelineStory.story_id == absorbed.id)
            ).all()
        )
        has = set(
            session.exec(
                select(TimelineStory.timeline).where(TimelineStory.story_id == into.id)
            ).all()
        )
        session.exec(delete(TimelineStory).where(col(TimelineStory.story_id) == absorbed.id))
        for timeline in sorted(linked - has):
            session.add(TimelineStory(timeline=timeline, story_id=into.id))
        session.flush()
        session.exec(delete(Story).where(col(Story.id) == absorbed.id))
        refresh_story(session, into.id, now)
        retired.append(absorbed.id)
    session.flush()
    return retired


def merge_events(session: Session, merges: Sequence[tuple[str, str]]) -> None:
    """Re-point the entries of each absorbed event to the event it joined, inside the
    story that now holds the joining event (an event's key is its founding entry's id;
    a founder retention removed leaves nothing to re-point). The caller commits."""
    for gone_key, into_key in merges:
        if not into_key.isdigit():
            continue
        story_id = session.exec(
            select(Entry.story_id).where(col(Entry.id) == int(into_key))
        ).first()
        if story_id is None:
            continue
        session.exec(
            update(Entry)
            .where(col(Entry.story_id) == story_id, col(Entry.event_key) == gone_key)
            .values(event_key=into_key)
        )
    session.flush()


def save_assignments(
    session: Session, assignments: Sequence[Assignment], now: datetime
) -> set[int]:
    """Attach entries to stories (creating new ones); returns the story ids touched.

    The caller commits, after fencing the transaction with its leader term.
    """
    story_ids = _story_ids_for(session, {a.story_id for a in assignments}, now)
    connection = session.connection()
    # Removed by retention meanwhile, or saved already: those are left as they are.
    waiting = set(
        connection.execute(
            select_columns(col(Entry.id)).where(
                col(Entry.id).in_([int(a.doc_id) for a in assignments]),
                col(Entry.clustered).is_(False),
            )
        ).scalars()
    )
    rows = [
        {
            "entry_id": int(a.doc_id),
            "story": story_ids[a.story_id],
            "copy_of": None if a.duplicate_of is None else int(a.duplicate_of),
            "event": a.event_key or None,
        }
        for a in assignments
        if int(a.doc_id) in waiting
    ]
    if rows:  # one statement for the batch, not an ORM object per entry
        connection.execute(_ASSIGN, rows)
    touched = {story_ids[a.story_id] for a in assignments if int(a.doc_id) in waiting}
    for story_id in touched:
        refresh_story(session, story_id, now)
    return touched


_ASSIGN = (
    update(Entry)
    .where(col(Entry.id) == bindparam("entry_id"))
    .values(
        story_id=bindparam("story"),
        duplicate_of=bindparam("copy_of"),
        event_key=bindparam("event"),
        clustered=True,
    )
)


def refresh_story(session: Session, story_id: int, now: datetime) -> bool:
    """Recount a story from its entries; False when it has none left."""
    story = session.get(Story, story_id)
    if story is None:
        return False
    rows = session.exec(
        select(Entry.title, Entry.sort_at, Entry.source_id)
        .where(Entry.story_id == story_id)
        .order_by(col(Entry.sort_at), col(Entry.id))
    ).all()
    if not rows:
        return False
    story.title = rows[0][0]
    story.first_at, story.last_at = rows[0][1], max(row[1] for row in rows)
    story.entry_count = len(rows)
    story.source_count = len({row[2] for row in rows})
    story.updated_at = to_db(now)
    story.dirty = True
    story.revision += 1
    return True


def open_stories(session: Session, since: datetime) -> int:
    """Stories that took a report since `since`: those still open to new reports."""
    return int(
        session.exec(
            select(func.count()).select_from(Story).where(col(Story.last_at) >= to_db(since))
        ).one()
    )


def _story_ids_for(session: Session, keys: set[str], now: datetime) -> dict[str, int]:
    found = {s.key: s.id for s in session.exec(select(Story).where(col(Story.key).in_(list(keys))))}
    for key in keys - set(found):
        story = Story(key=key, first_at=to_db(now), last_at=to_db(now), updated_at=to_db(now))
        session.add(story)
        session.flush()
        found[key] = story.id
    return {k: v for k, v in found.items() if v is not None}


def _doc(row: Any) -> ClusterDoc:
    entry_id, title, text, url, sort_at, language, source_name, source_language = row[:8]
    return ClusterDoc(
        id=str(entry_id),
        title=title,
        text=text,
        url=url,
        published=from_db(sort_at),
        source=source_name,
        lang=primary_language(language or source_language or ""),
        host=(urlsplit(url).hostname or "") if url else "",
    )
