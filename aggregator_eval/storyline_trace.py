"""A stream's storylines under many storyline policies, placing the stream once.

The story level never reads what its storyline index answers: its stories are
the same whatever storylines are linked above them. So a fit of the storyline
policy records the calls the story level makes to its index while a stream is
placed (`StorylineTrace.record`) and replays them into a fresh index for each
candidate policy (`StorylineTrace.storylines`): a second where placing the
stream again took ten.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from aggregator.cluster import StoryAssigner
from aggregator.cluster.embedding import DIM
from aggregator.cluster.storylines import StorylineIndex, StorylinePolicy
from aggregator.types import ClusterDoc

# What the story level calls on its storyline index; the rest only reads it.
RECORDED = frozenset({"place", "touch", "merge_stories", "forget_story", "expire", "link"})


class _Recorder:
    """Stands in for an assigner's storyline index: forwards every call, notes the writes."""

    def __init__(self, inner: StorylineIndex) -> None:
        self.inner = inner
        self.calls: list[tuple[str, tuple[Any, ...], dict[str, Any]]] = []

    def __getattr__(self, name: str) -> Any:
        attr = getattr(self.inner, name)
        if name not in RECORDED:
            return attr

        def call(*args: Any, **kwargs: Any) -> Any:
            self.calls.append((name, args, kwargs))
            return attr(*args, **kwargs)

        return call


@dataclass(frozen=True)
class StorylineTrace:
    """The calls one stream made, and for each document the call that placed it."""

    method: str
    calls: tuple[tuple[str, tuple[Any, ...], dict[str, Any]], ...]
    placed_by: tuple[int, ...]  # per document: the index of its `place` or `touch` call
    shelf_rows: int
    max_storylines: int

    @classmethod
    def record(
        cls,
        assigner: StoryAssigner,
        docs: Sequence[ClusterDoc],
        vectors: np.ndarray | None,
    ) -> StorylineTrace:
        """Place `docs` with `assigner` (fresh), a merge pass after each, as
        `evaluate.run_stories` does with `merge=True`, noting its index's calls."""
        recorder = _Recorder(assigner._storylines)
        assigner._storylines = recorder  # type: ignore[assignment]
        placed_by = []
        try:
            for i, doc in enumerate(docs):
                assigner.add(doc, None if vectors is None else vectors[i])
                placed_by.append(len(recorder.calls) - 1)  # add ends with place or touch
                assigner.merge_converged()
        finally:
            assigner._storylines = recorder.inner
        return cls(
            assigner.settings.method,
            tuple(recorder.calls),
            tuple(placed_by),
            assigner.tuning.shelf_rows,
            assigner.tuning.max_stories,
        )

    def storylines(self, policy: StorylinePolicy) -> list[str]:
        """Each document's final storyline had the stream been placed under `policy`."""
        index = StorylineIndex(
            self.method,
            policy,
            shelf_rows=self.shelf_rows,
            dim=DIM,
            max_storylines=self.max_storylines,
        )
        answers: dict[int, str] = {}
        merged: dict[str, str] = {}
        for n, (name, args, kwargs) in enumerate(self.calls):
            answer = getattr(index, name)(*args, **kwargs)
            if name in ("place", "touch"):
                answers[n] = answer
            elif name == "merge_stories" and answer is not None:
                merged[answer[0]] = answer[1]
            elif name == "link":
                merged.update(answer)
        out = []
        for n in self.placed_by:
            line = answers[n]
            while line in merged:  # absorbed into one that was absorbed later
                line = merged[line]
            out.append(line)
        return out
