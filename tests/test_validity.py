"""Every document of an end-to-end demo run, checked as the W3C feed validator would.

The W3C Feed Validation Service is not on PyPI, so its most important checks are
reproduced here (see /work/shared/research/feed-validity.md): Atom against RFC 4287's
RELAX NG schema (tests/data/atom.rng) plus the rules the RFC states in prose, RSS 2.0's
required elements, RFC 822 dates and guids, JSON Feed 1.1 against a schema, OPML 2.0,
and the pages' discovery links. Errors fail the test; advisories the validator would
print as warnings are raised as FeedWarning and show in pytest's warnings summary.
"""

from __future__ import annotations

import dataclasses
import json
import re
import warnings
from collections import Counter
from collections.abc import Iterator
from datetime import datetime
from email.utils import parsedate_to_datetime
from pathlib import Path
from urllib.parse import urlsplit

import feedparser
import lxml.html
import pytest
from lxml import etree

from aggregator.demo.simulate import run_demo
from aggregator.settings import load_settings

ROOT = Path(__file__).resolve().parent.parent
DATA = Path(__file__).parent / "data"
HUB = "https://hub.example/websub"
ATOM = "{http://www.w3.org/2005/Atom}"
STRICT_XML = etree.XMLParser(resolve_entities=False, no_network=True, recover=False)
RFC3339 = re.compile(r"\d{4}-\d{2}-\d{2}T\d{2}:\d{2}:\d{2}(\.\d+)?(Z|[+-]\d{2}:\d{2})")
# RFC 822 as RSS 2.0 uses it (4-digit year): "Mon, 12 Aug 2024 19:00:00 +0000"
RFC822 = re.compile(
    r"(Mon|Tue|Wed|Thu|Fri|Sat|Sun), \d{2} (Jan|Feb|Mar|Apr|May|Jun|Jul|Aug|Sep|Oct|Nov|Dec) "
    r"\d{4} \d{2}:\d{2}:\d{2} ([+-]\d{4}|GMT|UT)"
)
# The validator's list of registered link relations that our feeds use or may use.
REGISTERED_RELS = {"alternate", "related", "self", "enclosure", "via", "hub", "license"}
FEED_TYPES = {
    "atom": "application/atom+xml",
    "rss": "application/rss+xml",
    "json": "application/feed+json",
}


class FeedWarning(UserWarning):
    """Something the W3C validator reports as a warning, not an error."""


@pytest.fixture(scope="module")
def run(tmp_path_factory: pytest.TempPathFactory) -> tuple[str, dict[str, bytes]]:
    """(base URL, documents by URL path) of the bundled demo's whole week."""
    tmp = tmp_path_factory.mktemp("validity")
    settings = load_settings(ROOT / "config" / "aggregator.toml", environ={})
    settings = dataclasses.replace(
        settings, publish=dataclasses.replace(settings.publish, websub_hub=HUB)
    )
    out = tmp / "out"
    run_demo(settings, tmp / "demo.db", out)
    documents = {
        "/" + path.relative_to(out).as_posix(): path.read_bytes()
        for path in sorted(out.rglob("*"))
        if path.is_file()
    }
    return settings.publish.base_url.rstrip("/"), documents


def of_kind(documents: dict[str, bytes], suffix: str) -> Iterator[tuple[str, bytes]]:
    return ((path, body) for path, body in documents.items() if path.endswith(suffix))


def test_the_run_published_every_kind_of_document(run: tuple[str, dict[str, bytes]]) -> None:
    _, documents = run
    assert {"/index.html", "/timelines.opml"} <= set(documents)
    for slug in ("all", "kursk"):
        assert {f"/timelines/{slug}.{kind}" for kind in ("atom", "rss", "json", "html")} <= set(
            documents
        )
    assert any(path.startswith("/timelines/story-") for path in documents)


# --- Atom -------------------------------------------------------------------------------


def atom_errors(body: bytes, self_url: str) -> list[str]:
    root = etree.fromstring(body, STRICT_XML)
    schema = etree.RelaxNG(etree.parse(str(DATA / "atom.rng")))
    errors = [f"schema: {e.message} (line {e.line})" for e in _schema_errors(schema, root)]
    selves = [link.get("href") for link in root.findall(f"{ATOM}link[@rel='self']")]
    if selves != [self_url]:
        errors.append(f"self link {selves} does not match the document's location {self_url}")
    if root.find(f"{ATOM}link[@rel='hub']") is None:
        errors.append("no rel=hub link although a hub is configured")
    errors += _links_errors(root, "feed")
    ids = [entry.findtext(f"{ATOM}id", "") for entry in root.iter(f"{ATOM}entry")]
    errors += [f"entry id {i} appears {n} times" for i, n in Counter(ids).items() if n > 1]
    feed_author = root.find(f"{ATOM}author") is not None
    for entry in root.iter(f"{ATOM}entry"):
        errors += [f"entry {entry.findtext(f'{ATOM}id')}: {e}" for e in _entry_errors(entry)]
        # RFC 4287 4.1.1: an author on the entry, its feed, or its atom:source
        authors = (f"{ATOM}author", f"{ATOM}source/{ATOM}author")
        if not feed_author and all(entry.find(where) is None for where in authors):
            errors.append(f"entry {entry.findtext(f'{ATOM}id')}: missing author")
    for stamp in root.iter(f"{ATOM}updated", f"{ATOM}published"):
        if not RFC3339.fullmatch(stamp.text or ""):
            errors.append(f"{stamp.tag} {stamp.text!r} is not an RFC 3339 date")
    return errors


def _schema_errors(schema: etree.RelaxNG, root: etree._Element) -> list[etree._LogEntry]:
    return [] if schema.validate(root) else list(schema.error_log)


def _entry_errors(entry: etree._Element) -> Iterator[str]:
    if not urlsplit(entry.findtext(f"{ATOM}id", "")).scheme:
        yield "id is not an absolute URI"
    links = entry.findall(f"{ATOM}link")
    alternates = [
        (link.get("type"), link.get("hreflang"))
        for link in links
        if link.get("rel", "alternate") == "alternate"
    ]
    if not alternates and entry.find(f"{ATOM}content") is None:
        yield "neither an alternate link nor content (RFC 4287 4.1.2)"
    if len(alternates) != len(set(alternates)):
        yield "two alternate links with the same type and hreflang"
    if entry.find(f"{ATOM}content") is None and entry.find(f"{ATOM}summary") is None:
        yield "no content and no summary: readers show an empty item"
    source = entry.find(f"{ATOM}source")
    if source is None:
        yield "no atom:source naming the outlet"
    else:
        for name in ("id", "title", "updated"):
            if not (source.findtext(f"{ATOM}{name}") or "").strip():
                yield f"atom:source without {name}"
    yield from _links_errors(entry, "entry")


def _links_errors(parent: etree._Element, where: str) -> Iterator[str]:
    for link in parent.findall(f"{ATOM}link"):
        rel = link.get("rel", "alternate")
        if rel not in REGISTERED_RELS and not urlsplit(rel).scheme:
            yield f"{where} link rel={rel!r} is not registered"
        if urlsplit(link.get("href", "")).scheme not in ("http", "https"):
            yield f"{where} link href {link.get('href')!r} is not absolute http(s)"


def test_atom_feeds_are_valid(run: tuple[str, dict[str, bytes]]) -> None:
    base, documents = run
    errors = [
        f"{path}: {error}"
        for path, body in of_kind(documents, ".atom")
        for error in atom_errors(body, base + path)
    ]
    assert errors == []


def test_the_schema_and_prose_rules_catch_what_the_validator_catches(
    run: tuple[str, dict[str, bytes]],
) -> None:
    """The checks above are not vacuous: each known mistake of feed generators is caught."""
    base, documents = run
    good = documents["/timelines/kursk.atom"]
    url = base + "/timelines/kursk.atom"
    assert atom_errors(good, url) == []
    author = re.compile(rb"<author>.*?</author>", re.S)
    mistakes = {
        "missing author": author.sub(b"", good),  # feedgen's natural first version
        "atom:source without id": re.sub(rb"<source>\s*<id>[^<]*</id>", b"<source>", good),
        "RFC 3339": good.replace(b"<updated>2024-", b"<updated>24-", 1),
        "does not match the document's location": good,
        "schema": good.replace(b"<id>", b"<id>x</id><id>", 1),
    }
    for expected, body in mistakes.items():
        where = url if body is not good else base + "/elsewhere.atom"
        assert any(expected in error for error in atom_errors(body, where)), expected


# --- RSS 2.0 ----------------------------------------------------------------------------


def rss_errors(body: bytes, self_url: str) -> list[str]:
    root = etree.fromstring(body, STRICT_XML)
    if root.tag != "rss" or root.get("version") != "2.0":
        return [f"root is <{root.tag} version={root.get('version')}>, not RSS 2.0"]
    channel = root.find("channel")
    required = ("title", "link", "description")
    errors = [f"channel without {name}" for name in required if not channel.findtext(name)]
    selves = [link.get("href") for link in channel.findall(f"{ATOM}link[@rel='self']")]
    if selves != [self_url]:
        errors.append(f"self link {selves} does not match the document's location {self_url}")
    if channel.find(f"{ATOM}link[@rel='hub']") is None:
        errors.append("no atom:link rel=hub although a hub is configured")
    for name in ("pubDate", "lastBuildDate"):
        errors += [_rfc822_error(e.text) for e in root.iter(name) if _rfc822_error(e.text)]
    guids = [item.findtext("guid", "") for item in channel.iter("item")]
    errors += [f"guid {g} appears {n} times" for g, n in Counter(guids).items() if n > 1]
    for item in channel.iter("item"):
        errors += [f"item {item.findtext('guid')}: {e}" for e in _item_errors(item)]
    return errors


def _rfc822_error(text: str | None) -> str | None:
    if not RFC822.fullmatch(text or ""):
        return f"date {text!r} is not RFC 822 with a four-digit year"
    moment = parsedate_to_datetime(text)
    if f"{moment:%a}" != (text or "")[:3]:
        return f"date {text!r} names the wrong day of the week"
    return None


def _item_errors(item: etree._Element) -> Iterator[str]:
    if not (item.findtext("title") or item.findtext("description")):
        yield "neither title nor description"
    guid = item.find("guid")
    if guid is None or not (guid.text or "").strip():
        yield "no guid: readers fall back to the link and show edits as new items"
    elif guid.get("isPermaLink", "true") == "true":
        if urlsplit(guid.text or "").scheme not in ("http", "https"):
            yield f"guid {guid.text!r} is a permalink but not an http(s) URL"
    elif guid.get("isPermaLink") != "false":
        yield f"isPermaLink={guid.get('isPermaLink')!r} is neither true nor false"
    link = item.findtext("link")
    if link is not None and urlsplit(link).scheme not in ("http", "https"):
        yield f"link {link!r} is not absolute http(s)"
    source = item.find("source")
    if source is not None and urlsplit(source.get("url", "")).scheme not in ("http", "https"):
        yield "source without an absolute url attribute"
    author = item.findtext("author")
    if author is not None and "@" not in author:
        yield f"author {author!r} is not an e-mail address"


def test_rss_feeds_are_valid(run: tuple[str, dict[str, bytes]]) -> None:
    base, documents = run
    errors = [
        f"{path}: {error}"
        for path, body in of_kind(documents, ".rss")
        for error in rss_errors(body, base + path)
    ]
    assert errors == []


def test_rss_checks_catch_bad_dates_and_guids(run: tuple[str, dict[str, bytes]]) -> None:
    base, documents = run
    good = documents["/timelines/kursk.rss"]
    url = base + "/timelines/kursk.rss"
    bad_date = re.sub(rb"<pubDate>\w\w\w", b"<pubDate>Sun", good, count=1)  # wrong weekday
    permalink = good.replace(b'isPermaLink="false"', b'isPermaLink="true"', 1)
    assert any("wrong day of the week" in e for e in rss_errors(bad_date, url))
    assert any("not an http(s) URL" in e for e in rss_errors(permalink, url))


# --- JSON Feed 1.1, OPML, parsers -------------------------------------------------------


def test_json_feeds_match_the_json_feed_1_1_schema(run: tuple[str, dict[str, bytes]]) -> None:
    jsonschema = pytest.importorskip("jsonschema")  # a test extra; see pyproject.toml
    schema = json.loads((DATA / "jsonfeed-1.1.schema.json").read_text())
    validator = jsonschema.Draft202012Validator(
        schema, format_checker=jsonschema.Draft202012Validator.FORMAT_CHECKER
    )
    base, documents = run
    errors = []
    for path, body in of_kind(documents, ".json"):
        feed = json.loads(body)
        errors += [f"{path}: {e.json_path}: {e.message}" for e in validator.iter_errors(feed)]
        if feed.get("feed_url") != base + path:
            errors.append(f"{path}: feed_url {feed.get('feed_url')} is not where it is served")
        if feed.get("hubs") != [{"type": "WebSub", "url": HUB}]:
            errors.append(f"{path}: hubs {feed.get('hubs')} do not name the configured hub")
        ids = [item["id"] for item in feed["items"]]
        errors += [f"{path}: id {i} appears {n} times" for i, n in Counter(ids).items() if n > 1]
    assert errors == []


def test_feedparser_reads_every_feed_cleanly(run: tuple[str, dict[str, bytes]]) -> None:
    _, documents = run
    for path, body in [*of_kind(documents, ".atom"), *of_kind(documents, ".rss")]:
        parsed = feedparser.parse(body)
        assert parsed.bozo == 0, (path, parsed.get("bozo_exception"))
        assert parsed.version in ("atom10", "rss20"), path
        assert all(entry.get("published_parsed") for entry in parsed.entries), path


def test_opml_lists_every_published_timeline_once(run: tuple[str, dict[str, bytes]]) -> None:
    base, documents = run
    root = etree.fromstring(documents["/timelines.opml"], STRICT_XML)
    assert (root.tag, root.get("version")) == ("opml", "2.0")
    assert (root.findtext("head/title") or "").strip()
    assert _rfc822_error(root.findtext("head/dateModified")) is None
    outlines = root.findall("body/outline")
    listed = set()
    for outline in outlines:
        assert outline.get("type") == "rss" and (outline.get("text") or "").strip()
        feed, page = outline.get("xmlUrl", ""), outline.get("htmlUrl", "")
        assert feed.startswith(base) and page.startswith(base)
        assert feed.removeprefix(base) in documents and page.removeprefix(base) in documents
        listed.add(feed.removeprefix(base))
    published = {path for path, _ in of_kind(documents, ".atom")}
    assert listed <= published

    def items(path: str) -> set[str]:
        return {entry.title for entry in feedparser.parse(documents[path]).entries}

    # A storyline that a configured timeline follows alone is listed as that timeline
    # only: importing the OPML subscribes a reader to the same reports once.
    for path in published - listed:
        assert path.startswith("/timelines/story-"), path
        assert any(items(path) == items(other) for other in listed), path


# --- Pages ------------------------------------------------------------------------------


def test_pages_let_readers_discover_the_feeds(run: tuple[str, dict[str, bytes]]) -> None:
    base, documents = run
    for path, body in of_kind(documents, ".html"):
        page = lxml.html.fromstring(body)
        assert page.get("lang") and page.findtext(".//title"), path
        assert not page.xpath("//script|//*[@*[starts-with(name(), 'on')]]"), path
        alternates = {
            link.get("type"): link.get("href")
            for link in page.xpath("//head/link[@rel='alternate']")
        }
        assert set(FEED_TYPES.values()) <= set(alternates), path
        stem = path.removesuffix(".html") if path != "/index.html" else "/timelines/all"
        for kind, media_type in FEED_TYPES.items():
            assert alternates[media_type] == f"{base}{stem}.{kind}", path
        # every link into our own site leads to a published document
        for href in page.xpath("//a/@href|//link/@href"):
            if href.startswith(base):
                target = urlsplit(href).path
                assert target in documents or target == "/", (path, href)


def test_timeline_pages_chart_their_reports(run: tuple[str, dict[str, bytes]]) -> None:
    _, documents = run
    page = lxml.html.fromstring(documents["/timelines/kursk.html"])
    assert page.xpath("//figure/svg[@class='chart']/rect")
    assert page.xpath("//section[@class='day']/p[@class='day-meta']")
    index = lxml.html.fromstring(documents["/index.html"])
    assert len(index.xpath("//svg[@class='spark']")) == len(index.xpath("//ol/li"))


# --- Advisories -------------------------------------------------------------------------


def advisories(base: str, documents: dict[str, bytes]) -> list[str]:
    """What the validator would warn about, without making the feed invalid."""
    found = []
    for path, body in [*of_kind(documents, ".atom"), *of_kind(documents, ".rss")]:
        parsed = feedparser.parse(body)
        for entry in parsed.entries:
            if re.search(r"<[a-zA-Z/][^>]*>", entry.get("title", "")):
                found.append(f"{path}: title contains HTML markup: {entry.title[:60]!r}")
            for href in re.findall(r'(?:href|src)="([^"]*)"', entry.get("summary", "")):
                if not urlsplit(href).scheme:
                    found.append(f"{path}: summary has a relative URL {href!r}")
            if re.search(r"\sstyle=", entry.get("summary", "")):
                found.append(f"{path}: summary carries style attributes")
    for path, body in of_kind(documents, ".atom"):
        for text in etree.fromstring(body).iter(f"{ATOM}id"):
            parts = urlsplit(text.text or "")
            if parts.scheme in ("http", "https") and (
                parts.netloc != parts.netloc.lower() or not parts.path
            ):
                found.append(f"{path}: identifier {text.text} is not in canonical form")
    return sorted(set(found))


def test_advisories_are_reported(run: tuple[str, dict[str, bytes]]) -> None:
    base, documents = run
    for advisory in advisories(base, documents):
        warnings.warn(advisory, FeedWarning, stacklevel=1)
    # and the advisory checks do see what they look for
    kursk = documents["/timelines/kursk.atom"]
    marked = re.sub(rb"<title>", b"<title>&lt;b&gt;Breaking&lt;/b&gt; ", kursk, count=2)
    relative = kursk.replace(b"&lt;p&gt;", b'&lt;a href="/x"&gt;x&lt;/a&gt;&lt;p&gt;', 1)
    found = advisories(base, {"/a.atom": marked, "/b.atom": relative})
    assert any("title contains HTML markup" in a for a in found)
    assert any("relative URL '/x'" in a for a in found)


def test_dates_are_plausible(run: tuple[str, dict[str, bytes]]) -> None:
    # The validator flags implausible dates; the demo's are all inside its simulated week.
    _, documents = run
    for path, body in of_kind(documents, ".atom"):
        for stamp in etree.fromstring(body).iter(f"{ATOM}published"):
            moment = datetime.fromisoformat(stamp.text or "")
            assert 2024 <= moment.year <= 2026, (path, stamp.text)
