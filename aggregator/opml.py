"""OPML 2.0 in and out: import and export the source list, and list the published timelines.

`parse_opml` reads what feed readers export (folders of outlines) into SourceConfig,
holding each outline to the settings file's checks; it refuses DTDs, entities and
network access, and raises ConfigError naming the line of every refused outline.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from email.utils import format_datetime
from urllib.parse import urlsplit

from lxml import etree

from aggregator.errors import ConfigError, ConfigErrors
from aggregator.publish import (
    clean_text,
    feed_description,
    language_tag,
    one_line,
    safe_url,
    timeline_links,
    utc,
)
from aggregator.settings import PublishSettings, SourceConfig, check_source
from aggregator.types import TimelineDoc

_OPML_DOCS = "http://opml.org/spec2.opml"


def sources_to_opml(sources: Sequence[SourceConfig], title: str) -> bytes:
    root, _, body = _document(title)
    for source in sources:
        outline = _outline(body, source.name or source.url, source.url)
        if source.language:
            outline.set("language", clean_text(source.language))
        if source.tags:
            outline.set("category", ",".join(clean_text(tag) for tag in source.tags))
        # Not OPML attributes, but outlines may carry any; they make the round trip exact.
        if source.interval is not None:
            outline.set("interval", repr(float(source.interval)))
        if not source.enabled:
            outline.set("enabled", "false")
    return _serialise(root)


def timelines_to_opml(timelines: Sequence[TimelineDoc], settings: PublishSettings) -> bytes:
    root, head, body = _document(settings.title)
    if timelines:
        newest = max(utc(doc.updated) for doc in timelines)
        head.append(_text_element("dateModified", format_datetime(newest, usegmt=True)))
    for doc in timelines:
        links = timeline_links(doc.slug, settings)
        outline = _outline(body, one_line(doc.title) or doc.slug, links.atom)
        outline.set("htmlUrl", links.html)
        outline.set("description", feed_description(doc))
    return _serialise(root)


def parse_opml(data: bytes, *, file: str) -> list[SourceConfig]:
    """Sources from an OPML file, in document order; repeated feed URLs merge their tags.

    Outlines with an xmlUrl are feeds; outlines without one are folders, whose names
    become tags of the feeds inside them, as readers such as Feedly export categories.
    """
    body = _parse_body(data, file=file)
    found: dict[str, SourceConfig] = {}
    problems: list[ConfigError] = []
    for outline, folders in _feed_outlines(body, ()):
        try:
            source = _source(outline, folders, file=file)
        except ConfigError as exc:
            problems += exc.problems  # report every refused outline at once
            continue
        if source.url in found:
            first = found[source.url]
            tags = tuple(dict.fromkeys((*first.tags, *source.tags)))
            found[source.url] = SourceConfig(
                first.name, first.url, first.interval, first.language, tags, first.enabled
            )
        else:
            found[source.url] = source
    if problems:
        raise ConfigErrors.of(problems)
    return list(found.values())


def _parse_body(data: bytes, *, file: str) -> etree._Element:
    parser = etree.XMLParser(
        resolve_entities=False, no_network=True, load_dtd=False, huge_tree=False, remove_pis=True
    )
    try:
        root = etree.fromstring(data, parser)
    except etree.XMLSyntaxError as err:
        raise ConfigError(
            f"not well-formed XML ({err.msg}); export the OPML again from your reader",
            file=file,
            key="opml",
            line=err.lineno,
        ) from err
    if root.tag != "opml":
        raise ConfigError(
            f"the root element is <{root.tag}>, not <opml>; is this an OPML file?",
            file=file,
            key="opml",
            line=root.sourceline,
        )
    dtd = root.getroottree().docinfo.internalDTD
    # libxml2 expands internal entities inside attributes even with resolve_entities off.
    if dtd is not None and any(True for _ in dtd.iterentities()):
        raise ConfigError(
            "OPML files must not declare entities; remove them from the <!DOCTYPE>",
            file=file,
            key="opml",
            line=1,
        )
    body = root.find("body")
    if body is None:
        raise ConfigError("the OPML has no <body>", file=file, key="body", line=root.sourceline)
    return body


def _feed_outlines(
    parent: etree._Element, folders: tuple[str, ...]
) -> Iterator[tuple[etree._Element, tuple[str, ...]]]:
    for outline in parent.iterchildren("outline"):
        if outline.get("xmlUrl") is not None:
            yield outline, folders
        else:
            name = one_line(outline.get("text") or outline.get("title"))
            yield from _feed_outlines(outline, (*folders, name) if name else folders)


# What each SourceConfig field is called in an outline, for error messages.
_OUTLINE_NAMES = {
    "name": "text",
    "url": "xmlUrl",
    "interval": "interval",
    "language": "language",
    "tags": "category",
    "enabled": "enabled",
}


def _source(outline: etree._Element, folders: tuple[str, ...], *, file: str) -> SourceConfig:
    """The outline's feed, held to the settings file's own checks (URL, interval...)."""
    raw_url = outline.get("xmlUrl", "").strip()
    url = safe_url(raw_url) or raw_url  # a refused URL is reported as written
    name = one_line(outline.get("text") or outline.get("title")) or _host(url) or url
    categories = (
        part.strip().strip("/") for part in clean_text(outline.get("category")).split(",")
    )
    given = {
        "name": name,
        "url": url,
        "interval": outline.get("interval"),
        "language": language_tag(outline.get("language")),
        "tags": [tag for tag in dict.fromkeys((*folders, *categories)) if tag],
        "enabled": outline.get("enabled", "true").strip().lower() != "false",
    }
    return check_source(given, names=_OUTLINE_NAMES, file=file, line=outline.sourceline)


def _host(url: str) -> str | None:
    try:
        return urlsplit(url).hostname
    except ValueError:
        return None


def _document(title: str) -> tuple[etree._Element, etree._Element, etree._Element]:
    """The <opml> root, its <head> and its <body>."""
    root = etree.Element("opml", version="2.0")
    head = etree.SubElement(root, "head")
    head.append(_text_element("title", one_line(title, 1000)))
    head.append(_text_element("docs", _OPML_DOCS))
    return root, head, etree.SubElement(root, "body")


def _outline(body: etree._Element, text: str, xml_url: str) -> etree._Element:
    name = one_line(text, 1000)
    return etree.SubElement(
        body, "outline", type="rss", text=name, title=name, xmlUrl=clean_text(xml_url)
    )


def _text_element(tag: str, text: str) -> etree._Element:
    element = etree.Element(tag)
    element.text = text
    return element


def _serialise(root: etree._Element) -> bytes:
    body: bytes = etree.tostring(root, pretty_print=True, xml_declaration=True, encoding="UTF-8")
    return body
