"""Which report each dedupe key (a hashed canonical URL or text) was first seen in, and
the story that report is in now: the assigner folds a later report with the same key
into that story as a copy. One entry per key in the window, so held compactly.

A key may stop finding copies at a given time (`until`): the same text a day later
is another report (a daily "Live updates" headline), while the same URL is always
the same article.
"""

from __future__ import annotations

import math
from array import array
from typing import ClassVar, NamedTuple

import numpy as np

from aggregator.cluster.snapshot import Reader, SnapshotError, Writer, strings


class CopyKey(NamedTuple):
    """A dedupe key of a report, and until when it finds copies of that report."""

    key: int  # 64 bits: a hashed canonical URL or normalised text
    until: float  # POSIX time; inf for a URL, which names one article for ever


# Latest keys kept in a dict before they are merged into the sorted array: a merge
# sorts every key (a few ms for a big window's 200,000), so not at every report.
FRESH_KEYS = 8192


class FirstCopies:
    """Dedupe key (64 bits) -> (first report's id, its story's id).

    Keys are one sorted array with each key's slot (-1: removed), the latest in
    a small dict merged into it now and then; a slot's report and story ids are
    items of two lists. A dict of tuples cost about 140 bytes a key, this about 30
    (the ids themselves are shared with the rest of the state).
    """

    # What a snapshot saves of it (`save`, `load`).
    SNAPSHOT: ClassVar = ("_keys _slots _fresh _docs _stories _until _free", "")

    def __init__(self) -> None:
        self._keys = np.empty(0, np.uint64)  # ascending
        self._slots = np.empty(0, np.int32)  # each key's slot, -1 once removed
        self._fresh: dict[int, int] = {}  # the latest keys -> their slots
        self._docs: list[str] = []  # slot -> the first report's id ("" when free)
        self._stories: list[str] = []  # slot -> its story's id
        self._until = array("d")  # slot -> POSIX time after which it finds no copies
        self._free: list[int] = []  # slots of removed keys

    def __len__(self) -> int:
        return len(self._docs) - len(self._free)

    def __contains__(self, key: int) -> bool:
        return self._slot(key) is not None

    def get(self, key: int, at: float | None = None) -> tuple[str, str] | None:
        """(first report, its story) of the key; with `at` (POSIX time), only if the
        key still finds copies then."""
        slot = self._slot(key)
        if slot is None or (at is not None and at > self._until[slot]):
            return None
        return self._docs[slot], self._stories[slot]

    def add(self, key: int, doc_id: str, story_id: str, until: float = math.inf) -> None:
        """The key, first seen in `doc_id` of `story_id`, finding copies until `until`;
        it replaces the key's earlier first report, if one is still held."""
        self.remove(key)
        if self._free:
            slot = self._free.pop()
            self._docs[slot], self._stories[slot] = doc_id, story_id
            self._until[slot] = until
        else:
            slot = len(self._docs)
            self._docs.append(doc_id)
            self._stories.append(story_id)
            self._until.append(until)
        self._fresh[key] = slot
        if len(self._fresh) > FRESH_KEYS:
            self._merge_fresh()

    def move(self, key: int, story_id: str) -> None:
        """The key's first report is now in `story_id` (its story was merged into it)."""
        slot = self._slot(key)
        if slot is not None:
            self._stories[slot] = story_id

    def remove(self, key: int) -> None:
        slot = self._fresh.pop(key, None)
        if slot is None:
            at = self._at(key)
            if at is None:
                return
            slot = int(self._slots[at])
            self._slots[at] = -1
        self._docs[slot] = self._stories[slot] = ""
        self._free.append(slot)

    def _slot(self, key: int) -> int | None:
        slot = self._fresh.get(key)
        if slot is not None:
            return slot
        at = self._at(key)
        return None if at is None else int(self._slots[at])

    def _at(self, key: int) -> int | None:
        """Where the sorted array holds `key` with a slot, if it does."""
        at = int(np.searchsorted(self._keys, np.uint64(key)))
        if at < len(self._keys) and int(self._keys[at]) == key and self._slots[at] >= 0:
            return at
        return None

    def _merge_fresh(self) -> None:
        kept = self._slots >= 0
        fresh = self._fresh
        keys = np.concatenate((self._keys[kept], np.fromiter(fresh, np.uint64, len(fresh))))
        slots = np.concatenate(
            (self._slots[kept], np.fromiter(fresh.values(), np.int32, len(fresh)))
        )
        order = np.argsort(keys)
        self._keys, self._slots = keys[order], slots[order]
        self._fresh = {}

    def save(self, out: Writer) -> None:
        out.state_of(self)
        out.array("keys", self._keys, np.uint64)
        out.array("slots", self._slots, np.int32)
        fresh = self._fresh
        out.array("fresh.keys", np.fromiter(fresh, np.uint64, len(fresh)), np.uint64)
        out.array("fresh.slots", np.fromiter(fresh.values(), np.int32, len(fresh)), np.int32)
        out.value("docs", self._docs)
        out.value("stories", self._stories)
        out.array("until", np.frombuffer(self._until, np.float64), np.float64)
        out.array("free", np.array(self._free, np.int64), np.int64)

    def load(self, source: Reader) -> None:
        keys = source.array("keys", np.uint64)
        slots = source.array("slots", np.int32)
        fresh_keys = source.array("fresh.keys", np.uint64).tolist()
        fresh_slots = source.array("fresh.slots", np.int32).tolist()
        docs = strings(source.value("docs"))
        stories = strings(source.value("stories"))
        until = array("d", source.array("until", np.float64).tobytes())
        free = source.array("free", np.int64).tolist()
        if len(keys) != len(slots) or len(fresh_keys) != len(fresh_slots):
            raise SnapshotError("the dedupe keys in the snapshot are malformed")
        if not len(docs) == len(stories) == len(until) or np.any(keys[1:] <= keys[:-1]):
            raise SnapshotError("the dedupe keys in the snapshot are malformed")
        used = [*slots[slots >= 0].tolist(), *fresh_slots, *free]
        if any(not 0 <= s < len(docs) for s in used):
            raise SnapshotError("the dedupe keys in the snapshot are malformed")
        self._keys, self._slots = keys.copy(), slots.copy()
        self._fresh = dict(zip(fresh_keys, fresh_slots, strict=True))
        self._docs, self._stories, self._until, self._free = docs, stories, until, free
