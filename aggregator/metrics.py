"""Prometheus metrics: the pipeline's events counted per process, the store's state read at scrape.

Counters and histograms (fetches, durations, entries, duplicates, publishing)
count what this process did, so each worker is scraped on its own. Gauges of
shared state (stories open, sources in error) are read from the database when
scraped, so the feed server reports them too. Each `Metrics` has its own
registry: nothing is global, and tests can make as many as they like.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from datetime import UTC, datetime, timedelta

from prometheus_client import CollectorRegistry, Counter, Histogram, generate_latest
from prometheus_client.core import GaugeMetricFamily
from prometheus_client.registry import Collector

from aggregator.settings import Settings
from aggregator.store import IngestCounts, Store
from aggregator.types import FetchResult

FETCH_BUCKETS = (0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0)
PUBLISH_BUCKETS = (0.01, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0)
JOBS = ("dispatch", "cluster", "publish", "retention", "reload")  # the worker's


class Metrics:
    """The worker's metrics; `pipeline.Events`, so the pipeline reports into it."""

    def __init__(self, store: Store, settings: Callable[[], Settings]) -> None:
        self.registry = CollectorRegistry(auto_describe=True)
        self.fetches = Counter(
            "aggregator_fetches",
            "Polls of sources, by outcome: ok, not_modified, error or gone.",
            ["status"],
            registry=self.registry,
        )
        self.fetch_seconds = Histogram(
            "aggregator_fetch_duration_seconds",
            "Time one poll took, redirects included.",
            buckets=FETCH_BUCKETS,
            registry=self.registry,
        )
        self.entries = Counter(
            "aggregator_entries_ingested",
            "Entries stored from polls: new or updated.",
            ["kind"],
            registry=self.registry,
        )
        self.duplicates = Counter(
            "aggregator_duplicates_merged",
            "Entries folded into an earlier copy of the same article.",
            registry=self.registry,
        )
        self.clustered_entries = Counter(
            "aggregator_entries_clustered",
            "Entries assigned to a story.",
            registry=self.registry,
        )
        self.publish_seconds = Histogram(
            "aggregator_publish_duration_seconds",
            "Time one publishing step took (rendering and storing changed timelines).",
            buckets=PUBLISH_BUCKETS,
            registry=self.registry,
        )
        self.unexpected = Counter(
            "aggregator_unexpected_errors",
            "Unexpected errors survived inside a stage (ingest, cluster, publish), by stage; "
            "each is logged once with its traceback.",
            ["stage"],
            registry=self.registry,
        )
        self.job_failures = Counter(
            "aggregator_job_failures",
            "Runs of a worker job that failed: an error, its time limit, or skipped "
            "because the previous leader step still ran.",
            ["job"],
            registry=self.registry,
        )
        for job in JOBS:  # every series exists from the start, so rate() sees the first
            self.job_failures.labels(job=job)
        self.registry.register(StoreCollector(store, settings))

    def job_failed(self, job: str) -> None:
        self.job_failures.labels(job=job).inc()

    def polled(self, result: FetchResult, status: str, counts: IngestCounts) -> None:
        self.fetches.labels(status=status).inc()
        self.fetch_seconds.observe(result.duration_s)
        if counts.new:
            self.entries.labels(kind="new").inc(counts.new)
        if counts.updated:
            self.entries.labels(kind="updated").inc(counts.updated)

    def clustered(self, entries: int, duplicates: int) -> None:
        self.clustered_entries.inc(entries)
        self.duplicates.inc(duplicates)

    def published(self, timelines: int, seconds: float) -> None:
        self.publish_seconds.observe(seconds)

    def failed(self, stage: str) -> None:
        self.unexpected.labels(stage=stage).inc()

    def render(self) -> bytes:
        """The text exposition served at /metrics."""
        return generate_latest(self.registry)


def shared_state_metrics(store: Store, settings: Callable[[], Settings]) -> Callable[[], bytes]:
    """The renderer for a process that only serves feeds: the store's gauges, no counters."""
    registry = CollectorRegistry(auto_describe=True)
    registry.register(StoreCollector(store, settings))
    return lambda: generate_latest(registry)


class StoreCollector(Collector):
    """Gauges read from the database at each scrape: the same in every process."""

    def __init__(self, store: Store, settings: Callable[[], Settings]) -> None:
        self.store = store
        self.settings = settings

    def describe(self) -> list[GaugeMetricFamily]:
        return [self._stories_open(0), self._sources_in_error(0)]

    def collect(self) -> Iterator[GaugeMetricFamily]:
        window = timedelta(hours=self.settings().cluster.window_hours)
        yield self._stories_open(self.store.open_stories(datetime.now(UTC) - window))
        yield self._sources_in_error(self.store.sources_in_error())

    @staticmethod
    def _stories_open(value: int) -> GaugeMetricFamily:
        return GaugeMetricFamily(
            "aggregator_stories_open",
            "Stories that took a report within cluster.window_hours: still open to new ones.",
            value=value,
        )

    @staticmethod
    def _sources_in_error(value: int) -> GaugeMetricFamily:
        return GaugeMetricFamily(
            "aggregator_sources_in_error",
            "Configured, enabled sources whose last poll failed.",
            value=value,
        )
