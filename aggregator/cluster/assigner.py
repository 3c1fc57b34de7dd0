"""StoryAssigner: places each report, in arrival order, into a story or a new one.

For each report: a copy of an earlier report (same canonical URL or text, or a
near-duplicate by MinHash) joins that report's story as a duplicate; else the
report meets a few candidate stories (those sharing its heaviest terms and those
nearest by embedding), the pair model gives each a probability of being the same
event, and the report joins the most probable if that reaches the threshold;
else it founds a new story.
"""

from __future__ import annotations

import hashlib
import math
from collections import deque
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import ClassVar

import numpy as np

from aggregator.cluster import embedding
from aggregator.cluster.copies import CopyKey, FirstCopies
from aggregator.cluster.decision import (
    JoinDecision,
    PairModel,
    Prepared,
    StoryPolicy,
    load_decision,
    load_story_policy,
    member,
    pair_features,
    pair_matrix,
)
from aggregator.cluster.events import EventIndex, EventReport
from aggregator.cluster.features import FeatureWeights, Featuriser, key_array, number_keys
from aggregator.cluster.scan import ShelfScan
from aggregator.cluster.snapshot import (
    Reader,
    SnapshotError,
    Writer,
    key_hash,
    same_length,
    strings,
)
from aggregator.cluster.stories import (
    GRAMS_KEPT,
    WORDS_KEPT,
    Story,
    StoryIndex,
    shared_term_counts,
)
from aggregator.cluster.storylines import StorylineIndex, StorylinePolicy
from aggregator.dedupe import NearDuplicates, canonical_url, normalise_text, text_key
from aggregator.settings import ClusterSettings
from aggregator.types import Assignment, ClusterDoc

METHODS = ("tfidf", "embedding")
# Stories of a merge pass whose nearest by embedding are found in one matrix
# product (see `StoryAssigner._merge_block`): after a restart a pass weighs thousands.
AHEAD = 256


@dataclass(frozen=True)
class Tuning:
    """Knobs below the settings file: measured once, not for operators to turn."""

    features: FeatureWeights = field(default_factory=FeatureWeights)
    memory: int = 40  # a centroid mostly holds about this many latest members
    words_kept: int = WORDS_KEPT  # heaviest stems a story's centroid keeps
    grams_kept: int = GRAMS_KEPT  # heaviest character n-grams a story's centroid keeps
    recent_members: int = 8  # members whose names, figures and embeddings are kept
    index_terms: int = 10  # a report looks stories up by this many of its heaviest stems
    candidates: int = 12  # stories fetched from each index per report
    postings_per_term: int = 64  # stories reachable through one term
    max_stories: int = 50_000  # live stories at most; the least active go first
    shelf_rows: int = 4096  # most recently active stories scanned by embedding
    min_key_words: int = 4  # shorter texts ("Market update") are not keyed as duplicates
    near_duplicates: int = 20_000  # recent reports checked for near-duplicate copies
    # A copy of a text (not of a URL) comes within this many hours of its first:
    # syndication takes hours, while the same headline a day later ("Live
    # updates", a daily briefing) is another report, placed as any other.
    copy_hours: float = 20.0
    # The story level's bars beside the join cut, per method: when a merge pass
    # joins two stories, and when a young story moves into a larger one on a
    # second look (it is weighed again each time `second_look_after` more reports
    # have been placed, while it holds at most `second_look_size`). Read from
    # models/stories.json, which says what each means and how it was fitted.
    merge_probability: Mapping[str, float] = field(
        default_factory=lambda: load_story_policy().merge
    )
    second_look_size: int = field(default_factory=lambda: load_story_policy().second_look_size)
    second_look_after: tuple[int, ...] = field(
        default_factory=lambda: load_story_policy().second_look_after
    )
    second_look_probability: Mapping[str, float] = field(
        default_factory=lambda: load_story_policy().second_look
    )

    @classmethod
    def of(cls, policy: StoryPolicy) -> Tuning:
        """The tuning whose story-level bars are `policy`'s (a refit under test)."""
        return cls(
            merge_probability=policy.merge,
            second_look_size=policy.second_look_size,
            second_look_after=policy.second_look_after,
            second_look_probability=policy.second_look,
        )


class StoryAssigner:
    """The online clusterer the worker and `aggregator eval` both use."""

    # What a snapshot saves of it (`save`, `load`), and what it rebuilds from the
    # settings; `_near_pending` is flushed into `_near` before saving.
    SNAPSHOT: ClassVar = (
        "_features _stories _centring _storylines _events _first_copy _near _story_of_doc "
        "_moved _clock _changed _placed _second_looks _replayed",
        "settings tuning decision model threshold _window _near_pending _scan _event_merges",
    )

    def __init__(
        self,
        settings: ClusterSettings,
        *,
        tuning: Tuning | None = None,
        model: PairModel | None = None,
        cross_model: PairModel | None = None,
        storylines: StorylinePolicy | None = None,
    ) -> None:
        if settings.method not in METHODS:
            raise ValueError(f"unknown cluster method {settings.method!r}: use one of {METHODS}")
        self.settings = settings
        self.tuning = tuning or Tuning()
        # A model given alone (training, experiments) decides every pair.
        self.decision = (
            JoinDecision(model, cross_model) if model else load_decision(settings.method)
        )
        self.model = self.decision.same
        # 0 means the cut the method's model was trained to recommend
        self.threshold = settings.threshold or self.model.threshold
        self._features = Featuriser(self.tuning.features)
        self._stories = StoryIndex(
            postings_per_term=self.tuning.postings_per_term,
            memory=self.tuning.memory,
            recent=self.tuning.recent_members,
            max_stories=self.tuning.max_stories,
            shelf_rows=self.tuning.shelf_rows,
            dim=embedding.DIM,
            words_kept=self.tuning.words_kept,
            grams_kept=self.tuning.grams_kept,
        )
        self._centring = embedding.LanguageCentring()
        # Which storyline each story is in (storylines.py): what the store calls a
        # story, and what assignments and merges name.
        self._storylines = StorylineIndex(
            settings.method,
            storylines,
            shelf_rows=self.tuning.shelf_rows,
            dim=embedding.DIM,
            max_storylines=self.tuning.max_stories,
        )
        self._events = EventIndex(settings.method)  # each storyline's events (events.py)
        # (absorbed event key, into event key) of merge passes since `event_merges` was called
        self._event_merges: list[tuple[str, str]] = []
        # dedupe key (hashed) -> (doc id, story id); one entry per report in the window
        self._first_copy = FirstCopies()
        self._near = NearDuplicates(
            capacity=self.tuning.near_duplicates, horizon=3600 * self.tuning.copy_hours
        )
        # Restored reports not yet in `_near`: only the latest `capacity` would stay
        # there, so their signatures are computed on the first `add`, not each one.
        self._near_pending: deque[tuple[str, str, str, float]] = deque(
            maxlen=self.tuning.near_duplicates
        )
        self._story_of_doc: dict[str, str] = {}  # near-duplicate candidates' stories
        self._moved: dict[str, str] = {}  # absorbed story id -> the story it went into
        self._clock: datetime | None = None
        self._changed: dict[str, None] = {}  # stories joined since the last merge pass
        self._placed = 0  # reports placed or replayed (not copies): the clock of second looks
        # One queue per delay, each in due order: (`_placed` when queued, story id),
        # due `delay` later; one tuple in every queue, not one each (9 MB in a big
        # window). Bounded like the other per-report state. A replay queues them again.
        self._second_looks = tuple(
            deque[tuple[int, str]](maxlen=self.tuning.near_duplicates)
            for _ in self.tuning.second_look_after
        )
        self._replayed = False  # `restore` ran since the last add or merge pass
        self._scan: ShelfScan | None = None  # the batch being placed (`scan_ahead`)
        self._window = timedelta(hours=settings.window_hours)

    def save(self, out: Writer) -> None:
        """Write the whole state (see cluster/snapshot.py); `load` reads it back."""
        out.state_of(self)
        self._flush_near()  # what the next `add` would do first
        self._features.save(out.at("features"))
        self._stories.save(out.at("stories"))
        self._centring.save(out.at("centring"))
        self._storylines.save(out.at("storylines"))
        self._events.save(out.at("events"))
        self._near.save(out.at("near"))
        self._first_copy.save(out.at("first_copy"))
        out.value("story_of_doc.docs", list(self._story_of_doc))
        out.value("story_of_doc.stories", list(self._story_of_doc.values()))
        out.value("moved.gone", list(self._moved))
        out.value("moved.into", list(self._moved.values()))
        out.times("clock", [self._clock])
        out.value("changed", list(self._changed))
        out.value("placed", self._placed)
        out.value("replayed", self._replayed)
        delays = self.tuning.second_look_after
        for n, (delay, queue) in enumerate(zip(delays, self._second_looks, strict=True)):
            out.array(f"looks{n}.due", np.array([p + delay for p, _ in queue], np.int64), np.int64)
            out.value(f"looks{n}.ids", [story_id for _, story_id in queue])

    def load(self, source: Reader) -> None:
        """Take the state a `save` wrote, by a clusterer of the same code and settings."""
        self._features.load(source.at("features"))
        self._stories.load(source.at("stories"))
        self._centring.load(source.at("centring"))
        self._storylines.load(source.at("storylines"))
        self._scan = None
        self._events.load(source.at("events"))
        self._near.load(source.at("near"))
        self._near_pending.clear()
        self._first_copy.load(source.at("first_copy"))
        self._story_of_doc = _pairs(source, "story_of_doc.docs", "story_of_doc.stories")
        self._moved = _pairs(source, "moved.gone", "moved.into")
        [self._clock] = source.times("clock")
        self._changed = dict.fromkeys(strings(source.value("changed")))
        self._placed = int(source.value("placed"))
        self._replayed = bool(source.value("replayed"))
        delays = self.tuning.second_look_after
        queued: dict[tuple[int, str], tuple[int, str]] = {}  # one tuple for every queue
        for n, (delay, queue) in enumerate(zip(delays, self._second_looks, strict=True)):
            due = source.array(f"looks{n}.due", np.int64).tolist()
            ids = strings(source.value(f"looks{n}.ids"))
            same_length(due, ids)
            if len(due) > (queue.maxlen or 0):
                raise SnapshotError("the snapshot holds more second looks than kept")
            queue.clear()
            placed = [d - delay for d in due]
            queue.extend(queued.setdefault(p, p) for p in zip(placed, ids, strict=True))

    @property
    def uses_embeddings(self) -> bool:
        return self.settings.method == "embedding"

    def embed(self, docs: Sequence[ClusterDoc]) -> np.ndarray:
        """Raw float32 vectors for `add(doc, vector=...)`; compute once per entry, in batches."""
        return embedding.embed(docs)

    def scan_ahead(self, docs: Sequence[ClusterDoc], vectors: Sequence[np.ndarray | None]) -> None:
        """The next `add`s will be of these docs with these raw vectors, in this order,
        and nothing else changes the stories meanwhile: their nearest stories by
        embedding are found together (see scan.py), until the next merge pass."""
        self._end_scan()
        raws = [v for v in vectors if v is not None]
        if self.uses_embeddings and docs and len(raws) == len(docs):
            ids = [doc.id for doc in docs]
            self._scan = ShelfScan(self._stories.shelf, self._centring, ids, np.stack(raws))

    def _end_scan(self) -> None:
        if self._scan is not None:
            self._scan.end()
            self._scan = None

    def add(self, doc: ClusterDoc, vector: np.ndarray | None = None) -> Assignment:
        """Decide where `doc` goes, remember it, and return the decision."""
        self._end_replay()
        self._advance(doc.published)
        self._flush_near()
        keys = self._keys(doc)
        first = self._duplicate_of(doc, keys)
        if first is not None:
            doc_id, story_id = first
            self._apply_duplicate(doc, story_id, doc_id, keys)
            line = self._storylines.touch(story_id, doc.published)
            event_key = self._events.copy_of(doc_id) or doc_id
            return Assignment(
                doc.id, line, duplicate_of=doc_id, similarity=1.0, event_key=event_key
            )
        prepared = self._prepare(doc, keys, vector, learn=True)
        near = None
        if self._scan is not None and vector is not None:
            near = self._scan.nearest(doc.id, doc.lang, vector, self.tuning.candidates)
        story, score = self._best_story(prepared, near)
        self._placed += 1
        if story is None or score < self.threshold:
            self._found(prepared, doc.id)
            self._queue_second_looks(doc.id)
            line = self._storylines.place(
                doc.id, doc.published, prepared.embedding, prepared.names, lang=doc.lang
            )
            event = self._events.place(line, EventReport.from_prepared(prepared))
            return Assignment(
                doc.id,
                line,
                new_story=True,
                similarity=round(score, 6),
                event_key=event.event_key,
            )
        self._join(prepared, story)
        line = self._storylines.place(
            story.id, doc.published, prepared.embedding, prepared.names, lang=doc.lang
        )
        event = self._events.place(line, EventReport.from_prepared(prepared))
        return Assignment(doc.id, line, similarity=round(score, 6), event_key=event.event_key)

    def restore(
        self, doc: ClusterDoc, assignment: Assignment, vector: np.ndarray | None = None
    ) -> None:
        """Replay a stored decision into the state, in the order the decisions were made."""
        self._end_scan()
        self._advance(doc.published)
        keys = self._keys(doc)
        self._near_pending.append((doc.id, doc.title, doc.text, doc.published.timestamp()))
        if assignment.duplicate_of is not None:
            self._apply_duplicate(doc, assignment.story_id, assignment.duplicate_of, keys)
            self._storylines.touch(assignment.story_id, doc.published)
            return
        prepared = self._prepare(doc, keys, vector, learn=True)
        self._placed += 1
        self._replayed = True
        if assignment.story_id == doc.id:  # it founded its story: looks were due
            self._queue_second_looks(doc.id)
        story = self._stories.get(assignment.story_id)
        if story is None:
            # New, or a story this replay already expired: it lives again either way.
            self._found(prepared, assignment.story_id)
        else:
            self._join(prepared, story)
        # A stored story is a storyline: its reports replay into one story of that id.
        self._storylines.place(
            assignment.story_id,
            doc.published,
            prepared.embedding,
            prepared.names,
            lang=doc.lang,
            storyline_id=assignment.story_id,
        )
        report = EventReport.from_prepared(prepared)
        if assignment.event_key:
            self._events.restore(assignment.story_id, report, assignment.event_key)
        else:  # stored before events were: decided again, as it would have been
            self._events.place(assignment.story_id, report)

    def catch_up(self, stories: dict[int, str], events: dict[int, str]) -> bool:
        """Make the merges the store made after this state was saved (a snapshot's),
        once the decisions stored after it are replayed: each storyline whose id hashes
        (`snapshot.key_hash`) to a key of `stories` joins the storyline named there,
        and its events join the events `events` names for theirs. False when this state
        cannot follow (a storyline or event named is not live here): replay instead."""
        renamed = {
            key: events[h] for key in self._events.event_keys() if (h := key_hash(key)) in events
        }
        for line_id in self._storylines.ids():
            into = stories.get(key_hash(line_id))
            if into is None:
                continue
            if not self._storylines.join_into(line_id, into):
                return False
            if not self._events.move_story(line_id, into, renamed):
                return False
        return True

    def expire(self, now: datetime) -> None:
        """Stories idle for more than the window stop taking reports and are forgotten."""
        for story in self._stories.expire(now - self._window):
            self._forget(story)
        self._events.expire(now)
        self._storylines.expire(now)

    def merge_converged(self) -> list[tuple[str, str]]:
        """Merge live stories that have grown into one event, then link storylines:
        (absorbed storyline id, into storyline id) pairs, the stories the store merges.

        Only stories that took reports since the last call are compared, each
        with its candidates as a report would be, and so are the small stories
        due a second look (see `Tuning.second_look_after`), so the cost stays
        bounded. Then each storyline that took reports meets its nearest live
        storylines (see `storylines.StorylineIndex.link`). The caller re-points
        stored assignments of each absorbed storyline (and of those absorbed into
        it earlier) to the storyline it went into, and then the events that merged
        with them (`event_merges`).
        """
        self._end_replay()
        self._end_scan()
        merges: list[tuple[str, str]] = []
        changed, self._changed = list(self._changed), {}
        for start in range(0, len(changed), AHEAD):
            self._merge_block(changed[start : start + AHEAD], merges)
        bar = self.tuning.second_look_probability[self.settings.method]
        for story_id in self._due_second_looks():
            story = self._stories.get(story_id)
            if story is not None and story.size <= self.tuning.second_look_size:
                other = self._converged_with(story, bar, larger=True)
                self._absorb(story, other, merges)
        for gone, into in self._storylines.link():
            self._event_merges += self._events.merge_story(gone, into)
            merges.append((gone, into))
        return merges

    def event_merges(self) -> list[tuple[str, str]]:
        """(absorbed event key, into event key) of each event that joined another when
        its storyline merged, since the last call: an absorbed storyline's event and
        the receiving one's report one happening (`EventIndex.merge_story`)."""
        merges, self._event_merges = self._event_merges, []
        return merges

    def _queue_second_looks(self, story_id: str) -> None:
        queued = (self._placed, story_id)
        for queue in self._second_looks:
            queue.append(queued)

    def _end_replay(self) -> None:
        """Drop the looks a replay found overdue: they ran before the restart,
        and what they moved is in the stored assignments the replay restored."""
        if self._replayed:
            self._replayed = False
            self._due_second_looks()

    def _due_second_looks(self) -> list[str]:
        due = []
        for delay, queue in zip(self.tuning.second_look_after, self._second_looks, strict=True):
            while queue and queue[0][0] + delay <= self._placed:
                due.append(queue.popleft()[1])
        return due

    def _merge_block(self, story_ids: list[str], merges: list[tuple[str, str]]) -> None:
        """Weigh each live story of `story_ids` in turn against its candidates, and merge it
        into the one it converged with. Their nearest stories by embedding are found
        together first, on the shelf as it stands; after a merge has changed the shelf,
        those of the rest are found again one by one."""
        stories = [s for s in map(self._stories.get, story_ids) if s is not None]
        near = self._stories.by_embedding_each(stories, self.tuning.candidates)
        merged = False
        for story, found in zip(stories, near, strict=True):
            if story.id not in self._stories.stories:
                continue  # absorbed earlier in this pass
            other = self._converged_with(
                story,
                self.tuning.merge_probability[self.settings.method],
                near=None if merged else found,
            )
            merged = self._absorb(story, other, merges) or merged

    def _absorb(self, story: Story, other: Story | None, merges: list[tuple[str, str]]) -> bool:
        """Merge the two stories (when there is another); whether they merged."""
        if other is None:
            return False
        # The larger story keeps its id (ties: the older id), so links move least.
        into, gone = sorted((story, other), key=lambda s: (-s.size, s.id))
        self._stories.merge(into, gone)
        self._repoint(gone, into)
        linked = self._storylines.merge_stories(gone.id, into.id)
        if linked is not None:  # the two stories were in two storylines
            self._event_merges += self._events.merge_story(*linked)
            merges.append(linked)
        return True

    def _converged_with(
        self, story: Story, bar: float, *, larger: bool = False, near: list[str] | None = None
    ) -> Story | None:
        """The candidate the story most probably belongs with, if that reaches `bar`;
        `near`: its nearest stories by embedding, when found already."""
        p = self._as_report(story)
        live = [
            (other, shared)
            for other, shared in self._candidates(p, near)
            if other.id != story.id
            and not (larger and other.size <= story.size)
            # idle past the window: it takes no more reports
            and p.doc.published - other.latest <= self._window
        ]
        scores = self._scores(p, live)
        if not len(scores) or scores.max() < bar:
            return None
        # Of equal bests, the last candidate wins.
        return live[len(scores) - 1 - int(np.argmax(scores[::-1]))][0]

    def _as_report(self, story: Story) -> Prepared:
        """A story seen as one long report, to weigh it against another story."""
        lang = story.langs.most_common(1)[0][0] if story.langs else ""
        doc = ClusterDoc(story.id, "", "", "", story.latest, "", lang)
        terms = story.heaviest_terms(self.tuning.index_terms)
        return Prepared(
            doc=doc,
            words=story.words.unit(),
            grams=story.grams.unit(),
            index_terms=tuple((t, float(n)) for t, n in terms),
            names=story.names,
            numbers=story.numbers,
            days=story.days,
            embedding=story.embedding_unit,
            keys=(),
        )

    def _repoint(self, gone: Story, into: Story) -> None:
        # Only the absorbed story's own keys can point at it: no scan of the window.
        for key in gone.keys:
            first = self._first_copy.get(key)
            if first is not None and first[1] == gone.id:
                self._first_copy.move(key, into.id)
        # Near-duplicate candidates find their story through the merges it went through.
        self._moved[gone.id] = into.id
        if len(self._moved) > self._near.capacity:
            del self._moved[next(iter(self._moved))]
        self._changed.pop(gone.id, None)

    def _current(self, story_id: str) -> str:
        while story_id in self._moved:
            story_id = self._moved[story_id]
        return story_id

    def warm(self, docs: Sequence[ClusterDoc], vectors: np.ndarray | None = None) -> None:
        """Learn term and language statistics from reports without placing them."""
        for i, doc in enumerate(docs):
            self._prepare(doc, (), None if vectors is None else vectors[i], learn=True)

    def candidate_features(
        self, doc: ClusterDoc, vector: np.ndarray | None = None
    ) -> list[tuple[str, dict[str, float]]]:
        """The features of `doc` against each candidate story, learning nothing (training)."""
        prepared = self._prepare(doc, (), vector, learn=False)
        return [
            (story.id, pair_features(prepared, story, shared))
            for story, shared in self._candidates(prepared)
        ]

    def similarity(
        self,
        a: ClusterDoc,
        b: ClusterDoc,
        vectors: tuple[np.ndarray, np.ndarray] | None = None,
    ) -> float:
        """The probability that `b` joins a story founded by `a`, learning nothing.

        1.0 when `b` is a duplicate of `a`. Statistics come from what was added
        or warmed so far.
        """
        if abs((a.published - b.published).total_seconds()) > self._window.total_seconds():
            return 0.0  # a story idle for longer than the window takes no more reports
        if self.copies(a, b):
            return 1.0
        return self.decision.probability(self.pair_features(a, b, vectors))

    def event_reports(
        self,
        a: ClusterDoc,
        b: ClusterDoc,
        vectors: tuple[np.ndarray, np.ndarray] | None = None,
    ) -> tuple[EventReport, EventReport]:
        """What the event decision reads of `a` and `b`, learning nothing (pair files)."""
        pa, pb = self._prepared_pair(a, b, vectors)
        return EventReport.from_prepared(pa), EventReport.from_prepared(pb)

    def pair_features(
        self,
        a: ClusterDoc,
        b: ClusterDoc,
        vectors: tuple[np.ndarray, np.ndarray] | None = None,
    ) -> dict[str, float]:
        """Features of `b` against a story founded by `a`."""
        pa, pb = self._prepared_pair(a, b, vectors)
        story = Story(id=a.id, latest=a.published, memory=1)
        story.add(pa.words, pa.grams, member(pa))
        shared = len({t for t, _ in pa.index_terms} & {t for t, _ in pb.index_terms})
        return pair_features(pb, story, shared)

    def _prepared_pair(
        self,
        a: ClusterDoc,
        b: ClusterDoc,
        vectors: tuple[np.ndarray, np.ndarray] | None,
    ) -> tuple[Prepared, Prepared]:
        """`a` and `b` as `add` would read them now, learning nothing."""
        va, vb = (None, None) if vectors is None else vectors
        pa = self._prepare(a, self._keys(a), va, learn=False)
        pb = self._prepare(b, self._keys(b), vb, learn=False)
        return pa, pb

    def copies(self, a: ClusterDoc, b: ClusterDoc) -> bool:
        """Whether `add` would fold b into a as a duplicate."""
        if set(self._keys(a)) & set(self._keys(b)):
            return True
        return self.settings.dedupe_titles and NearDuplicates.pair(a.title, a.text, b.title, b.text)

    # -- deciding ---------------------------------------------------------------

    def _best_story(self, p: Prepared, near: list[str] | None = None) -> tuple[Story | None, float]:
        live = [
            (story, shared)
            for story, shared in self._candidates(p, near)
            # idle past the window; expiry will drop it
            if p.doc.published - story.latest <= self._window
        ]
        scores = self._scores(p, live)
        if not len(scores):
            return None, 0.0
        best = int(np.argmax(scores))  # of equal bests, the first candidate wins
        if scores[best] <= 0.0:
            return None, 0.0
        return live[best][0], float(scores[best])

    def _scores(self, p: Prepared, candidates: Sequence[tuple[Story, int]]) -> np.ndarray:
        """The probability that the report belongs with each candidate story."""
        if not candidates:
            return np.zeros(0)
        stories = [story for story, _ in candidates]
        features = pair_matrix(p, stories, [shared for _, shared in candidates])
        return self.decision.probabilities(features, len(stories))

    def _candidates(self, p: Prepared, near: list[str] | None = None) -> list[tuple[Story, int]]:
        """Stories sharing the report's heaviest terms, then those nearest by embedding
        (`near`, when found already) not among them, each with its shared terms."""
        limit = self.tuning.candidates
        stories = self._stories
        found = stories.by_terms(p.index_terms, limit)
        out = [(stories.stories[story_id], shared) for story_id, shared in found]
        if p.embedding is not None:
            # Reports in different languages may share no term at all: also ask
            # the embedding for its nearest live stories.
            seen = {story_id for story_id, _ in found}
            if near is None:
                near = stories.by_embedding(p.embedding, limit)
            nearest = [
                stories.stories[story_id]
                for story_id in near
                if story_id not in seen and story_id in stories.stories
            ]
            terms = {t for t, _ in p.index_terms}
            out.extend(zip(nearest, shared_term_counts(nearest, terms), strict=True))
        return out

    # -- remembering ------------------------------------------------------------

    def _advance(self, published: datetime) -> None:
        # The clock is the latest time seen, so a late, backdated report cannot
        # turn it back; expiry follows the clock lazily.
        if self._clock is None or published > self._clock:
            self._clock = published
            self.expire(published)

    def _keys(self, doc: ClusterDoc) -> tuple[CopyKey, ...]:
        keys: list[CopyKey] = []
        url = canonical_url(doc.url)
        if url:
            keys.append(CopyKey(_key_hash("u:" + url), math.inf))
        if self.settings.dedupe_titles:
            words = len(normalise_text(doc.title).split()) + len(normalise_text(doc.text).split())
            if words >= self.tuning.min_key_words:
                until = doc.published.timestamp() + 3600 * self.tuning.copy_hours
                keys.append(CopyKey(_key_hash("t:" + text_key(doc.title, doc.text)), until))
        return tuple(keys)

    def index_restored(self) -> None:
        """Index the replayed reports for near-duplicate lookups now, at the end of a
        replay, rather than in the first `add` after it (which would otherwise do it)."""
        self._flush_near()

    def _flush_near(self) -> None:
        while self._near_pending:
            self._near.add(*self._near_pending.popleft())

    def _duplicate_of(self, doc: ClusterDoc, keys: tuple[CopyKey, ...]) -> tuple[str, str] | None:
        at = doc.published.timestamp()
        for key, _ in keys:
            first = self._first_copy.get(key, at)
            if first is not None:
                return first
        if not self.settings.dedupe_titles:
            return None
        # A lightly edited copy: its first copy must still be in a live story.
        near = self._near.add(doc.id, doc.title, doc.text, at)
        story_id = self._story_of_doc.get(near) if near is not None else None
        if near is None or story_id is None:
            return None
        story_id = self._current(story_id)
        return (near, story_id) if story_id in self._stories.stories else None

    def _apply_duplicate(
        self, doc: ClusterDoc, story_id: str, first_id: str, keys: tuple[CopyKey, ...]
    ) -> None:
        # A copy adds no evidence to the centroid (syndication would outweigh
        # reporting) but keeps its story live, and its other keys point to the
        # first copy too.
        story = self._stories.get(story_id)
        if story is None:
            return
        self._stories.touch(story, doc.published)
        self._remember_keys(keys, first_id, story, doc.published)

    def _prepare(
        self, doc: ClusterDoc, keys: tuple[CopyKey, ...], vector: np.ndarray | None, *, learn: bool
    ) -> Prepared:
        counted = self._features.counts(doc)
        if learn:
            self._features.learn(counted)
        words = self._features.vector(counted.words)
        grams = self._features.vector(counted.grams)
        weight_of = dict(zip(words.keys.tolist(), words.weights.tolist(), strict=True))
        heaviest = sorted(
            ((t, weight_of.get(t, 0.0)) for t in counted.words), key=lambda tw: (-tw[1], tw[0])
        )
        centred = None
        if self.uses_embeddings:
            raw = self.embed([doc])[0] if vector is None else np.asarray(vector, np.float32)
            if learn:
                self._centring.learn(doc.lang, raw)
                if self._scan is not None:
                    self._scan.learned(doc.id, doc.lang)
            centred = self._centring.centre(doc.lang, raw)
        return Prepared(
            doc=doc,
            words=words,
            grams=grams,
            index_terms=tuple(heaviest[: self.tuning.index_terms]),
            names=key_array(counted.names),
            numbers=number_keys(counted.numbers),
            days=key_array(counted.days),
            embedding=centred,
            keys=keys,
        )

    def _found(self, p: Prepared, story_id: str) -> None:
        story = self._stories.create(story_id, p.doc.published)
        self._join(p, story)

    def _join(self, p: Prepared, story: Story) -> None:
        self._changed[story.id] = None
        if len(self._changed) > self.tuning.shelf_rows:
            # Nobody runs merge passes: stay bounded, forget the oldest change.
            del self._changed[next(iter(self._changed))]
        self._stories.touch(story, p.doc.published)
        self._stories.add_member(story, p.words, p.grams, member(p))
        self._story_of_doc[p.doc.id] = story.id
        if len(self._story_of_doc) > self._near.capacity:
            # As bounded as the near-duplicate index that looks reports up in it.
            del self._story_of_doc[next(iter(self._story_of_doc))]
        self._remember_keys(p.keys, p.doc.id, story, p.doc.published)

    def _remember_keys(
        self, keys: tuple[CopyKey, ...], doc_id: str, story: Story, published: datetime
    ) -> None:
        """Point the keys not held yet, or no longer finding copies, at `doc_id`."""
        at = published.timestamp()
        for key, until in keys:
            if self._first_copy.get(key, at) is None:
                self._first_copy.add(key, doc_id, story.id, until)
                story.keys.append(key)

    def _forget(self, story: Story) -> None:
        self._storylines.forget_story(story.id)
        for key in story.keys:
            first = self._first_copy.get(key)
            if first is not None and first[1] == story.id:
                self._first_copy.remove(key)


def _pairs(source: Reader, keys: str, values: str) -> dict[str, str]:
    found, to = strings(source.value(keys)), strings(source.value(values))
    same_length(found, to)
    return dict(zip(found, to, strict=True))


def _key_hash(key: str) -> int:
    """A dedupe key as 64 bits: a window holds one or two per report, and strings cost 100 bytes."""
    return int.from_bytes(hashlib.blake2b(key.encode(), digest_size=8).digest(), "little")
