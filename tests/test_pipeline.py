"""End to end: outlets on a real HTTP server, two worker cycles, the published timelines.

The outlets are synthetic feeds served on 127.0.0.1; the store is a SQLite file
(and PostgreSQL when configured); our own feeds are fetched through the ASGI app.
"""

from __future__ import annotations

import asyncio
import dataclasses
import logging
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from email.utils import format_datetime

import feedparser
import httpx
import pytest
import sqlalchemy
from httpserver import FeedServer
from lxml import etree

from aggregator.pipeline import Pipeline
from aggregator.serve import create_app
from aggregator.settings import Settings, SourceConfig, TimelineConfig, parse_settings
from aggregator.store import Store

T0 = datetime(2024, 8, 6, 6, 0, tzinfo=UTC)

INCURSION = [
    (
        "wire",
        "Ukrainian troops cross into Russia's Kursk region near Sudzha",
        "Ukrainian troops crossed the border into Russia's Kursk region on Tuesday, "
        "fighting near the town of Sudzha, Russian officials said.",
        T0 + timedelta(hours=1),
    ),
    (
        "border",
        "Russia says Ukrainian troops attacked Kursk region border near Sudzha",
        "Russia's defence ministry said Ukrainian troops attacked across the Kursk region "
        "border and fighting continued near Sudzha.",
        T0 + timedelta(hours=2),
    ),
    (
        "ledger",
        "Fighting near Sudzha as Ukrainian troops push into Kursk region",
        "Fighting went on near Sudzha after Ukrainian troops pushed into the Kursk region "
        "of Russia, the regional governor said.",
        T0 + timedelta(hours=3),
    ),
]
RATES = [
    (
        "ledger",
        "Central bank holds interest rate at 4.35 percent",
        "The central bank kept its cash rate at 4.35 percent and warned inflation stays high.",
        T0 + timedelta(hours=2, minutes=30),
    ),
    (
        "money",
        "Central bank keeps interest rate on hold at 4.35 percent, warns on inflation",
        "The central bank held the interest rate at 4.35 percent, saying inflation stays high.",
        T0 + timedelta(hours=4),
    ),
]
FOLLOW_UP = (
    "ledger",
    "Kursk region governor says fighting near Sudzha continues as Ukrainian troops advance",
    "The Kursk region governor said Ukrainian troops advanced and fighting near Sudzha "
    "continued for a second day.",
    T0 + timedelta(hours=26),
)


def rss(outlet: str, items: list[tuple[str, str, str, datetime, str]]) -> bytes:
    """An RSS 2.0 feed; items are (guid, title, text, published, link)."""
    parts = [
        '<?xml version="1.0" encoding="utf-8"?><rss version="2.0"><channel>',
        f"<title>{outlet}</title><link>http://{outlet}.test/</link><description>news</description>",
    ]
    for guid, title, text, published, link in items:
        parts.append(
            f"<item><guid>{guid}</guid><title>{title}</title><link>{link}</link>"
            f"<description>{text}</description>"
            f"<pubDate>{format_datetime(published, usegmt=True)}</pubDate></item>"
        )
    parts.append("</channel></rss>")
    return "".join(parts).encode()


def outlet_items(outlet: str, extra: tuple[tuple[str, str, str, datetime], ...] = ()) -> list:
    items = []
    for n, (who, title, text, published) in enumerate([*INCURSION, *RATES, *extra]):
        if who == outlet:
            link = f"http://{outlet}.test/2024/08/{n}"
            items.append((f"{outlet}-{n}", title, text, published, link))
    if outlet == "repost":
        # a syndicated copy of the wire story, with tracking parameters on its own link
        _, title, text, published = INCURSION[0]
        items.append(
            (
                "repost-1",
                title,
                text,
                published + timedelta(hours=2),
                "http://repost.test/wire/ukrainian-troops?utm_source=wire&utm_medium=syndication",
            )
        )
    return items


OUTLETS = ["wire", "border", "ledger", "money", "repost"]


@pytest.fixture
def outlets() -> Iterator[FeedServer]:
    with FeedServer() as server:
        for outlet in OUTLETS:
            server.serve_feed(f"/{outlet}.xml", rss(outlet, outlet_items(outlet)), last_modified=T0)
        yield server


def settings_for(server: FeedServer) -> Settings:
    base = parse_settings("", environ={})
    return dataclasses.replace(
        base,
        sources=tuple(
            SourceConfig(name=name.title(), url=server.url(f"/{name}.xml"), interval=600)
            for name in OUTLETS
        ),
        timelines=(TimelineConfig(name="kursk", title="Kursk", match=("Kursk", "Курськ")),),
        fetch=dataclasses.replace(base.fetch, allow_private_networks=True),
        publish=dataclasses.replace(base.publish, base_url="http://feeds.test"),
    )


class Clock:
    def __init__(self, now: datetime) -> None:
        self.now = now

    def __call__(self) -> datetime:
        return self.now


def test_two_cycles_cluster_merge_and_publish(outlets: FeedServer, store: Store) -> None:
    clock = Clock(T0 + timedelta(hours=5))
    pipeline = Pipeline(settings_for(outlets), store, clock=clock)

    first = asyncio.run(pipeline.run_cycle())
    assert (first.polled, first.errors, first.new_entries) == (5, 0, 6)
    assert first.duplicates == 1  # the repost folds into the wire story

    # second cycle an hour later: one outlet has a follow-up, the others answer 304
    outlets.serve_feed(
        "/ledger.xml", rss("ledger", outlet_items("ledger", (FOLLOW_UP,))), last_modified=clock.now
    )
    clock.now += timedelta(minutes=20)
    second = asyncio.run(pipeline.run_cycle())
    assert (second.polled, second.not_modified, second.new_entries) == (5, 4, 1)
    for name in ("wire", "border", "money", "repost"):
        conditional = outlets.requests_to(f"/{name}.xml")[-1].headers
        assert conditional.get("if-none-match") or conditional.get("if-modified-since")

    # a restarted worker rebuilds its clusterer from the store and stays consistent
    assert asyncio.run(Pipeline(settings_for(outlets), store, clock=clock).run_cycle()).polled == 0

    documents = {doc.path: doc for doc in store.documents()}
    incursion = _timeline_with(documents, "Sudzha")
    titles = [entry.title for entry in incursion.entries]
    # One item per event: the crossing's reports and the next day's follow-up are one
    # happening, listed in one item; the syndicated copy folds under the wire report.
    assert len(incursion.entries) == 1
    event = incursion.entries[0]
    # Polls are stored as they finish, so entry ids follow the network, not the config.
    first_id = _first_entry_id(store, "Wire")
    assert event.id.endswith(f":entry/{first_id}"), "the event keeps its first report's id"
    assert "4 reports" in event.summary
    for outlet in ("Wire", "Border", "Ledger", "also reported by: "):
        assert outlet in event.summary
    assert "Repost" in event.summary and event.source.title != "Repost"
    assert not any("interest rate" in t for t in titles), "a different event stays apart"

    rates = _timeline_with(documents, "interest rate")
    assert len(rates.entries) == 1 and "2 reports" in rates.entries[0].summary  # one decision

    kursk = feedparser.parse(documents["/timelines/kursk.atom"].body)
    assert kursk.bozo == 0 and len(kursk.entries) == 1  # the incursion's one event
    for path in ("/timelines/kursk.rss", "/timelines/all.atom", "/timelines/all.rss"):
        assert feedparser.parse(documents[path].body).bozo == 0, path
    opml = etree.fromstring(documents["/timelines.opml"].body)
    in_opml = {outline.get("htmlUrl") for outline in opml.iter("outline")}
    index = documents["/index.html"].body
    assert b"kursk.atom" in index
    # The incursion's storyline is what the kursk timeline follows: listed once, as
    # that, on the index and in the OPML a reader imports.
    (incursion_page,) = {link.href for link in incursion.feed.links if link.type == "text/html"}
    rates_page = next(link.href for link in rates.feed.links if link.type == "text/html")
    assert incursion_page.encode() not in index and rates_page.encode() in index
    assert incursion_page not in in_opml and rates_page in in_opml
    assert any(url.endswith("/timelines/kursk.html") for url in in_opml if url)


def _first_entry_id(store: Store, source: str) -> int:
    """The id of `source`'s earliest entry."""
    with store.engine.connect() as connection:
        rows = connection.execute(
            sqlalchemy.text(
                "SELECT entry.id FROM entry JOIN source ON source.id = entry.source_id "
                "WHERE source.name = :name ORDER BY entry.sort_at, entry.id LIMIT 1"
            ),
            {"name": source},
        ).all()
    return int(rows[0][0])


def _timeline_with(documents: dict, word: str) -> feedparser.FeedParserDict:
    for path, doc in documents.items():
        if path.startswith("/timelines/story-") and path.endswith(".atom"):
            feed = feedparser.parse(doc.body)
            assert feed.bozo == 0, path
            if any(word in entry.title for entry in feed.entries):
                return feed
    raise AssertionError(f"no story timeline mentions {word!r}; have {sorted(documents)}")


def test_our_feeds_answer_304_to_conditional_requests(
    outlets: FeedServer, sqlite_store: Store
) -> None:
    pipeline = Pipeline(settings_for(outlets), sqlite_store, clock=Clock(T0 + timedelta(hours=5)))
    asyncio.run(pipeline.run_cycle())

    async def exchange() -> None:
        transport = httpx.ASGITransport(app=create_app(sqlite_store.document))
        async with httpx.AsyncClient(transport=transport, base_url="http://feeds.test") as client:
            first = await client.get("/timelines/kursk.atom")
            assert first.status_code == 200
            assert first.headers["content-type"].startswith("application/atom+xml")
            again = await client.get(
                "/timelines/kursk.atom", headers={"If-None-Match": first.headers["etag"]}
            )
            assert again.status_code == 304 and again.content == b""
            since = await client.get(
                "/timelines/kursk.rss",
                headers={"If-Modified-Since": first.headers["last-modified"]},
            )
            assert since.status_code == 304
            index = await client.get("/")
            assert index.status_code == 200 and b"kursk" in index.content

    asyncio.run(exchange())


def test_a_failing_source_is_recorded_and_the_others_still_arrive(
    outlets: FeedServer, sqlite_store: Store
) -> None:
    outlets.route(
        "/broken.xml",
        lambda request: (
            200,
            {"Content-Type": "text/html"},
            b"<html><body>Not a feed</body></html>",
        ),
    )
    settings = settings_for(outlets)
    settings = dataclasses.replace(
        settings,
        sources=(*settings.sources, SourceConfig(name="Broken", url=outlets.url("/broken.xml"))),
    )
    report = asyncio.run(
        Pipeline(settings, sqlite_store, clock=Clock(T0 + timedelta(hours=5))).run_cycle()
    )
    assert report.errors == 1 and report.new_entries == 6
    broken = next(s for s in sqlite_store.source_statuses() if s.name == "Broken")
    assert broken.status == "error" and broken.error_count == 1
    assert broken.last_error_code == "not_a_feed" and broken.last_error
    assert broken.next_check_at is not None and broken.next_check_at > T0 + timedelta(hours=5)


def test_a_truncated_feed_keeps_what_it_holds_and_the_log_says_what_is_wrong(
    outlets: FeedServer, sqlite_store: Store, caplog: pytest.LogCaptureFixture
) -> None:
    whole = rss("cut", [("c1", "Grain corridor ships leave Odesa", "Three ships left.", T0, "")])
    outlets.serve_feed("/cut.xml", whole[: whole.index(b"</item>")])  # the download broke off
    settings = settings_for(outlets)
    settings = dataclasses.replace(
        settings, sources=(*settings.sources, SourceConfig(name="Cut", url=outlets.url("/cut.xml")))
    )
    caplog.set_level(logging.INFO)
    report = asyncio.run(
        Pipeline(settings, sqlite_store, clock=Clock(T0 + timedelta(hours=5))).run_cycle()
    )
    assert report.errors == 0 and report.new_entries == 7
    [warning] = [r.getMessage() for r in caplog.records if "'Cut'" in r.getMessage()][:1]
    assert "'Cut': the feed is malformed (line 1, column" in warning
    assert "no element found); the entries that could be read are kept (1)" in warning
    assert warning.endswith("tell the publisher")


def test_the_websub_hub_hears_of_every_published_change(
    outlets: FeedServer, sqlite_store: Store
) -> None:
    outlets.route("/hub", lambda request: (204, {}, b""))
    settings = settings_for(outlets)
    settings = dataclasses.replace(
        settings,
        publish=dataclasses.replace(settings.publish, websub_hub=outlets.url("/hub")),
    )
    asyncio.run(Pipeline(settings, sqlite_store, clock=Clock(T0 + timedelta(hours=5))).run_cycle())
    pings = outlets.requests_to("/hub")
    assert pings, "the hub was not notified"
    kursk = feedparser.parse(sqlite_store.document("/timelines/kursk.atom").body)
    assert any(link.rel == "hub" and link.href == outlets.url("/hub") for link in kursk.feed.links)
