"""The store's coordination between workers: source leases, the leader lease, retention.

Every test runs on a SQLite file and on a scratch PostgreSQL database of its own
(skipped when AGGREGATOR_TEST_POSTGRES_URL is unset). `scratch_database` is also
what the migration, scale-out and crash tests use.
"""

from __future__ import annotations

import os
import secrets
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import replace
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from conftest import postgres_url
from sqlalchemy import create_engine, make_url, text

from aggregator.settings import SourceConfig
from aggregator.store import Store, open_store
from aggregator.types import Assignment, EntryData, PollOutcome

T0 = datetime(2024, 8, 6, 12, tzinfo=UTC)


@contextmanager
def scratch_postgres() -> Iterator[str]:
    """A new, empty PostgreSQL database for one test, dropped afterwards.

    Tests of several processes and of migrations need a database nobody else
    touches, not the shared one the `store` fixture empties between tests.
    """
    base = make_url(postgres_url())
    name = f"aggregator_test_{os.getpid()}_{secrets.token_hex(4)}"
    admin = create_engine(base, isolation_level="AUTOCOMMIT")
    try:
        with admin.connect() as connection:
            connection.execute(text(f'CREATE DATABASE "{name}"'))
        yield base.set(database=name).render_as_string(hide_password=False)
    finally:
        with admin.connect() as connection:
            connection.execute(text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
        admin.dispose()


@contextmanager
def scratch_database(kind: str, tmp_path: Path) -> Iterator[str]:
    """The URL of an empty database: a SQLite file, or a PostgreSQL database of its own."""
    if kind == "sqlite":
        yield f"sqlite:///{tmp_path / 'scratch.db'}"
    else:
        with scratch_postgres() as url:
            yield url


@pytest.fixture(params=["sqlite", "postgres"])
def migrated(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Store]:
    """A store whose schema was made by the migrations, as in production."""
    with scratch_database(request.param, tmp_path) as url:
        store = open_store(url)
        yield store
        store.close()


def sources(count: int) -> list[SourceConfig]:
    return [SourceConfig(name=f"s{n:03d}", url=f"http://s{n}.test/feed") for n in range(count)]


def entry(key: str, title: str = "", published: datetime | None = None) -> EntryData:
    return EntryData(
        key=key,
        title=title or f"Report {key}",
        link=f"http://a.test/{key}",
        summary_html="<p>text</p>",
        text=f"text of {key}",
        author=None,
        published=published or T0,
        updated=None,
        content_hash=f"hash-{key}-{title}",
    )


def outcome(now: datetime, wait: float = 600) -> PollOutcome:
    return PollOutcome(checked_at=now, next_check_at=now + timedelta(seconds=wait), status="ok")


# -- source leases ------------------------------------------------------------


def test_a_claimed_source_is_nobody_elses_until_recorded_or_expired(migrated: Store) -> None:
    migrated.sync_sources(sources(5), T0)
    first = migrated.claim_due(T0, "worker-a", lease_s=60, limit=3)
    second = migrated.claim_due(T0, "worker-b", lease_s=60, limit=10)
    assert len(first) == 3 and len(second) == 2
    assert not {r.source_id for r in first} & {r.source_id for r in second}
    assert migrated.claim_due(T0, "worker-c", lease_s=60, limit=10) == []

    # recorded: the lease is gone and the source is due again only at its next check
    polled = first[0]
    migrated.record_poll(polled.source_id, outcome(T0, wait=600), owner="worker-a")
    later = T0 + timedelta(seconds=120)
    reclaimed = migrated.claim_due(later, "worker-c", lease_s=60, limit=10)
    assert polled.source_id not in {r.source_id for r in reclaimed}
    # worker-a's other two leases and worker-b's ran out at T0+60: they are due again
    assert len(reclaimed) == 4


def test_released_claims_are_due_again_at_once(migrated: Store) -> None:
    migrated.sync_sources(sources(3), T0)
    claimed = migrated.claim_due(T0, "worker-a", lease_s=300, limit=10)
    assert migrated.release_claims("worker-a", [claimed[0].source_id]) == 1
    again = migrated.claim_due(T0, "worker-b", lease_s=300, limit=10)
    assert [r.source_id for r in again] == [claimed[0].source_id]
    assert migrated.release_claims("worker-a") == 2


def test_a_worker_that_lost_its_lease_keeps_entries_but_not_the_state(migrated: Store) -> None:
    migrated.sync_sources(sources(1), T0)
    [request] = migrated.claim_due(T0, "slow", lease_s=10, limit=1)
    later = T0 + timedelta(seconds=30)
    [again] = migrated.claim_due(later, "fast", lease_s=10, limit=1)
    migrated.record_poll(again.source_id, outcome(later, wait=900), [entry("a")], owner="fast")

    late = migrated.record_poll(
        request.source_id, outcome(T0, wait=5), [entry("a"), entry("b")], owner="slow"
    )
    assert not late.recorded and late.new == 1
    [status] = migrated.source_statuses()
    assert status.entries == 2
    assert status.next_check_at == later + timedelta(seconds=900), "the newer poll's state stands"


def test_concurrent_claims_split_the_due_sources_without_overlap(migrated: Store) -> None:
    migrated.sync_sources(sources(120), T0)
    claimed: dict[str, list[int]] = {}

    def work(owner: str) -> None:
        mine: list[int] = []
        while batch := migrated.claim_due(T0, owner, lease_s=60, limit=7):
            mine += [r.source_id for r in batch]
        claimed[owner] = mine

    threads = [threading.Thread(target=work, args=(f"w{n}",)) for n in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=60)
    every = [source_id for ids in claimed.values() for source_id in ids]
    assert len(every) == len(set(every)) == 120


def test_syncing_from_several_workers_at_once_is_safe(migrated: Store) -> None:
    errors: list[BaseException] = []

    def sync() -> None:
        try:
            migrated.sync_sources(sources(60), T0)
        except BaseException as exc:  # pragma: no cover - shown by the assertion
            errors.append(exc)

    threads = [threading.Thread(target=sync) for _ in range(3)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=60)
    assert errors == []
    assert migrated.counts()["sources"] == 60


# -- the leader lease -----------------------------------------------------------


def test_one_leader_at_a_time_and_another_takes_over_when_it_lapses(migrated: Store) -> None:
    first = migrated.acquire_leadership("a", None, T0, lease_s=30)
    assert first is not None and first.term >= 1
    assert migrated.acquire_leadership("b", None, T0 + timedelta(seconds=10), lease_s=30) is None
    renewed = migrated.acquire_leadership("a", first.term, T0 + timedelta(seconds=20), lease_s=30)
    assert renewed == first, "renewing keeps the term"

    lapsed = T0 + timedelta(seconds=60)
    second = migrated.acquire_leadership("b", None, lapsed, lease_s=30)
    assert second is not None and second.term == first.term + 1
    leader = migrated.leader()
    assert leader is not None and leader.owner == "b"
    assert migrated.acquire_leadership("a", first.term, lapsed, lease_s=30) is None


def test_a_former_leader_cannot_save_clustering_decisions(migrated: Store) -> None:
    migrated.sync_sources(sources(1), T0)
    [request] = migrated.claim_due(T0, "w", lease_s=60, limit=1)
    migrated.record_poll(request.source_id, outcome(T0), [entry("a")], owner="w")
    [doc] = migrated.pending_docs()

    old = migrated.acquire_leadership("a", None, T0, lease_s=30)
    assert old is not None
    new = migrated.acquire_leadership("b", None, T0 + timedelta(seconds=31), lease_s=30)
    assert new is not None
    decision = [Assignment(doc_id=doc.id, story_id=doc.id, new_story=True)]
    assert migrated.save_assignments(decision, T0 + timedelta(seconds=32), old) is None
    assert migrated.pending_docs() == [doc], "nothing was written"
    assert migrated.save_assignments(decision, T0 + timedelta(seconds=32), new) is not None
    assert migrated.pending_docs() == []


def test_the_clusterer_reads_one_language_however_a_feed_writes_it(migrated: Store) -> None:
    configs = sources(2)
    configs[1] = replace(configs[1], language="uk-UA")
    migrated.sync_sources(configs, T0)
    requests = migrated.claim_due(T0, "w", lease_s=60, limit=2)
    for request in requests:
        tagged = [
            replace(entry(f"{request.source_id}-{tag}"), language=tag) for tag in ("en-US", "EN")
        ]
        untagged = [entry(f"{request.source_id}-none")]
        migrated.record_poll(request.source_id, outcome(T0), tagged + untagged, owner="w")
    languages = sorted(doc.lang for doc in migrated.pending_docs())
    # The feed's own tag first, then the source's configured one, each by its primary subtag.
    assert languages == ["", "en", "en", "en", "en", "uk"]


def test_resigning_lets_another_worker_lead_at_once(migrated: Store) -> None:
    term = migrated.acquire_leadership("a", None, T0, lease_s=300)
    assert term is not None
    migrated.resign_leadership("a")
    taken = migrated.acquire_leadership("b", None, T0, lease_s=300)
    assert taken is not None and taken.term == term.term + 1


def test_a_story_changed_after_rendering_stays_dirty(migrated: Store) -> None:
    migrated.sync_sources(sources(1), T0)
    [request] = migrated.claim_due(T0, "w", lease_s=60, limit=1)
    migrated.record_poll(request.source_id, outcome(T0), [entry("a", "First")], owner="w")
    [doc] = migrated.pending_docs()
    migrated.save_assignments([Assignment(doc.id, doc.id, new_story=True)], T0)
    [rendered] = migrated.dirty_stories()

    # the feed corrects the title while the publisher renders the older revision
    migrated.record_poll(request.source_id, outcome(T0), [entry("a", "Corrected")])
    assert migrated.mark_published([rendered], T0)
    assert [s.id for s in migrated.dirty_stories()] == [rendered.id]


# -- retention ------------------------------------------------------------------


def test_retention_keeps_tombstones_so_old_entries_do_not_come_back(migrated: Store) -> None:
    old, recent = T0 - timedelta(days=100), T0 - timedelta(days=1)
    migrated.sync_sources(sources(1), old)
    [request] = migrated.claim_due(old, "w", lease_s=60, limit=1)
    listed = [entry("old", published=old), entry("old-copy", published=old)]
    migrated.record_poll(request.source_id, outcome(old), listed, owner="w")
    listed.append(entry("new", published=recent))
    migrated.record_poll(request.source_id, outcome(recent), listed)
    docs = {d.id: d for d in migrated.pending_docs()}
    keys = {d.title.removeprefix("Report "): d.id for d in docs.values()}
    migrated.save_assignments(
        [
            Assignment(keys["old"], "s1", new_story=True),
            Assignment(keys["old-copy"], "s1", duplicate_of=keys["old"]),
            Assignment(keys["new"], "s2", new_story=True),
        ],
        T0,
    )

    report = migrated.expire_entries(T0 - timedelta(days=90), T0)
    assert report is not None and report.entries == 2 and len(report.stories) == 1
    assert migrated.tombstones() == 2
    assert migrated.counts() == {"sources": 1, "entries": 1, "stories": 1, "duplicates": 0}

    counts = migrated.record_poll(request.source_id, outcome(T0), listed)
    assert (counts.new, counts.tombstoned) == (0, 2), "the feed still lists them: nothing new"
    assert migrated.counts()["entries"] == 1


def test_a_tombstone_lasts_while_its_feed_lists_the_entry_and_goes_after(migrated: Store) -> None:
    old = T0 - timedelta(days=100)
    migrated.sync_sources(sources(1), old)
    [request] = migrated.claim_due(old, "w", lease_s=60, limit=1)
    migrated.record_poll(
        request.source_id,
        outcome(old),
        [entry("kept", published=old), entry("dropped", published=old)],
    )
    report = migrated.expire_entries(T0 - timedelta(days=90), T0)
    assert report is not None and (report.entries, report.tombstones) == (2, 0)

    # The feed lists "kept" for another 60 days; "dropped" left it at once.
    later = T0 + timedelta(days=60)
    counts = migrated.record_poll(request.source_id, outcome(later), [entry("kept", published=old)])
    assert (counts.new, counts.tombstoned) == (0, 1)
    now = later + timedelta(days=31)
    report = migrated.expire_entries(now - timedelta(days=90), now)
    assert report is not None and report.tombstones == 1, "unlisted for the retention age"
    assert migrated.tombstones() == 1
    counts = migrated.record_poll(request.source_id, outcome(later), [entry("kept", published=old)])
    assert (counts.new, counts.tombstoned) == (0, 1), "still listed: still not new"


def test_retention_turns_a_copy_of_a_removed_entry_into_an_original(migrated: Store) -> None:
    earlier = T0 - timedelta(days=30)
    migrated.sync_sources(sources(1), earlier)
    [request] = migrated.claim_due(earlier, "w", lease_s=60, limit=1)
    migrated.record_poll(request.source_id, outcome(earlier), [entry("a", published=earlier)])
    migrated.record_poll(request.source_id, outcome(T0), [entry("b", published=T0)])
    first, copy = migrated.pending_docs()
    migrated.save_assignments(
        [Assignment(first.id, "s", new_story=True), Assignment(copy.id, "s", first.id)], T0
    )
    report = migrated.expire_entries(T0 - timedelta(days=10), T0)
    assert report is not None and report.entries == 1 and report.stories == ()
    [kept] = migrated.story_entries([s.id for s in migrated.stories()])
    assert kept.id == int(copy.id) and kept.duplicate_of is None
    [story] = migrated.stories()
    assert story.entry_count == 1


def test_retention_counts_age_from_when_an_entry_was_stored_not_its_outlet_date(
    migrated: Store,
) -> None:
    # A feed first polled years after its articles were dated (the demo's August 2024
    # on today's clock, or any outlet's archive): nothing may go before it has been
    # stored for the retention age, and no tombstone may keep it out meanwhile.
    stored = T0 + timedelta(days=3 * 365)
    migrated.sync_sources(sources(1), stored)
    [request] = migrated.claim_due(stored, "w", lease_s=60, limit=1)
    listed = [
        entry("week-old", published=T0),
        entry("years-old", published=T0 - timedelta(days=900)),
    ]
    migrated.record_poll(request.source_id, outcome(stored), listed, owner="w")

    for now in (stored, stored + timedelta(days=89, hours=23)):
        report = migrated.expire_entries(now - timedelta(days=90), now)
        assert report is not None and report.entries == 0, f"kept at {now:%Y-%m-%d}"
    assert migrated.counts()["entries"] == 2 and migrated.tombstones() == 0

    now = stored + timedelta(days=90, hours=1)
    report = migrated.expire_entries(now - timedelta(days=90), now)
    assert report is not None and report.entries == 2, "gone once stored for 90 days"
    assert migrated.tombstones() == 2
