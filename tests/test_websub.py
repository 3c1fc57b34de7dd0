"""WebSub: feeds advertise the hub, and the publisher's pings reach a real hub on 127.0.0.1."""

from __future__ import annotations

import asyncio
import dataclasses
import json
import socket
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from urllib.parse import parse_qs

import feedparser
import pytest
from lxml import etree
from test_publish import SETTINGS, hostile_doc

from aggregator.publish.feeds import render_atom, render_json, render_rss
from aggregator.settings import PublishSettings
from aggregator.websub import changed_topics, notify_hub

HUB_SETTINGS = dataclasses.replace(SETTINGS, websub_hub="https://hub.example/")
ATOM = "{http://www.w3.org/2005/Atom}"


class Hub(ThreadingHTTPServer):
    """A hub that records every ping; /refuse answers 400 like a hub rejecting a topic."""

    daemon_threads = True

    def __init__(self) -> None:
        super().__init__(("127.0.0.1", 0), _HubHandler)
        self.pings: list[tuple[str, str, dict[str, list[str]]]] = []
        self.lock = threading.Lock()

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.server_address[1]}"


class _HubHandler(BaseHTTPRequestHandler):
    server: Hub

    def do_POST(self) -> None:
        length = int(self.headers.get("Content-Length", "0"))
        form = parse_qs(self.rfile.read(length).decode("ascii"))
        with self.server.lock:
            self.server.pings.append((self.path, self.headers.get("Content-Type", ""), form))
        if self.path == "/refuse":
            body = b"topic not allowed"
            self.send_response(400)
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)
        else:
            self.send_response(204)
            self.end_headers()

    def log_message(self, format: str, *args: object) -> None:
        pass  # keep the test output clean


@pytest.fixture
def hub() -> Iterator[Hub]:
    server = Hub()
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield server
    server.shutdown()
    server.server_close()


def test_feeds_advertise_the_hub() -> None:
    doc = hostile_doc()
    atom = etree.fromstring(render_atom(doc, HUB_SETTINGS))
    assert [link.get("href") for link in atom.findall(f"{ATOM}link[@rel='hub']")] == [
        "https://hub.example/"
    ]
    # before the first entry, where RFC 4287's grammar wants feed metadata
    children = [child.tag for child in atom]
    assert children.index(f"{ATOM}link") < children.index(f"{ATOM}entry")
    rss = etree.fromstring(render_rss(doc, HUB_SETTINGS))
    channel = rss.find("channel")
    assert channel.find(f"{ATOM}link[@rel='hub']").get("href") == "https://hub.example/"
    assert channel.findtext("link") == "https://feeds.example/timelines/city-blast.html"
    hubs = json.loads(render_json(doc, HUB_SETTINGS))["hubs"]
    assert hubs == [{"type": "WebSub", "url": "https://hub.example/"}]
    assert feedparser.parse(render_atom(doc, HUB_SETTINGS)).bozo == 0


def test_no_hub_no_advertisement() -> None:
    doc = hostile_doc()
    assert b'rel="hub"' not in render_atom(doc, SETTINGS)
    assert b'rel="hub"' not in render_rss(doc, SETTINGS)
    assert "hubs" not in json.loads(render_json(doc, SETTINGS))


def test_unsafe_hub_is_not_advertised() -> None:
    bad = dataclasses.replace(SETTINGS, websub_hub="javascript:alert(1)")
    assert b"javascript" not in render_atom(hostile_doc(), bad)


def test_changed_topics_are_every_feed_of_each_timeline_and_all_stories() -> None:
    settings = PublishSettings(base_url="https://feeds.example/")
    assert changed_topics(["kursk", "kursk"], settings) == [
        "https://feeds.example/timelines/kursk.atom",
        "https://feeds.example/timelines/kursk.rss",
        "https://feeds.example/timelines/kursk.json",
        "https://feeds.example/timelines/all.atom",
        "https://feeds.example/timelines/all.rss",
        "https://feeds.example/timelines/all.json",
    ]
    assert changed_topics([], settings) == []


def test_notify_hub_posts_one_form_per_topic(hub: Hub) -> None:
    topics = changed_topics(["kursk"], PublishSettings(base_url="https://feeds.example"))
    errors = asyncio.run(notify_hub(hub.url + "/", topics))
    assert errors == []
    assert sorted(form["hub.url"][0] for _, _, form in hub.pings) == sorted(topics)
    for path, content_type, form in hub.pings:
        assert path == "/"
        assert content_type == "application/x-www-form-urlencoded"
        assert form["hub.mode"] == ["publish"]
        assert len(form["hub.url"]) == 1


def test_a_refusing_hub_is_reported_per_topic(hub: Hub) -> None:
    topics = ["https://feeds.example/timelines/a.atom", "https://feeds.example/timelines/b.atom"]
    errors = asyncio.run(notify_hub(hub.url + "/refuse", topics))
    assert len(errors) == 2
    assert all("HTTP 400" in e and "topic not allowed" in e for e in errors)
    assert {t for t in topics if any(t in e for e in errors)} == set(topics)


def test_an_unreachable_hub_is_an_error_not_an_exception() -> None:
    with socket.socket() as sock:  # a port that was free a moment ago: nothing listens there
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    errors = asyncio.run(notify_hub(f"http://127.0.0.1:{port}/", ["https://feeds.example/x"]))
    assert len(errors) == 1 and "unreachable" in errors[0]


def test_a_hub_that_is_not_http_is_refused_without_a_request() -> None:
    assert asyncio.run(notify_hub("file:///etc/passwd", ["https://feeds.example/x"])) == [
        "WebSub hub 'file:///etc/passwd' is not an http(s) URL; fix publish.websub_hub"
    ]


def test_nothing_changed_sends_nothing(hub: Hub) -> None:
    assert asyncio.run(notify_hub(hub.url, [])) == []
    assert hub.pings == []
