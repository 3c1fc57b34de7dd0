"""Queries of the publish step: the reports of stories and of configured timelines.

Reports are read as plain column rows, never whole ORM rows: publishing needs
neither an entry's vector nor, unless a timeline's words are matched, its text.
A configured timeline holds every story its words ever matched, so it is read
by its newest events only, and SQL counts the rest for its description; matching
a new rule against every story streams the stories a batch at a time.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator, Sequence
from typing import Any, NamedTuple

from sqlalchemy import String, and_, cast, func, literal, literal_column
from sqlalchemy import select as select_columns
from sqlmodel import Session, col, select

from aggregator.store.models import Entry, Source, Story, TimelineStory
from aggregator.store.views import EntryView, ReportSpan, StoryView, from_db, maybe_from_db

STORY_BATCH = 1000  # stories whose reports are read at once when matching every story
_KEYS_CHUNK = 500  # event keys per IN (...): well under every database's parameter limit

_STORY_COLUMNS = (
    col(Story.id),
    col(Story.key),
    col(Story.title),
    col(Story.first_at),
    col(Story.last_at),
    col(Story.entry_count),
    col(Story.source_count),
    col(Story.updated_at),
    col(Story.revision),
)


class ReportText(NamedTuple):
    """What a configured timeline's words are matched against: one report's wording."""

    title: str
    text: str


def story_views(session: Session, query: Any) -> list[StoryView]:
    """The stories `query` (a select of Story's rows, filtered and ordered) finds."""
    columns = query.with_only_columns(*_STORY_COLUMNS)
    return [
        StoryView(
            id=row[0],
            key=row[1],
            title=row[2],
            first_at=from_db(row[3]),
            last_at=from_db(row[4]),
            entry_count=row[5],
            source_count=row[6],
            updated_at=from_db(row[7]),
            revision=row[8],
        )
        for row in session.connection().execute(columns)
    ]


def story_reports(session: Session, story_ids: Sequence[int], *, text: bool) -> list[EntryView]:
    """The entries of these stories, oldest first; `text` empty unless asked for."""
    return _reports(session, col(Entry.story_id).in_(list(story_ids)), text=text)


def story_texts(
    session: Session, after: int, min_sources: int
) -> tuple[int | None, list[tuple[int, ReportText]]]:
    """The next STORY_BATCH stories with ids above `after` and at least `min_sources`
    outlets: the last one's id (None: no more), and (story id, its report's wording)
    by story id."""
    stories = (
        select_columns(col(Story.id))
        .where(col(Story.id) > after, col(Story.source_count) >= min_sources)
        .order_by(col(Story.id))
        .limit(STORY_BATCH)
    )
    ids = list(session.connection().execute(stories).scalars())
    if not ids:
        return None, []
    query = (
        select_columns(col(Entry.story_id), col(Entry.title), col(Entry.text))
        .where(col(Entry.story_id).in_(ids))
        .order_by(col(Entry.story_id), col(Entry.sort_at), col(Entry.id))
    )
    rows: Any = session.connection().execute(query)
    return ids[-1], [(story, ReportText(title, text)) for story, title, text in rows]


def timeline_span(session: Session, timeline: str) -> ReportSpan:
    """What the timeline's description states of all its reports, copies included."""
    held = _in_timeline(timeline)
    count, first, latest = (
        session.connection()
        .execute(
            select_columns(func.count(), func.min(col(Entry.sort_at)), func.max(col(Entry.sort_at)))
            .select_from(Entry)
            .where(held)
        )
        .one()
    )
    outlets = (
        select_columns(col(Source.name))
        .join(Entry, col(Entry.source_id) == col(Source.id))
        .where(held)
        .distinct()
    )
    names = session.connection().execute(outlets).scalars()
    return ReportSpan(
        sources=tuple(sorted(set(names))),
        first_report=maybe_from_db(first),
        latest_report=maybe_from_db(latest),
        reports=count,
    )


def timeline_newest(session: Session, timeline: str, events: int) -> list[EntryView]:
    """The reports of the timeline's `events` newest events (by their latest report),
    of any tied with the last of them, and their copies; oldest first.

    An event is keyed as `aggregator.timelines.build_items` keys it: its event key,
    else (stored before events) the entry's own id.
    """
    held = _in_timeline(timeline)
    # No bound parameter in it: PostgreSQL must see the grouped expression as selected.
    empty: Any = literal_column("''")
    key = func.coalesce(func.nullif(col(Entry.event_key), empty), cast(col(Entry.id), String))
    latest = func.max(col(Entry.sort_at))
    ranked = (
        select_columns(key, latest)
        .where(held, col(Entry.duplicate_of).is_(None))
        .group_by(key)
        .order_by(latest.desc())
        .limit(events)
    )
    newest = session.connection().execute(ranked).all()
    if len(newest) == events:
        # Events tied with the last one listed are ranked by their ids in Python.
        tied = (
            select_columns(key)
            .where(held, col(Entry.duplicate_of).is_(None))
            .group_by(key)
            .having(latest >= newest[-1][1])
        )
        keys = sorted(session.connection().execute(tied).scalars())
    else:
        keys = sorted(row[0] for row in newest)
    found: list[EntryView] = []
    for start in range(0, len(keys), _KEYS_CHUNK):
        chunk = keys[start : start + _KEYS_CHUNK]
        reports = select_columns(col(Entry.id)).where(
            held, col(Entry.duplicate_of).is_(None), key.in_(chunk)
        )
        found += _reports(session, and_(held, col(Entry.id).in_(reports)), text=False)
        found += _reports(session, and_(held, col(Entry.duplicate_of).in_(reports)), text=False)
    return sorted(found, key=lambda entry: (entry.published, entry.id))


def _in_timeline(timeline: str) -> Any:
    stories = select(TimelineStory.story_id).where(TimelineStory.timeline == timeline)
    return col(Entry.story_id).in_(stories)


def _reports(session: Session, where: Any, *, text: bool) -> list[EntryView]:
    wording = col(Entry.text) if text else literal("").label("text")
    query = (
        select_columns(
            col(Entry.id),
            col(Entry.story_id),
            col(Entry.duplicate_of),
            col(Entry.title),
            col(Entry.url),
            col(Entry.summary),
            wording,
            col(Entry.language),
            col(Entry.sort_at),
            col(Entry.first_seen_at),
            col(Entry.changed_at),
            col(Entry.event_key),
            col(Source.name),
            col(Source.url),
            col(Source.site_url),
            col(Source.language),
        )
        .join(Source, col(Source.id) == col(Entry.source_id))
        .where(where)
        .order_by(col(Entry.sort_at), col(Entry.id))
    )
    return [_view(row) for row in session.connection().execute(query)]


def _view(row: Any) -> EntryView:
    return EntryView(
        id=row[0],
        story_id=row[1],
        duplicate_of=row[2],
        title=row[3],
        url=row[4],
        summary=row[5],
        text=row[6],
        language=row[7] or row[15],
        outlet=row[12],
        outlet_url=row[13],
        outlet_site=row[14],
        published=from_db(row[8]),
        first_seen=from_db(row[9]),
        changed=from_db(row[10]),
        event_key=row[11],
    )


def grouped(rows: Iterable[tuple[int, ReportText]]) -> Iterator[tuple[int, list[ReportText]]]:
    """(story id, its reports' wording) from rows ordered by story id."""
    story: int | None = None
    texts: list[ReportText] = []
    for story_id, wording in rows:
        if story_id != story:
            if story is not None:
                yield story, texts
            story, texts = story_id, []
        texts.append(wording)
    if story is not None:
        yield story, texts
