"""Score one clustering configuration on held-out data only: one JSON line a file, a summary last.

Every figure is on documents the pair models were not fitted on, so a fitted
or tuned number cannot flatter itself:

- our uk/ru/en set (benchmarks/data), its held-out storylines (`split` =
  "heldout"), in published order, at the event and the storyline level;
- the UCI dev file of ../shared/data at the storyline level (its stories are
  storylines), shuffled, on its held-out half: the stories with
  `split_half(story) == 1`, the half `python -m aggregator.cluster.training
  --half 0` fits on the other side of. Models fitted on the whole file (no
  `half` in their notes, as shipped today) have seen this half: the UCI line
  and the summary say so (`in_sample`), and `--models` scores a refit instead;
- the tgcontest pairs (event level; no model is fitted on them), every pair;
- the headlinecause pairs, for information only: they separate facts inside
  one story, which a timeline keeps together.

The copy check (MinHash, nothing fitted) is scored on pairs built from the
held-out documents. Usage:

    .venv/bin/python benchmarks/cluster.py [--method embedding] [--threshold T]
        [--data ../shared/data] [--cache /tmp/vectors] [--models DIR]
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Any

from aggregator.cluster import recommended_threshold
from aggregator.cluster.decision import CROSS_SUFFIX, FEATURES, MODEL_DIR, PairModel
from aggregator.cluster.training import split_half
from aggregator.evaluate import (
    evaluate_documents,
    evaluate_file,
    evaluate_near_duplicates,
    evaluate_pairs,
    load_levels,
    near_duplicate_pairs,
)
from aggregator.settings import ClusterSettings

ROOT = Path(__file__).resolve().parent.parent
OWN_SET = ROOT / "benchmarks" / "data" / "conflict-2024-08.jsonl"
UCI = Path("uci-news-2014-03") / "dev.jsonl"
UCI_HELD_OUT_HALF = 1  # the models are fitted on half 0 (`training --half 0`)
UCI_SEED = 3  # an order no fit used (the shipped fits streamed seeds 1 and 2)
HELD_OUT = "heldout"
# The targets (figure -> at least), checked in the summary.
TARGETS = {
    "own_event_bcubed_f1": 0.90,
    "own_event_bcubed_precision": 0.93,
    "own_storyline_bcubed_f1": 0.90,
    "own_storyline_bcubed_precision": 0.93,
    "uci_storyline_pairwise_f1": 0.85,
    "uci_storyline_pairwise_precision": 0.93,
    "tgcontest_f1": 0.85,
}


def pair_models(method: str, folder: Path | None) -> tuple[PairModel | None, PairModel | None]:
    """The models of `method` (and its cross-language one) from a folder; None = shipped."""
    if folder is None:
        return None, None
    cross = method + CROSS_SUFFIX
    return _model(folder, method), _model(folder, cross) if cross in FEATURES else None


def _model(folder: Path, method: str) -> PairModel:
    path = folder / f"{method}.json"
    body = json.loads(path.read_text(encoding="utf-8"))
    if tuple(body["features"]) != FEATURES[method]:
        raise SystemExit(f"{path}: fitted on other features than {method} reads; refit it")
    weights = tuple(float(w) for w in body["weights"])
    return PairModel(method, FEATURES[method], weights, float(body["bias"]), body["threshold"])


def uci_half_fitted(method: str, folder: Path | None) -> Any:
    """The UCI half the method's model was fitted on, from its notes (None = the whole file)."""
    path = (folder or MODEL_DIR) / f"{method}.json"
    notes = json.loads(path.read_text(encoding="utf-8")).get("notes", {})
    return notes.get("half")


def levels_brief(result: dict[str, Any]) -> dict[str, Any]:
    """A scored file without its examples of merges and splits: lines stay short."""
    return {k: v for k, v in result.items() if k not in ("worst_merges", "worst_splits")}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--method", choices=["tfidf", "embedding"], default="embedding")
    parser.add_argument("--threshold", type=float, help="default: the model's recommended cut")
    parser.add_argument("--data", type=Path, default=ROOT.parent / "shared" / "data")
    parser.add_argument("--cache", type=Path, help="folder to keep embeddings between runs")
    parser.add_argument(
        "--models", type=Path, help="folder of refitted <method>.json models (default: shipped)"
    )
    parser.add_argument(
        "--merge",
        action=argparse.BooleanOptionalAction,
        default=True,
        help="run the story merge pass after each report, as the worker does (default: on)",
    )
    args = parser.parse_args(argv)
    threshold = args.threshold or recommended_threshold(args.method)
    settings = ClusterSettings(method=args.method, threshold=threshold)
    model, cross = pair_models(args.method, args.models)
    run = {"cache": args.cache, "model": model, "cross_model": cross}
    summary: dict[str, Any] = {
        "method": args.method,
        "threshold": threshold,
        "merge": args.merge,
        "models": str(args.models or MODEL_DIR),
    }

    own = evaluate_file(OWN_SET, settings, split=HELD_OUT, merge=args.merge, **run)
    _print(levels_brief(own))
    for level in ("event", "storyline"):
        figures = own["levels"][level]
        summary[f"own_{level}_bcubed_f1"] = figures["bcubed_f1"]
        summary[f"own_{level}_bcubed_precision"] = figures["bcubed_precision"]
        summary[f"own_{level}_crosslingual_pair_recall"] = figures["crosslingual_pair_recall"]

    uci_path = args.data / UCI
    if uci_path.exists():
        uci = load_levels(uci_path, "storyline")
        assert uci.storylines is not None
        rows = [
            i for i, story in enumerate(uci.storylines) if split_half(story) == UCI_HELD_OUT_HALF
        ]
        fitted_half = uci_half_fitted(args.method, args.models)
        result = evaluate_documents(
            [uci.docs[i] for i in rows],
            [uci.storylines[i] for i in rows],
            settings,
            level="storyline",
            name=f"{uci_path} [half {UCI_HELD_OUT_HALF} of the stories]",
            shuffle_seed=UCI_SEED,
            merge=args.merge,
            **run,
        )
        result["fitted_on_half"] = fitted_half
        result["in_sample"] = fitted_half != 1 - UCI_HELD_OUT_HALF
        _print(levels_brief(result))
        summary["uci_storyline_pairwise_f1"] = result["pairwise_f1"]
        summary["uci_storyline_pairwise_precision"] = result["pairwise_precision"]
        summary["uci_in_sample"] = result["in_sample"]
        uci_copies = near_duplicate_pairs(
            [uci.docs[i] for i in rows], [uci.storylines[i] for i in rows]
        )
        _print(evaluate_near_duplicates(uci_copies, name=result["file"]))

    for name in ("tgcontest", "headlinecause"):
        for path in sorted(args.data.glob(f"{name}-*/pairs.jsonl")):
            pairs = evaluate_pairs(path, settings, **run)
            if name == "headlinecause":
                pairs["information_only"] = True
            _print(pairs)
            summary[f"{name}_f1"] = pairs["f1"]
            summary[f"{name}_precision"] = pairs["precision"]

    own_docs = load_levels(OWN_SET, "event", HELD_OUT)
    assert own_docs.events is not None
    copies = evaluate_near_duplicates(
        near_duplicate_pairs(own_docs.docs, own_docs.events), name=own["file"]
    )
    _print(copies)
    summary["own_near_duplicates"] = [copies["precision"], copies["recall"]]
    summary["targets"] = TARGETS
    # A figure on data the models were fitted on meets no target.
    seen = {name for name in TARGETS if name.startswith("uci_") and summary.get("uci_in_sample")}
    summary["targets_met"] = {
        name: name in summary and name not in seen and summary[name] >= goal
        for name, goal in TARGETS.items()
    }
    print(json.dumps(summary, ensure_ascii=False))
    return 0


def _print(line: dict[str, Any]) -> None:
    print(json.dumps(line, ensure_ascii=False), flush=True)


if __name__ == "__main__":
    sys.exit(main())
