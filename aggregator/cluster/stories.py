"""The live stories of an online clusterer: bounded centroids and the indexes that find them.

A story keeps decayed centroids, each cut to its heaviest features and held as
two small arrays (weights in half precision), and only its latest members' name
and figure keys and embeddings (a byte per dimension), so a story costs a few
kilobytes however long it runs. Reports find candidate stories two ways, both
bounded: an inverted index that lists, per term, only the stories that used it
most recently, and an embedding matrix of the most recently active stories. So
the cost of placing a report depends on those bounds, never on how many reports
were ever stored.
"""

from __future__ import annotations

import heapq
import math
from array import array
from collections import Counter
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from functools import lru_cache
from itertools import chain
from typing import ClassVar

import numpy as np
from threadpoolctl import threadpool_limits

from aggregator.cluster.features import EMPTY, NO_KEYS, Vector
from aggregator.cluster.snapshot import (
    Reader,
    SnapshotError,
    Writer,
    same_length,
    some_time,
    strings,
)

EmbeddingRow = np.ndarray  # one L2-normalised, language-centred embedding (float32)
# How a story keeps its members' embeddings: a byte per dimension with one scale
# per member, a quarter of float32's bytes; a cosine with one moves by about
# 1e-3, far below what a join decision can see.
MEMBER_EMBEDDING = np.int8
_INT8_MAX = 127.0
# How a story keeps the decayed sum of its members' embeddings.
EMBEDDING_SUM = np.float16
# A member vector is unit length; weights decayed below this no longer matter.
PRUNE_BELOW = 1e-3
# A centroid keeps at most this many of its heaviest features: beyond them the
# weights are small and a long story's memory would grow with its vocabulary.
WORDS_KEPT = 128
GRAMS_KEPT = 384
CENTROID_WEIGHTS = np.float16  # how a centroid keeps its weights
MERGED_RECENT = 4  # a story grown by merges keeps up to this many times `recent` members
# A lazy expiry heap is rebuilt from the live rows once its stale rows exceed the
# live ones by this many: a story is pushed again at each later report, and a
# big window's heap was five rows a story.
COMPACT_SLACK = 64


@dataclass(frozen=True, slots=True)
class Member:
    """What a story remembers of each of its latest reports."""

    index_terms: np.ndarray  # the report's heaviest stems (int32): 40 bytes, not 400 as a tuple
    names: np.ndarray  # name keys, ascending (features.key_array)
    numbers: np.ndarray  # figure keys, ascending
    days: np.ndarray  # calendar days the headline names, ascending
    lang: str
    embedding: np.ndarray | None  # float32 as prepared; a story keeps it in `member_rows`

    # What a snapshot saves (see `Story.save_all`); a kept member has no embedding.
    SNAPSHOT: ClassVar = ("index_terms names numbers days lang embedding", "")


@dataclass(slots=True)
class Story:
    """One event as it stands: decayed centroids and its latest members.

    A centroid is a decayed sum: each new member multiplies the old weights by
    (1 - 1/memory), so the last `memory` or so members dominate and a long story
    can drift with its news without storing its members' vectors.
    """

    id: str
    latest: datetime
    memory: int
    recent: int = 8  # members whose names, numbers and embeddings are kept one by one
    words_kept: int = WORDS_KEPT
    grams_kept: int = GRAMS_KEPT
    words: Vector = EMPTY
    grams: Vector = EMPTY
    words_norm: float = 0.0
    grams_norm: float = 0.0
    # Lists, not deques: short, and an empty deque costs 600 bytes a story.
    members: list[Member] = field(default_factory=list)  # kept without their embeddings
    # The latest members' embeddings, a byte per dimension, one row each (oldest
    # first), and what one step of each row stands for. One matrix a story, not an
    # array a member: a hundred bytes less per member. Trimmed with `members`
    # (in one clusterer either every member has an embedding or none has).
    member_rows: np.ndarray | None = None
    member_scales: np.ndarray | None = None
    member_terms: list[np.ndarray] = field(default_factory=list)  # of the last `memory`
    names: np.ndarray = field(
        default_factory=lambda: NO_KEYS
    )  # name keys of the `recent` members, ascending
    numbers: np.ndarray = field(
        default_factory=lambda: NO_KEYS
    )  # figure keys of the `recent` members, ascending
    days: np.ndarray = field(
        default_factory=lambda: NO_KEYS
    )  # calendar days the `recent` members' headlines name, ascending
    langs: Counter[str] = field(default_factory=Counter)
    # The decayed sum of the members' embeddings (float16, owned: updated in place)
    # and its norm; the unit vector is derived when asked, not kept beside it.
    embedding_sum: np.ndarray | None = None
    embedding_norm: float = 0.0
    # Dedupe keys (hashed) that point here: 8 bytes each, not a 36-byte int and a pointer.
    keys: array[int] = field(default_factory=lambda: array("Q"))
    size: int = 0

    # What a snapshot saves (`save_all`, `load_all`); every field is saved.
    SNAPSHOT: ClassVar = (
        "id latest memory recent words_kept grams_kept words grams words_norm grams_norm "
        "members member_rows member_scales member_terms names numbers days langs "
        "embedding_sum embedding_norm keys size",
        "",
    )

    @staticmethod
    def save_all(out: Writer, stories: Sequence[Story]) -> None:
        """Many stories as a few long arrays, in the order given."""
        if stories:
            out.state_of(stories[0])
        members = [m for s in stories for m in s.members]
        if members:
            out.state_of(members[0])
        if any(m.embedding is not None for m in members):
            raise SnapshotError("a story keeps a member's embedding outside member_rows")
        out.value("ids", [s.id for s in stories])
        out.times("latest", (s.latest for s in stories))
        for name in ("memory", "recent", "words_kept", "grams_kept", "size"):
            out.array(name, np.array([getattr(s, name) for s in stories], np.int64), np.int64)
        for name in ("words_norm", "grams_norm", "embedding_norm"):
            out.array(name, np.array([getattr(s, name) for s in stories], np.float64), np.float64)
        for name in ("words", "grams"):
            vectors = [getattr(s, name) for s in stories]
            out.ragged(f"{name}.keys", [v.keys for v in vectors], np.int32)
            out.ragged(f"{name}.weights", [_centroid_weights(v) for v in vectors], CENTROID_WEIGHTS)
        for name in ("names", "numbers", "days"):
            out.ragged(name, [getattr(s, name) for s in stories], np.uint32)
        out.optional("member_rows", [s.member_rows for s in stories], MEMBER_EMBEDDING)
        out.optional("member_scales", [s.member_scales for s in stories], np.float32)
        out.optional("embedding_sum", [s.embedding_sum for s in stories], EMBEDDING_SUM)
        out.ragged("keys", [np.array(s.keys, np.uint64) for s in stories], np.uint64)
        out.array("langs.count", np.array([len(s.langs) for s in stories], np.int64), np.int64)
        out.value("langs", [[lang, n] for s in stories for lang, n in s.langs.items()])
        out.array("members.count", np.array([len(s.members) for s in stories], np.int64), np.int64)
        out.value("members.lang", [m.lang for m in members])
        for name in ("names", "numbers", "days"):
            out.ragged(f"members.{name}", [getattr(m, name) for m in members], np.uint32)
        out.ragged("members.index_terms", [m.index_terms for m in members], np.int32)
        terms = [t for s in stories for t in s.member_terms]
        out.array(
            "terms.count", np.array([len(s.member_terms) for s in stories], np.int64), np.int64
        )
        out.ragged("terms", terms, np.int32)

    @staticmethod
    def load_all(source: Reader) -> list[Story]:
        ids = strings(source.value("ids"))
        latest = source.times("latest")
        ints = {
            name: source.array(name, np.int64).tolist()
            for name in ("memory", "recent", "words_kept", "grams_kept", "size")
        }
        floats = {
            name: source.array(name, np.float64).tolist()
            for name in ("words_norm", "grams_norm", "embedding_norm")
        }
        vectors = {
            name: [
                Vector(k, w) if len(k) else EMPTY
                for k, w in zip(
                    source.ragged(f"{name}.keys", np.int32),
                    source.ragged(f"{name}.weights", CENTROID_WEIGHTS),
                    strict=True,
                )
            ]
            for name in ("words", "grams")
        }
        keyed = {name: source.ragged(name, np.uint32) for name in ("names", "numbers", "days")}
        rows = source.optional("member_rows", MEMBER_EMBEDDING)
        scales = source.optional("member_scales", np.float32)
        sums = source.optional("embedding_sum", EMBEDDING_SUM)
        keys = source.ragged("keys", np.uint64)
        members = _members(source)
        member_counts = source.array("members.count", np.int64).tolist()
        terms = source.ragged("terms", np.int32)
        term_counts = source.array("terms.count", np.int64).tolist()
        lang_counts = source.array("langs.count", np.int64).tolist()
        langs = source.value("langs")
        same_length(
            ids, latest, rows, scales, sums, keys, member_counts, term_counts, *ints.values()
        )
        if sum(member_counts) != len(members) or sum(term_counts) != len(terms):
            raise SnapshotError("stories in the snapshot do not add up to their members")
        if sum(lang_counts) != len(langs):
            raise SnapshotError("stories in the snapshot do not add up to their languages")
        stories: list[Story] = []
        at_member = at_term = at_lang = 0
        for i, story_id in enumerate(ids):
            m, t, n = member_counts[i], term_counts[i], lang_counts[i]
            # A live story's latest terms are its members' own arrays: share them again
            # (ninety thousand small arrays in a big window).
            own = {
                x.index_terms.tobytes(): x.index_terms for x in members[at_member : at_member + m]
            }
            stories.append(
                Story(
                    id=story_id,
                    latest=some_time(latest[i]),
                    memory=ints["memory"][i],
                    recent=ints["recent"][i],
                    words_kept=ints["words_kept"][i],
                    grams_kept=ints["grams_kept"][i],
                    words=vectors["words"][i],
                    grams=vectors["grams"][i],
                    words_norm=floats["words_norm"][i],
                    grams_norm=floats["grams_norm"][i],
                    members=members[at_member : at_member + m],
                    member_rows=rows[i],
                    member_scales=scales[i],
                    member_terms=[own.get(x.tobytes(), x) for x in terms[at_term : at_term + t]],
                    names=_keys_or_none(keyed["names"][i]),
                    numbers=_keys_or_none(keyed["numbers"][i]),
                    days=_keys_or_none(keyed["days"][i]),
                    langs=_counter(langs[at_lang : at_lang + n]),
                    embedding_sum=sums[i],
                    embedding_norm=floats["embedding_norm"][i],
                    keys=_key_array(keys[i]),
                    size=ints["size"][i],
                )
            )
            at_member, at_term, at_lang = at_member + m, at_term + t, at_lang + n
        return stories

    @property
    def _keep(self) -> float:
        return 1.0 - 1.0 / self.memory

    def add(self, words: Vector, grams: Vector, member: Member) -> list[int]:
        """Take a member into the story; returns index terms it no longer has."""
        self.words, self.words_norm = _decayed_sum(self.words, words, self._keep, self.words_kept)
        self.grams, self.grams_norm = _decayed_sum(self.grams, grams, self._keep, self.grams_kept)
        self.langs[member.lang] += 1
        self.members.append(_as_kept(member))
        if len(self.members) > self.recent:
            del self.members[0]
        self._recount_members()
        if member.embedding is not None:
            rows, scales = _quantised(member.embedding[None, :])
            self._keep_rows(rows, scales)
            self._add_embedding(member.embedding)
        self.member_terms.append(member.index_terms)
        return self._trim_terms()

    def _trim_terms(self) -> list[int]:
        """Forget the index terms of members before the last `memory`; returns those
        no member uses any more."""
        excess = len(self.member_terms) - self.memory
        if excess <= 0:
            return []
        old = set(_all_terms(self.member_terms[:excess]))
        del self.member_terms[:excess]
        return list(old.difference(_all_terms(self.member_terms)))

    @property
    def terms(self) -> Counter[int]:
        """Index terms of the last `memory` members, with how many used each.

        Counted when asked (merges, and candidates found by embedding alone):
        a counter kept per story cost a kilobyte each.
        """
        return Counter(_all_terms(self.member_terms))

    def heaviest_terms(self, limit: int) -> list[tuple[int, int]]:
        """The `limit` index terms most of the last `memory` members used, with how many
        used each, most used first (ties: the lower term first). `terms` sorted so,
        in a few array operations: a merge pass asks this of thousands of stories."""
        if not self.member_terms:
            return []
        terms, counts = np.unique(np.concatenate(self.member_terms), return_counts=True)
        order = np.lexsort((terms, -counts))[:limit]
        return list(zip(terms[order].tolist(), counts[order].tolist(), strict=True))

    def shared_terms(self, terms: set[int]) -> int:
        """How many of `terms` the last `memory` members used (no counting needed)."""
        return len(terms.intersection(_all_terms(self.member_terms)))

    def absorb(self, other: Story) -> list[int]:
        """Take in every trace of a story found to be the same event (a merge);
        returns the index terms the story no longer has.

        The other story's members count as the latest: the centroids decay as
        if they had joined one by one, and only the last `memory` members' terms
        are kept. Both sides' latest members are kept, up to `MERGED_RECENT`
        times `recent`, and the next joins trim them one at a time: a story
        grown by merges is broad, and more of its reports are worth meeting
        (on UCI, keeping only `recent` costs 0.03 of F1). A story that absorbs
        a thousand lone reports stays as bounded as one they joined.
        """
        keep = self._keep ** len(other.member_terms)
        self.words, self.words_norm = _decayed_sum(self.words, other.words, keep, self.words_kept)
        self.grams, self.grams_norm = _decayed_sum(self.grams, other.grams, keep, self.grams_kept)
        self.langs.update(other.langs)
        self.members = (self.members + other.members)[-MERGED_RECENT * self.recent :]
        self._recount_members()
        if other.member_rows is not None and other.member_scales is not None:
            self._keep_rows(other.member_rows, other.member_scales)
        if other.embedding_sum is not None:
            if self.embedding_sum is None:
                self.embedding_sum = other.embedding_sum.copy()
            else:
                self.embedding_sum *= EMBEDDING_SUM(keep)
                self.embedding_sum += other.embedding_sum
            self.embedding_norm = _norm(self.embedding_sum)
        self.keys.extend(other.keys)
        self.size += other.size
        self.latest = max(self.latest, other.latest)
        self.member_terms.extend(other.member_terms)
        return self._trim_terms()

    def _keep_rows(self, rows: np.ndarray, scales: np.ndarray) -> None:
        """Append members' embedding rows, keeping as many as there are members."""
        if self.member_rows is not None and self.member_scales is not None:
            rows = np.concatenate((self.member_rows, rows))
            scales = np.concatenate((self.member_scales, scales))
        kept = len(self.members)
        if len(rows) > kept:  # a copy, so the story does not hold the longer array
            rows, scales = rows[-kept:].copy(), scales[-kept:].copy()
        self.member_rows, self.member_scales = rows, scales

    def _recount_members(self) -> None:
        self.names = union_keys(m.names for m in self.members)
        self.numbers = union_keys(m.numbers for m in self.members)
        self.days = union_keys(m.days for m in self.members)

    def shared_names(self, keys: np.ndarray) -> int:
        return shared_keys(keys, self.names)

    def shared_numbers(self, keys: np.ndarray) -> int:
        return shared_keys(keys, self.numbers)

    def _add_embedding(self, row: EmbeddingRow) -> None:
        # Half precision is plenty: the sum mostly holds the last `memory` unit
        # vectors, so its entries stay far from float16's limits.
        if self.embedding_sum is None:
            self.embedding_sum = row.astype(EMBEDDING_SUM)  # a copy, never the caller's row
        else:
            self.embedding_sum *= EMBEDDING_SUM(self._keep)
            self.embedding_sum += row.astype(EMBEDDING_SUM)
        self.embedding_norm = _norm(self.embedding_sum)

    @property
    def embedding_unit(self) -> EmbeddingRow | None:
        """The members' decayed mean direction (float32), or None without embeddings."""
        if self.embedding_sum is None or not self.embedding_norm:
            return None
        return self.embedding_sum.astype(np.float32) / np.float32(self.embedding_norm)

    def words_cosine(self, vector: Vector) -> float:
        return _centroid_cosine(vector, self.words, self.words_norm)

    def grams_cosine(self, vector: Vector) -> float:
        return _centroid_cosine(vector, self.grams, self.grams_norm)

    def embedding_cosine(self, row: EmbeddingRow) -> float:
        if self.embedding_sum is None or not self.embedding_norm:
            return 0.0
        return float(row @ self.embedding_sum.astype(np.float32)) / self.embedding_norm

    def nearest_member_cosine(self, row: EmbeddingRow) -> float:
        """The best cosine with one recent member: a story's newest turn may be far from its mean."""
        if self.member_rows is None or self.member_scales is None:
            return 0.0
        return float(np.max((self.member_rows.astype(np.float32) @ row) * self.member_scales))


def _centroid_weights(vector: Vector) -> np.ndarray:
    # An empty centroid is the shared EMPTY vector, whose weights are float32.
    return vector.weights if len(vector) else np.zeros(0, CENTROID_WEIGHTS)


def _key_array(keys: np.ndarray) -> array[int]:
    kept = array("Q")
    kept.frombytes(keys.astype(np.uint64).tobytes())
    return kept


def _keys_or_none(keys: np.ndarray) -> np.ndarray:
    """Saved key arrays as a story holds them: an empty one is the shared NO_KEYS."""
    return keys if len(keys) else NO_KEYS


def _counter(pairs: list[list[object]]) -> Counter[str]:
    counts: Counter[str] = Counter()
    dict.update(counts, ((str(lang), int(n)) for lang, n in pairs))  # type: ignore[call-overload]
    return counts


def _members(source: Reader) -> list[Member]:
    langs = strings(source.value("members.lang"))
    names = source.ragged("members.names", np.uint32)
    numbers = source.ragged("members.numbers", np.uint32)
    days = source.ragged("members.days", np.uint32)
    terms = source.ragged("members.index_terms", np.int32)
    same_length(langs, names, numbers, days, terms)
    return [
        Member(t, _keys_or_none(n), _keys_or_none(f), _keys_or_none(d), lang, None)
        for t, n, f, d, lang in zip(terms, names, numbers, days, langs, strict=True)
    ]


def shared_term_counts(stories: Sequence[Story], terms: Iterable[int]) -> list[int]:
    """`Story.shared_terms(terms)` of each story, counted in one pass over their arrays."""
    per_story = [story.member_terms for story in stories]
    arrays = list(chain.from_iterable(per_story))
    if not arrays:
        return [0] * len(stories)
    lengths = [sum(map(len, member_terms)) for member_terms in per_story]
    owner = np.repeat(np.arange(len(stories), dtype=np.int64), lengths)
    used = np.concatenate(arrays).astype(np.int64)
    hit = np.isin(used, np.fromiter(terms, np.int64))
    # Each story counts a term once, however many of its members used it.
    pairs = np.unique((owner[hit] << 32) | (used[hit] & 0xFFFFFFFF))
    return np.bincount(pairs >> 32, minlength=len(stories)).tolist()


def _all_terms(arrays: list[np.ndarray]) -> list[int]:
    return np.concatenate(arrays).tolist() if arrays else []


def _as_kept(member: Member) -> Member:
    """The member as a story keeps it: without its embedding (see `Story.member_rows`)
    and with no empty key arrays of its own (each costs a hundred bytes, and most
    reports have some)."""
    names = member.names if len(member.names) else NO_KEYS
    numbers = member.numbers if len(member.numbers) else NO_KEYS
    days = member.days if len(member.days) else NO_KEYS
    if (
        member.embedding is None
        and names is member.names
        and numbers is member.numbers
        and days is member.days
    ):
        return member
    return Member(member.index_terms, names, numbers, days, member.lang, None)


def _quantised(rows: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """int8 steps of each row and the size of its step, its largest entry mapped to 127."""
    peaks = np.max(np.abs(rows), axis=1).astype(np.float64)
    scales = np.where(peaks > 0.0, peaks / _INT8_MAX, 1.0)
    return np.rint(rows / scales[:, None]).astype(MEMBER_EMBEDDING), scales.astype(np.float32)


def _norm(row: np.ndarray) -> float:
    as32 = row.astype(np.float32)
    return math.sqrt(float(as32 @ as32))


def _centroid_cosine(vector: Vector, centroid: Vector, norm: float) -> float:
    if norm == 0.0:
        return 0.0
    return vector.dot(centroid) / norm


def union_keys(arrays: Iterable[np.ndarray]) -> np.ndarray:
    parts = [a for a in arrays if len(a)]
    return np.unique(np.concatenate(parts)) if parts else NO_KEYS


def shared_keys(keys: np.ndarray, among: np.ndarray) -> int:
    """How many of `keys` (unique) are in the ascending array `among`."""
    if not len(keys) or not len(among):
        return 0
    at = np.searchsorted(among, keys)
    at[at == len(among)] = 0
    return int(np.count_nonzero(among[at] == keys))


def _decayed_sum(centroid: Vector, vector: Vector, keep: float, kept: int) -> tuple[Vector, float]:
    """keep * centroid + vector, without the decayed-out weights, cut to the `kept` heaviest."""
    old = centroid.weights.astype(np.float64) * keep
    alive = old > PRUNE_BELOW
    keys = np.concatenate((centroid.keys[alive], vector.keys))
    weights = np.concatenate((old[alive], vector.weights))
    if not len(keys):
        return EMPTY, 0.0
    unique, inverse = np.unique(keys, return_inverse=True)
    summed = np.bincount(inverse, weights=weights, minlength=len(unique))
    if len(unique) > kept:
        # The heaviest, ties to the lower feature id, then back in id order.
        top = np.sort(np.lexsort((unique, -summed))[:kept])
        unique, summed = unique[top], summed[top]
    # Half precision: a centroid's weights are most of a story's bytes, and a cosine
    # with them moves by less than 1e-3. The norm is of the weights as kept.
    kept_weights = summed.astype(CENTROID_WEIGHTS)
    as_kept = kept_weights.astype(np.float64)
    return Vector(unique.astype(np.int32), kept_weights), math.sqrt(float(as_kept @ as_kept))


@lru_cache(maxsize=1)
def single_threaded_blas() -> None:
    """Keep numpy's BLAS to one thread in this process.

    The shelf's scan is one small matrix-vector product per report. OpenBLAS
    splits it across threads that spin while they wait, and on a busy machine
    (a worker embedding beside the leader) one scan took 35 ms instead of 1.4 ms,
    most of the leader's time. Results are the same: each cosine is still summed
    by one thread. The embedding model does not use numpy's BLAS.
    """
    threadpool_limits(1, user_api="blas")


class EmbeddingShelf:
    """Unit embeddings of the most recently active stories, as one matrix to scan.

    Its rows are a fixed budget: a story that has not had a report while `rows`
    others have is dropped from the shelf (it can still be found by its terms).
    """

    # What a snapshot saves of it; `_row_of` is rebuilt from `_ids`, and no scan
    # (`products`) outlives a snapshot.
    SNAPSHOT: ClassVar = ("_matrix _ids _stamp _clock", "_row_of _changed")

    def __init__(self, rows: int, dim: int) -> None:
        single_threaded_blas()
        self._matrix = np.zeros((rows, dim), dtype=np.float32)
        self._ids: list[str | None] = [None] * rows
        self._row_of: dict[str, int] = {}
        self._stamp = np.zeros(rows, dtype=np.int64)  # last activity, for eviction
        self._clock = 0
        self._changed: set[int] | None = None  # rows put or removed since `products`

    def save(self, out: Writer) -> None:
        out.state_of(self)
        used = [row for row, story_id in enumerate(self._ids) if story_id is not None]
        out.array("rows", np.array(used, np.int64), np.int64)  # the others are all zeros
        out.array("matrix", self._matrix[used], np.float32)
        out.value("ids", self._ids)
        out.array("stamp", self._stamp, np.int64)
        out.value("clock", self._clock)

    def load(self, source: Reader) -> None:
        used = source.array("rows", np.int64)
        rows = source.array("matrix", np.float32)
        ids = source.value("ids")
        stamp = source.array("stamp", np.int64)
        if rows.shape != (len(used), self._matrix.shape[1]) or stamp.shape != self._stamp.shape:
            raise SnapshotError("the embedding shelf in the snapshot has another size")
        if len(ids) != len(self._ids) or not all(i is None or isinstance(i, str) for i in ids):
            raise SnapshotError("the embedding shelf's ids in the snapshot are malformed")
        if len(used) and (used.min() < 0 or used.max() >= len(ids)):
            raise SnapshotError("the embedding shelf's rows in the snapshot are malformed")
        self._matrix = np.zeros_like(self._matrix)
        self._matrix[used] = rows
        self._ids = ids
        self._row_of = {story_id: row for row, story_id in enumerate(ids) if story_id is not None}
        self._stamp = stamp.copy()
        self._clock = int(source.value("clock"))
        self._changed = None

    def put(self, story_id: str, unit: EmbeddingRow) -> None:
        self._clock += 1
        row = self._row_of.get(story_id)
        if row is None:
            row = int(np.argmin(self._stamp))  # a free row (stamp 0) or the stalest story
            evicted = self._ids[row]
            if evicted is not None:
                del self._row_of[evicted]
            self._ids[row] = story_id
            self._row_of[story_id] = row
        self._matrix[row] = unit
        self._stamp[row] = self._clock
        if self._changed is not None:
            self._changed.add(row)

    def remove(self, story_id: str) -> None:
        row = self._row_of.pop(story_id, None)
        if row is not None:
            self._ids[row] = None
            self._matrix[row] = 0.0
            self._stamp[row] = 0
            if self._changed is not None:
                self._changed.add(row)

    def nearest(self, row: EmbeddingRow, limit: int) -> list[str]:
        """Ids of up to `limit` stories with the highest cosine, best first."""
        if not self._row_of:
            return []
        return self._best(self.product(row), limit)

    def nearest_each(self, rows: np.ndarray, limit: int) -> list[list[str]]:
        """`nearest` of each of `rows` (one per line), from one matrix product.

        A merge pass after a restart asks for thousands; one product over a few
        hundred rows costs a third of as many scans. A cosine may differ from
        `nearest`'s in its last bit (the product sums in another order), which
        can only change the choice between cosines within about 1e-7 of each other.
        """
        if not self._row_of:
            return [[] for _ in range(len(rows))]
        scores = rows @ self._matrix.T
        return [self._best(line, limit) for line in scores]

    def product(self, row: np.ndarray) -> np.ndarray:
        """Every row's product with `row` (float32)."""
        return self._matrix @ row

    def products(self, rows: np.ndarray) -> np.ndarray:
        """Every row's product with each of `rows` (one per line), from one matrix
        product, as a scan that `nearest_by` finishes: from now until `end_scan`,
        the rows put or removed are remembered, to be computed anew."""
        self._changed = set()
        return rows @ self._matrix.T

    def end_scan(self) -> None:
        self._changed = None

    def nearest_by(self, scores: np.ndarray, direction: np.ndarray, limit: int) -> list[str]:
        """`nearest` by `scores` (updated in place): each row's product with `direction`,
        as `products` found it for the rows unchanged since; the changed rows' are
        computed now. Any positive multiple of a direction ranks alike."""
        if not self._row_of:
            return []
        if self._changed:
            changed = np.fromiter(self._changed, np.int64, len(self._changed))
            scores[changed] = self._matrix[changed] @ direction
        return self._best(scores, limit)

    def _best(self, scores: np.ndarray, limit: int) -> list[str]:
        limit = min(limit, len(self._row_of))
        top = np.argpartition(-scores, limit - 1)[:limit]
        # Ties go to the lower row, so the outcome never depends on the sort's whims.
        ordered = sorted(top.tolist(), key=lambda r: (-float(scores[r]), r))
        return [sid for r in ordered if (sid := self._ids[r]) is not None]


class StoryIndex:
    """Live stories by id, the two candidate indexes, and expiry by time and by count."""

    # What a snapshot saves of it, and what it rebuilds (see cluster/snapshot.py).
    SNAPSHOT: ClassVar = (
        "stories _postings _by_latest _activity _shelf",
        "_kept _postings_cap _memory _recent _max_stories",
    )

    def __init__(
        self,
        *,
        postings_per_term: int,
        memory: int,
        recent: int,
        max_stories: int,
        shelf_rows: int,
        dim: int,
        words_kept: int = WORDS_KEPT,
        grams_kept: int = GRAMS_KEPT,
    ) -> None:
        self.stories: dict[str, Story] = {}
        self._kept = (words_kept, grams_kept)
        # term -> ids of the stories that used it, least recently first. Lists, not
        # dicts: most terms have a story or two, and a dict costs 200 bytes more.
        self._postings: dict[int, list[str]] = {}
        self._postings_cap = postings_per_term
        self._memory = memory
        self._recent = recent
        self._max_stories = max_stories
        self._by_latest: list[tuple[datetime, str]] = []  # lazy heap: stale rows skipped
        self._activity: dict[str, None] = {}  # story ids, least recently active first
        self._shelf = EmbeddingShelf(shelf_rows, dim)

    def save(self, out: Writer) -> None:
        out.state_of(self)
        Story.save_all(out.at("stories"), list(self.stories.values()))
        postings = self._postings
        out.array("postings.terms", np.fromiter(postings, np.int64, len(postings)), np.int64)
        out.array(
            "postings.count", np.array([len(p) for p in postings.values()], np.int64), np.int64
        )
        out.value("postings.ids", [sid for p in postings.values() for sid in p])
        out.times("by_latest.at", (at for at, _ in self._by_latest))
        out.value("by_latest.ids", [sid for _, sid in self._by_latest])
        out.value("activity", list(self._activity))
        self._shelf.save(out.at("shelf"))

    def load(self, source: Reader) -> None:
        stories = Story.load_all(source.at("stories"))
        terms = source.array("postings.terms", np.int64).tolist()
        lengths = source.array("postings.count", np.int64).tolist()
        posted = strings(source.value("postings.ids"))
        same_length(terms, lengths)
        if sum(lengths) != len(posted):
            raise SnapshotError("the term index in the snapshot does not add up")
        postings: dict[int, list[str]] = {}
        at = 0
        for term, n in zip(terms, lengths, strict=True):
            postings[term] = posted[at : at + n]
            at += n
        times = source.times("by_latest.at")
        heap_ids = strings(source.value("by_latest.ids"))
        same_length(times, heap_ids)
        self.stories = {story.id: story for story in stories}
        self._postings = postings
        self._by_latest = [(some_time(t), sid) for t, sid in zip(times, heap_ids, strict=True)]
        self._activity = dict.fromkeys(strings(source.value("activity")))
        self._shelf.load(source.at("shelf"))

    def get(self, story_id: str) -> Story | None:
        return self.stories.get(story_id)

    def create(self, story_id: str, published: datetime) -> Story:
        story = Story(
            id=story_id,
            latest=published,
            memory=self._memory,
            recent=self._recent,
            words_kept=self._kept[0],
            grams_kept=self._kept[1],
        )
        self.stories[story_id] = story
        self._push_latest(published, story_id)
        self._activity[story_id] = None
        return story

    def touch(self, story: Story, published: datetime) -> None:
        """Record a report's time; a story stays live while reports keep coming."""
        story.size += 1
        self._activity.pop(story.id, None)
        self._activity[story.id] = None
        if published > story.latest:
            story.latest = published
            self._push_latest(published, story.id)

    def add_member(self, story: Story, words: Vector, grams: Vector, member: Member) -> None:
        dropped = story.add(words, grams, member)
        for term in dropped:
            self._unpost(term, story.id)
        for term in member.index_terms.tolist():
            self._post(term, story.id)
        unit = story.embedding_unit
        if unit is not None:
            self._shelf.put(story.id, unit)

    def merge(self, into: Story, other: Story) -> None:
        """Fold `other` into `into`: one story, findable by both stories' terms."""
        self._drop(other)
        for term in into.absorb(other):
            self._unpost(term, into.id)
        self._push_latest(into.latest, into.id)
        for term in into.terms:
            self._post(term, into.id)
        unit = into.embedding_unit
        if unit is not None:
            self._shelf.put(into.id, unit)

    def _push_latest(self, latest: datetime, story_id: str) -> None:
        heapq.heappush(self._by_latest, (latest, story_id))
        if len(self._by_latest) > 2 * len(self.stories) + COMPACT_SLACK:
            # Stale rows outnumber live ones (a story is pushed at each later report):
            # keep one row per live story, the only ones expiry would act on.
            self._by_latest = [(s.latest, s.id) for s in self.stories.values()]
            heapq.heapify(self._by_latest)

    def _post(self, term: int, story_id: str) -> None:
        posting = self._postings.get(term)
        if posting is None:
            self._postings[term] = [story_id]
            return
        if story_id in posting:
            posting.remove(story_id)
        posting.append(story_id)  # most recent last
        if len(posting) > self._postings_cap:
            # A very common term: only its most recent stories stay reachable by it.
            del posting[0]

    def _unpost(self, term: int, story_id: str) -> None:
        posting = self._postings.get(term)
        if posting is not None and story_id in posting:
            posting.remove(story_id)
            if not posting:
                del self._postings[term]

    def by_terms(
        self, term_weights: Sequence[tuple[int, float]], limit: int
    ) -> list[tuple[str, int]]:
        """Stories sharing the report's index terms, best first: (id, shared terms).

        A story's score is the sum of its terms' weights, added in the report's
        order of terms; it is found in C (the postings of common terms hold
        dozens of stories each, and a Python loop over them was most of the cost).
        """
        postings = [self._postings.get(term, ()) for term, _ in term_weights]
        # The stories in the order they are first met.
        ids = list(dict.fromkeys(chain.from_iterable(postings)))
        if not ids:
            return []
        position = dict(zip(ids, range(len(ids)), strict=True))
        lengths = list(map(len, postings))
        at = np.fromiter(map(position.__getitem__, chain.from_iterable(postings)), np.intp)
        shared = np.bincount(at, minlength=len(ids))
        weights = np.repeat(np.array([w for _, w in term_weights], np.float64), lengths)
        score = np.bincount(at, weights=weights, minlength=len(ids))
        # Ties go to the story first met, so the order of a dict never decides.
        best = np.argsort(-score, kind="stable")[:limit].tolist()
        return [(ids[i], int(shared[i])) for i in best]

    @property
    def shelf(self) -> EmbeddingShelf:
        return self._shelf

    def by_embedding(self, row: EmbeddingRow, limit: int) -> list[str]:
        return self._shelf.nearest(row, limit)

    def by_embedding_each(self, stories: Sequence[Story], limit: int) -> list[list[str] | None]:
        """`by_embedding` of each story's own unit embedding (None for a story without),
        found together (see `EmbeddingShelf.nearest_each`)."""
        units = [story.embedding_unit for story in stories]
        given = [unit for unit in units if unit is not None]
        found = iter(self._shelf.nearest_each(np.stack(given), limit) if given else ())
        return [None if unit is None else next(found) for unit in units]

    def expire(self, before: datetime) -> list[Story]:
        """Drop stories idle since before `before`, and the least active past the cap."""
        gone: list[Story] = []
        while self._by_latest and self._by_latest[0][0] < before:
            latest, story_id = heapq.heappop(self._by_latest)
            story = self.stories.get(story_id)
            if story is None or story.latest != latest:
                continue  # a later report moved this story on
            gone.append(self._drop(story))
        while len(self.stories) > self._max_stories:
            gone.append(self._drop(self.stories[next(iter(self._activity))]))
        return gone

    def _drop(self, story: Story) -> Story:
        del self.stories[story.id]
        self._activity.pop(story.id, None)
        for term in story.terms:
            self._unpost(term, story.id)
        self._shelf.remove(story.id)
        return story

    def live(self) -> Iterable[Story]:
        return self.stories.values()
