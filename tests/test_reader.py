"""A real feed reader (Debian's newsboat) subscribed to a timeline served on 127.0.0.1.

It reloads the feed, a person reads everything, the timeline gains reports and a
better title, it reloads again, and then once more with nothing new: the new
reports show as unread, no report shows twice, and the last reload is a 304.
Another reader imports the OPML of every timeline and shows each one whole.
"""

from __future__ import annotations

import dataclasses
import os
import shutil
import socket
import sqlite3
import subprocess
import threading
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest
import uvicorn
from test_publish import T0, item
from test_timelines import kursk_world

from aggregator.opml import timelines_to_opml
from aggregator.publish.feeds import render_atom, render_rss
from aggregator.serve import create_app
from aggregator.settings import PublishSettings
from aggregator.types import Document, TimelineDoc

NEWSBOAT = shutil.which("newsboat")
pytestmark = pytest.mark.skipif(
    NEWSBOAT is None,
    reason="newsboat is not installed (apt-get install newsboat; .ci/run installs it)",
)

RENDERERS: dict[str, tuple[Callable[[TimelineDoc, PublishSettings], bytes], str]] = {
    "atom": (render_atom, "application/atom+xml; charset=utf-8"),
    "rss": (render_rss, "application/rss+xml; charset=utf-8"),
}


@dataclass
class Published:
    """What the feed server answers with, switchable between reloads, and what it sent."""

    documents: dict[str, Document] = field(default_factory=dict)
    statuses: list[tuple[str, int]] = field(default_factory=list)

    def put(self, path: str, body: bytes, content_type: str, doc: TimelineDoc) -> None:
        etag = f'"{abs(hash(body)):x}"'
        self.documents[path] = Document(path, content_type, body, etag, doc.updated)


@pytest.fixture
def published() -> Iterator[tuple[Published, str]]:
    """The aggregator's app under uvicorn on a free 127.0.0.1 port, in a thread."""
    state = Published()
    app = create_app(state.documents.get, fresh_for=0)  # every reload sees the switch

    async def recording(scope: Any, receive: Any, send: Any) -> None:
        async def send_and_record(message: Any) -> None:
            if message["type"] == "http.response.start":
                state.statuses.append((scope["path"], message["status"]))
            await send(message)

        await app(scope, receive, send_and_record)

    # IPPROTO_TCP, not the default 0: asyncio sets TCP_NODELAY only on sockets that say
    # they are TCP, and without it small responses wait ~40 ms for a delayed ACK.
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM, socket.IPPROTO_TCP)
    sock.bind(("127.0.0.1", 0))
    server = uvicorn.Server(uvicorn.Config(recording, log_level="warning", lifespan="off"))
    thread = threading.Thread(target=server.run, kwargs={"sockets": [sock]}, daemon=True)
    thread.start()
    while not server.started:
        assert thread.is_alive(), "the feed server did not start"
        threading.Event().wait(0.02)
    yield state, f"http://127.0.0.1:{sock.getsockname()[1]}"
    server.should_exit = True
    thread.join(10)
    sock.close()


def timeline(base_url: str) -> TimelineDoc:
    items = tuple(
        item(n, T0 + timedelta(hours=n), title=f"Report {n}", link=f"{base_url}/articles/{n}")
        for n in (3, 2, 1)
    )
    return TimelineDoc(
        slug="quake",
        title="Quake",
        description="Reports of the quake.",
        id="tag:127.0.0.1,2026:timeline/quake",
        updated=T0 + timedelta(hours=3),
        items=items,
    )


def one_cycle_later(doc: TimelineDoc, base_url: str) -> TimelineDoc:
    """Two new reports, an edited one, and a better title for the timeline."""
    new = tuple(
        item(n, T0 + timedelta(hours=n), title=f"Report {n}", link=f"{base_url}/articles/{n}")
        for n in (5, 4)
    )
    edited = dataclasses.replace(
        doc.items[0], title="Report 3, corrected", updated=T0 + timedelta(hours=6)
    )
    return dataclasses.replace(
        doc,
        title="Quake in the north: dozens hurt",
        updated=T0 + timedelta(hours=6),
        items=(*new, edited, *doc.items[1:]),
    )


class Newsboat:
    """newsboat run non-interactively with its own config, URL list and cache in tmp_path."""

    def __init__(self, tmp_path: Path, feed_url: str) -> None:
        self.home = tmp_path
        self.urls = tmp_path / "urls"
        self.urls.write_text(feed_url + "\n")
        self.config = tmp_path / "config"
        self.config.write_text("download-retries 1\ndownload-timeout 10\n")
        self.cache = tmp_path / "cache.db"
        self.feed_url = feed_url

    def run(self, *commands: str) -> str:
        env = {
            key: value
            for key, value in os.environ.items()
            if not key.lower().endswith("_proxy")  # loopback only, never through a proxy
        }
        env.update(HOME=str(self.home), XDG_CONFIG_HOME=str(self.home), TERM="dumb")
        assert NEWSBOAT is not None
        command = [NEWSBOAT, "-u", str(self.urls), "-c", str(self.cache), "-C", str(self.config)]
        done = subprocess.run(
            [*command, *(commands if commands[0].startswith("-") else ("-x", *commands))],
            env=env,
            capture_output=True,
            text=True,
            timeout=60,
            stdin=subprocess.DEVNULL,
        )
        assert done.returncode == 0, done.stderr
        return done.stdout

    def items(self, feed_url: str | None = None) -> list[tuple[str, str, int]]:
        """(guid, title, unread) of every item of the feed, as the reader shows them."""
        with sqlite3.connect(self.cache) as db:
            rows = db.execute(
                "SELECT guid, title, unread FROM rss_item WHERE feedurl = ? AND deleted = 0",
                (feed_url or self.feed_url,),
            ).fetchall()
        return [(str(guid), str(title), int(unread)) for guid, title, unread in rows]

    def read_everything(self) -> None:
        # What a person does between reloads: opens the feed and reads every item.
        with sqlite3.connect(self.cache) as db:
            db.execute("UPDATE rss_item SET unread = 0")


@pytest.mark.parametrize("kind", sorted(RENDERERS))
def test_newsboat_shows_new_reports_once(
    published: tuple[Published, str], tmp_path: Path, kind: str
) -> None:
    state, base_url = published
    render, content_type = RENDERERS[kind]
    settings = PublishSettings(base_url=base_url)
    path = f"/timelines/quake.{kind}"
    reader = Newsboat(tmp_path, base_url + path)

    first = timeline(base_url)
    state.put(path, render(first, settings), content_type, first)
    reader.run("reload")
    shown = reader.items()
    assert sorted(guid for guid, _, _ in shown) == sorted(i.id for i in first.items)
    assert all(unread for _, _, unread in shown)
    reader.read_everything()

    later = one_cycle_later(first, base_url)
    state.put(path, render(later, settings), content_type, later)
    reader.run("reload")
    shown = reader.items()
    guids = [guid for guid, _, _ in shown]
    assert len(guids) == len(set(guids)) == 5  # no report twice
    assert sorted(guid for guid, _, unread in shown if unread) == sorted(
        i.id for i in later.items[:2]
    )  # only the two new reports are unread
    assert "Report 3, corrected" in [title for _, title, _ in shown]
    assert reader.run("print-unread").strip().startswith("2 unread articles")

    reader.run("reload")  # nothing changed: a conditional request, answered 304
    assert state.statuses[-1] == (path, 304)
    assert [guid for guid, _, _ in reader.items()] == guids


def test_newsboat_importing_the_opml_shows_every_timeline_whole(
    published: tuple[Published, str], tmp_path: Path
) -> None:
    # newsboat keeps each item id once across all its feeds: a report listed by the
    # Kursk timeline and by its story's own timeline must carry two ids, or one of
    # the two feeds shows up with reports missing.
    state, base_url = published
    settings = PublishSettings(base_url=base_url)
    docs = kursk_world(settings)
    for doc in docs:
        path = f"/timelines/{doc.slug}.atom"
        state.put(path, render_atom(doc, settings), RENDERERS["atom"][1], doc)
    opml = tmp_path / "timelines.opml"
    opml.write_bytes(timelines_to_opml(docs, settings))
    reader = Newsboat(tmp_path, "")
    reader.urls.write_text("")

    reader.run("-i", str(opml))
    assert len(reader.urls.read_text().split()) == len(docs)
    reader.run("reload")
    for doc in docs:
        shown = reader.items(f"{base_url}/timelines/{doc.slug}.atom")
        assert sorted(guid for guid, _, _ in shown) == sorted(i.id for i in doc.items), doc.slug
