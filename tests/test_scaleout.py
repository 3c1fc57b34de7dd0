"""Scale-out on PostgreSQL: three worker processes share 300 sources served on 127.0.0.1.

The feed server's request log must show each source fetched once per due time
(never twice within its interval), every worker doing its share, every served
entry stored once, and, when the leader is killed, another worker taking over
clustering. Skipped without AGGREGATOR_TEST_POSTGRES_URL.
"""

from __future__ import annotations

import hashlib
import threading
import time
from collections import defaultdict
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path

import pytest
from httpserver import FeedServer, Request
from sqlalchemy import text
from test_reload import WorkerProcess
from test_store import scratch_postgres

from aggregator.store import open_store

SOURCES = 300
INTERVAL = 6.0  # seconds between polls of one source: 50 polls/s for the three workers
LEASE = 6.0  # how long a dead worker's claims and leader lease hold
RUN_BEFORE_KILL = 12.0
RUN_AFTER_KILL = 14.0  # the leader lease lapses, another worker takes over and catches up
# Polls of one due time by two workers would start within moments of each other;
# polls of consecutive due times start about INTERVAL apart, less a connection's delay
# (the test server's short listen queue can hold a connection back by a second).
SAME_DUE_TIME = INTERVAL / 2


class GrowingFeeds:
    """300 feeds; each answer lists one item more than the last, so every poll brings news."""

    def __init__(self, server: FeedServer) -> None:
        self.lock = threading.Lock()
        self.polls: defaultdict[int, int] = defaultdict(int)
        self.served: defaultdict[int, set[str]] = defaultdict(set)
        for n in range(SOURCES):
            server.route(f"/feed/{n}.xml", self._answerer(n))

    def _answerer(self, n: int):  # type: ignore[no-untyped-def]
        def answer(request: Request) -> tuple[int, dict[str, str], bytes]:
            with self.lock:
                self.polls[n] += 1
                guids = [f"s{n}-{i}" for i in range(self.polls[n])]
                self.served[n].update(guids)
            return 200, {"Content-Type": "application/rss+xml"}, feed(n, guids)

        return answer


def feed(n: int, guids: list[str]) -> bytes:
    items = "".join(
        f"<item><guid>{guid}</guid><title>{headline(guid)}</title>"
        f"<link>http://outlet{n}.test/{guid}</link>"
        f"<description>{headline(guid)}.</description></item>"
        for guid in guids
    )
    return (
        f'<?xml version="1.0"?><rss version="2.0"><channel><title>Outlet {n}</title>'
        f"<link>http://outlet{n}.test/</link><description>d</description>{items}</channel></rss>"
    ).encode()


def headline(guid: str) -> str:
    """Words of its own for every item, so that each founds a small story of its own."""
    digest = hashlib.sha256(guid.encode()).digest()
    return " ".join(f"w{int.from_bytes(digest[i : i + 2], 'big')}" for i in range(0, 12, 2))


def settings_text(server: FeedServer) -> str:
    lines = [
        "[fetch]",
        "allow_private_networks = true",
        "concurrency = 16",
        "per_host_concurrency = 4",  # all outlets share one test host with a short listen queue
        "timeout_total = 2",
        "jitter = 0",
        "[worker]",
        "cycle_seconds = 0.5",
        f"lease_seconds = {LEASE}",
        # about leases and crash safety: the model-free clusterer keeps a leader's
        # cycle well inside the deliberately short lease
        "[cluster]",
        'method = "tfidf"',
    ]
    for n in range(SOURCES):
        lines += [
            "[[sources]]",
            f'name = "outlet-{n}"',
            f'url = "{server.url(f"/feed/{n}.xml")}"',
            f"interval = {INTERVAL}",
        ]
    return "\n".join(lines) + "\n"


@pytest.fixture
def database() -> Iterator[str]:
    with scratch_postgres() as url:
        open_store(url).close()  # migrate once, before the workers race to
        yield url


def test_three_workers_share_the_sources_and_fetch_each_once_per_due_time(
    database: str, tmp_path: Path
) -> None:
    with FeedServer() as server:
        feeds = GrowingFeeds(server)
        config = tmp_path / "aggregator.toml"
        config.write_text(settings_text(server))
        workers = [
            WorkerProcess(
                config,
                {"AGGREGATOR_DATABASE_URL": database, "AGGREGATOR_FETCH__USER_AGENT": f"w{i}"},
            )
            for i in range(3)
        ]
        leader = None  # stays None if finding the leader fails: stop every worker then
        try:
            time.sleep(RUN_BEFORE_KILL)
            leader = kill_the_leader(database, workers)
            killed_at = datetime.now(UTC)
            time.sleep(RUN_AFTER_KILL)
        finally:
            codes = [w.stop() for w in workers if w is not leader]
        requests = server.requests
    assert codes == [0, 0], "\n\n".join(w.output for w in workers)

    by_source: defaultdict[str, list[float]] = defaultdict(list)
    by_worker: defaultdict[str, int] = defaultdict(int)
    for request in requests:
        by_source[request.path].append(request.time_start)
        by_worker[request.headers.get("user-agent", "")] += 1
    assert len(by_source) == SOURCES
    for path, starts in by_source.items():
        starts.sort()
        gaps = [later - earlier for earlier, later in zip(starts, starts[1:], strict=False)]
        assert gaps and min(gaps) >= SAME_DUE_TIME, f"{path} fetched twice for one due time: {gaps}"
        assert len(starts) <= 1 + (starts[-1] - starts[0]) / (INTERVAL - 1), f"{path}: {gaps}"
    assert set(by_worker) == {"w0", "w1", "w2"}, by_worker
    assert min(by_worker.values()) >= SOURCES / 10, f"every worker did its share: {by_worker}"

    stored = stored_keys(database)
    assert sum(len(keys) for keys in stored.values()) == sum(len(k) for k in feeds.served.values())
    for n, served in feeds.served.items():
        assert stored[f"outlet-{n}"] == served, f"outlet-{n}: stored differs from served"

    taken_over = [w for w in workers if w is not leader and "(term 2)" in w.output]
    assert len(taken_over) == 1, "one other worker took the leader lease over"
    assert clustered_after(database, killed_at) > 0, "and clustered what arrived after"


def kill_the_leader(database: str, workers: list[WorkerProcess]) -> WorkerProcess:
    store = open_store(database, create=False)
    try:
        leader = store.leader()
    finally:
        store.close()
    assert leader is not None and leader.owner is not None and leader.term == 1
    pid = int(leader.owner.split(":")[1])
    [process] = [w for w in workers if w.process.pid == pid]
    process.kill()
    return process


def stored_keys(database: str) -> dict[str, set[str]]:
    store = open_store(database, create=False)
    try:
        with store.engine.connect() as connection:
            rows = connection.execute(
                text(
                    "SELECT source.name, entry.key FROM entry JOIN source ON source.id = entry.source_id"
                )
            ).all()
    finally:
        store.close()
    found: defaultdict[str, set[str]] = defaultdict(set)
    for name, key in rows:
        found[name].add(key)
    return found


def clustered_after(database: str, moment: datetime) -> int:
    store = open_store(database, create=False)
    try:
        with store.engine.connect() as connection:
            return int(
                connection.execute(
                    text("SELECT count(*) FROM entry WHERE clustered AND first_seen_at > :t"),
                    {"t": moment},
                ).scalar_one()
            )
    finally:
        store.close()
