"""A batch placed with its shelf scan done at once decides exactly as one scan a report.

The leader finds a batch's nearest stories by embedding from one matrix product
(aggregator/cluster/scan.py); these tests place the same stream both ways, with
a shelf small enough that stories are evicted from it inside a batch and a
window short enough that stories expire inside one, and compare every decision.
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import numpy as np
import pytest

from aggregator.cluster import StoryAssigner
from aggregator.cluster.assigner import Tuning
from aggregator.cluster.decision import Prepared
from aggregator.cluster.stories import Story
from aggregator.settings import ClusterSettings
from aggregator.types import Assignment, ClusterDoc

T0 = datetime(2024, 8, 6, tzinfo=UTC)
LANGS = ("en", "uk", "ru")
BATCH = 25


def stream(n: int) -> list[tuple[ClusterDoc, np.ndarray]]:
    """Reports on 60 topics in three languages, twenty minutes apart: each headline is
    its topic's two words and four common ones, and each vector is near its topic's
    direction and its language's (as an embedding would place it)."""
    rng = np.random.default_rng(7)
    topics = rng.standard_normal((60, 384))
    # Each language's reports share a strong direction of their own, as real
    # embeddings do: centring on the language's running mean changes the ranking.
    langs = {lang: rng.standard_normal(384) * 0.8 for lang in LANGS}
    letters = np.array(list("abcdefghijklmnopqrstuvwxyz"))

    def word() -> str:
        return "".join(rng.choice(letters, 7))

    words = [[word(), word()] for _ in range(60)]  # each topic's own words
    common = [word() for _ in range(40)]
    out = []
    for i in range(n):
        topic = int(rng.integers(60))
        vector = langs[LANGS[i % 3]] + 2 * topics[topic] + rng.standard_normal(384)
        vector = (vector / np.linalg.norm(vector)).astype(np.float32)
        doc = ClusterDoc(
            id=str(i),
            title=" ".join([*words[topic], *rng.choice(common, 4)]),
            text="",
            url=f"http://outlet{i % 5}.test/{i}",
            published=T0 + timedelta(minutes=20 * i),
            source=f"outlet{i % 5}",
            lang=LANGS[i % 3],
        )
        out.append((doc, vector))
    return out


def place(
    reports: list[tuple[ClusterDoc, np.ndarray]], shelf_rows: int, *, scanned: bool
) -> list[Assignment]:
    assigner = StoryAssigner(
        ClusterSettings(method="embedding", window_hours=48),
        # Every row a candidate, so the whole ranking is compared.
        tuning=Tuning(shelf_rows=shelf_rows, candidates=shelf_rows),
    )
    single_scans = 0
    nearest = assigner._stories.shelf.nearest

    def counted(*args: object, **kwargs: object) -> list[str]:
        nonlocal single_scans
        single_scans += 1
        return nearest(*args, **kwargs)  # type: ignore[arg-type]

    assigner._stories.shelf.nearest = counted  # type: ignore[method-assign]
    best_story = assigner._best_story

    def checked(p: Prepared, near: list[str] | None = None) -> tuple[Story | None, float]:
        if scanned:  # the batch's candidates are those of one scan of the shelf as it is
            assert p.embedding is not None
            assert near == nearest(p.embedding, assigner.tuning.candidates)
        return best_story(p, near)

    assigner._best_story = checked  # type: ignore[method-assign]
    shelf = assigner._stories.shelf
    nearest_by = shelf.nearest_by

    def exact(scores: np.ndarray, direction: np.ndarray, limit: int) -> list[str]:
        found = nearest_by(scores, direction, limit)
        # Every row's score is its product with the report's centred direction.
        np.testing.assert_allclose(scores, shelf.product(direction), atol=2e-5)
        return found

    shelf.nearest_by = exact  # type: ignore[method-assign]
    decisions = []
    for start in range(0, len(reports), BATCH):
        batch = reports[start : start + BATCH]
        single_scans = 0
        if scanned:
            assigner.scan_ahead([doc for doc, _ in batch], [vector for _, vector in batch])
        decisions += [assigner.add(doc, vector) for doc, vector in batch]
        assert (single_scans == 0) == scanned  # the scan found them, not the shelf's own
        assigner.merge_converged()  # its own scans (and it ends the batch's)
    return decisions


# A shelf of 8 rows is turned over inside every batch; one of 48 mostly is not.
@pytest.mark.parametrize(("reports", "shelf_rows"), [(150, 8), (400, 48)])
def test_a_scanned_batch_decides_as_one_scan_a_report(reports: int, shelf_rows: int) -> None:
    docs = stream(reports)
    one_by_one = place(docs, shelf_rows, scanned=False)
    scanned = place(docs, shelf_rows, scanned=True)
    assert scanned == one_by_one
    # The stream is one that exercises the decision: stories joined, not only founded.
    assert sum(not a.new_story for a in scanned) > reports // 4
