"""The worker cycle, stage by stage, over one store.

    1. sync      the config's sources into the store (at start and after each reload)
    2. claim     due sources, leased to this worker so no other worker polls them too
    3. poll      the claimed sources concurrently (fetch)
    4. ingest    parse each body and store its entries with the fetch state, per source;
                 then (embedding method) compute the new entries' vectors and store them
    5. cluster   new entries in arrival order: duplicates fold, the rest join or found stories
                 (on their stored vectors; the leader embeds only those no worker stored),
                 then converged stories merge
    6. publish   render the timelines whose stories changed, and the index, all-stories feed, OPML
    7. retain    entries older than worker.retention_days leave, keeping tombstones

Steps 1-4 run in every worker; 5-7 must see entries in order, so only the worker
holding the leader lease runs them. Nothing here knows about APScheduler, the CLI
or the web server; the worker schedules these steps, `run_cycle` runs them once.
"""

from __future__ import annotations

import asyncio
import logging
import os
import secrets
import socket
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime, timedelta
from typing import Protocol

import httpx

from aggregator import timelines
from aggregator.cluster import StoryAssigner
from aggregator.cluster.replay import Clusterer
from aggregator.cluster.vectors import embed_stored
from aggregator.errors import ParseError
from aggregator.fetch import DEFERRED, polling
from aggregator.parse import parse_feed
from aggregator.publish.documents import Publisher, timeline_paths
from aggregator.schedule import error_interval, host_pauses, next_check, poll_outcome
from aggregator.settings import Settings
from aggregator.store import IngestCounts, Store, StoryView, Term
from aggregator.store.lease import LeaderLease
from aggregator.types import EntryData, FetchRequest, FetchResult, ParsedFeed, PollOutcome
from aggregator.websub import changed_topics, notify_hub

log = logging.getLogger(__name__)


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

    def failed(self, stage: str) -> None:
        """An unexpected error in `stage` (ingest, cluster, publish), logged and survived."""


class NoEvents:
    def polled(self, result: FetchResult, status: str, counts: IngestCounts) -> None:
        pass

    def clustered(self, entries: int, duplicates: int) -> None:
        pass

    def published(self, timelines: int, seconds: float) -> None:
        pass

    def failed(self, stage: str) -> None:
        pass


@dataclass
class CycleReport:
    polled: int = 0  # polls; a source due again within one dispatch counts twice
    sources: set[int] = field(default_factory=set)
    not_modified: int = 0
    errors: int = 0
    new_entries: int = 0
    updated_entries: int = 0
    embedded: int = 0  # entries this worker computed the vectors of
    clustered: int = 0
    duplicates: int = 0
    published: list[str] = field(default_factory=list)

    def summary(self) -> str:
        return (
            f"{self.polled} polls of {len(self.sources)} sources "
            f"({self.not_modified} unchanged, {self.errors} failed), "
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
        self.lease = LeaderLease(store, self.owner, clock)
        self.clusterer = Clusterer(
            settings,
            store,
            self.lease,
            on_lost=self._lost_lead,
            on_batch=self.events.clustered,
            on_retired=self._retire_documents,
            on_failed=self.events.failed,
        )
        self._refresh_due = True  # re-render open stories and overviews on the next publish
        self._synced = False
        self._stopping = threading.Event()

    # -- control ----------------------------------------------------------

    def stop(self) -> None:
        """Start no new batch; the worker calls it on SIGTERM."""
        self._stopping.set()

    def close(self) -> None:
        """Save the clusterer's state (if this worker leads and it changed), then hand back
        unrecorded claims and the leader lease, so others take over at once."""
        if self.lease.term is not None and self.clusterer.unsaved:
            self.clusterer.save_snapshot()
        released = self.store.release_claims(self.owner)
        if released:
            log.info("released %d claimed sources", released)
        self.lease.resign()

    def apply_settings(self, new: Settings) -> None:
        """Take a reloaded configuration; each step picks up what concerns it."""
        old, self.settings = self.settings, new
        if new.sources != old.sources:
            self._synced = False
        if new.cluster != old.cluster:
            self.clusterer.reset(new)
        self.clusterer.settings = new
        if new.timelines != old.timelines or new.publish != old.publish:
            self._refresh_due = True
            kept = {t.name for t in new.timelines}
            gone = [t.name for t in old.timelines if t.name not in kept]
            self.store.delete_documents(timeline_paths(gone))

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
            self.lease.release()

    # -- steps 1-4: every worker ------------------------------------------

    async def dispatch(
        self,
        report: CycleReport | None = None,
        *,
        deadline: float | None = None,
        stored: Callable[[], None] | None = None,
    ) -> CycleReport:
        """Sync the sources if needed, then claim, poll and ingest due sources.

        Polls run side by side, at most twice `fetch.concurrency` claimed at once, and
        each is stored as soon as it is done: a slow or dribbling server holds up no
        other source. Without a `deadline`, only sources due when the call starts are
        taken, each once. With one (the worker's), sources that fall due while polls
        are still running are claimed too, every `worker.cycle_seconds`, until then;
        such a call can run for most of its time limit, so `stored` is called each
        time finished polls have been stored (the worker's sign of progress).
        """
        report = report if report is not None else CycleReport()
        started = self.clock()
        if not self._synced:
            await asyncio.to_thread(self.store.sync_sources, self.settings.sources, started)
            self._synced = True
        due_by = started if deadline is None else None
        running: dict[asyncio.Task[FetchResult], FetchRequest] = {}
        async with polling(self.settings.fetch, transport=self.transport, now=self.clock) as fetch:
            try:
                while True:
                    room = 2 * self.settings.fetch.concurrency - len(running)
                    if room > 0 and not self._past(deadline):
                        for request in await self._claim(room, due_by):
                            running[asyncio.create_task(fetch(request))] = request
                    if not running:
                        break
                    done, _ = await asyncio.wait(
                        set(running),
                        timeout=self.settings.worker.cycle_seconds,
                        return_when=asyncio.FIRST_COMPLETED,
                    )
                    if done:  # a poll's fetch never raises: failures are results
                        results = [task.result() for task in done]
                        for task in done:
                            del running[task]
                        await asyncio.to_thread(self._ingest_all, results, report)
                        if stored is not None:
                            stored()
            except BaseException:
                # Cancelled (a timeout, shutting down) or failed: give the sources still
                # being polled back now rather than when their leases run out.
                await self._give_back(running)
                raise
        return report

    async def _claim(self, limit: int, due_by: datetime | None) -> list[FetchRequest]:
        return await asyncio.to_thread(
            self.store.claim_due,
            self.clock(),
            self.owner,
            lease_s=self.settings.worker.lease_seconds,
            limit=limit,
            due_by=due_by,
        )

    async def _give_back(self, running: dict[asyncio.Task[FetchResult], FetchRequest]) -> None:
        """Cancel the polls still running and release their sources' claims."""
        for task in running:
            task.cancel()
        if running:
            await asyncio.wait(set(running))
        ids = [request.source_id for request in running.values()]
        await asyncio.shield(asyncio.to_thread(self.store.release_claims, self.owner, ids))

    def _ingest_all(self, results: Sequence[FetchResult], report: CycleReport) -> None:
        # Fetched bodies are stored even when stopping: the polls are done already.
        to_embed: list[int] = []
        for result in results:
            if result.error_code != DEFERRED:  # never requested: its host asked for a pause
                to_embed += self.ingest(result, report, owner=self.owner).to_embed
        # Before the next claim, so the held-back sources are no longer due.
        self.pause_hosts(results)
        deferred = [r.request.source_id for r in results if r.error_code == DEFERRED]
        if deferred:
            self.store.release_claims(self.owner, deferred)
        self.embed_stored(to_embed, report)

    def embed_stored(self, entry_ids: Sequence[int], report: CycleReport | None = None) -> int:
        """Compute and store the vectors of entries this worker just stored (end of step 4).

        Every worker does it for its own polls, so the leader only reads vectors.
        One that fails, or a worker stopped meanwhile, leaves them to the leader.
        """
        if not entry_ids or self.settings.cluster.method != "embedding":
            return 0
        try:
            embedded = embed_stored(self.store, entry_ids, stopped=self._stopping.is_set)
        except Exception:
            log.exception(
                "could not compute the vectors of %d new entries; the leader will",
                len(entry_ids),
                extra={"event": "embed"},
            )
            self.events.failed("embed")
            return 0
        if report is not None:
            report.embedded += embedded
        return embedded

    def ingest(
        self, result: FetchResult, report: CycleReport | None = None, *, owner: str | None = None
    ) -> IngestCounts:
        """Parse one poll's body and store its entries and fetch state together.

        This is the boundary of one source: whatever goes wrong while parsing,
        deciding the next check or storing is recorded on that source (and logged
        once with its traceback), and the caller goes on with the other sources.
        With `owner`, the fetch state is written only while that owner's lease holds.
        """
        report = report if report is not None else CycleReport()
        try:
            outcome, counts = self._store_poll(result, owner)
        except Exception as exc:
            outcome, counts = self._record_failure(result, exc, owner)
        self._report_poll(result, outcome, counts, report)
        return counts

    def _store_poll(
        self, result: FetchResult, owner: str | None
    ) -> tuple[PollOutcome, IngestCounts]:
        request = result.request
        state, entry_times = self.store.poll_state(request.source_id)
        feed: ParsedFeed | None = None
        parse_error: ParseError | None = None
        if result.ok and result.body is not None:
            try:
                feed = parse_feed(
                    result.body,
                    result.headers,
                    url=result.final_url,
                    source=request.name,
                    fetched_at=result.fetched_at,
                )
            except ParseError as exc:
                parse_error = exc
        if feed is not None and feed.defect:
            log.warning(
                "source %r: the feed is malformed (%s); the entries that could be read are "
                "kept (%d), later ones may be lost: tell the publisher",
                request.name,
                feed.defect,
                len(feed.entries),
                extra={"source_id": request.source_id, "source": request.name, "event": "poll"},
            )
        outcome = poll_outcome(
            result,
            state,
            self.settings.fetch,
            feed=feed,
            parse_error=parse_error,
            entry_times=entry_times,
        )
        entries = feed.entries if feed else ()
        try:
            return outcome, self.store.record_poll(request.source_id, outcome, entries, owner=owner)
        except Exception as exc:
            if len(entries) < 2:
                raise
            # One entry the database refuses must not cost the feed its others.
            return self._store_one_by_one(result, outcome, entries, exc)

    def _store_one_by_one(
        self,
        result: FetchResult,
        outcome: PollOutcome,
        entries: Sequence[EntryData],
        first: Exception,
    ) -> tuple[PollOutcome, IngestCounts]:
        source_id = result.request.source_id
        stored = IngestCounts()
        refused = 0
        for entry in entries:
            try:
                counts = self.store.record_poll(source_id, outcome, [entry])
            except Exception:
                refused += 1
                continue
            stored = IngestCounts(
                new=stored.new + counts.new,
                updated=stored.updated + counts.updated,
                unchanged=stored.unchanged + counts.unchanged,
                tombstoned=stored.tombstoned + counts.tombstoned,
                to_embed=stored.to_embed + counts.to_embed,
            )
        log.error(
            "source %r: the database refused %d of its %d entries; the others are stored",
            result.request.name,
            refused,
            len(entries),
            exc_info=first,
            extra={"source_id": source_id, "source": result.request.name, "event": "poll"},
        )
        self.events.failed("ingest")
        outcome = replace(
            outcome,
            status="error",
            error_code="entries_refused",
            error=(
                f"{refused} of {len(entries)} entries could not be stored "
                f"({_describe(first)}); the others are stored. The log has the details: "
                "please report it"
            ),
        )
        # The entry-wise writes above already wrote the fetch state and ended the claim
        # (`owner` is only checked on the first, failed write), so this one is unfenced.
        self.store.record_poll(source_id, outcome)
        return outcome, stored

    def _record_failure(
        self, result: FetchResult, exc: Exception, owner: str | None
    ) -> tuple[PollOutcome, IngestCounts]:
        """Record an unexpected failure on its source and hand its claim back."""
        request = result.request
        log.error(
            "source %r: unexpected error while storing its poll; other sources go on",
            request.name,
            exc_info=exc,
            extra={"source_id": request.source_id, "source": request.name, "event": "poll"},
        )
        self.events.failed("ingest")
        now = result.fetched_at
        interval = error_interval(self.settings.fetch, configured=None, error_count=1)
        outcome = PollOutcome(
            checked_at=now,
            next_check_at=next_check(now, interval, key=request.name),
            status="error",
            http_status=result.status,
            error_code="internal_error",
            error=(
                f"the aggregator failed on this poll ({_describe(exc)}); it tries again at "
                "the next check and the log has the details: please report it"
            ),
            keep_validators=True,
        )
        try:
            return outcome, self.store.record_poll(request.source_id, outcome, owner=owner)
        except Exception:
            log.exception("source %r: its failure could not be recorded either", request.name)
            if owner is not None:
                self.store.release_claims(owner, [request.source_id])
            return outcome, IngestCounts(recorded=False)

    def _report_poll(
        self,
        result: FetchResult,
        outcome: PollOutcome,
        counts: IngestCounts,
        report: CycleReport,
    ) -> None:
        request = result.request
        report.polled += 1
        report.sources.add(request.source_id)
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

    def pause_hosts(self, results: Sequence[FetchResult]) -> None:
        """Hold every source of a host whose answers showed a host-wide rate limit."""
        for host, until in host_pauses(results, self.settings.fetch).items():
            moved = self.store.delay_host(host, until)
            log.warning("%s rate-limits us host-wide: %d sources wait until %s", host, moved, until)

    # -- steps 5-7: the leader only ----------------------------------------

    def lead(self) -> bool:
        """Take or renew the leader lease; a new term means rebuilding the clusterer."""
        was_leading = self.lease.term is not None
        acquired = self.lease.acquire(self.settings.worker.lease_seconds)
        if not acquired.leading:
            if was_leading:
                log.info("another worker leads now; this one only polls")
                self.clusterer.reset()
            return False
        if acquired.new_term:
            # Someone else may have clustered since this worker last did.
            assert self.lease.term is not None
            log.info("leading clustering, publishing and retention (term %d)", self.lease.term.term)
            self.clusterer.reset()
            self._refresh_due = True
        return True

    @property
    def term(self) -> Term | None:
        """The leader term this worker holds, if any."""
        return self.lease.term

    @property
    def assigner(self) -> StoryAssigner:
        return self.clusterer.assigner

    def cluster_step(self, deadline: float | None = None) -> int:
        """The worker's cluster job: lead (or renew), then cluster until done or the deadline."""
        return self.cluster(deadline=deadline) if self.lead() else 0

    def publish_step(self, deadline: float | None = None) -> list[str]:
        return self.publish() if self.lead() else []

    def retain_step(self, deadline: float | None = None) -> int:
        return self.retain() if self.lead() else 0

    def _lost_lead(self) -> None:
        log.warning("lost the leader lease mid-step; its writes were refused and are redone")
        self.lease.drop()
        self.clusterer.reset()

    def restore(self) -> None:
        """Rebuild the clusterer: from the newest usable snapshot of its state and the
        decisions stored after it, else from every decision stored inside the window."""
        self.clusterer.restore()

    def cluster(self, report: CycleReport | None = None, *, deadline: float | None = None) -> int:
        """Assign every pending entry, oldest first, and save the decisions."""
        if self.lease.term is None and not self.lead():
            return 0
        placed = self.clusterer.place(lambda: self._past(deadline))
        if report is not None:
            report.clustered += placed.entries
            report.duplicates += placed.duplicates
        return placed.entries

    def _retire_documents(self, story_ids: Sequence[int]) -> None:
        """Delete the documents of stories merged into others or emptied by retention: not
        redirected, as a merged story's reports appear in the surviving story's timeline."""
        self.store.delete_documents(timeline_paths(timelines.story_slug(i) for i in story_ids))

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
        publisher = Publisher(self.settings, self.store, self.events.failed)
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
            self._retire_documents(report.stories)
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


def _describe(exc: BaseException) -> str:
    """An exception as one short line for a source's stored error."""
    text = " ".join(str(exc).split())
    if len(text) > 200:
        text = text[:199] + "…"
    return f"{type(exc).__name__}: {text}" if text else type(exc).__name__
