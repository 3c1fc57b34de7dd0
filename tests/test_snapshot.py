"""Snapshots of the clusterer: a new leader resumes from one and decides as a full replay would.

Every store test runs on a SQLite file and on PostgreSQL (the `store` fixture).
A snapshot that does not fit the code, the settings or the store is never used:
the leader says why in its log and replays the whole window instead.
"""

from __future__ import annotations

import io
import json
import pickle
from collections.abc import Iterator, Sequence
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from sqlalchemy import text

from aggregator.cluster import StoryAssigner, snapshot
from aggregator.cluster.vectors import decode_vector, encode_vector
from aggregator.pipeline import Pipeline
from aggregator.settings import ClusterSettings, PublishSettings, Settings, SourceConfig
from aggregator.store import Store
from aggregator.types import Assignment, ClusterDoc, EntryData, PollOutcome

T0 = datetime(2024, 8, 6, 6, tzinfo=UTC)
OUTLETS = ("wire", "ledger", "border", "money")
PLACES = ("Kursk", "Sudzha", "Kharkiv", "Odesa", "Lviv", "Dnipro")
PLACES += ("Mykolaiv", "Poltava", "Sumy", "Kherson", "Zaporizhzhia", "Chernihiv")
SUBJECTS = (
    "drone strike hits power station",
    "central bank raises interest rate",
    "floods close mountain roads",
    "parliament passes budget bill",
    "strike halts rail freight",
    "wildfire forces evacuation of villages",
    "court jails former mayor for bribery",
    "new bridge opens to traffic",
)
ANGLES = ("{s} in {p}", "{p}: {s}, officials say", "{s} near {p} on Tuesday", "Report: {s} ({p})")
PER_TOPIC = 4
LOG = "aggregator.cluster.replay"


def settings(method: str = "tfidf", **cluster: Any) -> Settings:
    return Settings(
        cluster=ClusterSettings(method=method, **cluster),
        publish=PublishSettings(min_sources=1),
        sources=tuple(SourceConfig(name=n, url=f"http://{n}.test/feed") for n in OUTLETS),
    )


def published(n: int) -> datetime:
    return T0 + timedelta(minutes=15 * n)


def topic_vector(topic: int, n: int) -> np.ndarray:
    """A unit vector near its topic's direction, as an embedding would place the report."""
    vector = np.random.default_rng(topic).standard_normal(384)
    vector += np.random.default_rng(10_000 + n).standard_normal(384) * 0.6
    return (vector / np.linalg.norm(vector)).astype(np.float32)


def add_reports(store: Store, first: int, count: int, *, vectors: bool = False) -> None:
    """Store reports `first`..`first + count - 1`: four outlets' takes on each topic."""
    store.sync_sources(settings().sources, T0)
    ids = {s.name: s.id for s in store.source_statuses()}
    for n in range(first, first + count):
        topic = n // PER_TOPIC
        place, subject = PLACES[topic % len(PLACES)], SUBJECTS[topic % len(SUBJECTS)]
        title = ANGLES[n % len(ANGLES)].format(s=subject, p=place)
        title = title[0].upper() + title[1:]
        body = f"{title}. {10 + topic} people were affected, said the {place} regional office."
        outlet = OUTLETS[n % len(OUTLETS)]
        entry = EntryData(
            key=f"{outlet}-{n}",
            title=title,
            link=f"http://{outlet}.test/{n}",
            summary_html=f"<p>{body}</p>",
            text=body,
            author=None,
            published=published(n),
            updated=None,
            content_hash=f"hash-{n}",
            language="en" if n % 3 else "uk",
        )
        checked = PollOutcome(checked_at=published(n), next_check_at=published(n), status="ok")
        store.record_poll(ids[outlet], checked, [entry])
        if vectors:
            [doc] = [d for d in store.pending_docs(limit=10_000) if d.url.endswith(f"/{n}")]
            assert store.save_embeddings({doc.id: encode_vector(topic_vector(topic, n))}, T0)


def leader(store: Store, owner: str, method: str = "tfidf", **cluster: Any) -> Pipeline:
    later = published(10_000)
    pipeline = Pipeline(settings(method, **cluster), store, clock=lambda: later, owner=owner)
    assert pipeline.lead()
    return pipeline


def crash(pipeline: Pipeline) -> None:
    """Stop without the clean stop's snapshot: only the lease is handed back."""
    pipeline.lease.resign()


def decide(assigner: StoryAssigner, store: Store, docs: Sequence[ClusterDoc]) -> list[object]:
    """What the clusterer decides for `docs`, every field, merges included (nothing saved)."""
    vectors = store.stored_embeddings(d.id for d in docs)
    out: list[object] = []
    for n, doc in enumerate(docs, 1):
        raw = vectors.get(doc.id)
        a: Assignment = assigner.add(doc, None if raw is None else decode_vector(raw))
        out.append((a.doc_id, a.story_id, a.duplicate_of, a.new_story, a.similarity, a.event_key))
        if n % 8 == 0:
            out.append(assigner.merge_converged())
    out.append(assigner.merge_converged())
    return out


def replayed_in_full(store: Store, method: str, monkeypatch: pytest.MonkeyPatch) -> Pipeline:
    """A leader that replays the whole window (no snapshot fits it)."""
    with monkeypatch.context() as patched:
        patched.setattr(snapshot, "fingerprint", lambda settings: "another version")
        full = leader(store, "full", method, merge_stories=False)
        full.restore()
        crash(full)
    return full


def messages(caplog: pytest.LogCaptureFixture) -> list[str]:
    return [r.getMessage() for r in caplog.records if r.name == LOG]


@pytest.fixture(autouse=True)
def _log(caplog: pytest.LogCaptureFixture) -> Iterator[None]:
    with caplog.at_level("INFO", logger=LOG):
        yield


# -- resuming -----------------------------------------------------------------


@pytest.mark.parametrize("method", ["tfidf", "embedding"])
def test_a_leader_resumed_from_a_clean_stop_decides_as_the_one_that_stopped(
    store: Store, method: str, caplog: pytest.LogCaptureFixture
) -> None:
    vectors = method == "embedding"
    add_reports(store, 0, 48, vectors=vectors)
    first = leader(store, "first", method)
    assert first.cluster() == 48
    first.close()  # a clean stop saves the state
    [saved] = store.snapshot_headers()
    assert saved.decisions == 48
    add_reports(store, 48, 24, vectors=vectors)
    pending = store.pending_docs()

    caplog.clear()
    resumed = leader(store, "resumed", method)
    resumed.restore()
    assert any("replaying the 0 decisions stored after it" in m for m in messages(caplog))
    crash(resumed)
    # Exactly what the stopped leader would have decided, merges and events included.
    assert decide(resumed.assigner, store, pending) == decide(first.assigner, store, pending)


@pytest.mark.parametrize("method", ["tfidf", "embedding"])
def test_a_leader_resumed_from_a_snapshot_decides_as_a_full_replay_would(
    store: Store, method: str, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    monkeypatch.setattr("aggregator.cluster.replay.SNAPSHOT_AFTER_REPLAY", 10)
    vectors = method == "embedding"
    add_reports(store, 0, 48, vectors=vectors)
    first = leader(store, "first", method)
    assert first.cluster() == 48
    crash(first)  # no snapshot

    # The next leader replays the window, saves the state it rebuilt, clusters
    # more and dies without a clean stop. (It merges no stories: a resumed state
    # makes the merges stored after its snapshot with the stories it holds, where a
    # full replay builds each merged story afresh, so their later decisions can
    # differ; see `test_a_snapshot_resumes_past_the_merges_a_leader_made_after_it`.)
    add_reports(store, 48, 12, vectors=vectors)
    second = leader(store, "second", method, merge_stories=False)
    assert second.cluster() == 12
    crash(second)
    add_reports(store, 60, 24, vectors=vectors)
    pending = store.pending_docs()
    assert len(pending) == 24

    caplog.clear()
    resumed = leader(store, "resumed", method, merge_stories=False)
    resumed.restore()
    [used] = [m for m in messages(caplog) if "restored the clusterer from snapshot" in m]
    assert "(48 decisions" in used and "replaying the 12 decisions stored after it" in used
    crash(resumed)

    full = replayed_in_full(store, method, monkeypatch)
    assert decide(resumed.assigner, store, pending) == decide(full.assigner, store, pending)


def test_a_clean_stop_saves_the_state_and_the_next_leader_replays_nothing(
    store: Store, caplog: pytest.LogCaptureFixture, monkeypatch: pytest.MonkeyPatch
) -> None:
    add_reports(store, 0, 32)
    first = leader(store, "first")
    first.cluster()
    first.close()

    def refuse(*args: object, **kwargs: object) -> None:
        raise AssertionError("a decision was replayed")

    caplog.clear()
    monkeypatch.setattr(StoryAssigner, "restore", refuse)
    nxt = leader(store, "next")
    add_reports(store, 32, 8)
    assert nxt.cluster() == 8
    assert any("replaying the 0 decisions stored after it" in m for m in messages(caplog))


def test_snapshots_are_saved_every_few_thousand_decisions_and_only_the_newest_kept(
    store: Store, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr("aggregator.cluster.replay.SNAPSHOT_EVERY", 10)
    monkeypatch.setattr("aggregator.cluster.replay.CLUSTER_BATCH", 10)
    add_reports(store, 0, 40)
    pipeline = leader(store, "first")
    assert pipeline.cluster() == 40
    headers = store.snapshot_headers()
    assert [h.decisions for h in headers] == [40, 30], "the newest two, newest first"
    assert headers[0].latest_at == published(39)
    crash(pipeline)


# -- falling back to the full replay -------------------------------------------


def saved_snapshot(store: Store, count: int = 32) -> None:
    add_reports(store, 0, count)
    first = leader(store, "first")
    first.cluster()
    first.close()
    assert len(store.snapshot_headers()) == 1


def restore_falls_back(store: Store, caplog: pytest.LogCaptureFixture, **cluster: Any) -> str:
    """Restore a new leader; the reason the snapshot was not used (the window is replayed)."""
    caplog.clear()
    pipeline = leader(store, "next", **cluster)
    pipeline.restore()
    found = messages(caplog)
    assert "no usable snapshot of the clusterer: replaying the whole window" in found, found
    assert pipeline.clusterer.restored
    assert pipeline.assigner._stories.stories, "the window was replayed"
    crash(pipeline)
    [reason] = [m for m in found if "is not used" in m]
    return reason


def test_a_snapshot_of_other_settings_or_code_is_not_used(
    store: Store, caplog: pytest.LogCaptureFixture, monkeypatch: pytest.MonkeyPatch
) -> None:
    saved_snapshot(store)
    reason = restore_falls_back(store, caplog, threshold=0.5)
    assert "another version of the clusterer or under other cluster settings" in reason
    # A change of any file of the cluster package (code or model) changes the fingerprint.
    monkeypatch.setattr(snapshot, "_code_digest", lambda: "edited")
    assert "another version" in restore_falls_back(store, caplog)


def test_a_corrupt_snapshot_is_not_used(store: Store, caplog: pytest.LogCaptureFixture) -> None:
    saved_snapshot(store)
    with store.engine.begin() as connection:
        name, body = connection.execute(
            text("SELECT name, body FROM clustersnapshotpart ORDER BY length(body) DESC")
        ).first()
        damaged = bytes(body[:100]) + bytes(len(body) - 100)
        connection.execute(
            text("UPDATE clustersnapshotpart SET body = :b WHERE name = :n"),
            {"b": damaged, "n": name},
        )
    assert "corrupt" in restore_falls_back(store, caplog)

    # Damaged before it was stored: the checksums match, the content does not read.
    with store.engine.begin() as connection:
        connection.execute(
            text("UPDATE clustersnapshotpart SET checksum = :c WHERE name = :n"),
            {"c": snapshot.checksum(damaged), "n": name},
        )
    with store.engine.begin() as connection:
        connection.execute(text("UPDATE clustersnapshot SET checksum = :c"), {"c": digest(store)})
    assert "cannot be read" in restore_falls_back(store, caplog)

    # A piece lost: the list of pieces no longer matches the snapshot's checksum.
    with store.engine.begin() as connection:
        connection.execute(text("DELETE FROM clustersnapshotpart WHERE name = :n"), {"n": name})
    assert "corrupt (the checksum does not match)" in restore_falls_back(store, caplog)


def digest(store: Store) -> str:
    """The snapshot's checksum as its pieces' checksums now make it."""
    [header] = store.snapshot_headers()
    return snapshot.digest_of((p.name, p.seq, p.checksum) for p in store.snapshot_pieces(header.id))


def test_a_snapshot_is_written_and_read_a_piece_at_a_time(
    store: Store, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(snapshot, "PIECE_BYTES", 1000)
    saved_snapshot(store)
    [header] = store.snapshot_headers()
    pieces = store.snapshot_pieces(header.id)
    assert max(p.size for p in pieces) <= 1000
    assert header.size == sum(p.size for p in pieces)
    assert any(p.seq > 0 for p in pieces), "a part longer than a piece is cut"

    read: list[tuple[str, int]] = []
    piece = store.snapshot_piece

    def one(snapshot_id: int, name: str, seq: int) -> bytes | None:
        read.append((name, seq))
        return piece(snapshot_id, name, seq)

    monkeypatch.setattr(store, "snapshot_piece", one)
    nxt = leader(store, "next")
    nxt.restore()
    assert nxt.assigner._stories.stories
    crash(nxt)
    assert sorted(read) == sorted((p.name, p.seq) for p in pieces), "each piece read once"


def test_a_draft_is_never_read_and_the_next_save_drops_it(store: Store) -> None:
    saved_snapshot(store)
    [header] = store.snapshot_headers()
    with store.engine.begin() as connection:  # a leader died while writing one
        connection.execute(
            text(
                "INSERT INTO clustersnapshot (fingerprint, created_at, latest_at, decisions, "
                "term, checksum, size) SELECT fingerprint, created_at, latest_at, decisions, "
                "term, '', 0 FROM clustersnapshot"
            )
        )
    assert store.snapshot_headers() == [header]
    nxt = leader(store, "next")
    nxt.restore()
    assert nxt.clusterer.save_snapshot()
    crash(nxt)
    with store.engine.begin() as connection:
        drafts = connection.execute(
            text("SELECT count(*) FROM clustersnapshot WHERE checksum = ''")
        ).scalar_one()
    assert drafts == 0 and len(store.snapshot_headers()) == 2


def test_a_failed_save_leaves_no_draft(
    store: Store, caplog: pytest.LogCaptureFixture, monkeypatch: pytest.MonkeyPatch
) -> None:
    add_reports(store, 0, 16)
    first = leader(store, "first")
    first.cluster()

    def broken(self: object, out: snapshot.Writer) -> None:
        out.value("begun", 1)
        raise OSError("disk full")

    monkeypatch.setattr(StoryAssigner, "save", broken)
    assert not first.clusterer.save_snapshot()
    assert any("was not saved (disk full)" in m for m in messages(caplog))
    crash(first)
    with store.engine.begin() as connection:
        rows = connection.execute(text("SELECT count(*) FROM clustersnapshot")).scalar_one()
        parts = connection.execute(text("SELECT count(*) FROM clustersnapshotpart")).scalar_one()
    assert (rows, parts) == (0, 0)


def test_a_snapshot_newer_than_the_store_is_not_used(
    store: Store, caplog: pytest.LogCaptureFixture
) -> None:
    saved_snapshot(store)
    # The database was restored from a backup taken before the last decisions.
    unclustered(store, [doc.id for doc, _ in decisions(store)[30:]])
    assert "newer than the store" in restore_falls_back(store, caplog)


def test_a_snapshot_reflecting_decisions_the_store_lost_is_not_used(
    store: Store, caplog: pytest.LogCaptureFixture
) -> None:
    saved_snapshot(store)
    unclustered(store, [decisions(store)[5][0].id])
    assert "are not in the store" in restore_falls_back(store, caplog)


def add_copy(store: Store, doc: ClusterDoc, n: int) -> None:
    """Store report `n` of another outlet: the same headline and body as `doc`."""
    ids = {s.name: s.id for s in store.source_statuses()}
    outlet = next(o for o in OUTLETS if o != doc.source)
    entry = EntryData(
        key=f"{outlet}-copy-{n}",
        title=doc.title,
        link=f"http://{outlet}.test/copy-{n}",
        summary_html=f"<p>{doc.text}</p>",
        text=doc.text,
        author=None,
        published=published(n),
        updated=None,
        content_hash=f"copy-{n}",
        language=doc.lang,
    )
    checked = PollOutcome(checked_at=published(n), next_check_at=published(n), status="ok")
    store.record_poll(ids[outlet], checked, [entry])


def test_a_snapshot_resumes_past_the_merges_a_leader_made_after_it(
    store: Store, caplog: pytest.LogCaptureFixture
) -> None:
    saved_snapshot(store)
    stored = decisions(store)
    # A later leader merged two stories the snapshot holds apart, and one event of
    # the first into one of the second, then died before its next snapshot.
    gone, into = sorted({a.story_id for _, a in stored})[:2][::-1]
    gone_event = next(a.event_key for _, a in stored if a.story_id == gone)
    into_event = next(a.event_key for _, a in stored if a.story_id == into)
    assert store.merge_stories([(gone, into)], T0, events=[(gone_event, into_event)]) is not None

    caplog.clear()
    resumed = leader(store, "next")
    resumed.restore()
    found = messages(caplog)
    assert any("made the 1 story and 1 event merges stored after the snapshot" in m for m in found)
    assert not any("replaying the whole window" in m for m in found), found
    # A copy of the absorbed story's report is one more report of the merged story,
    # in the event its original joined: as the store holds them now.
    original = next(d for d, a in stored if a.event_key == gone_event)
    add_copy(store, original, 33)
    assert resumed.cluster() == 1
    [placed] = [a for d, a in decisions(store) if d.id not in {x.id for x, _ in stored}]
    assert (placed.story_id, placed.duplicate_of) == (into, original.id)
    assert placed.event_key == into_event
    crash(resumed)


def test_a_snapshot_whose_decisions_changed_otherwise_is_not_used(
    store: Store, caplog: pytest.LogCaptureFixture
) -> None:
    saved_snapshot(store)
    # One decision moved alone to another story: no merge does that.
    stored = decisions(store)
    keys = sorted({a.story_id for _, a in stored})
    moved = next(d for d, a in stored if a.story_id == keys[1] and a.duplicate_of is None)
    with store.engine.begin() as connection:
        connection.execute(
            text(
                "UPDATE entry SET story_id = (SELECT id FROM story WHERE key = :key) "
                "WHERE id = :entry"
            ),
            {"key": keys[0], "entry": int(moved.id)},
        )
    assert "in a way no merge of stories explains" in restore_falls_back(store, caplog)


def test_a_snapshot_older_than_the_window_is_not_used(
    store: Store, caplog: pytest.LogCaptureFixture
) -> None:
    saved_snapshot(store)
    # A later leader clustered reports a week on, then died.
    week = 7 * 24 * 4
    add_reports(store, week, 8)
    later = leader(store, "later")
    assert later.cluster() == 8
    crash(later)
    assert "older than the clustering window" in restore_falls_back(store, caplog)


def decisions(store: Store) -> list[tuple[ClusterDoc, Assignment]]:
    return [(d, a) for d, a, _ in store.clustered_since(T0 - timedelta(days=1))]


def unclustered(store: Store, entry_ids: Sequence[str]) -> None:
    with store.engine.begin() as connection:
        for entry_id in entry_ids:
            connection.execute(
                text("UPDATE entry SET clustered = false WHERE id = :id"), {"id": int(entry_id)}
            )


class Trap:
    """Unpickling this would create a file: proof that nothing was unpickled."""

    def __init__(self, path: Path) -> None:
        self.path = path

    def __reduce__(self) -> tuple[object, tuple[Path]]:
        return (Path.touch, (self.path,))


def pickled_array(trap: Path) -> bytes:
    out = io.BytesIO()
    array = np.empty(1, dtype=object)
    array[0] = Trap(trap)
    np.lib.format.write_array(out, array, allow_pickle=True)
    return out.getvalue()


def test_a_snapshot_is_never_unpickled(
    store: Store, caplog: pytest.LogCaptureFixture, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    saved_snapshot(store)
    trap = tmp_path / "unpickled"
    body = pickled_array(trap)
    pickle.loads(pickle.dumps(Trap(tmp_path / "works")))  # the trap would spring
    assert (tmp_path / "works").exists()
    with store.engine.begin() as connection:
        connection.execute(
            text(
                "UPDATE clustersnapshotpart SET body = :b, checksum = :c "
                "WHERE name = 'coverage.entry_ids.npy'"
            ),
            {"b": body, "c": snapshot.checksum(body)},
        )
    with store.engine.begin() as connection:
        connection.execute(text("UPDATE clustersnapshot SET checksum = :c"), {"c": digest(store)})

    def refuse(*args: object, **kwargs: object) -> None:
        raise AssertionError("unpickled")

    monkeypatch.setattr(pickle, "loads", refuse)
    monkeypatch.setattr(pickle, "load", refuse)
    reason = restore_falls_back(store, caplog)
    assert "cannot be read" in reason and "allow_pickle" in reason
    assert not trap.exists()


def test_an_unknown_attribute_stops_the_save_and_the_next_leader_replays(
    store: Store, caplog: pytest.LogCaptureFixture
) -> None:
    add_reports(store, 0, 16)
    first = leader(store, "first")
    first.cluster()
    first.assigner._events.core_reports = {}  # type: ignore[attr-defined]
    caplog.clear()
    first.close()
    assert store.snapshot_headers() == []
    [failed] = [m for m in messages(caplog) if "was not saved" in m]
    assert "EventIndex has attributes the snapshot does not know (core_reports)" in failed

    caplog.clear()
    nxt = leader(store, "next")
    nxt.restore()
    assert "no snapshot of the clusterer is stored: replaying the whole window" in messages(caplog)
    assert nxt.assigner._stories.stories
    crash(nxt)


# -- the state, without a store ---------------------------------------------------


def busy_assigner(method: str) -> StoryAssigner:
    """A clusterer that has placed, copied, merged and linked reports."""
    assigner = StoryAssigner(ClusterSettings(method=method))
    docs = [
        ClusterDoc(
            str(n),
            ANGLES[n % 4].format(s=SUBJECTS[n // 4 % 8], p=PLACES[n // 4 % 12]),
            f"{10 + n // 4} people were affected, said the {PLACES[n // 4 % 12]} office.",
            f"http://{OUTLETS[n % 4]}.test/{n - 1 if n % 9 == 0 else n}",
            published(n),
            OUTLETS[n % 4],
            "en" if n % 3 else "uk",
        )
        for n in range(1, 81)
    ]
    # One name in three scripts, two of them without capitals (`Featuriser._sounds`).
    docs += [
        ClusterDoc(str(n), title, "", f"http://{lang}.test/{n}", published(n), lang, lang)
        for n, lang, title in [
            (81, "en", "Container ship strikes Baltimore bridge"),
            (82, "ko", "미국 볼티모어 대형 교량 붕괴"),
            (83, "ar", "انهيار جسر في بالتيمور"),
        ]
    ]
    for doc in docs:
        vector = topic_vector(int(doc.id) // 4, int(doc.id)) if method == "embedding" else None
        assigner.add(doc, vector)
        if int(doc.id) % 10 == 0:
            assigner.merge_converged()
    return assigner


def walk(obj: object, seen: set[int], found: dict[str, set[str]]) -> None:
    """Visit every object of the clusterer's state that a snapshot must save, checking that
    each of the aggregator's own classes declares every attribute it has."""
    if id(obj) in seen or isinstance(obj, str | bytes | int | float | bool | datetime | np.ndarray):
        return
    seen.add(id(obj))
    if type(obj).__module__.startswith("aggregator."):
        declared = snapshot.declared(type(obj))  # fails for a class that declares none
        declared.check(obj)  # fails for an attribute it does not declare
        found.setdefault(type(obj).__name__, set()).update(declared.saved)
        for name in declared.saved:
            walk(getattr(obj, name), seen, found)
    elif isinstance(obj, dict):
        for key, value in obj.items():
            walk(key, seen, found)
            walk(value, seen, found)
    elif isinstance(obj, list | tuple | set | frozenset) or hasattr(obj, "popleft"):
        for item in obj:  # type: ignore[attr-defined]
            walk(item, seen, found)


@pytest.mark.parametrize("method", ["tfidf", "embedding"])
def test_every_attribute_of_the_live_state_is_known_to_the_snapshot(method: str) -> None:
    found: dict[str, set[str]] = {}
    walk(busy_assigner(method), set(), found)
    assert {"StoryAssigner", "Story", "Member", "Event", "EventReport", "Storyline"} <= set(found)


def assert_same(a: object, b: object, where: str = "assigner") -> None:
    """The two states are equal, attribute by attribute, in order where order is kept."""
    assert type(a) is type(b), where
    if type(a).__module__.startswith("aggregator."):
        for name in sorted(snapshot.declared(type(a)).saved):
            assert_same(getattr(a, name), getattr(b, name), f"{where}.{name}")
    elif isinstance(a, np.ndarray):
        assert isinstance(b, np.ndarray) and a.dtype == b.dtype, where
        assert a.shape == b.shape and np.array_equal(a, b), where
    elif isinstance(a, dict):
        assert isinstance(b, dict) and list(a) == list(b), where
        for key in a:
            assert_same(a[key], b[key], f"{where}[{key!r}]")
    elif isinstance(a, list | tuple) or hasattr(a, "popleft"):
        assert len(a) == len(b), where  # type: ignore[arg-type]
        for n, (x, y) in enumerate(zip(a, b, strict=True)):  # type: ignore[call-overload]
            assert_same(x, y, f"{where}[{n}]")
    else:
        assert a == b, where


def saved(assigner: StoryAssigner) -> tuple[snapshot.Memory, str]:
    kept = snapshot.Memory()
    out = snapshot.Writer(kept.put)
    assigner.save(out)
    return kept, out.finish()


@pytest.mark.parametrize("method", ["tfidf", "embedding"])
def test_the_state_read_back_equals_the_live_one(method: str) -> None:
    assigner = busy_assigner(method)
    kept, checksum = saved(assigner)
    again = StoryAssigner(ClusterSettings(method=method))
    again.load(kept.reader(checksum))
    assert_same(assigner, again)


def test_the_state_reads_back_exactly() -> None:
    assigner = busy_assigner("embedding")
    kept, checksum = saved(assigner)
    again = StoryAssigner(ClusterSettings(method="embedding"))
    again.load(kept.reader(checksum))
    kept_again, checksum_again = saved(again)
    assert kept_again.pieces == kept.pieces and checksum_again == checksum


def test_an_object_array_is_never_written() -> None:
    out = snapshot.Writer(snapshot.Memory().put)
    with pytest.raises(snapshot.SnapshotError, match="Python objects"):
        out.array("sneaky", np.array([object()], dtype=object), object)


def test_a_long_list_is_written_as_one_json_text_a_slice_at_a_time() -> None:
    kept = snapshot.Memory()
    out = snapshot.Writer(kept.put)
    ids = [f"story-{n}" for n in range(3 * snapshot.JSON_SLICE + 5)]
    out.value("ids", ids)
    pieces = b"".join(body for (name, _), (body, _) in sorted(kept.pieces.items()))
    assert pieces == json.dumps(ids, separators=(",", ":")).encode()
    assert kept.reader(out.finish()).value("ids") == ids
