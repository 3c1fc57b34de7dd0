"""The storyline space's builder, on made-up events whose spread is known."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import numpy as np

from aggregator.cluster.embedding import DIM
from aggregator_eval.space import (
    SHRINKS,
    Events,
    choose_shrink,
    pair_auc,
    space_from,
    within_spread,
)

T0 = datetime(2024, 8, 6, tzinfo=UTC)


def made_up(name: str, seed: int) -> Events:
    """Four storylines of five events each: a storyline is a direction of its own
    (small), its events differ from each other along a few shared directions (large),
    as events told in other languages or at other places do."""
    draw = np.random.default_rng(seed)
    noise = np.eye(DIM)[:4]  # what differs between the events of one storyline
    points, storylines = [], []
    for s in range(4):
        subject = np.eye(DIM)[10 + s]
        for _ in range(5):
            points.append(0.5 * subject + draw.normal(0, 1.0, 4) @ noise)
            storylines.append(f"{name}-{s}")
    matrix = np.asarray(points)
    matrix /= np.linalg.norm(matrix, axis=1, keepdims=True)
    times = [T0 + timedelta(hours=i) for i in range(len(points))]
    return Events(name, matrix, storylines, times)


def test_the_space_ranks_events_of_one_storyline_above_others_it_never_saw() -> None:
    fitted, unseen = made_up("fitted", 1), made_up("unseen", 2)
    space = space_from(within_spread([fitted]), 0.3)
    assert pair_auc(unseen, space, 21.0) > pair_auc(unseen, None, 21.0) + 0.1
    # Directions the events of a storyline spread along are weighed down.
    assert np.linalg.norm(space[:, 0]) < 0.5 * np.linalg.norm(space[:, 10])
    # Its eigenvalues average 1, so centroids keep their size.
    assert abs(np.trace(space) / DIM - 1.0) < 1e-9


def test_the_shrinkage_is_chosen_on_files_left_out() -> None:
    parts = [made_up(f"file{i}", i) for i in range(3)]
    shrink, table = choose_shrink(parts, 21.0)
    assert shrink in SHRINKS
    assert set(table) == {str(s) for s in SHRINKS}
    assert all(len(areas) == 3 for areas in table.values())
    assert np.mean(table[str(shrink)]) == max(np.mean(areas) for areas in table.values())
