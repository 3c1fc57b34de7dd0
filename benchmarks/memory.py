"""Peak memory of a worker cycle over a big store: 1,000,000 entries, 100,000 in the window.

    .venv/bin/python benchmarks/memory.py [--entries N] [--window-entries N] [--keep DIR]
        [--method tfidf|embedding] [--pending-without-vectors] [--no-from-snapshot]

Loads synthetic entries into a SQLite database (words spread as in news text,
clustered into stories of five sharing a few rarer names, a tenth of them
syndicated copies, the newest 2,000 not clustered yet), then runs
one leader cycle in a fresh process: rebuild the clusterer from the window
(restore), cluster the pending entries, publish what changed. The figure is that
process's peak resident set; the load happens elsewhere so it does not count.
The clusterer is the settings' default (embedding) unless `--method tfidf`. With
embeddings, every entry has a stored vector, as the workers leave them (each
computes the vectors of the entries it stores), so the leader embeds nothing;
`--pending-without-vectors` leaves the 2,000 pending ones without, as entries of
a worker that died before storing them, and the leader embeds those with the
model (a minute or two). `decisions_sha` hashes where each pending entry went
(its story's key, the entry it copies): equal hashes, equal decisions.

The first leader's restore replays the whole window (`restore_replay_s`): no
snapshot fits a new database, nor one saved by another version. Then, unless
`--no-from-snapshot`, two more leaders start from the snapshot the first saved
after its replay, each in a fresh process: one on a copy of the database as it
was loaded, which runs the whole cycle again (`restore_snapshot_s`, and whether
its decisions agree with the first leader's: `snapshot_decisions_same`), and one
on the first leader's database as if that leader had died after placing the
pending entries and merging stories, before its clean stop's snapshot: it
replays those decisions and makes those merges after the snapshot. Its restore
is `restore_s`, what a failover costs (`failover_later` decisions after the
snapshot, `failover_story_merges` merges); `restore_worst_s` estimates the
longest, with the `SNAPSHOT_EVERY` decisions between two snapshots after it.
Prints its figures, then one JSON object on the last line with `peak_rss_mb`
(`peak_rss_publish_mb`: the peak while publishing, on Linux).
"""

from __future__ import annotations

import argparse
import contextlib
import dataclasses
import hashlib
import json
import logging
import resource
import shutil
import sqlite3
import subprocess
import sys
import tempfile
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import numpy as np
from sqlalchemy import insert, text

from aggregator.cluster.replay import SNAPSHOT_EVERY
from aggregator.settings import (
    ClusterSettings,
    Settings,
    SourceConfig,
    TimelineConfig,
    parse_settings,
)
from aggregator.store import open_store
from aggregator.store.models import Entry, FetchState, Source, Story

NOW = datetime(2024, 8, 13, tzinfo=UTC)
SOURCES = 200
STORY_SIZE = 5
PENDING = 2_000
VOCABULARY = 50_000
BATCH = 50_000
TARGET_MB = 500


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--entries", type=int, default=1_000_000)
    parser.add_argument("--window-entries", type=int, default=100_000)
    parser.add_argument("--keep", type=Path, help="build the database in DIR and keep it")
    default_method = ClusterSettings().method
    parser.add_argument(
        "--method", default=default_method, help=f"cluster method (default: {default_method})"
    )
    parser.add_argument(
        "--pending-without-vectors",
        action="store_true",
        help="the leader embeds the pending entries (no worker stored their vectors)",
    )
    parser.add_argument(
        "--from-snapshot",
        action=argparse.BooleanOptionalAction,
        default=True,
        help="also start later leaders from the snapshot the first saved: after a clean "
        "stop (and compare decisions) and after the first died (default: on)",
    )
    parser.add_argument("--cycle", type=Path, help=argparse.SUPPRESS)  # the measured child
    parser.add_argument("--failover", type=Path, help=argparse.SUPPRESS)  # the measured child
    args = parser.parse_args()
    if args.cycle:
        print(json.dumps(run_cycle(args.cycle, args.method)))
        return
    if args.failover:
        print(json.dumps(run_failover(args.failover, args.method)))
        return
    with tempfile.TemporaryDirectory(prefix="aggregator-memory-") as tmp:
        folder = args.keep or Path(tmp)
        folder.mkdir(parents=True, exist_ok=True)
        database = folder / "memory.db"
        database.unlink(missing_ok=True)
        started = time.perf_counter()
        load(
            database,
            args.entries,
            args.window_entries,
            with_vectors=args.method != "tfidf",
            pending_vectors=not args.pending_without_vectors,
        )
        load_s = time.perf_counter() - started
        print(
            f"loaded {args.entries:,} entries ({args.window_entries:,} in the window) "
            f"in {load_s:.1f} s; database {database.stat().st_size / 2**20:.0f} MB"
        )
        if args.from_snapshot:
            shutil.copyfile(database, folder / "resumed.db")
        figures = measured_cycle(database, args.method)
        if args.from_snapshot:
            figures.update(resumed_cycle(database, folder / "resumed.db", args.method, figures))
            figures.update(failover(database, args.method))
    figures.update(
        entries=args.entries,
        window_entries=args.window_entries,
        method=args.method,
        pending_vectors=args.method != "tfidf" and not args.pending_without_vectors,
        load_s=round(load_s, 1),
    )
    figures["target_mb"] = TARGET_MB
    print(
        f"worker cycle: restore {figures['restore_s']} s, cluster {figures['cluster_s']} s, "
        f"publish {figures['publish_s']} s; peak resident memory {figures['peak_rss_mb']} MB "
        f"(target <= {TARGET_MB} MB)"
    )
    print(json.dumps(figures))


def measured_cycle(database: Path, method: str) -> dict[str, Any]:
    return measured_child("--cycle", database, method)


def measured_child(mode: str, database: Path, method: str) -> dict[str, Any]:
    """The figures a fresh process of this script prints in `mode` (--cycle, --failover)."""
    child = subprocess.run(
        [sys.executable, __file__, mode, str(database), "--method", method],
        capture_output=True,
        text=True,
        check=True,
    )
    figures: dict[str, Any] = json.loads(child.stdout.strip().splitlines()[-1])
    return figures


def resumed_cycle(
    database: Path, resumed: Path, method: str, replayed: dict[str, Any]
) -> dict[str, Any]:
    """The cycle again on `resumed` (the database as loaded), given only the snapshot
    the first leader saved after its replay (its oldest)."""
    with sqlite3.connect(resumed) as connection:
        connection.execute("ATTACH DATABASE ? AS first", (str(database),))
        oldest = "(SELECT min(id) FROM first.clustersnapshot WHERE checksum != '')"
        connection.execute(
            f"INSERT INTO clustersnapshot SELECT * FROM first.clustersnapshot WHERE id = {oldest}"
        )
        connection.execute(
            "INSERT INTO clustersnapshotpart SELECT * FROM first.clustersnapshotpart "
            f"WHERE snapshot_id = {oldest}"
        )
        [size] = connection.execute("SELECT size FROM clustersnapshot").fetchone()
    figures = measured_cycle(resumed, method)
    print(
        f"restore: {replayed['restore_s']} s replaying the window (snapshot saved in "
        f"{replayed['snapshot_save_s']} s), {figures['restore_s']} s from the snapshot; "
        f"same decisions: {figures['decisions_sha'] == replayed['decisions_sha']}"
    )
    return {
        "restore_replay_s": replayed["restore_s"],
        "restore_snapshot_s": figures["restore_s"],
        "snapshot_decisions_same": figures["decisions_sha"] == replayed["decisions_sha"],
        "snapshot_peak_rss_mb": figures["peak_rss_mb"],
        "snapshot_mb": round(size / 2**20, 1),
    }


def failover(database: Path, method: str) -> dict[str, Any]:
    """A leader's start on `database` after the first leader died: as if it had placed
    the pending entries and merged stories since its snapshot, then died before the
    snapshot of its clean stop (which is deleted). `restore_s` from now on."""
    with sqlite3.connect(database) as connection:
        newest = "(SELECT max(id) FROM clustersnapshot)"
        connection.execute(f"DELETE FROM clustersnapshotpart WHERE snapshot_id = {newest}")
        connection.execute(f"DELETE FROM clustersnapshot WHERE id = {newest}")
    figures = measured_child("--failover", database, method)
    later, loaded_s = figures["failover_later"], figures.pop("failover_load_s")
    # Snapshots come every SNAPSHOT_EVERY decisions: the longest a start can take,
    # replaying that many after the snapshot at this start's rate.
    per_later = (figures["restore_s"] - loaded_s) / later if later else 0.0
    figures["restore_worst_s"] = round(loaded_s + SNAPSHOT_EVERY * per_later, 2)
    print(
        f"failover: {figures['restore_s']} s from the snapshot, {later} decisions and "
        f"{figures['failover_story_merges']} story merges after it; at most about "
        f"{figures['restore_worst_s']} s ({SNAPSHOT_EVERY:,} decisions after it)"
    )
    return figures


def run_failover(database: Path, method: str) -> dict[str, Any]:
    from aggregator.pipeline import Pipeline

    heard: list[logging.LogRecord] = []
    handler = logging.Handler()
    handler.emit = heard.append  # type: ignore[method-assign]
    replay_log = logging.getLogger("aggregator.cluster.replay")
    replay_log.addHandler(handler)
    replay_log.setLevel(logging.INFO)
    store = open_store(f"sqlite:///{database}", create=False)
    later = NOW + timedelta(hours=1)
    pipeline = Pipeline(settings_for(database, method), store, clock=lambda: later)
    started = time.perf_counter()
    assert pipeline.lead()
    pipeline.restore()
    restore_s = time.perf_counter() - started
    pipeline.lease.resign()
    store.close()
    used = [r for r in heard if getattr(r, "event", "") == "snapshot_used"]
    caught_up = [r.args for r in heard if getattr(r, "event", "") == "snapshot_caught_up"]
    if not used:
        raise SystemExit("the failover replayed the whole window: " + str(heard[-1:]))
    merges = caught_up[0] if caught_up else (0, 0)
    return {
        "restore_s": round(restore_s, 2),
        "failover_later": getattr(used[0], "later", 0),
        "failover_load_s": used[0].args[3] if used[0].args else 0.0,  # reading the snapshot
        "failover_story_merges": merges[0],
        "failover_event_merges": merges[1],
        "failover_peak_rss_mb": round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, 1),
    }


# -- the measured cycle (a process of its own) ---------------------------------


def settings_for(database: Path, method: str = "tfidf") -> Settings:
    defaults = parse_settings("", environ={})
    return dataclasses.replace(
        defaults,
        cluster=dataclasses.replace(defaults.cluster, method=method),
        database_url=f"sqlite:///{database}",
        sources=tuple(
            SourceConfig(name=f"outlet-{n}", url=f"http://outlet{n}.test/feed")
            for n in range(SOURCES)
        ),
        timelines=(TimelineConfig(name="rare", title="Rare words", match=("w17 w18",)),),
    )


def run_cycle(database: Path, method: str = "tfidf") -> dict[str, Any]:
    from aggregator.pipeline import Pipeline

    store = open_store(f"sqlite:///{database}", create=False)
    settings = settings_for(database, method)
    # An hour on: pending entries without a vector are no longer waited for.
    later = NOW + timedelta(hours=1)
    pipeline = Pipeline(settings, store, clock=lambda: later)
    timings = {}
    saves: list[float] = []
    save_snapshot = pipeline.clusterer.save_snapshot

    def timed_save() -> bool:
        started = time.perf_counter()
        saved = save_snapshot()
        saves.append(time.perf_counter() - started)
        return saved

    pipeline.clusterer.save_snapshot = timed_save  # type: ignore[method-assign]
    started = time.perf_counter()
    assert pipeline.lead()
    pipeline.restore()
    timings["restore_s"] = time.perf_counter() - started  # with a snapshot saved after a replay
    timings["snapshot_save_s"] = saves[0] if saves else 0.0
    decide_cpu = _time_decisions(pipeline.assigner)
    started = time.perf_counter()
    clustered = pipeline.cluster()
    timings["cluster_s"] = time.perf_counter() - started
    # The leader's own peak, before publishing renders documents.
    cluster_peak_kb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    reset_peak_rss()  # so the peak read after publishing is the publish stage's own
    started = time.perf_counter()
    published = pipeline.publish()
    timings["publish_s"] = time.perf_counter() - started
    publish_peak_kb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    pipeline.close()
    decisions = decisions_sha(store, PENDING)
    store.close()
    peak_kb = max(cluster_peak_kb, resource.getrusage(resource.RUSAGE_SELF).ru_maxrss)  # kB
    return {
        "peak_rss_mb": round(peak_kb / 1024, 1),
        "peak_rss_before_publish_mb": round(cluster_peak_kb / 1024, 1),
        "peak_rss_publish_mb": round(publish_peak_kb / 1024, 1),
        **{k: round(v, 2) for k, v in timings.items()},
        "clustered": clustered,
        "timelines_published": len(published),
        "decisions_sha": decisions,
        # The leader's CPU in the clusterer itself (placing and merging), per pending entry.
        "leader_decide_ms_per_report": round(1000 * decide_cpu[0] / max(clustered, 1), 3),
    }


def reset_peak_rss() -> None:
    """Start the process's peak resident set afresh (Linux); elsewhere it keeps counting."""
    with contextlib.suppress(OSError):
        Path("/proc/self/clear_refs").write_text("5")


def _time_decisions(assigner: Any) -> list[float]:
    """Sum the CPU seconds of the assigner's `add` and `merge_converged` into the list's one item.

    The methods are wrapped on the class, in this process of its own: attributes set
    on the instance would be state the snapshot does not know, and the leader's last
    snapshot (`Pipeline.close`) would be refused."""
    spent = [0.0]

    def timed(call: Any) -> Any:
        def run(*args: Any, **kwargs: Any) -> Any:
            started = time.process_time()
            try:
                return call(*args, **kwargs)
            finally:
                spent[0] += time.process_time() - started

        return run

    for name in ("add", "merge_converged"):
        setattr(type(assigner), name, timed(getattr(type(assigner), name)))
    return spent


def decisions_sha(store: Any, newest: int) -> str:
    """A hash of where the newest entries went: entry id, story key, the entry it copies."""
    with store.engine.connect() as connection:
        rows = connection.execute(
            text(
                "SELECT entry.id, story.key, entry.duplicate_of FROM entry "
                "JOIN story ON story.id = entry.story_id "
                "WHERE entry.id > (SELECT max(id) FROM entry) - :newest ORDER BY entry.id"
            ),
            {"newest": newest},
        ).all()
    return hashlib.sha256(repr([tuple(row) for row in rows]).encode()).hexdigest()[:16]


# -- loading the synthetic store ------------------------------------------------


def load(
    database: Path,
    entries: int,
    window_entries: int,
    *,
    with_vectors: bool = False,
    pending_vectors: bool = True,
) -> None:
    """Fill the database; `with_vectors` stores an embedding with every clustered entry
    inside the clustering window and a day beyond (the restore counts back from the
    latest decision, so it reaches a little past the window's entries), and with every
    pending entry unless `pending_vectors` is False, as the workers leave them."""
    store = open_store(f"sqlite:///{database}")
    words = Words(entries)
    vectors_since = NOW - timedelta(hours=ClusterSettings().window_hours + 24)
    try:
        with store.engine.begin() as connection:
            connection.execute(insert(Source), source_rows())
            connection.execute(insert(FetchState), fetch_state_rows())
        old = entries - window_entries
        window_start = NOW - timedelta(hours=95)
        moments = [
            *spread(NOW - timedelta(days=89), window_start - timedelta(hours=2), old),
            *spread(window_start, NOW - timedelta(minutes=1), window_entries),
        ]
        for first in range(1, entries + 1, BATCH):
            ids = range(first, min(first + BATCH, entries + 1))
            common = words.common(len(ids) * 20).reshape(len(ids), 20)
            with store.engine.begin() as connection:
                stories = [
                    story_row(i, moments, words)
                    for i in ids
                    if (i - 1) % STORY_SIZE == 0 and i <= entries - PENDING
                ]
                if stories:
                    connection.execute(insert(Story), stories)
                rows = [entry_row(i, moments, entries, words, common[n]) for n, i in enumerate(ids)]
                if with_vectors:
                    for row in rows:
                        recent = row["sort_at"] >= vectors_since
                        stored = recent and (row["clustered"] or pending_vectors)
                        row["embedding"] = synthetic_vector(row["id"]) if stored else None
                connection.execute(insert(Entry), rows)
    finally:
        store.close()


class Words:
    """Synthetic words spread like news text: common words by Zipf's law, and a few
    rarer names (places, people) that every report of one story shares."""

    def __init__(self, entries: int) -> None:
        ranks = np.arange(1, VOCABULARY + 1)
        weights = 1.0 / ranks**1.1
        self._p = weights / weights.sum()
        self._rng = np.random.default_rng(20240813)
        stories = entries // STORY_SIZE + 1
        self._names = self._rng.integers(VOCABULARY // 10, VOCABULARY, size=(stories, 4))

    def common(self, count: int) -> np.ndarray:
        return self._rng.choice(VOCABULARY, size=count, p=self._p)

    def names(self, story: int) -> list[str]:
        return [word(int(n)) for n in self._names[(story - 1) // STORY_SIZE]]


def spread(start: datetime, end: datetime, count: int) -> list[datetime]:
    step = (end - start) / max(count, 1)
    return [start + step * n for n in range(count)]


def source_rows() -> list[dict[str, Any]]:
    return [
        {
            "id": n + 1,
            "name": f"outlet-{n}",
            "url": f"http://outlet{n}.test/feed",
            "enabled": True,
            "in_config": True,
            "tags": "",
            "created_at": NOW - timedelta(days=100),
        }
        for n in range(SOURCES)
    ]


def fetch_state_rows() -> list[dict[str, Any]]:
    return [
        {
            "source_id": n + 1,
            "status": "ok",
            "error_count": 0,
            "redirect_count": 0,
            "next_check_at": NOW + timedelta(hours=1),
        }
        for n in range(SOURCES)
    ]


def story_of(entry_id: int) -> int:
    """Stories are numbered by their founding entry: the first of every STORY_SIZE."""
    return (entry_id - 1) // STORY_SIZE * STORY_SIZE + 1


def story_row(founder: int, moments: list[datetime], words: Words) -> dict[str, Any]:
    last = min(founder + STORY_SIZE - 1, len(moments))
    return {
        "id": founder,
        "key": str(founder),
        "title": " ".join(words.names(founder)),
        "first_at": moments[founder - 1],
        "last_at": moments[last - 1],
        "entry_count": last - founder + 1,
        "source_count": last - founder + 1,
        "updated_at": moments[last - 1],
        "dirty": False,
        "revision": 1,
    }


def entry_row(
    entry_id: int, moments: list[datetime], entries: int, words: Words, common: np.ndarray
) -> dict[str, Any]:
    """Reports of eight words in the title and twenty in the text; every tenth a copy."""
    founder = story_of(entry_id)
    pending = entry_id > entries - PENDING
    copy_of = entry_id - 1 if entry_id % 10 == 0 and entry_id != founder else None
    url = f"http://outlet{(copy_of or entry_id) % SOURCES}.test/{copy_of or entry_id}"
    title = " ".join(words.names(founder) + [word(int(n)) for n in common[:4]])
    text = title + " " + " ".join(word(int(n)) for n in common[4:])
    return {
        "id": entry_id,
        "source_id": entry_id % SOURCES + 1,
        "key": f"guid-{entry_id}",
        "url": url,
        "canonical_url": url,
        "title": title,
        "summary": "",
        "text": text,
        "content_hash": hashlib.sha1(text.encode()).hexdigest(),
        "first_seen_at": moments[entry_id - 1],
        "changed_at": moments[entry_id - 1],
        "sort_at": moments[entry_id - 1],
        "story_id": None if pending else founder,
        "duplicate_of": None if pending else copy_of,
        "clustered": not pending,
    }


def synthetic_vector(entry_id: int) -> bytes:
    """A unit vector near its story's own direction, stored as the worker stores one."""
    story = np.random.default_rng(story_of(entry_id)).standard_normal(384)
    noise = np.random.default_rng(entry_id).standard_normal(384) * 0.5
    vector = story + noise
    return (vector / np.linalg.norm(vector)).astype(np.float16).tobytes()


def word(n: int) -> str:
    return f"w{n}"


if __name__ == "__main__":
    main()
