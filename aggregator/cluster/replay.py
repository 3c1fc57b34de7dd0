"""The leader's clusterer over the store: replay the window's decisions, then place new entries.

At the start of a term the clusterer is rebuilt from the decisions stored inside
the clustering window (`restore`), so it sees exactly what the previous leader
saw: from the newest usable snapshot of the state (`snapshot.py`), the
decisions stored after it and the merges stored since (`StoryAssigner.catch_up`),
or, when no snapshot fits the code, the settings and the store, by replaying the
whole window. Then pending entries are placed in arrival order, a batch at a
time; each batch's decisions are one fenced write, which also renews the leader
lease. Stories that grew into one event are merged after each batch. The state
is saved every `SNAPSHOT_EVERY` decisions, after a long replay and when the
worker stops.
"""

from __future__ import annotations

import contextlib
import ctypes
import functools
import logging
import sys
import time
from collections.abc import Callable, Iterable, Iterator, Sequence
from datetime import datetime, timedelta
from itertools import islice
from typing import NamedTuple, TypeVar

import numpy as np

from aggregator.cluster import snapshot
from aggregator.cluster.assigner import StoryAssigner
from aggregator.cluster.snapshot import SnapshotError
from aggregator.cluster.vectors import decode_vector, encode_vector
from aggregator.settings import Settings
from aggregator.store import Store
from aggregator.store.lease import LeaderLease
from aggregator.types import Assignment, ClusterDoc

log = logging.getLogger(__name__)

CLUSTER_BATCH = 5000
# With embeddings a batch may have to be embedded before it is placed (about 35
# entries a second here) when no worker stored its vectors: small batches keep
# each fenced write, which renews the leader lease, seconds apart, not minutes.
EMBED_BATCH = 256
RESTORE_CHUNK = 500  # decisions replayed per batch of backfilled embeddings
SNAPSHOT_EVERY = 5000  # decisions placed between two snapshots of the clusterer's state
# A full replay at least this long is followed by a snapshot, so that the next
# leader, should this one die early, does not replay it all again.
SNAPSHOT_AFTER_REPLAY = 1000

_T = TypeVar("_T")


class Placed(NamedTuple):
    """What one call of `Clusterer.place` did."""

    entries: int
    duplicates: int
    complete: bool  # False when the lead was lost or a merge was refused


class Clusterer:
    """Keeps the online clusterer between cycles for the worker holding the lease.

    `on_lost` is called when a fenced write is refused (another worker leads now);
    `on_batch` with (entries, duplicates) after each saved batch; `on_retired`
    with the ids of stories merged into others, whose documents must go.
    """

    def __init__(
        self,
        settings: Settings,
        store: Store,
        lease: LeaderLease,
        *,
        on_lost: Callable[[], None],
        on_batch: Callable[[int, int], None],
        on_retired: Callable[[Sequence[int]], None],
        on_failed: Callable[[str], None],
    ) -> None:
        self.settings = settings
        self.store = store
        self.lease = lease
        self.on_lost = on_lost
        self.on_batch = on_batch
        self.on_retired = on_retired
        self.on_failed = on_failed
        self.assigner = StoryAssigner(settings.cluster)
        self.restored = False
        self.unsaved = 0  # decisions the newest stored snapshot does not reflect

    def reset(self, settings: Settings | None = None) -> None:
        """Start afresh: the next placement replays the window first."""
        if settings is not None:
            self.settings = settings
        self.assigner = StoryAssigner(self.settings.cluster)
        self.restored = False
        self.unsaved = 0

    def restore(self) -> None:
        """Rebuild the clusterer from the newest usable snapshot and the decisions stored
        after it, or else from all the decisions stored inside the window.

        With embeddings, each entry's stored vector is replayed, so a restart
        embeds nothing (entries clustered before vectors were stored are embedded
        once, in batches, and their vectors kept). A full replay of a big window
        takes minutes: the leader lease is renewed as it goes, so that no other
        worker takes over meanwhile (and if one did, this one stops).
        """
        latest = self.store.latest_clustered_at()
        if latest is not None:
            since = latest - timedelta(hours=self.settings.cluster.window_hours)
            catch_up = self._resume(latest, since)
            if catch_up is None:
                replayed = self._replay_window(since)
            else:
                replayed = self._replay(self._decisions_of(catch_up.later, since))
                if replayed is not None and not self._caught_up(catch_up, since):
                    replayed = self._replay_window(since)
            if replayed is None:
                return
            self.assigner.index_restored()
            # The replayed stories meet their candidates now, as after a batch: a
            # leader that died between a batch and its merge pass left merges
            # undone. Done before the snapshot, so the next leader need not redo it.
            if self.settings.cluster.merge_stories and not self._merge_converged():
                return
            release_free_memory()
            self.unsaved = replayed
            self.restored = True
            if catch_up is None and replayed >= SNAPSHOT_AFTER_REPLAY:
                self.save_snapshot()
            return
        self.restored = True

    def _replay_window(self, since: datetime) -> int | None:
        """Replay every decision inside the window into a fresh clusterer."""
        self.assigner = StoryAssigner(self.settings.cluster)
        decisions = self.store.clustered_since(since, embeddings=self.assigner.uses_embeddings)
        return self._replay(decisions)

    def _replay(
        self, decisions: Iterable[tuple[ClusterDoc, Assignment, bytes | None]]
    ) -> int | None:
        """Replay stored decisions in order; how many, or None if the lead was lost."""
        renew_every = self.settings.worker.lease_seconds / 3
        renewed = time.monotonic()
        uses_embeddings = self.assigner.uses_embeddings
        replayed = 0
        for chunk in _chunks(decisions, RESTORE_CHUNK):
            vectors = self._restored_vectors(chunk) if uses_embeddings else {}
            if vectors is None:
                return None
            for doc, assignment, _ in chunk:
                self._restore_one(doc, assignment, vectors.get(doc.id))
            replayed += len(chunk)
            if time.monotonic() - renewed > renew_every:
                if self.lease.term is not None and not self.lease.renew():
                    self.on_lost()
                    return None
                renewed = time.monotonic()
        return replayed

    def _decisions_of(
        self, later: Sequence[int], since: datetime
    ) -> Iterator[tuple[ClusterDoc, Assignment, bytes | None]]:
        """The stored decisions of the entries `later` names, with their documents, in
        their order."""
        for chunk in _chunks(later, RESTORE_CHUNK):
            yield from self.store.clustered_since(
                since, embeddings=self.assigner.uses_embeddings, entry_ids=chunk
            )

    # -- snapshots of the state (snapshot.py) --------------------------------

    def _caught_up(self, catch_up: snapshot.CatchUp, since: datetime) -> bool:
        """Make in the resumed state the merges the store made after its snapshot (a
        leader merged stories, then died before its next snapshot); whether it could."""
        if not catch_up.stories and not catch_up.events:
            return True
        wanted = set(catch_up.stories.values()) | set(catch_up.events.values())
        # The new keys' names, read again for these few: the coverage read at the start
        # keeps hashes only, not a name for each of a big window's keys.
        keys: dict[int, str] = {}
        for _, _, story_key, _, event_key in self.store.decisions_since(since):
            for key in (story_key, event_key):
                if (found := snapshot.key_hash(key)) in wanted:
                    keys[found] = key
        done = len(keys) == len(wanted) and self.assigner.catch_up(
            {old: keys[new] for old, new in catch_up.stories.items()},
            {old: keys[new] for old, new in catch_up.events.items()},
        )
        if done:
            log.info(
                "made the %d story and %d event merges stored after the snapshot",
                len(catch_up.stories),
                len(catch_up.events),
                extra={"event": "snapshot_caught_up"},
            )
        else:
            log.warning(
                "the snapshot's state cannot follow the merges stored after it (a story "
                "or event they name has left its window): replaying the whole window",
                extra={"event": "snapshot_unused"},
            )
        return done

    def _resume(self, latest: datetime, since: datetime) -> snapshot.CatchUp | None:
        """Load the newest usable snapshot; what it lacks of the store (the decisions
        stored after it, the merges made since), or None (each unusable snapshot logged
        with why) to replay all."""
        headers = self.store.snapshot_headers()
        if not headers:
            log.info("no snapshot of the clusterer is stored: replaying the whole window")
            return None
        wanted = snapshot.fingerprint(self.settings.cluster)
        stored: snapshot.Coverage | None = None  # the store's decisions, read once
        for header in headers:
            started = time.perf_counter()
            try:
                if header.fingerprint != wanted:
                    raise SnapshotError(
                        "it was made by another version of the clusterer or under other "
                        "cluster settings"
                    )
                if header.latest_at > latest:
                    raise SnapshotError(
                        f"it is newer than the store (its latest decision {header.latest_at}, "
                        f"the store's {latest})"
                    )
                if header.latest_at < since:
                    raise SnapshotError(
                        f"it is older than the clustering window (its latest decision "
                        f"{header.latest_at}, the window starts {since})"
                    )
                state = snapshot.Reader(
                    [(p.name, p.seq, p.checksum) for p in self.store.snapshot_pieces(header.id)],
                    functools.partial(self.store.snapshot_piece, header.id),
                    header.checksum,
                )
                coverage = snapshot.Coverage.read(state.at("coverage"))
                if stored is None:
                    stored = snapshot.Coverage.of(self.store.decisions_since(since))
                catch_up = coverage.catch_up(stored, since)
                del coverage
                assigner = StoryAssigner(self.settings.cluster)
                assigner.load(state.at("assigner"))
            except Exception as exc:
                log.warning(
                    "snapshot %d of the clusterer (saved %s) is not used: %s",
                    header.id,
                    header.created_at.isoformat(timespec="seconds"),
                    exc,
                    exc_info=not isinstance(exc, SnapshotError),
                    extra={"event": "snapshot_unused", "snapshot": header.id},
                )
                continue
            self.assigner = assigner
            log.info(
                "restored the clusterer from snapshot %d (%d decisions, %.1f MB) in %.1f s; "
                "replaying the %d decisions stored after it",
                header.id,
                header.decisions,
                header.size / 2**20,
                time.perf_counter() - started,
                len(catch_up.later),
                extra={
                    "event": "snapshot_used",
                    "snapshot": header.id,
                    "later": len(catch_up.later),
                },
            )
            return catch_up
        log.warning("no usable snapshot of the clusterer: replaying the whole window")
        return None

    def save_snapshot(self) -> bool:
        """Save the clusterer's state with the decisions it reflects; False when it was not
        (logged with why: a new leader then replays, it is never wrong)."""
        term = self.lease.term
        if not self.restored or term is None:
            return False
        started = time.perf_counter()
        try:
            latest = self.store.latest_clustered_at()
            if latest is None:
                return False
            since = latest - timedelta(hours=self.settings.cluster.window_hours)
            coverage = snapshot.Coverage.of(self.store.decisions_since(since))
            decisions = len(coverage)

            def write(put: Callable[[str, int, snapshot.Piece, str], None]) -> str:
                out = snapshot.Writer(put)
                coverage.write(out.at("coverage"))
                self.assigner.save(out.at("assigner"))
                return out.finish()

            saved = self.store.save_snapshot(
                write,
                fingerprint=snapshot.fingerprint(self.settings.cluster),
                latest_at=latest,
                decisions=decisions,
                now=self.lease.clock(),
                term=term,
            )
        except Exception as exc:
            log.warning(
                "the clusterer's state was not saved (%s): a new leader replays the window",
                exc,
                exc_info=not isinstance(exc, SnapshotError),
                extra={"event": "snapshot_failed"},
            )
            return False
        finally:
            release_free_memory()
        if saved is None:
            self.on_lost()
            return False
        self.unsaved = 0
        log.info(
            "saved snapshot %d of the clusterer (%d decisions, %.1f MB) in %.1f s",
            saved[0],
            decisions,
            saved[1] / 2**20,
            time.perf_counter() - started,
            extra={"event": "snapshot_saved", "snapshot": saved[0]},
        )
        return True

    def place(self, stopped: Callable[[], bool]) -> Placed:
        """Assign every pending entry, oldest first, and save the decisions, until `stopped()`."""
        if not self.restored:
            self.restore()
            if not self.restored:  # another worker took the lead meanwhile
                return Placed(0, 0, complete=False)
        entries = duplicates = 0
        batch = EMBED_BATCH if self.assigner.uses_embeddings else CLUSTER_BATCH
        try:
            while not stopped() and (docs := self._pending(batch)):
                vectors = self._batch_vectors(docs)
                if vectors is None:
                    return Placed(entries, duplicates, complete=False)
                self.assigner.scan_ahead(docs, vectors)
                assignments = [
                    self._add_one(doc, vector) for doc, vector in zip(docs, vectors, strict=True)
                ]
                if (
                    self.store.save_assignments(assignments, self.lease.clock(), self.lease.term)
                    is None
                ):
                    self.on_lost()
                    return Placed(entries, duplicates, complete=False)
                folded = sum(a.duplicate_of is not None for a in assignments)
                entries += len(assignments)
                duplicates += folded
                self.on_batch(len(assignments), folded)
                if self.settings.cluster.merge_stories and not self._merge_converged():
                    return Placed(entries, duplicates, complete=False)
                self.unsaved += len(assignments)
                if self.unsaved >= SNAPSHOT_EVERY:
                    self.save_snapshot()
        except BaseException:
            # The clusterer has taken decisions the store may not have: start afresh.
            self.reset()
            raise
        return Placed(entries, duplicates, complete=True)

    def _pending(self, limit: int) -> list[ClusterDoc]:
        """The next pending entries. With embeddings, one stored without a vector waits
        as long as a worker's claim lasts: the worker that stored it is computing it
        (see `Pipeline.embed_stored`), and only one that died leaves it to the leader."""
        if not self.assigner.uses_embeddings:
            return self.store.pending_docs(limit)
        grace = timedelta(seconds=self.settings.worker.lease_seconds)
        return self.store.pending_docs(limit, vectorless_by=self.lease.clock() - grace)

    def _add_one(self, doc: ClusterDoc, vector: np.ndarray | None) -> Assignment:
        """Place one doc; one the clusterer cannot handle stands alone, never stopping the rest."""
        try:
            return self.assigner.add(doc, vector)
        except Exception:
            log.exception(
                "entry %s could not be clustered; it stands as a story of its own", doc.id
            )
            self.on_failed("cluster")
            return Assignment(doc.id, doc.id, new_story=True)

    def _restore_one(
        self, doc: ClusterDoc, assignment: Assignment, vector: np.ndarray | None
    ) -> None:
        try:
            self.assigner.restore(doc, assignment, vector)
        except Exception:
            log.exception("entry %s could not be replayed; later reports will not meet it", doc.id)
            self.on_failed("cluster")

    def _merge_converged(self) -> bool:
        """Merge stories that grew into one event, in the clusterer and the store; False if
        the lead was lost (the clusterer then starts afresh from what the store holds).
        """
        merges = self.assigner.merge_converged()
        events = self.assigner.event_merges()
        if not merges:
            return True
        retired = self.store.merge_stories(
            merges, self.lease.clock(), self.lease.term, events=events
        )
        if retired is None:
            self.on_lost()
            return False
        if retired:
            self.on_retired(retired)
            log.info(
                "merged %d stories into the stories they converged with",
                len(retired),
                extra={"event": "merge", "stories": len(retired)},
            )
        return True

    def _restored_vectors(
        self, chunk: Sequence[tuple[ClusterDoc, Assignment, bytes | None]]
    ) -> dict[str, np.ndarray] | None:
        """The chunk's vectors by doc id, embedding and storing those missing; None if lead lost.

        Duplicates are replayed without a vector, so none is computed for them.
        """
        stored = {doc.id: raw for doc, _, raw in chunk if raw is not None}
        missing = [doc for doc, a, raw in chunk if raw is None and a.duplicate_of is None]
        if missing:
            fresh = self._embed_and_store(missing)
            if fresh is None:
                return None
            stored.update(fresh)
        return {doc_id: decode_vector(raw) for doc_id, raw in stored.items()}

    def _embed_and_store(self, docs: Sequence[ClusterDoc]) -> dict[str, bytes] | None:
        """Embed docs in one batch and store the vectors; None (lead lost) if refused."""
        encoded = {
            doc.id: encode_vector(vector)
            for doc, vector in zip(docs, self.assigner.embed(docs), strict=True)
        }
        if not self.store.save_embeddings(encoded, self.lease.clock(), self.lease.term):
            self.on_lost()
            return None
        return encoded

    def _batch_vectors(self, docs: Sequence[ClusterDoc]) -> list[np.ndarray | None] | None:
        """A vector for each pending doc: stored ones read back, the rest embedded once.

        Live decisions use the stored (float16) values too, so a replay after a
        restart sees exactly what the live clusterer saw. None if the lead was lost.
        """
        if not self.assigner.uses_embeddings:
            return [None] * len(docs)
        stored = self.store.stored_embeddings(doc.id for doc in docs)
        missing = [doc for doc in docs if doc.id not in stored]
        if missing:
            fresh = self._embed_and_store(missing)
            if fresh is None:
                return None
            stored.update(fresh)
        return [decode_vector(stored[doc.id]) for doc in docs]


def release_free_memory() -> None:
    """Hand the memory freed by a replay, a snapshot's save or its load back to the
    system (glibc keeps freed blocks in its heap otherwise, and a peak stays the
    resident size for the life of the leader); elsewhere, nothing."""
    if sys.platform != "linux":
        return
    with contextlib.suppress(OSError, AttributeError):  # AttributeError: not glibc
        ctypes.CDLL(None).malloc_trim(0)


def _chunks(items: Iterable[_T], size: int) -> Iterator[list[_T]]:
    iterator = iter(items)
    while chunk := list(islice(iterator, size)):
        yield chunk
