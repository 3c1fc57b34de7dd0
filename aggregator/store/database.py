"""Opening the database, and the Store: the one object the stages query it through.

Each method is one transaction. Fetch state is written in the same transaction
as the entries it describes, so a crash never leaves one without the other.
The in-order work (clustering, publishing, retention) is fenced by the leader
lease when a `Term` is given, so a worker that lost the lease writes nothing.
Queries live by concern beside this file: polling, clustering, leadership, retention.
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from datetime import UTC, datetime
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

from sqlalchemy import event, func, update
from sqlalchemy.engine import Engine
from sqlalchemy.exc import OperationalError
from sqlmodel import Session, col, create_engine, delete, select

from aggregator.errors import StoreError
from aggregator.settings import SourceConfig
from aggregator.store import (
    clustering,
    leadership,
    membership,
    migrate,
    polling,
    publishing,
    retention,
    snapshots,
)
from aggregator.store.clustering import StoredDecision
from aggregator.store.leadership import Term
from aggregator.store.models import (
    Entry,
    FetchState,
    PublishedDocument,
    Source,
    Story,
    TimelineStory,
)
from aggregator.store.portable import retrying
from aggregator.store.publishing import ReportText
from aggregator.store.snapshots import SnapshotHeader
from aggregator.store.views import (
    EntryView,
    FetchStateView,
    IngestCounts,
    LeaderView,
    ReportSpan,
    RetentionReport,
    SourceStatus,
    StoryView,
    from_db,
    to_db,
)
from aggregator.types import Assignment, ClusterDoc, Document, EntryData, FetchRequest, PollOutcome

__all__ = [
    "EntryView",
    "FetchStateView",
    "IngestCounts",
    "LeaderView",
    "ReportSpan",
    "ReportText",
    "RetentionReport",
    "SnapshotHeader",
    "SourceStatus",
    "StoredDecision",
    "Store",
    "StoryView",
    "Term",
    "from_db",
    "open_store",
    "to_db",
]


def utc_now() -> datetime:
    return datetime.now(UTC)


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
    """Connect; with `create`, bring the schema to the current revision through Alembic.

    `create=False` uses the schema as it is (see `migrate.ensure_current`).
    """
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
        migrate.upgrade(engine)
    return store


class Store:
    def __init__(self, engine: Engine) -> None:
        self.engine = engine

    def session(self) -> Session:
        return Session(self.engine, expire_on_commit=False)

    @contextmanager
    def _fenced(self, term: Term | None, now: datetime) -> Iterator[Session | None]:
        """A session whose writes belong to `term` (its lease renewed first, in the same
        transaction), or None when that term was lost; without a term, a plain session."""
        with self.session() as session:
            if term is not None and not leadership.fence(session, term, now):
                session.rollback()
                yield None
            else:
                yield session

    def close(self) -> None:
        self.engine.dispose()

    def ping(self) -> bool:
        try:
            with self.session() as session:
                session.exec(select(1)).one()
            return True
        except Exception:
            return False

    # -- sources and polls (store/polling.py) -------------------------------

    def sync_sources(self, configs: Sequence[SourceConfig], now: datetime) -> None:
        """Make the source rows match the config; new sources are due at once."""
        retrying(self.session, lambda session: polling.sync_sources(session, configs, now))

    def claim_due(
        self,
        now: datetime,
        owner: str,
        *,
        lease_s: float,
        limit: int,
        due_by: datetime | None = None,
    ) -> list[FetchRequest]:
        """Lease due sources to `owner`; no other worker gets them until recorded or expired."""
        return retrying(
            self.session,
            lambda session: polling.claim_due(session, now, owner, lease_s, limit, due_by),
        )

    def release_claims(self, owner: str, source_ids: Sequence[int] | None = None) -> int:
        with self.session() as session:
            return polling.release_claims(session, owner, source_ids)

    def due_requests(self, now: datetime, limit: int | None = None) -> list[FetchRequest]:
        with self.session() as session:
            return polling.due_requests(session, now, limit)

    def fetch_state(self, source_id: int) -> FetchStateView:
        with self.session() as session:
            return polling.fetch_state(session, source_id)

    def poll_state(
        self, source_id: int, *, times: int = 50
    ) -> tuple[FetchStateView, list[datetime]]:
        """What deciding a poll's outcome needs, in one round: fetch state and entry times."""
        with self.session() as session:
            state = polling.fetch_state(session, source_id)
            return state, polling.recent_entry_times(session, source_id, times)

    def record_poll(
        self,
        source_id: int,
        outcome: PollOutcome,
        entries: Sequence[EntryData] = (),
        *,
        owner: str | None = None,
    ) -> IngestCounts:
        """Store a poll's entries and its fetch state (releasing `owner`'s lease) together."""
        return retrying(
            self.session,
            lambda session: polling.record_poll(session, source_id, outcome, entries, owner),
        )

    def source_statuses(self) -> list[SourceStatus]:
        with self.session() as session:
            return polling.source_statuses(session)

    def sources_in_error(self) -> int:
        with self.session() as session:
            return polling.sources_in_error(session)

    # -- what the next-check policy asks (aggregator/schedule.py) ----------

    def recent_entry_times(self, source_id: int, limit: int = 50) -> list[datetime]:
        """When the source's newest entries appeared (published, else first seen), newest first."""
        with self.session() as session:
            return polling.recent_entry_times(session, source_id, limit)

    def delay_host(self, host: str, until: datetime) -> int:
        """Hold every source on `host` (URL host name) until `until`: a host-wide rate limit.

        Sources due later than that keep their time. Returns how many sources moved.
        """
        with self.session() as session:
            rows = session.exec(
                select(Source, FetchState).join(
                    FetchState, col(FetchState.source_id) == col(Source.id)
                )
            ).all()
            moved = 0
            for source, state in rows:
                due = state.next_check_at
                if urlsplit(source.url).hostname == host and (due is None or from_db(due) < until):
                    state.next_check_at = to_db(until)
                    moved += 1
            session.commit()
            return moved

    # -- the leader lease (store/leadership.py) ------------------------------

    def acquire_leadership(
        self, owner: str, known_term: int | None, now: datetime, *, lease_s: float
    ) -> Term | None:
        """Take or renew the leader lease; None while another worker holds it."""
        term = retrying(
            self.session,
            lambda session: leadership.acquire(session, owner, known_term, now, lease_s),
        )
        return None if term is None else Term(owner, term, lease_s)

    def resign_leadership(self, owner: str) -> None:
        with self.session() as session:
            leadership.resign(session, owner)

    def leader(self) -> LeaderView | None:
        with self.session() as session:
            return leadership.current(session)

    # -- clustering (store/clustering.py) -----------------------------------

    def pending_docs(
        self, limit: int = 5000, *, vectorless_by: datetime | None = None
    ) -> list[ClusterDoc]:
        """Entries not yet clustered, in the order the clusterer must see them; with
        `vectorless_by`, those without a vector only once stored by then."""
        with self.session() as session:
            return clustering.pending_docs(session, limit, vectorless_by=vectorless_by)

    def docs_to_embed(self, entry_ids: Sequence[int]) -> list[ClusterDoc]:
        """Those of the entries still waiting for a vector, to compute it at ingest."""
        with self.session() as session:
            return clustering.docs_to_embed(session, entry_ids)

    def fill_embeddings(self, vectors: Mapping[str, bytes]) -> int:
        """Store vectors computed at ingest where none is stored yet; how many were."""
        with self.session() as session:
            filled = clustering.fill_embeddings(session, vectors)
            session.commit()
            return filled

    def latest_clustered_at(self) -> datetime | None:
        with self.session() as session:
            return clustering.latest_clustered_at(session)

    def clustered_since(
        self, since: datetime, *, embeddings: bool = False, entry_ids: Sequence[int] | None = None
    ) -> Iterator[tuple[ClusterDoc, Assignment, bytes | None]]:
        """Stored decisions inside the clustering window, to rebuild the clusterer
        (with `entry_ids`, only those entries').

        With `embeddings`, each comes with its stored vector's bytes, else None.
        """
        with self.session() as session:
            yield from clustering.clustered_since(
                session, since, embeddings=embeddings, entry_ids=entry_ids
            )

    def decisions_since(self, since: datetime) -> Iterator[StoredDecision]:
        """Where each clustered entry inside the window went, as stored now, in replay
        order: (entry id, time, story key, the entry it copies, event key), streamed."""
        with self.session() as session:
            yield from clustering.decisions_since(session, since)

    # -- clusterer snapshots (store/snapshots.py) ------------------------------

    def save_snapshot(
        self,
        write: Callable[[snapshots.PutPiece], str],
        *,
        fingerprint: str,
        latest_at: datetime,
        decisions: int,
        now: datetime,
        term: Term | None = None,
    ) -> tuple[int, int] | None:
        """Store a snapshot of the clusterer that `write` makes a piece at a time (it
        returns the snapshot's checksum); older ones beyond the newest few go. Its id
        and size in bytes, or None (and nothing stored) if `term` was lost.

        The pieces are written a few megabytes per transaction while `write` runs, as a
        draft that no reader sees; the snapshot is stored when its header is completed,
        fenced by `term`. A draft left by a failure is dropped here or by the next save.
        """
        with self._fenced(term, now) as session:
            if session is None:
                return None
            snapshot_id = snapshots.start(
                session,
                fingerprint=fingerprint,
                created_at=now,
                latest_at=latest_at,
                decisions=decisions,
                term=0 if term is None else term.term,
            )
            session.commit()
        try:
            pieces = snapshots.Pieces(self.session, snapshot_id)
            checksum = write(pieces.put)
            pieces.flush()
            with self._fenced(term, now) as session:
                if session is not None and snapshots.complete(
                    session, snapshot_id, checksum=checksum, size=pieces.size
                ):
                    session.commit()
                    return snapshot_id, pieces.size
        except BaseException:
            with contextlib.suppress(Exception):  # else the next save drops the draft
                self._drop_snapshot(snapshot_id)
            raise
        self._drop_snapshot(snapshot_id)
        return None

    def _drop_snapshot(self, snapshot_id: int) -> None:
        with self.session() as session:
            snapshots.drop(session, [snapshot_id])
            session.commit()

    def snapshot_headers(self) -> list[SnapshotHeader]:
        """The stored snapshots of the clusterer, newest first, without their parts."""
        with self.session() as session:
            return snapshots.headers(session)

    def snapshot_pieces(self, snapshot_id: int) -> list[snapshots.PieceHeader]:
        """A snapshot's pieces by part name and seq, without their bodies."""
        with self.session() as session:
            return snapshots.pieces(session, snapshot_id)

    def snapshot_piece(self, snapshot_id: int, name: str, seq: int) -> bytes | None:
        """One piece of a snapshot's part, or None if it is gone."""
        with self.session() as session:
            return snapshots.piece(session, snapshot_id, name, seq)

    def stored_embeddings(self, entry_ids: Iterable[str]) -> dict[str, bytes]:
        """The vectors stored for those entries (by entry id); entries without one are left out."""
        with self.session() as session:
            return clustering.stored_embeddings(session, entry_ids)

    def save_embeddings(
        self, vectors: Mapping[str, bytes], now: datetime, term: Term | None = None
    ) -> bool:
        """Store entries' vectors (by entry id); False (and nothing stored) if `term` was lost."""
        with self._fenced(term, now) as session:
            if session is None:
                return False
            clustering.save_embeddings(session, vectors)
            session.commit()
            return True

    def merge_stories(
        self,
        merges: Sequence[tuple[str, str]],
        now: datetime,
        term: Term | None = None,
        *,
        events: Sequence[tuple[str, str]] = (),
    ) -> list[int] | None:
        """Apply the clusterer's (absorbed key, into key) merges in order, then its event
        merges (absorbed event key, into event key), in one transaction.

        Returns the ids of the stories retired, or None (and nothing changed) if
        `term` was lost.
        """
        with self._fenced(term, now) as session:
            if session is None:
                return None
            retired = clustering.merge_stories(session, merges, now)
            clustering.merge_events(session, events)
            session.commit()
            return retired

    def save_assignments(
        self, assignments: Sequence[Assignment], now: datetime, term: Term | None = None
    ) -> set[int] | None:
        """Attach entries to stories; the story ids touched, or None if `term` was lost."""
        with self._fenced(term, now) as session:
            if session is None:
                return None
            touched = clustering.save_assignments(session, assignments, now)
            session.commit()
            return touched

    def open_stories(self, since: datetime) -> int:
        with self.session() as session:
            return clustering.open_stories(session, since)

    # -- retention (store/retention.py) -------------------------------------

    def expire_entries(
        self, cutoff: datetime, now: datetime, term: Term | None = None, *, batch: int = 1000
    ) -> RetentionReport | None:
        """Remove entries first stored before `cutoff`, keeping tombstones, and tombstones
        no feed listed since `cutoff`; None if `term` was lost."""
        entries, stories = 0, list[int]()
        while True:
            with self._fenced(term, now) as session:
                if session is None:
                    return None
                removed, emptied = retention.expire_batch(session, cutoff, now, batch)
                tombstones = 0 if removed == batch else retention.expire_tombstones(session, cutoff)
                session.commit()
            entries, stories = entries + removed, stories + emptied
            if removed < batch:
                return RetentionReport(
                    entries=entries, stories=tuple(stories), tombstones=tombstones
                )

    def tombstones(self) -> int:
        with self.session() as session:
            return retention.tombstone_count(session)

    # -- publishing --------------------------------------------------------

    def dirty_stories(self) -> list[StoryView]:
        with self.session() as session:
            return publishing.story_views(session, select(Story).where(col(Story.dirty)))

    def stories(
        self,
        ids: Iterable[int] | None = None,
        *,
        min_sources: int = 1,
        limit: int | None = None,
        active_since: datetime | None = None,
    ) -> list[StoryView]:
        """Stories with enough outlets, most recently active first."""
        with self.session() as session:
            query = select(Story).where(col(Story.source_count) >= min_sources)
            if ids is not None:
                query = query.where(col(Story.id).in_(list(ids)))
            if active_since is not None:
                query = query.where(col(Story.last_at) >= to_db(active_since))
            query = query.order_by(col(Story.last_at).desc(), col(Story.id).desc())
            if limit is not None:
                query = query.limit(limit)
            return publishing.story_views(session, query)

    def story_entries(self, story_ids: Iterable[int], *, text: bool = True) -> list[EntryView]:
        """The stories' entries, oldest first; without `text`, their text is left empty
        (only matching a timeline's words reads it)."""
        with self.session() as session:
            return publishing.story_reports(session, list(story_ids), text=text)

    def story_texts(self, min_sources: int = 1) -> Iterator[tuple[int, list[ReportText]]]:
        """(story id, the wording of each of its reports) of every story with enough
        outlets, by story id, read a batch of stories at a time."""
        after: int | None = 0
        while after is not None:
            with self.session() as session:
                after, rows = publishing.story_texts(session, after, min_sources)
            yield from publishing.grouped(rows)

    def timeline_reports(self, timeline: str, events: int) -> tuple[list[EntryView], ReportSpan]:
        """A configured timeline's newest `events` events (with any tied with the last),
        their reports and copies oldest first, and the facts of all of its reports."""
        with self.session() as session:
            newest = publishing.timeline_newest(session, timeline, events)
            return newest, publishing.timeline_span(session, timeline)

    def mark_published(
        self, stories: Iterable[StoryView], now: datetime, term: Term | None = None
    ) -> bool:
        """Mark the revisions rendered as published; a story changed since stays dirty.

        False (and nothing marked) if `term` was lost.
        """
        with self._fenced(term, now) as session:
            if session is None:
                return False
            for story in stories:
                session.exec(
                    update(Story)
                    .where(col(Story.id) == story.id, col(Story.revision) == story.revision)
                    .values(dirty=False)
                )
            session.commit()
            return True

    def timeline_story_ids(self, timeline: str) -> set[int]:
        with self.session() as session:
            return set(
                session.exec(
                    select(TimelineStory.story_id).where(TimelineStory.timeline == timeline)
                ).all()
            )

    def add_timeline_stories(self, timeline: str, story_ids: Iterable[int]) -> None:
        wanted = set(story_ids)

        def add(session: Session) -> None:
            known = set(
                session.exec(
                    select(TimelineStory.story_id).where(TimelineStory.timeline == timeline)
                ).all()
            )
            for story_id in wanted - known:
                session.add(TimelineStory(timeline=timeline, story_id=story_id))
            session.commit()

        retrying(self.session, add)

    def timeline_rules(self) -> dict[str, str]:
        """The rule each configured timeline's stories were collected by (store/membership.py)."""
        with self.session() as session:
            return membership.rules(session)

    def update_timeline_stories(
        self, timeline: str, matched: Iterable[int], unmatched: Iterable[int]
    ) -> bool:
        """Add the matched stories to the timeline, drop the unmatched; True if it changed."""
        wanted, unwanted = set(matched), set(unmatched)

        def work(session: Session) -> bool:
            changed = membership.update(session, timeline, wanted, unwanted)
            session.commit()
            return changed

        return retrying(self.session, work)

    def replace_timeline_stories(self, timeline: str, rule: str, story_ids: Iterable[int]) -> None:
        """The timeline holds exactly these stories from now on, collected by `rule`."""
        ids = set(story_ids)

        def work(session: Session) -> None:
            membership.replace(session, timeline, rule, ids)
            session.commit()

        retrying(self.session, work)

    def forget_other_timelines(self, kept: Iterable[str]) -> int:
        """Drop what timelines no longer configured had collected; how many timelines."""
        names = set(kept)

        def work(session: Session) -> int:
            gone = membership.forget_others(session, names)
            session.commit()
            return gone

        return retrying(self.session, work)

    def put_documents(
        self, documents: Sequence[Document], now: datetime | None = None, term: Term | None = None
    ) -> bool:
        """Store rendered documents; False (and nothing stored) if `term` was lost."""
        with self._fenced(term, now or utc_now()) as session:
            if session is None:
                return False
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
            return True

    def document(self, path: str) -> Document | None:
        try:
            with self.session() as session:
                row = session.get(PublishedDocument, path)
                return None if row is None else _document(row)
        except OperationalError as exc:
            raise StoreError(f"cannot read the published document {path}: {exc.orig}") from exc

    def documents(self) -> list[Document]:
        with self.session() as session:
            return [_document(r) for r in session.exec(select(PublishedDocument)).all()]

    def document_paths(self) -> list[str]:
        with self.session() as session:
            return list(session.exec(select(PublishedDocument.path)).all())

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


def _document(row: PublishedDocument) -> Document:
    return Document(
        path=row.path,
        content_type=row.content_type,
        body=row.body,
        etag=row.etag,
        updated=from_db(row.updated_at),
    )
