"""What timelines contain and how their items are named, from stored stories and entries.

Mostly pure functions of data; the configured timelines' stories are kept in a real
SQLite file, as the worker keeps them. The reader test (test_reader.py) imports
these timelines into newsboat through the OPML.
"""

from __future__ import annotations

import dataclasses
import json
import re
from datetime import UTC, datetime, timedelta
from pathlib import Path

import feedparser
import pytest
from lxml import etree

from aggregator import timelines
from aggregator.opml import timelines_to_opml
from aggregator.publish import feed_description, timeline_links
from aggregator.publish.documents import Publisher
from aggregator.publish.feeds import render_atom, render_json, render_rss
from aggregator.publish.pages import render_timeline_page
from aggregator.settings import (
    ConfigError,
    PublishSettings,
    SourceConfig,
    TimelineConfig,
    parse_settings,
)
from aggregator.store import EntryView, Store, StoryView, open_store
from aggregator.types import Assignment, EntryData, PollOutcome, TimelineDoc

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
    language: str = "en",
    event: int | None = None,
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
        language=language,
        outlet=outlet,
        outlet_url=f"https://{outlet.lower().replace(' ', '-')}.example/feed.xml",
        outlet_site=f"https://{outlet.lower().replace(' ', '-')}.example/",
        published=published,
        first_seen=published,
        changed=published,
        event_key=None if event is None else str(event),
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
    # Each story is titled by its first report here (no report shares more).
    expected = ["Report 3 on Kursk", "Report 5 on Kursk", "Report 1 on Kursk"]
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


# -- events: one item per happening, listing every report --------------------------


def two_events() -> list[EntryView]:
    """Two happenings of one story, each reported in English, Ukrainian and Russian."""
    return [
        report(11, 1, "Kyiv Wire", 0, "Ukrainian troops cross into Kursk region", event=11),
        report(
            12,
            1,
            "Dnipro Daily",
            1,
            "Українські війська зайшли в Курську область",
            language="uk",
            event=11,
        ),
        report(
            13,
            1,
            "Moscow Courier",
            2,
            "Украинские войска вошли в Курскую область",
            language="ru",
            event=11,
        ),
        report(14, 1, "Kyiv Wire", 20, "Kursk region declares an emergency", event=14),
        report(
            15,
            1,
            "Dnipro Daily",
            21,
            "У Курській області оголосили надзвичайний стан",
            language="uk",
            event=14,
        ),
        report(
            16,
            1,
            "Moscow Courier",
            22,
            "В Курской области объявлен режим ЧС",
            language="ru",
            event=14,
        ),
    ]


def test_two_events_in_three_languages_are_two_items_listing_their_reports() -> None:
    entries = two_events()
    for doc in (
        timelines.story_timeline(story(1, entries), entries, SETTINGS),
        timelines.configured_timeline(KURSK, entries, SETTINGS, T0),
    ):
        assert len(doc.items) == 2
        emergency, crossing = doc.items  # newest first
        assert emergency.id.endswith("entry/14") and crossing.id.endswith("entry/11")
        for item, began in ((emergency, 20), (crossing, 0)):
            assert [r.language for r in item.reports] == ["en", "uk", "ru"]
            assert item.published == T0 + timedelta(hours=began)
            assert item.updated == T0 + timedelta(hours=began + 2), "its latest report"
        atom = feedparser.parse(render_atom(doc, SETTINGS))
        assert atom.bozo == 0 and [e.id for e in atom.entries] == [i.id for i in doc.items]
        for entry in atom.entries:
            for outlet in ("Kyiv Wire", "Dnipro Daily", "Moscow Courier"):
                assert outlet in entry.summary
            assert " · uk · " in entry.summary and " · ru · " in entry.summary
        assert feedparser.parse(render_rss(doc, SETTINGS)).bozo == 0
        russian = json.loads(render_json(doc, SETTINGS))["items"][0]["_aggregator"]["reports"][2]
        assert russian["language"] == "ru" and russian["title"] == doc.items[0].reports[2].title
        # the counts still count reports, from every format and the page
        assert atom.feed.subtitle.endswith(
            "6 reports from 3 outlets (Dnipro Daily, Kyiv Wire, Moscow Courier); first report "
            "2024-08-06 06:00 UTC, latest report 2024-08-07 04:00 UTC."
        )
        html = render_timeline_page(doc, SETTINGS).decode()
        assert html.count('<li class="entry"') == 2 and html.count('<section class="day">') == 2
        page = re.sub("<[^>]+>", "", html)
        assert "6 reports from 3 outlets" in page
        assert "Українські війська зайшли в Курську область" in page


def test_a_later_report_updates_its_events_item_and_keeps_its_id() -> None:
    entries = two_events()
    before = timelines.story_timeline(story(1, entries), entries, SETTINGS)
    later = report(17, 1, "Harbour Post", 30, "Emergency in Kursk region made federal", event=14)
    after = timelines.story_timeline(story(1, [*entries, later]), [*entries, later], SETTINGS)
    assert [i.id for i in after.items] == [i.id for i in before.items]
    old, new = before.items[0], after.items[0]
    assert new.updated == later.published > old.updated
    assert new.published == old.published, "the event began when it did"
    assert [r.outlet for r in new.reports] == [r.outlet for r in old.reports] + ["Harbour Post"]
    assert "Harbour Post" in feedparser.parse(render_atom(after, SETTINGS)).entries[0].summary


def test_an_events_title_is_its_most_representative_headline() -> None:
    # The first report's headline is the odd one out; the item takes the one that
    # shares most with the others.
    entries = [
        report(21, 1, "Kyiv Wire", 0, "Breaking: explosions heard overnight", event=21),
        report(22, 1, "Dnipro Daily", 1, "Strike hits bridge over the Seim river", event=21),
        report(
            23, 1, "Harbour Post", 2, "Second bridge over the Seim river hit by a strike", event=21
        ),
        report(
            24, 1, "Volyn News", 3, "Bridge over Seim river hit by strike, officials say", event=21
        ),
    ]
    [item] = timelines.story_timeline(story(1, entries), entries, SETTINGS).items
    chosen = next(e for e in entries if e.title == item.title)
    assert chosen.id != 21 and "bridge" in item.title
    assert item.id == "tag:feeds.example,2026:entry/21" and len(item.reports) == 4
    assert (item.outlet, item.link) == (chosen.outlet, chosen.url), "that report's outlet and link"


def test_a_timelines_language_titles_each_event_by_a_report_in_it() -> None:
    entries = two_events()
    ukrainian = dataclasses.replace(KURSK, language="uk")
    doc = timelines.configured_timeline(ukrainian, entries, SETTINGS, T0)
    assert len(doc.items) == 2
    by_event = {item.id.rsplit("/", 1)[1]: item for item in doc.items}
    for key, item in by_event.items():
        [chosen] = [e for e in entries if e.event_key == key and e.title == item.title]
        assert chosen.language == "uk" and item.link == chosen.url
    # `[publish] language` stands for every timeline without its own; an event with
    # no report in the language keeps its most representative one.
    russian = dataclasses.replace(SETTINGS, language="ru-RU")
    story_doc = timelines.story_timeline(story(1, entries), entries, russian)
    assert all(re.search("[а-я]", item.title) for item in story_doc.items)
    french = dataclasses.replace(SETTINGS, language="fr")
    assert [
        i.title for i in timelines.story_timeline(story(1, entries), entries, french).items
    ] == [i.title for i in timelines.story_timeline(story(1, entries), entries, SETTINGS).items]


def test_timeline_language_is_read_and_checked_from_the_file() -> None:
    text = '[[timelines]]\nname = "kursk"\nmatch = ["Kursk"]\nlanguage = "uk"\n'
    assert parse_settings(text, environ={}).timelines[0].language == "uk"
    with pytest.raises(ConfigError) as refused:
        parse_settings(text.replace('"uk"', '"not a code"'), file="c.toml", environ={})
    assert "timelines[0].language" in str(refused.value) and "language code" in str(refused.value)


def test_a_story_is_titled_by_its_largest_event_not_its_first_report() -> None:
    # The story began with a neighbouring happening it absorbed; its timeline, the
    # index and the all-stories feed name the happening most of its reports cover.
    depot = report(
        31, 1, "Kyiv Wire", 0, "Беспилотник атаковал нефтебазу в Курской области", event=31
    )
    entries = [depot, *two_events()]
    listed = story(1, entries, title=depot.title)
    doc = timelines.story_timeline(listed, entries, SETTINGS)
    crossing = {e.title for e in entries if e.event_key == "11"}
    assert doc.title in crossing, "the crossing, reported first of the two largest events"
    overview = timelines.all_stories([(listed, entries)], SETTINGS, T0)
    assert overview.items[0].title == doc.title


# -- a configured timeline's stories, stored ------------------------------------------


def stored_world(tmp_path: Path) -> tuple[Store, dict[str, int]]:
    """A SQLite store with three one-report stories, by their subject."""
    store = open_store(f"sqlite:///{tmp_path / 'aggregator.db'}")
    store.sync_sources([SourceConfig(name="Kyiv Wire", url="http://kw.test/feed")], T0)
    [request] = store.claim_due(T0, "w", lease_s=60, limit=1)
    subjects = {
        "sudzha": "Troops enter Sudzha in the Kursk region",
        "oil": "Drone strikes an oil depot in the Kursk region",
        "belgorod": "Shelling in Belgorod overnight",
    }
    listed = [
        EntryData(
            key=key,
            title=title,
            link=f"http://kw.test/{key}",
            summary_html=f"<p>{title}</p>",
            text=title,
            author=None,
            published=T0,
            updated=None,
            content_hash=key,
        )
        for key, title in subjects.items()
    ]
    status = PollOutcome(checked_at=T0, next_check_at=T0 + timedelta(hours=1), status="ok")
    store.record_poll(request.source_id, status, listed, owner="w")
    docs = store.pending_docs()
    store.save_assignments([Assignment(d.id, d.id, new_story=True) for d in docs], T0)
    by_title = {s.title: s.id for s in store.stories()}
    return store, {key: by_title[title] for key, title in subjects.items()}


def publish_with(store: Store, *words: str, full: bool = True) -> None:
    base = parse_settings("", environ={})
    config = TimelineConfig("kursk", "Kursk incursion", tuple(words), "")
    settings = dataclasses.replace(base, timelines=(config,))
    changed = store.dirty_stories()
    Publisher(settings, store).render_changes(changed, full=full)
    store.mark_published(changed, T0)


def test_narrowing_a_timelines_rule_drops_the_stories_it_no_longer_matches(
    tmp_path: Path,
) -> None:
    store, story = stored_world(tmp_path)
    publish_with(store, "Kursk")
    assert store.timeline_story_ids("kursk") == {story["sudzha"], story["oil"]}
    publish_with(store, "Sudzha")  # the oil depot strike was never part of the incursion
    assert store.timeline_story_ids("kursk") == {story["sudzha"]}
    publish_with(store, "Sudzha", full=False)  # nothing changed: nothing moves
    assert store.timeline_story_ids("kursk") == {story["sudzha"]}
    store.close()


def test_widening_a_timelines_rule_finds_stories_that_did_not_change(tmp_path: Path) -> None:
    store, story = stored_world(tmp_path)
    publish_with(store, "Sudzha")
    assert store.timeline_story_ids("kursk") == {story["sudzha"]}
    assert store.dirty_stories() == [], "every story is published and unchanged from here"
    publish_with(store, "sudzha", "BELGOROD")
    assert store.timeline_story_ids("kursk") == {story["sudzha"], story["belgorod"]}
    store.close()


def test_a_timeline_removed_then_configured_again_is_collected_afresh(tmp_path: Path) -> None:
    store, story = stored_world(tmp_path)
    publish_with(store, "Belgorod")
    Publisher(parse_settings("", environ={}), store).render_changes([], full=True)  # removed
    assert store.timeline_story_ids("kursk") == set()
    publish_with(store, "Belgorod")
    assert store.timeline_story_ids("kursk") == {story["belgorod"]}
    store.close()


def stored_events(store: Store) -> None:
    """Three stories from three outlets: two on Kursk holding six events (one with a copy,
    three whose latest reports tie), one on Belgorod. Entries are numbered as listed."""
    outlets = ["Kyiv Wire", "Dnipro Daily", "Harbour Post"]
    store.sync_sources(
        [SourceConfig(name=n, url=f"http://{n[:4].lower()}.test/f") for n in outlets], T0
    )
    # (outlet, hours after T0, story, event key, the entry it copies)
    rows = [
        (0, 0, "x", "1", None),
        (1, 1, "x", "1", None),
        (2, 1, "x", "1", 2),
        (0, 2, "x", None, None),  # stored before events: an event of its own
        (1, 5, "y", "5", None),
        (2, 6, "y", "5", None),
        (0, 7, "y", "7", None),
        (1, 8, "z", "8", None),
        (2, 9, "y", "9", None),  # 9, 10 and 11 end at the same minute
        (0, 9, "y", "10", None),
        (1, 9, "x", "11", None),
        (2, 10, "x", "12", None),
        (0, 3, "y", "9", 9),  # a copy published before its original
    ]
    ids = {s.name: s.id for s in store.source_statuses()}
    later = T0 + timedelta(days=1)
    status = PollOutcome(checked_at=later, next_check_at=later, status="ok")
    for n, (outlet, hours, story_key, _, _) in enumerate(rows, start=1):
        subject = "Shelling in Belgorod" if story_key == "z" else "Fighting in the Kursk region"
        entry = EntryData(
            key=f"e{n}",
            title=f"{subject}, report {n}",
            link=f"http://{outlets[outlet][:4].lower()}.test/{n}",
            summary_html=f"<p>Report {n}.</p>",
            text=subject,
            author=None,
            published=T0 + timedelta(hours=hours),
            updated=None,
            content_hash=f"e{n}",
        )
        store.record_poll(ids[outlets[outlet]], status, [entry])
    assignments = [
        Assignment(str(n), story_key, None if copies is None else str(copies), event_key=key or "")
        for n, (_, _, story_key, key, copies) in enumerate(rows, start=1)
    ]
    store.save_assignments(assignments, T0)


def test_a_timeline_listing_fewer_events_than_it_holds_reads_only_those(store: Store) -> None:
    """Its feeds list the newest events, ties broken as when every report is read,
    and state the counts, outlets and dates of all its reports."""
    stored_events(store)
    base = parse_settings("", environ={})
    settings = dataclasses.replace(
        base,
        publish=dataclasses.replace(base.publish, max_items=2),
        timelines=(TimelineConfig("kursk", "Kursk incursion", ("Kursk",), ""),),
    )
    publisher = Publisher(settings, store)
    published, _ = publisher.render_changes(store.dirty_stories(), full=True)
    every_report = store.story_entries(store.timeline_story_ids("kursk"))
    expected = publisher.render(
        timelines.configured_timeline(
            settings.timelines[0], every_report, settings.publish, datetime(1970, 1, 1, tzinfo=UTC)
        )
    )
    assert [d for d in published if d.path.startswith("/timelines/kursk.")] == expected
    feed = feedparser.parse(expected[0].body)
    assert [e.id.rsplit("/", 1)[1] for e in feed.entries] == ["12", "9"]
    assert "12 reports from 3 outlets" in feed.feed.subtitle
