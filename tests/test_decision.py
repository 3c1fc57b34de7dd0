"""The join decision scored over many candidates at once agrees with the one-pair scoring."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import numpy as np
import pytest

from aggregator.cluster import StoryAssigner
from aggregator.cluster.decision import (
    Prepared,
    centroid_cosines,
    pair_features,
    pair_matrix,
    shared_counts,
)
from aggregator.cluster.features import EMPTY, Vector
from aggregator.cluster.stories import Story, shared_keys
from aggregator.settings import ClusterSettings
from aggregator.types import ClusterDoc

T0 = datetime(2024, 8, 6, 9, 0, tzinfo=UTC)
PLACES = ["Kursk", "Sudzha", "Kharkiv", "Odesa", "Lviv", "Belgorod", "Dnipro", "Sumy", "Kyiv"]
WORDS = ["drone", "strike", "depot", "fire", "bank", "rate", "troops", "border", "bridge"] + [
    f"word{n}" for n in range(300)
]
DAYS = ["", "", "", "on 8 November", "on 16 November"]


def synthetic(n: int, seed: int) -> list[tuple[ClusterDoc, np.ndarray]]:
    """Reports naming places, figures and days, in two languages, with random vectors."""
    rng = np.random.default_rng(seed)
    out = []
    for i in range(n):
        words = rng.choice(WORDS, 4).tolist() + rng.choice(PLACES, 2).tolist()
        title = " ".join(words[:5]) + f" {int(rng.integers(1, 4)) * 100} " + str(rng.choice(DAYS))
        doc = ClusterDoc(
            id=f"d{seed}-{i}",
            title=title,
            text=" ".join(rng.choice(WORDS, 10)),
            url=f"https://x.example/{seed}/{i}",
            published=T0 + timedelta(hours=float(rng.uniform(0, 30))),
            source="x",
            lang=str(rng.choice(["en", "uk"])),
        )
        vector = rng.standard_normal(384).astype(np.float32)
        out.append((doc, vector / np.linalg.norm(vector)))
    return out


def stories_and_reports(method: str) -> tuple[StoryAssigner, list[Story], list[Prepared]]:
    assigner = StoryAssigner(ClusterSettings(method=method))
    vectors = method == "embedding"
    for doc, vector in synthetic(40, seed=1):
        assigner.add(doc, vector if vectors else None)
    stories = list(assigner._stories.live())
    reports = [
        assigner._prepare(doc, (), vector if vectors else None, learn=False)
        for doc, vector in synthetic(8, seed=2)
    ]
    return assigner, stories, reports


@pytest.mark.parametrize("method", ["embedding", "tfidf"])
def test_pair_matrix_agrees_with_pair_features(method: str) -> None:
    assigner, stories, reports = stories_and_reports(method)
    assert len(stories) >= 4  # large and lone stories alike
    shared = [i % 6 for i in range(len(stories))]
    for report in reports:
        matrix = pair_matrix(report, stories, shared)
        scalar = [pair_features(report, story, n) for story, n in zip(stories, shared, strict=True)]
        assert set(matrix) == set(scalar[0])
        for name, column in matrix.items():
            assert column.shape == (len(stories),)
            assert column == pytest.approx([f[name] for f in scalar], abs=1e-6), name
        probabilities = assigner.decision.probabilities(matrix, len(stories))
        expected = [assigner.decision.probability(f) for f in scalar]
        assert probabilities == pytest.approx(expected, abs=1e-6)


def test_the_days_rule_and_the_cross_language_model_hold_over_many_pairs() -> None:
    assigner, stories, reports = stories_and_reports("embedding")
    report = next(r for r in reports if len(r.days))
    matrix = pair_matrix(report, stories, [0] * len(stories))
    probabilities = assigner.decision.probabilities(matrix, len(stories))
    assert (probabilities[matrix["days_apart"] > 0] == 0.0).all()
    cross = (matrix["other_language"] > 0) & (matrix["days_apart"] == 0)
    assert assigner.decision.cross is not None and cross.any()
    assert probabilities[cross] == pytest.approx(
        assigner.decision.cross.probabilities(matrix, len(stories))[cross]
    )


def test_shared_counts_counts_keys_in_each_array() -> None:
    keys = np.array([2, 5, 9], np.uint32)
    among = [np.array(a, np.uint32) for a in ([], [1, 2, 3], [2, 5, 9, 10], [11])]
    assert shared_counts(keys, among).tolist() == [shared_keys(keys, a) for a in among]
    assert shared_counts(keys[:0], among).tolist() == [0, 0, 0, 0]


def test_centroid_cosines_match_the_sparse_dot() -> None:
    vector = Vector(np.array([1, 4, 7], np.int32), np.array([0.6, 0.0, 0.8]))
    centroids = [
        Vector(np.array([4, 7, 8], np.int32), np.array([1.0, 2.0, 3.0], np.float16)),
        EMPTY,
        Vector(np.array([0, 1], np.int32), np.array([0.5, 0.5], np.float16)),
    ]
    norms = [2.0, 0.0, 0.0]  # a zero norm reads as no similarity
    assert centroid_cosines(vector, centroids, norms).tolist() == pytest.approx(
        [vector.dot(centroids[0]) / 2.0, 0.0, 0.0]
    )


def test_centroid_cosines_take_keys_outside_the_hashed_space() -> None:
    vector = Vector(np.array([3, 1 << 22], np.int32), np.array([0.6, 0.8]))
    centroid = Vector(np.array([3, 1 << 22], np.int32), np.array([1.0, 1.0], np.float16))
    assert centroid_cosines(vector, [centroid], [1.0]).tolist() == pytest.approx([1.4])
