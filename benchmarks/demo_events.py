#!/usr/bin/env python3
"""Which events the bundled demo's reports form, and the scores each report met them with.

    .venv/bin/python benchmarks/demo_events.py [--cache DIR] [--events FILE] [--match WORD]

The demo's articles (aggregator/demo/articles.json) go through a fresh clusterer
in published order with a merge pass after each, as `aggregator_eval.evaluate`
streams a labelled file (the feeds' HTML is stripped to text here, not parsed by
the pipeline: close to, not exactly, what `aggregator demo` clusters). For each
report whose gold label contains `--match` (default: kursk) it prints the
events of its story it met, each with its size, its core's gold labels, the
report's score (None: a rule ruled the event out) and its cosines with the
core; then every event holding such a report, with its reports. The last line
is one JSON object: those events' reports, and the events that mix gold labels
(the demo's labels are coarser than events: one label follows the incursion
all week, so splitting it is expected, mixing two labels is not).
"""

from __future__ import annotations

import argparse
import html
import json
import re
from pathlib import Path

from aggregator.cluster import StoryAssigner, recommended_threshold
from aggregator.cluster.events import EventIndex, load_policy, read_policy, score
from aggregator.demo.outlets import load_demo
from aggregator.settings import ClusterSettings
from aggregator.types import ClusterDoc
from aggregator_eval.evaluate import cached_vectors, run_stories

METHOD = "embedding"


def plain(markup: str) -> str:
    return re.sub(r"\s+", " ", html.unescape(re.sub(r"<[^>]+>", " ", markup))).strip()


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--cache", type=Path, help="folder to keep embeddings between runs")
    parser.add_argument("--events", type=Path, help="an event policy file (default: shipped)")
    parser.add_argument("--match", default="kursk", help="gold labels to follow")
    args = parser.parse_args(argv)
    demo = load_demo()
    language = {o.slug: o.language for o in demo.outlets}
    docs = [
        ClusterDoc(
            a.id, a.title, plain(a.summary), a.link, a.published, a.outlet, language[a.outlet]
        )
        for a in demo.articles
    ]
    gold = {a.id: a.event for a in demo.articles}
    assigner = StoryAssigner(
        ClusterSettings(method=METHOD, threshold=recommended_threshold(METHOD))
    )
    steps = run_stories(assigner, docs, cached_vectors(docs, args.cache), merge=True)
    policy = read_policy(args.events) if args.events else load_policy()
    rule = policy.for_method(METHOD)
    index = EventIndex(METHOD, policy)
    followed = [args.match in gold[doc.id] for doc in docs]
    keys: list[str] = []
    renamed: dict[str, str] = {}  # events that joined another when their stories merged
    for doc, step, follow in zip(docs, steps, followed, strict=True):
        if step.report is None:
            assert step.duplicate_of is not None
            keys.append(index.copy_of(step.duplicate_of) or step.duplicate_of)
        else:
            if follow:
                print(f"{doc.published:%m-%d %H:%M} {doc.lang} [{gold[doc.id]}] {doc.title}")
                for event in index.events(step.story_id):
                    value = score(step.report, event, policy.window_hours, rule)
                    cosines = [
                        round(float(step.report.embedding @ m.embedding), 3)
                        for m in event.core
                        if step.report.embedding is not None and m.embedding is not None
                    ]
                    print(
                        f"    event {event.key[-24:]} ({event.size} reports, core "
                        f"{[gold[m.doc_id] for m in event.core]}): score "
                        f"{None if value is None else round(value, 3)} (join {rule.join}), "
                        f"cosines {cosines}"
                    )
            keys.append(index.place(step.story_id, step.report).event_key)
        for gone, into in step.merges:
            renamed.update(index.merge_story(gone, into))
    merged = {gone: into for step in steps for gone, into in step.merges}
    events: dict[tuple[str, str], list[ClusterDoc]] = {}
    for doc, step, key in zip(docs, steps, keys, strict=True):
        story = step.story_id
        while story in merged:
            story = merged[story]
        while key in renamed:
            key = renamed[key]
        events.setdefault((story, key), []).append(doc)
    found = []
    for (story, key), members in events.items():
        if not any(args.match in gold[d.id] for d in members):
            continue
        print(f"story {story[-24:]}, event {key[-24:]}:")
        for d in members:
            print(f"    {d.published:%m-%d %H:%M} {d.lang} [{gold[d.id]}] {d.title}")
        found.append([d.id for d in members])
    mixed = [sorted({gold[i] for i in members}) for members in found]
    print(
        json.dumps(
            {
                "match": args.match,
                "events": found,
                "mixed": [labels for labels in mixed if len(labels) > 1],
            }
        )
    )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
