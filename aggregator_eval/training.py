"""Learn the pair model's weights from labelled files (`python -m aggregator_eval.training`).

Examples are made the way the clusterer meets them: from a labelled stream,
each report is compared with the candidate stories an assigner retrieves, the
assigner then being told the right answer (so the stories are the gold ones, as
they stand at that moment); the candidate that is the report's gold story is a
positive. The shipped models are fitted on the English UCI dev stream alone, so
the Russian pair files, our uk/ru/en set and the demo stay unseen: their scores
say how the model carries to other data. The fit is L2-regularised logistic
regression by Newton's method: a dozen weights, little to overfit with.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import random
from collections.abc import Sequence
from dataclasses import dataclass, replace
from pathlib import Path

import numpy as np

from aggregator.cluster.assigner import StoryAssigner
from aggregator.cluster.decision import CROSS_SUFFIX, FEATURES, MODEL_DIR, PairModel
from aggregator.settings import ClusterSettings
from aggregator.types import Assignment, ClusterDoc
from aggregator_eval.evaluate import cached_vectors, load_labelled

L2 = 1e-3  # per unit of example weight (each file weighs 1): a gentle pull to 0


@dataclass(frozen=True)
class Examples:
    """Feature rows with labels, from one labelled file."""

    name: str
    rows: np.ndarray  # (n, features)
    labels: np.ndarray  # (n,) 0 or 1


def stream_examples(
    name: str,
    docs: Sequence[ClusterDoc],
    gold: Sequence[str],
    vectors: np.ndarray | None,
    settings: ClusterSettings,
    model: PairModel,
) -> Examples:
    """Candidate features of each report against the gold stories as they stand then."""
    assigner = StoryAssigner(settings, model=model)
    rows: list[list[float]] = []
    labels: list[int] = []
    for i, doc in enumerate(docs):
        vec = None if vectors is None else vectors[i]
        for story_id, features in assigner.candidate_features(doc, vec):
            rows.append([features.get(f, 0.0) for f in model.features])
            labels.append(int(story_id == gold[i]))
        assigner.restore(doc, Assignment(doc.id, gold[i]), vec)
    return Examples(name, np.asarray(rows, dtype=np.float64), np.asarray(labels))


def pair_examples(
    name: str,
    pairs: Sequence[tuple[ClusterDoc, ClusterDoc, bool]],
    vectors: dict[str, np.ndarray] | None,
    settings: ClusterSettings,
    model: PairModel,
) -> Examples:
    """Features of b against a story founded by a, after warming on every text."""
    assigner = StoryAssigner(settings, model=model)
    unique = list({doc.id: doc for a, b, _ in pairs for doc in (a, b)}.values())
    matrix = None if vectors is None else np.vstack([vectors[d.id] for d in unique])
    assigner.warm(unique, matrix)
    rows = []
    for a, b, _ in pairs:
        vecs = None if vectors is None else (vectors[a.id], vectors[b.id])
        features = assigner.pair_features(a, b, vecs)
        rows.append([features.get(f, 0.0) for f in model.features])
    labels = np.asarray([int(same) for _, _, same in pairs])
    return Examples(name, np.asarray(rows, dtype=np.float64), labels)


def fit(sets: Sequence[Examples], l2: float = L2) -> tuple[np.ndarray, float]:
    """Weights and bias of a logistic regression, each set weighing 1 in total."""
    x = np.vstack([s.rows for s in sets])
    y = np.concatenate([s.labels for s in sets]).astype(np.float64)
    weight = np.concatenate([np.full(len(s.labels), 1.0 / max(len(s.labels), 1)) for s in sets])
    design = np.hstack([x, np.ones((len(x), 1))])
    theta = np.zeros(design.shape[1])
    penalty = np.full(design.shape[1], l2)
    penalty[-1] = 0.0  # the bias is not pulled towards zero
    for _ in range(50):
        p = 1.0 / (1.0 + np.exp(-np.clip(design @ theta, -40, 40)))
        grad = design.T @ (weight * (p - y)) + penalty * theta
        hess = (design * (weight * p * (1 - p))[:, None]).T @ design + np.diag(penalty)
        step = np.linalg.solve(hess + 1e-9 * np.eye(len(theta)), grad)
        theta -= step
        if float(np.abs(step).max()) < 1e-8:
            break
    return theta[:-1], float(theta[-1])


# -- the command: read ../shared/data, split, fit, report, write --------------------------


def split_half(key: str, salt: str = "pairs-model") -> int:
    """0 or 1, stable for a key: which half of a file an example belongs to."""
    return hashlib.sha1(f"{salt}:{key}".encode()).digest()[0] & 1


def _shuffled(docs: list[ClusterDoc], gold: list[str], seed: int) -> tuple[list, list]:
    # The stream order of `aggregator eval --shuffle`: stories interleave.
    order = sorted(range(len(docs)), key=lambda i: docs[i].published)
    times = [docs[i].published for i in order]
    random.Random(seed).shuffle(order)
    return (
        [replace(docs[i], published=t) for i, t in zip(order, times, strict=True)],
        [gold[i] for i in order],
    )


def main(argv: Sequence[str] | None = None) -> int:
    """Fit on the UCI dev stream (shuffled) only; every other file stays unseen for evaluation."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("data", type=Path, help="the ../shared/data folder")
    parser.add_argument("--method", choices=sorted(FEATURES), default="embedding")
    parser.add_argument("--half", type=int, choices=[0, 1], help="fit on this half of the stories")
    parser.add_argument("--threshold", type=float, default=0.25, help="recommended join cut")
    parser.add_argument("--cache", type=Path, help="folder for cached embeddings")
    parser.add_argument("--out", type=Path, help="where to write the model JSON")
    args = parser.parse_args(argv)
    method = args.method
    # A cross-language model reads features of its method's assigner.
    settings = ClusterSettings(method=method.removesuffix(CROSS_SUFFIX), threshold=args.threshold)
    start = PairModel.from_arrays(method, np.zeros(len(FEATURES[method])), 0.0, args.threshold)
    docs, gold = load_labelled(args.data / "uci-news-2014-03" / "dev.jsonl")
    vectors = cached_vectors(docs, args.cache) if settings.method == "embedding" else None
    keep = [i for i, g in enumerate(gold) if args.half is None or split_half(g) == args.half]
    by_id = {} if vectors is None else {docs[i].id: vectors[i] for i in keep}
    sets = []
    for seed in (1, 2):  # two interleavings: more varied story states, same documents
        stream, labels = _shuffled([docs[i] for i in keep], [gold[i] for i in keep], seed)
        matrix = np.vstack([by_id[d.id] for d in stream]) if by_id else None
        sets.append(stream_examples(f"uci-{seed}", stream, labels, matrix, settings, start))
    weights, bias = fit(sets)
    model = PairModel.from_arrays(method, weights, bias, args.threshold)
    notes = {
        "trained_on": [
            f"{s.name}: {len(s.labels)} candidates, {int(s.labels.sum())} right" for s in sets
        ],
        "half": args.half,
        "command": (
            f"python -m aggregator_eval.training DATA --method {method}"
            + ("" if args.half is None else f" --half {args.half}")
            + f" --threshold {args.threshold}"
        ),
    }
    out = args.out or MODEL_DIR / f"{method}.json"
    out.write_text(model.to_json(notes), encoding="utf-8")
    print(json.dumps(dict(zip(model.features, model.weights, strict=True)) | {"bias": bias}))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
