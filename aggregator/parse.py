"""Parse stage: turn a fetched body and its headers into a ParsedFeed of EntryData.

Second stage (fetch -> parse -> store). RSS and Atom go through feedparser, handed
bytes only so that it never fetches anything (aggregator.rawxml cleans them first);
JSON Feed is read here. HTML that leaves this module is sanitised, every string is free
of XML-illegal characters, and every value is within the caps of aggregator.bounds.
"""

from __future__ import annotations

import codecs
import hashlib
import html
import io
import json
import re
import unicodedata
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from functools import partial
from html.parser import HTMLParser
from typing import Any
from urllib.parse import urljoin, urlsplit
from xml.sax import SAXParseException

import feedparser
import nh3

from aggregator import bounds, rawxml
from aggregator.errors import ParseError
from aggregator.types import EntryData, ParsedFeed

MAX_TEXT_CHARS = 5000
URL_SCHEMES = frozenset({"http", "https", "mailto"})

# Characters XML 1.0 forbids; feeds we republish must not carry them.
_XML_ILLEGAL = re.compile("[\x00-\x08\x0b\x0c\x0e-\x1f\ud800-\udfff\ufffe\uffff]")
# Characters nh3 rewrites even in text without tags: it escapes "&", ">" and no-break
# spaces, turns carriage returns into newlines and drops a leading byte order mark.
_SANITISER_REWRITES = re.compile("[<>&\r\xa0\ufeff]")
_HTML_START = re.compile(rb"<(!doctype\s+html|html[\s>]|head[\s>]|body[\s>])", re.IGNORECASE)
# In sanitised HTML every "<" starts a tag and attribute values are double-quoted, so a
# tag is matched without backtracking; block-level tags stand for a space in the text.
# Outside quotes a tag stops at the next "<", so even "<a <a <a" unsanitised is linear.
_BLOCKS = frozenset(
    "address article aside blockquote br dd div dl dt figcaption figure footer h1 h2 h3 "  # noqa: SIM905
    "h4 h5 h6 header hr li main nav ol p pre section table td th tr ul".split()
)
_SANITISED_TAG = re.compile(r'<[^<>"]*+(?:"[^"]*+"[^<>"]*+)*+>')
_BLOCK_NAMES = "|".join(sorted(_BLOCKS))
_SANITISED_BLOCK_TAG = re.compile(
    rf'</?(?:{_BLOCK_NAMES})(?=[\s/>])[^<>"]*+(?:"[^"]*+"[^<>"]*+)*+>'
)
_TEXT_ONLY_CONTENT = {"script", "style", "template", "noscript"}
# HTML of a title is read this far at most: markup may take room, text beyond is cut.
_TITLE_HTML_CHARS = 8 * bounds.MAX_TITLE_CHARS

# Bozo reasons that say nothing about the feed's structure.
_HARMLESS_BOZO = (feedparser.CharacterEncodingOverride, feedparser.NonXMLContentType)


@dataclass(frozen=True)
class _RawEntry:
    """An entry as read from the document, before links, HTML and text are settled."""

    id: str | None
    title: str  # plain text
    link: str | None  # possibly relative
    html: str  # the richest body, as HTML, not yet sanitised
    author: str | None
    published: datetime | None
    updated: datetime | None
    language: str | None = None
    html_base: str | None = None  # the xml:base in effect for `html`


@dataclass(frozen=True)
class _RawFeed:
    title: str | None
    link: str | None
    language: str | None
    ttl_minutes: int | None
    entries: tuple[_RawEntry, ...]
    defect: str | None = None  # what is malformed, when entries were read anyway


def parse_feed(
    body: bytes,
    headers: Mapping[str, str],
    *,
    url: str,
    source: str | None = None,
    fetched_at: datetime | None = None,
) -> ParsedFeed:
    """Read RSS 0.9x/1.0/2.0, Atom 0.3/1.0 or JSON Feed 1.x into a ParsedFeed.

    Raises ParseError with code "empty", "not_a_feed" or "malformed" when the body
    cannot be used, and no other exception. A feed that is a little broken but still
    yields entries is kept. Entries with the same key appear once, the first occurrence
    winning. Relative links resolve against the Content-Location header when there is
    one, else against `url`. Dates outside the range of aggregator.bounds become
    `fetched_at` (default: now).
    """
    if not body.strip():
        raise _error("empty", "the server sent an empty body; check the source's url", url, source)
    if _looks_like_json(body):
        raw = _read_json_feed(body, url, source)
    else:
        raw = _read_xml_feed(body, headers, url, source)
    return _assemble(raw, _base_url(headers, url), fetched_at or datetime.now(UTC))


def _base_url(headers: Mapping[str, str], url: str) -> str:
    """Where the document says it lives (Content-Location, RFC 9110), else where it came from."""
    location = next((v for k, v in headers.items() if k.lower() == "content-location"), None)
    return _http_link(location, url) or url


# --- RSS and Atom, through feedparser -------------------------------------------------


def _read_xml_feed(
    body: bytes, headers: Mapping[str, str], url: str, source: str | None
) -> _RawFeed:
    # No Content-Location: feedparser would resolve relative guids against it, and an
    # entry's identity must not change when the same feed is served from another URL.
    # Relative links are resolved later, against the entry link or the document's base.
    response_headers = {
        name.lower(): value for name, value in headers.items() if name.lower() != "content-location"
    }
    rawxml.drop_misleading_charset(response_headers, body)
    body = rawxml.utf8_as_labelled(response_headers, body)
    try:
        parsed = feedparser.parse(
            io.BytesIO(rawxml.cleaned(body)),
            response_headers=response_headers,
            sanitize_html=False,  # nh3 sanitises each entry later, once, with our own rules
            # nh3 resolves links in HTML later, against the body's xml:base (which
            # feedparser reports), the entry link or the document's base: feedparser's
            # own resolver re-parses every body in Python, at several times the cost.
            resolve_relative_uris=False,
        )
    except Exception as exc:  # feedparser's own failures, translated at this boundary
        message = (
            f"the feed could not be read ({type(exc).__name__}: {str(exc)[:200]}); "
            "tell the publisher"
        )
        raise _error("malformed", message, url, source) from exc
    _check_parsed(parsed, body, response_headers.get("content-type", ""), url, source)
    feed = parsed.get("feed", {})
    problem = parsed.get("bozo_exception") if parsed.get("bozo") else None
    return _RawFeed(
        title=_detail_text(feed.get("title"), feed.get("title_detail")) or None,
        link=feed.get("link"),
        language=_language(feed.get("language")),
        ttl_minutes=_ttl(feed.get("ttl")),
        entries=tuple(_xml_entry(entry) for entry in parsed.get("entries", [])),
        defect=None if problem is None or isinstance(problem, _HARMLESS_BOZO) else _where(problem),
    )


def _where(problem: Exception) -> str:
    """An XML parser's complaint with its line and column ("line 1, column 151: no
    element found"), else as the exception words it."""
    if isinstance(problem, SAXParseException):
        line, column = problem.getLineNumber(), problem.getColumnNumber()
        return f"line {line}, column {column}: {problem.getMessage()}"
    return str(problem)


def _check_parsed(
    parsed: Any, body: bytes, content_type: str, url: str, source: str | None
) -> None:
    if any(_has_substance(entry) for entry in parsed.get("entries", [])):
        return  # entries were found, so whatever made it bozo did not hide them
    if parsed.get("version"):
        problem = parsed.get("bozo_exception") if parsed.get("bozo") else None
        if problem is None or isinstance(problem, _HARMLESS_BOZO):
            return  # a well-formed feed that has no entries yet
        message = (
            f"the feed is broken and no entries could be read ({problem}); "
            "tell the publisher, or wait for the feed to be fixed"
        )
        raise _error("malformed", message, url, source)
    raise _not_a_feed(body, content_type, url, source)


def _has_substance(entry: Any) -> bool:
    return any(entry.get(name) for name in ("id", "title", "link", "summary", "content"))


def _xml_entry(entry: Any) -> _RawEntry:
    # Plain dict look-ups: FeedParserDict.get maps and derives keys in Python, none of
    # them these, and for "updated_parsed" it would quietly answer with the published date.
    get = partial(dict.get, entry)
    author = _name_of_author((get("author_detail") or {}).get("name") or get("author"))
    details = [*(get("content") or ()), {**(get("summary_detail") or {}), "value": get("summary")}]
    html, html_base = _richest(
        (detail.get("value"), "plain" not in (detail.get("type") or "html"), detail.get("base"))
        for detail in details
    )
    raw_title = _text(get("title"))
    title = _detail_text(raw_title, get("title_detail"))
    if not (title or html):
        # A title that is only markup (an <img>) is the entry's one content: keep it
        # as the body, sanitised like any other, so the entry is not dropped as empty.
        html = raw_title[:_TITLE_HTML_CHARS]
    # Atom's <content src="..."/> names the content's address: a link when none is given.
    content_src = [detail.get("src") for detail in get("content") or () if detail.get("src")]
    link = get("link")
    if link and not get("links") and not _is_absolute(link):
        # No link element: feedparser offers the item's id as its link. An id such as
        # "12345" or "post-42" names the entry, not a page, and is no link at all.
        link = None
    return _RawEntry(
        id=get("id"),
        title=title,
        link=link or next(iter(content_src), None),
        html=html,
        html_base=html_base or None,
        author=author,
        published=_struct_utc(get("published_parsed")),
        updated=_struct_utc(get("updated_parsed")),
    )


def _name_of_author(author: str | None) -> str | None:
    """RSS writes "mail@example.com (Name)"; keep the name."""
    if not author:
        return author
    address, bracket, rest = author[: 2 * bounds.MAX_AUTHOR_CHARS].partition("(")
    name = rest.rstrip()
    if bracket and name.endswith(")") and "@" in address and len(address.split()) == 1:
        return name[:-1] if name[:-1].strip() else author
    return author


def _detail_text(value: str | None, detail: Mapping[str, Any] | None) -> str:
    if not value:
        return ""
    kind = (detail or {}).get("type") or "text/plain"
    return _title_text(value, is_html="html" in kind)


def _title_text(value: str, *, is_html: bool) -> str:
    """A title as plain text within MAX_TITLE_CHARS; a 14 MB title is cut before any work."""
    cut = len(value) > _TITLE_HTML_CHARS
    value = value[:_TITLE_HTML_CHARS]
    if is_html:
        value, _ = bounds.html_prefix(value, _TITLE_HTML_CHARS)
        text = _html_text(_sanitised_to_text(value))
    else:
        text = _clean(_collapse(value))
    return bounds.capped(text, bounds.MAX_TITLE_CHARS, was_cut=cut)


def _struct_utc(value: Any) -> datetime | None:
    # feedparser gives time.struct_time already converted to UTC.
    if value is None:
        return None
    try:
        year, month, day, hour, minute, second = value[:6]
        return datetime(year, month, day, hour, minute, second, tzinfo=UTC)
    except (TypeError, ValueError):
        return None


def _ttl(value: Any) -> int | None:
    # ASCII digits only ("²" is a digit to str.isdigit), and few enough to be a real ttl.
    text = str(value or "").strip()[:16]
    if not (text.isascii() and text.isdigit() and len(text) <= 7):
        return None
    return int(text) or None


# --- JSON Feed -----------------------------------------------------------------------


def _looks_like_json(body: bytes) -> bool:
    if body.startswith(codecs.BOM_UTF8):
        body = body[len(codecs.BOM_UTF8) :]
    return body.lstrip()[:1] == b"{"


def _read_json_feed(body: bytes, url: str, source: str | None) -> _RawFeed:
    try:
        document = json.loads(body, parse_int=_json_int)
    except (ValueError, RecursionError) as exc:
        message = f"the body starts like JSON but is not valid JSON ({exc}); tell the publisher"
        raise _error("malformed", message, url, source) from exc
    if not isinstance(document, dict) or not _is_json_feed(document):
        message = (
            "the body is JSON but not a JSON Feed (it needs a jsonfeed.org version and a list "
            "of items); check the source's url"
        )
        raise _error("not_a_feed", message, url, source)
    feed_author = _json_author(document)
    return _RawFeed(
        title=_title_text(_text(document.get("title")), is_html=False) or None,
        link=_text(document.get("home_page_url")) or None,
        language=_language(document.get("language")),
        ttl_minutes=None,
        entries=tuple(
            _json_entry(item, feed_author) for item in document["items"] if isinstance(item, dict)
        ),
    )


def _json_int(digits: str) -> int | str:
    # Python refuses to convert integers of more than 4,300 digits, and one such number
    # in one item must not cost the whole feed; no real value is that long anyway.
    return int(digits) if len(digits) <= 100 else digits


def _is_json_feed(document: Mapping[str, Any]) -> bool:
    version = _text(document.get("version"))
    # The spec requires the version; a document with items but none is still given a chance.
    known = version == "" or "jsonfeed.org/version/" in version
    return known and isinstance(document.get("items"), list)


def _json_entry(item: dict[str, Any], feed_author: str | None) -> _RawEntry:
    raw_id = item.get("id")
    # The spec wants a string, but numbers are common in the wild.
    entry_id = (
        str(raw_id) if isinstance(raw_id, str | int) and not isinstance(raw_id, bool) else None
    )
    bodies = [
        (_text(item.get("content_html")), True, None),
        (_text(item.get("content_text")), False, None),
        (_text(item.get("summary")), False, None),
    ]
    return _RawEntry(
        id=entry_id,
        title=_title_text(_text(item.get("title")), is_html=False),
        link=_text(item.get("url")) or _text(item.get("external_url")) or None,
        html=_richest(bodies)[0],
        author=_json_author(item) or feed_author,
        published=_iso_utc(item.get("date_published")),
        updated=_iso_utc(item.get("date_modified")),
        language=_language(item.get("language")),
    )


def _json_author(document: Mapping[str, Any]) -> str | None:
    # JSON Feed 1.1 has a list of authors, 1.0 a single author.
    authors = document.get("authors")
    candidates = authors if isinstance(authors, list) else [document.get("author")]
    for author in candidates:
        if isinstance(author, dict) and _text(author.get("name")).strip():
            return _text(author["name"])
    return None


def _iso_utc(value: Any) -> datetime | None:
    if not isinstance(value, str):
        return None
    try:
        moment = datetime.fromisoformat(value.strip()[:64])
        return moment.replace(tzinfo=UTC) if moment.tzinfo is None else moment.astimezone(UTC)
    except (ValueError, OverflowError):  # 0001-01-01T00:00:00+14:00 has no UTC value
        return None


def _text(value: Any) -> str:
    return value if isinstance(value, str) else ""


# --- From raw entries to EntryData ---------------------------------------------------


def _assemble(raw: _RawFeed, base: str, fetched_at: datetime) -> ParsedFeed:
    entries: dict[str, EntryData] = {}
    usable_base = _http_link(base, base)
    for raw_entry in raw.entries:
        entry = _entry(raw_entry, base, usable_base, raw.language, fetched_at)
        if entry is not None and entry.key not in entries:
            entries[entry.key] = entry
    return ParsedFeed(
        title=_clean(raw.title or "") or None,
        link=_http_link(raw.link, base),
        language=raw.language,
        ttl_minutes=raw.ttl_minutes,
        entries=tuple(entries.values()),
        defect=raw.defect[:200] if raw.defect else None,
    )


def _entry(
    raw: _RawEntry,
    base: str,
    usable_base: str | None,
    feed_language: str | None,
    fetched_at: datetime,
) -> EntryData | None:
    """Settle one entry's identity, links, HTML, text and dates; None when it carries nothing.

    `usable_base` is `base` if it is a usable http(s) URL, worked out once per feed.
    """
    link = _http_link(raw.link, base)
    title = _clean(raw.title)
    source_html, cut = bounds.html_prefix(_clean(raw.html), bounds.MAX_HTML_CHARS)
    xml_base = _http_link(raw.html_base, base) if raw.html_base else None
    summary_html = _sanitised(source_html, base=xml_base or link or usable_base)
    if cut:
        summary_html += bounds.ELLIPSIS  # after the last closed element: still well-formed
    text = _html_text(summary_html)
    entry_id = _clean(raw.id or "").strip()
    if len(entry_id) > bounds.MAX_KEY_CHARS:
        entry_id = "sha256-id:" + hashlib.sha256(entry_id.encode("utf-8", "replace")).hexdigest()
    # An entry whose only content is markup (an image, an SVG, a title that is an
    # <img>) is still an entry of its feed: kept, identified by that markup.
    substance = (
        text or summary_html.strip() or source_html.strip() or _clean(raw.title or "").strip()
    )
    if not (entry_id or title or link or substance):
        return None
    content_hash = _content_hash(title, substance)
    author = _clean(_collapse((raw.author or "")[: 4 * bounds.MAX_AUTHOR_CHARS]))
    # A sane updated date is better than the fetch time for an entry whose published
    # date is out of range.
    published = (
        bounds.sane_date(raw.published, fetched_at)
        or bounds.sane_date(raw.updated, fetched_at)
        or _dated(raw.published or raw.updated, fetched_at)
    )
    return EntryData(
        key=entry_id or link or f"sha256:{content_hash}",
        title=title,
        link=link,
        summary_html=summary_html,
        text=_capped(text, MAX_TEXT_CHARS),
        author=bounds.capped(author, bounds.MAX_AUTHOR_CHARS) or None,
        published=published,
        updated=_dated(raw.updated, fetched_at),
        content_hash=content_hash,
        language=raw.language or feed_language,
    )


def _dated(moment: datetime | None, fetched_at: datetime) -> datetime | None:
    """A date as given, or the fetch time when it lies outside the sane range.

    This also keeps every stored date far from datetime's limits: clustering subtracts
    hours from them.
    """
    if moment is None:
        return None
    return bounds.sane_date(moment, fetched_at) or fetched_at


def _richest(
    bodies: Iterable[tuple[str | None, bool, str | None]],
) -> tuple[str, str | None]:
    """The longest of an entry's bodies as HTML, and its base URL.

    Each body is (value, is_html, base): `True` marks a body that already is HTML.
    """
    best, best_is_html, best_base = "", True, None
    for value, is_html, base in bodies:
        if value and len(value) > len(best):
            best, best_is_html, best_base = value, is_html, base
    if best_is_html:
        return best, best_base
    # Escaping lengthens text: cut it to the cap first so the escaped copy stays small.
    return html.escape(best[: bounds.MAX_HTML_CHARS + 1]), best_base


def _sanitised(fragment: str, *, base: str | None) -> str:
    if not _SANITISER_REWRITES.search(fragment):
        # No markup and nothing the sanitiser would escape or drop: plain text (or
        # nothing) is its own sanitised form, as nh3 would write it.
        return fragment
    # The HTML parser's work per element grows with its depth: flatten the deep ones first.
    fragment = bounds.shallow(fragment)
    # Relative links are useless once republished: resolve them, or drop them without a base.
    if base:
        try:
            return nh3.clean(
                fragment, url_schemes=set(URL_SCHEMES), url_relative=("rewrite_with_base", base)
            )
        except ValueError:
            pass  # a base Python accepts but the sanitiser does not: treat as no base
    return nh3.clean(fragment, url_schemes=set(URL_SCHEMES), url_relative="deny")


def _sanitised_to_text(fragment: str) -> str:
    """HTML reduced by the sanitiser to block tags and text, ready for _html_text."""
    if not _SANITISER_REWRITES.search(fragment):
        return fragment
    return nh3.clean(
        bounds.shallow(fragment),
        tags=set(_BLOCKS),
        attributes={},
        clean_content_tags=set(_TEXT_ONLY_CONTENT),
        link_rel=None,
    )


def _is_absolute(link: str) -> bool:
    """Whether `link` names its own scheme and host ("https://x.example/a", not "a/b")."""
    try:
        parts = urlsplit(_clean(link).strip())
    except ValueError:
        return False
    return bool(parts.scheme and parts.netloc)


def _http_link(link: str | None, base: str) -> str | None:
    """`link` made absolute against `base`, if it is a usable http(s) URL; else None."""
    if not link or not link.strip() or len(link) > bounds.MAX_LINK_CHARS:
        return None
    try:
        absolute = urljoin(base, _clean(link).strip())
        parts = urlsplit(absolute)
        _ = parts.port  # raises ValueError for a port out of range
    except ValueError:
        return None
    usable = parts.scheme in ("http", "https") and parts.hostname
    if len(absolute) > bounds.MAX_LINK_CHARS:
        return None
    return absolute if usable and not any(c.isspace() for c in parts.netloc) else None


def _content_hash(title: str, text: str) -> str:
    normal = unicodedata.normalize("NFC", f"{_collapse(title)}\n{_collapse(text)}")
    return hashlib.sha256(normal.encode()).hexdigest()


def _language(value: Any) -> str | None:
    if not isinstance(value, str) or len(value) > 4 * bounds.MAX_LANGUAGE_CHARS:
        return None
    language = _clean(value).strip()
    return language if 0 < len(language) <= bounds.MAX_LANGUAGE_CHARS else None


def _clean(value: str) -> str:
    return _XML_ILLEGAL.sub("", value)


def _collapse(value: str) -> str:
    return " ".join(value.split())


def _capped(text: str, limit: int) -> str:
    if len(text) <= limit:
        return text
    cut = text[:limit]
    space = cut.rfind(" ", limit - 200)  # end on a word when one ends near the limit
    return (cut[:space] if space > 0 else cut).rstrip()


def _html_text(fragment: str) -> str:
    """The text of sanitised HTML (nh3's output): a space at block edges, references decoded.

    Only the sanitiser's output is read here: its tags are regular, so two linear
    substitutions take the place of an HTML parser (whose tag search is quadratic on
    "<a <a <a ...").
    """
    if "<" not in fragment and "&" not in fragment:
        return _clean(_collapse(fragment))  # no tags, no references: it is all text
    text = _SANITISED_TAG.sub("", _SANITISED_BLOCK_TAG.sub(" ", fragment))
    return _clean(_collapse(html.unescape(text)))


# --- Telling the operator what the body was instead ----------------------------------


def _not_a_feed(body: bytes, content_type: str, url: str, source: str | None) -> ParseError:
    declared = f" ({content_type})" if content_type else ""
    if "html" in content_type.lower() or _HTML_START.search(body[:4096]):
        feed_link = _alternate_feed_link(body, url)
        hint = (
            f"the page names its feed at {feed_link}: use that as the source's url"
            if feed_link
            else "find the page's RSS or Atom link and use that as the source's url"
        )
        return _error(
            "not_a_feed", f"this is an HTML page{declared}, not a feed; {hint}", url, source
        )
    if _looks_binary(body):
        message = f"the body is binary data{declared}, not a feed; check the source's url"
        return _error("not_a_feed", message, url, source)
    message = f"the body{declared} has no RSS, Atom or JSON Feed structure; check the source's url"
    return _error("not_a_feed", message, url, source)


def _looks_binary(body: bytes) -> bool:
    sample = body[:512]
    controls = sum(1 for byte in sample if byte < 0x20 and byte not in b"\t\n\r\f\x1b")
    return b"\x00" in sample or controls > len(sample) // 20


class _FeedLinkFinder(HTMLParser):
    """Finds the first <link rel="alternate"> to a feed in an HTML page."""

    _FEED_TYPES = frozenset(
        {"application/rss+xml", "application/atom+xml", "application/feed+json", "application/json"}
    )

    def __init__(self) -> None:
        super().__init__(convert_charrefs=True)
        self.href: str | None = None

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        if tag != "link" or self.href is not None:
            return
        found = {name: (value or "") for name, value in attrs}
        rels = found.get("rel", "").lower().split()
        if "alternate" in rels and found.get("type", "").lower() in self._FEED_TYPES:
            self.href = found.get("href") or None


def _alternate_feed_link(body: bytes, url: str) -> str | None:
    finder = _FeedLinkFinder()
    finder.feed(body[:262_144].decode("utf-8", "replace"))
    return _http_link(finder.href, url)


def _error(code: str, message: str, url: str, source: str | None) -> ParseError:
    return ParseError(message, url=url, source=source, code=code)
