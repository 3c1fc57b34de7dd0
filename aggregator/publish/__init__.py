"""Publish stage: TimelineDoc -> Atom, RSS, JSON Feed (feeds.py) and HTML pages (pages.py).

This module holds what every published document shares: the URLs of a timeline's
documents and the cleaning applied to every string before rendering.
"""

from __future__ import annotations

import hashlib
import re
from datetime import UTC, datetime
from html import escape
from html import unescape as html_unescape
from typing import NamedTuple
from urllib.parse import quote, urljoin, urlsplit

import nh3

from aggregator.dedupe import untracked_url
from aggregator.settings import PublishSettings
from aggregator.types import ReportLine, TimelineDoc, TimelineItem

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
_TAG_LIKE = re.compile(r"<[A-Za-z/!?][^<>]*>?")  # linear: a run stops at the next < or >
_LANGUAGE_TAG = re.compile(r"[A-Za-z]{2,8}(-[A-Za-z0-9]{1,8})*")
# nh3's output quotes every attribute value with " and escapes < > & " inside it,
# so these patterns read its <img> tags exactly.
_IMG_TAG = re.compile(r"<img\b[^>]*>")
_ATTRIBUTE = re.compile(r'([a-z][a-z0-9-]*)="([^"]*)"')
# Hosts (and their subdomains) whose images are beacons for analytics or ads.
TRACKER_HOSTS = frozenset(
    {
        "doubleclick.net",
        "google-analytics.com",
        "googletagmanager.com",
        "scorecardresearch.com",
        "quantserve.com",
        "chartbeat.net",
        "mathtag.com",
        "pixel.wp.com",
        "stats.wordpress.com",
        "feeds.feedburner.com",
        "feedsportal.com",
        "bat.bing.com",
        "analytics.twitter.com",
        "pixel.facebook.com",
        "mc.yandex.ru",
        "counter.yadro.ru",
        "top-fwz1.mail.ru",
        "tns-counter.ru",
    }
)


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
    would otherwise resolve them against our feed's URL; links lose their tracking
    parameters, as item links do.
    """

    def resolve(url: str) -> str | None:
        return urljoin(base_url, url) if base_url else None

    cleaned = nh3.clean(
        clean_text(html),
        url_schemes={"http", "https", "mailto"},
        url_relative=resolve,
        link_rel=_LINK_REL,
        attribute_filter=_untracked_href,
    )
    return _IMG_TAG.sub(_keep_image, cleaned)


def _untracked_href(tag: str, attribute: str, value: str) -> str:
    return untracked_url(value) if attribute == "href" else value


def _keep_image(match: re.Match[str]) -> str:
    """The <img> tag as it was, or nothing when it is a tracking pixel."""
    attributes = dict(_ATTRIBUTE.findall(match.group(0)))
    return "" if is_tracking_pixel(attributes) else match.group(0)


def is_tracking_pixel(attributes: dict[str, str]) -> bool:
    """An image nobody is meant to see: 1x1 (or 0-sized), or served by a tracker.

    Such images only tell the outlet's analytics that someone opened the item;
    a reader of our timeline never agreed to that.
    """
    width, height = _pixels(attributes.get("width")), _pixels(attributes.get("height"))
    if width == 0 or height == 0:
        return True
    if width is not None and height is not None and width <= 1 and height <= 1:
        return True
    host = (urlsplit(html_unescape(attributes.get("src", ""))).hostname or "").lower()
    labels = host.split(".")
    return any(".".join(labels[i:]) in TRACKER_HOSTS for i in range(len(labels) - 1))


def _pixels(value: str | None) -> int | None:
    match = re.match(r"\s*(\d+)", value or "")
    return int(match.group(1)) if match else None


def entry_anchor(item: TimelineItem) -> str:
    """A fragment id for the item on its timeline page, stable across republishing."""
    return "r-" + hashlib.sha256(item.id.encode("utf-8", "replace")).hexdigest()[:12]


def article_url(url: str | None) -> str | None:
    """A link to an outlet's article as published: safe, its tracking parameters removed."""
    return safe_url(untracked_url(url)) if url else None


def item_link(item: TimelineItem, links: TimelineLinks) -> str:
    """The original article, or the item on our page when its link is not http(s)."""
    return article_url(item.link) or f"{links.html}#{entry_anchor(item)}"


def outlet_name(item: TimelineItem) -> str:
    return one_line(item.outlet) or "Unknown outlet"


def item_updated(item: TimelineItem) -> datetime:
    """When the item last changed, never before it was published (readers sort by it)."""
    return max(utc(item.updated), utc(item.published))


def also_reported(item: TimelineItem) -> list[tuple[str, str | None]]:
    """(outlet, safe link or None) of each merged duplicate, in order."""
    return [(one_line(outlet), article_url(link)) for outlet, link in item.also]


def every_report(item: TimelineItem) -> tuple[ReportLine, ...]:
    """The reports an item stands for: an event's list, else the item's own report."""
    if item.reports:
        return item.reports
    own = ReportLine(
        item.outlet, item.link, item.published, item.language, item.outlet_site, item.also
    )
    return (own,)


def latest_report(item: TimelineItem) -> datetime:
    """When the item's newest report was published: events are ordered by it."""
    return max(utc(report.published) for report in every_report(item))


def item_html(item: TimelineItem) -> str:
    """The summary as feeds carry it: sanitised, then the event's reports or the merged
    duplicates appended."""
    summary = clean_html(item.summary_html, safe_url(item.link))
    if item.reports:
        lines = "".join(f"<li>{report_html(report)}</li>" for report in item.reports)
        return summary + f"<p>{plural(len(item.reports), 'report')}:</p><ul>{lines}</ul>"
    also = also_reported(item)
    if also:
        summary += "<p>Also reported by: " + ", ".join(_also_link(o, u) for o, u in also) + "</p>"
    return summary


def report_html(report: ReportLine) -> str:
    """ "Outlet · uk · 2024-08-06 10:00 UTC: headline", the headline linked to the
    article and marked with its language; copies after it."""
    url = article_url(report.link)
    language = language_tag(report.language)
    text = f"<bdi>{escape(one_line(report.outlet) or 'Unknown outlet')}</bdi>"
    if language:
        text += f" · {escape(language)}"
    text += f" · {human_time(report.published)}: "
    lang = f' lang="{escape(language)}"' if language else ""
    headline = escape(one_line(report.title) or "(untitled)")
    if url:
        headline = f'<a href="{escape(url)}" rel="{_LINK_REL}">{headline}</a>'
    text += f'<span dir="auto"{lang}>{headline}</span>'
    also = [(one_line(o), article_url(u)) for o, u in report.also]
    if also:
        text += " (also reported by: " + ", ".join(_also_link(o, u) for o, u in also) + ")"
    return text


def _also_link(outlet: str, url: str | None) -> str:
    if url is None:
        return escape(outlet)
    return f'<a href="{escape(url)}" rel="{_LINK_REL}">{escape(outlet)}</a>'


def feed_description(doc: TimelineDoc) -> str:
    """What the event is, then how many outlets reported it and when; never empty (RSS).

    Plain text (see `plain_text`): it becomes the RSS channel description, which
    readers render as HTML, and story titles and outlet names come from feeds.
    """
    title = plain_text(doc.title) or "one story"
    text = event_description(doc) or f"A timeline of reports on {title}."
    return plain_text(f"{text} {timeline_facts(doc)}")


def plain_text(text: str | None) -> str:
    """One line with no markup: whatever could open a tag in HTML is removed.

    A `<` followed by a letter, `/`, `!` or `?` starts a tag (or comment) in HTML;
    each such run up to the next `<` or `>` becomes a space, so no tag can open,
    nor be formed by what is left around it. Other `<` and `>` are plain text.
    """
    return " ".join(_TAG_LIKE.sub(" ", clean_text(text)).split())


def event_description(doc: TimelineDoc) -> str:
    """What the event is, as configured; the publisher adds the counts itself."""
    return one_line(doc.description, 1000)


class TimelineFacts(NamedTuple):
    """What feeds, OPML and pages state of a timeline's reports; see `timeline_facts`."""

    counted: str  # "25 reports", or "12 stories" for the all-stories timeline
    outlets: list[str]  # distinct, sorted
    first: datetime | None
    latest: datetime | None


def facts(doc: TimelineDoc) -> TimelineFacts:
    """The one computation of a timeline's counts, outlets and dates, for every format.

    The timeline stage states them from every report (`sources`, `first_report`,
    `latest_report`, `reports`); a TimelineDoc without them (a day of a page) is
    described by its items.
    """
    first, latest = report_span(doc)
    return TimelineFacts(counted_items(doc), outlet_names(doc), first, latest)


def timeline_facts(doc: TimelineDoc) -> str:
    """ "25 reports from 7 outlets (A, B, ...); first report …, latest report …." """
    known = facts(doc)
    text = f"{known.counted} from {plural(len(known.outlets), 'outlet')}"
    if known.outlets:
        named = ", ".join(known.outlets[:_DESCRIPTION_OUTLETS])
        more = len(known.outlets) - _DESCRIPTION_OUTLETS
        text += f" ({named}" + (f" and {more} more)" if more > 0 else ")")
    if known.first is not None and known.latest is not None:
        text += (
            f"; first report {human_time(known.first)}, latest report {human_time(known.latest)}"
        )
    return text + "."


def counted_items(doc: TimelineDoc) -> str:
    """ "25 reports": each item and each merged copy is one outlet's report.

    The all-stories feed's items are stories, and are counted as such.
    """
    if doc.slug == ALL_STORIES_SLUG:
        return plural(len(doc.items), "story")
    if doc.reports is not None:
        return plural(doc.reports, "report")
    reports = [report for item in doc.items for report in every_report(item)]
    return plural(sum(1 + len(report.also) for report in reports), "report")


def outlet_names(doc: TimelineDoc) -> list[str]:
    """The distinct outlets of a timeline, merged duplicates' outlets included, sorted."""
    names = list(doc.sources)
    if not names:
        reports = [report for item in doc.items for report in every_report(item)]
        names = [report.outlet for report in reports]
        names += [outlet for report in reports for outlet, _ in report.also]
    return sorted({name for name in (one_line(n) for n in names) if name}, key=str.casefold)


def report_span(doc: TimelineDoc) -> tuple[datetime | None, datetime | None]:
    """(first, latest) report time: the timeline stage's, else the items' own."""
    published = [utc(r.published) for item in doc.items for r in every_report(item)]
    first = doc.first_report or min(published, default=None)
    latest = doc.latest_report or max(published, default=None)
    return first, latest


def plural(count: int, noun: str) -> str:
    """ "1 report", "2 reports", "2 stories": the nouns pages and feeds count."""
    return f"{count} {noun if count == 1 else plural_noun(noun)}"


def plural_noun(noun: str) -> str:
    if noun.endswith("y") and noun[-2:-1] not in ("a", "e", "o", "u"):
        return noun[:-1] + "ies"
    return noun + "s"


def human_time(moment: datetime) -> str:
    return f"{utc(moment):%Y-%m-%d %H:%M} UTC"
