"""Score one clustering configuration on every labelled file: one JSON line each, a summary last.

Runs the story files of ../shared/data (in published order and shuffled), its
pair files (`--pairs` scoring), our own uk/ru/en set under benchmarks/data and
the demo's gold events. The near-duplicate check is scored apart, on copy and
not-copy pairs built from the story files and our set (see
`aggregator.evaluate.near_duplicate_pairs`): it is the same for every method. Usage:

    .venv/bin/python benchmarks/cluster.py [--method embedding] [--threshold T]
        [--data ../shared/data] [--cache /tmp/vectors]
"""

from __future__ import annotations

import argparse
import json
import sys
from datetime import datetime
from pathlib import Path
from typing import Any

from aggregator.cluster import recommended_threshold
from aggregator.evaluate import (
    evaluate_documents,
    evaluate_file,
    evaluate_near_duplicates,
    evaluate_pairs,
    load_labelled,
    near_duplicate_pairs,
)
from aggregator.settings import ClusterSettings
from aggregator.types import ClusterDoc

ROOT = Path(__file__).resolve().parent.parent
OWN_SET = ROOT / "benchmarks" / "data" / "conflict-2024-08.jsonl"
DEMO = ROOT / "aggregator" / "demo" / "articles.json"
TARGETS = {  # the targets, checked in the summary
    "uci_shuffled_f1": 0.88,
    "uci_shuffled_precision": 0.93,
    "tgcontest_f1": 0.85,
    "headlinecause_f1": 0.50,
    "own_bcubed_f1": 0.90,
}


def demo_documents() -> tuple[list[ClusterDoc], list[str]]:
    """The demo's articles as documents, with their gold `event` labels."""
    body = json.loads(DEMO.read_text(encoding="utf-8"))
    lang = {o["slug"]: o["language"] for o in body["outlets"]}
    docs, gold = [], []
    for a in body["articles"]:
        docs.append(
            ClusterDoc(
                id=a["id"],
                title=a["title"],
                text=_strip_tags(a.get("summary", "")),
                url=a.get("link", ""),
                published=datetime.fromisoformat(a["published"].replace("Z", "+00:00")),
                source=a["outlet"],
                lang=lang[a["outlet"]],
            )
        )
        gold.append(a["event"])
    return docs, gold


def near_duplicates(path: Path) -> dict[str, Any]:
    """The copy decision on copy and not-copy pairs built from a labelled story file."""
    docs, gold = load_labelled(path)
    return evaluate_near_duplicates(near_duplicate_pairs(docs, gold), name=str(path))


def _short_name(path: Path) -> str:
    """A data file's name in the summary: its folder's first word ("uci", "tgcontest")."""
    return path.parent.name.split("-")[0]


def _strip_tags(html: str) -> str:
    import re

    return " ".join(re.sub(r"<[^>]+>", " ", html).split())


def _brief(result: dict[str, Any]) -> dict[str, Any]:
    # The examples of merges and splits are for `aggregator eval`; keep lines short.
    return {k: v for k, v in result.items() if k not in ("worst_merges", "worst_splits")}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--method", choices=["tfidf", "embedding"], default="embedding")
    parser.add_argument("--threshold", type=float, help="default: the model's recommended cut")
    parser.add_argument("--data", type=Path, default=ROOT.parent / "shared" / "data")
    parser.add_argument("--cache", type=Path, help="folder to keep embeddings between runs")
    parser.add_argument(
        "--merge",
        action=argparse.BooleanOptionalAction,
        default=True,
        help="run the story merge pass after each report, as the worker should (default: on)",
    )
    args = parser.parse_args(argv)
    threshold = args.threshold or recommended_threshold(args.method)
    settings = ClusterSettings(method=args.method, threshold=threshold)
    summary: dict[str, Any] = {"method": args.method, "threshold": threshold, "merge": args.merge}
    story_files = []
    for path in sorted(args.data.glob("*/*.jsonl")):
        if path.parent.name.endswith("-pairs"):
            result = evaluate_pairs(path, settings, cache=args.cache)
            summary[_short_name(path) + "_f1"] = result["f1"]
            print(json.dumps(result, ensure_ascii=False), flush=True)
            continue
        story_files.append(path)
        for seed in (None, 1):
            result = evaluate_file(
                path, settings, shuffle_seed=seed, cache=args.cache, merge=args.merge
            )
            print(json.dumps(_brief(result), ensure_ascii=False), flush=True)
        summary["uci_shuffled_f1"] = result["pairwise_f1"]
        summary["uci_shuffled_precision"] = result["pairwise_precision"]
    own = evaluate_file(OWN_SET, settings, cache=args.cache, merge=args.merge)
    print(json.dumps(_brief(own), ensure_ascii=False), flush=True)
    summary["own_bcubed_f1"] = own["bcubed_f1"]
    summary["own_crosslingual_pair_recall"] = own["crosslingual_pair_recall"]
    docs, gold = demo_documents()
    demo = evaluate_documents(
        docs, gold, settings, name=str(DEMO), cache=args.cache, merge=args.merge
    )
    print(json.dumps(_brief(demo), ensure_ascii=False), flush=True)
    summary["demo_bcubed_f1"] = demo["bcubed_f1"]
    summary["demo_pairwise_precision"] = demo["pairwise_precision"]
    for path in [*story_files, OWN_SET]:
        copies = near_duplicates(path)
        print(json.dumps(copies, ensure_ascii=False), flush=True)
        key = "own" if path == OWN_SET else _short_name(path)
        summary[f"{key}_near_duplicates"] = [copies["precision"], copies["recall"]]
    summary["targets_met"] = {
        name: name in summary and summary[name] >= goal for name, goal in TARGETS.items()
    }
    print(json.dumps(summary, ensure_ascii=False))
    return 0


if __name__ == "__main__":
    sys.exit(main())
