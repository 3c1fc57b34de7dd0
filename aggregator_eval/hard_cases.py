"""Hand-written streams that every policy must keep (benchmarks/data/hard-cases.json).

A case is a short stream of reports in named groups, and what the storylines, or
the events, of that stream must be: the groups of an `apart` pair share no
storyline (event); the groups of a `together` list are one. They are the issue's
hard negatives (two storylines in one region; a regional and then a federal
emergency; two bridges struck two days apart) and a storyline followed across a
change of vocabulary and language, written out once: the fits never choose a
candidate that breaks one (benchmarks/cluster.py), and the tests check the
shipped policies on each (tests/test_storylines.py, tests/test_events.py).
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from pathlib import Path

import numpy as np

from aggregator.cluster import StoryAssigner, Tuning
from aggregator.cluster.events import EventIndex, EventPolicy
from aggregator.settings import ClusterSettings
from aggregator.types import ClusterDoc
from aggregator_eval.evaluate import LEVELS, Level, Step, in_storylines, place_events

ONE_STORYLINE = "case"  # an event case's reports all compete in one storyline


@dataclass(frozen=True)
class HardCase:
    """One stream and what its storylines or events must be."""

    name: str
    level: Level
    why: str
    docs: tuple[ClusterDoc, ...]  # in the order they are placed, each from its own outlet
    groups: tuple[str, ...]  # each document's group
    apart: tuple[tuple[str, str], ...]
    together: tuple[tuple[str, ...], ...]

    def broken(self, labels: Sequence[str]) -> list[str]:
        """What `labels` (a storyline or event per document) break of the case, in words:
        [] when kept."""
        of: dict[str, set[str]] = {}
        for group, label in zip(self.groups, labels, strict=True):
            of.setdefault(group, set()).add(label)
        out = [f"{a} and {b} share a {self.level}" for a, b in self.apart if of[a] & of[b]]
        for groups in self.together:
            found = set().union(*(of[g] for g in groups))
            if len(found) > 1:
                out.append(f"{' and '.join(groups)} are {len(found)} {self.level}s, not one")
        return out


def load_cases(path: Path, level: Level | None = None) -> list[HardCase]:
    """The cases of a file (of one level, when given); a malformed one raises ValueError
    naming the file and the case."""
    body = json.loads(path.read_text(encoding="utf-8"))
    start = datetime.fromisoformat(body["start"])
    cases = []
    for n, case in enumerate(body["cases"]):
        name = case.get("name", f"case {n}")
        if case["level"] not in LEVELS:
            raise ValueError(f"{path}: case {name!r}: level is 'event' or 'storyline'")
        docs = tuple(
            ClusterDoc(
                f"{n}-{i}",
                title,
                lead,
                f"https://cases.example/{n}/{i}",
                start + timedelta(hours=hours),
                f"outlet-{i}",  # every report another outlet's, as the cases are written
                lang,
            )
            for i, (hours, _, lang, title, lead) in enumerate(case["reports"])
        )
        groups = tuple(row[1] for row in case["reports"])
        apart = tuple((a, b) for a, b in case["apart"])
        together = tuple(tuple(g) for g in case["together"])
        named = {g for pair in apart for g in pair} | {g for gs in together for g in gs}
        if missing := named - set(groups):
            raise ValueError(f"{path}: case {name!r} names groups without reports: {missing}")
        cases.append(HardCase(name, case["level"], case["why"], docs, groups, apart, together))
    return [case for case in cases if level is None or case.level == level]


def event_steps(
    case: HardCase, settings: ClusterSettings, tuning: Tuning, vectors: np.ndarray | None
) -> list[Step]:
    """An event case placed by the story level, every report then in one storyline, as
    the event fit groups its training part (`in_storylines`)."""
    assigner = StoryAssigner(settings, tuning=tuning)
    return in_storylines(assigner, case.docs, vectors, [ONE_STORYLINE] * len(case.docs))


def events_of(steps: Sequence[Step], method: str, policy: EventPolicy | None = None) -> list[str]:
    """Each report's event under `policy` (None: the shipped one)."""
    return place_events(steps, EventIndex(method, policy))
