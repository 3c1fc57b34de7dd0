"""Render a TimelineDoc as Atom 1.0 and RSS 2.0 (with feedgen) and JSON Feed 1.1 (by hand).

Every item names its outlet (author, source) and links the original article;
merged duplicates follow as "Also reported by". Bodies are UTF-8 bytes ready to serve.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from typing import Any

from feedgen.entry import FeedEntry
from feedgen.ext.base import BaseExtension
from feedgen.feed import FeedGenerator
from feedgen.util import xml_elem

from aggregator.errors import PublishError
from aggregator.publish import (
    TimelineLinks,
    also_reported,
    article_url,
    clean_text,
    feed_description,
    item_html,
    item_link,
    item_updated,
    language_tag,
    one_line,
    outlet_name,
    rfc3339,
    safe_url,
    timeline_links,
    utc,
)
from aggregator.settings import PROJECT_URL, PublishSettings
from aggregator.types import ReportLine, TimelineDoc, TimelineItem

JSON_FEED_VERSION = "https://jsonfeed.org/version/1.1"
_XML_LANG = "{http://www.w3.org/XML/1998/namespace}lang"
_ATOM_NS = "http://www.w3.org/2005/Atom"


def render_atom(doc: TimelineDoc, settings: PublishSettings) -> bytes:
    links = timeline_links(doc.slug, settings)
    feed = _feed(doc, settings, self_link=links.atom, self_type="application/atom+xml")
    return _serialise(feed.atom_str, links.atom)


def render_rss(doc: TimelineDoc, settings: PublishSettings) -> bytes:
    links = timeline_links(doc.slug, settings)
    feed = _feed(doc, settings, self_link=links.rss, self_type="application/rss+xml")
    return _serialise(feed.rss_str, links.rss)


def render_json(doc: TimelineDoc, settings: PublishSettings) -> bytes:
    links = timeline_links(doc.slug, settings)
    feed: dict[str, Any] = {
        "version": JSON_FEED_VERSION,
        "title": _title(doc.title),
        "home_page_url": links.html,
        "feed_url": links.json,
        "description": feed_description(doc),
        **_json_hubs(settings),
        "_aggregator": {
            "about": PROJECT_URL,
            "id": clean_text(doc.id),
            "updated": rfc3339(doc.updated),
        },
        "items": [_json_item(item, links) for item in _items(doc, settings)],
    }
    text = json.dumps(feed, ensure_ascii=False, indent=2)
    # < and > occur only inside JSON strings; escaping them keeps the values and means
    # a body sniffed or embedded as HTML can never open a tag.
    text = text.replace("<", "\\u003c").replace(">", "\\u003e")
    return text.encode("utf-8")


def _json_hubs(settings: PublishSettings) -> dict[str, Any]:
    hub = safe_url(settings.websub_hub)
    return {"hubs": [{"type": "WebSub", "url": hub}]} if hub else {}


def _items(doc: TimelineDoc, settings: PublishSettings) -> tuple[TimelineItem, ...]:
    # The timeline stage orders items (newest report first; the all-stories feed by
    # latest update), so the feeds keep its order.
    return doc.items[: max(settings.max_items, 0)]


def _title(text: str) -> str:
    # feedgen refuses an empty title, and a reader shows nothing useful for one.
    return one_line(text) or "(untitled)"


def _serialise(render: Callable[..., bytes], path: str) -> bytes:
    try:
        return render(pretty=True, encoding="UTF-8", xml_declaration=True)
    except ValueError as err:  # feedgen's only complaint: a required field is missing
        raise PublishError(f"cannot render the feed: {err}", path=path) from err


def _feed(
    doc: TimelineDoc, settings: PublishSettings, *, self_link: str, self_type: str
) -> FeedGenerator:
    links = timeline_links(doc.slug, settings)
    feed = FeedGenerator()
    feed.load_extension("dc", atom=False, rss=True)  # dc:creator: RSS <author> wants an email
    feed.register_extension("outlet", HubExtension, OutletExtension, atom=True, rss=True)
    feed.outlet.hub = safe_url(settings.websub_hub)
    feed.id(clean_text(doc.id))
    feed.title(_title(doc.title))
    feed.subtitle(feed_description(doc))
    feed.updated(utc(doc.updated))
    feed.link(href=self_link, rel="self", type=self_type)
    feed.link(href=links.html, rel="alternate", type="text/html")
    feed.generator("aggregator", uri=PROJECT_URL)
    for item in _items(doc, settings):
        _add_entry(feed.add_entry(order="append"), item, links)
    return feed


def _add_entry(entry: FeedEntry, item: TimelineItem, links: TimelineLinks) -> None:
    outlet = outlet_name(item)
    entry.id(clean_text(item.id))
    entry.title(_title(item.title))
    entry.link(href=item_link(item, links), rel="alternate", type="text/html")
    entry.published(utc(item.published))
    entry.updated(item_updated(item))
    entry.summary(item_html(item), type="html")
    author = {"name": outlet}
    if site := safe_url(item.outlet_site):
        author["uri"] = site
    entry.author(author)
    entry.dc.dc_creator(outlet)
    entry.outlet.item = item


class HubExtension(BaseExtension):
    """Advertises the WebSub hub: <link rel="hub"> in Atom, <atom:link rel="hub"> in RSS.

    Written here rather than through feedgen's link(): feedgen takes the RSS <link>
    from the last link added and writes only the self link as <atom:link>.
    """

    hub: str | None = None

    def extend_atom(self, feed: Any) -> Any:
        if self.hub:
            _insert_before_items(feed, xml_elem("link", None, rel="hub", href=self.hub), "entry")
        return feed

    def extend_rss(self, rss: Any) -> Any:
        channel = rss.find("channel")
        if self.hub and channel is not None:
            link = xml_elem(f"{{{_ATOM_NS}}}link", None, rel="hub", href=self.hub)
            _insert_before_items(channel, link, "item")
        return rss


def _insert_before_items(parent: Any, element: Any, item_tag: str) -> None:
    # Atom's grammar puts every feed-level element before the first entry.
    for index, child in enumerate(parent):
        if child.tag in (item_tag, f"{{{_ATOM_NS}}}{item_tag}"):
            parent.insert(index, element)
            return
    parent.append(element)


class OutletExtension:
    """Writes what feedgen 1.0 cannot: the outlet as atom:source with the id and updated
    RFC 4287 4.2.11 asks for (feedgen's source() gives title and link only), RSS
    <source url>, the entry's xml:lang, and rel="related" links (feedgen drops the rel
    of entry links, turning them into duplicate alternates)."""

    item: TimelineItem | None = None

    def extend_ns(self) -> dict[str, str]:
        return {}

    def extend_atom(self, entry: Any) -> Any:
        if self.item is None:
            return entry
        item = self.item
        if language := language_tag(item.language):
            entry.set(_XML_LANG, language)
        source = xml_elem("source", entry)
        feed_url = safe_url(item.outlet_url)
        if feed_url:
            xml_elem("id", source).text = feed_url
        xml_elem("title", source).text = outlet_name(item)
        # The outlet feed's own updated time is not kept; this entry's is the latest we know.
        xml_elem("updated", source).text = item_updated(item).isoformat()
        if feed_url:
            xml_elem("link", source, rel="self", href=feed_url)
        if site := safe_url(item.outlet_site):
            xml_elem("link", source, rel="alternate", type="text/html", href=site)
        for name, url in also_reported(item):
            if url:
                xml_elem("link", entry, rel="related", href=url, title=name or url)
        for report in item.reports:  # an event's other reports, and their copies
            others = [(report.outlet, report.link), *report.also]
            for name, url in [(one_line(o), article_url(u)) for o, u in others]:
                if url and url != article_url(item.link):
                    xml_elem("link", entry, rel="related", href=url, title=name or url)
        return entry

    def extend_rss(self, entry: Any) -> Any:
        if self.item is None:
            return entry
        feed_url = safe_url(self.item.outlet_url)
        if feed_url:  # RSS requires the url attribute on <source>
            source = xml_elem("source", entry, url=feed_url)
            source.text = outlet_name(self.item)
        return entry


def _json_item(item: TimelineItem, links: TimelineLinks) -> dict[str, Any]:
    outlet = outlet_name(item)
    author: dict[str, str] = {"name": outlet}
    if site := safe_url(item.outlet_site):
        author["url"] = site
    entry: dict[str, Any] = {
        "id": clean_text(item.id),
        "url": item_link(item, links),
        "title": _title(item.title),
        "content_html": item_html(item),
        "date_published": rfc3339(item.published),
        "date_modified": rfc3339(item_updated(item)),
        "authors": [author],
    }
    if language := language_tag(item.language):
        entry["language"] = language
    entry["_aggregator"] = {
        "outlet": outlet,
        "outlet_url": safe_url(item.outlet_url),
        "outlet_site": safe_url(item.outlet_site),
        "also_reported_by": [{"outlet": name, "url": url} for name, url in also_reported(item)],
    }
    if item.reports:
        entry["_aggregator"]["reports"] = [_json_report(report) for report in item.reports]
    return entry


def _json_report(report: ReportLine) -> dict[str, Any]:
    return {
        "outlet": one_line(report.outlet),
        "title": _title(report.title),
        "url": article_url(report.link),
        "language": language_tag(report.language),
        "date_published": rfc3339(report.published),
        "also_reported_by": [
            {"outlet": one_line(name), "url": article_url(url)} for name, url in report.also
        ],
    }
