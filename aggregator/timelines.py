"""What a timeline contains: pure functions from stored stories and entries to TimelineDocs.

A story with reports from enough outlets is a timeline of its own; a configured
timeline collects every story whose reports mention one of its words.

Ids are tag: URIs under `tag:<base_url host>,2026:`, derived from database ids and
timeline names, so they never change; an item's id is unique across every feed the
OPML lists, because readers such as newsboat keep each id once across all feeds:

    feed of story N          story/N            its items: entry/<event key>
    configured timeline T    timeline/T         its items: timeline/T/entry/<event key>
    all stories              timeline/all       its items: story/<story id>

An item is one event; its event key is the entry id of the report that began it
(an entry stored before events were kept is its own event), so an event's item
has the id its first report's item always had, and keeps it as reports join.

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
from typing import Protocol
from urllib.parse import quote, urlsplit

from aggregator.publish import ALL_STORIES_SLUG, timeline_facts, timeline_links
from aggregator.settings import PublishSettings, TimelineConfig
from aggregator.store import EntryView
from aggregator.store.database import ReportSpan, StoryView
from aggregator.types import ReportLine, TimelineDoc, TimelineItem

REPRESENTATIVE_OF = 200  # reports that compete to title an event or a story
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
    language: str = "",
) -> tuple[TimelineItem, ...]:
    """One item per event, newest first by its latest report; copies fold into `also`.

    An event's item keeps the id its first report had (`entry/<event key>`), so it
    stays the same item while later reports join it. An entry stored before events
    were kept is an event of its own. `timeline` names the configured timeline the
    items are for (None: a story's own); an event is titled in `language` when one
    of its reports is in it (see `representative`).
    """
    copies: dict[int, list[EntryView]] = {}
    events: dict[str, list[EntryView]] = {}
    for entry in entries:
        if entry.duplicate_of is None:
            events.setdefault(entry.event_key or str(entry.id), []).append(entry)
        else:
            copies.setdefault(entry.duplicate_of, []).append(entry)
    kind = entry_kind(timeline)
    ranked = [
        (max(r.published for r in reports), _item(key, reports, copies, settings, kind, language))
        for key, reports in events.items()
    ]
    ranked.sort(key=lambda pair: (pair[0], pair[1].id), reverse=True)
    return tuple(item for _, item in ranked[:limit])


def _item(
    key: str,
    reports: list[EntryView],
    copies: dict[int, list[EntryView]],
    settings: PublishSettings,
    kind: str,
    language: str,
) -> TimelineItem:
    reports = sorted(reports, key=lambda r: (r.published, r.id))
    lead = representative(reports, language)
    folded = [c for r in reports for c in copies.get(r.id, [])]
    updated = max(
        [r.changed for r in reports]
        + [r.published for r in reports]
        + [c.first_seen for c in folded]
    )
    listed = () if len(reports) == 1 else tuple(_line(r, copies.get(r.id, [])) for r in reports)
    return TimelineItem(
        id=tag(settings, kind, quote(key, safe="")),
        title=lead.title or "(untitled)",
        link=_link(lead),
        summary_html=lead.summary,
        outlet=lead.outlet,
        outlet_url=lead.outlet_url,
        outlet_site=lead.outlet_site,
        published=reports[0].published,
        updated=updated,
        language=lead.language,
        # With several reports each lists its own copies; a lone report keeps them here.
        also=_also(copies.get(lead.id, [])) if not listed else (),
        reports=listed,
    )


def _link(entry: EntryView) -> str:
    return entry.url or entry.outlet_site or entry.outlet_url


def _also(copies: list[EntryView]) -> tuple[tuple[str, str], ...]:
    return tuple((c.outlet, c.url or c.outlet_url) for c in copies)


def _line(entry: EntryView, copies: list[EntryView]) -> ReportLine:
    return ReportLine(
        outlet=entry.outlet,
        link=_link(entry),
        published=entry.published,
        language=entry.language,
        outlet_site=entry.outlet_site,
        also=_also(copies),
        title=entry.title,
    )


def representative(reports: Sequence[EntryView], language: str = "") -> EntryView:
    """The report whose headline shares most with the event's other headlines.

    Headlines are compared as sets of character trigrams (case-folded), which works
    in any script and across close languages without a model; the score is the sum
    of overlaps (Jaccard) with every other headline. Ties go to the earliest report,
    so a lone or evenly split event is titled by the report that began it. With a
    `language` ("uk" also takes "uk-UA"), only reports in it compete when there are
    any. Only the first REPRESENTATIVE_OF reports count: the comparison is quadratic.
    """
    reports = reports[:REPRESENTATIVE_OF]
    grams = [_trigrams(r.title) for r in reports]
    competing = [i for i, r in enumerate(reports) if in_language(r.language, language)]

    def score(index: int) -> float:
        mine = grams[index]
        return sum(
            len(mine & other) / len(mine | other)
            for j, other in enumerate(grams)
            if j != index and (mine or other)
        )

    best = max(competing or range(len(reports)), key=lambda i: (score(i), -i))
    return reports[best]


def in_language(tag: str | None, language: str) -> bool:
    """True when a report's language tag is `language` or a variant of it ("uk-UA")."""
    if not language or not tag:
        return False
    primary = language.casefold()
    tag = tag.casefold()
    return tag == primary or tag.startswith(primary + "-")


def story_title(story: StoryView, entries: Sequence[EntryView], language: str = "") -> str:
    """A story's title: the most representative headline of its largest event.

    Not its first report, which may be a neighbouring happening the story absorbed
    (an oil-depot strike titling the incursion); ties go to the earlier event.
    """
    events: dict[str, list[EntryView]] = {}
    for entry in sorted(entries, key=lambda e: e.published):
        if entry.duplicate_of is None:
            events.setdefault(entry.event_key or str(entry.id), []).append(entry)
    if not events:
        return story.title
    largest = max(events.values(), key=len)
    return representative(largest, language).title or story.title


def _trigrams(title: str) -> frozenset[str]:
    text = " " + " ".join(title.casefold().split()) + " "
    return frozenset(text[i : i + 3] for i in range(len(text) - 2)) if text.strip() else frozenset()


def _span(entries: Sequence[EntryView]) -> ReportSpan:
    """The one place these facts are taken from reports: every report the timeline
    holds, copies and those past max_items included."""
    return ReportSpan(
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
    language: str = "",
    span: ReportSpan | None = None,
) -> TimelineDoc:
    items = build_items(entries, settings, settings.max_items, timeline, language)
    updated = max([updated_floor] + [item.updated for item in items])
    span = _span(entries) if span is None else span
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
        story_title(story, entries, settings.language),
        "",  # the publisher states what a story timeline is and its counts
        tag(settings, "story", story.id),
        entries,
        settings,
        story.first_at,
        language=settings.language,
    )


def configured_timeline(
    config: TimelineConfig,
    entries: Sequence[EntryView],
    settings: PublishSettings,
    updated_floor: datetime,
    span: ReportSpan | None = None,
) -> TimelineDoc:
    """The timeline of a configured rule's stories. `entries` are all their reports,
    or, with the `span` of all of them, those of at least its max_items newest events
    and their copies (`Store.timeline_reports`): the feed lists no others."""
    return _doc(
        config.name,
        config.title,
        config.description,
        tag(settings, "timeline", config.name),
        entries,
        settings,
        updated_floor,
        timeline=config.name,
        language=config.language or settings.language,
        span=span,
    )


def rule_key(config: TimelineConfig) -> str:
    """What decides a configured timeline's stories, as a short stable string.

    Only the words count, as `matches` reads them (case-folded, in any order): a
    new title or description keeps the stories, another word collects them again.
    """
    words = sorted({word.casefold() for word in config.match})
    return "match:" + hashlib.sha256("\x1f".join(words).encode()).hexdigest()[:32]


class Wording(Protocol):
    """What a story's report is matched by: its headline and text."""

    @property
    def title(self) -> str: ...

    @property
    def text(self) -> str: ...


def matching_stories(
    configs: Sequence[TimelineConfig], stories: Iterable[tuple[int, Sequence[Wording]]]
) -> dict[str, set[int]]:
    """For each timeline, which of the (story id, its entries) match its words."""
    found: dict[str, set[int]] = {config.name: set() for config in configs}
    for story_id, entries in stories:
        for config in configs:
            if matches(config, entries):
                found[config.name].add(story_id)
    return found


def matches(config: TimelineConfig, entries: Iterable[Wording]) -> bool:
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
            title=doc.title or "(untitled)",
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
