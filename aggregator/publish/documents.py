"""Published documents: which stories become which files, at which paths, with which types.

The Publisher turns changed stories into timelines (aggregator.timelines) and each
timeline into its four documents; the overview adds the all-stories feed, the
index page and the OPML. The leader stores the documents for the feed server and,
when `publish.out_dir` is set, writes them out as static files.
"""

from __future__ import annotations

import hashlib
import logging
from collections import defaultdict
from collections.abc import Callable, Iterable, Sequence
from datetime import UTC, datetime
from functools import partial
from pathlib import Path
from typing import TypeVar

from aggregator import timelines
from aggregator.errors import PublishError
from aggregator.opml import timelines_to_opml
from aggregator.publish import INDEX_PATH, OPML_PATH
from aggregator.publish.feeds import render_atom, render_json, render_rss
from aggregator.publish.pages import render_index, render_timeline_page
from aggregator.settings import Settings, TimelineConfig
from aggregator.store import EntryView, Store, StoryView
from aggregator.types import Document, TimelineDoc

log = logging.getLogger(__name__)
_T = TypeVar("_T")

# Each timeline is published as these four documents, /timelines/<slug>.<kind>.
CONTENT_TYPES = {
    "atom": "application/atom+xml; charset=utf-8",
    "rss": "application/rss+xml; charset=utf-8",
    "json": "application/feed+json; charset=utf-8",
    "html": "text/html; charset=utf-8",
}
OPML_TYPE = "text/x-opml; charset=utf-8"
RENDER_BATCH = 100  # changed stories whose reports are read and rendered at once


def timeline_path(slug: str, kind: str) -> str:
    return f"/timelines/{slug}.{kind}"


def timeline_paths(slugs: Iterable[str]) -> list[str]:
    """Every document path a timeline's slug is published under."""
    return [timeline_path(slug, kind) for slug in slugs for kind in CONTENT_TYPES]


class Publisher:
    """Turns changed stories into rendered documents.

    One timeline that cannot be rendered is logged with its traceback, reported
    through `on_failed("publish")` and left as it was; the others are published.
    """

    def __init__(
        self,
        settings: Settings,
        store: Store,
        on_failed: Callable[[str], None] = lambda stage: None,
    ) -> None:
        self.settings = settings
        self.publish_settings = settings.publish
        self.store = store
        self.on_failed = on_failed

    def render_changes(
        self, changed: Sequence[StoryView], *, full: bool
    ) -> tuple[list[Document], list[str]]:
        """The documents of the changed stories' timelines, of the configured timelines
        they join or leave, and (when any changed, or `full`) of the overview.

        Changed stories are read and rendered a batch at a time; matching them
        against the configured timelines' words is the only use of their text.
        """
        min_sources = self.publish_settings.min_sources
        configs = self.settings.timelines
        matched: dict[str, set[int]] = {config.name: set() for config in configs}
        documents: list[Document] = []
        slugs: list[str] = []
        for start in range(0, len(changed), RENDER_BATCH):
            batch = changed[start : start + RENDER_BATCH]
            entries = _by_story(self.store.story_entries((s.id for s in batch), text=bool(configs)))
            for story in batch:
                if story.source_count >= min_sources:
                    self._add(self._story_doc(story, entries[story.id]), documents, slugs)
            for config in configs:
                # A changed story joins or leaves as its reports now read.
                matched[config.name].update(
                    s.id for s in batch if timelines.matches(config, entries[s.id])
                )
        configured = self._configured(changed, matched, full=full)
        for doc in configured.values():
            self._add(doc, documents, slugs)
        if slugs or full:
            documents += self._guarded("all", partial(self._overview, configured)) or []
        return documents, slugs

    def _add(self, doc: TimelineDoc | None, documents: list[Document], slugs: list[str]) -> None:
        """Render a timeline's documents onto `documents`, unless it failed."""
        if doc is None:
            return
        rendered = self._guarded(doc.slug, partial(self.render, doc))
        if rendered:
            documents += rendered
            slugs.append(doc.slug)

    def _story_doc(self, story: StoryView, entries: list[EntryView]) -> TimelineDoc | None:
        return self._guarded(
            timelines.story_slug(story.id),
            partial(timelines.story_timeline, story, entries, self.publish_settings),
        )

    def _guarded(self, slug: str, make: Callable[[], _T]) -> _T | None:
        """`make()`, or None when it fails: logged, counted, and the timeline's last
        published version stays."""
        try:
            return make()
        except Exception:
            log.exception("timeline %s could not be rendered; its last version stays", slug)
            self.on_failed("publish")
            return None

    def _configured(
        self, changed: Sequence[StoryView], matched: dict[str, set[int]], *, full: bool
    ) -> dict[str, TimelineDoc]:
        """The configured timelines to publish again, by name: those whose stories
        changed, whose rule changed, or all with `full`. `matched` holds, for each,
        which of the changed stories its words match."""
        configs = self.settings.timelines
        if full:
            self.store.forget_other_timelines(c.name for c in configs)
        collected = self.store.timeline_rules()
        stale = [c for c in configs if collected.get(c.name) != timelines.rule_key(c)]
        self._collect_again(stale)
        docs = {}
        for config in configs:
            unmatched = {s.id for s in changed} - matched[config.name]
            moved = self.store.update_timeline_stories(config.name, matched[config.name], unmatched)
            if not (matched[config.name] or moved or full or config in stale):
                continue
            docs[config.name] = self._configured_doc(config)
        return docs

    def _configured_doc(self, config: TimelineConfig) -> TimelineDoc:
        """A configured timeline from its newest events; SQL counts the rest."""
        entries, span = self.store.timeline_reports(config.name, self.publish_settings.max_items)
        return timelines.configured_timeline(
            config, entries, self.publish_settings, _epoch(), span=span
        )

    def _collect_again(self, configs: Sequence[TimelineConfig]) -> None:
        """Match every stored story against timelines whose rule is new or changed, and
        keep exactly those: a narrowed rule drops stories, a widened one finds old ones."""
        if not configs:
            return
        found = timelines.matching_stories(configs, self.store.story_texts(min_sources=1))
        for config in configs:
            ids = found[config.name]
            self.store.replace_timeline_stories(config.name, timelines.rule_key(config), ids)
            log.info("timeline %s collected again by its rule: %d stories", config.name, len(ids))

    def _overview(self, configured: dict[str, TimelineDoc]) -> list[Document]:
        """The all-stories feed, the index page and the OPML of every timeline;
        `configured` holds the configured timelines built already."""
        stories = self.store.stories(
            min_sources=self.publish_settings.min_sources,
            limit=self.publish_settings.max_stories,
        )
        entries = _by_story(self.store.story_entries((s.id for s in stories), text=False))
        rendered = [(s, self._story_doc(s, entries[s.id])) for s in stories]
        stories = [s for s, doc in rendered if doc is not None]
        story_docs = [doc for _, doc in rendered if doc is not None]
        listed = [
            configured[c.name] if c.name in configured else self._configured_doc(c)
            for c in self.settings.timelines
        ]
        overview = timelines.all_stories(
            [(s, entries[s.id]) for s in stories], self.publish_settings, _epoch()
        )
        # A storyline that a configured timeline follows alone is listed once, on the
        # index and in the OPML, as that timeline: a reader importing the OPML would
        # otherwise subscribe to the same reports twice. Its own page and feeds stay
        # published for those who follow them already.
        followed = set()
        for config in self.settings.timelines:
            ids = self.store.timeline_story_ids(config.name)
            if len(ids) == 1:
                followed |= ids
        shown = listed + [
            doc for s, doc in zip(stories, story_docs, strict=True) if s.id not in followed
        ]
        updated = max([overview.updated] + [d.updated for d in listed + story_docs])
        return self.render(overview) + [
            make_document(
                INDEX_PATH,
                CONTENT_TYPES["html"],
                render_index(shown, self.publish_settings),
                updated,
            ),
            make_document(
                OPML_PATH,
                OPML_TYPE,
                timelines_to_opml([overview] + shown, self.publish_settings),
                updated,
            ),
        ]

    def render(self, doc: TimelineDoc) -> list[Document]:
        settings = self.publish_settings
        bodies = {
            "atom": render_atom(doc, settings),
            "rss": render_rss(doc, settings),
            "json": render_json(doc, settings),
            "html": render_timeline_page(doc, settings),
        }
        return [
            make_document(timeline_path(doc.slug, kind), CONTENT_TYPES[kind], body, doc.updated)
            for kind, body in bodies.items()
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


def make_document(path: str, content_type: str, body: bytes, updated: datetime) -> Document:
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
