"""Opening the database and the queries the pipeline runs against it.

Each method is one transaction. Fetch state is written in the same transaction
as the entries it describes, so a crash never leaves one without the other.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

from sqlalchemy import event, func
from sqlalchemy.engine import Engine
from sqlalchemy.exc import OperationalError
from sqlmodel import Session, SQLModel, col, create_engine, delete, select

from aggregator.dedupe import canonical_url
from aggregator.errors import StoreError
from aggregator.settings import SourceConfig
from aggregator.store.models import (
    Entry,
    FetchState,
    PublishedDocument,
    Source,
    Story,
    TimelineStory,
)
from aggregator.types import (
    Assignment,
    ClusterDoc,
    Document,
    EntryData,
    FetchRequest,
    PollOutcome,
)


def to_db(moment: datetime) -> datetime:
    """Aware UTC, the form every table stores (a naive time is taken as UTC)."""
    return moment.replace(tzinfo=UTC) if moment.tzinfo is None else moment.astimezone(UTC)


def from_db(moment: datetime) -> datetime:
    return moment.replace(tzinfo=UTC) if moment.tzinfo is None else moment.astimezone(UTC)


def _maybe(moment: datetime | None) -> datetime | None:
    return None if moment is None else from_db(moment)


@dataclass(frozen=True)
class IngestCounts:
    new: int = 0
    updated: int = 0
    unchanged: int = 0


@dataclass(frozen=True)
class SourceStatus:
    """One line of `aggregator sources list`."""

    id: int
    name: str
    url: str
    enabled: bool
    in_config: bool
    status: str
    last_http_status: int | None
    last_error_code: str | None
    last_error: str | None
    error_count: int
    last_checked_at: datetime | None
    next_check_at: datetime | None
    entries: int


@dataclass(frozen=True)
class EntryView:
    """An entry with its outlet, as the publisher needs it."""

    id: int
    story_id: int | None
    duplicate_of: int | None
    title: str
    url: str
    summary: str
    text: str
    language: str | None
    outlet: str
    outlet_url: str
    outlet_site: str | None
    published: datetime  # the outlet's date, else when we first saw it
    first_seen: datetime
    changed: datetime


@dataclass(frozen=True)
class StoryView:
    id: int
    key: str
    title: str
    first_at: datetime
    last_at: datetime
    entry_count: int
    source_count: int
    updated_at: datetime


def _sqlite_pragmas(dbapi_connection: Any, _record: Any) -> None:
    # WAL lets the feed server read while the worker writes; the busy timeout
    # makes a writer wait for another instead of failing at once.
    cursor = dbapi_connection.cursor()
    cursor.execute("PRAGMA journal_mode=WAL")
    cursor.execute("PRAGMA synchronous=NORMAL")
    cursor.execute("PRAGMA busy_timeout=30000")
    cursor.execute("PRAGMA foreign_keys=ON")
    cursor.close()


def open_store(url: str, *, create: bool = True) -> Store:
    """Connect, and create the schema on first use."""
    if url.startswith("sqlite:///"):
        path = url.removeprefix("sqlite:///")
        if path and path != ":memory:":
            Path(path).parent.mkdir(parents=True, exist_ok=True)
        engine = create_engine(url, connect_args={"check_same_thread": False, "timeout": 30})
        event.listen(engine, "connect", _sqlite_pragmas)
    else:
        engine = create_engine(url, pool_pre_ping=True)
    store = Store(engine)
    if create:
        try:
            SQLModel.metadata.create_all(engine)
        except OperationalError as exc:
            raise StoreError(
                f"cannot open the database {engine.url.render_as_string(hide_password=True)}: "
                f"{exc.orig}; check database_url and that the server is running"
            ) from exc
    return store


class Store:
    def __init__(self, engine: Engine) -> None:
        self.engine = engine

    def session(self) -> Session:
        return Session(self.engine, expire_on_commit=False)

    def close(self) -> None:
        self.engine.dispose()

    def ping(self) -> bool:
        try:
            with self.session() as session:
                session.exec(select(1)).one()
            return True
        except Exception:
            return False

    # -- sources -----------------------------------------------------------

    def sync_sources(self, configs: Sequence[SourceConfig], now: datetime) -> None:
        """Make the source rows match the config; new sources are due at once."""
        wanted = {c.name: c for c in configs}
        with self.session() as session:
            rows = {s.name: s for s in session.exec(select(Source)).all()}
            for name, config in wanted.items():
                row = rows.get(name)
                if row is None:
                    row = Source(name=name, url=config.url, created_at=to_db(now))
                    session.add(row)
                    session.flush()
                    assert row.id is not None
                    session.add(FetchState(source_id=row.id, next_check_at=to_db(now)))
                elif row.url != config.url:
                    row.url = config.url
                    state = session.get(FetchState, row.id)
                    if state is not None:  # a new address starts afresh
                        state.etag = state.last_modified = state.body_hash = None
                        state.next_check_at = to_db(now)
                        state.status, state.error_count = "new", 0
                row.enabled = config.enabled
                row.in_config = True
                row.language = config.language
                row.tags = ",".join(config.tags)
                row.interval_s = config.interval
            for name, row in rows.items():
                if name not in wanted:
                    row.in_config = False
            session.commit()

    def due_requests(self, now: datetime, limit: int | None = None) -> list[FetchRequest]:
        with self.session() as session:
            query = (
                select(Source, FetchState)
                .join(FetchState, col(FetchState.source_id) == col(Source.id))
                .where(col(Source.enabled), col(Source.in_config))
                .where(col(FetchState.status) != "gone")
                .where(col(FetchState.next_check_at) <= to_db(now))
                .order_by(col(FetchState.next_check_at), col(Source.id))
            )
            if limit is not None:
                query = query.limit(limit)
            return [
                FetchRequest(
                    source_id=source.id or 0,
                    name=source.name,
                    url=source.url,
                    etag=state.etag,
                    last_modified=state.last_modified,
                    body_hash=state.body_hash,
                )
                for source, state in session.exec(query).all()
            ]

    def fetch_state(self, source_id: int) -> FetchStateView:
        with self.session() as session:
            source = session.get(Source, source_id)
            state = session.get(FetchState, source_id)
            if source is None or state is None:
                raise StoreError(f"source {source_id} does not exist")
            return FetchStateView(
                interval_s=source.interval_s,
                error_count=state.error_count,
                ttl_s=state.ttl_s,
                redirect_url=state.redirect_url,
                redirect_count=state.redirect_count,
            )

    def record_poll(
        self,
        source_id: int,
        outcome: PollOutcome,
        entries: Sequence[EntryData] = (),
    ) -> IngestCounts:
        """Store a poll's entries and its fetch state in one transaction."""
        with self.session() as session:
            source = session.get(Source, source_id)
            state = session.get(FetchState, source_id)
            if source is None or state is None:
                raise StoreError(f"source {source_id} does not exist")
            counts = _upsert_entries(session, source_id, entries, outcome.checked_at)
            _apply_outcome(source, state, outcome)
            session.commit()
            return counts

    def source_statuses(self) -> list[SourceStatus]:
        with self.session() as session:
            counts = dict(
                session.exec(
                    select(Entry.source_id, func.count()).group_by(col(Entry.source_id))
                ).all()
            )
            rows = session.exec(
                select(Source, FetchState)
                .join(FetchState, col(FetchState.source_id) == col(Source.id))
                .order_by(col(Source.name))
            ).all()
            return [
                SourceStatus(
                    id=source.id or 0,
                    name=source.name,
                    url=source.url,
                    enabled=source.enabled,
                    in_config=source.in_config,
                    status=state.status,
                    last_http_status=state.last_http_status,
                    last_error_code=state.last_error_code,
                    last_error=state.last_error,
                    error_count=state.error_count,
                    last_checked_at=_maybe(state.last_checked_at),
                    next_check_at=_maybe(state.next_check_at),
                    entries=counts.get(source.id or 0, 0),
                )
                for source, state in rows
            ]

    # -- clustering --------------------------------------------------------

    def pending_docs(self, limit: int = 5000) -> list[ClusterDoc]:
        """Entries not yet clustered, in the order the clusterer must see them."""
        with self.session() as session:
            rows = session.exec(
                select(Entry, Source)
                .join(Source, col(Source.id) == col(Entry.source_id))
                .where(col(Entry.clustered).is_(False))
                .order_by(col(Entry.sort_at), col(Entry.id))
                .limit(limit)
            ).all()
            return [_cluster_doc(entry, source) for entry, source in rows]

    def latest_clustered_at(self) -> datetime | None:
        with self.session() as session:
            latest = session.exec(select(func.max(Entry.sort_at)).where(col(Entry.clustered))).one()
            return None if latest is None else from_db(latest)

    def clustered_since(self, since: datetime) -> list[tuple[ClusterDoc, Assignment]]:
        """Stored decisions inside the clustering window, to rebuild the clusterer after a restart."""
        with self.session() as session:
            rows = session.exec(
                select(Entry, Source, Story)
                .join(Source, col(Source.id) == col(Entry.source_id))
                .join(Story, col(Story.id) == col(Entry.story_id))
                .where(col(Entry.clustered), col(Entry.sort_at) >= to_db(since))
                .order_by(col(Entry.sort_at), col(Entry.id))
            ).all()
            return [
                (
                    _cluster_doc(entry, source),
                    Assignment(
                        doc_id=str(entry.id),
                        story_id=story.key,
                        duplicate_of=None
                        if entry.duplicate_of is None
                        else str(entry.duplicate_of),
                    ),
                )
                for entry, source, story in rows
            ]

    def save_assignments(self, assignments: Sequence[Assignment], now: datetime) -> set[int]:
        """Attach entries to stories (creating new ones); returns the story ids touched."""
        touched: set[int] = set()
        with self.session() as session:
            story_ids = _story_ids_for(session, {a.story_id for a in assignments}, now)
            for assignment in assignments:
                entry = session.get(Entry, int(assignment.doc_id))
                if entry is None:
                    continue
                entry.story_id = story_ids[assignment.story_id]
                entry.duplicate_of = (
                    None if assignment.duplicate_of is None else int(assignment.duplicate_of)
                )
                entry.clustered = True
                touched.add(entry.story_id)
            session.flush()
            for story_id in touched:
                _refresh_story(session, story_id, now)
            session.commit()
        return touched

    # -- publishing --------------------------------------------------------

    def dirty_stories(self) -> list[StoryView]:
        with self.session() as session:
            rows = session.exec(select(Story).where(col(Story.dirty))).all()
            return [_story_view(s) for s in rows]

    def stories(
        self, ids: Iterable[int] | None = None, *, min_sources: int = 1, limit: int | None = None
    ) -> list[StoryView]:
        """Stories with enough outlets, most recently active first."""
        with self.session() as session:
            query = select(Story).where(col(Story.source_count) >= min_sources)
            if ids is not None:
                query = query.where(col(Story.id).in_(list(ids)))
            query = query.order_by(col(Story.last_at).desc(), col(Story.id).desc())
            if limit is not None:
                query = query.limit(limit)
            return [_story_view(s) for s in session.exec(query).all()]

    def story_entries(self, story_ids: Iterable[int]) -> list[EntryView]:
        with self.session() as session:
            rows = session.exec(
                select(Entry, Source)
                .join(Source, col(Source.id) == col(Entry.source_id))
                .where(col(Entry.story_id).in_(list(story_ids)))
                .order_by(col(Entry.sort_at), col(Entry.id))
            ).all()
            return [_entry_view(entry, source) for entry, source in rows]

    def mark_published(self, story_ids: Iterable[int]) -> None:
        with self.session() as session:
            for story in session.exec(select(Story).where(col(Story.id).in_(list(story_ids)))):
                story.dirty = False
            session.commit()

    def timeline_story_ids(self, timeline: str) -> set[int]:
        with self.session() as session:
            return set(
                session.exec(
                    select(TimelineStory.story_id).where(TimelineStory.timeline == timeline)
                ).all()
            )

    def add_timeline_stories(self, timeline: str, story_ids: Iterable[int]) -> None:
        with self.session() as session:
            known = set(
                session.exec(
                    select(TimelineStory.story_id).where(TimelineStory.timeline == timeline)
                ).all()
            )
            for story_id in set(story_ids) - known:
                session.add(TimelineStory(timeline=timeline, story_id=story_id))
            session.commit()

    def put_documents(self, documents: Sequence[Document]) -> None:
        with self.session() as session:
            for doc in documents:
                row = session.get(PublishedDocument, doc.path)
                if row is None:
                    session.add(
                        PublishedDocument(
                            path=doc.path,
                            content_type=doc.content_type,
                            body=doc.body,
                            etag=doc.etag,
                            updated_at=to_db(doc.updated),
                        )
                    )
                elif row.etag != doc.etag:
                    row.content_type, row.body, row.etag = doc.content_type, doc.body, doc.etag
                    row.updated_at = to_db(doc.updated)
            session.commit()

    def document(self, path: str) -> Document | None:
        with self.session() as session:
            row = session.get(PublishedDocument, path)
            return None if row is None else _document(row)

    def documents(self) -> list[Document]:
        with self.session() as session:
            return [_document(r) for r in session.exec(select(PublishedDocument)).all()]

    def delete_documents(self, paths: Iterable[str]) -> None:
        with self.session() as session:
            session.exec(
                delete(PublishedDocument).where(col(PublishedDocument.path).in_(list(paths)))
            )
            session.commit()

    def counts(self) -> dict[str, int]:
        with self.session() as session:
            return {
                "sources": session.exec(select(func.count()).select_from(Source)).one(),
                "entries": session.exec(select(func.count()).select_from(Entry)).one(),
                "stories": session.exec(select(func.count()).select_from(Story)).one(),
                "duplicates": session.exec(
                    select(func.count())
                    .select_from(Entry)
                    .where(col(Entry.duplicate_of).is_not(None))
                ).one(),
            }


@dataclass(frozen=True)
class FetchStateView:
    """What the next-check policy needs to know about a source."""

    interval_s: float | None
    error_count: int
    ttl_s: float | None
    redirect_url: str | None
    redirect_count: int


def _apply_outcome(source: Source, state: FetchState, outcome: PollOutcome) -> None:
    state.last_checked_at = to_db(outcome.checked_at)
    state.next_check_at = to_db(outcome.next_check_at)
    state.status = outcome.status
    state.last_http_status = outcome.http_status
    state.redirect_url, state.redirect_count = outcome.redirect_url, outcome.redirect_count
    if outcome.status == "ok":
        state.error_count = 0
        state.last_error_code = state.last_error = None
        state.last_success_at = to_db(outcome.checked_at)
    else:
        state.error_count += 1
        state.last_error_code, state.last_error = outcome.error_code, outcome.error
    if not outcome.keep_validators:
        state.etag, state.last_modified = outcome.etag, outcome.last_modified
        state.body_hash = outcome.body_hash
    if outcome.ttl_s is not None:
        state.ttl_s = outcome.ttl_s
    if outcome.feed_title:
        source.title = outcome.feed_title
    if outcome.site_url:
        source.site_url = outcome.site_url
    if outcome.new_url:
        source.url = outcome.new_url


def _upsert_entries(
    session: Session, source_id: int, entries: Sequence[EntryData], now: datetime
) -> IngestCounts:
    unique: dict[str, EntryData] = {}
    for data in entries:
        unique.setdefault(data.key, data)  # a feed listing one guid twice keeps the first
    if not unique:
        return IngestCounts()
    existing = {
        e.key: e
        for e in session.exec(
            select(Entry).where(Entry.source_id == source_id, col(Entry.key).in_(list(unique)))
        ).all()
    }
    new = updated = 0
    for key, data in unique.items():
        row = existing.get(key)
        if row is None:
            session.add(_new_entry(source_id, data, now))
            new += 1
        elif row.content_hash != data.content_hash:
            _update_entry(session, row, data, now)
            updated += 1
    return IngestCounts(new=new, updated=updated, unchanged=len(unique) - new - updated)


def _new_entry(source_id: int, data: EntryData, now: datetime) -> Entry:
    published = data.published or data.updated
    return Entry(
        source_id=source_id,
        key=data.key,
        url=data.link or "",
        canonical_url=canonical_url(data.link or ""),
        title=data.title,
        summary=data.summary_html,
        text=data.text,
        author=data.author,
        language=data.language,
        content_hash=data.content_hash,
        published_at=None if published is None else to_db(published),
        updated_at=None if data.updated is None else to_db(data.updated),
        first_seen_at=to_db(now),
        changed_at=to_db(now),
        # an entry dated in the future by a wrong clock is ordered as if seen now
        sort_at=to_db(min(published, now) if published else now),
    )


def _update_entry(session: Session, row: Entry, data: EntryData, now: datetime) -> None:
    row.title, row.summary, row.text = data.title, data.summary_html, data.text
    row.author, row.content_hash = data.author, data.content_hash
    row.url, row.canonical_url = data.link or row.url, canonical_url(data.link or row.url)
    row.updated_at = None if data.updated is None else to_db(data.updated)
    row.changed_at = to_db(now)
    if row.story_id is not None:
        story = session.get(Story, row.story_id)
        if story is not None:
            story.dirty = True


def _story_ids_for(session: Session, keys: set[str], now: datetime) -> dict[str, int]:
    found = {s.key: s.id for s in session.exec(select(Story).where(col(Story.key).in_(list(keys))))}
    for key in keys - set(found):
        story = Story(key=key, first_at=to_db(now), last_at=to_db(now), updated_at=to_db(now))
        session.add(story)
        session.flush()
        found[key] = story.id
    return {k: v for k, v in found.items() if v is not None}


def _refresh_story(session: Session, story_id: int, now: datetime) -> None:
    story = session.get(Story, story_id)
    if story is None:
        return
    entries = session.exec(
        select(Entry).where(Entry.story_id == story_id).order_by(col(Entry.sort_at), col(Entry.id))
    ).all()
    if not entries:
        return
    story.title = entries[0].title
    story.first_at, story.last_at = entries[0].sort_at, max(e.sort_at for e in entries)
    story.entry_count = len(entries)
    story.source_count = len({e.source_id for e in entries})
    story.updated_at = to_db(now)
    story.dirty = True


def _cluster_doc(entry: Entry, source: Source) -> ClusterDoc:
    return ClusterDoc(
        id=str(entry.id),
        title=entry.title,
        text=entry.text,
        url=entry.url,
        published=from_db(entry.sort_at),
        source=source.name,
        lang=entry.language or source.language or "",
        host=_host(entry.url),
    )


def _host(url: str) -> str:
    return (urlsplit(url).hostname or "") if url else ""


def _entry_view(entry: Entry, source: Source) -> EntryView:
    return EntryView(
        id=entry.id or 0,
        story_id=entry.story_id,
        duplicate_of=entry.duplicate_of,
        title=entry.title,
        url=entry.url,
        summary=entry.summary,
        text=entry.text,
        language=entry.language or source.language,
        outlet=source.name,
        outlet_url=source.url,
        outlet_site=source.site_url,
        published=from_db(entry.sort_at),
        first_seen=from_db(entry.first_seen_at),
        changed=from_db(entry.changed_at),
    )


def _story_view(story: Story) -> StoryView:
    return StoryView(
        id=story.id or 0,
        key=story.key,
        title=story.title,
        first_at=from_db(story.first_at),
        last_at=from_db(story.last_at),
        entry_count=story.entry_count,
        source_count=story.source_count,
        updated_at=from_db(story.updated_at),
    )


def _document(row: PublishedDocument) -> Document:
    return Document(
        path=row.path,
        content_type=row.content_type,
        body=row.body,
        etag=row.etag,
        updated=from_db(row.updated_at),
    )
