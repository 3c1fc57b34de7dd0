"""OPML: sources survive export and import, readers' exports load, bad files name their line."""

from __future__ import annotations

from datetime import UTC, datetime

import pytest
from lxml import etree

from aggregator.errors import ConfigError
from aggregator.opml import parse_opml, sources_to_opml, timelines_to_opml
from aggregator.settings import PublishSettings, SourceConfig
from aggregator.types import TimelineDoc

SOURCES = [
    SourceConfig(
        "BBC News", "https://feeds.bbc.example/news/rss.xml", 600.0, "en", ("world", "uk")
    ),
    SourceConfig("Медуза", "https://meduza.example/rss/all", language="ru"),
    SourceConfig("الجزيرة", "https://aljazeera.example/feed?lang=ar&x=1", tags=("middle-east",)),
    SourceConfig("Paused & <odd>", "http://paused.example/atom", enabled=False),
]


def test_sources_round_trip() -> None:
    data = sources_to_opml(SOURCES, title="My sources")
    assert parse_opml(data, file="sources.opml") == SOURCES


def test_export_is_opml_2() -> None:
    root = etree.fromstring(sources_to_opml(SOURCES, title="My sources"))
    assert (root.tag, root.get("version")) == ("opml", "2.0")
    assert root.findtext("head/title") == "My sources"
    first = root.find("body/outline")
    assert first.attrib["type"] == "rss"
    assert first.attrib["xmlUrl"] == SOURCES[0].url
    assert first.attrib["category"] == "world,uk"


def test_reader_export_with_folders() -> None:
    data = b"""<?xml version="1.0" encoding="UTF-8"?>
<opml version="1.0">
  <head><title>Feedly</title></head>
  <body>
    <outline text="World" title="World">
      <outline type="rss" text="Agency" xmlUrl="https://agency.example/feed" category="/news/,breaking"/>
      <outline text="Europe">
        <outline type="rss" title="Only a title" xmlUrl="https://eu.example/rss" language="de"/>
      </outline>
    </outline>
    <!-- the same feed in a second folder -->
    <outline text="Favourites">
      <outline type="rss" text="Agency again" xmlUrl="https://agency.example/feed"/>
    </outline>
    <outline type="rss" xmlUrl="https://nameless.example/feed.xml"/>
  </body>
</opml>"""
    assert parse_opml(data, file="feedly.opml") == [
        SourceConfig(
            "Agency",
            "https://agency.example/feed",
            tags=("World", "news", "breaking", "Favourites"),
        ),
        SourceConfig(
            "Only a title", "https://eu.example/rss", language="de", tags=("World", "Europe")
        ),
        SourceConfig("nameless.example", "https://nameless.example/feed.xml"),
    ]


MALFORMED = [
    ("truncated", b"<opml><body><outline text='x'", "opml"),
    ("not opml", b"<html><body/></html>", "opml"),
    ("no body", b"<opml version='2.0'><head/></opml>", "body"),
    (
        "script url",
        b"<opml><body><outline text='x' xmlUrl='javascript:alert(1)'/></body></opml>",
        "xmlUrl",
    ),
    ("relative url", b"<opml><body><outline text='x' xmlUrl='/feed.xml'/></body></opml>", "xmlUrl"),
    (
        "bad interval",
        b"<opml><body><outline xmlUrl='https://a.example/' interval='soon'/></body></opml>",
        "interval",
    ),
    (
        "external entity",
        b'<?xml version="1.0"?><!DOCTYPE opml [<!ENTITY x SYSTEM "file:///etc/passwd">]>'
        b'<opml><body><outline text="&x;" xmlUrl="https://a.example/"/></body></opml>',
        "opml",
    ),
    (
        "internal entity",
        b'<?xml version="1.0"?><!DOCTYPE opml [<!ENTITY x "expanded">]>'
        b'<opml><body><outline text="&x;" xmlUrl="https://a.example/"/></body></opml>',
        "opml",
    ),
]


@pytest.mark.parametrize(("case", "data", "key"), MALFORMED, ids=[m[0] for m in MALFORMED])
def test_malformed_opml_names_file_and_key(case: str, data: bytes, key: str) -> None:
    with pytest.raises(ConfigError) as caught:
        parse_opml(data, file="import.opml")
    assert (caught.value.file, caught.value.key) == ("import.opml", key)
    assert caught.value.line is not None
    assert str(caught.value).startswith("import.opml:")


def test_billion_laughs_is_refused_quickly() -> None:
    entities = "".join(f'<!ENTITY l{i} "{("&l" + str(i - 1) + ";") * 10}">' for i in range(1, 10))
    data = f'<?xml version="1.0"?><!DOCTYPE opml [<!ENTITY l0 "lol">{entities}]>'.encode()
    data += b'<opml><body><outline text="&l9;" xmlUrl="https://a.example/"/></body></opml>'
    with pytest.raises(ConfigError):
        parse_opml(data, file="bomb.opml")


def test_timelines_opml_lists_atom_feeds() -> None:
    settings = PublishSettings(base_url="https://feeds.example", title="Timelines")
    doc = TimelineDoc(
        slug="story-7",
        title="Quake\x00 in the north",
        description="Reports of the quake.",
        id="tag:feeds.example,2026:timeline/story-7",
        updated=datetime(2026, 3, 1, 12, 0, tzinfo=UTC),
        items=(),
    )
    root = etree.fromstring(timelines_to_opml([doc], settings))
    assert root.findtext("head/title") == "Timelines"
    assert root.findtext("head/dateModified") == "Sun, 01 Mar 2026 12:00:00 GMT"
    outline = root.find("body/outline")
    assert outline.attrib["xmlUrl"] == "https://feeds.example/timelines/story-7.atom"
    assert outline.attrib["htmlUrl"] == "https://feeds.example/timelines/story-7.html"
    assert outline.attrib["text"] == "Quake in the north"
    assert outline.attrib["description"].startswith("Reports of the quake.")
