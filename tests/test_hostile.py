"""Hostile feeds and headers through the real fetch and parse code, on 127.0.0.1.

Each case is served by a real HTTP server, fetched by `fetch_all` through the guarded
transport (loopback admitted by name), parsed by `parse_feed` and scheduled by
`poll_outcome`, as the pipeline does. What is asserted is what the source's row and
entries would show: an entry, a capped value, a date, a readable error; never an
exception. Speed is measured by benchmarks/hostile.py, not here; the shapes that used
to take minutes are parsed here at sizes where the old code would not finish.

The hypothesis strategies at the bottom (`hostile_bodies`, `hostile_headers`,
`hostile_feeds`) are meant to be imported by store-level tests too.
"""

from __future__ import annotations

import asyncio
import gzip
import ipaddress
import json
import re
import socket
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any
from unittest.mock import patch

import nh3
import pytest
from httpserver import FeedServer, Reply, Request
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from aggregator import bounds
from aggregator.errors import ParseError
from aggregator.fetch import fetch_all, guard
from aggregator.fetch.guard import AddressPolicy, embedded_ipv4
from aggregator.parse import parse_feed
from aggregator.schedule import poll_outcome
from aggregator.settings import FetchSettings
from aggregator.store.database import FetchStateView
from aggregator.types import FetchRequest, FetchResult, ParsedFeed, PollOutcome

SETTINGS = FetchSettings(allowed_networks="127.0.0.0/8", timeout_total=10.0)
STATE = FetchStateView(
    interval_s=None, error_count=0, ttl_s=None, redirect_url=None, redirect_count=0
)
RSS_TYPE = "application/rss+xml; charset=utf-8"


def rss(items: str, channel: str = "", prolog: str = "") -> bytes:
    return (
        f'<?xml version="1.0" encoding="utf-8"?>{prolog}<rss version="2.0"><channel>'
        f"<title>Outlet</title><link>http://outlet.test/</link>{channel}{items}</channel></rss>"
    ).encode()


def item(inner: str, guid: str = "one") -> str:
    return f"<item><guid>{guid}</guid>{inner}</item>"


HEALTHY = rss(item("<title>All is well</title><link>http://outlet.test/ok</link>", "ok"))


@dataclass(frozen=True)
class Polled:
    """One source's poll as the pipeline sees it: fetch result, parse, next-check decision."""

    result: FetchResult
    feed: ParsedFeed | None
    parse_error: ParseError | None
    outcome: PollOutcome

    @property
    def entry(self) -> Any:
        assert self.feed is not None, self.parse_error or self.result.error
        [entry] = self.feed.entries
        return entry


def poll_all(urls: Sequence[str], fetch_settings: FetchSettings = SETTINGS) -> list[Polled]:
    requests = [FetchRequest(source_id=n, name=f"s{n}", url=url) for n, url in enumerate(urls)]
    results = asyncio.run(fetch_all(requests, fetch_settings))
    polled = []
    for result in results:
        feed, error = None, None
        if result.ok and result.body is not None:
            try:
                feed = parse_feed(
                    result.body,
                    result.headers,
                    url=result.final_url,
                    source=result.request.name,
                    fetched_at=result.fetched_at,
                )
            except ParseError as exc:
                error = exc
        outcome = poll_outcome(result, STATE, fetch_settings, feed=feed, parse_error=error)
        polled.append(Polled(result, feed, error, outcome))
    return polled


def serve(srv: FeedServer, body: bytes, headers: dict[str, str] | None = None, status: int = 200):
    path = f"/feed{len(srv._routes)}"  # noqa: SLF001 - a fresh path per case
    reply_headers = {"Content-Type": RSS_TYPE, **(headers or {})}
    return srv.route(path, lambda request: (status, reply_headers, body))


def poll(srv: FeedServer, body: bytes, headers: dict[str, str] | None = None, status: int = 200):
    [polled] = poll_all([serve(srv, body, headers, status)])
    return polled


@pytest.fixture
def srv() -> Iterator[FeedServer]:
    with FeedServer() as server:
        yield server
    assert not server.errors, server.errors


# --- 1. odd values become data ---------------------------------------------------------


@pytest.mark.parametrize(
    "channel",
    ["<ttl>²</ttl>", f"<ttl>{'9' * 5000}</ttl>", "<ttl>٣</ttl>", "<ttl>0</ttl>"],
    ids=["superscript", "5000-digits", "arabic-digit", "zero"],
)
def test_an_unreadable_ttl_is_absent(srv: FeedServer, channel: str) -> None:
    polled = poll(srv, rss(item("<title>t</title>"), channel=channel))

    assert polled.feed is not None and polled.feed.ttl_minutes is None
    assert polled.entry.title == "t" and polled.outcome.status == "ok"


@pytest.mark.parametrize(
    "reference", ["&#xD800;", "&#xdfff;", "&#x110000;", "&#99999999999;", "&#x1;", "&#0;"]
)
def test_a_reference_to_an_impossible_character_becomes_a_replacement(
    srv: FeedServer, reference: str
) -> None:
    polled = poll(
        srv, rss(item(f"<title>a{reference}b</title><description>c{reference}d</description>"))
    )

    assert polled.entry.title in ("a\ufffdb", "ab")
    assert polled.entry.text in ("c\ufffdd", "cd")


def test_a_json_feed_date_without_a_utc_value_is_absent(srv: FeedServer) -> None:
    document = {
        "version": "https://jsonfeed.org/version/1.1",
        "title": "J",
        "items": [
            {"id": "1", "title": "t", "date_published": "0001-01-01T00:00:00+14:00"},
            {"id": "2", "title": "u", "date_published": "0001-01-02T00:00:00Z"},
            {"id": "3", "title": "v", "date_published": "9999-12-30T00:00:00Z"},
        ],
    }
    body = json.dumps(document).encode()

    [polled] = poll_all([serve(srv, body, {"Content-Type": "application/feed+json"})])

    assert polled.feed is not None
    first, second, third = polled.feed.entries
    assert first.published is None  # no UTC value at all: treated as undated
    fetched = polled.result.fetched_at
    assert second.published == third.published == fetched  # out of range: the fetch time
    # Clustering subtracts hours from entry dates; that must stay within datetime's range.
    assert second.published - timedelta(days=3650) > datetime.min.replace(tzinfo=UTC)


def test_a_json_number_too_long_to_convert_costs_only_its_own_value(srv: FeedServer) -> None:
    body = (
        '{"version": "https://jsonfeed.org/version/1.1", "items": ['
        f'{{"id": {"9" * 5000}, "title": "huge id", "url": "http://outlet.test/1"}}, '
        '{"id": 7, "title": "seven"}]}'
    ).encode()

    [polled] = poll_all([serve(srv, body, {"Content-Type": "application/feed+json"})])

    assert polled.feed is not None
    huge, seven = polled.feed.entries
    assert huge.key.startswith("sha256-id:") and huge.title == "huge id"
    assert seven.key == "7"


@pytest.mark.parametrize(
    "date",
    [
        "Mon, 01 Jan 0001 00:00:00 +1400",
        "Fri, 31 Dec 9999 23:59:59 -1400",
        "Thu, 01 Jan 1900 00:00:00 GMT",
        "Sat, 01 Jan 2999 00:00:00 GMT",
    ],
)
def test_an_rss_date_outside_the_sane_range_becomes_the_fetch_time(
    srv: FeedServer, date: str
) -> None:
    polled = poll(srv, rss(item(f"<title>t</title><pubDate>{date}</pubDate>")))

    published = polled.entry.published
    assert published is None or published == polled.result.fetched_at


def test_a_sane_updated_date_stands_in_for_an_insane_published_one(srv: FeedServer) -> None:
    atom = (
        b'<?xml version="1.0"?><feed xmlns="http://www.w3.org/2005/Atom"><title>T</title>'
        b"<entry><id>urn:1</id><title>t</title><published>0001-01-01T00:00:00Z</published>"
        b"<updated>2024-08-06T12:00:00Z</updated></entry></feed>"
    )

    entry = poll(srv, atom, {"Content-Type": "application/atom+xml"}).entry

    assert entry.published == entry.updated == datetime(2024, 8, 6, 12, tzinfo=UTC)


def test_a_date_within_a_day_ahead_is_kept(srv: FeedServer) -> None:
    ahead = datetime.now(UTC).replace(microsecond=0) + timedelta(hours=12)
    stamp = ahead.strftime("%a, %d %b %Y %H:%M:%S GMT")

    polled = poll(srv, rss(item(f"<title>t</title><pubDate>{stamp}</pubDate>")))

    assert polled.entry.published == ahead


@pytest.mark.parametrize(
    ("status", "headers"),
    [
        (200, {"Cache-Control": "max-age=²"}),
        (200, {"Cache-Control": "max-age=60", "Age": "³"}),
        (200, {"Cache-Control": f"max-age={'9' * 5000}"}),
        (200, {"Expires": "Fri, 31 Dec 9999 23:59:59 -1400"}),
        (200, {"Expires": "Mon, 01 Jan 0001 00:00:00 +1400"}),
        (429, {"Retry-After": "²"}),
        (429, {"Retry-After": "9" * 5000}),
        (503, {"Retry-After": "Fri, 31 Dec 9999 23:59:59 -1400"}),
    ],
    ids=[
        "max-age-superscript",
        "age-superscript",
        "max-age-5000-digits",
        "expires-9999",
        "expires-year-1",
        "retry-after-superscript",
        "retry-after-5000-digits",
        "retry-after-9999",
    ],
)
def test_odd_caching_and_retry_headers_are_ignored_or_capped(
    srv: FeedServer, status: int, headers: dict[str, str]
) -> None:
    polled = poll(srv, HEALTHY, headers, status)

    wait = polled.outcome.next_check_at - polled.result.fetched_at
    assert timedelta(0) < wait <= timedelta(seconds=SETTINGS.max_interval * (1 + SETTINGS.jitter))
    if status == 200:
        assert polled.outcome.status == "ok" and polled.entry.title == "All is well"
    else:
        assert (
            polled.outcome.error_code == f"http_{status}" and len(polled.outcome.error or "") < 400
        )


# --- 2. length caps ---------------------------------------------------------------------


def test_a_14_mb_title_is_cut_and_says_so(srv: FeedServer) -> None:
    title = "Kursk " * (14 * 1024 * 1024 // 6)

    polled = poll_all([serve(srv, rss(item(f"<title>{title}</title>")))], _big_bodies())[0]

    assert len(polled.entry.title) <= bounds.MAX_TITLE_CHARS
    assert polled.entry.title.startswith("Kursk Kursk") and polled.entry.title.endswith("…")


def _big_bodies() -> FetchSettings:
    return FetchSettings(allowed_networks="127.0.0.0/8", max_body_bytes=20 * 1024 * 1024)


def _balanced(fragment: str) -> bool:
    """Whether every element opened in sanitised HTML is closed, in order."""
    void = {"br", "hr", "img", "wbr", "area", "col", "source", "track", "input", "embed"}
    stack: list[str] = []
    for closing, name in re.findall(r"<(/?)([a-zA-Z][a-zA-Z0-9]*)", fragment):
        if name in void:
            continue
        if not closing:
            stack.append(name)
        elif not stack or stack.pop() != name:
            return False
    return not stack


@pytest.mark.parametrize("field", ["description", "content"])
def test_a_huge_body_is_cut_still_well_formed_and_says_so(srv: FeedServer, field: str) -> None:
    html = "<div><p>Troops <b>crossed</b> the border</p><ul><li>one<li>two</ul>" * 20_000
    element = (
        f"<description><![CDATA[{html}]]></description>"
        if field == "description"
        else f"<content:encoded><![CDATA[{html}]]></content:encoded>"
    )
    body = rss(item(f"<title>t</title>{element}")).replace(
        b'<rss version="2.0">',
        b'<rss version="2.0" xmlns:content="http://purl.org/rss/1.0/modules/content/">',
    )

    entry = poll(srv, body).entry

    assert entry.summary_html.endswith("…")
    assert len(entry.summary_html) <= 2 * bounds.MAX_HTML_CHARS
    assert _balanced(entry.summary_html)
    assert nh3.clean(entry.summary_html) == entry.summary_html  # nothing left to repair


def test_a_huge_author_link_and_guid_are_bounded(srv: FeedServer) -> None:
    author = "Desk " * 5000
    link = "http://outlet.test/" + "a" * 5000
    guid = "g" * 5000

    entry = poll(
        srv, rss(item(f"<title>t</title><author>{author}</author><link>{link}</link>", guid))
    ).entry

    assert entry.author.startswith("Desk Desk") and entry.author.endswith("…")
    assert len(entry.author) <= bounds.MAX_AUTHOR_CHARS
    assert entry.link is None  # a cut URL would lead nowhere
    assert entry.key.startswith("sha256-id:") and len(entry.key) < 100


def test_the_same_huge_guid_gives_the_same_key(srv: FeedServer) -> None:
    body = rss(item("<title>t</title>", "g" * 5000))

    first, again = poll_all([serve(srv, body), serve(srv, body)])

    assert first.entry.key == again.entry.key


# --- 3. linear work on hostile bodies ------------------------------------------------------
# Sizes where the code before these fixes took from minutes to hours; timing is in
# benchmarks/hostile.py.


def test_repeated_doctype_openings(srv: FeedServer) -> None:
    polled = poll(srv, rss(item("<title>t</title>"), prolog="<!DOCTYPE x " * 100_000))

    assert polled.parse_error is not None or polled.entry.title == "t"


@pytest.mark.parametrize("unit", ["@ (", "a", "a.", "x@y."])
def test_an_author_built_to_make_the_e_mail_pattern_backtrack(srv: FeedServer, unit: str) -> None:
    author = unit * (200_000 // len(unit))

    entry = poll(srv, rss(item(f"<title>t</title><author>{author}</author>"))).entry

    assert entry.title == "t" and len(entry.author or "") <= bounds.MAX_AUTHOR_CHARS


def test_an_html_title_of_unclosed_tags(srv: FeedServer) -> None:
    atom = (
        '<?xml version="1.0"?><feed xmlns="http://www.w3.org/2005/Atom"><title>T</title>'
        f'<entry><id>urn:1</id><title type="html">News {"&lt;a " * 200_000}</title></entry></feed>'
    ).encode()

    entry = poll(srv, atom, {"Content-Type": "application/atom+xml"}).entry

    assert entry.title.startswith("News") and len(entry.title) <= bounds.MAX_TITLE_CHARS


def test_deeply_nested_content_keeps_its_text_and_a_bounded_depth(srv: FeedServer) -> None:
    # 30,000 levels, unclosed as a browser would accept them, within MAX_HTML_CHARS.
    html = "<div><span>" * 15_000 + "deep text"

    entry = poll(
        srv, rss(item(f"<title>t</title><description><![CDATA[{html}]]></description>"))
    ).entry

    assert entry.text == "deep text"
    assert entry.summary_html.count("<div>") + entry.summary_html.count("<span>") <= 64
    assert _balanced(entry.summary_html)


def test_a_tag_name_that_never_ends_among_many_tags(srv: FeedServer) -> None:
    html = "<p>" * 100 + "<" + "a" * 150_000 + "<b>bold</b>"

    entry = poll(
        srv, rss(item(f"<title>t</title><description><![CDATA[{html}]]></description>"))
    ).entry

    assert entry.text.endswith("bold")


# --- 4. what feedparser's own corpus expects -----------------------------------------------


@pytest.mark.parametrize("coding", ["gzip", "x-gzip", "deflate"])
def test_a_body_labelled_compressed_but_sent_plain_is_read(srv: FeedServer, coding: str) -> None:
    polled = poll(srv, HEALTHY, {"Content-Encoding": coding})

    assert polled.result.ok and polled.result.body == HEALTHY
    assert polled.entry.title == "All is well"


def test_a_compression_bomb_is_still_refused(srv: FeedServer) -> None:
    bomb = gzip.compress(b"<rss>" + b" " * (30 * 1024 * 1024))

    polled = poll(srv, bomb, {"Content-Encoding": "gzip"})

    assert polled.result.error_code == "too_large"


def test_relative_links_honour_content_location(srv: FeedServer) -> None:
    body = rss(
        item(
            "<title>t</title><link>2024/story</link>"
            "<description>&lt;a href='pics/'&gt;p&lt;/a&gt;</description>"
        )
    )

    entry = poll(srv, body, {"Content-Location": "http://outlet.test/news/feed.xml"}).entry

    assert entry.link == "http://outlet.test/news/2024/story"
    assert 'href="http://outlet.test/news/2024/pics/"' in entry.summary_html
    assert entry.key == "one"  # identity never depends on where the feed says it lives


# --- 5. the address guard --------------------------------------------------------------------

CARRYING_PRIVATE = [
    "::ffff:127.0.0.1",
    "::ffff:0:7f00:1",  # SIIT
    "::a9fe:a9fe",  # IPv4-compatible 169.254.169.254
    "::10.0.0.1",
    "64:ff9b::7f00:1",  # NAT64 well-known prefix
    "64:ff9b::a9fe:a9fe",
    "64:ff9b:1::a00:1",  # NAT64 local-use, /96 place
    "64:ff9b:1:a00:1:0:0:0",  # NAT64 local-use, /48 place: 10.0.0.1
    "2002:7f00:1::1",  # 6to4 of 127.0.0.1
    "2002:a9fe:a9fe::1",
    "2001:0:4136:e378:8000:63bf:80ff:fffe",  # Teredo, client 127.0.0.1 (XOR-obfuscated)
]
CARRYING_PUBLIC = ["64:ff9b::808:808", "2002:808:808::1", "::ffff:8.8.8.8"]


@pytest.mark.parametrize("address", CARRYING_PRIVATE)
def test_an_ipv6_form_carrying_a_private_ipv4_address_is_refused(address: str) -> None:
    parsed = ipaddress.IPv6Address(address)

    assert embedded_ipv4(parsed), "the IPv4 address inside is found"
    assert not AddressPolicy().permits(parsed)


@pytest.mark.parametrize("address", CARRYING_PUBLIC)
def test_an_ipv6_form_carrying_a_public_ipv4_address_is_allowed(address: str) -> None:
    assert AddressPolicy().permits(ipaddress.IPv6Address(address))


def test_a_name_resolving_to_nat64_loopback_is_refused_before_any_connection(
    srv: FeedServer, monkeypatch: pytest.MonkeyPatch
) -> None:
    async def resolve(host: str, port: int) -> list[Any]:
        return [ipaddress.ip_address("64:ff9b::7f00:1")]

    monkeypatch.setattr(guard, "system_resolve", resolve)

    [polled] = poll_all([f"http://feeds.example:{srv.port}/feed"])

    assert polled.result.error_code == "private_address"
    assert "64:ff9b::7f00:1" in (polled.result.error or "") and not srv.requests


def test_the_guarded_transport_reports_a_refused_connection(srv: FeedServer) -> None:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]

    [polled] = poll_all([f"http://127.0.0.1:{port}/feed"])

    assert polled.result.error_code == "connect"


# --- 7. generated hostile sources next to healthy ones -------------------------------------
# Importable: `from test_hostile import hostile_feeds` gives (body, headers, status) triples.

ODD_NUMBERS = [
    "²",
    "³",
    "٣",
    "-1",
    "0",
    "1e309",
    "nan",
    "9" * 5000,
    "",
    " ",
    "18446744073709551616",
]
# Header values travel as latin-1: "²" and "³" can, "٣" cannot.
HEADER_NUMBERS = [n for n in ODD_NUMBERS if n.isascii() or n in "²³"]
ODD_DATES = [
    "Mon, 01 Jan 0001 00:00:00 +1400",
    "Fri, 31 Dec 9999 23:59:59 -1400",
    "0001-01-01T00:00:00+14:00",
    "9999-12-31T23:59:59-14:00",
    "2024-02-30T25:61:61Z",
    "yesterday",
    "",
]
ODD_TEXT = [
    "&#xD800;",
    "&#x110000;",
    "&#0;",
    "&lt;a " * 50,
    "<![CDATA[<div>" * 30 + "]]>",
    "@ (" * 100,
    "a" * 3000,
    "&amp;" * 200,
    "\u202e\ufeff",
]


@st.composite
def hostile_items(draw: st.DrawFn) -> str:
    """One RSS item whose fields are drawn from the odd values above, or from noise."""
    text = st.sampled_from(ODD_TEXT) | st.text(max_size=40).map(_xml_text)
    fields = [
        f"<title>{draw(text)}</title>",
        f"<guid>{draw(text)}</guid>",
        f"<link>{draw(st.sampled_from(['http://outlet.test/1', '/rel', 'javascript:x', 'http://[::1', draw(text)]))}</link>",
        f"<pubDate>{draw(st.sampled_from(ODD_DATES))}</pubDate>",
        f"<author>{draw(text)}</author>",
        f"<description>{draw(text)}</description>",
    ]
    chosen = draw(st.lists(st.sampled_from(fields), max_size=len(fields), unique=True))
    return "<item>" + "".join(chosen) + "</item>"


def _xml_text(value: str) -> str:
    return value.replace("&", "&amp;").replace("<", "&lt;")


@st.composite
def hostile_bodies(draw: st.DrawFn) -> bytes:
    """A feed body: odd RSS, odd JSON Feed, truncated XML, or random bytes."""
    kind = draw(st.sampled_from(["rss", "json", "truncated", "bytes", "doctype"]))
    items = "".join(draw(st.lists(hostile_items(), max_size=4)))
    channel = f"<ttl>{draw(st.sampled_from(ODD_NUMBERS))}</ttl>"
    if kind == "rss":
        return rss(items, channel=channel)
    if kind == "truncated":
        body = rss(items, channel=channel)
        return body[: draw(st.integers(0, len(body)))]
    if kind == "doctype":
        return rss(items, prolog="<!DOCTYPE x " * draw(st.integers(1, 500)))
    if kind == "json":
        entry = {
            "id": draw(st.sampled_from([1, "x", None, True, "a" * 2000])),
            "title": draw(st.sampled_from(ODD_TEXT)),
            "date_published": draw(st.sampled_from(ODD_DATES)),
            "content_html": draw(st.sampled_from(ODD_TEXT)),
        }
        document = {"version": "https://jsonfeed.org/version/1.1", "items": [entry]}
        return json.dumps(document).encode()
    return draw(st.binary(max_size=2000))


@st.composite
def hostile_headers(draw: st.DrawFn) -> dict[str, str]:
    """Response headers with odd caching, retry, encoding and location values."""
    number = st.sampled_from(HEADER_NUMBERS)
    choices = {
        "Cache-Control": st.builds(lambda n: f"max-age={n}", number),
        "Age": number,
        "Retry-After": number | st.sampled_from(ODD_DATES),
        "Expires": st.sampled_from(ODD_DATES),
        "Content-Encoding": st.sampled_from(["gzip", "deflate", "br", "identity"]),
        "Content-Location": st.sampled_from(
            ["http://outlet.test/x/", "/rel/", "javascript:x", "http://[::1"]
        ),
        "Content-Type": st.sampled_from(
            [RSS_TYPE, "text/html", "application/json; charset=latin-1", "text/xml; charset=utf-16"]
        ),
    }
    names = draw(st.lists(st.sampled_from(sorted(choices)), unique=True, max_size=4))
    return {name: draw(choices[name]) for name in names}


@st.composite
def hostile_feeds(draw: st.DrawFn) -> tuple[bytes, dict[str, str], int]:
    """(body, headers, status) of one hostile source."""
    status = draw(st.sampled_from([200, 200, 200, 429, 503]))
    return draw(hostile_bodies()), draw(hostile_headers()), status


NEIGHBOUR_HOST = "neighbour.test"


async def _neighbour_resolves_to_loopback(host: str, port: int) -> list[guard.Address]:
    assert host == NEIGHBOUR_HOST, host
    return [ipaddress.IPv4Address("127.0.0.1")]


@dataclass
class _Sources:
    """The routes of one example: what each hostile path answers, replaced per example."""

    replies: dict[str, Reply] = field(default_factory=dict)

    def answer(self, request: Request) -> Reply:
        return self.replies[request.path.split("?")[0]]


@pytest.fixture(scope="module")
def shared_srv() -> Iterator[FeedServer]:
    with FeedServer() as server:
        yield server


@settings(
    max_examples=50, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(st.lists(hostile_feeds(), min_size=1, max_size=3))
def test_hostile_sources_end_with_entries_or_a_readable_error_and_spare_their_neighbours(
    shared_srv: FeedServer, feeds: list[tuple[bytes, dict[str, str], int]]
) -> None:
    sources = _Sources()
    hostile = [f"/hostile{n}" for n in range(len(feeds))]
    for path, (body, headers, status) in zip(hostile, feeds, strict=True):
        sources.replies[path] = (status, headers, body)
        shared_srv.route(path, sources.answer)
    shared_srv.serve_feed("/healthy", HEALTHY, etag=False)
    # Another host name for the neighbours: rate limits of the hostile host pause only it.
    healthy = f"http://{NEIGHBOUR_HOST}:{shared_srv.port}/healthy"

    with patch.object(guard, "system_resolve", _neighbour_resolves_to_loopback):
        polled = poll_all([shared_srv.url(path) for path in hostile] + [healthy, healthy + "?2"])

    for source in polled[: len(hostile)]:
        error = source.outcome.error
        if source.outcome.status == "ok":
            assert source.feed is not None or source.result.not_modified
        else:
            assert source.outcome.error_code and error and len(error) < 1000
    for neighbour in polled[len(hostile) :]:
        assert neighbour.outcome.status == "ok" and neighbour.entry.title == "All is well"
