"""One source's failure stays with that source: the batch around it is stored.

The faults are injected where no feed can reach today (a bug in the parser, an
entry the database refuses), because the point is the boundary itself: whatever
goes wrong with one source is recorded on it, and every other source is stored.
"""

from __future__ import annotations

import asyncio
import dataclasses
import json
import time
from collections.abc import Iterator, Sequence
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from httpserver import FeedServer
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from sqlalchemy import text
from sqlalchemy.exc import DataError
from test_pipeline import rss

from aggregator import pipeline as pipeline_module
from aggregator.pipeline import CycleReport, Pipeline
from aggregator.settings import Settings, SourceConfig, parse_settings
from aggregator.store import Store, open_store
from aggregator.types import EntryData, PollOutcome

T0 = datetime(2024, 8, 6, 6, 0, tzinfo=UTC)
HEALTHY = ["alpha", "beta", "gamma", "delta"]


def items(outlet: str, count: int = 3) -> list[tuple[str, str, str, datetime, str]]:
    return [
        (
            f"{outlet}-{n}",
            f"{outlet.title()} report number {n} on the regional council budget",
            f"The {outlet} council met on day {n} and voted on the budget.",
            T0 + timedelta(minutes=n),
            f"http://{outlet}.test/{n}",
        )
        for n in range(count)
    ]


@pytest.fixture
def server() -> Iterator[FeedServer]:
    with FeedServer() as srv:
        for outlet in [*HEALTHY, "broken"]:
            srv.serve_feed(f"/{outlet}.xml", rss(outlet, items(outlet)))
        yield srv


def settings_for(server: FeedServer, names: Sequence[str]) -> Settings:
    base = parse_settings("", environ={})
    return dataclasses.replace(
        base,
        sources=tuple(
            SourceConfig(name=name.title(), url=server.url(f"/{name}.xml"), interval=600)
            for name in names
        ),
        fetch=dataclasses.replace(base.fetch, allow_private_networks=True),
        cluster=dataclasses.replace(base.cluster, method="tfidf"),
    )


class Counted(pipeline_module.NoEvents):
    def __init__(self) -> None:
        self.failures: list[str] = []

    def failed(self, stage: str) -> None:
        self.failures.append(stage)


def statuses(store: Store) -> dict[str, Any]:
    return {s.name: s for s in store.source_statuses()}


def test_a_source_that_breaks_the_parser_leaves_the_batch_stored(
    server: FeedServer, store: Store, monkeypatch: pytest.MonkeyPatch, caplog: Any
) -> None:
    real_parse = pipeline_module.parse_feed

    def parse(body: bytes, headers: Any, *, url: str, source: str, **more: Any) -> Any:
        if source == "Broken":
            raise RuntimeError("a bug the parser has not met before")
        return real_parse(body, headers, url=url, source=source, **more)

    monkeypatch.setattr(pipeline_module, "parse_feed", parse)
    # The broken source sits in the middle of the batch.
    names = ["alpha", "beta", "broken", "gamma", "delta"]
    events = Counted()
    now = T0 + timedelta(hours=1)
    pipeline = Pipeline(settings_for(server, names), store, clock=lambda: now, events=events)

    report = asyncio.run(pipeline.dispatch())

    assert (report.polled, report.errors, report.new_entries) == (5, 1, 12)
    found = statuses(store)
    for name in HEALTHY:
        assert found[name.title()].entries == 3 and found[name.title()].status == "ok"
    broken = found["Broken"]
    assert broken.status == "error" and broken.last_error_code == "internal_error"
    assert "RuntimeError" in broken.last_error and "report" in broken.last_error
    assert broken.next_check_at is not None and broken.next_check_at > now
    assert events.failures == ["ingest"]
    tracebacks = [r for r in caplog.records if r.exc_info and "Broken" in r.getMessage()]
    assert len(tracebacks) == 1, "logged once, with its traceback"
    # Its claim was handed back: nothing stays leased to this worker.
    assert store.claim_due(now + timedelta(days=1), "another", lease_s=60, limit=10)
    assert pipeline.store.release_claims(pipeline.owner) == 0


def test_an_entry_the_database_refuses_costs_its_feed_nothing_else(
    server: FeedServer, store: Store, monkeypatch: pytest.MonkeyPatch
) -> None:
    poisoned = items("broken", 4)
    poisoned[2] = (poisoned[2][0], "POISON " + poisoned[2][1], *poisoned[2][2:])
    server.serve_feed("/broken.xml", rss("broken", poisoned))
    real_record = store.record_poll

    def record_poll(
        source_id: int,
        outcome: PollOutcome,
        entries: Sequence[EntryData] = (),
        *,
        owner: str | None = None,
    ) -> Any:
        if any(e.title and e.title.startswith("POISON") for e in entries):
            raise DataError("INSERT INTO entry ...", {}, Exception("value refused"))
        return real_record(source_id, outcome, entries, owner=owner)

    monkeypatch.setattr(store, "record_poll", record_poll)
    events = Counted()
    pipeline = Pipeline(
        settings_for(server, ["alpha", "broken", "beta"]),
        store,
        clock=lambda: T0 + timedelta(hours=1),
        events=events,
    )

    report = asyncio.run(pipeline.dispatch())

    assert report.new_entries == 3 + 3 + 3
    broken = statuses(store)["Broken"]
    assert broken.entries == 3
    assert broken.last_error_code == "entries_refused"
    assert broken.last_error.startswith("1 of 4 entries could not be stored")
    assert statuses(store)["Alpha"].entries == 3 and statuses(store)["Beta"].entries == 3
    assert events.failures == ["ingest"]


def test_an_entry_the_clusterer_cannot_place_stands_alone(
    server: FeedServer, sqlite_store: Store, monkeypatch: pytest.MonkeyPatch
) -> None:
    from aggregator.cluster.assigner import StoryAssigner

    poisoned = items("broken")
    poisoned[1] = (poisoned[1][0], "POISON " + poisoned[1][1], *poisoned[1][2:])
    server.serve_feed("/broken.xml", rss("broken", poisoned))
    real_add, real_restore = StoryAssigner.add, StoryAssigner.restore

    def add(self: StoryAssigner, doc: Any, vector: Any = None) -> Any:
        if doc.title.startswith("POISON"):
            raise OverflowError("date value out of range")
        return real_add(self, doc, vector)

    def restore(self: StoryAssigner, doc: Any, assignment: Any, vector: Any = None) -> None:
        if doc.title.startswith("POISON"):
            raise OverflowError("date value out of range")
        real_restore(self, doc, assignment, vector)

    monkeypatch.setattr(StoryAssigner, "add", add)
    monkeypatch.setattr(StoryAssigner, "restore", restore)
    events = Counted()
    settings = settings_for(server, ["alpha", "broken", "beta"])
    clock = lambda: T0 + timedelta(hours=1)  # noqa: E731
    pipeline = Pipeline(settings, sqlite_store, clock=clock, events=events)
    asyncio.run(pipeline.dispatch())

    assert pipeline.cluster() == 9
    assert sqlite_store.pending_docs(10) == []
    assert events.failures == ["cluster"]
    # A new leader replays the window past the same entry and goes on (without the
    # snapshot the first one saved on stop, so that it replays rather than resumes).
    pipeline.close()
    with sqlite_store.engine.begin() as connection:
        connection.execute(text("DELETE FROM clustersnapshot"))
    restarted = Pipeline(settings, sqlite_store, clock=clock, events=events)
    assert restarted.cluster() == 0 and events.failures == ["cluster", "cluster"]


def test_a_timeline_that_cannot_be_rendered_leaves_the_others_published(
    server: FeedServer, sqlite_store: Store, monkeypatch: pytest.MonkeyPatch
) -> None:
    from aggregator import timelines

    real_story_timeline = timelines.story_timeline

    def story_timeline(story: Any, entries: Any, settings: Any) -> Any:
        if any(e.title.startswith("Broken") for e in entries):
            raise ValueError("an entry the renderer cannot take")
        return real_story_timeline(story, entries, settings)

    monkeypatch.setattr(timelines, "story_timeline", story_timeline)
    rates = [
        (f"rates-{n}", title, title, T0 + timedelta(minutes=n), f"http://alpha.test/rates/{n}")
        for n, title in enumerate(
            [
                "Central bank holds interest rate at 4.35 percent",
                "Central bank keeps interest rate on hold at 4.35 percent",
            ]
        )
    ]
    server.serve_feed("/alpha.xml", rss("alpha", rates))
    events = Counted()
    settings = settings_for(server, ["alpha", "broken"])
    settings = dataclasses.replace(
        settings, publish=dataclasses.replace(settings.publish, min_sources=1)
    )
    pipeline = Pipeline(
        settings, sqlite_store, clock=lambda: T0 + timedelta(hours=1), events=events
    )
    asyncio.run(pipeline.dispatch())
    pipeline.cluster()

    published = pipeline.publish()

    assert published, "the healthy stories are published"
    paths = {doc.path for doc in sqlite_store.documents()}
    assert "/index.html" in paths and "/timelines/all.atom" in paths
    assert "publish" in events.failures


# -- hostile sources among healthy ones, through the whole ingest -----------------

_ODD_VALUES = st.sampled_from(
    [
        "²",
        "9" * 5000,
        "-1",
        "nan",
        "&#xD800;",
        "&#x110000;",
        "0001-01-01T00:00:00+14:00",
        "Fri, 31 Dec 9999 23:59:59 -1400",
        "<!DOCTYPE x " * 50,
        "@ (" * 200,
        "&lt;a " * 200,
        "<div>" * 300,
        "\x00",
        "",
    ]
)


@st.composite
def hostile_bodies(draw: st.DrawFn) -> tuple[bytes, dict[str, str]]:
    """A broken or odd feed body with odd headers, built from the shapes seen in the wild."""
    odd = draw(st.lists(_ODD_VALUES, min_size=1, max_size=4))
    kind = draw(st.sampled_from(["rss-fields", "truncated", "bytes", "json"]))
    if kind == "rss-fields":
        fields = "".join(
            f"<{tag}>{value}</{tag}>"
            for tag, value in zip(["title", "pubDate", "author", "description"], odd, strict=False)
        )
        body = (
            f'<?xml version="1.0"?><rss version="2.0"><channel><title>x</title>'
            f"<ttl>{odd[0]}</ttl><item><guid>g1</guid>{fields}</item>"
            f"<item><title>plain</title><link>http://odd.test/2</link></item></channel></rss>"
        ).encode("utf-8", "surrogatepass")
    elif kind == "truncated":
        full = rss("odd", items("odd", 2))
        body = full[: draw(st.integers(0, len(full)))]
    elif kind == "json":
        body = json.dumps(
            {
                "version": "https://jsonfeed.org/version/1.1",
                "title": "odd",
                "items": [{"id": odd[0], "date_published": odd[-1], "title": odd[-1]}],
            }
        ).encode()
    else:
        body = draw(st.binary(max_size=2000))
    headers = {
        name: value
        for name, value in zip(
            ["Cache-Control", "Retry-After", "Age", "Expires"],
            [f"max-age={odd[0]}", odd[-1], odd[0], odd[-1]],
            strict=False,
        )
        if value.isprintable() and value.isascii() and len(value) < 200
    }
    return body, headers


@settings(
    max_examples=25,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)
@given(hostile=st.lists(hostile_bodies(), min_size=1, max_size=3))
def test_hostile_sources_never_cost_the_healthy_ones_their_entries(
    server: FeedServer, tmp_path_factory: pytest.TempPathFactory, hostile: list[Any]
) -> None:
    names = []
    for n, (body, headers) in enumerate(hostile):
        name = f"odd{n}"
        server.serve_feed(f"/{name}.xml", body, headers=headers)
        names.append(name)
    # Healthy sources on both sides of the hostile ones, in one batch.
    names = ["alpha", "beta", *names, "gamma", "delta"]
    store = open_store(f"sqlite:///{tmp_path_factory.mktemp('db') / 'hostile.db'}")
    try:
        pipeline = Pipeline(
            settings_for(server, names), store, clock=lambda: T0 + timedelta(hours=1)
        )
        report = asyncio.run(pipeline.dispatch())
        found = statuses(store)
        assert report.polled == len(names)
        for name in HEALTHY:
            assert (found[name.title()].status, found[name.title()].entries) == ("ok", 3)
        for name in names[2:-2]:
            odd = found[name.title()]
            assert odd.status == "ok" or (odd.last_error_code and odd.last_error), odd
        assert store.release_claims(pipeline.owner) == 0, "every claim was handed back"
        # Each entry stored once: a second poll of the same bodies adds nothing new.
        again = Pipeline(settings_for(server, names), store, clock=lambda: T0 + timedelta(days=3))
        assert asyncio.run(again.dispatch()).new_entries == 0
    finally:
        store.close()


def dribbling(server: FeedServer, path: str) -> str:
    """A feed that sends one byte every 50 ms, for 10 s or until the server stops."""

    def dribble() -> Iterator[bytes]:
        for _ in range(200):
            if server.stopping.wait(0.05):
                return
            yield b" "

    return server.route(path, lambda req: (200, {"Content-Type": "application/rss+xml"}, dribble()))


def with_drip(server: FeedServer, names: Sequence[str], **worker: Any) -> Settings:
    """`settings_for` the healthy `names` and a dribbling source given up after 3 s."""
    base = settings_for(server, names)
    drip = SourceConfig(name="Drip", url=dribbling(server, "/drip.xml"), interval=3600)
    return dataclasses.replace(
        base,
        sources=(*base.sources[:1], drip, *base.sources[1:]),
        fetch=dataclasses.replace(base.fetch, timeout_total=3.0, timeout_read=5.0),
        worker=dataclasses.replace(base.worker, **worker),
    )


def test_a_dribbling_source_holds_up_no_other_source(server: FeedServer, store: Store) -> None:
    """The healthy sources of a batch are stored while a dribbling one is still being read."""
    pipeline = Pipeline(with_drip(server, HEALTHY), store, clock=lambda: T0 + timedelta(hours=1))

    async def watch() -> tuple[dict[str, int], CycleReport]:
        dispatch = asyncio.create_task(pipeline.dispatch())
        stored: dict[str, int] = {}
        for _ in range(100):  # 2 s at most, well inside the drip's 3 s
            await asyncio.sleep(0.02)
            stored = {name: s.entries for name, s in statuses(store).items()}
            if all(stored.get(name.title()) == 3 for name in HEALTHY):
                break
        assert not dispatch.done(), "the dribbling source is still being read"
        return stored, await dispatch

    stored, report = asyncio.run(watch())

    assert all(stored.get(name.title()) == 3 for name in HEALTHY), stored
    assert (report.polled, report.errors, report.new_entries) == (5, 1, 12)
    drip = statuses(store)["Drip"]
    assert drip.last_error_code == "timeout" and "fetch.timeout_total" in drip.last_error
    assert store.release_claims(pipeline.owner) == 0, "every claim was handed back"


def test_sources_falling_due_are_polled_while_a_dribbling_one_is_read(
    server: FeedServer, store: Store
) -> None:
    """With a deadline (the worker's dispatch), a source due again while a slow poll
    runs is polled again in the same call; without one, each source once."""
    now = [T0 + timedelta(hours=1)]
    settings = with_drip(server, ["alpha"], cycle_seconds=0.1, lease_seconds=7200)
    pipeline = Pipeline(settings, store, clock=lambda: now[0])

    async def dispatch_and_move_on() -> CycleReport:
        dispatch = asyncio.create_task(pipeline.dispatch(deadline=time.monotonic() + 60))
        while not server.requests_to("/alpha.xml"):
            await asyncio.sleep(0.02)
        now[0] += timedelta(
            minutes=11
        )  # alpha (every 10 min) falls due again; the drip is still leased
        return await dispatch

    report = asyncio.run(dispatch_and_move_on())

    assert len(server.requests_to("/alpha.xml")) == 2
    assert (report.polled, report.errors) == (3, 1)
    # Without a deadline, only what was due when the call started, once each.
    now[0] += timedelta(hours=3)
    assert asyncio.run(pipeline.dispatch()).polled == 2
