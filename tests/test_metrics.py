"""Observability: Prometheus metrics of a real cycle, served at /metrics; JSON and text log lines."""

from __future__ import annotations

import asyncio
import dataclasses
import io
import json
import logging
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from email.utils import format_datetime

import httpx
import pytest
from httpserver import FeedServer
from prometheus_client import REGISTRY
from prometheus_client.parser import text_string_to_metric_families

from aggregator import logs
from aggregator.metrics import Metrics, shared_state_metrics
from aggregator.pipeline import Pipeline
from aggregator.serve import create_app
from aggregator.settings import Settings, SourceConfig, parse_settings
from aggregator.store import Store

NOW = datetime.now(UTC).replace(microsecond=0)
STORY = "Ukrainian troops cross into the Kursk region near Sudzha, officials say"


def rss(items: list[tuple[str, str, str]]) -> bytes:
    """An RSS 2.0 feed of (guid, title, link) items, all published an hour ago."""
    published = format_datetime(NOW - timedelta(hours=1), usegmt=True)
    body = "".join(
        f"<item><guid>{guid}</guid><title>{title}</title><link>{link}</link>"
        f"<description>{title}. More details later.</description>"
        f"<pubDate>{published}</pubDate></item>"
        for guid, title, link in items
    )
    return (
        '<?xml version="1.0"?><rss version="2.0"><channel><title>t</title>'
        f"<link>http://x.test/</link><description>d</description>{body}</channel></rss>"
    ).encode()


@pytest.fixture
def outlets() -> Iterator[FeedServer]:
    with FeedServer() as server:
        link = "http://wire.test/kursk"
        server.serve_feed(
            "/wire.xml", rss([("w1", STORY, link), ("w2", "Markets calm", "http://wire.test/m")])
        )
        # the same article syndicated: one duplicate to merge
        server.serve_feed("/copy.xml", rss([("c1", STORY, link + "?utm_source=feed")]))
        server.route("/broken.xml", lambda request: (500, {}, b"oops"))
        yield server


def settings_for(server: FeedServer) -> Settings:
    base = parse_settings("", environ={})
    return dataclasses.replace(
        base,
        sources=tuple(
            SourceConfig(name=name, url=server.url(f"/{name}.xml"), interval=600)
            for name in ("wire", "copy", "broken")
        ),
        fetch=dataclasses.replace(base.fetch, allow_private_networks=True),
    )


def samples(metrics: Metrics) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    found = {}
    for family in text_string_to_metric_families(metrics.render().decode()):
        for sample in family.samples:
            found[(sample.name, tuple(sorted(sample.labels.items())))] = sample.value
    return found


def test_a_cycle_is_counted_and_served_at_metrics(outlets: FeedServer, store: Store) -> None:
    settings = settings_for(outlets)
    metrics = Metrics(store, lambda: settings)
    asyncio.run(Pipeline(settings, store, events=metrics).run_cycle())

    seen = samples(metrics)
    assert seen[("aggregator_fetches_total", (("status", "ok"),))] == 2
    assert seen[("aggregator_fetches_total", (("status", "error"),))] == 1
    assert seen[("aggregator_fetch_duration_seconds_count", ())] == 3
    assert seen[("aggregator_entries_ingested_total", (("kind", "new"),))] == 3
    assert seen[("aggregator_duplicates_merged_total", ())] == 1
    assert seen[("aggregator_publish_duration_seconds_count", ())] >= 1
    assert seen[("aggregator_stories_open", ())] == 2
    assert seen[("aggregator_sources_in_error", ())] == 1

    async def scrape() -> httpx.Response:
        app = create_app(store.document, metrics=metrics.render)
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(transport=transport, base_url="http://feeds.test") as client:
            return await client.get("/metrics")

    response = asyncio.run(scrape())
    assert response.status_code == 200
    assert response.headers["content-type"].startswith("text/plain; version=0.0.4")
    assert 'aggregator_fetches_total{status="ok"} 2.0' in response.text


def test_job_failures_are_counted_per_job_from_zero(sqlite_store: Store) -> None:
    settings = parse_settings("", environ={})
    metrics = Metrics(sqlite_store, lambda: settings)
    metrics.job_failed("cluster")
    metrics.job_failed("cluster")
    seen = samples(metrics)
    assert seen[("aggregator_job_failures_total", (("job", "cluster"),))] == 2
    for job in ("dispatch", "publish", "retention", "reload"):  # present before any failure
        assert seen[("aggregator_job_failures_total", (("job", job),))] == 0


def test_each_metrics_object_has_its_own_registry(sqlite_store: Store) -> None:
    settings = parse_settings("", environ={})
    first, second = Metrics(sqlite_store, lambda: settings), Metrics(sqlite_store, lambda: settings)
    first.duplicates.inc(5)
    assert samples(second)[("aggregator_duplicates_merged_total", ())] == 0
    assert REGISTRY.get_sample_value("aggregator_duplicates_merged_total") is None


@pytest.fixture
def captured() -> Iterator[io.StringIO]:
    """Where logs.configure sends the lines; the root logger is put back afterwards."""
    root = logging.getLogger()
    handlers, level = list(root.handlers), root.level
    yield io.StringIO()
    root.handlers[:] = handlers
    root.setLevel(level)


def test_json_logs_are_one_object_per_line_with_the_source(
    outlets: FeedServer, sqlite_store: Store, captured: io.StringIO
) -> None:
    logs.configure("INFO", "json", stream=captured)
    asyncio.run(Pipeline(settings_for(outlets), sqlite_store).run_cycle())

    lines = [json.loads(line) for line in captured.getvalue().splitlines()]
    polls = {line["source"]: line for line in lines if line.get("event") == "poll"}
    assert set(polls) == {"wire", "copy", "broken"}
    assert polls["wire"]["source_id"] and polls["wire"]["new"] == 2
    assert polls["broken"]["level"] == "WARNING" and polls["broken"]["error_code"]
    published = [line for line in lines if line.get("event") == "publish"]
    assert published and all(line["timeline"].startswith("story-") for line in published)


def test_text_logs_carry_the_same_context(
    outlets: FeedServer, sqlite_store: Store, captured: io.StringIO
) -> None:
    logs.configure("INFO", "text", stream=captured)
    asyncio.run(Pipeline(settings_for(outlets), sqlite_store).run_cycle())
    [wire] = [line for line in captured.getvalue().splitlines() if "polled 'wire'" in line]
    assert "event=poll" in wire and "source=wire" in wire and "source_id=" in wire


def test_the_feed_server_reports_the_shared_state_only(sqlite_store: Store) -> None:
    settings = parse_settings("", environ={})
    render = shared_state_metrics(sqlite_store, lambda: settings)
    names = {family.name for family in text_string_to_metric_families(render().decode())}
    assert names == {"aggregator_stories_open", "aggregator_sources_in_error"}
