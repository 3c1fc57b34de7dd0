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
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path

import numpy as np

from aggregator.cluster.features import Vector
from aggregator.cluster.stories import EmbeddingRow, Member, Story, shared_keys
from aggregator.types import ClusterDoc

MODEL_DIR = Path(__file__).with_name("models")
GAP_SCALE_HOURS = 96.0  # the gap feature reaches 1 at this many hours

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
    keys: tuple[int, ...]  # dedupe keys (hashed): canonical URL, text key


def pair_features(p: Prepared, story: Story, shared_terms: int) -> dict[str, float]:
    """Every feature of the report against the story, each scaled to about 0..1."""
    gap_h = abs((p.doc.published - story.latest).total_seconds()) / 3600.0
    names_shared = story.shared_names(p.names)
    numbers_shared = story.shared_numbers(p.numbers)
    features = {
        "words": story.words_cosine(p.words),
        "grams": story.grams_cosine(p.grams),
        "shared_terms": min(shared_terms, 4) / 4.0,
        "names_shared": min(names_shared, 3) / 3.0,
        # Both sides name people or places, and none of them the same: two events.
        "names_apart": float(bool(len(p.names)) and bool(len(story.names)) and not names_shared),
        # Names the story has never used: a second place or person is a second event.
        "names_new": (len(p.names) - names_shared) / len(p.names) if len(p.names) else 0.0,
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
        raise RuntimeError(f"the {method} pair model is missing ({path}): reinstall") from exc
    if tuple(body["features"]) != FEATURES[method]:
        raise RuntimeError(f"{path} was trained on other features: retrain it")
    return PairModel(
        method=method,
        features=tuple(body["features"]),
        weights=tuple(float(w) for w in body["weights"]),
        bias=float(body["bias"]),
        threshold=float(body["threshold"]),
    )
