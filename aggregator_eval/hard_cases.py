"""Hand-written streams that every storyline policy must keep (benchmarks/data/hard-cases.json).

A case is a short stream of reports in named groups, and what the storylines of
that stream must be: the groups of an `apart` pair share no storyline; the
groups of a `together` list are one storyline. They are the issue's hard
negatives (two storylines in one region, two of one period) and a storyline
followed across a change of vocabulary and language, written out once: the
storyline fit never chooses a candidate that breaks one (benchmarks/cluster.py),
and the tests check the shipped policy on each (tests/test_storylines.py).
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from pathlib import Path

from aggregator.types import ClusterDoc


@dataclass(frozen=True)
class HardCase:
    """One stream and what its storylines must be."""

    name: str
    why: str
    docs: tuple[ClusterDoc, ...]  # in the order they are placed
    groups: tuple[str, ...]  # each document's group
    apart: tuple[tuple[str, str], ...]
    together: tuple[tuple[str, ...], ...]

    def broken(self, storylines: Sequence[str]) -> list[str]:
        """What `storylines` (one per document) break of the case, in words: [] when kept."""
        of: dict[str, set[str]] = {}
        for group, line in zip(self.groups, storylines, strict=True):
            of.setdefault(group, set()).add(line)
        out = [f"{a} and {b} share a storyline" for a, b in self.apart if of[a] & of[b]]
        for groups in self.together:
            lines = set().union(*(of[g] for g in groups))
            if len(lines) > 1:
                out.append(f"{' and '.join(groups)} are {len(lines)} storylines, not one")
        return out


def load_cases(path: Path) -> list[HardCase]:
    """The cases of a file; a malformed one raises ValueError naming the file and the case."""
    body = json.loads(path.read_text(encoding="utf-8"))
    start = datetime.fromisoformat(body["start"])
    cases = []
    for n, case in enumerate(body["cases"]):
        name = case.get("name", f"case {n}")
        docs = tuple(
            ClusterDoc(
                f"{n}-{i}",
                title,
                lead,
                f"https://cases.example/{n}/{i}",
                start + timedelta(days=days),
                "cases",  # one outlet: the cases turn on what reports say
                lang,
            )
            for i, (days, _, lang, title, lead) in enumerate(case["reports"])
        )
        groups = tuple(row[1] for row in case["reports"])
        apart = tuple((a, b) for a, b in case["apart"])
        together = tuple(tuple(g) for g in case["together"])
        named = {g for pair in apart for g in pair} | {g for gs in together for g in gs}
        if missing := named - set(groups):
            raise ValueError(f"{path}: case {name!r} names groups without reports: {missing}")
        cases.append(HardCase(name, case["why"], docs, groups, apart, together))
    return cases
