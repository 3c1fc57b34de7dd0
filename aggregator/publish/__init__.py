"""Publish stage: TimelineDoc -> Atom, RSS, JSON Feed (feeds.py) and HTML pages (pages.py).

This module holds what every published document shares: the URLs of a timeline's
documents and the cleaning applied to every string before rendering.
"""

from __future__ import annotations

import hashlib
import re
from datetime import UTC, datetime
from html import escape
from typing import NamedTuple
from urllib.parse import quote, urljoin, urlsplit

import nh3

from aggregator.settings import PublishSettings
from aggregator.types import TimelineDoc, TimelineItem

# The all-stories feed is a TimelineDoc like any other, published under this slug.
ALL_STORIES_SLUG = "all"
INDEX_PATH = "/index.html"
OPML_PATH = "/timelines.opml"

# Titles of 10,000 characters are legal in feeds but unreadable in every reader.
MAX_TITLE_CHARS = 300
_DESCRIPTION_OUTLETS = 10  # outlets a description names before "and N more"

# Outside XML 1.0's Char production (C0 controls, lone surrogates, U+FFFE/U+FFFF),
# plus DEL and C1 controls, which XML allows but discourages and HTML forbids.
_UNSAFE_CHARS = re.compile("[^\t\n\r\x20-\x7e\xa0-\ud7ff\ue000-\ufffd\U00010000-\U0010ffff]")
_URL_SAFE = ":/?#[]@!$&'()*+,;=%~"
_LINK_REL = "noopener noreferrer nofollow"  # on links into outlets' sites
_LANGUAGE_TAG = re.compile(r"[A-Za-z]{2,8}(-[A-Za-z0-9]{1,8})*")


class TimelineLinks(NamedTuple):
    """Absolute URLs of the four documents published for one timeline."""

    atom: str
    rss: str
    json: str
    html: str


def timeline_links(slug: str, settings: PublishSettings) -> TimelineLinks:
    stem = f"{settings.base_url.rstrip('/')}/timelines/{quote(slug, safe='')}"
    return TimelineLinks(f"{stem}.atom", f"{stem}.rss", f"{stem}.json", f"{stem}.html")


def site_url(path: str, settings: PublishSettings) -> str:
    return settings.base_url.rstrip("/") + path


def clean_text(text: str | None) -> str:
    """Drop characters XML cannot carry; lxml refuses them and readers choke on them."""
    return _UNSAFE_CHARS.sub("", text or "")


def one_line(text: str | None, limit: int = MAX_TITLE_CHARS) -> str:
    """Clean text for titles and names: one line, whitespace collapsed, clipped."""
    line = " ".join(clean_text(text).split())
    if len(line) > limit:
        line = line[: limit - 1].rstrip() + "…"
    return line


def safe_url(url: str | None) -> str | None:
    """The URL if it is absolute http(s), percent-encoded where needed; else None."""
    if not url:
        return None
    url = clean_text(url).strip()
    try:
        parts = urlsplit(url)
    except ValueError:
        return None
    if parts.scheme.lower() not in ("http", "https") or not parts.netloc:
        return None
    return quote(url, safe=_URL_SAFE)


def language_tag(language: str | None) -> str | None:
    """A BCP 47-shaped tag, or None: the value lands in lang and xml:lang attributes."""
    if language and _LANGUAGE_TAG.fullmatch(language.strip()):
        return language.strip()
    return None


def utc(moment: datetime) -> datetime:
    """Aware UTC; naive times are taken as UTC, which every stage stores."""
    if moment.tzinfo is None:
        return moment.replace(tzinfo=UTC)
    return moment.astimezone(UTC)


def rfc3339(moment: datetime) -> str:
    return utc(moment).isoformat(timespec="seconds").replace("+00:00", "Z")


def clean_html(html: str, base_url: str | None = None) -> str:
    """Sanitise HTML again before publishing (the parse stage did it first).

    Relative links are resolved against the original article, since a reader
    would otherwise resolve them against our feed's URL.
    """

    def resolve(url: str) -> str | None:
        return urljoin(base_url, url) if base_url else None

    return nh3.clean(
        clean_text(html),
        url_schemes={"http", "https", "mailto"},
        url_relative=resolve,
        link_rel=_LINK_REL,
    )


def entry_anchor(item: TimelineItem) -> str:
    """A fragment id for the item on its timeline page, stable across republishing."""
    return "r-" + hashlib.sha256(item.id.encode("utf-8", "replace")).hexdigest()[:12]


def item_link(item: TimelineItem, links: TimelineLinks) -> str:
    """The original article, or the item on our page when its link is not http(s)."""
    return safe_url(item.link) or f"{links.html}#{entry_anchor(item)}"


def outlet_name(item: TimelineItem) -> str:
    return one_line(item.outlet) or "Unknown outlet"


def item_updated(item: TimelineItem) -> datetime:
    """When the item last changed, never before it was published (readers sort by it)."""
    return max(utc(item.updated), utc(item.published))


def also_reported(item: TimelineItem) -> list[tuple[str, str | None]]:
    """(outlet, safe link or None) of each merged duplicate, in order."""
    return [(one_line(outlet), safe_url(link)) for outlet, link in item.also]


def item_html(item: TimelineItem) -> str:
    """The summary as feeds carry it: sanitised, then the merged duplicates appended."""
    summary = clean_html(item.summary_html, safe_url(item.link))
    also = also_reported(item)
    if also:
        summary += "<p>Also reported by: " + ", ".join(_also_link(o, u) for o, u in also) + "</p>"
    return summary


def _also_link(outlet: str, url: str | None) -> str:
    if url is None:
        return escape(outlet)
    return f'<a href="{escape(url)}" rel="{_LINK_REL}">{escape(outlet)}</a>'


def feed_description(doc: TimelineDoc) -> str:
    """doc.description, then the outlets; RSS requires a description, so never empty."""
    title = one_line(doc.title) or "one story"
    text = one_line(doc.description, 1000) or f"A timeline of reports on {title}."
    outlets = [name for name in (one_line(s) for s in doc.sources) if name]
    if outlets:
        named = ", ".join(outlets[:_DESCRIPTION_OUTLETS])
        more = len(outlets) - _DESCRIPTION_OUTLETS
        text += f" Reported by {named}" + (f" and {more} more." if more > 0 else ".")
    return text
