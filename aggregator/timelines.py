"""What a timeline contains: pure functions from stored stories and entries to TimelineDocs.

A story with reports from enough outlets is a timeline of its own; a configured
timeline collects every story whose reports mention one of its words.

Ids are tag: URIs under `tag:<base_url host>,2026:`, derived from database ids and
timeline names, so they never change; an item's id is unique across every feed the
OPML lists, because readers such as newsboat keep each id once across all feeds:

    feed of story N          story/N            its items: entry/<entry id>
    configured timeline T    timeline/T         its items: timeline/T/entry/<entry id>
    all stories              timeline/all       its items: story/<story id>

An entry belongs to one story at a time, so story timelines keep the bare entry
ids they have had since the first release. A configured timeline scopes its items
by its name (until this scheme they shared the story timelines' ids, and readers
that import the OPML showed each report in one of the two feeds only).
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterable, Sequence
from datetime import datetime
from html import escape
from typing import NamedTuple
from urllib.parse import quote, urlsplit

from aggregator.publish import ALL_STORIES_SLUG, timeline_facts, timeline_links
from aggregator.settings import PublishSettings, TimelineConfig
from aggregator.store import EntryView
from aggregator.store.database import StoryView
from aggregator.types import TimelineDoc, TimelineItem

_TAG_DATE = "2026"  # a fixed tagging date: changing it would change every id


def authority(settings: PublishSettings) -> str:
    return urlsplit(settings.base_url).hostname or "localhost"


def tag(settings: PublishSettings, kind: str, ident: int | str) -> str:
    return f"tag:{authority(settings)},{_TAG_DATE}:{kind}/{ident}"


def story_slug(story_id: int) -> str:
    return f"story-{story_id}"


def entry_kind(timeline: str | None) -> str:
    """The tag kind of an entry's item: bare in story timelines, scoped in a configured one."""
    return "entry" if timeline is None else f"timeline/{quote(timeline, safe='')}/entry"


def build_items(
    entries: Sequence[EntryView],
    settings: PublishSettings,
    limit: int,
    timeline: str | None = None,
) -> tuple[TimelineItem, ...]:
    """One item per original report, newest first; later copies fold into `also`.

    `timeline` names the configured timeline the items are for (None: a story's own).
    """
    copies: dict[int, list[EntryView]] = {}
    originals: list[EntryView] = []
    for entry in entries:
        if entry.duplicate_of is None:
            originals.append(entry)
        else:
            copies.setdefault(entry.duplicate_of, []).append(entry)
    kind = entry_kind(timeline)
    items = [_item(entry, copies.get(entry.id, []), settings, kind) for entry in originals]
    items.sort(key=lambda item: (item.published, item.id), reverse=True)
    return tuple(items[:limit])


def _item(
    entry: EntryView, copies: list[EntryView], settings: PublishSettings, kind: str
) -> TimelineItem:
    updated = max([entry.changed, entry.published] + [c.first_seen for c in copies])
    return TimelineItem(
        id=tag(settings, kind, entry.id),
        title=entry.title or "(untitled)",
        link=entry.url or entry.outlet_site or entry.outlet_url,
        summary_html=entry.summary,
        outlet=entry.outlet,
        outlet_url=entry.outlet_url,
        outlet_site=entry.outlet_site,
        published=entry.published,
        updated=updated,
        language=entry.language,
        also=tuple((c.outlet, c.url or c.outlet_url) for c in copies),
    )


class _Span(NamedTuple):
    """What a timeline's description states of its reports (see `publish.facts`)."""

    sources: tuple[str, ...]
    first_report: datetime | None
    latest_report: datetime | None
    reports: int


def _span(entries: Sequence[EntryView]) -> _Span:
    """The one place these facts are taken from reports: every report the timeline
    holds, copies and those past max_items included."""
    return _Span(
        sources=tuple(sorted({e.outlet for e in entries})),
        first_report=min((e.published for e in entries), default=None),
        latest_report=max((e.published for e in entries), default=None),
        reports=len(entries),
    )


def _doc(
    slug: str,
    title: str,
    description: str,
    feed_id: str,
    entries: Sequence[EntryView],
    settings: PublishSettings,
    updated_floor: datetime,
    timeline: str | None = None,
) -> TimelineDoc:
    items = build_items(entries, settings, settings.max_items, timeline)
    updated = max([updated_floor] + [item.updated for item in items])
    span = _span(entries)
    return TimelineDoc(
        slug=slug,
        title=title,
        description=description,
        id=feed_id,
        updated=updated,
        items=items,
        sources=span.sources,
        first_report=span.first_report,
        latest_report=span.latest_report,
        reports=span.reports,
    )


def story_timeline(
    story: StoryView, entries: Sequence[EntryView], settings: PublishSettings
) -> TimelineDoc:
    return _doc(
        story_slug(story.id),
        story.title,
        "",  # the publisher states what a story timeline is and its counts
        tag(settings, "story", story.id),
        entries,
        settings,
        story.first_at,
    )


def configured_timeline(
    config: TimelineConfig,
    entries: Sequence[EntryView],
    settings: PublishSettings,
    updated_floor: datetime,
) -> TimelineDoc:
    return _doc(
        config.name,
        config.title,
        config.description,
        tag(settings, "timeline", config.name),
        entries,
        settings,
        updated_floor,
        timeline=config.name,
    )


def rule_key(config: TimelineConfig) -> str:
    """What decides a configured timeline's stories, as a short stable string.

    Only the words count, as `matches` reads them (case-folded, in any order): a
    new title or description keeps the stories, another word collects them again.
    """
    words = sorted({word.casefold() for word in config.match})
    return "match:" + hashlib.sha256("\x1f".join(words).encode()).hexdigest()[:32]


def matching_stories(
    configs: Sequence[TimelineConfig], stories: Iterable[tuple[int, Sequence[EntryView]]]
) -> dict[str, set[int]]:
    """For each timeline, which of the (story id, its entries) match its words."""
    found: dict[str, set[int]] = {config.name: set() for config in configs}
    for story_id, entries in stories:
        for config in configs:
            if matches(config, entries):
                found[config.name].add(story_id)
    return found


def matches(config: TimelineConfig, entries: Iterable[EntryView]) -> bool:
    """True when any report of the story mentions one of the timeline's words."""
    words = [w.casefold() for w in config.match]
    for entry in entries:
        haystack = f"{entry.title}\n{entry.text}".casefold()
        if any(word in haystack for word in words):
            return True
    return False


def all_stories(
    stories: Sequence[tuple[StoryView, Sequence[EntryView]]],
    settings: PublishSettings,
    updated_floor: datetime,
) -> TimelineDoc:
    """The all-stories feed: one item per story timeline, linking to its page.

    Items are newest first by when their story began, the date readers show for
    them; each says what its story's own feed says of it.
    """
    items: list[tuple[TimelineItem, Sequence[EntryView]]] = []
    for story, entries in stories:
        first = entries[0] if entries else None
        doc = story_timeline(story, entries, settings)
        item = TimelineItem(
            id=tag(settings, "story", story.id),
            title=story.title or "(untitled)",
            link=timeline_links(doc.slug, settings).html,
            summary_html=f"<p>{escape(timeline_facts(doc))}</p>",
            outlet=first.outlet if first else settings.title,
            outlet_url=first.outlet_url if first else settings.base_url,
            outlet_site=first.outlet_site if first else None,
            published=story.first_at,
            updated=max(story.updated_at, story.first_at),
            language=first.language if first else None,
        )
        items.append((item, entries))
    items.sort(key=lambda pair: (pair[0].published, pair[0].id), reverse=True)
    listed = items[: settings.max_stories]
    # The description states the facts of the stories listed; it counts stories.
    span = _span([entry for _, entries in listed for entry in entries])
    return TimelineDoc(
        slug=ALL_STORIES_SLUG,
        title=settings.title,
        description=f"Every story reported by at least {settings.min_sources} outlets.",
        id=tag(settings, "timeline", ALL_STORIES_SLUG),
        updated=max([updated_floor] + [item.updated for item, _ in listed]),
        items=tuple(item for item, _ in listed),
        sources=span.sources,
        first_report=span.first_report,
        latest_report=span.latest_report,
    )
