"""Score the cluster stage on labelled JSON Lines files (`aggregator eval`).

Documents stream through the same `StoryAssigner` the worker uses; the scores
are pairwise and B-cubed precision, recall and F1, from contingency counts.
"""

from __future__ import annotations

import json
import random
import time
from collections import Counter
from collections.abc import Hashable, Iterator, Sequence
from dataclasses import replace
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from aggregator.cluster import StoryAssigner, Tuning
from aggregator.errors import EvalError
from aggregator.settings import ClusterSettings
from aggregator.types import ClusterDoc

# A pair whose dates are both unknown is compared as if published together.
UNDATED = datetime(2000, 1, 1, tzinfo=UTC)


def load_documents(path: Path) -> list[ClusterDoc]:
    """The documents of a labelled file, in file order."""
    return load_labelled(path)[0]


def load_labelled(path: Path) -> tuple[list[ClusterDoc], list[str]]:
    """Documents and their gold story labels, in file order."""
    docs: list[ClusterDoc] = []
    gold: list[str] = []
    for line_no, row in _rows(path):
        try:
            docs.append(_doc(row, ""))
            gold.append(_text(row, "cluster", required=True))
        except (KeyError, TypeError, ValueError) as exc:
            raise EvalError(f"bad document: {exc}", file=str(path), line=line_no) from exc
    return docs, gold


def evaluate_file(
    path: Path,
    settings: ClusterSettings,
    *,
    shuffle_seed: int | None = None,
    tuning: Tuning | None = None,
) -> dict[str, Any]:
    """Stream a labelled file through a fresh StoryAssigner and score the stories.

    Documents go in published order. With `shuffle_seed`, the order is shuffled
    and the sorted publication times are dealt out again in the new order: a
    stream whose stories interleave, as real feeds do, instead of each story
    arriving as one run (an artefact of how some sets were recorded).
    """
    docs, gold = load_labelled(path)
    order = sorted(range(len(docs)), key=lambda i: docs[i].published)
    if shuffle_seed is not None:
        times = [docs[i].published for i in order]
        random.Random(shuffle_seed).shuffle(order)
        docs = [replace(docs[i], published=t) for i, t in zip(order, times, strict=True)]
    else:
        docs = [docs[i] for i in order]
    gold = [gold[i] for i in order]
    assigner = StoryAssigner(settings, tuning=tuning)
    started = time.perf_counter()
    # The worker embeds each entry once, when stored; timed apart from clustering.
    vectors = assigner.embed(docs) if assigner.uses_embeddings else None
    embed_s = time.perf_counter() - started
    started = time.perf_counter()
    assignments = [
        assigner.add(doc, None if vectors is None else vectors[i]) for i, doc in enumerate(docs)
    ]
    elapsed = time.perf_counter() - started
    pred = [a.story_id for a in assignments]
    return {
        "file": str(path),
        "order": "published" if shuffle_seed is None else f"shuffled(seed={shuffle_seed})",
        "method": settings.method,
        "threshold": settings.threshold,
        "docs": len(docs),
        "gold_clusters": len(set(gold)),
        "predicted_clusters": len(set(pred)),
        "duplicates": sum(a.duplicate_of is not None for a in assignments),
        **_scores(gold, pred),
        "docs_per_s": round(len(docs) / elapsed, 1) if elapsed > 0 else None,
        "embed_docs_per_s": round(len(docs) / embed_s, 1) if vectors is not None else None,
    }


def _scores(gold: Sequence[str], pred: Sequence[str]) -> dict[str, float]:
    pp, pr, pf = pairwise_scores(gold, pred)
    bp, br, bf = bcubed_scores(gold, pred)
    figures = {
        "pairwise_precision": pp,
        "pairwise_recall": pr,
        "pairwise_f1": pf,
        "bcubed_precision": bp,
        "bcubed_recall": br,
        "bcubed_f1": bf,
    }
    return {name: round(value, 4) for name, value in figures.items()}


def evaluate_pairs(
    path: Path, settings: ClusterSettings, *, tuning: Tuning | None = None
) -> dict[str, Any]:
    """Score the same-event decision on a pair file.

    The assigner first learns term (and language) statistics from every text in
    the file, labels unseen, as a running worker would have from its stream;
    then each pair is decided by the score b gets against a story founded by a.
    """
    pairs = _load_pairs(path)
    assigner = StoryAssigner(settings, tuning=tuning)
    unique = list({doc.id: doc for a, b, _ in pairs for doc in (a, b)}.values())
    vectors = assigner.embed(unique) if assigner.uses_embeddings else None
    assigner.warm(unique, vectors)
    row_of = {doc.id: i for i, doc in enumerate(unique)}
    tp = fp = fn = 0
    for a, b, same in pairs:
        vecs = None if vectors is None else (vectors[row_of[a.id]], vectors[row_of[b.id]])
        decided = assigner.similarity(a, b, vecs) >= settings.threshold
        tp += decided and same
        fp += decided and not same
        fn += same and not decided
    precision = tp / (tp + fp) if tp + fp else 1.0
    recall = tp / (tp + fn) if tp + fn else 1.0
    return {
        "file": str(path),
        "method": settings.method,
        "threshold": settings.threshold,
        "pairs": len(pairs),
        "tp": tp,
        "fp": fp,
        "fn": fn,
        "precision": round(precision, 4),
        "recall": round(recall, 4),
        "f1": round(_f1(precision, recall), 4),
    }


def pairwise_scores(
    gold: Sequence[Hashable], pred: Sequence[Hashable]
) -> tuple[float, float, float]:
    """Pairwise precision, recall, F1 over all unordered document pairs.

    Counts pairs per contingency cell, so O(n). With no predicted-together pair
    precision is 1.0 (nothing wrongly merged); with no gold pair recall is 1.0.
    """
    cells, gold_sizes, pred_sizes = _contingency(gold, pred)
    together = sum(_pairs(n) for n in cells.values())
    predicted = sum(_pairs(n) for n in pred_sizes.values())
    actual = sum(_pairs(n) for n in gold_sizes.values())
    precision = together / predicted if predicted else 1.0
    recall = together / actual if actual else 1.0
    return precision, recall, _f1(precision, recall)


def bcubed_scores(gold: Sequence[Hashable], pred: Sequence[Hashable]) -> tuple[float, float, float]:
    """B-cubed precision, recall, F1 averaged over documents, from contingency counts."""
    cells, gold_sizes, pred_sizes = _contingency(gold, pred)
    n = len(gold)
    if n == 0:
        return 1.0, 1.0, 1.0
    # Each of the n_gp documents in cell (g, p) scores n_gp / |p| and n_gp / |g|.
    precision = sum(c * c / pred_sizes[p] for (_, p), c in cells.items()) / n
    recall = sum(c * c / gold_sizes[g] for (g, _), c in cells.items()) / n
    return precision, recall, _f1(precision, recall)


def _contingency(
    gold: Sequence[Hashable], pred: Sequence[Hashable]
) -> tuple[Counter[tuple[Hashable, Hashable]], Counter[Hashable], Counter[Hashable]]:
    if len(gold) != len(pred):
        raise ValueError(f"{len(gold)} gold labels but {len(pred)} predicted labels")
    return Counter(zip(gold, pred, strict=True)), Counter(gold), Counter(pred)


def _pairs(n: int) -> int:
    return n * (n - 1) // 2


def _f1(precision: float, recall: float) -> float:
    total = precision + recall
    return 2 * precision * recall / total if total else 0.0


# -- reading files ---------------------------------------------------------------


def _rows(path: Path) -> Iterator[tuple[int, dict[str, Any]]]:
    try:
        with path.open(encoding="utf-8") as lines:
            for line_no, line in enumerate(lines, start=1):
                if not line.strip():
                    continue
                try:
                    row = json.loads(line)
                except json.JSONDecodeError as exc:
                    raise EvalError(
                        f"not JSON ({exc.msg}): fix or remove the line",
                        file=str(path),
                        line=line_no,
                    ) from exc
                if not isinstance(row, dict):
                    raise EvalError("expected a JSON object", file=str(path), line=line_no)
                yield line_no, row
    except OSError as exc:
        raise EvalError(f"cannot read: {exc.strerror}", file=str(path)) from exc
    except UnicodeDecodeError as exc:
        raise EvalError("not UTF-8 text", file=str(path)) from exc


def _doc(row: dict[str, Any], prefix: str, published: datetime | None = None) -> ClusterDoc:
    when = published or _time(row.get(prefix + "published"))
    if when is None:
        raise ValueError(f"{prefix}published is missing")
    return ClusterDoc(
        id=_text(row, prefix + "id", required=True),
        title=_text(row, prefix + "title", required=True),
        text=_text(row, prefix + "text"),
        url=_text(row, prefix + "url"),
        published=when,
        source=_text(row, prefix + "source"),
        lang=_text(row, prefix + "lang"),
        host=_text(row, prefix + "host"),
    )


def _text(row: dict[str, Any], key: str, *, required: bool = False) -> str:
    value = row.get(key)
    if value is None:
        if required:
            raise KeyError(f"{key} is missing")
        return ""
    if isinstance(value, int | float) and not isinstance(value, bool):
        return str(value)  # numeric ids
    if not isinstance(value, str):
        raise TypeError(f"{key} should be a string, not {type(value).__name__}")
    return value


def _time(value: Any) -> datetime | None:
    if value is None or value == "":
        return None
    if not isinstance(value, str):
        raise TypeError(f"published should be an ISO 8601 string, not {type(value).__name__}")
    parsed = datetime.fromisoformat(value)  # ValueError names the bad text
    return parsed.replace(tzinfo=UTC) if parsed.tzinfo is None else parsed.astimezone(UTC)


def _load_pairs(path: Path) -> list[tuple[ClusterDoc, ClusterDoc, bool]]:
    pairs = []
    for line_no, row in _rows(path):
        try:
            pairs.append(_pair(row, line_no))
        except (KeyError, TypeError, ValueError) as exc:
            raise EvalError(f"bad pair: {exc}", file=str(path), line=line_no) from exc
    return pairs


def _pair(row: dict[str, Any], line_no: int) -> tuple[ClusterDoc, ClusterDoc, bool]:
    same = row.get("same")
    if not isinstance(same, bool):
        raise TypeError("same should be true or false")
    row = {**row}
    for side in ("a", "b"):
        row.setdefault(f"{side}_id", f"{side}{line_no}")
    # A date on one side only is the best guess for the other: the pair was
    # labelled as news of about one time.
    a_time, b_time = _time(row.get("a_published")), _time(row.get("b_published"))
    a_time = a_time or b_time or UNDATED
    b_time = b_time or a_time
    return _doc(row, "a_", a_time), _doc(row, "b_", b_time), same
