"""Retention on today's clock: the demo's August 2024 week stays whole, across restarts.

The real worker's jobs (dispatch, cluster, publish, retention) run against the demo
outlets on 127.0.0.1 with every article of the week published, on a clock years after
the articles' dates. Retention counts an entry's age from when it was stored, so
nothing goes before `worker.retention_days` have passed since.
"""

from __future__ import annotations

import asyncio
import dataclasses
import json
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from lxml import etree

from aggregator.demo import DemoServer, SimClock, demo_sources, load_demo
from aggregator.pipeline import Pipeline
from aggregator.settings import Settings, load_settings
from aggregator.store import Store, open_store
from aggregator.worker import Worker

ROOT = Path(__file__).resolve().parent.parent
TODAY = datetime(2026, 12, 2, 19, 0, tzinfo=UTC)  # years after the demo's 5-13 August 2024


@dataclasses.dataclass
class Clocks:
    """The demo outlets' simulated August 2024 and the worker's own clock, years later."""

    outlets: SimClock
    worker: datetime = TODAY

    def next_day(self) -> bool:
        """The outlets publish another simulated day; the worker's clock moves an hour on.
        False once the demo's week is over."""
        if self.outlets.finished:
            return False
        self.outlets.set(self.outlets.now() + timedelta(days=1))
        self.worker += timedelta(hours=1)
        return True


@pytest.fixture
def clocks() -> Clocks:
    demo = load_demo()
    return Clocks(SimClock.manual(demo.start, demo.end))


@pytest.fixture
def outlets(clocks: Clocks) -> Iterator[DemoServer]:
    with DemoServer(clocks.outlets, port=0) as server:
        yield server


def demo_settings(server: DemoServer) -> Settings:
    """The bundled configuration (its outlets, their intervals, the Kursk timeline),
    the outlets served on the test's port."""
    base = load_settings(ROOT / "config" / "aggregator.toml", environ={})
    port = f"127.0.0.1:{server.port}/"
    sources = tuple(
        dataclasses.replace(s, url=s.url.replace(f"127.0.0.1:{base.demo.port}/", port))
        for s in base.sources
    )
    assert {s.url for s in sources} == {url for _, url, _ in demo_sources(f"http://{port}")}
    return dataclasses.replace(
        base,
        sources=sources,
        cluster=dataclasses.replace(base.cluster, method="tfidf"),  # no model to load
        demo=dataclasses.replace(base.demo, enabled=False),
    )


def start_worker(settings: Settings, store: Store, clocks: Clocks) -> Worker:
    """A worker process's state as at its start, on the worker's clock."""
    return Worker(settings, store, Pipeline(settings, store, clock=lambda: clocks.worker))


async def every_job(worker: Worker) -> None:
    """The worker's jobs in schedule order, retention last (it first runs a minute after
    the start in production, once the first polls are stored)."""
    await worker.dispatch()
    await worker.cluster()
    await worker.publish()
    await worker.retention()
    await worker.publish()
    assert worker.health.snapshot(), "the jobs ran"
    for name, health in worker.health.snapshot().items():
        assert health.consecutive_failures == 0, f"{name}: {health.last_error}"


async def the_demo_week(worker: Worker, clocks: Clocks) -> None:
    """Poll the outlets as their week unfolds, a simulated day an hour apart."""
    while clocks.next_day():
        await every_job(worker)


def kursk_items(store: Store) -> list[dict[str, str]]:
    document = store.document("/timelines/kursk.json")
    assert document is not None, "the Kursk timeline is published"
    items: list[dict[str, str]] = json.loads(document.body)["items"]
    return items


def opml_feeds(store: Store, base: str) -> list[str]:
    """The path of every feed the published OPML lists."""
    document = store.document("/timelines.opml")
    assert document is not None
    return [
        o.get("xmlUrl").removeprefix(base) for o in etree.fromstring(document.body).iter("outline")
    ]


def test_the_demo_week_stays_whole_on_todays_clock_across_restarts(
    outlets: DemoServer, clocks: Clocks, tmp_path: Path
) -> None:
    settings = demo_settings(outlets)
    store = open_store(f"sqlite:///{tmp_path / 'aggregator.db'}")
    try:
        asyncio.run(the_demo_week(start_worker(settings, store, clocks), clocks))
        stored = store.counts()["entries"]
        assert stored == len(load_demo().articles) and store.tombstones() == 0
        first = kursk_items(store)
        assert min(item["date_published"] for item in first).startswith("2024-08-06")

        # Restarted an hour later: a new worker, the same database and outlets.
        clocks.worker += timedelta(hours=1)
        asyncio.run(every_job(start_worker(settings, store, clocks)))
        assert store.counts()["entries"] == stored and store.tombstones() == 0
        again = kursk_items(store)
        assert [i["id"] for i in again] == [i["id"] for i in first]

        # No item id is shared by two feeds the OPML lists.
        owners: dict[str, str] = {}
        for path in opml_feeds(store, settings.publish.base_url):
            document = store.document(path.removesuffix(".atom") + ".json")
            assert document is not None, path
            for item in json.loads(document.body)["items"]:
                assert item["id"] not in owners, (
                    f"{item['id']} in {owners.get(item['id'])} and {path}"
                )
                owners[item["id"]] = path

        # Once stored for the retention age, the week goes, and its tombstones stay.
        clocks.worker = TODAY + timedelta(days=settings.worker.retention_days, hours=12)
        asyncio.run(every_job(start_worker(settings, store, clocks)))
        assert store.counts()["entries"] == 0 and store.tombstones() == stored
    finally:
        store.close()
