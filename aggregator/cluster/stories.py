"""The live stories of an online clusterer: bounded centroids and a term index.

A story keeps only its latest members' vectors, and the index lists, per term,
only the stories that used it most recently, so the cost of placing one report
depends on the window's size and never on how many reports were ever stored.
"""

from __future__ import annotations

import heapq
import math
from collections import Counter, deque
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from datetime import datetime

import numpy as np

from aggregator.cluster.features import Vector

EmbeddingRow = np.ndarray  # one L2-normalised, language-centred embedding (float32)
# A member vector is unit length; weights decayed below this no longer matter.
PRUNE_BELOW = 1e-3


@dataclass
class Story:
    """One event as it stands: a decayed centroid and when it last had a report.

    The centroid is a decayed sum: each new member multiplies the old weights by
    (1 - 1/memory), so the last `memory` or so members dominate and a long story
    can drift with its news without storing its members' vectors.
    """

    id: str
    latest: datetime
    memory: int
    centroid: Vector = field(default_factory=dict)
    norm: float = 0.0
    member_terms: deque[tuple[int, ...]] = field(default_factory=deque)
    terms: Counter[int] = field(default_factory=Counter)  # index terms of recent members
    embedding_sum: EmbeddingRow | None = None
    embedding_unit: EmbeddingRow | None = None  # the sum normalised, cached for scoring
    keys: list[str] = field(default_factory=list)  # dedupe keys that point here
    size: int = 0

    @property
    def _keep(self) -> float:
        return 1.0 - 1.0 / self.memory

    def add(self, vector: Vector, index_terms: tuple[int, ...]) -> list[int]:
        """Take a member's vector into the centroid; returns index terms it no longer has."""
        keep = self._keep
        decayed = {k: w * keep for k, w in self.centroid.items() if w * keep > PRUNE_BELOW}
        for key, value in vector.items():
            decayed[key] = decayed.get(key, 0.0) + value
        self.centroid = decayed
        self.norm = math.sqrt(sum(w * w for w in decayed.values()))
        self.member_terms.append(index_terms)
        self.terms.update(index_terms)
        dropped: list[int] = []
        if len(self.member_terms) > self.memory:
            old_terms = self.member_terms.popleft()
            self.terms.subtract(old_terms)
            dropped = [t for t in set(old_terms) if self.terms[t] <= 0]
            for term in dropped:
                del self.terms[term]
        return dropped

    def add_embedding(self, row: EmbeddingRow) -> None:
        if self.embedding_sum is None:
            self.embedding_sum = row.astype(np.float64)
        else:
            self.embedding_sum = self.embedding_sum * self._keep + row
        norm = float(np.linalg.norm(self.embedding_sum))
        self.embedding_unit = (self.embedding_sum / norm).astype(np.float32) if norm else None

    def cosine(self, vector: Vector) -> float:
        if self.norm == 0.0:
            return 0.0
        centroid = self.centroid
        return sum(v * centroid.get(k, 0.0) for k, v in vector.items()) / self.norm

    def embedding_cosine(self, row: EmbeddingRow) -> float:
        return 0.0 if self.embedding_unit is None else float(row @ self.embedding_unit)


class StoryIndex:
    """Live stories by id, an inverted index from terms to them, and their expiry."""

    def __init__(self, *, postings_per_term: int, memory: int) -> None:
        self.stories: dict[str, Story] = {}
        self._postings: dict[int, dict[str, None]] = {}
        self._postings_cap = postings_per_term
        self._memory = memory
        self._by_latest: list[tuple[datetime, str]] = []  # lazy heap: stale rows skipped

    def get(self, story_id: str) -> Story | None:
        return self.stories.get(story_id)

    def create(self, story_id: str, published: datetime) -> Story:
        story = Story(id=story_id, latest=published, memory=self._memory)
        self.stories[story_id] = story
        heapq.heappush(self._by_latest, (published, story_id))
        return story

    def touch(self, story: Story, published: datetime) -> None:
        """Record a report's time; a story stays live while reports keep coming."""
        story.size += 1
        if published > story.latest:
            story.latest = published
            heapq.heappush(self._by_latest, (published, story.id))

    def add_member(self, story: Story, vector: Vector, index_terms: tuple[int, ...]) -> None:
        dropped = story.add(vector, index_terms)
        for term in dropped:
            self._unpost(term, story.id)
        for term in index_terms:
            self._post(term, story.id)

    def _post(self, term: int, story_id: str) -> None:
        posting = self._postings.setdefault(term, {})
        posting.pop(story_id, None)
        posting[story_id] = None  # most recent last
        if len(posting) > self._postings_cap:
            # A very common term: only its most recent stories stay reachable by it.
            del posting[next(iter(posting))]

    def _unpost(self, term: int, story_id: str) -> None:
        posting = self._postings.get(term)
        if posting is not None:
            posting.pop(story_id, None)
            if not posting:
                del self._postings[term]

    def candidates(
        self, term_weights: Sequence[tuple[int, float]], limit: int
    ) -> list[tuple[str, int]]:
        """Stories sharing the report's index terms, best first: (id, shared terms)."""
        score: dict[str, float] = {}
        shared: Counter[str] = Counter()
        for term, weight in term_weights:
            for story_id in self._postings.get(term, ()):
                score[story_id] = score.get(story_id, 0.0) + weight
                shared[story_id] += 1
        # Ties go to the story first indexed, so the order of a dict never decides.
        best = sorted(score, key=lambda s: -score[s])[:limit]
        return [(story_id, shared[story_id]) for story_id in best]

    def expire(self, before: datetime) -> list[Story]:
        """Drop stories whose latest report is older than `before`; returns them."""
        gone: list[Story] = []
        while self._by_latest and self._by_latest[0][0] < before:
            latest, story_id = heapq.heappop(self._by_latest)
            story = self.stories.get(story_id)
            if story is None or story.latest != latest:
                continue  # a later report moved this story on
            del self.stories[story_id]
            for term in story.terms:
                self._unpost(term, story_id)
            gone.append(story)
        return gone

    def live(self) -> Iterable[Story]:
        return self.stories.values()
