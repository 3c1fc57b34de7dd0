"""The join decision: does a report belong to a story? A small learned logistic model.

One threshold on one similarity cannot tell a second report of an event from a
report of the next event in the same place. The model combines several weak
signals, each a number between 0 and 1: embedding and TF-IDF similarities, how
many names and figures agree, and the time gap. Its weights are learned by
`aggregator_eval.training` and shipped as JSON beside this module, one file
per method; the output is a probability that the settings' threshold cuts.
"""

from __future__ import annotations

import json
import math
import threading
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path
from typing import Any, TypeVar

import numpy as np

from aggregator.cluster.copies import CopyKey
from aggregator.cluster.features import HASH_BITS, Vector
from aggregator.cluster.stories import EmbeddingRow, Member, Story, shared_keys
from aggregator.errors import ModelError
from aggregator.types import ClusterDoc

MODEL_DIR = Path(__file__).with_name("models")
STORIES_MODEL = MODEL_DIR / "stories.json"
GAP_SCALE_HOURS = 96.0  # the gap feature reaches 1 at this many hours
_SCRIPTED = 1 << HASH_BITS  # name keys from here up are of scripts without capitals

WORDS = ("words", "grams", "shared_terms")
NAMES = ("names_shared", "names_apart", "names_new")
FIGURES = ("numbers_shared", "numbers_apart")
TIME = ("gap",)
LANGUAGE = ("other_language",)
SEMANTIC = ("embedding", "embedding_nearest")
# The model used when a report meets a story with no member in its language
# (see `CROSS`): what is comparable across scripts, without word overlap, which
# is near zero between languages and would sink every such pair.
CROSS_SUFFIX = "-cross"
# The features each model reads, in the order of its weights.
FEATURES = {
    "tfidf": WORDS + NAMES + FIGURES + TIME + LANGUAGE,
    "embedding": SEMANTIC + WORDS + NAMES + FIGURES + TIME,
    "embedding" + CROSS_SUFFIX: SEMANTIC + NAMES + FIGURES + TIME,
}


@dataclass(frozen=True)
class Prepared:
    """A report as the clusterer compares it."""

    doc: ClusterDoc
    words: Vector
    grams: Vector
    index_terms: tuple[tuple[int, float], ...]  # heaviest word stems and their weights
    names: np.ndarray  # name keys, ascending
    numbers: np.ndarray  # figure keys, ascending
    days: np.ndarray  # calendar days the headline names, ascending
    embedding: EmbeddingRow | None  # language-centred, in the "embedding" method only
    keys: tuple[CopyKey, ...]  # dedupe keys: canonical URL, text key


def pair_features(p: Prepared, story: Story, shared_terms: int) -> dict[str, float]:
    """Every feature of the report against the story, each scaled to about 0..1."""
    gap_h = abs((p.doc.published - story.latest).total_seconds()) / 3600.0
    names_shared = story.shared_names(p.names)
    named = float(comparable_names(p.names, [story.names])[0])
    numbers_shared = story.shared_numbers(p.numbers)
    features = {
        "words": story.words_cosine(p.words),
        "grams": story.grams_cosine(p.grams),
        "shared_terms": min(shared_terms, 4) / 4.0,
        "names_shared": min(names_shared, 3) / 3.0,
        # Both sides name people or places, and none of them the same: two events.
        "names_apart": float(bool(named) and bool(len(story.names)) and not names_shared),
        # Names the story has never used: a second place or person is a second event.
        "names_new": (named - names_shared) / named if named else 0.0,
        "numbers_shared": min(numbers_shared, 2) / 2.0,
        "numbers_apart": float(
            bool(len(p.numbers)) and bool(len(story.numbers)) and not numbers_shared
        ),
        # Both headlines name a calendar day, and not the same one: the forecast
        # for 8 November is not the forecast for 16 November (see JoinDecision).
        "days_apart": float(
            bool(len(p.days)) and bool(len(story.days)) and not shared_keys(p.days, story.days)
        ),
        "gap": min(math.log1p(gap_h) / math.log1p(GAP_SCALE_HOURS), 1.0),
        "other_language": float(bool(p.doc.lang) and story.langs[p.doc.lang] == 0),
    }
    if p.embedding is not None:
        features["embedding"] = story.embedding_cosine(p.embedding)
        features["embedding_nearest"] = story.nearest_member_cosine(p.embedding)
    return features


def pair_matrix(
    p: Prepared, stories: Sequence[Story], shared_terms: Sequence[int]
) -> dict[str, np.ndarray]:
    """`pair_features` of the report against many stories at once: one array per feature.

    The same numbers as the scalar function (to the last bit or two of a float),
    computed over all candidates in a few array operations instead of a dozen
    small ones per candidate: with twenty candidates a report, that was most of
    the leader's time.
    """
    n = len(stories)
    published = p.doc.published
    gap_h = np.abs([(published - s.latest).total_seconds() for s in stories]) / 3600.0
    names = [s.names for s in stories]
    numbers = [s.numbers for s in stories]
    names_shared = shared_counts(p.names, names)
    named = comparable_names(p.names, names)
    numbers_shared = shared_counts(p.numbers, numbers)
    features = {
        "words": centroid_cosines(
            p.words, [s.words for s in stories], [s.words_norm for s in stories]
        ),
        "grams": centroid_cosines(
            p.grams, [s.grams for s in stories], [s.grams_norm for s in stories]
        ),
        "shared_terms": np.minimum(np.asarray(shared_terms, np.float64), 4) / 4.0,
        "names_shared": np.minimum(names_shared, 3) / 3.0,
        "names_apart": _apart(names, names_shared) * (named > 0),
        "names_new": np.divide(named - names_shared, named, out=np.zeros(n), where=named > 0),
        "numbers_shared": np.minimum(numbers_shared, 2) / 2.0,
        "numbers_apart": _apart(numbers, numbers_shared) if len(p.numbers) else np.zeros(n),
        "days_apart": _days_apart(p.days, stories),
        "gap": np.minimum(np.log1p(gap_h) / math.log1p(GAP_SCALE_HOURS), 1.0),
        "other_language": np.array(
            [bool(p.doc.lang) and s.langs[p.doc.lang] == 0 for s in stories], np.float64
        ),
    }
    if p.embedding is not None:
        features["embedding"] = _embedding_cosines(p.embedding, stories)
        features["embedding_nearest"] = _nearest_member_cosines(p.embedding, stories)
    return features


def shared_counts(keys: np.ndarray, among: Sequence[np.ndarray]) -> np.ndarray:
    """`shared_keys(keys, a)` for each ascending array `a` of `among`, as one float array."""
    out = np.zeros(len(among))
    if not len(keys) or not among:
        return out
    lengths = list(map(len, among))
    if not any(lengths):
        return out
    joined = np.concatenate(among)
    at = np.searchsorted(keys, joined)
    at[at == len(keys)] = 0
    hit = keys[at] == joined
    owner = np.repeat(np.arange(len(among)), lengths)
    return np.bincount(owner[hit], minlength=len(among)).astype(np.float64)


def comparable_names(keys: np.ndarray, among: Sequence[np.ndarray]) -> np.ndarray:
    """How many of a report's names (ascending `keys`) each story's names can tell
    apart from its own, as floats: those of the scripts the story names in (all of
    them when it names none). Two scripts without capitals, or one with and one
    without, spell a name apart (`features.name_hash`): that a report naming in
    Arabic and a story naming in English share no name says nothing."""
    out = np.full(len(among), float(len(keys)))
    if not len(keys) or (keys[-1] < _SCRIPTED and all(a[-1] < _SCRIPTED for a in among if len(a))):
        return out  # every name in scripts with capitals: all of them compare
    scripts = keys >> HASH_BITS
    for i, theirs in enumerate(among):
        if len(theirs):
            out[i] = np.isin(scripts, theirs >> HASH_BITS).sum()
    return out


def _apart(among: Sequence[np.ndarray], shared: np.ndarray) -> np.ndarray:
    """1.0 where the story has keys of the kind and shares none of the report's."""
    has_keys = np.fromiter(map(len, among), np.int64, len(among)) > 0
    return (has_keys & (shared == 0)).astype(np.float64)


def centroid_cosines(
    vector: Vector, centroids: Sequence[Vector], norms: Sequence[float]
) -> np.ndarray:
    """The cosine of a unit vector with each centroid of the given norm (0 where it is empty)."""
    out = np.zeros(len(centroids))
    if not len(vector.keys) or not centroids:
        return out
    arrays = [c.keys for c in centroids]
    lengths = list(map(len, arrays))
    if not any(lengths):
        return out
    keys = np.concatenate(arrays)
    weights = np.concatenate([c.weights for c in centroids], dtype=np.float64)
    owner = np.repeat(np.arange(len(centroids)), lengths)
    dots = np.bincount(owner, weights=_weights_at(vector, keys) * weights, minlength=len(centroids))
    norm = np.asarray(norms, np.float64)
    live = norm > 0.0
    out[live] = dots[live] / norm[live]
    return out


def _weights_at(vector: Vector, keys: np.ndarray) -> np.ndarray:
    """The vector's weight at each of `keys` (0 where it has none), as float64.

    Features are hashed into a fixed space, so the vector is spread into a dense
    table of that space and read back: three times faster than searching the
    vector's keys for each of the twenty-odd centroids' thousands.
    """
    table = _dense_table()
    if len(keys) and max(int(vector.keys[-1]), int(keys.max())) < len(table):
        table[vector.keys] = vector.weights
        try:
            return np.take(table, keys)  # the same as table[keys], a third faster
        finally:
            table[vector.keys] = 0.0
    at = np.searchsorted(vector.keys, keys)
    at[at == len(vector.keys)] = 0
    return np.where(vector.keys[at] == keys, vector.weights[at].astype(np.float64), 0.0)


_DENSE = threading.local()


def _dense_table() -> np.ndarray:
    """A zeroed float64 table over the hashed feature space, one per thread, kept zeroed."""
    table: np.ndarray | None = getattr(_DENSE, "table", None)
    if table is None:
        table = _DENSE.table = np.zeros(1 << HASH_BITS)
    return table


def _days_apart(days: np.ndarray, stories: Sequence[Story]) -> np.ndarray:
    if not len(days):
        return np.zeros(len(stories))
    among = [s.days for s in stories]
    return _apart(among, shared_counts(days, among))


def _embedding_cosines(row: EmbeddingRow, stories: Sequence[Story]) -> np.ndarray:
    out = np.zeros(len(stories))
    live = [i for i, s in enumerate(stories) if s.embedding_sum is not None and s.embedding_norm]
    if live:
        sums = np.array([stories[i].embedding_sum for i in live], np.float32)
        norms = np.array([stories[i].embedding_norm for i in live])
        out[live] = (sums @ row).astype(np.float64) / norms
    return out


def _nearest_member_cosines(row: EmbeddingRow, stories: Sequence[Story]) -> np.ndarray:
    out = np.zeros(len(stories))
    live: list[int] = []
    rows: list[np.ndarray] = []
    scales: list[np.ndarray] = []
    for i, story in enumerate(stories):
        if story.member_rows is None or story.member_scales is None or not len(story.member_rows):
            continue
        live.append(i)
        rows.append(story.member_rows)
        scales.append(story.member_scales)
    if live:
        cosines = (np.concatenate(rows, dtype=np.float32) @ row) * np.concatenate(scales)
        starts = np.cumsum([0] + [len(r) for r in rows[:-1]])
        out[live] = np.maximum.reduceat(cosines, starts)
    return out


def member(p: Prepared) -> Member:
    """What a story keeps of a report that joins it."""
    return Member(
        index_terms=np.fromiter((t for t, _ in p.index_terms), np.int32, len(p.index_terms)),
        names=p.names,
        numbers=p.numbers,
        days=p.days,
        lang=p.doc.lang,
        embedding=p.embedding,
    )


@dataclass(frozen=True)
class PairModel:
    """Logistic regression over named features, as stored in models/<method>.json."""

    method: str
    features: tuple[str, ...]
    weights: tuple[float, ...]
    bias: float
    threshold: float  # the probability the training notes recommend as the join cut

    def probability(self, features: dict[str, float]) -> float:
        z = self.bias + sum(
            w * features.get(f, 0.0) for f, w in zip(self.features, self.weights, strict=True)
        )
        return 1.0 / (1.0 + math.exp(-max(min(z, 40.0), -40.0)))

    def probabilities(self, features: Mapping[str, np.ndarray], n: int) -> np.ndarray:
        """`probability` of `n` pairs at once, from one array per feature (see `pair_matrix`)."""
        total = np.zeros(n)
        for f, w in zip(self.features, self.weights, strict=True):
            column = features.get(f)
            if column is not None:
                total = total + w * column  # summed in order, as `probability` does
        z = self.bias + total
        return 1.0 / (1.0 + np.exp(-np.clip(z, -40.0, 40.0)))

    def to_json(self, notes: dict[str, object]) -> str:
        body = {
            "method": self.method,
            "features": list(self.features),
            "weights": [round(w, 6) for w in self.weights],
            "bias": round(self.bias, 6),
            "threshold": self.threshold,
            "notes": notes,
        }
        return json.dumps(body, indent=1, ensure_ascii=False) + "\n"

    @classmethod
    def from_arrays(
        cls, method: str, weights: np.ndarray, bias: float, threshold: float
    ) -> PairModel:
        return cls(method, FEATURES[method], tuple(float(w) for w in weights), bias, threshold)


@dataclass(frozen=True)
class JoinDecision:
    """The same-language model and, where the method has one, the cross-language model.

    One rule stands above both: reports whose headlines name different calendar
    days are different events, however alike their words. Headlines that name a
    day are few (fifteen in UCI's 2,413) and mostly schedules, forecasts and
    digests, which is where the models, reading topic, err with most confidence.
    """

    same: PairModel
    cross: PairModel | None = None

    def probability(self, features: dict[str, float]) -> float:
        if features.get("days_apart", 0.0) > 0.0:
            return 0.0
        if self.cross is not None and features.get("other_language", 0.0) > 0.0:
            return self.cross.probability(features)
        return self.same.probability(features)

    def probabilities(self, features: Mapping[str, np.ndarray], n: int) -> np.ndarray:
        """`probability` of `n` pairs at once, from one array per feature (see `pair_matrix`)."""
        out = self.same.probabilities(features, n)
        if self.cross is not None:
            other = features.get("other_language")
            if other is not None and (cross := other > 0.0).any():
                out[cross] = self.cross.probabilities(features, n)[cross]
        days_apart = features.get("days_apart")
        if days_apart is not None:
            out[days_apart > 0.0] = 0.0
        return out


def load_decision(method: str) -> JoinDecision:
    """The shipped models of a method: its own and, if shipped, its cross-language one."""
    cross = method + CROSS_SUFFIX
    return JoinDecision(load_model(method), load_model(cross) if cross in FEATURES else None)


@lru_cache(maxsize=4)
def load_model(method: str) -> PairModel:
    """The shipped model of a method; a clear error if the file is missing or stale."""
    path = MODEL_DIR / f"{method}.json"
    try:
        body = json.loads(path.read_text(encoding="utf-8"))
    except OSError as exc:
        raise ModelError(f"the {method} pair model is missing ({path}): reinstall") from exc
    if tuple(body["features"]) != FEATURES[method]:
        raise ModelError(f"{path} was trained on other features: retrain it")
    return PairModel(
        method=method,
        features=tuple(body["features"]),
        weights=tuple(float(w) for w in body["weights"]),
        bias=float(body["bias"]),
        threshold=float(body["threshold"]),
    )


# -- the versioned files of fitted numbers ------------------------------------------------

ModelT = TypeVar("ModelT")


def read_model_file(
    path: Path, kind: str, refit: str, build: Callable[[dict[str, Any]], ModelT]
) -> ModelT:
    """`build` applied to the JSON stored at `path`; a broken file raises an error that
    names it and, when a key is missing or mistyped, the key and the command that refits it."""
    try:
        body = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError) as exc:
        raise ModelError(f"the {kind} model {path} cannot be read ({exc}): reinstall") from exc
    try:
        return build(body)
    except (KeyError, TypeError, ValueError, AttributeError) as exc:
        raise ModelError(
            f"the {kind} model {path} lacks or mistypes {exc}: refit it with {refit}"
        ) from exc


# What each number of models/stories.json means, written into the file itself.
STORY_FIELDS = {
    "merge": "per method: least probability of the pair model at which a merge pass joins "
    "two live stories that converged (weighed as a report against a story); above the join "
    "cut, since a merge cannot be undone",
    "second_look": "per method: least probability at which a young story moves, on a second "
    "look, into the most probable larger story near it, which has grown since the young "
    "story's report was placed (under embedding below the join cut: a story grown large has a "
    "broad centroid that its own reports meet at a lower probability)",
    "second_look_size": "a story of at most this many reports is young: it gets second looks "
    "(not fitted)",
    "second_look_after": "a young story is weighed again each time this many reports have been "
    "placed since its own (not fitted)",
}
STORIES_REFIT = "benchmarks/cluster.py --fit-stories"


@dataclass(frozen=True)
class StoryPolicy:
    """The story level's bars beside the join cut, as stored in models/stories.json: when
    two stories merge, and when a young story moves into a larger one (see `STORY_FIELDS`)."""

    merge: dict[str, float]
    second_look: dict[str, float]
    second_look_size: int
    second_look_after: tuple[int, ...]

    def to_json(self, notes: dict[str, object]) -> str:
        body: dict[str, object] = {
            "meaning": STORY_FIELDS,
            "merge": dict(sorted(self.merge.items())),
            "second_look": dict(sorted(self.second_look.items())),
            "second_look_size": self.second_look_size,
            "second_look_after": list(self.second_look_after),
            "notes": notes,
        }
        return json.dumps(body, indent=1, ensure_ascii=False) + "\n"


def read_story_policy(path: Path) -> StoryPolicy:
    """The story policy stored at `path`; an error naming the file and key when it is broken."""

    def build(body: dict[str, Any]) -> StoryPolicy:
        return StoryPolicy(
            merge={str(k): float(v) for k, v in body["merge"].items()},
            second_look={str(k): float(v) for k, v in body["second_look"].items()},
            second_look_size=int(body["second_look_size"]),
            second_look_after=tuple(int(n) for n in body["second_look_after"]),
        )

    return read_model_file(path, "story", STORIES_REFIT, build)


@lru_cache(maxsize=1)
def load_story_policy() -> StoryPolicy:
    """The shipped story policy."""
    return read_story_policy(STORIES_MODEL)
