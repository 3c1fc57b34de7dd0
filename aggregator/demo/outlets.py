"""The demo's outlets and articles, and each outlet's feed as it stood at a simulated moment.

`load_demo` reads the bundled JSON (fictional outlets, invented wording); `render_feed` writes
one outlet's RSS 2.0, Atom 1.0, RSS 1.0 or JSON Feed 1.1 document; `SimClock` is the demo's time.
"""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from email.utils import format_datetime
from functools import cache
from importlib import resources
from typing import Any, Literal, cast, get_args

from lxml import etree

FeedFormat = Literal["rss2", "atom", "rdf", "jsonfeed"]
FEED_FORMATS: tuple[FeedFormat, ...] = get_args(FeedFormat)
CONTENT_TYPES: dict[FeedFormat, str] = {
    "rss2": "application/rss+xml; charset=utf-8",
    "atom": "application/atom+xml; charset=utf-8",
    "rdf": "application/rdf+xml; charset=utf-8",
    "jsonfeed": "application/feed+json; charset=utf-8",
}
MAX_ITEMS = 30  # like most real outlets, a feed shows only its newest items
CONTENT_FILE = "articles.json"

ATOM_NS = "http://www.w3.org/2005/Atom"
RDF_NS = "http://www.w3.org/1999/02/22-rdf-syntax-ns#"
RSS1_NS = "http://purl.org/rss/1.0/"
DC_NS = "http://purl.org/dc/elements/1.1/"
XML_LANG = "{http://www.w3.org/XML/1998/namespace}lang"
EPOCH = datetime(1970, 1, 1, tzinfo=UTC)


@dataclass(frozen=True)
class Outlet:
    slug: str  # path segment of the outlet's feed on the demo server
    name: str
    site_url: str
    language: str  # en, uk or ru
    format: FeedFormat
    description: str


@dataclass(frozen=True)
class Article:
    outlet: str  # slug of the outlet that published it
    id: str  # guid / entry id as the outlet's feed gives it
    published: datetime  # aware, UTC
    title: str
    summary: str  # HTML
    link: str
    event: str  # gold label for tests and evaluation; the pipeline never reads it
    copy_of: str | None = None  # gold label: id of the wire story this reposts verbatim


@dataclass(frozen=True)
class Demo:
    start: datetime
    end: datetime
    outlets: tuple[Outlet, ...]
    articles: tuple[Article, ...]  # oldest first

    def outlet(self, slug: str) -> Outlet:
        for outlet in self.outlets:
            if outlet.slug == slug:
                return outlet
        raise KeyError(slug)

    def visible(self, slug: str, at: datetime) -> tuple[Article, ...]:
        """The outlet's articles published at or before `at`, oldest first."""
        return tuple(a for a in self.articles if a.outlet == slug and a.published <= at)


@cache
def load_demo() -> Demo:
    """Read the bundled content; raise ValueError naming the item if it is inconsistent."""
    text = resources.files("aggregator.demo").joinpath(CONTENT_FILE).read_text(encoding="utf-8")
    return _build_demo(json.loads(text))


def feed_url(base_url: str, slug: str) -> str:
    return f"{base_url.rstrip('/')}/{slug}/feed"


def demo_sources(base_url: str) -> list[tuple[str, str, str]]:
    """(name, feed URL, language) of every demo outlet served at `base_url`."""
    return [(o.name, feed_url(base_url, o.slug), o.language) for o in load_demo().outlets]


def _build_demo(doc: dict[str, Any]) -> Demo:
    start = _parse_time(doc["period"]["start"])
    end = _parse_time(doc["period"]["end"])
    outlets = tuple(_parse_outlet(item) for item in doc["outlets"])
    slugs = {o.slug for o in outlets}
    articles = tuple(
        sorted((_parse_article(item) for item in doc["articles"]), key=lambda a: a.published)
    )
    seen: set[str] = set()
    for article in articles:
        if article.outlet not in slugs:
            raise ValueError(f"demo article {article.id!r}: unknown outlet {article.outlet!r}")
        if not start <= article.published < end:
            raise ValueError(f"demo article {article.id!r}: published outside the demo period")
        if article.id in seen:
            raise ValueError(f"demo article {article.id!r}: duplicate id")
        seen.add(article.id)
    return Demo(start=start, end=end, outlets=outlets, articles=articles)


def _parse_outlet(item: dict[str, Any]) -> Outlet:
    if item["format"] not in FEED_FORMATS:
        raise ValueError(f"demo outlet {item['slug']!r}: unknown format {item['format']!r}")
    return Outlet(
        slug=item["slug"],
        name=item["name"],
        site_url=item["site_url"],
        language=item["language"],
        format=cast(FeedFormat, item["format"]),
        description=item["description"],
    )


def _parse_article(item: dict[str, Any]) -> Article:
    return Article(
        outlet=item["outlet"],
        id=item["id"],
        published=_parse_time(item["published"]),
        title=item["title"],
        summary=item["summary"],
        link=item["link"],
        event=item["event"],
        copy_of=item.get("copy_of"),
    )


def _parse_time(value: str) -> datetime:
    parsed = datetime.fromisoformat(value)
    if parsed.tzinfo is None:
        raise ValueError(f"demo time {value!r} has no time zone")
    return parsed.astimezone(UTC)


# --- rendering -----------------------------------------------------------------------------


def render_feed(
    outlet: Outlet,
    articles_visible: Sequence[Article],
    *,
    base_url: str,
    updated: datetime | None = None,
) -> tuple[bytes, str]:
    """The outlet's feed document and its content type: newest first, at most MAX_ITEMS.

    The feed's own date is its newest item's, so the bytes change only when an item does;
    `updated` stands in when no article is visible yet (default: the Unix epoch).
    """
    items = sorted(articles_visible, key=lambda a: (a.published, a.id), reverse=True)[:MAX_ITEMS]
    stamp = items[0].published if items else (updated or EPOCH)
    body = _RENDERERS[outlet.format](outlet, items, feed_url(base_url, outlet.slug), stamp)
    return body, CONTENT_TYPES[outlet.format]


def _add(parent: Any, tag: str, text: str | None = None, **attrib: str) -> Any:
    element = etree.SubElement(parent, tag, attrib)
    if text is not None:
        element.text = text
    return element


def _xml(root: Any) -> bytes:
    return cast(
        bytes, etree.tostring(root, xml_declaration=True, encoding="utf-8", pretty_print=True)
    )


def _rfc822(moment: datetime) -> str:
    return format_datetime(moment.astimezone(UTC), usegmt=True)


def _rfc3339(moment: datetime) -> str:
    return moment.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def _rss2(outlet: Outlet, items: Sequence[Article], self_url: str, stamp: datetime) -> bytes:
    rss = etree.Element("rss", {"version": "2.0"}, nsmap={"atom": ATOM_NS})
    channel = _add(rss, "channel")
    _add(channel, "title", outlet.name)
    _add(channel, "link", outlet.site_url)
    _add(channel, "description", outlet.description)
    _add(channel, "language", outlet.language)
    _add(channel, "lastBuildDate", _rfc822(stamp))
    _add(channel, f"{{{ATOM_NS}}}link", href=self_url, rel="self", type="application/rss+xml")
    for article in items:
        item = _add(channel, "item")
        _add(item, "title", article.title)
        _add(item, "link", article.link)
        permalink = "true" if article.id.startswith("http") else "false"
        _add(item, "guid", article.id, isPermaLink=permalink)
        _add(item, "pubDate", _rfc822(article.published))
        _add(item, "description", article.summary)
    return _xml(rss)


def _atom(outlet: Outlet, items: Sequence[Article], self_url: str, stamp: datetime) -> bytes:
    atom = f"{{{ATOM_NS}}}"
    feed = etree.Element(f"{atom}feed", {XML_LANG: outlet.language}, nsmap={None: ATOM_NS})
    _add(feed, f"{atom}id", outlet.site_url)
    _add(feed, f"{atom}title", outlet.name)
    _add(feed, f"{atom}subtitle", outlet.description)
    _add(feed, f"{atom}updated", _rfc3339(stamp))
    _add(feed, f"{atom}link", rel="alternate", type="text/html", href=outlet.site_url)
    _add(feed, f"{atom}link", rel="self", type="application/atom+xml", href=self_url)
    author = _add(feed, f"{atom}author")
    _add(author, f"{atom}name", outlet.name)
    for article in items:
        entry = _add(feed, f"{atom}entry")
        _add(entry, f"{atom}id", article.id)
        _add(entry, f"{atom}title", article.title)
        _add(entry, f"{atom}link", rel="alternate", type="text/html", href=article.link)
        _add(entry, f"{atom}published", _rfc3339(article.published))
        _add(entry, f"{atom}updated", _rfc3339(article.published))
        _add(entry, f"{atom}summary", article.summary, type="html")
    return _xml(feed)


def _rdf(outlet: Outlet, items: Sequence[Article], self_url: str, stamp: datetime) -> bytes:
    rss, dc, about = f"{{{RSS1_NS}}}", f"{{{DC_NS}}}", f"{{{RDF_NS}}}about"
    root = etree.Element(f"{{{RDF_NS}}}RDF", nsmap={None: RSS1_NS, "rdf": RDF_NS, "dc": DC_NS})
    channel = _add(root, f"{rss}channel", **{about: self_url})
    _add(channel, f"{rss}title", outlet.name)
    _add(channel, f"{rss}link", outlet.site_url)
    _add(channel, f"{rss}description", outlet.description)
    _add(channel, f"{dc}language", outlet.language)
    _add(channel, f"{dc}date", _rfc3339(stamp))
    sequence = _add(_add(channel, f"{rss}items"), f"{{{RDF_NS}}}Seq")
    for article in items:
        _add(sequence, f"{{{RDF_NS}}}li", **{f"{{{RDF_NS}}}resource": article.link})
    for article in items:
        item = _add(root, f"{rss}item", **{about: article.link})
        _add(item, f"{rss}title", article.title)
        _add(item, f"{rss}link", article.link)
        _add(item, f"{rss}description", article.summary)
        _add(item, f"{dc}date", _rfc3339(article.published))
        _add(item, f"{dc}identifier", article.id)
    return _xml(root)


def _jsonfeed(outlet: Outlet, items: Sequence[Article], self_url: str, stamp: datetime) -> bytes:
    doc = {
        "version": "https://jsonfeed.org/version/1.1",
        "title": outlet.name,
        "home_page_url": outlet.site_url,
        "feed_url": self_url,
        "description": outlet.description,
        "language": outlet.language,
        "authors": [{"name": outlet.name}],
        "items": [
            {
                "id": article.id,
                "url": article.link,
                "title": article.title,
                "content_html": article.summary,
                "date_published": _rfc3339(article.published),
            }
            for article in items
        ],
    }
    return json.dumps(doc, ensure_ascii=False, indent=2).encode("utf-8")


_RENDERERS: dict[FeedFormat, Callable[[Outlet, Sequence[Article], str, datetime], bytes]] = {
    "rss2": _rss2,
    "atom": _atom,
    "rdf": _rdf,
    "jsonfeed": _jsonfeed,
}


# --- simulated time ------------------------------------------------------------------------


class SimClock:
    """The demo's simulated time, between `start` and `end`.

    A running clock advances one simulated day every `seconds_per_day` real seconds from
    `real_start` (a `time.time()` value, default now). A manual clock (`SimClock.manual`)
    stays where `set` or `advance_to` put it. Either way `now()` is clamped to the period.
    """

    def __init__(
        self,
        start: datetime,
        end: datetime,
        seconds_per_day: float,
        real_start: float | None = None,
        *,
        timer: Callable[[], float] = time.time,
    ) -> None:
        _require_aware(start, "start")
        _require_aware(end, "end")
        if end <= start:
            raise ValueError("the demo clock's end must come after its start")
        if seconds_per_day <= 0:
            raise ValueError("seconds_per_day must be positive")
        self.start = start
        self.end = end
        self.seconds_per_day = seconds_per_day
        self._timer = timer
        self._real_start = timer() if real_start is None else real_start
        self._manual: datetime | None = None
        self._lock = threading.Lock()

    @classmethod
    def manual(cls, start: datetime, end: datetime) -> SimClock:
        """A clock that stands at `start` until moved by `set` or `advance_to`."""
        clock = cls(start, end, seconds_per_day=86400.0)
        clock._manual = start
        return clock

    @property
    def is_manual(self) -> bool:
        return self._manual is not None

    @property
    def finished(self) -> bool:
        return self.now() >= self.end

    def now(self) -> datetime:
        with self._lock:
            if self._manual is not None:
                return self._manual
            elapsed = self._timer() - self._real_start
        return self._clamp(self.start + timedelta(days=elapsed / self.seconds_per_day))

    def set(self, moment: datetime) -> datetime:
        """Jump to `moment` (clamped to the period); a running clock keeps running from there."""
        _require_aware(moment, "moment")
        moment = self._clamp(moment)
        with self._lock:
            if self._manual is not None:
                self._manual = moment
            else:
                days = (moment - self.start) / timedelta(days=1)
                self._real_start = self._timer() - days * self.seconds_per_day
        return moment

    def advance_to(self, moment: datetime) -> datetime:
        """Move forward to `moment`; a moment already passed leaves the clock where it is."""
        return self.set(max(self.now(), moment))

    def _clamp(self, moment: datetime) -> datetime:
        return min(max(moment, self.start), self.end)


def _require_aware(moment: datetime, name: str) -> None:
    if moment.tzinfo is None:
        raise ValueError(f"{name} must be a time-zone-aware datetime")
