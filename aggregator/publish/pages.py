"""HTML pages: the index of timelines and one page per timeline, rendered on the server.

No JavaScript and no template engine: every value is escaped here and every summary
passes through `clean_html`. Each page announces its feeds with <link rel="alternate">.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterable, Sequence
from datetime import date, datetime
from html import escape
from itertools import groupby

from aggregator.publish import (
    ALL_STORIES_SLUG,
    INDEX_PATH,
    OPML_PATH,
    TimelineLinks,
    also_reported,
    clean_html,
    clean_text,
    entry_anchor,
    event_description,
    every_report,
    facts,
    item_link,
    language_tag,
    latest_report,
    one_line,
    outlet_name,
    plural,
    plural_noun,
    report_html,
    rfc3339,
    safe_url,
    site_url,
    timeline_links,
    utc,
)
from aggregator.publish.chart import bar_chart, count_reports, daily_counts, sparkline
from aggregator.settings import PublishSettings
from aggregator.types import TimelineDoc, TimelineItem

# A vertical line down the left edge is the time axis; each report hangs off it.
_STYLE = """
body{font:16px/1.5 system-ui,sans-serif;max-width:48rem;margin:0 auto;padding:1rem;color:#222;background:#fff}
a{color:#0645ad}header p,.meta,.outlet,.also,.day-meta{color:#555;font-size:.9rem}
ol{list-style:none;padding:0}h1{line-height:1.2}h2{font-size:1.1rem;margin:2rem 0 .25rem}
.feeds a{display:inline-block;padding:.1rem .5rem;border:1px solid #ccd;border-radius:.3rem;text-decoration:none;margin:0 .2rem .2rem 0}
figure{margin:1rem 0}figcaption{color:#555;font-size:.85rem}
.chart rect,.spark rect{fill:#5b7db1}.chart .axis{stroke:#99a}.chart text{font-size:11px;fill:currentColor}
.day-meta{margin:0 0 .75rem}
.entries{border-left:3px solid #ccd;margin-left:.4rem;padding-left:1rem}
.entry{margin:0 0 1.25rem;position:relative}
.entry::before{content:"";position:absolute;left:-1.45rem;top:.45rem;width:.6rem;height:.6rem;border-radius:50%;background:#889}
.entry h3{font-size:1rem;margin:0}.entry time{font-variant-numeric:tabular-nums;color:#555;font-size:.9rem}
.summary{overflow-wrap:anywhere}.summary img{max-width:100%;height:auto}
.timelines article{border-bottom:1px solid #eee;padding:.5rem 0}
.timelines h2{margin:.5rem 0 .25rem}.timelines .meta{display:flex;align-items:center;gap:.75rem}
.spark{flex:none}.spark line{stroke:#99a}
@media (prefers-color-scheme:dark){body{color:#ddd;background:#161616}a{color:#8ab4f8}
header p,.meta,.outlet,.also,.day-meta,.entry time,figcaption{color:#aaa}.chart rect,.spark rect{fill:#8ab4f8}}
"""

# Names for the languages outlets most often declare; other tags are shown as they are.
_LANGUAGE_NAMES = {
    "ar": "Arabic",
    "be": "Belarusian",
    "de": "German",
    "en": "English",
    "es": "Spanish",
    "fa": "Persian",
    "fr": "French",
    "he": "Hebrew",
    "it": "Italian",
    "ja": "Japanese",
    "kk": "Kazakh",
    "pl": "Polish",
    "pt": "Portuguese",
    "ro": "Romanian",
    "ru": "Russian",
    "tr": "Turkish",
    "uk": "Ukrainian",
    "zh": "Chinese",
}


def render_index(timelines: Sequence[TimelineDoc], settings: PublishSettings) -> bytes:
    title = one_line(settings.title) or "Timelines"
    everything = timeline_links(ALL_STORIES_SLUG, settings)
    opml = site_url(OPML_PATH, settings)
    alternates = [
        *_feed_alternates(everything, "All stories"),
        ("text/x-opml", "All timelines (OPML)", opml),
    ]
    shown = list(timelines)[: max(settings.max_stories, 0)]
    body = [
        f"<header><h1>{_e(title)}</h1>",
        f"<p>{plural(len(shown), 'timeline')}, each a feed you can follow in any reader.</p>",
        f'<p class="feeds">All stories: {_feed_links(everything)}'
        f'<a href="{_e(opml)}" type="text/x-opml">OPML (every timeline)</a></p>',
        "</header><main>",
    ]
    if shown:
        # Every sparkline ends on the same day, so the index shows which stories are live.
        end = (
            max(latest_report(item) for doc in shown for item in doc.items)
            if any(doc.items for doc in shown)
            else None
        )
        body.append('<ol class="timelines">')
        body.extend(_index_entry(doc, settings, end) for doc in shown)
        body.append("</ol>")
    else:
        body.append("<p>No timelines yet: a story needs reports from several outlets first.</p>")
    body.append("</main>")
    return _page(title, "", site_url(INDEX_PATH, settings), alternates, body)


def render_timeline_page(doc: TimelineDoc, settings: PublishSettings) -> bytes:
    links = timeline_links(doc.slug, settings)
    title = one_line(doc.title) or "(untitled)"
    description = event_description(doc)
    items = _newest_first(doc.items)[: max(settings.max_items, 0)]
    body = [
        f'<header><p><a href="{_e(site_url(INDEX_PATH, settings))}">All timelines</a></p>',
        f'<h1 dir="auto">{_e(title)}</h1>',
        f'<p dir="auto">{_e(description)}</p>' if description else "",
        f'<p class="meta">{_summary_line(doc)}</p>',
        _languages_line(items),
        f'<p class="feeds">Follow this timeline: {_feed_links(links)}</p>',
        _chart_figure(items, _noun(doc)),
        "</header><main>",
    ]
    for day, day_items in groupby(items, key=lambda item: utc(item.published).date()):
        body.append(_day_section(doc.slug, day, list(day_items), links))
    if not items:
        body.append("<p>No reports yet.</p>")
    body.append("</main>")
    return _page(title, description, links.html, _feed_alternates(links, title), body)


def _newest_first(items: Iterable[TimelineItem]) -> list[TimelineItem]:
    """Time-axis order, which grouping by day needs: an event sits under the day it
    began (its first report), like a single report; ties keep the timeline's order."""
    return sorted(items, key=lambda item: utc(item.published), reverse=True)


def _index_entry(doc: TimelineDoc, settings: PublishSettings, end: datetime | None) -> str:
    links = timeline_links(doc.slug, settings)
    spark = sparkline(daily_counts(_report_times(doc.items), end=end), noun=_noun(doc))
    description = event_description(doc)
    return (
        f'<li><article><h2 dir="auto"><a href="{_e(links.html)}">'
        f"{_e(one_line(doc.title) or '(untitled)')}</a></h2>"
        + (f'<p dir="auto">{_e(description)}</p>' if description else "")
        + f'<p class="meta">{spark}<span>{_summary_line(doc)}</span></p>'
        f'<p class="feeds">{_feed_links(links)}</p></article></li>'
    )


def _summary_line(doc: TimelineDoc) -> str:
    """ "12 reports from 5 outlets · first report … · latest report …", escaped."""
    known = facts(doc)
    parts = [f"{known.counted} from {plural(len(known.outlets), 'outlet')}"]
    if known.first is not None:
        parts.append(f"first report {_time(known.first)}")
    if known.latest is not None:
        parts.append(f"latest report {_time(known.latest)}")
    return " · ".join(parts)


def _report_times(items: Iterable[TimelineItem]) -> list[datetime]:
    # A merged copy is another outlet's report of the same article, counted at its time.
    reports = [report for item in items for report in every_report(item)]
    return [report.published for report in reports for _ in range(1 + len(report.also))]


def _languages_line(items: Sequence[TimelineItem]) -> str:
    languages = _languages(items)
    if not languages:
        return ""
    return f'<p class="meta">Languages: {_e(", ".join(languages))}</p>'


def _chart_figure(items: Sequence[TimelineItem], noun: str) -> str:
    buckets = count_reports(_report_times(items))
    if buckets is None:
        return ""
    caption = f"{plural_noun(noun).capitalize()} per {buckets.unit} (UTC)"
    return f"<figure>{bar_chart(buckets, noun=noun)}<figcaption>{caption}</figcaption></figure>"


def _noun(doc: TimelineDoc) -> str:
    # The all-stories timeline's items are stories; every other timeline's are reports.
    return "story" if doc.slug == ALL_STORIES_SLUG else "report"


def _day_section(slug: str, day: date, items: Sequence[TimelineItem], links: TimelineLinks) -> str:
    heading = (
        f'<h2><time datetime="{day.isoformat()}">{day:%A} {day.day} {day:%B} {day.year}</time></h2>'
    )
    that_day = facts(TimelineDoc(slug, "", "", "", utc(items[0].published), tuple(items)))
    named = ", ".join(f"<bdi>{_e(name)}</bdi>" for name in that_day.outlets)
    meta = f"{that_day.counted} from {plural(len(that_day.outlets), 'outlet')} ({named})"
    if languages := _languages(items):
        meta += f" · in {_e(', '.join(languages))}"
    day_meta = f'<p class="day-meta">{meta}</p>'
    entries = "".join(_entry(item, links) for item in items)
    return f'<section class="day">{heading}{day_meta}<ol class="entries">{entries}</ol></section>'


def _languages(items: Iterable[TimelineItem]) -> list[str]:
    """Language names of the items, most reports first."""
    reports = [report for item in items for report in every_report(item)]
    counts = Counter(tag for report in reports if (tag := language_tag(report.language)))
    return [_LANGUAGE_NAMES.get(tag.split("-")[0].lower(), tag) for tag, _ in counts.most_common()]


def _entry(item: TimelineItem, links: TimelineLinks) -> str:
    language = language_tag(item.language)
    lang = f' lang="{_e(language)}"' if language else ""
    outlet = f"<bdi>{_e(outlet_name(item))}</bdi>"
    if site := safe_url(item.outlet_site):
        outlet = f'<a href="{_e(site)}">{outlet}</a>'
    meta = outlet + (f" · {_e(language)}" if language else "")
    published = utc(item.published)
    summary = clean_html(item.summary_html, safe_url(item.link))
    parts = [
        f'<li class="entry" id="{entry_anchor(item)}">',
        f'<time datetime="{rfc3339(published)}">{published:%H:%M} UTC</time>',
        f'<h3 dir="auto"{lang}><a href="{_e(item_link(item, links))}">'
        f"{_e(one_line(item.title) or '(untitled)')}</a></h3>",
        f'<p class="outlet">{meta}</p>',
        f'<div class="summary" dir="auto"{lang}>{summary}</div>' if summary.strip() else "",
        _also_line(item),
        _reports_list(item),
        "</li>",
    ]
    return "".join(parts)


def _reports_list(item: TimelineItem) -> str:
    if not item.reports:
        return ""
    lines = "".join(f'<li dir="auto">{report_html(report)}</li>' for report in item.reports)
    return (
        f'<p class="also">{plural(len(item.reports), "report")} of this event:</p>'
        f'<ul class="reports">{lines}</ul>'
    )


def _also_line(item: TimelineItem) -> str:
    also = also_reported(item)
    if not also:
        return ""
    names = [
        f'<a href="{_e(url)}"><bdi>{_e(name)}</bdi></a>' if url else f"<bdi>{_e(name)}</bdi>"
        for name, url in also
    ]
    return f'<p class="also">Also reported by: {", ".join(names)}</p>'


def _feed_alternates(links: TimelineLinks, title: str) -> list[tuple[str, str, str]]:
    return [
        ("application/atom+xml", f"{title} (Atom)", links.atom),
        ("application/rss+xml", f"{title} (RSS)", links.rss),
        ("application/feed+json", f"{title} (JSON Feed)", links.json),
    ]


def _feed_links(links: TimelineLinks) -> str:
    return "".join(
        f'<a href="{_e(url)}" type="{kind}">{label}</a>'
        for kind, label, url in (
            ("application/atom+xml", "Atom", links.atom),
            ("application/rss+xml", "RSS", links.rss),
            ("application/feed+json", "JSON Feed", links.json),
        )
    )


def _time(moment: datetime) -> str:
    moment = utc(moment)
    return f'<time datetime="{rfc3339(moment)}">{moment:%Y-%m-%d %H:%M} UTC</time>'


def _page(
    title: str,
    description: str,
    canonical: str,
    alternates: Sequence[tuple[str, str, str]],
    body: Sequence[str],
) -> bytes:
    head = [
        "<!DOCTYPE html>",
        '<html lang="en">',
        "<head>",
        '<meta charset="utf-8">',
        '<meta name="viewport" content="width=device-width, initial-scale=1">',
        f"<title>{_e(title)}</title>",
        f'<meta name="description" content="{_e(description)}">' if description else "",
        f'<link rel="canonical" href="{_e(canonical)}">',
        *(
            f'<link rel="alternate" type="{kind}" title="{_e(label)}" href="{_e(url)}">'
            for kind, label, url in alternates
        ),
        f"<style>{_STYLE}</style>",
        "</head>",
        "<body>",
    ]
    lines = [line for line in (*head, *body, "</body>", "</html>") if line]
    return ("\n".join(lines) + "\n").encode("utf-8")


def _e(text: str) -> str:
    return escape(clean_text(text), quote=True)
