"""Publishing: a timeline built from hostile source text renders as valid, inert feeds and pages.

Also: ids and dates stay put when a timeline is republished, descriptions state the
event's outlets and dates, pages chart the reports, and golden files pin the output.
"""

from __future__ import annotations

import dataclasses
import json
import os
import re
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import feedparser
import lxml.html
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from lxml import etree

from aggregator.opml import timelines_to_opml
from aggregator.publish import (
    MAX_TITLE_CHARS,
    event_description,
    feed_description,
    is_tracking_pixel,
    timeline_links,
)
from aggregator.publish.chart import count_reports, daily_counts
from aggregator.publish.feeds import JSON_FEED_VERSION, render_atom, render_json, render_rss
from aggregator.publish.pages import render_index, render_timeline_page
from aggregator.settings import PublishSettings
from aggregator.types import TimelineDoc, TimelineItem

ATOM = "{http://www.w3.org/2005/Atom}"
SETTINGS = PublishSettings(base_url="https://feeds.example")
T0 = datetime(2026, 3, 1, 12, 0, tzinfo=UTC)
CONTROL = re.compile("[\x00-\x08\x0b\x0c\x0e-\x1f\x7f]")
STRICT_XML = etree.XMLParser(resolve_entities=False, no_network=True, recover=False)


def item(n: int, published: datetime, **fields: Any) -> TimelineItem:
    values: dict[str, Any] = {
        "id": f"tag:feeds.example,2026:entry/{n}",
        "title": f"Report {n}",
        "link": f"https://outlet{n}.example/news/{n}?a=1&b=2",
        "summary_html": f"<p>Report number {n}.</p>",
        "outlet": f"Outlet {n}",
        "outlet_url": f"https://outlet{n}.example/feed.xml",
        "outlet_site": f"https://outlet{n}.example/",
        "published": published,
        "updated": published,
    }
    values.update(fields)
    return TimelineItem(**values)


# Each row: what a hostile outlet could send, as it reaches the publisher.
HOSTILE_ITEMS = [
    item(
        1,
        T0 + timedelta(hours=5),
        title="Взрыв\x00 в <script>alert(1)</script> центре\x0b\x1b",
        summary_html=(
            '<p onclick="steal()">Текст<script>alert(1)</script></p>'
            '<img src="/photo.jpg" onerror="alert(1)">'
            '<a href="javascript:alert(1)">link</a><a href="JaVaScRiPt:alert(2)">x</a>'
            # tracking pixels: a 1x1 beacon, a zero-sized one, a known tracker's image
            '<img src="https://cdn.outlet1.example/t.gif?u=42" width="1" height="1">'
            '<img src="https://cdn.outlet1.example/b.gif" width="0">'
            '<img src="https://stats.wordpress.com/b.gif?v=1" alt="">'
            '<IMG SRC="https://www.google-analytics.com/collect?tid=UA-1&amp;t=pageview">'
        ),
        outlet="Новости\x1b 24",
        language="ru",
        also=(("שלום News", "https://b.example/story"), ("Evil", "javascript:alert(3)")),
    ),
    item(
        2,
        T0 + timedelta(hours=5),  # the same instant as the first: order must hold
        title="انفجار في وسط المدينة " + "ب" * 10_000,
        summary_html='<div dir="rtl">نص عربي<iframe src="https://evil.example/"></iframe></div>',
        outlet="الجزيرة",
        link="javascript:alert(4)",
        language="ar",
    ),
    item(
        3,
        T0 + timedelta(hours=5),
        title="פיצוץ במרכז העיר\ud83d\ufffe",  # a lone surrogate and a non-character
        summary_html='<svg onload="alert(5)"><style>*{x:y}</style></svg><p>עברית</p>',
        outlet="הארץ",
        language="he",
    ),
    item(
        4,
        T0 - timedelta(days=1),
        title="T" * 10_000,
        summary_html='<a href=" javascript:alert(6)" onmouseover="x()">hover</a>\x00\x08',
        outlet="Outlet <b>Four</b>",
        outlet_site="javascript:alert(7)",
        language="not a language tag\x00",
    ),
]


def hostile_doc(items: tuple[TimelineItem, ...] = tuple(HOSTILE_ITEMS)) -> TimelineDoc:
    return TimelineDoc(
        slug="city-blast",
        title="City blast\x00 <script>x</script>",
        description="Reports on the blast\x1b in the centre.",
        id="tag:feeds.example,2026:timeline/city-blast",
        updated=T0 + timedelta(hours=6),
        items=items,
        sources=tuple(i.outlet for i in items),
        first_report=T0 - timedelta(days=1),
        latest_report=T0 + timedelta(hours=5),
    )


RENDERERS = {"atom": render_atom, "rss": render_rss, "json": render_json}


@pytest.fixture(scope="module")
def rendered() -> dict[str, bytes]:
    doc = hostile_doc()
    out = {name: render(doc, SETTINGS) for name, render in RENDERERS.items()}
    out["page"] = render_timeline_page(doc, SETTINGS)
    out["index"] = render_index([doc], SETTINGS)
    return out


def html_trees(rendered: dict[str, bytes], kind: str) -> list[Any]:
    """Every piece of HTML a reader would render from one published document, parsed."""
    if kind == "json":
        fragments = [i["content_html"] for i in json.loads(rendered["json"])["items"]]
    elif kind in ("atom", "rss"):
        fragments = [e.summary for e in feedparser.parse(rendered[kind]).entries]
    else:
        return [lxml.html.fromstring(rendered[kind]).body]
    return [lxml.html.fromstring(f"<div>{fragment}</div>") for fragment in fragments]


@pytest.mark.parametrize("kind", ["atom", "rss"])
def test_xml_feeds_are_well_formed_and_parse_cleanly(rendered: dict[str, bytes], kind: str) -> None:
    etree.fromstring(rendered[kind], STRICT_XML)
    parsed = feedparser.parse(rendered[kind])
    assert parsed.bozo == 0, parsed.get("bozo_exception")
    assert len(parsed.entries) == len(HOSTILE_ITEMS)


@pytest.mark.parametrize("kind", ["atom", "rss", "json", "page", "index"])
def test_no_control_characters_survive(rendered: dict[str, bytes], kind: str) -> None:
    text = rendered[kind].decode("utf-8")
    if kind == "json":
        text = json.dumps(json.loads(text), ensure_ascii=False)
    assert not CONTROL.search(text)


@pytest.mark.parametrize("kind", ["atom", "rss", "json", "page"])
def test_no_active_content(rendered: dict[str, bytes], kind: str) -> None:
    assert b"<script" not in rendered[kind].lower()
    assert b"javascript:" not in rendered[kind].lower()
    for tree in html_trees(rendered, kind):
        assert not tree.xpath(".//script|.//iframe|.//style|.//foreignObject")
        # the only SVG is the page's own chart, made of shapes and text
        for svg in tree.xpath(".//svg"):
            assert svg.get("class") in ("chart", "spark")
            assert {e.tag for e in svg.iterdescendants()} <= {"rect", "line", "text", "title"}
        for element in tree.iter():
            attributes = getattr(element, "attrib", {})
            assert not [name for name in attributes if name.lower().startswith("on")]
            for name in ("href", "src"):
                url = attributes.get(name, "")
                assert not url or url.startswith(("https://", "http://", "#")), url


@pytest.mark.parametrize("kind", ["atom", "rss"])
def test_xml_items_keep_ids_and_order(rendered: dict[str, bytes], kind: str) -> None:
    entries = feedparser.parse(rendered[kind]).entries
    assert [e.id for e in entries] == [i.id for i in HOSTILE_ITEMS]


def test_json_items_keep_ids_and_order(rendered: dict[str, bytes]) -> None:
    feed = json.loads(rendered["json"])
    assert [i["id"] for i in feed["items"]] == [i.id for i in HOSTILE_ITEMS]


def test_atom_entries_meet_rfc_4287(rendered: dict[str, bytes]) -> None:
    root = etree.fromstring(rendered["atom"], STRICT_XML)
    assert root.findtext(f"{ATOM}id") == "tag:feeds.example,2026:timeline/city-blast"
    assert root.findtext(f"{ATOM}updated").startswith("2026-03-01T18:00:00")
    self_links = root.findall(f"{ATOM}link[@rel='self']")
    assert [link.get("href") for link in self_links] == [
        timeline_links("city-blast", SETTINGS).atom
    ]
    for entry in root.iter(f"{ATOM}entry"):
        assert entry.findtext(f"{ATOM}author/{ATOM}name").strip()
        source = entry.find(f"{ATOM}source")
        assert source is not None
        assert source.findtext(f"{ATOM}id", "").startswith("https://")
        assert source.findtext(f"{ATOM}title")
        assert source.findtext(f"{ATOM}updated")
        assert entry.findtext(f"{ATOM}published") and entry.findtext(f"{ATOM}updated")
        # RFC 4287 4.1.1: at most one alternate link per (type, hreflang)
        alternates = [
            (link.get("type"), link.get("hreflang"))
            for link in entry.findall(f"{ATOM}link")
            if link.get("rel", "alternate") == "alternate"
        ]
        assert len(alternates) == 1


def test_atom_names_merged_duplicates_as_related_links(rendered: dict[str, bytes]) -> None:
    first = feedparser.parse(rendered["atom"]).entries[0]
    assert first.link == HOSTILE_ITEMS[0].link
    assert [(link.rel, link.href) for link in first.links if link.rel == "related"] == [
        ("related", "https://b.example/story")
    ]
    assert 'Also reported by: <a href="https://b.example/story"' in first.summary
    assert "Evil" in first.summary  # named even though its link was refused


def test_atom_entry_metadata(rendered: dict[str, bytes]) -> None:
    entries = feedparser.parse(rendered["atom"]).entries
    assert [e.author for e in entries] == ["Новости 24", "الجزيرة", "הארץ", "Outlet <b>Four</b>"]
    assert entries[0].source.title == "Новости 24"
    assert entries[0].published_parsed == entries[1].published_parsed
    assert entries[0].title == "Взрыв в <script>alert(1)</script> центре"
    assert all(len(e.title) <= MAX_TITLE_CHARS for e in entries)
    # a javascript: article link falls back to the item on our own page
    assert entries[1].link.startswith(timeline_links("city-blast", SETTINGS).html + "#r-")


def test_rss_items_name_their_outlet(rendered: dict[str, bytes]) -> None:
    root = etree.fromstring(rendered["rss"], STRICT_XML)
    channel = root.find("channel")
    self_link = channel.find(f"{ATOM}link[@rel='self']")
    assert self_link.get("href") == timeline_links("city-blast", SETTINGS).rss
    assert channel.findtext("description").startswith("Reports on the blast in the centre.")
    items = channel.findall("item")
    for source_item, element in zip(HOSTILE_ITEMS, items, strict=True):
        guid = element.find("guid")
        assert (guid.text, guid.get("isPermaLink")) == (source_item.id, "false")
        assert element.find("source").get("url") == source_item.outlet_url
        assert element.findtext("{http://purl.org/dc/elements/1.1/}creator")
        assert element.find("author") is None  # RSS <author> must be an e-mail address
        assert element.findtext("pubDate")


def test_json_feed_1_1(rendered: dict[str, bytes]) -> None:
    feed = json.loads(rendered["json"])
    links = timeline_links("city-blast", SETTINGS)
    assert feed["version"] == JSON_FEED_VERSION == "https://jsonfeed.org/version/1.1"
    assert (feed["feed_url"], feed["home_page_url"]) == (links.json, links.html)
    assert feed["title"] and feed["description"]
    first = feed["items"][0]
    assert first["authors"] == [{"name": "Новости 24", "url": "https://outlet1.example/"}]
    assert first["date_published"] == "2026-03-01T17:00:00Z"
    assert first["language"] == "ru"
    assert first["_aggregator"]["outlet"] == "Новости 24"
    assert first["_aggregator"]["also_reported_by"] == [
        {"outlet": "שלום News", "url": "https://b.example/story"},
        {"outlet": "Evil", "url": None},
    ]
    assert "language" not in feed["items"][3]  # not a language tag: left out, not passed on


def test_max_items_limits_every_feed() -> None:
    few = PublishSettings(base_url=SETTINGS.base_url, max_items=2)
    doc = hostile_doc()
    assert len(feedparser.parse(render_atom(doc, few)).entries) == 2
    assert len(feedparser.parse(render_rss(doc, few)).entries) == 2
    assert len(json.loads(render_json(doc, few))["items"]) == 2


def test_empty_timeline_still_renders_valid_feeds() -> None:
    doc = hostile_doc(items=())
    for render in (render_atom, render_rss):
        assert feedparser.parse(render(doc, SETTINGS)).bozo == 0
    assert json.loads(render_json(doc, SETTINGS))["items"] == []


def test_timeline_page(rendered: dict[str, bytes]) -> None:
    page = lxml.html.fromstring(rendered["page"])
    links = timeline_links("city-blast", SETTINGS)
    alternates = {
        link.get("type"): link.get("href") for link in page.xpath("//head/link[@rel='alternate']")
    }
    assert alternates == {
        "application/atom+xml": links.atom,
        "application/rss+xml": links.rss,
        "application/feed+json": links.json,
    }
    days = page.xpath("//section[@class='day']/h2/time/@datetime")
    assert days == ["2026-03-01", "2026-02-28"]  # newest day first
    entries = page.xpath("//li[@class='entry']")
    assert len(entries) == len(HOSTILE_ITEMS)
    assert entries[0].xpath("string(.//h3)") == "Взрыв в <script>alert(1)</script> центре"
    assert entries[1].xpath(".//h3/@lang") == ["ar"]
    assert "Also reported by" in entries[0].xpath("string(.//p[@class='also'])")
    assert page.xpath("//meta[@charset='utf-8']")


def test_index_page_lists_timelines_and_their_feeds(rendered: dict[str, bytes]) -> None:
    page = lxml.html.fromstring(rendered["index"])
    hrefs = set(page.xpath("//a/@href"))
    assert set(timeline_links("city-blast", SETTINGS)) <= hrefs
    alternates = page.xpath("//head/link[@rel='alternate']")
    types = {link.get("type"): link.get("href") for link in alternates}
    assert types["application/atom+xml"] == timeline_links("all", SETTINGS).atom
    assert types["text/x-opml"] == "https://feeds.example/timelines.opml"
    meta = page.xpath("string(//li//p[@class='meta'])")
    assert "6 reports from 4 outlets" in meta
    assert "first report 2026-02-28 12:00 UTC" in meta


def test_index_without_timelines() -> None:
    page = lxml.html.fromstring(render_index([], SETTINGS))
    assert "No timelines yet" in page.text_content()


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(text=st.text(min_size=0, max_size=200), html=st.text(max_size=200))
def test_any_text_renders_well_formed_feeds(text: str, html: str) -> None:
    doc = hostile_doc(
        (item(1, T0, title=text, outlet=text, summary_html=html, also=((text, text),)),)
    )
    for render in (render_atom, render_rss):
        body = render(doc, SETTINGS)
        etree.fromstring(body, STRICT_XML)
        assert feedparser.parse(body).bozo == 0
    assert json.loads(render_json(doc, SETTINGS))["items"][0]["id"] == doc.items[0].id


TRACKERS = ("t.gif", "b.gif", "stats.wordpress.com", "google-analytics.com")


@pytest.mark.parametrize("kind", ["atom", "rss", "json", "page"])
def test_tracking_pixels_are_removed(rendered: dict[str, bytes], kind: str) -> None:
    sources = [
        img.get("src", "") for tree in html_trees(rendered, kind) for img in tree.iter("img")
    ]
    assert "https://outlet1.example/photo.jpg" in sources  # a real picture stays
    assert not [src for src in sources if any(tracker in src for tracker in TRACKERS)]


@pytest.mark.parametrize(
    ("attributes", "tracking"),
    [
        ({"src": "https://a.example/p.gif", "width": "1", "height": "1"}, True),
        ({"src": "https://a.example/p.gif", "width": "1px", "height": "0"}, True),
        ({"src": "https://a.example/p.gif", "height": "0"}, True),
        ({"src": "https://pixel.wp.com/g.gif"}, True),
        ({"src": "https://ad.doubleclick.net/x"}, True),  # a subdomain of a tracker
        ({"src": "https://mc.yandex.ru/watch/1"}, True),
        ({"src": "https://a.example/photo.jpg", "width": "1", "height": "300"}, False),
        ({"src": "https://a.example/photo.jpg", "width": "640"}, False),
        ({"src": "https://notdoubleclick.net/photo.jpg"}, False),
        ({"src": "https://a.example/photo.jpg", "width": "wide"}, False),
    ],
)
def test_is_tracking_pixel(attributes: dict[str, str], tracking: bool) -> None:
    assert is_tracking_pixel(attributes) is tracking


FACTS = (
    "6 reports from 4 outlets",
    "first report 2026-02-28 12:00 UTC",
    "latest report 2026-03-01 17:00 UTC",
)


def test_every_format_describes_the_event_with_its_outlets_and_dates(
    rendered: dict[str, bytes],
) -> None:
    atom = etree.fromstring(rendered["atom"], STRICT_XML).findtext(f"{ATOM}subtitle")
    rss = etree.fromstring(rendered["rss"], STRICT_XML).findtext("channel/description")
    feed = json.loads(rendered["json"])["description"]
    opml = etree.fromstring(timelines_to_opml([hostile_doc()], SETTINGS))
    for text in (atom, rss, feed, opml.find("body/outline").get("description")):
        assert text.startswith("Reports on the blast in the centre. 6 reports from 4 outlets (")
        assert all(fact in text for fact in FACTS), text
        assert "Новости 24" in text
    page = lxml.html.fromstring(rendered["page"]).xpath("string(//header)")
    assert all(fact in page for fact in FACTS)


def test_the_description_says_what_the_event_is_then_the_counts_once() -> None:
    doc = dataclasses.replace(hostile_doc(), title="City blast", description="The blast.")
    assert event_description(doc) == "The blast."
    text = feed_description(doc)
    assert text.startswith("The blast. 6 reports from 4 outlets")
    assert text.count("reports from") == 1


def test_a_timeline_without_description_still_says_what_it_is() -> None:
    doc = dataclasses.replace(hostile_doc(), description="", title="Quake")
    assert feed_description(doc).startswith("A timeline of reports on Quake. 6 reports")


def updated_timeline(doc: TimelineDoc) -> TimelineDoc:
    """The same timeline one cycle later: a better title, an edited report, two new ones."""
    edited = dataclasses.replace(
        doc.items[1], title="Corrected headline", updated=doc.items[1].updated + timedelta(hours=2)
    )
    new = (
        item(10, T0 + timedelta(hours=9), outlet="Late Wire"),
        item(11, T0 + timedelta(hours=8), outlet="Later Wire"),
    )
    return dataclasses.replace(
        doc,
        title="City centre blast: dozens hurt",
        updated=doc.updated + timedelta(hours=3),
        items=(*new, doc.items[0], edited, *doc.items[2:]),
    )


def identities(kind: str, body: bytes) -> dict[str, str]:
    """Item id -> published date as the format states it."""
    if kind == "json":
        return {i["id"]: i["date_published"] for i in json.loads(body)["items"]}
    root = etree.fromstring(body, STRICT_XML)
    if kind == "rss":
        return {i.findtext("guid"): i.findtext("pubDate") for i in root.iter("item")}
    return {
        e.findtext(f"{ATOM}id"): e.findtext(f"{ATOM}published") for e in root.iter(f"{ATOM}entry")
    }


def feed_updated(kind: str, body: bytes) -> str:
    if kind == "json":
        return str(json.loads(body)["_aggregator"]["updated"])
    root = etree.fromstring(body, STRICT_XML)
    if kind == "rss":
        return str(root.findtext("channel/lastBuildDate"))
    return str(root.findtext(f"{ATOM}updated"))


@pytest.mark.parametrize("kind", ["atom", "rss", "json"])
def test_republishing_keeps_ids_and_dates_and_moves_updated(kind: str) -> None:
    before_doc = hostile_doc()
    after_doc = updated_timeline(before_doc)
    render = RENDERERS[kind]
    before, after = render(before_doc, SETTINGS), render(after_doc, SETTINGS)
    old, new = identities(kind, before), identities(kind, after)
    assert len(old) == len(before_doc.items) and len(new) == len(after_doc.items)
    assert {i: new[i] for i in old} == old  # no id or published date changed
    assert len(set(new) - set(old)) == 2
    assert feed_updated(kind, before) != feed_updated(kind, after)
    if kind != "json":
        parsed = feedparser.parse(after)
        assert parsed.feed.title == "City centre blast: dozens hurt"
        assert "Corrected headline" in [e.title for e in parsed.entries]


@st.composite
def timelines(draw: st.DrawFn) -> tuple[TimelineDoc, TimelineDoc]:
    """A timeline and its republished successor: reports added, some retitled."""
    count = draw(st.integers(min_value=0, max_value=8))
    hours = draw(st.lists(st.integers(-500, 500), min_size=count + 3, max_size=count + 3))
    titles = st.text(max_size=40)
    first = [item(n, T0 + timedelta(hours=hours[n]), title=draw(titles)) for n in range(count)]
    later = [dataclasses.replace(i, title=draw(titles)) for i in first]
    later += [item(n, T0 + timedelta(hours=hours[n])) for n in range(count, count + 3)]
    before = dataclasses.replace(hostile_doc(), items=tuple(first))
    after = dataclasses.replace(
        before, items=tuple(draw(st.permutations(later))), updated=T0 + timedelta(days=30)
    )
    return before, after


@settings(max_examples=30, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(pair=timelines())
def test_ids_and_dates_are_stable_across_republishing(
    pair: tuple[TimelineDoc, TimelineDoc],
) -> None:
    before, after = pair
    for kind in ("atom", "rss", "json"):
        render = RENDERERS[kind]
        old = identities(kind, render(before, SETTINGS))
        new = identities(kind, render(after, SETTINGS))
        assert len(new) == len(after.items)  # ids unique, every item present
        assert {i: new[i] for i in old} == old


def test_timeline_page_charts_reports_per_hour(rendered: dict[str, bytes]) -> None:
    page = lxml.html.fromstring(rendered["page"])
    (chart,) = page.xpath("//header//figure/svg[@class='chart']")
    assert chart.get("role") == "img" and "6 reports" in chart.get("aria-label")
    bars = chart.xpath("./rect/title/text()")
    assert len(bars) == 30  # 28 Feb 12:00 to 1 Mar 17:00, one bar an hour
    assert sum(int(re.search(r"(\d+) reports?$", b).group(1)) for b in bars) == 6
    assert "Reports per hour" in page.xpath("string(//figcaption)")


def test_day_sections_name_outlets_and_languages(rendered: dict[str, bytes]) -> None:
    page = lxml.html.fromstring(rendered["page"])
    first_day = page.xpath("string(//section[@class='day'][1]/p[@class='day-meta'])")
    assert first_day.startswith("5 reports from 5 outlets (")
    assert all(name in first_day for name in ("Новости 24", "הארץ", "الجزيرة"))
    assert "in Russian, Arabic, Hebrew" in first_day
    assert "Languages: Russian, Arabic, Hebrew" in page.xpath("string(//header)")


def test_index_shows_a_sparkline_per_timeline(rendered: dict[str, bytes]) -> None:
    page = lxml.html.fromstring(rendered["index"])
    (spark,) = page.xpath("//ol[@class='timelines']//svg[@class='spark']")
    assert len(spark.xpath("./rect")) == 2  # two days with reports in the last fourteen
    assert "6 reports in the last 14 days" in spark.get("aria-label")


def test_pages_work_without_javascript(rendered: dict[str, bytes]) -> None:
    for kind in ("page", "index"):
        page = lxml.html.fromstring(rendered[kind])
        assert not page.xpath("//script|//*[@onload]|//noscript")


def test_report_counts_per_hour_and_per_day() -> None:
    hourly = count_reports([T0, T0 + timedelta(minutes=59), T0 + timedelta(hours=3)])
    assert hourly is not None and hourly.unit == "hour"
    assert hourly.counts == (2, 0, 0, 1)
    daily = count_reports([T0, T0 + timedelta(days=5)])
    assert daily is not None and daily.unit == "day" and daily.counts == (1, 0, 0, 0, 0, 1)
    assert count_reports([]) is None


def test_a_long_span_is_counted_in_coarser_buckets_from_its_first_report() -> None:
    # A storyline's week of reports in August 2024, and one undated entry stamped
    # when it was fetched, in December 2026: the chart still shows August.
    august = [datetime(2024, 8, 6, 6, 30, tzinfo=UTC) + timedelta(hours=9 * i) for i in range(20)]
    late = datetime(2026, 12, 5, 5, 49, tzinfo=UTC)
    monthly = count_reports([*august, late])
    assert monthly is not None and monthly.unit == "month"
    assert monthly.label(0) == "Aug 2024" and monthly.label(len(monthly.counts) - 1) == "Dec 2026"
    assert monthly.counts[0] == 20 and monthly.counts[-1] == 1 and sum(monthly.counts) == 21
    assert len(monthly.counts) == 29
    weekly = count_reports([*august, datetime(2024, 11, 1, tzinfo=UTC)])
    assert weekly is not None and weekly.unit == "week"
    assert weekly.starts[0] == datetime(2024, 8, 5, tzinfo=UTC)  # the Monday
    assert weekly.counts[:2] == (16, 4) and sum(weekly.counts) == 21
    assert all(
        b - a == timedelta(days=7) for a, b in zip(weekly.starts, weekly.starts[1:], strict=False)
    )
    # Past the bars a chart has room for, the oldest months drop off the left edge.
    capped = count_reports(
        [datetime(2020 + y, m, 1, tzinfo=UTC) for y in range(2) for m in range(1, 13)],
        max_buckets=10,
    )
    assert capped is not None and capped.unit == "month" and capped.counts == (1,) * 10
    assert capped.label(0) == "Mar 2021"
    assert daily_counts([T0, T0 - timedelta(days=1)], end=T0 + timedelta(days=1), days=3) == (
        1,
        1,
        0,
    )


GOLDEN = Path(__file__).parent / "data" / "golden"
REGENERATE = os.environ.get("AGGREGATOR_TEST_REGENERATE_GOLDEN") == "1"


def golden_doc() -> TimelineDoc:
    items = (
        item(2, T0 + timedelta(hours=3), language="uk", title="Вибух у центрі"),
        item(1, T0, also=(("Outlet 9", "https://outlet9.example/copy"),)),
    )
    return TimelineDoc(
        slug="quake",
        title="Quake in the north",
        description="An earthquake of magnitude 6 in the north.",
        id="tag:feeds.example,2026:timeline/quake",
        updated=T0 + timedelta(hours=4),
        items=items,
        sources=("Outlet 1", "Outlet 2", "Outlet 9"),
    )


@pytest.mark.parametrize(
    ("name", "render"),
    [
        ("quake.atom", render_atom),
        ("quake.rss", render_rss),
        ("quake.json", render_json),
        ("quake.html", render_timeline_page),
    ],
)
def test_golden_output(name: str, render: Any) -> None:
    """The exact bytes readers get; regenerate deliberately with
    AGGREGATOR_TEST_REGENERATE_GOLDEN=1 pytest tests/test_publish.py, then review the diff."""
    body = render(golden_doc(), dataclasses.replace(SETTINGS, websub_hub="https://hub.example/"))
    path = GOLDEN / name
    if REGENERATE:
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(body)
    assert body == path.read_bytes(), f"{name} changed; see the docstring to regenerate"


def test_an_entry_without_a_date_renders_dated_by_when_it_was_seen() -> None:
    # The store dates an undated entry by its first sighting, which may arrive naive;
    # every format still carries an explicit UTC date and parses cleanly.
    seen = datetime(2026, 3, 1, 9, 30)  # naive: no tzinfo
    doc = hostile_doc((item(1, seen, updated=seen),))
    for render in (render_atom, render_rss):
        parsed = feedparser.parse(render(doc, SETTINGS))
        assert parsed.bozo == 0
        assert parsed.entries[0].published_parsed[:5] == (2026, 3, 1, 9, 30)
    assert json.loads(render_json(doc, SETTINGS))["items"][0]["date_published"] == (
        "2026-03-01T09:30:00Z"
    )


def test_published_links_carry_no_tracking_parameters() -> None:
    tracked = "https://outlet1.example/news/1?id=7&utm_source=rss&utm_medium=feed&fbclid=x"
    copy = "https://b.example/story?gclid=1&yclid=2&mc_cid=3"
    summary = f'<p>More: <a href="{tracked}">the report</a>, <a href="/n/2?utm_term=x">next</a></p>'
    doc = dataclasses.replace(
        hostile_doc(),
        items=(item(1, T0, link=tracked, also=(("B News", copy),), summary_html=summary),),
    )
    atom = render_atom(doc, SETTINGS)
    [entry] = feedparser.parse(atom).entries
    assert entry.link == "https://outlet1.example/news/1?id=7"
    assert [link.href for link in entry.links if link.rel == "related"] == [
        "https://b.example/story"
    ]
    [rss_item] = feedparser.parse(render_rss(doc, SETTINGS)).entries
    assert rss_item.link == "https://outlet1.example/news/1?id=7"
    [json_item] = json.loads(render_json(doc, SETTINGS))["items"]
    assert json_item["url"] == "https://outlet1.example/news/1?id=7"
    assert json_item["_aggregator"]["also_reported_by"][0]["url"] == "https://b.example/story"
    page = lxml.html.fromstring(render_timeline_page(doc, SETTINGS))
    hrefs = page.xpath("//li[@class='entry']//a/@href")
    assert "https://outlet1.example/news/1?id=7" in hrefs and "https://b.example/story" in hrefs
    assert "https://outlet1.example/n/2" in hrefs, "links in the summary too"
    for body in (atom, render_rss(doc, SETTINGS), render_json(doc, SETTINGS)):
        assert not re.search(rb"utm_|fbclid|gclid|yclid|mc_cid", body)
    assert not re.search(rb"utm_|fbclid|gclid|yclid|mc_cid", render_timeline_page(doc, SETTINGS))


def test_channel_descriptions_are_plain_text_without_markup() -> None:
    # Readers render the RSS channel <description> as HTML: a story titled by a report
    # made of markup, or an outlet named with markup, must reach them as text only.
    items = (
        item(1, T0, outlet="<b>Evil</b> News"),
        item(2, T0, outlet='Outlet <img src=x onerror="alert(2)">', also=(("<i>Copy</i>", ""),)),
    )
    doc = dataclasses.replace(
        hostile_doc(items), title="<img src=x onerror=alert(1)>", description="", sources=()
    )
    rss = etree.fromstring(render_rss(doc, SETTINGS), STRICT_XML)
    atom = etree.fromstring(render_atom(doc, SETTINGS), STRICT_XML)
    opml = etree.fromstring(timelines_to_opml([doc], SETTINGS), STRICT_XML)
    texts = {
        "rss": rss.findtext("channel/description"),
        "atom": atom.findtext(f"{ATOM}subtitle"),
        "json": json.loads(render_json(doc, SETTINGS))["description"],
        "opml": opml.find("body/outline").get("description"),
    }
    for kind, text in texts.items():
        assert text and "Evil News" in text and "Copy" in text, kind
        assert not re.search(r"<[A-Za-z/!?]", text), f"{kind}: {text}"
        assert lxml.html.fragment_fromstring(text, create_parent="div").xpath("//*[@*]") == []
