"""The bundled demo: its content keeps its promises, and its server behaves like a real outlet.

The server runs on 127.0.0.1 with a manual clock, so every test decides what is published.
"""

from __future__ import annotations

import dataclasses
import json
import re
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path

import feedparser
import httpx
import pytest

from aggregator.demo import (
    Article,
    Demo,
    DemoServer,
    SimClock,
    demo_sources,
    load_demo,
    render_feed,
)
from aggregator.demo.outlets import MAX_ITEMS
from aggregator.demo.simulate import STEP, add_up
from aggregator.errors import AggregatorError
from aggregator.pipeline import CycleReport
from aggregator.settings import load_settings

START = datetime(2024, 8, 5, tzinfo=UTC)
END = datetime(2024, 8, 13, tzinfo=UTC)
ROOT = Path(__file__).resolve().parent.parent
KURSK = "kursk-incursion"
KURSK_NAMES = "Kursk|Курск|Курськ|Курщин"  # en, ru, uk

# event -> (fewest outlets, most outlets) telling it
EVENT_OUTLETS = {
    KURSK: (6, 10),
    "kursk-oil-depot": (2, 3),
    "rostov-refinery": (2, 3),
    "rba-rate-decision": (3, 3),
    "duplantis-world-record": (3, 3),
    "market-selloff": (3, 3),
}


@pytest.fixture(scope="module")
def demo() -> Demo:
    return load_demo()


@pytest.fixture
def clock(demo: Demo) -> SimClock:
    return SimClock.manual(demo.start, demo.end)


@pytest.fixture
def server(clock: SimClock) -> Iterator[DemoServer]:
    with DemoServer(clock, port=0) as running:
        yield running


@pytest.fixture
def client() -> Iterator[httpx.Client]:
    with httpx.Client(trust_env=False, timeout=5.0) as http:
        yield http


def outlets_of(demo: Demo, event: str) -> set[str]:
    return {a.outlet for a in demo.articles if a.event == event}


def sentences(summary: str) -> list[str]:
    text = re.sub(r"\s+", " ", re.sub(r"<[^>]+>", " ", summary)).strip()
    return [s for s in re.split(r"(?<=[.!?…])[»”\"']?\s+", text) if s]


def parse(response: httpx.Response) -> feedparser.FeedParserDict:
    return feedparser.parse(
        response.content, response_headers={"content-type": response.headers["content-type"]}
    )


# --- content ------------------------------------------------------------------------------


def test_outlets_cover_the_languages_and_formats(demo: Demo) -> None:
    slugs = [o.slug for o in demo.outlets]
    assert 8 <= len(slugs) <= 10 and len(set(slugs)) == len(slugs)
    languages = [o.language for o in demo.outlets]
    assert set(languages) == {"en", "uk", "ru"}
    assert languages.count("uk") >= 2 and languages.count("ru") >= 1
    formats = [o.format for o in demo.outlets]
    assert {"atom", "rdf", "jsonfeed"} <= set(formats)
    assert formats.count("rss2") > len(formats) / 2
    for outlet in demo.outlets:
        assert outlet.site_url == f"http://demo.invalid/{outlet.slug}/"
        assert re.fullmatch(r"[a-z0-9-]+", outlet.slug)


def test_articles_are_inside_the_period_and_well_formed(demo: Demo) -> None:
    assert (demo.start, demo.end) == (START, END)
    assert 60 <= len(demo.articles) <= 90
    assert len({a.id for a in demo.articles}) == len(demo.articles)
    for article in demo.articles:
        assert START <= article.published < END, article.id
        day = article.published.strftime("%Y/%m/%d")
        pattern = rf"http://demo\.invalid/{article.outlet}/{day}/[a-z0-9-]+(\?utm_[a-z_]+=.*)?"
        assert re.fullmatch(pattern, article.link), article.link
        assert 2 <= len(sentences(article.summary)) <= 4, article.id
        assert article.title and article.title == article.title.strip()
    summaries = [a.summary for a in demo.articles]
    assert all(any(tag in s for s in summaries) for tag in ("<p>", "<a href=", "<em>"))
    assert sum("?utm_" in a.link for a in demo.articles) >= 10


@pytest.mark.parametrize("event", sorted(EVENT_OUTLETS))
def test_each_event_is_told_by_the_promised_number_of_outlets(demo: Demo, event: str) -> None:
    fewest, most = EVENT_OUTLETS[event]
    assert fewest <= len(outlets_of(demo, event)) <= most


def test_kursk_is_told_in_three_languages_over_a_week(demo: Demo) -> None:
    reports = [a for a in demo.articles if a.event == KURSK]
    languages = [demo.outlet(slug).language for slug in outlets_of(demo, KURSK)]
    assert languages.count("uk") >= 2 and languages.count("ru") >= 1
    days = {a.published.day for a in reports}
    assert min(days) == 6 and {6, 7, 8, 10, 12} <= days


def test_hard_negatives_share_place_or_kind_but_not_both(demo: Demo) -> None:
    first_kursk_day = min(a.published.date() for a in demo.articles if a.event == KURSK)
    depot = [a for a in demo.articles if a.event == "kursk-oil-depot"]
    assert {a.published.date() for a in depot} == {first_kursk_day}
    assert all(re.search(KURSK_NAMES, a.title + a.summary) for a in depot)
    refinery = [a for a in demo.articles if a.event == "rostov-refinery"]
    assert first_kursk_day not in {a.published.date() for a in refinery}
    assert not any(re.search(KURSK_NAMES, a.title + a.summary) for a in refinery)


def test_rate_decision_has_a_ukrainian_report_and_singletons_exist(demo: Demo) -> None:
    languages = {demo.outlet(slug).language for slug in outlets_of(demo, "rba-rate-decision")}
    assert "uk" in languages
    counts: dict[str, int] = {}
    for article in demo.articles:
        counts[article.event] = counts.get(article.event, 0) + 1
    assert sum(1 for n in counts.values() if n == 1) >= 5


def test_the_syndicated_copy_repeats_the_wire_story_word_for_word(demo: Demo) -> None:
    copies = [a for a in demo.articles if a.copy_of]
    assert len(copies) == 1
    copy = copies[0]
    (wire,) = [a for a in demo.articles if a.id == copy.copy_of]
    assert (copy.title, copy.summary) == (wire.title, wire.summary)
    assert copy.outlet != wire.outlet and copy.link != wire.link and "utm_source=" in copy.link
    assert copy.event == wire.event == KURSK
    assert timedelta(hours=1) <= copy.published - wire.published <= timedelta(hours=12)
    # No other two articles share a title, so the duplicate is unambiguous.
    titles = [a.title for a in demo.articles if a is not copy]
    assert len(set(titles)) == len(titles)


def test_demo_sources_names_every_outlet_feed(demo: Demo) -> None:
    sources = demo_sources("http://127.0.0.1:8765/")
    assert [url for _, url, _ in sources] == [
        f"http://127.0.0.1:8765/{o.slug}/feed" for o in demo.outlets
    ]
    assert [(name, lang) for name, _, lang in sources] == [
        (o.name, o.language) for o in demo.outlets
    ]


# --- rendering ----------------------------------------------------------------------------


def test_a_feed_shows_only_the_newest_thirty_items(demo: Demo) -> None:
    outlet = demo.outlet("northwire")
    template = next(a for a in demo.articles if a.outlet == outlet.slug)
    many = [
        dataclasses.replace(template, id=f"nw-{n}", published=START + timedelta(hours=n))
        for n in range(MAX_ITEMS + 10)
    ]
    body, _ = render_feed(outlet, many, base_url="http://127.0.0.1:1")
    entries = feedparser.parse(body).entries
    assert [e.id for e in entries] == [f"nw-{n}" for n in range(MAX_ITEMS + 9, 9, -1)]


def test_an_empty_feed_is_still_a_valid_document(demo: Demo) -> None:
    for outlet in demo.outlets:
        body, _ = render_feed(outlet, [], base_url="http://127.0.0.1:1", updated=START)
        if outlet.format == "jsonfeed":
            assert json.loads(body)["items"] == []
        else:
            parsed = feedparser.parse(body)
            assert parsed.bozo == 0 and parsed.entries == []


# --- the server ---------------------------------------------------------------------------


@pytest.mark.parametrize("slug", [o.slug for o in load_demo().outlets])
def test_each_feed_parses_in_its_own_format(
    demo: Demo, clock: SimClock, server: DemoServer, client: httpx.Client, slug: str
) -> None:
    clock.set(END)
    outlet = demo.outlet(slug)
    expected = demo.visible(slug, END)
    response = client.get(server.feed_urls()[slug])
    assert response.status_code == 200
    self_url = f"{server.base_url}/{slug}/feed"
    if outlet.format == "jsonfeed":
        # feedparser 6.0 has no JSON Feed reader; check the JSON Feed 1.1 fields instead.
        assert response.headers["content-type"].startswith("application/feed+json")
        doc = json.loads(response.content)
        assert doc["version"] == "https://jsonfeed.org/version/1.1"
        assert (doc["feed_url"], doc["language"]) == (self_url, outlet.language)
        titles = [item["title"] for item in doc["items"]]
        assert all({"id", "url", "content_html", "date_published"} <= set(i) for i in doc["items"])
    else:
        parsed = parse(response)
        assert parsed.bozo == 0, parsed.get("bozo_exception")
        assert parsed.version == {"rss2": "rss20", "atom": "atom10", "rdf": "rss10"}[outlet.format]
        assert parsed.feed.title == outlet.name
        assert parsed.feed.language == outlet.language
        titles = [e.title for e in parsed.entries]
        assert {e.link for e in parsed.entries} == {a.link for a in expected}
    assert titles == [a.title for a in reversed(expected)]


def test_a_feed_grows_as_the_clock_advances(
    clock: SimClock, server: DemoServer, client: httpx.Client
) -> None:
    url = server.feed_urls()["northwire"]
    counts = []
    for moment in (START, datetime(2024, 8, 6, 12, tzinfo=UTC), END):
        clock.set(moment)
        counts.append(len(parse(client.get(url)).entries))
    assert counts[0] == 0 and counts[0] < counts[1] < counts[2]


def test_conditional_requests_get_304_until_a_new_article_appears(
    demo: Demo, clock: SimClock, server: DemoServer, client: httpx.Client
) -> None:
    slug = "kyiv-ranok"
    first, second = [a.published for a in demo.articles if a.outlet == slug][:2]
    url = server.feed_urls()[slug]
    clock.set(first)
    fresh = client.get(url)
    etag, last_modified = fresh.headers["etag"], fresh.headers["last-modified"]
    assert last_modified == first.strftime("%a, %d %b %Y %H:%M:%S GMT")

    clock.set(second - timedelta(minutes=1))
    assert client.get(url, headers={"If-None-Match": etag}).status_code == 304
    assert client.get(url, headers={"If-Modified-Since": last_modified}).status_code == 304

    clock.advance_to(second)
    changed = client.get(url, headers={"If-None-Match": etag})
    assert changed.status_code == 200 and changed.headers["etag"] != etag
    assert len(parse(changed).entries) == 2
    since = client.get(url, headers={"If-Modified-Since": last_modified})
    assert since.status_code == 200


def test_head_answers_headers_only(
    clock: SimClock, server: DemoServer, client: httpx.Client
) -> None:
    clock.set(END)
    url = server.feed_urls()["harbour-gazette"]
    head, get = client.head(url), client.get(url)
    assert head.status_code == 200 and head.content == b""
    assert head.headers["etag"] == get.headers["etag"]
    assert int(head.headers["content-length"]) == len(get.content)


def test_unknown_paths_are_404_and_the_index_lists_every_outlet(
    demo: Demo, server: DemoServer, client: httpx.Client
) -> None:
    for path in ("/nowhere/feed", "/northwire", "/northwire/feed/extra", "/favicon.ico"):
        assert client.get(server.base_url + path).status_code == 404, path
    index = client.get(server.base_url + "/")
    assert index.status_code == 200 and index.headers["content-type"].startswith("text/html")
    for outlet in demo.outlets:
        assert f'href="/{outlet.slug}/feed"' in index.text


def test_requests_are_not_logged(
    server: DemoServer, client: httpx.Client, capfd: pytest.CaptureFixture[str]
) -> None:
    client.get(server.base_url + "/")
    client.get(server.base_url + "/nowhere")
    client.post(server.base_url + "/")
    assert capfd.readouterr().err == ""


def test_a_taken_port_is_reported_with_what_to_do(clock: SimClock, server: DemoServer) -> None:
    with pytest.raises(AggregatorError, match="another demo running"):
        DemoServer(clock, port=server.port)


def test_stop_is_idempotent_and_frees_the_port(clock: SimClock) -> None:
    running = DemoServer(clock)
    port = running.port
    running.stop()
    running.stop()
    with DemoServer(clock, port=port) as again:
        assert again.port == port


# --- the clock ----------------------------------------------------------------------------


def test_a_running_clock_maps_real_seconds_to_simulated_days() -> None:
    real = [1000.0]
    clock = SimClock(START, END, seconds_per_day=20.0, real_start=1000.0, timer=lambda: real[0])
    assert clock.now() == START and not clock.is_manual
    real[0] += 10.0
    assert clock.now() == START + timedelta(hours=12)
    clock.set(datetime(2024, 8, 10, tzinfo=UTC))
    real[0] += 5.0
    assert clock.now() == datetime(2024, 8, 10, 6, tzinfo=UTC)
    real[0] += 10_000.0
    assert clock.now() == END and clock.finished


def test_a_manual_clock_moves_only_when_told() -> None:
    clock = SimClock.manual(START, END)
    assert clock.now() == START and clock.is_manual and not clock.finished
    noon = START + timedelta(hours=12)
    assert clock.advance_to(noon) == noon
    assert clock.advance_to(START) == noon  # never backwards
    assert clock.set(START - timedelta(days=1)) == START  # clamped to the period
    clock.advance_to(END + timedelta(days=1))
    assert clock.now() == END and clock.finished


def test_the_clock_refuses_naive_times_and_empty_periods() -> None:
    with pytest.raises(ValueError, match="time-zone-aware"):
        SimClock.manual(datetime(2024, 8, 5), END)
    with pytest.raises(ValueError, match="after its start"):
        SimClock.manual(END, START)
    with pytest.raises(ValueError, match="positive"):
        SimClock(START, END, seconds_per_day=0)


def test_articles_are_plain_frozen_values(demo: Demo) -> None:
    article: Article = demo.articles[0]
    with pytest.raises(dataclasses.FrozenInstanceError):
        article.title = "changed"  # type: ignore[misc]


# --- the simulated week -------------------------------------------------------------


def test_the_week_is_polled_at_the_live_demos_cadence() -> None:
    """`aggregator demo` polls as often in simulated time as `scripts/run` does live."""
    settings = load_settings(ROOT / "config" / "aggregator.toml", environ={})
    for source in settings.sources:
        assert source.interval is not None
        live = timedelta(days=source.interval / settings.demo.seconds_per_day)
        assert live == STEP, source.name


def test_the_weeks_report_adds_up_its_cycles() -> None:
    total = CycleReport()
    add_up(total, CycleReport(polled=9, not_modified=6, new_entries=3, published=["kursk"]))
    add_up(total, CycleReport(polled=9, new_entries=2, clustered=5, published=["all", "kursk"]))
    assert (total.polled, total.not_modified, total.new_entries, total.clustered) == (18, 6, 5, 5)
    assert total.published == ["all", "kursk"]
