"""Running the demo: live beside the worker, or its whole week at once for `aggregator demo`.

Either way the outlets are fetched over HTTP on 127.0.0.1 like any source, so the
demo exercises the real pipeline from fetch to publish.
"""

from __future__ import annotations

import asyncio
import dataclasses
import logging
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import timedelta
from pathlib import Path

from aggregator.demo.outlets import SimClock, demo_sources, load_demo
from aggregator.demo.server import DemoServer
from aggregator.pipeline import CycleReport, Pipeline
from aggregator.publish.documents import write_documents
from aggregator.settings import DemoSettings, Settings, SourceConfig
from aggregator.store import open_store

log = logging.getLogger(__name__)

# Simulated time between two polls in `aggregator demo`: the cadence of the live demo
# as bundled (a poll every 5 s while a day lasts 10 s). Each step is a whole cycle
# (poll nine feeds, embed and cluster what is new, publish), so shorter steps cost
# time without changing what is published: 3-hour steps ran 65 cycles for 64 reports.
STEP = timedelta(hours=12)


@contextmanager
def live_demo_server(settings: DemoSettings) -> Iterator[DemoServer]:
    """Serve the outlets on settings.port, their clock running from the demo's start."""
    demo = load_demo()
    clock = SimClock(demo.start, demo.end, settings.seconds_per_day)
    with DemoServer(clock, port=settings.port, demo=demo) as server:
        log.info(
            "demo outlets at %s: %s to %s, one simulated day every %.0f s",
            server.base_url,
            demo.start.date(),
            demo.end.date(),
            settings.seconds_per_day,
        )
        yield server


def simulation_settings(settings: Settings, base_url: str, db_path: Path) -> Settings:
    """The given settings, polling only the demo outlets once per step, on a fresh database."""
    interval = STEP.total_seconds() * 0.8  # stays due every step despite the jitter
    sources = tuple(
        SourceConfig(name=name, url=url, language=language, interval=interval)
        for name, url, language in demo_sources(base_url)
    )
    return dataclasses.replace(
        settings,
        database_url=f"sqlite:///{db_path}",
        sources=sources,
        fetch=dataclasses.replace(settings.fetch, allow_private_networks=True),
        publish=dataclasses.replace(settings.publish, out_dir=""),
    )


def run_demo(settings: Settings, db_path: Path, out_dir: Path) -> tuple[list[Path], str]:
    """Poll the outlets every STEP of the simulated week, then write every document."""
    demo = load_demo()
    clock = SimClock.manual(demo.start, demo.end)
    total = CycleReport()
    with DemoServer(clock, port=0, demo=demo) as server:
        settings = simulation_settings(settings, server.base_url, db_path)
        store = open_store(settings.resolved_database_url)
        try:
            pipeline = Pipeline(settings, store, clock=clock.now)
            moment = demo.start
            while True:
                clock.set(moment)
                add_up(total, asyncio.run(pipeline.run_cycle()))
                if moment >= demo.end:
                    break
                moment = min(moment + STEP, demo.end)
            written = write_documents(store.documents(), out_dir)
        finally:
            store.close()
    return written, total.summary()


def add_up(total: CycleReport, report: CycleReport) -> None:
    """Add one cycle's report to the week's: counts add up, sets and lists join."""
    for field in dataclasses.fields(CycleReport):
        mine, theirs = getattr(total, field.name), getattr(report, field.name)
        if isinstance(mine, set):
            mine |= theirs
        elif isinstance(mine, list):
            setattr(total, field.name, sorted(set(mine) | set(theirs)))
        else:
            setattr(total, field.name, mine + theirs)
