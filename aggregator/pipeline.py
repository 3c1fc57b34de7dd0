"""The worker cycle, stage by stage, over one store.

    1. sync      the config's sources into the store (new ones are due at once)
    2. poll      every due source concurrently (fetch)
    3. ingest    parse each body and store its entries with the fetch state, per source
    4. cluster   new entries in arrival order: duplicates fold, the rest join or found stories
    5. publish   render the timelines whose stories changed, and the index, all-stories feed, OPML

Nothing here knows about APScheduler, the CLI or the web server.
"""

from __future__ import annotations

import asyncio
import hashlib
import logging
from collections import defaultdict
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path

import httpx

from aggregator import timelines
from aggregator.cluster import StoryAssigner
from aggregator.errors import ParseError, PublishError
from aggregator.fetch import fetch_all
from aggregator.opml import timelines_to_opml
from aggregator.parse import parse_feed
from aggregator.publish import INDEX_PATH, OPML_PATH
from aggregator.publish.feeds import render_atom, render_json, render_rss
from aggregator.publish.pages import render_index, render_timeline_page
from aggregator.schedule import poll_outcome
from aggregator.settings import Settings
from aggregator.store import EntryView, IngestCounts, Store
from aggregator.store.database import StoryView
from aggregator.types import Document, FetchResult, ParsedFeed, TimelineDoc

log = logging.getLogger(__name__)

FEED_TYPES = {
    "atom": "application/atom+xml; charset=utf-8",
    "rss": "application/rss+xml; charset=utf-8",
    "json": "application/feed+json; charset=utf-8",
    "html": "text/html; charset=utf-8",
}


def utc_now() -> datetime:
    return datetime.now(UTC)


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
    """One worker's view of the pipeline; keeps the clusterer's state between cycles."""

    def __init__(
        self,
        settings: Settings,
        store: Store,
        *,
        clock: Callable[[], datetime] = utc_now,
        transport: httpx.AsyncBaseTransport | None = None,
    ) -> None:
        self.settings = settings
        self.store = store
        self.clock = clock
        self.transport = transport
        self.assigner = StoryAssigner(settings.cluster)
        self._restored = False
        self._published_once = False

    async def run_cycle(self) -> CycleReport:
        report = CycleReport()
        now = self.clock()
        await asyncio.to_thread(self.store.sync_sources, self.settings.sources, now)
        results = await self.poll(now)
        await asyncio.to_thread(self._after_poll, results, report)
        log.info("cycle done: %s", report.summary())
        return report

    def _after_poll(self, results: Sequence[FetchResult], report: CycleReport) -> None:
        for result in results:
            self.ingest(result, report)
        self.cluster(report)
        report.published = self.publish()

    async def poll(self, now: datetime) -> list[FetchResult]:
        requests = await asyncio.to_thread(self.store.due_requests, now)
        if not requests:
            return []
        return await fetch_all(
            requests, self.settings.fetch, transport=self.transport, now=self.clock
        )

    def ingest(self, result: FetchResult, report: CycleReport | None = None) -> IngestCounts:
        """Parse one poll's body and store its entries and fetch state together."""
        report = report if report is not None else CycleReport()
        request = result.request
        state = self.store.fetch_state(request.source_id)
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
            result, state, self.settings.fetch, feed=feed, parse_error=parse_error
        )
        counts = self.store.record_poll(request.source_id, outcome, feed.entries if feed else ())
        report.polled += 1
        report.not_modified += result.not_modified
        report.new_entries += counts.new
        report.updated_entries += counts.updated
        if outcome.status != "ok":
            report.errors += 1
            log.warning(
                "source %r failed: %s (%s)", request.name, outcome.error, outcome.error_code
            )
        return counts

    def restore(self) -> None:
        """Rebuild the clusterer from the decisions stored inside the window."""
        latest = self.store.latest_clustered_at()
        if latest is not None:
            since = latest - timedelta(hours=self.settings.cluster.window_hours)
            for doc, assignment in self.store.clustered_since(since):
                self.assigner.restore(doc, assignment)
        self._restored = True

    def cluster(self, report: CycleReport | None = None) -> int:
        """Assign every pending entry, oldest first, and save the decisions."""
        if not self._restored:
            self.restore()
        total = 0
        while docs := self.store.pending_docs():
            assignments = [self.assigner.add(doc) for doc in docs]
            self.store.save_assignments(assignments, self.clock())
            total += len(assignments)
            if report is not None:
                report.clustered += len(assignments)
                report.duplicates += sum(a.duplicate_of is not None for a in assignments)
        return total

    def publish(self, *, full: bool = False) -> list[str]:
        """Render what changed; the first publish of a process renders everything."""
        full = full or not self._published_once
        dirty = self.store.stories(min_sources=1) if full else self.store.dirty_stories()
        if not dirty and self._published_once:
            return []
        publisher = Publisher(self.settings, self.store)
        slugs = publisher.publish(dirty, full=full)
        self.store.mark_published(s.id for s in dirty)
        self._published_once = True
        return slugs


class Publisher:
    """Turns changed stories into rendered documents in the store (and the output folder)."""

    def __init__(self, settings: Settings, store: Store) -> None:
        self.settings = settings
        self.publish_settings = settings.publish
        self.store = store

    def publish(self, changed: Sequence[StoryView], *, full: bool) -> list[str]:
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
        self.store.put_documents(documents)
        self._write_out(documents)
        return slugs

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

    def _write_out(self, documents: Iterable[Document]) -> None:
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
