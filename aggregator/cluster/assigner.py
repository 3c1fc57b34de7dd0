"""StoryAssigner: places each report, in arrival order, into a story or a new one.

For each report: a duplicate of an earlier report (same canonical URL or text)
joins that report's story; else the report is compared with the few live
stories that share its heaviest terms, and joins the most similar if the
time-decayed similarity reaches the threshold; else it founds a new story.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import datetime, timedelta

import numpy as np

from aggregator.cluster import embedding
from aggregator.cluster.features import FeatureWeights, Featuriser, Vector
from aggregator.cluster.stories import Story, StoryIndex
from aggregator.dedupe import canonical_url, normalise_text, text_key
from aggregator.settings import ClusterSettings
from aggregator.types import Assignment, ClusterDoc

METHODS = ("tfidf", "embedding")
# Thresholds measured on the labelled sets (see the evaluation notes in the
# commit); ClusterSettings.threshold should default to the one for its method.
RECOMMENDED_THRESHOLDS = {"tfidf": 0.15, "embedding": 0.25}


@dataclass(frozen=True)
class Tuning:
    """Knobs below the settings file: measured once, not for operators to turn."""

    features: FeatureWeights = field(default_factory=FeatureWeights)
    half_life_hours: float = 24.0  # similarity halves over this gap since a story's last report
    memory: int = 40  # a centroid mostly holds about this many latest members
    index_terms: int = 10  # a report looks stories up by this many of its heaviest stems
    candidates: int = 16  # stories fully compared per report
    postings_per_term: int = 64  # stories reachable through one term
    min_shared_terms: int = 2  # index terms a report must share with a story to join it...
    lone_term_score: float = 0.2  # ...unless its score reaches this on one term alone
    embedding_share: float = 0.5  # share of the embedding cosine in the "embedding" score
    embedding_lone_score: float = 0.5  # lone_term_score of the "embedding" method
    min_key_words: int = 4  # shorter texts ("Market update") are not keyed as duplicates


@dataclass(frozen=True)
class Prepared:
    """A report as the clusterer compares it."""

    doc: ClusterDoc
    vector: Vector
    index_terms: tuple[tuple[int, float], ...]  # heaviest word stems and their weights
    embedding: np.ndarray | None  # language-centred, in the "embedding" method only
    keys: tuple[str, ...]  # dedupe keys: canonical URL, text key


class StoryAssigner:
    """The online clusterer the worker and `aggregator eval` both use."""

    def __init__(self, settings: ClusterSettings, *, tuning: Tuning | None = None) -> None:
        if settings.method not in METHODS:
            raise ValueError(f"unknown cluster method {settings.method!r}: use one of {METHODS}")
        self.settings = settings
        self.tuning = tuning or Tuning()
        self._features = Featuriser(self.tuning.features)
        self._stories = StoryIndex(
            postings_per_term=self.tuning.postings_per_term, memory=self.tuning.memory
        )
        self._centring = embedding.LanguageCentring()
        self._first_copy: dict[str, tuple[str, str]] = {}  # dedupe key -> (doc id, story id)
        self._clock: datetime | None = None
        self._window = timedelta(hours=settings.window_hours)

    @property
    def uses_embeddings(self) -> bool:
        return self.settings.method == "embedding"

    def embed(self, docs: Sequence[ClusterDoc]) -> np.ndarray:
        """Raw vectors for `add(doc, vector=...)`; compute once per entry, in batches."""
        return embedding.embed(docs)

    def add(self, doc: ClusterDoc, vector: np.ndarray | None = None) -> Assignment:
        """Decide where `doc` goes, remember it, and return the decision."""
        self._advance(doc.published)
        keys = self._keys(doc)
        first = self._duplicate_of(keys)
        if first is not None:
            doc_id, story_id = first
            self._apply_duplicate(doc, story_id, doc_id, keys)
            return Assignment(doc.id, story_id, duplicate_of=doc_id, similarity=1.0)
        prepared = self._prepare(doc, keys, vector, learn=True)
        story, score = self._best_story(prepared)
        if story is None or score < self.settings.threshold:
            self._found(prepared, doc.id)
            return Assignment(doc.id, doc.id, new_story=True, similarity=round(score, 6))
        self._join(prepared, story)
        return Assignment(doc.id, story.id, similarity=round(score, 6))

    def restore(
        self, doc: ClusterDoc, assignment: Assignment, vector: np.ndarray | None = None
    ) -> None:
        """Replay a stored decision into the state, in the order the decisions were made."""
        self._advance(doc.published)
        keys = self._keys(doc)
        if assignment.duplicate_of is not None:
            self._apply_duplicate(doc, assignment.story_id, assignment.duplicate_of, keys)
            return
        prepared = self._prepare(doc, keys, vector, learn=True)
        story = self._stories.get(assignment.story_id)
        if story is None:
            # New, or a story this replay already expired: it lives again either way.
            self._found(prepared, assignment.story_id)
        else:
            self._join(prepared, story)

    def expire(self, now: datetime) -> None:
        """Stories idle for more than the window stop taking reports and are forgotten."""
        for story in self._stories.expire(now - self._window):
            for key in story.keys:
                if self._first_copy.get(key, ("", ""))[1] == story.id:
                    del self._first_copy[key]

    def warm(self, docs: Sequence[ClusterDoc], vectors: np.ndarray | None = None) -> None:
        """Learn term and language statistics from reports without placing them."""
        for i, doc in enumerate(docs):
            self._prepare(doc, (), None if vectors is None else vectors[i], learn=True)

    def similarity(
        self,
        a: ClusterDoc,
        b: ClusterDoc,
        vectors: tuple[np.ndarray, np.ndarray] | None = None,
    ) -> float:
        """The score `b` would get against a story founded by `a`, learning nothing.

        1.0 when `b` is a duplicate of `a`. Statistics come from what was added
        or warmed so far.
        """
        keys_a, keys_b = self._keys(a), self._keys(b)
        if set(keys_a) & set(keys_b):
            return 1.0
        va, vb = (None, None) if vectors is None else vectors
        pa = self._prepare(a, keys_a, va, learn=False)
        pb = self._prepare(b, keys_b, vb, learn=False)
        story = Story(id=a.id, latest=a.published, memory=1)
        story.add(pa.vector, tuple(t for t, _ in pa.index_terms))
        if pa.embedding is not None:
            story.add_embedding(pa.embedding)
        shared = len({t for t, _ in pa.index_terms} & {t for t, _ in pb.index_terms})
        return self._score(pb, story, shared)

    # -- deciding ---------------------------------------------------------------

    def _best_story(self, p: Prepared) -> tuple[Story | None, float]:
        best: Story | None = None
        best_score = 0.0
        for story, shared in self._candidates(p):
            score = self._score(p, story, shared)
            if score > best_score:
                best, best_score = story, score
        return best, best_score

    def _candidates(self, p: Prepared) -> list[tuple[Story, int]]:
        found = self._stories.candidates(p.index_terms, self.tuning.candidates)
        out = [(self._stories.stories[story_id], shared) for story_id, shared in found]
        if p.embedding is not None:
            # Reports in different languages may share no term at all: also ask
            # the embedding for its nearest live stories.
            seen = {story.id for story, _ in out}
            terms = {t for t, _ in p.index_terms}
            for story in self._nearest_by_embedding(p.embedding):
                if story.id not in seen:
                    out.append((story, len(terms & story.terms.keys())))
        return out

    def _nearest_by_embedding(self, row: np.ndarray) -> list[Story]:
        scored = [
            (story.embedding_cosine(row), i, story)
            for i, story in enumerate(self._stories.live())
            if story.embedding_unit is not None
        ]
        scored.sort(key=lambda item: (-item[0], item[1]))
        return [story for _, _, story in scored[: self.tuning.candidates]]

    def _score(self, p: Prepared, story: Story, shared_terms: int) -> float:
        gap_h = abs((p.doc.published - story.latest).total_seconds()) / 3600.0
        if gap_h > self.settings.window_hours:
            return 0.0
        decay = math.pow(0.5, gap_h / self.tuning.half_life_hours)
        lexical = story.cosine(p.vector)
        if p.embedding is None:
            score, lone = lexical * decay, self.tuning.lone_term_score
        else:
            share = self.tuning.embedding_share
            semantic = story.embedding_cosine(p.embedding)
            score = ((1.0 - share) * lexical + share * semantic) * decay
            lone = self.tuning.embedding_lone_score
        if shared_terms < self.tuning.min_shared_terms and score < lone:
            return 0.0  # one shared name ("Google", "Sudzha") is not one event
        return score

    # -- remembering ------------------------------------------------------------

    def _advance(self, published: datetime) -> None:
        # The clock is the latest time seen, so a late, backdated report cannot
        # turn it back; expiry follows the clock lazily.
        if self._clock is None or published > self._clock:
            self._clock = published
            self.expire(published)

    def _keys(self, doc: ClusterDoc) -> tuple[str, ...]:
        keys = []
        url = canonical_url(doc.url)
        if url:
            keys.append("u:" + url)
        if self.settings.dedupe_titles:
            words = len(normalise_text(doc.title).split()) + len(normalise_text(doc.text).split())
            if words >= self.tuning.min_key_words:
                keys.append("t:" + text_key(doc.title, doc.text))
        return tuple(keys)

    def _duplicate_of(self, keys: tuple[str, ...]) -> tuple[str, str] | None:
        for key in keys:
            first = self._first_copy.get(key)
            if first is not None:
                return first
        return None

    def _apply_duplicate(
        self, doc: ClusterDoc, story_id: str, first_id: str, keys: tuple[str, ...]
    ) -> None:
        # A copy adds no evidence to the centroid (syndication would outweigh
        # reporting) but keeps its story live, and its other keys point to the
        # first copy too.
        story = self._stories.get(story_id)
        if story is None:
            return
        self._stories.touch(story, doc.published)
        self._remember_keys(keys, first_id, story)

    def _prepare(
        self, doc: ClusterDoc, keys: tuple[str, ...], vector: np.ndarray | None, *, learn: bool
    ) -> Prepared:
        words, grams = self._features.counts(doc)
        if learn:
            self._features.learn(words, grams)
        vec = self._features.vector(words, grams)
        heaviest = sorted(((t, vec.get(t, 0.0)) for t in words), key=lambda tw: (-tw[1], tw[0]))
        centred = None
        if self.uses_embeddings:
            raw = self.embed([doc])[0] if vector is None else vector
            if learn:
                self._centring.learn(doc.lang, raw)
            centred = self._centring.centre(doc.lang, raw)
        return Prepared(doc, vec, tuple(heaviest[: self.tuning.index_terms]), centred, keys)

    def _found(self, p: Prepared, story_id: str) -> None:
        story = self._stories.create(story_id, p.doc.published)
        self._join(p, story)

    def _join(self, p: Prepared, story: Story) -> None:
        self._stories.touch(story, p.doc.published)
        self._stories.add_member(story, p.vector, tuple(t for t, _ in p.index_terms))
        if p.embedding is not None:
            story.add_embedding(p.embedding)
        self._remember_keys(p.keys, p.doc.id, story)

    def _remember_keys(self, keys: tuple[str, ...], doc_id: str, story: Story) -> None:
        for key in keys:
            if key not in self._first_copy:
                self._first_copy[key] = (doc_id, story.id)
                story.keys.append(key)
