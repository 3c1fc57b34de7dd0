"""Ingest and clustering throughput: one JSON object on the last line.

- ours_eps / feedparser_eps / ratio: entries per second through our ingest path
  (aggregator.parse.parse_feed, per-source identity, the MinHash near-duplicate
  check, the store write into SQLite via aggregator.store) against bare
  feedparser.parse of the same feed bodies, in the same run.
- cluster_dps: documents per second through the default clusterer, embedding
  included (the worker embeds each batch once, then adds each entry).
- cluster_us_10k / cluster_us_100k: microseconds to place one (already embedded)
  document when 10,000 and 100,000 entries are in the window before it, its
  share of the merge pass and second looks included. The window is filled by
  replaying decisions (each synthetic event one story) and the merge pass that
  ends a restore, as a restarted leader does, rather than by placing 100,000
  documents one by one first: the cost measured is that of the next 500, and
  the run stays within minutes.

    .venv/bin/python benchmarks/pipeline.py [--feeds 40] [--entries 50] [--rounds 5]
        [--cluster-docs 200] [--skip-cluster]
"""

from __future__ import annotations

import argparse
import json
import random
import statistics
import sys
import tempfile
import time
from datetime import UTC, datetime, timedelta
from email.utils import format_datetime
from pathlib import Path
from xml.sax.saxutils import escape

import feedparser
import numpy as np

from aggregator.cluster import StoryAssigner, recommended_threshold
from aggregator.dedupe import NearDuplicates
from aggregator.parse import parse_feed
from aggregator.settings import ClusterSettings, SourceConfig
from aggregator.store.database import open_store
from aggregator.types import Assignment, ClusterDoc, PollOutcome

_VOCABULARY = """
    troops border region drone strike oil depot fire governor city council budget school
    shelter bank rate inflation market stocks prices minister talks exchange prisoners
    grain port missile power grid outage repair storm warning heat record gold
"""
WORDS = _VOCABULARY.split()
T0 = datetime(2024, 8, 6, tzinfo=UTC)
PLACE_BATCH = 16  # reports placed between merge passes


def fake_feed(rng: random.Random, feed: int, entries: int) -> bytes:
    items = []
    for i in range(entries):
        title = " ".join(rng.choice(WORDS) for _ in range(9)).capitalize()
        body = " ".join(rng.choice(WORDS) for _ in range(60))
        when = format_datetime(T0 + timedelta(minutes=feed * 7 + i))
        items.append(
            f"<item><title>{escape(title)}</title><link>https://o{feed}.example/{i}</link>"
            f"<guid>o{feed}-{i}</guid><pubDate>{when}</pubDate>"
            f"<description>{escape(body)}</description></item>"
        )
    return (
        f'<?xml version="1.0"?><rss version="2.0"><channel><title>Outlet {feed}</title>'
        f"<link>https://o{feed}.example/</link>{''.join(items)}</channel></rss>"
    ).encode()


def ingest_rates(feeds: int, entries: int, rounds: int = 5) -> dict[str, float]:
    """Median rates over `rounds`, each into a fresh store and near-duplicate index.

    Within a round each feed goes through bare feedparser and then through our
    path, so a busy machine slows both alike; `ratio` is the median of the
    rounds' ratios.
    """
    rng = random.Random(1)
    bodies = [fake_feed(rng, f, entries) for f in range(feeds)]
    total = feeds * entries
    ours, bare, ratios = [], [], []
    for n in range(rounds):
        ours_s, bare_s = _ingest_round(bodies)
        ours.append(total / ours_s)
        bare.append(total / bare_s)
        ratios.append(bare_s / ours_s)
        print(
            f"round {n + 1}: ours {ours[-1]:.0f} eps, feedparser {bare[-1]:.0f} eps,"
            f" ratio {ratios[-1]:.3f}",
            file=sys.stderr,
        )
    return {
        "ours_eps": round(statistics.median(ours), 1),
        "feedparser_eps": round(statistics.median(bare), 1),
        "ratio": round(statistics.median(ratios), 3),
    }


def _ingest_round(bodies: list[bytes]) -> tuple[float, float]:
    """Seconds through our ingest path and through bare feedparser.parse, for all bodies."""
    ours_s = bare_s = 0.0
    with tempfile.TemporaryDirectory() as tmp:
        store = open_store(f"sqlite:///{Path(tmp) / 'bench.db'}")
        configs = [
            SourceConfig(name=f"o{f}", url=f"https://o{f}.example/rss") for f in range(len(bodies))
        ]
        store.sync_sources(configs, T0)
        requests = {r.name: r for r in store.due_requests(T0 + timedelta(days=1))}
        near = NearDuplicates()
        for f, body in enumerate(bodies):
            request = requests[f"o{f}"]
            started = time.perf_counter()
            feedparser.parse(body)
            parsed_at = time.perf_counter()
            parsed = parse_feed(body, {}, url=request.url, source=request.name)
            for entry in parsed.entries:
                near.add(f"{request.source_id}:{entry.key}", entry.title, entry.text)
            store.record_poll(request.source_id, _ok_outcome(), parsed.entries)
            bare_s += parsed_at - started
            ours_s += time.perf_counter() - parsed_at
        store.close()
    return ours_s, bare_s


def _ok_outcome() -> PollOutcome:
    # A successful poll with no new validators: the store only needs the entries.
    return PollOutcome(checked_at=T0, next_check_at=T0 + timedelta(hours=1), status="ok")


def synthetic_docs(n: int, seed: int = 7) -> list[ClusterDoc]:
    """Headlines of n/5 invented events, five reports each, one every 3.6 s (1,000/hour)."""
    rng = random.Random(seed)
    events = [[rng.choice(WORDS) for _ in range(6)] + [f"place{e}"] for e in range(n // 5 + 1)]
    docs = []
    for i in range(n):
        event = events[i // 5]
        words = rng.sample(event, 5) + [rng.choice(WORDS) for _ in range(3)]
        docs.append(
            ClusterDoc(
                id=str(i),
                title=" ".join(words),
                text="",
                url=f"https://o{i % 50}.example/{i}",
                published=T0 + timedelta(seconds=3.6 * i),
                source=f"o{i % 50}",
                lang="en",
            )
        )
    rng.shuffle(docs[: len(docs)])  # events interleave within the stream
    return sorted(docs, key=lambda d: d.published)


def cluster_rates(n_dps: int) -> dict[str, float]:
    settings = ClusterSettings(method="embedding", threshold=recommended_threshold("embedding"))
    docs = synthetic_docs(n_dps)
    assigner = StoryAssigner(settings)
    assigner.embed(docs[:4])  # load the model outside the timing
    started = time.perf_counter()
    _place(assigner, docs)
    dps = len(docs) / (time.perf_counter() - started)
    out = {"cluster_dps": round(dps, 1)}
    # Cost per document after 10k and 100k placed, with cheap random unit vectors
    # standing in for embeddings (the model's cost is in cluster_dps).
    rng = np.random.default_rng(0)
    for label, stored in (("cluster_us_10k", 10_000), ("cluster_us_100k", 100_000)):
        docs = synthetic_docs(stored + 500)
        vectors = rng.normal(size=(len(docs), 384)).astype(np.float32)
        vectors /= np.linalg.norm(vectors, axis=1, keepdims=True)
        assigner = StoryAssigner(settings)
        for doc, vector in zip(docs[:stored], vectors[:stored], strict=True):
            assigner.restore(doc, Assignment(doc.id, _event_story(doc)), vector)
        # A restore ends so (see Clusterer.restore): the replayed reports indexed for
        # near-duplicates, then the merge pass the replayed stories are due.
        assigner.index_restored()
        assigner.merge_converged()
        assigner.event_merges()  # what the leader hands the store with the story merges
        started = time.perf_counter()
        _place(assigner, docs[stored:], vectors[stored:])
        out[label] = round((time.perf_counter() - started) / 500 * 1e6, 1)
    return out


def _event_story(doc: ClusterDoc) -> str:
    """The story of a synthetic document: its event's first document (see synthetic_docs)."""
    return str(int(doc.id) // 5 * 5)


def _place(
    assigner: StoryAssigner, docs: list[ClusterDoc], vectors: np.ndarray | None = None
) -> None:
    """Add in batches, each embedded first (unless `vectors` are given), scanned against
    the shelf at once and followed by its merge pass and second looks, as the leader
    does; batches of PLACE_BATCH are smaller than the leader's, so merge passes and
    scans cost a document no less than there."""
    for i in range(0, len(docs), PLACE_BATCH):
        batch = docs[i : i + PLACE_BATCH]
        rows = assigner.embed(batch) if vectors is None else vectors[i : i + PLACE_BATCH]
        assigner.scan_ahead(batch, list(rows))
        for doc, vec in zip(batch, rows, strict=True):
            assigner.add(doc, vec)
        assigner.merge_converged()
        assigner.event_merges()


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--feeds", type=int, default=40)
    parser.add_argument("--entries", type=int, default=50)
    parser.add_argument("--cluster-docs", type=int, default=200)
    parser.add_argument("--rounds", type=int, default=5, help="ingest rounds; medians are shown")
    parser.add_argument("--skip-cluster", action="store_true", help="measure the ingest only")
    args = parser.parse_args(argv)
    result = ingest_rates(args.feeds, args.entries, args.rounds)
    if args.skip_cluster:
        print(json.dumps(result))
        return 0
    print(json.dumps(result), flush=True)
    result |= cluster_rates(args.cluster_docs)
    print(json.dumps(result))
    return 0


if __name__ == "__main__":
    sys.exit(main())
