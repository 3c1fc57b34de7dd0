"""What timelines contain and how their items are named, from stored stories and entries.

Pure functions of data: no database, no network. The reader test (test_reader.py)
imports these timelines into newsboat through the OPML.
"""

from __future__ import annotations

import json
import re
from datetime import UTC, datetime, timedelta

import feedparser
from lxml import etree

from aggregator import timelines
from aggregator.opml import timelines_to_opml
from aggregator.publish import feed_description, timeline_links
from aggregator.publish.feeds import render_atom, render_json, render_rss
from aggregator.publish.pages import render_timeline_page
from aggregator.settings import PublishSettings, TimelineConfig
from aggregator.store import EntryView, StoryView
from aggregator.types import TimelineDoc

T0 = datetime(2024, 8, 6, 6, tzinfo=UTC)
SETTINGS = PublishSettings(base_url="https://feeds.example")
KURSK = TimelineConfig("kursk", "Kursk incursion", ("Kursk", "Курськ"), "The offensive.")


def report(
    entry_id: int,
    story_id: int,
    outlet: str,
    hours: float,
    title: str = "",
    *,
    duplicate_of: int | None = None,
    url: str = "",
) -> EntryView:
    published = T0 + timedelta(hours=hours)
    return EntryView(
        id=entry_id,
        story_id=story_id,
        duplicate_of=duplicate_of,
        title=title or f"Report {entry_id} on Kursk",
        url=url or f"https://{outlet.lower().replace(' ', '-')}.example/news/{entry_id}",
        summary=f"<p>Report {entry_id}.</p>",
        text=f"Text of report {entry_id}, from the Kursk region.",
        language="en",
        outlet=outlet,
        outlet_url=f"https://{outlet.lower().replace(' ', '-')}.example/feed.xml",
        outlet_site=f"https://{outlet.lower().replace(' ', '-')}.example/",
        published=published,
        first_seen=published,
        changed=published,
    )


def story(story_id: int, entries: list[EntryView], title: str = "") -> StoryView:
    return StoryView(
        id=story_id,
        key=str(story_id),
        title=title or f"Story {story_id}",
        first_at=min(e.published for e in entries),
        last_at=max(e.published for e in entries),
        entry_count=len(entries),
        source_count=len({e.outlet for e in entries}),
        updated_at=max(e.changed for e in entries),
    )


def kursk_world(settings: PublishSettings = SETTINGS) -> list[TimelineDoc]:
    """Two Kursk stories, the configured Kursk timeline and the all-stories feed."""
    first = [report(1, 1, "Kyiv Wire", 0), report(2, 1, "Dnipro Daily", 2)]
    first.append(report(3, 1, "Volyn News", 3, duplicate_of=1))
    second = [report(4, 2, "Kyiv Wire", 30), report(5, 2, "Harbour Post", 31)]
    stories = [(story(1, first), first), (story(2, second), second)]
    story_docs = [timelines.story_timeline(s, e, settings) for s, e in stories]
    kursk = timelines.configured_timeline(
        KURSK, first + second, settings, datetime(1970, 1, 1, tzinfo=UTC)
    )
    everything = timelines.all_stories(stories, settings, datetime(1970, 1, 1, tzinfo=UTC))
    return [everything, kursk, *story_docs]


def feed_ids(kind: str, body: bytes) -> list[str]:
    if kind == "json":
        return [item["id"] for item in json.loads(body)["items"]]
    return [entry.id for entry in feedparser.parse(body).entries]


def test_a_report_in_two_timelines_is_two_items_in_every_format() -> None:
    seen: dict[str, str] = {}
    for doc in kursk_world():
        by_kind = {
            kind: feed_ids(kind, render(doc, SETTINGS))
            for kind, render in (("atom", render_atom), ("rss", render_rss), ("json", render_json))
        }
        assert by_kind["atom"] == by_kind["rss"] == by_kind["json"] == [i.id for i in doc.items]
        for item_id in by_kind["atom"]:
            assert item_id not in seen, f"{item_id} is in both {seen.get(item_id)} and {doc.slug}"
            seen[item_id] = doc.slug
    assert len(seen) == 2 + 4 + 2 + 2  # stories, Kursk's items, story 1's, story 2's


def test_item_ids_follow_the_documented_scheme() -> None:
    everything, kursk, story_1, _ = kursk_world()
    assert [i.id for i in story_1.items] == [
        "tag:feeds.example,2026:entry/2",
        "tag:feeds.example,2026:entry/1",
    ], "story timelines keep the ids published since the first release"
    assert kursk.items[-1].id == "tag:feeds.example,2026:timeline/kursk/entry/1"
    assert {i.id for i in everything.items} == {
        "tag:feeds.example,2026:story/1",
        "tag:feeds.example,2026:story/2",
    }


def test_the_all_stories_feeds_list_stories_newest_first() -> None:
    # Story 1 began first but changed last: "newest first" is by when a story began,
    # the date readers show for its item, as every timeline orders its reports.
    early = [report(1, 1, "Kyiv Wire", 0), report(2, 1, "Dnipro Daily", 50)]
    late = [report(3, 2, "Kyiv Wire", 20), report(4, 2, "Harbour Post", 21)]
    middle = [report(5, 3, "Volyn News", 10), report(6, 3, "Harbour Post", 11)]
    stories = [(story(i, e), e) for i, e in ((1, early), (2, late), (3, middle))]
    doc = timelines.all_stories(stories, SETTINGS, datetime(1970, 1, 1, tzinfo=UTC))
    expected = ["Story 2", "Story 3", "Story 1"]
    assert [i.title for i in doc.items] == expected
    for render in (render_atom, render_rss):
        parsed = feedparser.parse(render(doc, SETTINGS)).entries
        assert [e.title for e in parsed] == expected
        dates = [e.published_parsed for e in parsed]
        assert dates == sorted(dates, reverse=True)
    items = json.loads(render_json(doc, SETTINGS))["items"]
    assert [i["date_published"] for i in items] == sorted(
        (i["date_published"] for i in items), reverse=True
    )


def test_descriptions_and_counts_agree_in_feeds_opml_and_pages() -> None:
    everything, kursk, story_1, story_2 = kursk_world()
    outlets = "Dnipro Daily, Harbour Post, Kyiv Wire, Volyn News"
    # Report 5, an hour after story 2 began: the latest story's start is not the latest report.
    latest = "latest report 2024-08-07 13:00 UTC"
    expected = {
        "all": f"2 stories from 4 outlets ({outlets}); first report 2024-08-06 06:00 UTC, {latest}.",
        "kursk": f"5 reports from 4 outlets ({outlets}); first report 2024-08-06 06:00 UTC, {latest}.",
        "story-2": "2 reports from 2 outlets (Harbour Post, Kyiv Wire); first report "
        f"2024-08-07 12:00 UTC, {latest}.",
    }
    opml = etree.fromstring(timelines_to_opml([everything, kursk, story_2], SETTINGS))
    in_opml = {o.get("htmlUrl"): o.get("description") for o in opml.iter("outline")}
    for doc in (everything, kursk, story_2):
        facts = expected[doc.slug]
        atom = feedparser.parse(render_atom(doc, SETTINGS)).feed.subtitle
        rss = feedparser.parse(render_rss(doc, SETTINGS)).feed.description
        described = json.loads(render_json(doc, SETTINGS))["description"]
        page = render_timeline_page(doc, SETTINGS).decode()
        for text in (atom, rss, described, in_opml[timeline_links(doc.slug, SETTINGS).html]):
            assert text.endswith(facts), (doc.slug, text)
        counted = facts.split(" (")[0]
        assert counted in re.sub("<[^>]+>", "", page), doc.slug

    # The all-stories item of a story says what the story's own feed says.
    [item_2] = [i for i in everything.items if i.link.endswith("/story-2.html")]
    assert expected["story-2"] in item_2.summary_html
    [item_1] = [i for i in everything.items if i.link.endswith("/story-1.html")]
    assert feed_description(story_1).split(". ", 1)[-1] in item_1.summary_html
