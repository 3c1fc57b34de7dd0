"""Parse stage: every feed format, entry identity and hashing, sanitising, hostile input."""

from __future__ import annotations

import json
import random
import re
from datetime import UTC, datetime
from pathlib import Path
from typing import Any
from xml.sax.saxutils import escape as xml_escape

import pytest
from httpserver import FeedServer
from hypothesis import given, settings
from hypothesis import strategies as st

from aggregator.bounds import ELLIPSIS, MAX_TITLE_CHARS
from aggregator.errors import AggregatorError, ParseError
from aggregator.parse import MAX_TEXT_CHARS, parse_feed
from aggregator.types import EntryData, ParsedFeed

URL = "http://outlet.test/feeds/main.xml"


def parse(body: bytes | str, headers: dict[str, str] | None = None, url: str = URL) -> ParsedFeed:
    data = body.encode() if isinstance(body, str) else body
    return parse_feed(data, headers or {}, url=url, source="outlet")


def rss(items: str, channel: str = "") -> str:
    return (
        '<?xml version="1.0" encoding="utf-8"?>\n<rss version="2.0" '
        'xmlns:content="http://purl.org/rss/1.0/modules/content/"><channel>'
        f"<title>Outlet</title><link>http://outlet.test/</link>{channel}{items}</channel></rss>"
    )


def only_entry(body: bytes | str, headers: dict[str, str] | None = None) -> EntryData:
    [entry] = parse(body, headers).entries
    return entry


def parse_error(body: bytes | str, headers: dict[str, str] | None = None) -> ParseError:
    with pytest.raises(ParseError) as caught:
        parse(body, headers)
    return caught.value


# --- every format ------------------------------------------------------------------------

RSS_091 = """<?xml version="1.0"?>
<!DOCTYPE rss PUBLIC "-//Netscape Communications//DTD RSS 0.91//EN"
 "http://my.netscape.com/publish/formats/rss-0.91.dtd">
<rss version="0.91"><channel><title>Outlet</title><link>http://outlet.test/</link>
<description>d</description><language>en-us</language>
<item><title>Ninety-one</title><link>http://outlet.test/91</link><description>Old &amp; gold</description></item>
</channel></rss>"""

RSS_10 = """<?xml version="1.0"?>
<rdf:RDF xmlns:rdf="http://www.w3.org/1999/02/22-rdf-syntax-ns#" xmlns="http://purl.org/rss/1.0/"
 xmlns:dc="http://purl.org/dc/elements/1.1/">
<channel rdf:about="http://outlet.test/"><title>Outlet</title><link>http://outlet.test/</link>
<description>d</description><dc:language>de</dc:language></channel>
<item rdf:about="http://outlet.test/10"><title>Ten</title><link>http://outlet.test/10</link>
<description>RDF body</description><dc:date>2024-05-01T12:00:00+02:00</dc:date></item>
</rdf:RDF>"""

RSS_20 = rss(
    "<item><title>Twenty</title><link>http://outlet.test/20</link><guid>urn:twenty</guid>"
    "<description>Short</description><content:encoded><![CDATA[<p>Long body</p>]]></content:encoded>"
    "<pubDate>Wed, 01 May 2024 12:00:00 +0200</pubDate><author>ed@outlet.test (Ed Itor)</author>"
    "</item>",
    channel="<language>en</language><ttl>45</ttl>",
)

ATOM_03 = """<?xml version="1.0" encoding="utf-8"?>
<feed version="0.3" xmlns="http://purl.org/atom/ns#"><title>Outlet</title>
<link rel="alternate" type="text/html" href="http://outlet.test/"/>
<modified>2024-05-01T10:00:00Z</modified>
<entry><title>Oh three</title><link rel="alternate" type="text/html" href="http://outlet.test/03"/>
<id>tag:outlet.test,2024:03</id><issued>2024-05-01T12:00:00+02:00</issued>
<modified>2024-05-01T10:00:00Z</modified>
<content type="text/html" mode="escaped">&lt;p&gt;Atom 0.3 body&lt;/p&gt;</content></entry></feed>"""

ATOM_10 = """<?xml version="1.0" encoding="utf-8"?>
<feed xmlns="http://www.w3.org/2005/Atom" xml:lang="fr"><title>Outlet</title>
<link href="http://outlet.test/"/><id>urn:outlet</id><updated>2024-05-01T10:00:00Z</updated>
<entry><title type="html">One &lt;em&gt;point&lt;/em&gt; oh</title><link href="http://outlet.test/10a"/>
<id>urn:one-oh</id><published>2024-05-01T10:00:00Z</published><updated>2024-05-02T10:00:00Z</updated>
<summary>short</summary><author><name>Ann</name></author>
<content type="xhtml"><div xmlns="http://www.w3.org/1999/xhtml"><p>Atom <b>1.0</b> body</p></div></content>
</entry></feed>"""

JSON_10 = json.dumps(
    {
        "version": "https://jsonfeed.org/version/1",
        "title": "Outlet",
        "home_page_url": "http://outlet.test/",
        "author": {"name": "Desk"},
        "items": [
            {
                "id": "json-1",
                "url": "http://outlet.test/j1",
                "title": "Jason",
                "content_text": "JSON <plain> body",
                "date_published": "2024-05-01T12:00:00+02:00",
            }
        ],
    }
)

JSON_11 = json.dumps(
    {
        "version": "https://jsonfeed.org/version/1.1",
        "title": "Outlet",
        "home_page_url": "http://outlet.test/",
        "language": "uk",
        "items": [
            {
                "id": 11,
                "url": "http://outlet.test/j11",
                "title": "Eleven",
                "content_html": "<p>JSON <b>1.1</b> body</p>",
                "date_modified": "2024-05-01T10:00:00Z",
                "authors": [{"name": "Bo"}],
            }
        ],
    }
)

NOON_PARIS = datetime(2024, 5, 1, 10, 0, tzinfo=UTC)

FORMATS: list[tuple[str, str, dict[str, Any]]] = [
    (
        "rss091",
        RSS_091,
        {"key": "http://outlet.test/91", "title": "Ninety-one", "text": "Old & gold"},
    ),
    (
        "rss10",
        RSS_10,
        {"key": "http://outlet.test/10", "title": "Ten", "published": NOON_PARIS},
    ),
    (
        "rss20",
        RSS_20,
        {"key": "urn:twenty", "text": "Long body", "author": "Ed Itor", "published": NOON_PARIS},
    ),
    (
        "atom03",
        ATOM_03,
        {"key": "tag:outlet.test,2024:03", "text": "Atom 0.3 body", "published": NOON_PARIS},
    ),
    (
        "atom10",
        ATOM_10,
        {"key": "urn:one-oh", "title": "One point oh", "text": "Atom 1.0 body", "author": "Ann"},
    ),
    (
        "json10",
        JSON_10,
        {"key": "json-1", "text": "JSON <plain> body", "author": "Desk", "published": NOON_PARIS},
    ),
    (
        "json11",
        JSON_11,
        {"key": "11", "text": "JSON 1.1 body", "author": "Bo", "published": NOON_PARIS},
    ),
]


@pytest.mark.parametrize(
    ("document", "expected"), [f[1:] for f in FORMATS], ids=[f[0] for f in FORMATS]
)
def test_every_format_gives_the_same_kind_of_entry(document: str, expected: dict[str, Any]) -> None:
    feed = parse(document)

    assert feed.title == "Outlet" and feed.link == "http://outlet.test/"
    [entry] = feed.entries
    for field, value in expected.items():
        assert getattr(entry, field) == value, field
    assert entry.link and entry.link.startswith("http://outlet.test/")
    assert entry.published is None or entry.published.tzinfo is UTC


def test_feed_language_and_ttl_are_read() -> None:
    assert (parse(RSS_20).language, parse(RSS_20).ttl_minutes) == ("en", 45)
    assert parse(RSS_10).language == "de"
    assert parse(ATOM_10).language == "fr"
    assert parse(JSON_11).language == "uk"
    assert only_entry(JSON_11).language == "uk"  # entries carry the feed's language
    assert parse(ATOM_10).ttl_minutes is None
    assert parse(rss("", channel="<ttl>-5</ttl>")).ttl_minutes is None
    assert parse(rss("", channel="<ttl>soon</ttl>")).ttl_minutes is None


def test_the_richest_body_wins_and_plain_text_is_escaped() -> None:
    assert only_entry(RSS_20).summary_html == "<p>Long body</p>"  # content:encoded over description
    assert only_entry(JSON_10).summary_html == "JSON &lt;plain&gt; body"


def test_a_feed_without_entries_is_still_a_feed() -> None:
    feed = parse(rss(""))

    assert feed.title == "Outlet" and feed.entries == ()


# --- identity and change -------------------------------------------------------------


def test_identity_falls_back_from_guid_to_link_to_a_content_hash() -> None:
    feed = parse(
        rss(
            "<item><guid isPermaLink='false'>id-1</guid><link>http://outlet.test/a</link><title>A</title></item>"
            "<item><link>http://outlet.test/b</link><title>B</title></item>"
            "<item><title>C</title><description>no id, no link</description></item>"
        )
    )

    keys = [entry.key for entry in feed.entries]
    assert keys[:2] == ["id-1", "http://outlet.test/b"]
    assert keys[2] == "sha256:" + feed.entries[2].content_hash


def test_identity_does_not_depend_on_the_url_the_feed_came_from() -> None:
    # A guid that looks like a relative path must not be resolved against the fetch URL,
    # or adopting a permanent redirect would duplicate every entry.
    body = rss("<item><guid>post-7</guid><title>Seven</title></item>")

    first = parse(body, url="http://outlet.test/rss")
    moved = parse(body, url="https://cdn.outlet.test/feeds/rss")

    assert first.entries[0].key == moved.entries[0].key == "post-7"


def test_a_changed_title_or_body_changes_the_content_hash_but_not_the_key() -> None:
    def entry(title: str, body: str) -> EntryData:
        return only_entry(
            rss(
                f"<item><guid>g</guid><title>{title}</title><description>{body}</description></item>"
            )
        )

    original = entry("Quake hits", "Early reports")
    retitled = entry("Quake hits city", "Early reports")
    rewritten = entry("Quake hits", "Later reports")
    reflowed = entry("Quake  hits", "Early\n   reports")

    assert len({original.key, retitled.key, rewritten.key}) == 1
    assert original.content_hash != retitled.content_hash
    assert original.content_hash != rewritten.content_hash
    assert original.content_hash == reflowed.content_hash  # whitespace is not an edit


def test_an_entry_listed_twice_appears_once() -> None:
    feed = parse(rss("<item><guid>g</guid><title>First</title></item>" * 2))

    assert [entry.title for entry in feed.entries] == ["First"]


def test_dates_are_utc_and_published_falls_back_to_updated() -> None:
    feed = parse(
        rss(
            "<item><guid>a</guid><pubDate>Wed, 01 May 2024 08:00:00 -0400</pubDate></item>"
            "<item><guid>b</guid><title>undated</title></item>"
        )
    )
    atom = only_entry(ATOM_03.replace("<issued>2024-05-01T12:00:00+02:00</issued>", ""))

    assert feed.entries[0].published == datetime(2024, 5, 1, 12, 0, tzinfo=UTC)
    assert feed.entries[1].published is None and feed.entries[1].updated is None
    assert atom.published == atom.updated == datetime(2024, 5, 1, 10, 0, tzinfo=UTC)


def test_entries_with_nothing_in_them_are_dropped() -> None:
    feed = parse(rss("<item></item><item><title>Real</title></item>"))

    assert [entry.title for entry in feed.entries] == ["Real"]


# --- what gets republished -----------------------------------------------------------


def test_html_is_sanitised_and_relative_links_resolved() -> None:
    body = (
        '<p onclick="steal()">Hello <script>alert(1)</script><b>world</b></p>'
        '<img src="pic.png" onerror="steal()"><a href="javascript:steal()">bad</a> '
        '<a href="/about">about</a> <iframe src="http://evil.test/"></iframe>'
        "<style>p { display: none }</style> <a href='mailto:desk@outlet.test'>mail</a>"
    )
    entry = only_entry(
        rss(
            f"<item><link>http://outlet.test/news/1</link><description><![CDATA[{body}]]></description></item>"
        )
    )

    html = entry.summary_html
    for forbidden in (
        "<script",
        "alert(1)",
        "onclick",
        "onerror",
        "javascript:",
        "<iframe",
        "<style",
    ):
        assert forbidden not in html
    assert 'src="http://outlet.test/news/pic.png"' in html
    assert 'href="http://outlet.test/about"' in html
    assert 'href="mailto:desk@outlet.test"' in html
    assert entry.text == "Hello world bad about mail"


def test_links_that_are_not_http_are_dropped() -> None:
    entry = only_entry(rss("<item><title>x</title><link>javascript:alert(1)</link></item>"))

    assert entry.link is None


def test_an_id_is_a_link_only_when_it_is_an_absolute_url() -> None:
    feed = parse(
        rss(
            "<item><title>a</title><guid>12345</guid></item>"
            "<item><title>b</title><guid>https://outlet.example/b</guid></item>"
            "<item><title>c</title><guid>c-1</guid><link>/news/c</link></item>"
            "<item><title>d</title><guid>/news/d</guid><link>/news/d</link></item>"
        )
    )
    assert [e.link for e in feed.entries] == [
        None,  # not URL + "12345": the guid names the item, not a page
        "https://outlet.example/b",
        "http://outlet.test/news/c",  # a relative <link> still resolves
        "http://outlet.test/news/d",  # even when the guid says the same
    ]
    atom = parse(
        '<feed xmlns="http://www.w3.org/2005/Atom"><title>t</title>'
        "<entry><title>a</title><id>post-42</id></entry></feed>"
    )
    assert [(e.key, e.link) for e in atom.entries] == [("post-42", None)]


def test_a_search_box_inside_an_item_costs_nothing() -> None:
    # feedparser 6 fails with a KeyError on a <textInput> nested in an item.
    box = "<textInput><title>Go</title><name>q</name><link>https://o.example/s</link></textInput>"
    feed = parse(rss(f"<item><title>Kept</title><guid>https://o.example/1</guid>{box}</item>", box))
    assert [(e.title, e.link) for e in feed.entries] == [("Kept", "https://o.example/1")]
    assert feed.defect is None
    # Boxes opened in one item and closed in the next take no item with them.
    stray = parse(
        rss(
            "<item><title>One</title><textInput></item>"
            "<item><title>Two</title></textInput></item><item><title>Three</title></item>"
        )
    )
    assert [e.title for e in stray.entries] == ["One", "Two", "Three"]


def test_html_named_entities_are_read_without_a_dtd() -> None:
    # A feed with no items yet, titled with an entity XML does not define.
    empty = parse(rss("", "<description>News &mdash; daily</description>"))
    assert empty.title == "Outlet" and empty.entries == () and empty.defect is None
    entry = only_entry(rss("<item><title>Caf&eacute; &ndash; a&nbsp;b&hellip;</title></item>"))
    assert entry.title == "Café – a b…"


def test_a_body_in_a_legacy_encoding_it_does_not_declare_is_read() -> None:
    title = "서울에서 열린 회의, 합의 없이 끝나"  # Korean, sent as EUC-KR
    body = f"<rss><channel><title>Outlet</title><item><title>{title}</title></item></channel></rss>"
    feed = parse(body.encode("euc-kr"), {"Content-Type": "application/rss+xml"})
    assert [e.title for e in feed.entries] == [title]


def test_text_is_plain_decoded_and_capped() -> None:
    long_body = "<p>caf&eacute; &amp; bar</p><p>next</p>" + "word " * 3000
    entry = only_entry(
        rss(f"<item><guid>g</guid><description><![CDATA[{long_body}]]></description></item>")
    )

    assert entry.text.startswith("café & bar next word word")
    assert len(entry.text) <= MAX_TEXT_CHARS and entry.text.endswith("word")


def test_xml_illegal_control_characters_are_stripped_everywhere() -> None:
    entry_feed = parse(
        rss(
            "<item><guid>g\x01</guid><title>Ti\x0btle\x1f</title><author>A\x02nn</author>"
            "<description>bo\x00dy\x08</description></item>",
            channel="",
        ).replace("<title>Outlet</title>", "<title>Out\x0clet</title>")
    )
    json_feed = parse(
        json.dumps(
            {
                "version": "https://jsonfeed.org/version/1.1",
                "title": "J\x01",
                "items": [{"id": "1", "title": "x\x1by\ufffe"}],
            }
        )
    )

    [entry] = entry_feed.entries
    assert entry_feed.title == "Outlet"
    assert (entry.key, entry.title, entry.author, entry.text) == ("g", "Title", "Ann", "body")
    assert json_feed.title == "J" and json_feed.entries[0].title == "xy"


# --- bodies that are not (usable) feeds ------------------------------------------------


def test_an_html_page_is_not_a_feed_and_its_feed_link_is_named() -> None:
    page = (
        "<!DOCTYPE html><html><head><title>Outlet</title>"
        '<link rel="alternate" type="application/rss+xml" href="/rss.xml"></head>'
        "<body><p>News</p></body></html>"
    )

    error = parse_error(page, {"Content-Type": "text/html; charset=utf-8"})

    assert error.code == "not_a_feed" and error.url == URL and error.source == "outlet"
    assert "HTML page" in str(error) and "http://outlet.test/rss.xml" in str(error)
    assert isinstance(error, AggregatorError)


@pytest.mark.parametrize("body", [b"", b"   \n\t  "], ids=["empty", "whitespace"])
def test_an_empty_body_is_reported_as_empty(body: bytes) -> None:
    assert parse_error(body).code == "empty"


def test_binary_junk_is_not_a_feed() -> None:
    junk = b"\x89PNG\r\n\x1a\n" + random.Random(7).randbytes(4000)

    error = parse_error(junk, {"Content-Type": "image/png"})

    assert error.code == "not_a_feed" and "binary" in str(error)


def test_xml_that_is_no_feed_is_not_a_feed() -> None:
    error = parse_error('<?xml version="1.0"?><config><value>1</value></config>')

    assert error.code == "not_a_feed" and "RSS, Atom or JSON Feed" in str(error)


def test_a_feed_cut_off_before_any_entry_is_malformed() -> None:
    error = parse_error(
        '<?xml version="1.0"?><rss version="2.0"><channel><title>t</title><item><ti'
    )

    assert error.code == "malformed"


def test_a_slightly_broken_feed_that_still_has_entries_is_kept() -> None:
    broken = rss("<item><guid>g</guid><title>Fish &amp; chips &nbsp;&copy; </title></item>")
    broken = broken.replace("</channel></rss>", "")  # never closed

    assert only_entry(broken).title == "Fish & chips ©"


@pytest.mark.parametrize(
    ("body", "code"),
    [
        ('{"version": "https://jsonfeed.org/version/1.1", "items": [', "malformed"),
        ('{"data": [1, 2, 3]}', "not_a_feed"),
        ('{"version": "https://example.test/v2", "items": []}', "not_a_feed"),
        ("[" * 100_000 + "]" * 100_000, "not_a_feed"),
        ("{" + '"a":' * 1 + "[" * 100_000, "malformed"),
    ],
    ids=["truncated", "other-json", "other-version", "deep-array", "deep-object"],
)
def test_json_that_is_no_json_feed(body: str, code: str) -> None:
    assert parse_error(body).code == code


# --- hostile XML -------------------------------------------------------------------------


def lol_bomb(single_line: bool) -> str:
    declarations = ['<!ENTITY lol0 "lollollollollollollollollollol">'] + [
        f'<!ENTITY lol{i} "{f"&lol{i - 1};" * 10}">' for i in range(1, 10)
    ]
    subset = ("" if single_line else "\n").join(declarations)
    return (
        f'<?xml version="1.0"?>\n<!DOCTYPE rss [{subset}]>\n'
        '<rss version="2.0"><channel><title>&lol9;</title>'
        "<item><guid>g</guid><title>Bomb &lol9;</title><description>&lol5;</description></item>"
        "</channel></rss>"
    )


@pytest.mark.parametrize("single_line", [False, True], ids=["multi-line", "single-line"])
def test_billion_laughs_does_not_expand(single_line: bool) -> None:
    feed = parse(lol_bomb(single_line))

    [entry] = feed.entries
    assert "lollol" not in entry.title and "lollol" not in entry.text
    assert "lollol" not in (feed.title or "")


def test_external_entities_do_not_read_local_files(tmp_path: Path) -> None:
    secret = tmp_path / "secret.txt"
    secret.write_text("TOP-SECRET-VALUE")
    for subset in (
        f'<!DOCTYPE rss [\n<!ENTITY xxe SYSTEM "file://{secret}">\n]>',
        f'<!DOCTYPE rss [<!ENTITY xxe SYSTEM "file://{secret}">]>',
    ):
        body = (
            f'<?xml version="1.0"?>\n{subset}\n'
            + rss("<item><guid>g</guid><title>x &xxe;</title></item>").split("\n", 1)[1]
        )

        entry = only_entry(body)

        assert "TOP-SECRET" not in entry.title + entry.text + entry.summary_html


def test_external_dtds_and_entities_are_never_fetched() -> None:
    with FeedServer() as srv:
        srv.serve_feed("/evil.dtd", b'<!ENTITY leak "FETCHED">', "application/xml-dtd")
        dtd = srv.url("/evil.dtd")
        body = (
            f'<?xml version="1.0"?>\n<!DOCTYPE rss SYSTEM "{dtd}" [\n'
            f'<!ENTITY % remote SYSTEM "{dtd}">\n%remote;\n<!ENTITY ext SYSTEM "{dtd}">\n]>\n'
            '<rss version="2.0"><channel><title>t</title>'
            "<item><guid>g</guid><title>a &leak; &ext;</title></item></channel></rss>"
        )

        parse(body)

        assert srv.requests == []


def test_a_body_that_is_a_file_path_is_not_opened(tmp_path: Path) -> None:
    # feedparser opens its argument as a file when it can; bodies must never reach that.
    local = tmp_path / "feed.xml"
    local.write_text(RSS_20)

    with pytest.raises(ParseError):
        parse(str(local))


# --- encodings ---------------------------------------------------------------------------


def test_a_wrongly_declared_charset_still_parses() -> None:
    latin1 = rss("<item><guid>g</guid><title>Café crème</title></item>").encode("latin-1")
    assert b'encoding="utf-8"' in latin1  # the document lies about its encoding

    assert only_entry(latin1).title == "Café crème"


def test_a_wrong_charset_in_the_headers_still_parses() -> None:
    utf8 = rss("<item><guid>g</guid><title>Київ</title></item>").encode()

    entry = only_entry(utf8, {"Content-Type": "text/xml; charset=iso-8859-1"})

    assert entry.title == "Київ"  # servers often default to latin-1 for any text/*


def test_utf16_feeds_parse() -> None:
    body = rss("<item><guid>g</guid><title>Київ</title></item>").replace("utf-8", "utf-16")

    assert only_entry(body.encode("utf-16")).title == "Київ"


# --- hostile entries, table-driven ---------------------------------------------------------

HOSTILE_ITEMS = [
    ("bad-ipv6-link", "<link>http://[invalid/x</link><title>t</title>", {"link": None}),
    ("bad-port-link", "<link>http://outlet.test:99999/x</link><title>t</title>", {"link": None}),
    ("space-in-host", "<link>http://out let.test/x</link><title>t</title>", {"link": None}),
    ("data-uri-link", "<link>data:text/html,&lt;script&gt;</link><title>t</title>", {"link": None}),
    (
        "obfuscated-js",
        "<title>t</title><description>&lt;a href='jav&amp;#x09;ascript:x()'&gt;a&lt;/a&gt;</description>",
        {"summary_html": '<a rel="noopener noreferrer">a</a>'},
    ),
    (
        "svg-script",
        "<title>t</title><description><![CDATA[<svg><script>x()</script></svg>ok]]></description>",
        {"text": "ok"},
    ),
    (
        "huge-title",
        f"<title>{'T' * 100_000}</title>",
        {"title": "T" * (MAX_TITLE_CHARS - 1) + ELLIPSIS},
    ),
    ("guid-whitespace", "<guid>  spaced  </guid><title>t</title>", {"key": "spaced"}),
    (
        "email-only-author",
        "<author>desk@outlet.test</author><title>t</title>",
        {"author": "desk@outlet.test"},
    ),
    ("bad-date", "<pubDate>yesterday-ish</pubDate><title>t</title>", {"published": None}),
]


@pytest.mark.parametrize(
    ("item", "expected"),
    [case[1:] for case in HOSTILE_ITEMS],
    ids=[case[0] for case in HOSTILE_ITEMS],
)
def test_hostile_entries_are_defused(item: str, expected: dict[str, Any]) -> None:
    entry = only_entry(rss(f"<item>{item}</item>"))

    for field, value in expected.items():
        assert getattr(entry, field) == value, field


def test_a_weird_entry_link_cannot_break_link_resolution_in_its_body() -> None:
    entry = only_entry(
        rss(
            "<item><title>t</title><link>http://outlet.test:99999/</link>"
            "<description>&lt;a href='/rel'&gt;r&lt;/a&gt;</description></item>"
        )
    )

    assert entry.link is None
    assert 'href="http://outlet.test/rel"' in entry.summary_html  # the feed URL is the base


# --- properties ------------------------------------------------------------------------------

XML_ILLEGAL = re.compile("[\x00-\x08\x0b\x0c\x0e-\x1f\ufffe\uffff]")


def strings_of(feed: ParsedFeed) -> list[str]:
    values = [feed.title or "", feed.link or "", feed.language or ""]
    for entry in feed.entries:
        values += [entry.key, entry.title, entry.link or "", entry.summary_html, entry.text]
        values += [entry.author or ""]
    return values


@settings(max_examples=150, deadline=None)
@given(st.binary(max_size=3000))
def test_any_bytes_give_a_feed_or_a_parse_error(body: bytes) -> None:
    try:
        feed = parse(body)
    except ParseError as error:
        assert error.code in {"empty", "not_a_feed", "malformed"}
    else:
        assert not any(XML_ILLEGAL.search(value) for value in strings_of(feed))


@settings(max_examples=100, deadline=None)
@given(title=st.text(max_size=200), body=st.text(max_size=500))
def test_any_text_comes_out_clean_and_keys_are_stable(title: str, body: str) -> None:
    item = f"<item><title>{xml_escape(title)}</title><description>{xml_escape(body)}</description></item>"
    document = rss(item)

    try:
        first, again = parse(document), parse(document, url="https://elsewhere.test/feed")
    except ParseError:
        return  # characters XML cannot carry at all may leave nothing to read
    assert [e.key for e in first.entries] == [e.key for e in again.entries]
    assert not any(XML_ILLEGAL.search(value) for value in strings_of(first))
    assert all("<script" not in entry.summary_html for entry in first.entries)


@pytest.mark.parametrize("encoding", ["cp1251", "koi8-u"])
def test_a_cyrillic_single_byte_feed_labelled_utf8_keeps_its_letters(encoding: str) -> None:
    title = "Бої біля Суджі тривають"
    body = (
        '<?xml version="1.0" encoding="utf-8"?><rss version="2.0"><channel><title>Ранок</title>'
        f"<item><guid>1</guid><title>{title}</title>"
        "<description>Українські війська просунулися вглиб Курської області</description>"
        "</item></channel></rss>"
    ).encode(encoding)
    feed = parse_feed(body, {"content-type": "application/rss+xml; charset=utf-8"}, url=URL)
    assert feed.entries[0].title == title
    assert feed.title == "Ранок"


@pytest.mark.parametrize("damage", [b"\xff\xfe", b"\xe9t\xe9", b"\xd0"])
@pytest.mark.parametrize(
    ("mark", "declaration", "content_type"),
    [
        (b"", ' encoding="utf-8"', "application/rss+xml; charset=utf-8"),
        (b"", ' encoding="UTF-8"', "application/rss+xml"),
        (b"", "", "text/xml"),  # nothing declared: XML's default
        # a UTF-8 byte-order mark, which outranks a server's default charset
        (b"\xef\xbb\xbf", "", "application/rss+xml; charset=iso-8859-1"),
    ],
)
def test_a_utf8_feed_with_a_few_bad_bytes_keeps_every_other_letter(
    damage: bytes, mark: bytes, declaration: str, content_type: str
) -> None:
    # One broken sequence (a truncated copy, a pasted Latin-1 word) must not make
    # the whole document windows-1252 and garble every headline of the feed.
    titles = ["Сирський: Сили оборони контролюють 1000 км²", "Ζελένσκι: η επιχείρηση συνεχίζεται"]
    items = "".join(
        f"<item><guid>{i}</guid><title>{t}</title></item>" for i, t in enumerate(titles)
    )
    body = (
        mark
        + (
            f'<?xml version="1.0"{declaration}?><rss version="2.0"><channel><title>Хвиля</title>'
            f"{items}<item><guid>9</guid><title>Troops BAD moved</title></item></channel></rss>"
        ).encode()
    )
    feed = parse_feed(body.replace(b"BAD", damage), {"content-type": content_type}, url=URL)
    assert [e.title for e in feed.entries[:2]] == titles
    assert feed.title == "Хвиля"
    assert feed.entries[2].title.startswith("Troops \ufffd") and feed.entries[2].title.endswith(
        " moved"
    )


def test_a_latin1_feed_labelled_utf8_keeps_its_accents() -> None:
    body = (
        '<?xml version="1.0" encoding="utf-8"?><rss version="2.0"><channel><title>Le Matin</title>'
        "<item><guid>1</guid><title>Café crème à Noël, façade rénovée</title></item>"
        "</channel></rss>"
    ).encode("cp1252")
    feed = parse_feed(body, {"content-type": "application/rss+xml; charset=utf-8"}, url=URL)
    assert feed.entries[0].title == "Café crème à Noël, façade rénovée"


@settings(max_examples=300, deadline=None)
@given(
    st.text(
        alphabet=st.sampled_from("a Z>&<\r\n\t\xa0\ufeff\"'=;/é😀")
        | st.characters(blacklist_categories=["Cs"]),
        max_size=60,
    )
)
def test_plain_text_is_stored_as_the_sanitiser_writes_it(fragment: str) -> None:
    import nh3

    from aggregator.parse import URL_SCHEMES, _clean, _html_text, _sanitised

    fragment = _clean(fragment)
    base = "http://outlet.test/news/1"
    expected = nh3.clean(
        fragment, url_schemes=set(URL_SCHEMES), url_relative=("rewrite_with_base", base)
    )
    assert _sanitised(fragment, base=base) == expected
    extractor_text = _html_text(f"<p>{expected}</p>")  # through the HTML parser, always
    assert _html_text(expected) == extractor_text


@pytest.mark.parametrize("encoding", ["utf-8", "utf-16"])
def test_relative_links_resolve_against_xml_base(encoding: str) -> None:
    atom = f"""<?xml version="1.0" encoding="{encoding}"?>
<feed xmlns="http://www.w3.org/2005/Atom" xml:base="http://outlet.test/blog/">
<title>Outlet</title><id>urn:o</id><updated>2024-05-01T10:00:00Z</updated>
<entry><id>urn:o:1</id><title>One</title><link href="2024/one"/>
<updated>2024-05-01T10:00:00Z</updated>
<content type="html">&lt;a href="pics/"&gt;pictures&lt;/a&gt; &lt;img src="a.png"&gt;</content>
</entry></feed>"""
    entry = only_entry(atom.encode(encoding))

    assert entry.link == "http://outlet.test/blog/2024/one"
    assert 'href="http://outlet.test/blog/pics/"' in entry.summary_html
    assert 'src="http://outlet.test/blog/a.png"' in entry.summary_html


def test_an_entry_whose_only_content_is_markup_is_kept_once() -> None:
    # From feedparser's corpus: an image or an SVG with no words is still an entry of
    # its feed; two identical ones are one.
    atom = b"""<feed xmlns="http://www.w3.org/2005/Atom">
    <entry><content type="html">&lt;img src="http://x.test/a.jpg"&gt;</content></entry>
    <entry><content type="html">&lt;img src="http://x.test/b.jpg"&gt;</content></entry>
    <entry><content type="html">&lt;img src="http://x.test/b.jpg"&gt;</content></entry>
    <entry><content type="xhtml"><div xmlns="http://www.w3.org/1999/xhtml">
      <svg xmlns="http://www.w3.org/2000/svg"><circle r="5"/></svg></div></content></entry>
    <entry><content type="html">   </content></entry>
    </feed>"""
    entries = parse_feed(atom, {}, url="http://x.test/feed").entries
    assert len(entries) == 3
    assert len({e.key for e in entries}) == 3
    assert 'src="http://x.test/a.jpg"' in entries[0].summary_html


def test_an_entry_titled_only_by_an_image_or_with_only_a_content_src_is_kept() -> None:
    # From feedparser's corpus: a title that is an <img> (with a script handler) and
    # an entry whose content lives at an address are entries of their feed too.
    atom = b"""<feed xmlns="http://www.w3.org/2005/Atom">
    <entry><title type="html">&lt;img src="http://x.test/cam.jpg"
      onerror="location.href='http://evil.test/'" /&gt;</title></entry>
    <entry><content src="http://x.test/movie.mp4"/></entry>
    </feed>"""
    image, movie = parse_feed(atom, {}, url="http://x.test/feed").entries
    assert 'src="http://x.test/cam.jpg"' in image.summary_html
    assert "onerror" not in image.summary_html
    assert movie.link == "http://x.test/movie.mp4"
