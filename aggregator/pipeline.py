"""The worker cycle, stage by stage, over one store.

    1. sync      the config's sources into the store (at start and after each reload)
    2. claim     due sources, leased to this worker so no other worker polls them too
    3. poll      the claimed sources concurrently (fetch)
    4. ingest    parse each body and store its entries with the fetch state, per source
    5. cluster   new entries in arrival order: duplicates fold, the rest join or found stories
                 (each embedded once and the vector stored), then converged stories merge
    6. publish   render the timelines whose stories changed, and the index, all-stories feed, OPML
    7. retain    entries older than worker.retention_days leave, keeping tombstones

Steps 1-4 run in every worker; 5-7 must see entries in order, so only the worker
holding the leader lease runs them. Nothing here knows about APScheduler, the CLI
or the web server; the worker schedules these steps, `run_cycle` runs them once.
"""

from __future__ import annotations

import asyncio
import hashlib
import logging
import os
import secrets
import socket
import threading
import time
from collections import defaultdict
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from itertools import islice
from pathlib import Path
from typing import Protocol, TypeVar

import httpx
import numpy as np

from aggregator import timelines
from aggregator.cluster import StoryAssigner
from aggregator.errors import ParseError, PublishError
from aggregator.fetch import DEFERRED, fetch_all
from aggregator.opml import timelines_to_opml
from aggregator.parse import parse_feed
from aggregator.publish import INDEX_PATH, OPML_PATH
from aggregator.publish.feeds import render_atom, render_json, render_rss
from aggregator.publish.pages import render_index, render_timeline_page
from aggregator.schedule import host_pauses, poll_outcome
from aggregator.settings import Settings
from aggregator.store import EntryView, IngestCounts, Store, StoryView, Term
from aggregator.types import Assignment, ClusterDoc, Document, FetchResult, ParsedFeed, TimelineDoc
from aggregator.websub import changed_topics, notify_hub

log = logging.getLogger(__name__)

FEED_TYPES = {
    "atom": "application/atom+xml; charset=utf-8",
    "rss": "application/rss+xml; charset=utf-8",
    "json": "application/feed+json; charset=utf-8",
    "html": "text/html; charset=utf-8",
}
CLUSTER_BATCH = 5000
# With embeddings a batch is embedded before it is placed (about 35 entries a
# second here): small batches keep each fenced write, which renews the leader
# lease, seconds apart rather than minutes.
EMBED_BATCH = 256
RESTORE_CHUNK = 500  # decisions replayed per batch of backfilled embeddings
VECTOR_DTYPE = np.float16  # how embeddings are stored: 768 bytes for 384 dimensions

_T = TypeVar("_T")


def utc_now() -> datetime:
    return datetime.now(UTC)


def worker_identity() -> str:
    """Names this process in leases: host and pid for people, a random tail for uniqueness."""
    return f"{socket.gethostname()}:{os.getpid()}:{secrets.token_hex(3)}"


class Events(Protocol):
    """What the pipeline reports as it goes; the worker's metrics implement it."""

    def polled(self, result: FetchResult, status: str, counts: IngestCounts) -> None: ...

    def clustered(self, entries: int, duplicates: int) -> None: ...

    def published(self, timelines: int, seconds: float) -> None: ...


class NoEvents:
    def polled(self, result: FetchResult, status: str, counts: IngestCounts) -> None:
        pass

    def clustered(self, entries: int, duplicates: int) -> None:
        pass

    def published(self, timelines: int, seconds: float) -> None:
        pass


@dataclass
class CycleReport:
    polled: int = 0
    not_modified: int = 0
    errors: int = 0
    new_entries: int = 0
    updated_entries: int = 0
    clustered: int = 0
    duplicates: int = 0
    published: list[str] = field(default_factory=list)

    def summary(self) -> str:
        return (
            f"polled {self.polled} sources ({self.not_modified} unchanged, {self.errors} failed), "
            f"{self.new_entries} new and {self.updated_entries} updated entries, "
            f"{self.clustered} clustered ({self.duplicates} duplicates), "
            f"{len(self.published)} timelines published"
        )


class Pipeline:
    """One worker's view of the pipeline; keeps the clusterer's state between cycles.

    Steps take an optional `deadline` (time.monotonic()) after which they start no
    new batch; `stop()` has the same effect at once. A batch in progress always
    finishes: each is one transaction, small enough to end within seconds.
    """

    def __init__(
        self,
        settings: Settings,
        store: Store,
        *,
        clock: Callable[[], datetime] = utc_now,
        transport: httpx.AsyncBaseTransport | None = None,
        owner: str | None = None,
        events: Events | None = None,
    ) -> None:
        self.settings = settings
        self.store = store
        self.clock = clock
        self.transport = transport
        self.owner = owner or worker_identity()
        self.events: Events = events or NoEvents()
        self.assigner = StoryAssigner(settings.cluster)
        self.term: Term | None = None  # the leader lease, while this worker holds it
        self._restored = False
        self._refresh_due = True  # re-render open stories and overviews on the next publish
        self._synced = False
        self._stopping = threading.Event()

    # -- control ----------------------------------------------------------

    def stop(self) -> None:
        """Start no new batch; the worker calls it on SIGTERM."""
        self._stopping.set()

    def close(self) -> None:
        """Hand back unrecorded claims and the leader lease, so others take over at once."""
        released = self.store.release_claims(self.owner)
        if released:
            log.info("released %d claimed sources", released)
        if self.term is not None:
            self.store.resign_leadership(self.owner)
            self.term = None

    def apply_settings(self, new: Settings) -> None:
        """Take a reloaded configuration; each step picks up what concerns it."""
        old, self.settings = self.settings, new
        if new.sources != old.sources:
            self._synced = False
        if new.cluster != old.cluster:
            self._reset_clusterer()
        if new.timelines != old.timelines or new.publish != old.publish:
            self._refresh_due = True
            kept = {t.name for t in new.timelines}
            gone = [t.name for t in old.timelines if t.name not in kept]
            self.store.delete_documents(_paths(gone))

    def _past(self, deadline: float | None) -> bool:
        return self._stopping.is_set() or (deadline is not None and time.monotonic() > deadline)

    # -- one whole cycle (`aggregator poll --once`, the demo, tests) -------------

    async def run_cycle(self) -> CycleReport:
        report = CycleReport()
        await self.dispatch(report)
        await asyncio.to_thread(self._in_order_work, report)
        log.info("cycle done: %s", report.summary())
        return report

    def _in_order_work(self, report: CycleReport) -> None:
        try:
            if self.lead():
                self.cluster(report)
                report.published = self.publish()
        finally:
            # A one-off cycle lets go at once; this worker keeps its term if nobody
            # takes over, so its next cycle need not rebuild the clusterer.
            if self.term is not None:
                self.store.resign_leadership(self.owner)

    # -- steps 1-4: every worker ------------------------------------------

    async def dispatch(
        self, report: CycleReport | None = None, *, deadline: float | None = None
    ) -> CycleReport:
        """Sync the sources if needed, then claim, poll and ingest due sources in batches.

        Only sources due when the call starts are taken: a source polled in this call
        and due again meanwhile waits for the next.
        """
        report = report if report is not None else CycleReport()
        started = self.clock()
        if not self._synced:
            await asyncio.to_thread(self.store.sync_sources, self.settings.sources, started)
            self._synced = True
        while not self._past(deadline):
            requests = await asyncio.to_thread(
                self.store.claim_due,
                self.clock(),
                self.owner,
                lease_s=self.settings.worker.lease_seconds,
                limit=2 * self.settings.fetch.concurrency,
                due_by=started,
            )
            if not requests:
                break
            try:
                results = await fetch_all(
                    requests, self.settings.fetch, transport=self.transport, now=self.clock
                )
            except BaseException:
                # Cancelled (a timeout, shutting down) or failed: give the sources back
                # now rather than when their leases run out.
                ids = [r.source_id for r in requests]
                await asyncio.shield(asyncio.to_thread(self.store.release_claims, self.owner, ids))
                raise
            await asyncio.to_thread(self._ingest_all, results, report)
        return report

    def _ingest_all(self, results: Sequence[FetchResult], report: CycleReport) -> None:
        # Fetched bodies are stored even when stopping: the polls are done already.
        for result in results:
            if result.error_code != DEFERRED:  # never requested: its host asked for a pause
                self.ingest(result, report, owner=self.owner)
        # Before the next claim, so the held-back sources are no longer due.
        self.pause_hosts(results)
        deferred = [r.request.source_id for r in results if r.error_code == DEFERRED]
        if deferred:
            self.store.release_claims(self.owner, deferred)

    def ingest(
        self, result: FetchResult, report: CycleReport | None = None, *, owner: str | None = None
    ) -> IngestCounts:
        """Parse one poll's body and store its entries and fetch state together.

        With `owner`, the fetch state is written only while that owner's lease holds.
        """
        report = report if report is not None else CycleReport()
        request = result.request
        state, entry_times = self.store.poll_state(request.source_id)
        feed: ParsedFeed | None = None
        parse_error: ParseError | None = None
        if result.ok and result.body is not None:
            try:
                feed = parse_feed(
                    result.body, result.headers, url=result.final_url, source=request.name
                )
            except ParseError as exc:
                parse_error = exc
        outcome = poll_outcome(
            result,
            state,
            self.settings.fetch,
            feed=feed,
            parse_error=parse_error,
            entry_times=entry_times,
        )
        counts = self.store.record_poll(
            request.source_id, outcome, feed.entries if feed else (), owner=owner
        )
        report.polled += 1
        report.not_modified += result.not_modified
        report.new_entries += counts.new
        report.updated_entries += counts.updated
        status = (
            "not_modified" if result.not_modified and outcome.status == "ok" else outcome.status
        )
        self.events.polled(result, status, counts)
        context = {"source_id": request.source_id, "source": request.name, "event": "poll"}
        if outcome.status != "ok":
            report.errors += 1
            log.warning(
                "source %r failed: %s (%s)",
                request.name,
                outcome.error,
                outcome.error_code,
                extra={**context, "error_code": outcome.error_code},
            )
        else:
            log.info(
                "polled %r: %s, %d new, %d updated in %.2f s",
                request.name,
                status,
                counts.new,
                counts.updated,
                result.duration_s,
                extra={**context, "status": status, "new": counts.new, "updated": counts.updated},
            )
        if not counts.recorded:
            log.warning(
                "the lease on %r ran out before its poll was stored; its entries are kept "
                "but the newer poll's state stands (raise worker.lease_seconds)",
                request.name,
                extra=context,
            )
        return counts

    def pause_hosts(self, results: Sequence[FetchResult]) -> None:
        """Hold every source of a host whose answers showed a host-wide rate limit."""
        for host, until in host_pauses(results, self.settings.fetch).items():
            moved = self.store.delay_host(host, until)
            log.warning("%s rate-limits us host-wide: %d sources wait until %s", host, moved, until)

    # -- steps 5-7: the leader only ----------------------------------------

    def lead(self) -> bool:
        """Take or renew the leader lease; a new term means rebuilding the clusterer."""
        known = None if self.term is None else self.term.term
        term = self.store.acquire_leadership(
            self.owner, known, self.clock(), lease_s=self.settings.worker.lease_seconds
        )
        if term is None:
            if self.term is not None:
                log.info("another worker leads now; this one only polls")
                self._reset_clusterer()
            self.term = None
            return False
        if term.term != known:
            # Someone else may have clustered since this worker last did.
            log.info("leading clustering, publishing and retention (term %d)", term.term)
            self._reset_clusterer()
            self._refresh_due = True
        self.term = term
        return True

    def cluster_step(self, deadline: float | None = None) -> int:
        """The worker's cluster job: lead (or renew), then cluster until done or the deadline."""
        return self.cluster(deadline=deadline) if self.lead() else 0

    def publish_step(self, deadline: float | None = None) -> list[str]:
        return self.publish() if self.lead() else []

    def retain_step(self, deadline: float | None = None) -> int:
        return self.retain() if self.lead() else 0

    def _lost_lead(self) -> None:
        log.warning("lost the leader lease mid-step; its writes were refused and are redone")
        self.term = None
        self._reset_clusterer()

    def _reset_clusterer(self) -> None:
        self.assigner = StoryAssigner(self.settings.cluster)
        self._restored = False

    def restore(self) -> None:
        """Rebuild the clusterer from the decisions stored inside the window.

        With embeddings, each entry's stored vector is replayed, so a restart
        embeds nothing (entries clustered before vectors were stored are embedded
        once, in batches, and their vectors kept). A big window takes minutes: the
        leader lease is renewed as it goes, so that no other worker takes over
        meanwhile (and if one did, this one stops).
        """
        latest = self.store.latest_clustered_at()
        if latest is not None:
            since = latest - timedelta(hours=self.settings.cluster.window_hours)
            renew_every = self.settings.worker.lease_seconds / 3
            renewed = time.monotonic()
            uses_embeddings = self.assigner.uses_embeddings
            decisions = self.store.clustered_since(since, embeddings=uses_embeddings)
            for chunk in _chunks(decisions, RESTORE_CHUNK):
                vectors = self._restored_vectors(chunk) if uses_embeddings else {}
                if vectors is None:
                    return
                for doc, assignment, _ in chunk:
                    self.assigner.restore(doc, assignment, vectors.get(doc.id))
                if time.monotonic() - renewed > renew_every:
                    if self.term is not None and not self._still_leading():
                        return
                    renewed = time.monotonic()
        self._restored = True

    def _restored_vectors(
        self, chunk: Sequence[tuple[ClusterDoc, Assignment, bytes | None]]
    ) -> dict[str, np.ndarray] | None:
        """The chunk's vectors by doc id, embedding and storing those missing; None if lead lost.

        Duplicates are replayed without a vector, so none is computed for them.
        """
        stored = {doc.id: raw for doc, _, raw in chunk if raw is not None}
        missing = [doc for doc, a, raw in chunk if raw is None and a.duplicate_of is None]
        if missing:
            fresh = self._embed_and_store(missing)
            if fresh is None:
                return None
            stored.update(fresh)
        return {doc_id: _decode(raw) for doc_id, raw in stored.items()}

    def _embed_and_store(self, docs: Sequence[ClusterDoc]) -> dict[str, bytes] | None:
        """Embed docs in one batch and store the vectors; None (lead lost) if refused."""
        encoded = {
            doc.id: _encode(vector)
            for doc, vector in zip(docs, self.assigner.embed(docs), strict=True)
        }
        if not self.store.save_embeddings(encoded, self.clock(), self.term):
            self._lost_lead()
            return None
        return encoded

    def _batch_vectors(self, docs: Sequence[ClusterDoc]) -> list[np.ndarray | None] | None:
        """A vector for each pending doc: stored ones read back, the rest embedded once.

        Live decisions use the stored (float16) values too, so a replay after a
        restart sees exactly what the live clusterer saw. None if the lead was lost.
        """
        if not self.assigner.uses_embeddings:
            return [None] * len(docs)
        stored = self.store.stored_embeddings(doc.id for doc in docs)
        missing = [doc for doc in docs if doc.id not in stored]
        if missing:
            fresh = self._embed_and_store(missing)
            if fresh is None:
                return None
            stored.update(fresh)
        return [_decode(stored[doc.id]) for doc in docs]

    def _still_leading(self) -> bool:
        assert self.term is not None
        term = self.store.acquire_leadership(
            self.owner, self.term.term, self.clock(), lease_s=self.term.lease_s
        )
        if term is None or term.term != self.term.term:
            self._lost_lead()
            return False
        return True

    def cluster(self, report: CycleReport | None = None, *, deadline: float | None = None) -> int:
        """Assign every pending entry, oldest first, and save the decisions."""
        if self.term is None and not self.lead():
            return 0
        if not self._restored:
            self.restore()
            if not self._restored:  # another worker took the lead meanwhile
                return 0
        total = 0
        batch = EMBED_BATCH if self.assigner.uses_embeddings else CLUSTER_BATCH
        try:
            while not self._past(deadline) and (docs := self.store.pending_docs(batch)):
                vectors = self._batch_vectors(docs)
                if vectors is None:
                    break
                assignments = [
                    self.assigner.add(doc, vector)
                    for doc, vector in zip(docs, vectors, strict=True)
                ]
                saved = self.store.save_assignments(assignments, self.clock(), self.term)
                if saved is None:
                    self._lost_lead()
                    break
                duplicates = sum(a.duplicate_of is not None for a in assignments)
                total += len(assignments)
                self.events.clustered(len(assignments), duplicates)
                if report is not None:
                    report.clustered += len(assignments)
                    report.duplicates += duplicates
                if self.settings.cluster.merge_stories and not self._merge_converged():
                    break
        except BaseException:
            # The clusterer has taken decisions the store may not have: start afresh.
            self._reset_clusterer()
            raise
        return total

    def _merge_converged(self) -> bool:
        """Merge stories that grew into one event, in the clusterer and the store; False if
        the lead was lost (the clusterer then starts afresh from what the store holds).

        A retired story's published documents are deleted, not redirected: its
        reports now appear in the surviving story's timeline.
        """
        merges = self.assigner.merge_converged()
        if not merges:
            return True
        retired = self.store.merge_stories(merges, self.clock(), self.term)
        if retired is None:
            self._lost_lead()
            return False
        if retired:
            self.store.delete_documents(_paths(timelines.story_slug(i) for i in retired))
            log.info(
                "merged %d stories into the stories they converged with",
                len(retired),
                extra={"event": "merge", "stories": len(retired)},
            )
        return True

    def publish(self, *, full: bool = False) -> list[str]:
        """Render what changed; `full` renders every story there is.

        A new leader (and a reload of timelines or publish settings) also refreshes
        the listed stories, configured timelines and overviews, in case settings
        changed meanwhile.
        """
        if self.term is None and not self.lead():
            return []
        started = time.perf_counter()
        refresh = full or self._refresh_due
        changed = self._to_render(full=full, refresh=refresh)
        if not changed and not refresh:
            return []
        publisher = Publisher(self.settings, self.store)
        documents, slugs = publisher.render_changes(changed, full=refresh)
        if not self.store.put_documents(documents, self.clock(), self.term):
            self._lost_lead()
            return []
        publisher.write_out(documents)
        self.store.mark_published(changed, self.clock(), self.term)
        self._refresh_due = False
        seconds = time.perf_counter() - started
        self.events.published(len(slugs), seconds)
        for slug in slugs:
            log.info("published timeline %s", slug, extra={"timeline": slug, "event": "publish"})
        self._announce(slugs)
        return slugs

    def _announce(self, slugs: Sequence[str]) -> None:
        """Ping the WebSub hub with the changed feeds; a failed ping only delays pushes.

        Publishing runs in a worker thread with no event loop of its own.
        """
        hub = self.settings.publish.websub_hub
        if hub and slugs:
            topics = changed_topics(slugs, self.settings.publish)
            for error in asyncio.run(notify_hub(hub, topics)):
                log.warning("%s", error, extra={"event": "websub"})

    def _to_render(self, *, full: bool, refresh: bool) -> list[StoryView]:
        if full:
            return self.store.stories(min_sources=1)
        dirty = self.store.dirty_stories()
        if not refresh:
            return dirty
        # The stories the index lists, not every open one: a big deployment has tens
        # of thousands open. Others are rendered again when they next change.
        listed = self.store.stories(
            min_sources=self.settings.publish.min_sources,
            limit=self.settings.publish.max_stories,
        )
        chosen = {s.id: s for s in [*listed, *dirty]}
        return list(chosen.values())

    def retain(self) -> int:
        """Remove entries older than worker.retention_days; how many were removed."""
        if self.term is None and not self.lead():
            return 0
        now = self.clock()
        cutoff = now - timedelta(days=self.settings.worker.retention_days)
        report = self.store.expire_entries(cutoff, now, self.term)
        if report is None:
            self._lost_lead()
            return 0
        if report.stories:
            self.store.delete_documents(_paths(timelines.story_slug(i) for i in report.stories))
            self._refresh_due = True
        if report.entries or report.tombstones:
            log.info(
                "retention removed %d entries older than %s, %d emptied stories and %d "
                "tombstones no feed listed since",
                report.entries,
                cutoff.isoformat(timespec="seconds"),
                len(report.stories),
                report.tombstones,
                extra={"event": "retention"},
            )
        return report.entries


class Publisher:
    """Turns changed stories into rendered documents."""

    def __init__(self, settings: Settings, store: Store) -> None:
        self.settings = settings
        self.publish_settings = settings.publish
        self.store = store

    def render_changes(
        self, changed: Sequence[StoryView], *, full: bool
    ) -> tuple[list[Document], list[str]]:
        min_sources = self.publish_settings.min_sources
        entries = _by_story(self.store.story_entries(s.id for s in changed))
        documents: list[Document] = []
        slugs: list[str] = []
        for story in changed:
            if story.source_count >= min_sources:
                doc = timelines.story_timeline(story, entries[story.id], self.publish_settings)
                documents += self.render(doc)
                slugs.append(doc.slug)
        configured = self._configured(changed, entries, full=full)
        for doc in configured:
            documents += self.render(doc)
            slugs.append(doc.slug)
        if slugs or full:
            documents += self._overview()
        return documents, slugs

    def _configured(
        self, changed: Sequence[StoryView], entries: dict[int, list[EntryView]], *, full: bool
    ) -> list[TimelineDoc]:
        docs = []
        for config in self.settings.timelines:
            matched = [s.id for s in changed if timelines.matches(config, entries[s.id])]
            self.store.add_timeline_stories(config.name, matched)
            if not matched and not full:
                continue
            ids = self.store.timeline_story_ids(config.name)
            all_entries = self.store.story_entries(ids) if ids else []
            docs.append(
                timelines.configured_timeline(config, all_entries, self.publish_settings, _epoch())
            )
        return docs

    def _overview(self) -> list[Document]:
        """The all-stories feed, the index page and the OPML of every timeline."""
        stories = self.store.stories(
            min_sources=self.publish_settings.min_sources,
            limit=self.publish_settings.max_stories,
        )
        entries = _by_story(self.store.story_entries(s.id for s in stories))
        story_docs = [
            timelines.story_timeline(s, entries[s.id], self.publish_settings) for s in stories
        ]
        configured = [
            timelines.configured_timeline(
                c,
                self.store.story_entries(self.store.timeline_story_ids(c.name)),
                self.publish_settings,
                _epoch(),
            )
            for c in self.settings.timelines
        ]
        overview = timelines.all_stories(
            [(s, entries[s.id]) for s in stories], self.publish_settings, _epoch()
        )
        listed = configured + story_docs
        updated = max([overview.updated] + [d.updated for d in listed])
        return self.render(overview) + [
            _document(
                INDEX_PATH, FEED_TYPES["html"], render_index(listed, self.publish_settings), updated
            ),
            _document(
                OPML_PATH,
                "text/x-opml; charset=utf-8",
                timelines_to_opml([overview] + listed, self.publish_settings),
                updated,
            ),
        ]

    def render(self, doc: TimelineDoc) -> list[Document]:
        base = f"/timelines/{doc.slug}"
        settings = self.publish_settings
        return [
            _document(f"{base}.atom", FEED_TYPES["atom"], render_atom(doc, settings), doc.updated),
            _document(f"{base}.rss", FEED_TYPES["rss"], render_rss(doc, settings), doc.updated),
            _document(f"{base}.json", FEED_TYPES["json"], render_json(doc, settings), doc.updated),
            _document(
                f"{base}.html", FEED_TYPES["html"], render_timeline_page(doc, settings), doc.updated
            ),
        ]

    def write_out(self, documents: Iterable[Document]) -> None:
        if self.publish_settings.out_dir:
            write_documents(documents, Path(self.publish_settings.out_dir))


def write_documents(documents: Iterable[Document], out_dir: Path) -> list[Path]:
    """Write documents as static files under out_dir, keeping their URL paths."""
    written = []
    for doc in documents:
        target = out_dir / doc.path.lstrip("/")
        try:
            target.parent.mkdir(parents=True, exist_ok=True)
            tmp = target.with_name(target.name + ".tmp")
            tmp.write_bytes(doc.body)
            tmp.replace(target)  # readers never see half a file
        except OSError as exc:
            raise PublishError(
                f"cannot write: {exc.strerror}; check the folder exists and is writable",
                path=str(target),
            ) from exc
        written.append(target)
    return written


def _paths(slugs: Iterable[str]) -> list[str]:
    """Every document path a timeline's slug is published under."""
    return [f"/timelines/{slug}.{kind}" for slug in slugs for kind in FEED_TYPES]


def _encode(vector: np.ndarray) -> bytes:
    return np.asarray(vector, dtype=VECTOR_DTYPE).tobytes()


def _decode(raw: bytes) -> np.ndarray:
    return np.frombuffer(raw, dtype=VECTOR_DTYPE).astype(np.float32)


def _chunks(items: Iterable[_T], size: int) -> Iterator[list[_T]]:
    iterator = iter(items)
    while chunk := list(islice(iterator, size)):
        yield chunk


def _document(path: str, content_type: str, body: bytes, updated: datetime) -> Document:
    etag = '"' + hashlib.sha256(body).hexdigest()[:32] + '"'
    return Document(path=path, content_type=content_type, body=body, etag=etag, updated=updated)


def _by_story(entries: Iterable[EntryView]) -> defaultdict[int, list[EntryView]]:
    grouped: defaultdict[int, list[EntryView]] = defaultdict(list)
    for entry in entries:
        if entry.story_id is not None:
            grouped[entry.story_id].append(entry)
    return grouped


def _epoch() -> datetime:
    return datetime(1970, 1, 1, tzinfo=UTC)
