"""Crash safety: a worker killed with SIGKILL 20 times during ingest loses and doubles nothing.

Feeds on 127.0.0.1 grow as they are polled, one item every second request, and
answer 304 to their own ETag. Each worker run is killed at an event, the kinds in
turn: with its first request held unanswered by the feed server, after its first
poll is stored, with a request held after that, after its fourth poll is stored.
At each kill with a request held, the held source is checked to be still claimed
by the killed worker: its poll was in flight, not stored. The feeds stop growing
before the last kills, then a last worker polls until it has caught up, polls
every source twice more and stops with SIGTERM. Stored entries must equal what
the frozen feeds list. Had a killed worker stored a poll's fetch state without
its entries, the next poll of the unchanged feed would be told "not modified"
and never see them.
A second test kills a worker between storing entries and storing their vectors: the
leader computes them, and each entry is clustered once, with a vector.
Runs on SQLite and on a scratch PostgreSQL database.
"""

from __future__ import annotations

import hashlib
import threading
from collections import defaultdict
from collections.abc import Iterator
from pathlib import Path

import pytest
from httpserver import FeedServer, Handler, Request
from sqlalchemy import text
from test_reload import EVENT_WAIT, WorkerProcess
from test_store import scratch_database

from aggregator.store import open_store

SOURCES = 16
GROW_EVERY = 2  # requests of a feed per new item: the second of a pair may be answered 304
KILLS = 20
# The last kills find the feeds no longer growing: one landing between storing a
# poll's fetch state and its entries, were they apart, would lose them for good.
FROZEN_KILLS = 4
# Each run is killed at the next of these: its first request held, its first poll
# stored, a request held after its first poll is stored, its fourth poll stored.
KILL_AT = (("held", 0), ("stored", 1), ("held", 1), ("stored", 4))


class GrowingFeeds:
    """Feeds listing every item so far, one more every GROW_EVERY requests until frozen.

    A known ETag is answered 304. After `hold(agent)`, the next request with that
    User-Agent waits unanswered until `let_go()`; `held` is set once it waits.
    """

    def __init__(self, server: FeedServer) -> None:
        self.lock = threading.Lock()
        self.frozen = False
        self.items = [1] * SOURCES
        self.answered = [0] * SOURCES
        self.not_modified = [0] * SOURCES
        self.held = threading.Event()
        self.held_source = -1
        self._hold_for: str | None = None
        self._gate = threading.Event()
        for n in range(SOURCES):
            server.route(f"/feed/{n}.xml", self._answerer(n))

    def hold(self, agent: str) -> None:
        with self.lock:
            self.held.clear()
            self._gate.clear()
            self._hold_for = agent

    def let_go(self) -> None:
        with self.lock:
            self._hold_for = None
        self._gate.set()

    def freeze(self) -> None:
        with self.lock:
            self.frozen = True

    def listed(self) -> dict[str, set[str]]:
        with self.lock:
            return {f"source-{n}": set(guids(n, self.items[n])) for n in range(SOURCES)}

    def counts(self) -> list[tuple[int, int]]:
        """Per feed: the requests answered, and how many of them with 304."""
        with self.lock:
            return list(zip(self.answered, self.not_modified, strict=True))

    def since(self, before: list[tuple[int, int]]) -> list[tuple[int, int]]:
        """`counts()` less the `before` counts."""
        now = self.counts()
        return [(a - a0, m - m0) for (a, m), (a0, m0) in zip(now, before, strict=True)]

    def _answerer(self, n: int) -> Handler:
        def answer(request: Request) -> tuple[int, dict[str, str], bytes]:
            with self.lock:
                hold = self._hold_for is not None
                hold = hold and request.headers.get("user-agent") == self._hold_for
                if hold:
                    self._hold_for = None
                    self.held_source = n
                    self.held.set()
            if hold:
                self._gate.wait()
            with self.lock:
                body = feed(n, guids(n, self.items[n]))
                self.answered[n] += 1
                if not self.frozen and self.answered[n] % GROW_EVERY == 0:
                    self.items[n] += 1
                etag = f'"{hashlib.sha256(body).hexdigest()[:16]}"'
                if request.headers.get("if-none-match") == etag:
                    self.not_modified[n] += 1
                    return 304, {"ETag": etag}, b""
            return 200, {"Content-Type": "application/rss+xml", "ETag": etag}, body

        return answer


def guids(n: int, items: int) -> list[str]:
    return [f"c{n}-{i}" for i in range(items)]


def feed(n: int, guids: list[str]) -> bytes:
    items = "".join(
        f"<item><guid>{guid}</guid><title>Report {guid} w{hash_word(guid, 1)} w{hash_word(guid, 2)}"
        f"</title><link>http://outlet{n}.test/{guid}</link>"
        f"<description>Text of report {guid}, w{hash_word(guid, 3)}.</description></item>"
        for guid in guids
    )
    return (
        f'<?xml version="1.0"?><rss version="2.0"><channel><title>Outlet {n}</title>'
        f"<link>http://outlet{n}.test/</link><description>d</description>{items}</channel></rss>"
    ).encode()


def hash_word(guid: str, salt: int) -> int:
    return int(hashlib.sha256(f"{guid}/{salt}".encode()).hexdigest()[:4], 16)


def settings_text(server: FeedServer, database: str) -> str:
    lines = [
        f'database_url = "{database}"',
        "[fetch]",
        "allow_private_networks = true",
        "timeout_total = 10",  # far above the moment a held request waits for its kill
        "[worker]",
        "cycle_seconds = 0.2",
        "lease_seconds = 2",  # a killed worker's claims free up soon
        # about leases and crash safety: the model-free clusterer keeps a leader's
        # cycle well inside the deliberately short lease
        "[cluster]",
        'method = "tfidf"',
    ]
    for n in range(SOURCES):
        lines += [
            "[[sources]]",
            f'name = "source-{n}"',
            f'url = "{server.url(f"/feed/{n}.xml")}"',
            "interval = 0.5",
        ]
    return "\n".join(lines) + "\n"


@pytest.fixture(params=["sqlite", "postgres"])
def database(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[str]:
    with scratch_database(request.param, tmp_path) as url:
        yield url


def test_sigkill_during_ingest_loses_and_doubles_nothing(database: str, tmp_path: Path) -> None:
    with FeedServer() as server:
        feeds = GrowingFeeds(server)
        config = tmp_path / "aggregator.toml"
        config.write_text(settings_text(server, database))
        try:
            for run in range(KILLS):
                if run == KILLS - FROZEN_KILLS:
                    feeds.freeze()
                kill_at(run, feeds, config, database)
        finally:
            feeds.let_go()

        listed = feeds.listed()
        last = WorkerProcess(config)
        try:
            # Up before it is stopped: a SIGTERM during start-up is not a clean stop.
            last.wait_for_line("polled 'source-")
            everything = sum(len(keys) for keys in listed.values())
            last.wait_for(lambda: stored_count(database) == everything, EVENT_WAIT, "catching up")
            # Two more polls of every source: they must add nothing.
            caught_up = feeds.counts()
            last.wait_for(
                lambda: min(answered for answered, _ in feeds.since(caught_up)) >= 2,
                EVENT_WAIT,
                "two more polls of every source",
            )
        finally:
            code = last.stop()
    assert code == 0, last.output

    assert stored_keys(database) == listed, "stored entries equal the listed entries"
    # What makes the invariant above mean something: the unchanged feeds were asked
    # with their ETags, so a fetch state stored without its entries would hide them.
    assert all(not_modified for _, not_modified in feeds.since(caught_up)), "304s at the end"


def kill_at(run: int, feeds: GrowingFeeds, config: Path, database: str) -> None:
    """Start a worker and SIGKILL it at the run's event (KILL_AT)."""
    event, polls = KILL_AT[run % len(KILL_AT)]
    agent = f"crash-test/{run}"  # tells this worker's requests from a killed one's
    if event == "held" and not polls:
        feeds.hold(agent)  # before it starts: its very first request
    worker = WorkerProcess(config, {"AGGREGATOR_FETCH__USER_AGENT": agent})
    try:
        if polls:
            worker.wait_for(lambda: polls_stored(worker) >= polls, EVENT_WAIT, f"{polls} polls")
        if event == "held":
            if polls:
                feeds.hold(agent)
            worker.wait_for(feeds.held.is_set, EVENT_WAIT, "a request held")
    finally:
        worker.kill()
    if event == "held":
        source = f"source-{feeds.held_source}"
        owner = claim_owner(database, source)
        assert owner and owner.split(":")[-2] == str(worker.process.pid), (
            f"{source}, held in flight, is claimed by the killed worker (not {owner})"
        )
        feeds.let_go()


def polls_stored(worker: WorkerProcess) -> int:
    return sum("polled 'source-" in line for line in worker.lines)


def query(database: str, sql: str, **values: object) -> list[tuple[object, ...]]:
    store = open_store(database, create=False)
    try:
        with store.engine.connect() as connection:
            return [tuple(row) for row in connection.execute(text(sql), values).all()]
    finally:
        store.close()


def claim_owner(database: str, source: str) -> str | None:
    rows = query(
        database,
        "SELECT fetchstate.lease_owner FROM fetchstate "
        "JOIN source ON source.id = fetchstate.source_id WHERE source.name = :name",
        name=source,
    )
    return None if rows[0][0] is None else str(rows[0][0])


def stored_count(database: str) -> int:
    return int(query(database, "SELECT count(*) FROM entry")[0][0])  # type: ignore[call-overload]


def stored_keys(database: str) -> dict[str, set[str]]:
    found: defaultdict[str, set[str]] = defaultdict(set)
    rows = query(
        database,
        "SELECT source.name, entry.key FROM entry JOIN source ON source.id = entry.source_id",
    )
    for name, key in rows:
        found[str(name)].add(str(key))
    return dict(found)


# -- a worker killed between storing entries and storing their vectors ----------

# Loaded by the first worker's Python at start-up (PYTHONPATH): its embedding
# model says so in a file, then hangs, so the test kills it exactly between
# storing a poll's entries and storing their vectors.
HANGING_EMBEDDER = """
import os, pathlib, time
import aggregator.cluster.embedding as embedding

def hang(docs):
    pathlib.Path(os.environ["AGGREGATOR_TEST_EMBED_MARKER"]).write_text(str(len(docs)))
    time.sleep(3600)

embedding.embed = hang
"""
VECTOR_SOURCES = 3
VECTOR_ITEMS = 4


def vector_settings_text(server: FeedServer, database: str) -> str:
    lines = [
        f'database_url = "{database}"',
        "[fetch]",
        "allow_private_networks = true",
        "[worker]",
        "cycle_seconds = 0.2",
        "lease_seconds = 2",  # the leader waits this long for a worker's vector
        "[cluster]",
        'method = "embedding"',
    ]
    for n in range(VECTOR_SOURCES):
        lines += ["[[sources]]", f'name = "source-{n}"', f'url = "{server.url(f"/v/{n}.xml")}"']
    return "\n".join(lines) + "\n"


def test_sigkill_between_storing_entries_and_their_vectors(database: str, tmp_path: Path) -> None:
    hooks = tmp_path / "hooks"
    hooks.mkdir()
    (hooks / "sitecustomize.py").write_text(HANGING_EMBEDDER)
    marker = tmp_path / "embedding-started"
    with FeedServer() as server:
        for n in range(VECTOR_SOURCES):
            guids = [f"v{n}-{i}" for i in range(VECTOR_ITEMS)]
            server.serve_feed(f"/v/{n}.xml", feed(n, guids))
        config = tmp_path / "aggregator.toml"
        config.write_text(vector_settings_text(server, database))
        first = WorkerProcess(
            config, {"PYTHONPATH": str(hooks), "AGGREGATOR_TEST_EMBED_MARKER": str(marker)}
        )
        try:
            first.wait_for(marker.exists, 60, "the first worker computing vectors")
            listed = VECTOR_SOURCES * VECTOR_ITEMS
            # Each poll is stored as soon as it is done, so at least the first one is.
            stored = stored_count(database)
            assert stored and stored % VECTOR_ITEMS == 0, "whole polls are stored"
            assert vectors_stored(database) == 0, "and none has its vector yet"
        finally:
            first.kill()

        second = WorkerProcess(config)
        try:
            second.wait_for(lambda: clustered_count(database) == listed, 120, "clustering")
        finally:
            code = second.stop()
    assert code == 0, second.output
    rows = query(database, "SELECT clustered, story_id, embedding FROM entry")
    assert len(rows) == listed
    assert all(clustered and story for clustered, story, _ in rows), "each clustered, in a story"
    vectors = [vector for *_, vector in rows]
    assert all(isinstance(v, bytes) and len(v) == 768 for v in vectors), "each with its vector"
    counted = query(database, "SELECT sum(entry_count) FROM story")
    assert counted[0][0] == listed, "no entry counted in two stories"


def vectors_stored(database: str) -> int:
    rows = query(database, "SELECT count(*) FROM entry WHERE embedding IS NOT NULL")
    return int(rows[0][0])  # type: ignore[call-overload]


def clustered_count(database: str) -> int:
    return int(query(database, "SELECT count(*) FROM entry WHERE clustered")[0][0])  # type: ignore[call-overload]
