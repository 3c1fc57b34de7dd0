"""Story: what a live story keeps of its members, and that a replayed window equals the live one."""

from __future__ import annotations

import math
from datetime import UTC, datetime, timedelta

import numpy as np

from aggregator.cluster import RECOMMENDED_THRESHOLDS, StoryAssigner
from aggregator.cluster.features import EMPTY, NO_KEYS, Vector
from aggregator.cluster.stories import MERGED_RECENT, Member, Story, shared_term_counts
from aggregator.settings import ClusterSettings
from aggregator.types import Assignment, ClusterDoc

T0 = datetime(2024, 8, 6, 9, 0, tzinfo=UTC)
DIM = 384


def unit_rows(n: int, seed: int = 0) -> np.ndarray:
    rows = np.random.default_rng(seed).standard_normal((n, DIM))
    return (rows / np.linalg.norm(rows, axis=1, keepdims=True)).astype(np.float32)


def member(row: np.ndarray | None, numbers: np.ndarray = NO_KEYS) -> Member:
    return Member(index_terms=np.array([1, 2], np.int32), names=np.zeros(0, np.uint32), numbers=numbers,
                  days=NO_KEYS, lang="en", embedding=row)  # fmt: skip


def test_embedding_cosines_match_float64_arithmetic() -> None:
    rows = unit_rows(12)
    story = Story(id="s", latest=T0, memory=5, recent=4)
    for row in rows:
        story.add(EMPTY, EMPTY, member(row))
    keep = 1.0 - 1.0 / 5
    total = np.zeros(DIM)
    for row in rows:
        total = total * keep + row.astype(np.float64)
    mean = total / np.linalg.norm(total)
    probe = unit_rows(1, seed=1)[0]
    assert abs(story.embedding_cosine(probe) - float(probe @ mean)) < 1e-3
    unit = story.embedding_unit
    assert unit is not None and unit.dtype == np.float32
    assert np.allclose(unit, mean, atol=1e-3)
    # The nearest of the last `recent` members, not of all twelve.
    nearest = max(float(probe.astype(np.float64) @ r) for r in rows[-4:])
    assert abs(story.nearest_member_cosine(probe) - nearest) < 1e-3


def test_centroid_cosines_stay_within_1e3_of_float64_arithmetic() -> None:
    # Few enough features that none is cut or decays away: the exact decayed sum.
    rng = np.random.default_rng(3)
    story = Story(id="s", latest=T0, memory=6)
    exact = np.zeros(60)
    for _ in range(12):
        keys = np.unique(rng.integers(0, 60, size=12)).astype(np.int32)
        weights = rng.random(len(keys)) + 0.5
        weights /= np.linalg.norm(weights)
        story.add(Vector(keys, weights), EMPTY, member(None))
        exact *= 1.0 - 1.0 / 6
        exact[keys] += weights
    assert story.words.weights.dtype == np.float16
    for _ in range(20):
        keys = np.unique(rng.integers(0, 60, size=15)).astype(np.int32)
        probe = Vector(keys, np.full(len(keys), 1.0 / math.sqrt(len(keys))))
        expected = exact[keys].sum() / math.sqrt(len(keys)) / np.linalg.norm(exact)
        assert abs(story.words_cosine(probe) - expected) < 1e-3


def test_members_keep_one_byte_a_dimension_and_share_empty_keys() -> None:
    row = unit_rows(1)[0]
    story = Story(id="s", latest=T0, memory=5)
    story.add(EMPTY, EMPTY, member(row, numbers=np.zeros(0, np.uint32)))
    kept = story.members[0]
    assert story.member_rows is not None and story.member_scales is not None
    assert story.member_rows.shape == (1, DIM) and story.member_rows.dtype == np.int8
    scale = float(story.member_scales[0])
    assert np.allclose(story.member_rows[0] * scale, row, atol=scale / 2 + 1e-7)
    assert abs(story.nearest_member_cosine(row) - 1.0) < 1e-3
    assert kept.embedding is None and kept.names is NO_KEYS and kept.numbers is NO_KEYS
    assert story.embedding_sum is not None and story.embedding_sum is not row


def test_a_story_without_embeddings_scores_zero() -> None:
    story = Story(id="s", latest=T0, memory=5)
    story.add(EMPTY, EMPTY, member(None))
    probe = unit_rows(1)[0]
    assert story.embedding_unit is None
    assert story.embedding_cosine(probe) == 0.0
    assert story.nearest_member_cosine(probe) == 0.0


def test_absorbing_a_story_weighs_as_its_reports_joining() -> None:
    rows = unit_rows(2)
    a, b = Story(id="a", latest=T0, memory=5), Story(id="b", latest=T0, memory=5)
    joined = Story(id="j", latest=T0, memory=5)
    a.add(EMPTY, EMPTY, member(rows[0]))
    b.add(EMPTY, EMPTY, member(rows[1]))
    joined.add(EMPTY, EMPTY, member(rows[0]))
    joined.add(EMPTY, EMPTY, member(rows[1]))
    a.absorb(b)
    assert a.embedding_unit is not None and joined.embedding_unit is not None
    assert np.allclose(a.embedding_unit, joined.embedding_unit, atol=1e-3)
    assert len(a.members) == 2
    assert a.member_rows is not None and len(a.member_rows) == 2
    assert abs(a.nearest_member_cosine(rows[1]) - 1.0) < 1e-3
    assert b.embedding_sum is not None and np.allclose(b.embedding_sum, rows[1], atol=1e-3)


def test_a_story_that_absorbs_many_stays_bounded() -> None:
    words = Vector(np.array([3, 9], np.int32), np.array([0.6, 0.8]))
    rows = unit_rows(301)
    big = Story(id="big", latest=T0, memory=5, recent=3)
    big.add(words, words, member(rows[0]))
    for i in range(300):  # lone reports moving in one by one
        lone = Story(id=str(i), latest=T0, memory=5, recent=3)
        lone.add(words, words, member(rows[i + 1]))
        assert big.absorb(lone) == []  # every term is still in use
    assert len(big.members) == MERGED_RECENT * 3 and len(big.member_terms) == 5
    assert big.member_rows is not None and len(big.member_rows) == MERGED_RECENT * 3
    assert abs(big.nearest_member_cosine(rows[-1]) - 1.0) < 1e-3
    # A decayed sum of unit vectors stays below `memory` however many come.
    assert big.words_norm <= 5.0 and big.langs["en"] == 301


# -- a replayed window is the window the live clusterer built ------------------


def window(n: int) -> tuple[list[ClusterDoc], np.ndarray]:
    """Reports of a few events, each event's embeddings near its own direction."""
    rng = np.random.default_rng(7)
    events = rng.standard_normal((6, DIM))
    docs, rows = [], []
    for i in range(n):
        event = i % 6
        docs.append(ClusterDoc(
            id=f"d{i}", title=f"Event {event} in town{event} report {i}",
            text=f"Officials in town{event} said {i} people were affected by event {event}.",
            url=f"https://outlet{i % 5}.example/{i}", published=T0 + timedelta(minutes=7 * i),
            source=f"outlet{i % 5}", lang="en",
        ))  # fmt: skip
        row = events[event] + rng.standard_normal(DIM) * 0.8
        rows.append(row / np.linalg.norm(row))
    return docs, np.asarray(rows, np.float32).astype(np.float16).astype(np.float32)


def story_state(assigner: StoryAssigner) -> dict[str, tuple[object, ...]]:
    out: dict[str, tuple[object, ...]] = {}
    for story in assigner._stories.live():
        assert story.embedding_sum is not None
        out[story.id] = (
            story.size,
            story.latest,
            story.words.keys.tolist(),
            story.words.weights.tolist(),
            story.grams.weights.tolist(),
            story.embedding_sum.tolist(),
            None if story.member_rows is None else story.member_rows.tolist(),
            None if story.member_scales is None else story.member_scales.tolist(),
            dict(story.terms),
        )
    return out


def test_restored_state_equals_the_state_the_online_pass_built() -> None:
    settings = ClusterSettings(method="embedding", threshold=RECOMMENDED_THRESHOLDS["embedding"])
    docs, rows = window(60)
    online = StoryAssigner(settings)
    decided: dict[str, Assignment] = {d.id: online.add(d, rows[i]) for i, d in enumerate(docs)}
    assert len({a.story_id for a in decided.values()}) < len(docs)  # some reports joined
    restored = StoryAssigner(settings)
    for i, d in enumerate(docs):
        restored.restore(d, decided[d.id], rows[i])
    assert story_state(restored) == story_state(online)


def test_shared_term_counts_agree_with_each_story() -> None:
    stories = []
    for n, members in enumerate(([[1, 2, 3], [3, 4]], [[5]], [], [[2, 2, 9], [9, 1]])):
        story = Story(id=f"s{n}", latest=datetime(2024, 8, 6, tzinfo=UTC), memory=40)
        story.member_terms = [np.array(terms, np.int32) for terms in members]
        stories.append(story)
    terms = {1, 3, 9, 11}
    assert shared_term_counts(stories, terms) == [s.shared_terms(terms) for s in stories]
    assert shared_term_counts(stories, terms) == [2, 0, 0, 2]
    assert shared_term_counts([], terms) == []
