"""Workers and one leader on PostgreSQL: how many workers one leader can serve.

    .venv/bin/python benchmarks/scale.py [--workers 1,2,3] [--feeds 10000] [--rate 10]
        [--seconds 90] [--interval 60] [--database postgresql+psycopg://...]

A local server (a process of its own) serves `--feeds` RSS feeds; new entries
appear at `--rate` a second across them, each on a feed of its own choosing, as
short news reports (a headline and a lead). For each N, a fresh database gets
the sources, then N worker processes poll them (claim, fetch, parse, store, and
compute each new entry's vector: the embedding method) while one leader process
clusters what they store, for `--seconds`. Each process measures its own CPU time
(all its threads) from when its loop starts; the model is loaded before that.

Printed for each N: entries ingested and embedded per second, CPU milliseconds
per entry on the workers (all of their work, polls included, and the embedding
alone) and on the leader (clustering), and the lag between an entry's storage
(its poll) and its clustering, p50 and p95. On a two-core machine wall-clock
scaling cannot show; the ratio of worker to leader CPU per entry says how many
workers one leader keeps up with. The last line is one JSON object for the
largest N, with `workers`, `ingest_eps`, `worker_cpu_ms_per_entry`,
`leader_cpu_ms_per_entry`, `lag_s_p95` and the figures of every N under `runs`.

The database named by `--database` is dropped and created again for each N: give
it one of its own (the default is `aggregator_scale` on 127.0.0.1).
"""

from __future__ import annotations

import argparse
import asyncio
import dataclasses
import json
import multiprocessing
import random
import statistics
import subprocess
import sys
import time
from collections.abc import Sequence
from datetime import UTC, datetime
from email.utils import format_datetime
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any
from xml.sax.saxutils import escape

from sqlalchemy import create_engine, make_url, text

DEFAULT_DATABASE = "postgresql+psycopg://postgres@127.0.0.1:5432/aggregator_scale"
LEADER_CYCLE = 2.0  # seconds between the leader's cluster steps (worker.cycle_seconds)
ITEMS_LISTED = 20  # a feed lists its latest items only
STORY_SIZE = 5  # reports of one invented event, spread over several feeds
_VOCABULARY = """
    troops border region drone strike oil depot fire governor city council budget school
    shelter bank rate inflation market stocks prices minister talks exchange prisoners
    grain port missile power grid outage repair storm warning heat record gold parliament
    election vote court ruling hospital doctors strike train station bridge flood rescue
    police protest farmers harvest exports tariffs factory workers wages energy gas pipeline
"""
WORDS = _VOCABULARY.split()


# -- the feeds -------------------------------------------------------------------


@dataclasses.dataclass(frozen=True)
class Item:
    number: int
    at: float  # wall-clock second it appears
    title: str
    text: str


def schedule(feeds: int, rate: float, seconds: float, start: float) -> dict[int, list[Item]]:
    """Every item of the run, by feed: entry k appears at start + k / rate, dated when served."""
    rng = random.Random(20240806)
    events = [[rng.choice(WORDS) for _ in range(6)] + [f"Place{e}"] for e in range(100_000)]
    by_feed: dict[int, list[Item]] = {}
    for k in range(int(rate * seconds) + 1):
        event = events[k // STORY_SIZE]
        title = " ".join(rng.sample(event, 5) + [rng.choice(WORDS) for _ in range(3)])
        lead = " ".join(rng.choice(WORDS) for _ in range(40))
        item = Item(k, start + k / rate, title.capitalize(), f"{title}. {lead}.")
        by_feed.setdefault(rng.randrange(feeds), []).append(item)
    return by_feed


def serve_feeds(port: int, feeds: int, rate: float, seconds: float, start: Any) -> None:
    """Serve the feeds until killed; an unchanged feed answers 304 to its ETag.

    `start` (a shared value) is when the first item appears; feeds are empty until it is set.
    """
    items = schedule(feeds, rate, seconds, 0.0)

    class Handler(BaseHTTPRequestHandler):
        def do_GET(self) -> None:  # noqa: N802 (the http.server API)
            n = int(self.path.rsplit("/", 1)[-1].split(".")[0])
            now = time.time() - start.value if start.value else -1.0
            listed = [i for i in items.get(n, ()) if i.at <= now][-ITEMS_LISTED:]
            etag = f'"{n}-{len(listed) and listed[-1].number}-{len(listed)}"'
            if self.headers.get("If-None-Match") == etag:
                self.send_response(304)
                self.send_header("ETag", etag)
                self.end_headers()
                return
            body = rss(n, listed)
            self.send_response(200)
            self.send_header("Content-Type", "application/rss+xml")
            self.send_header("ETag", etag)
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, format: str, *args: Any) -> None:
            pass

    ThreadingHTTPServer.request_queue_size = 256
    ThreadingHTTPServer(("127.0.0.1", port), Handler).serve_forever()


def rss(n: int, items: Sequence[Item]) -> bytes:
    parts = [
        f'<?xml version="1.0"?><rss version="2.0"><channel><title>Outlet {n}</title>'
        f"<link>http://outlet{n}.test/</link><description>news</description>"
    ]
    for item in items:
        when = format_datetime(datetime.now(UTC), usegmt=True)
        parts.append(
            f"<item><guid>o{n}-{item.number}</guid><title>{escape(item.title)}</title>"
            f"<link>http://outlet{n}.test/{item.number}</link><pubDate>{when}</pubDate>"
            f"<description>{escape(item.text)}</description></item>"
        )
    parts.append("</channel></rss>")
    return "".join(parts).encode()


# -- the processes ----------------------------------------------------------------


def settings_for(database: str, port: int, feeds: int, interval: float) -> Any:
    from aggregator.settings import SourceConfig, parse_settings

    base = parse_settings("", environ={})
    return dataclasses.replace(
        base,
        database_url=database,
        sources=tuple(
            SourceConfig(name=f"outlet-{n}", url=f"http://127.0.0.1:{port}/feed/{n}.xml")
            for n in range(feeds)
        ),
        fetch=dataclasses.replace(
            base.fetch,
            allow_private_networks=True,
            concurrency=32,
            per_host_concurrency=32,  # every outlet is on one local host here
            min_interval=interval,
            default_interval=interval,
            max_interval=interval,
            jitter=0.0,
        ),
        worker=dataclasses.replace(base.worker, lease_seconds=60.0),
    )


def run_child(role: str, database: str, port: int, feeds: int, interval: float) -> dict[str, Any]:
    """One worker or the leader, in a process of its own: it says "ready" once started, then
    reads the measured window (wall-clock begin and end) from its standard input."""
    from aggregator.cluster import embedding
    from aggregator.pipeline import CycleReport, Pipeline
    from aggregator.store import open_store
    from aggregator.types import ClusterDoc

    settings = settings_for(database, port, feeds, interval)
    store = open_store(database, create=False)
    pipeline = Pipeline(settings, store)
    if role == "worker":
        asyncio.run(pipeline.dispatch(deadline=0.0))  # reads the sources, claims nothing
        stamp = datetime.now(UTC)
        embedding.embed([ClusterDoc("0", "warm up", "", "", stamp, "", "en")])  # load the model
    figures: dict[str, Any] = {"role": role}
    print("ready", flush=True)
    begin, until = (float(t) for t in sys.stdin.readline().split())
    time.sleep(max(0.0, begin - time.time()))
    started = time.process_time()
    if role == "worker":
        report = CycleReport()
        embed_cpu = 0.0
        real_embed = embedding.embed

        def timed_embed(docs: Sequence[ClusterDoc]) -> Any:
            nonlocal embed_cpu
            before = time.process_time()
            try:
                return real_embed(docs)
            finally:
                embed_cpu += time.process_time() - before

        embedding.embed = timed_embed
        while time.time() < until:
            asyncio.run(pipeline.dispatch(report, deadline=time.monotonic() + until - time.time()))
            time.sleep(0.2)
        figures.update(new=report.new_entries, embedded=report.embedded, polls=report.polled)
        figures["embed_cpu_s"] = embed_cpu
    else:
        clustered_at: dict[int, float] = {}
        real_save = store.save_assignments

        def timed_save(assignments: Any, now: Any, term: Any = None) -> Any:
            touched = real_save(assignments, now, term)
            if touched is not None:
                moment = time.time()
                clustered_at.update((int(a.doc_id), moment) for a in assignments)
            return touched

        store.save_assignments = timed_save  # type: ignore[method-assign]
        while time.time() < until:
            pipeline.cluster_step()
            time.sleep(LEADER_CYCLE)
        # The last entries stored: cluster them too, so the lag covers every entry.
        pipeline.cluster_step()
        figures["clustered_at"] = clustered_at
    figures["cpu_s"] = time.process_time() - started
    pipeline.close()
    store.close()
    return figures


def _child_main(args: argparse.Namespace) -> None:
    figures = run_child(args.child, args.database, args.port, args.feeds, args.interval)
    print(json.dumps(figures))


# -- one run per N ----------------------------------------------------------------


def fresh_database(url: str) -> None:
    target = make_url(url)
    admin = create_engine(target.set(database="postgres"), isolation_level="AUTOCOMMIT")
    with admin.connect() as connection:
        connection.execute(text(f'DROP DATABASE IF EXISTS "{target.database}" WITH (FORCE)'))
        connection.execute(text(f'CREATE DATABASE "{target.database}"'))
    admin.dispose()


def measure(workers: int, args: argparse.Namespace) -> dict[str, Any]:
    from aggregator.store import open_store

    port = free_port()
    fresh_database(args.database)
    settings = settings_for(args.database, port, args.feeds, args.interval)
    store = open_store(args.database)
    store.sync_sources(settings.sources, datetime.now(UTC))
    store.close()

    common = [
        "--database", args.database, "--port", str(port), "--feeds", str(args.feeds),
        "--interval", str(args.interval),
    ]  # fmt: skip
    start = multiprocessing.Value("d", 0.0)
    server = multiprocessing.Process(
        target=serve_feeds,
        args=(port, args.feeds, args.rate, args.seconds + 2 * args.interval, start),
        daemon=True,
    )
    server.start()
    children = [
        subprocess.Popen(
            [sys.executable, __file__, "--child", role, *common],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            text=True,
        )
        for role in ["leader"] + ["worker"] * workers
    ]
    try:
        for child in children:  # started, connected, the model loaded
            assert child.stdout is not None and child.stdout.readline().strip() == "ready"
        begin = time.time() + 1.0
        spread_polls(args.database, begin, args.feeds, args.interval)
        # The first polls find what one interval brought, as every later poll does.
        start.value = begin - args.interval
        for child in children:
            assert child.stdin is not None
            child.stdin.write(f"{begin} {begin + args.seconds}\n")
            child.stdin.flush()
        outputs = [json.loads(c.communicate()[0].strip().splitlines()[-1]) for c in children]
    finally:
        server.kill()
    leader, *crew = outputs
    stored = stored_times(args.database)
    lags = sorted(
        leader["clustered_at"][str(i)] - stored[i]
        for i in stored
        if str(i) in leader["clustered_at"]
    )
    new = sum(w["new"] for w in crew)
    embedded = sum(w["embedded"] for w in crew)
    worker_cpu = sum(w["cpu_s"] for w in crew)
    embed_cpu = sum(w["embed_cpu_s"] for w in crew)
    clustered = len(leader["clustered_at"])
    return {
        "workers": workers,
        "entries": new,
        "ingest_eps": round(new / args.seconds, 2),
        "embedded_eps": round(embedded / args.seconds, 2),
        "polls": sum(w["polls"] for w in crew),
        "clustered": clustered,
        "worker_cpu_ms_per_entry": round(1000 * worker_cpu / max(new, 1), 2),
        "worker_embed_cpu_ms_per_entry": round(1000 * embed_cpu / max(embedded, 1), 2),
        "leader_cpu_ms_per_entry": round(1000 * leader["cpu_s"] / max(clustered, 1), 3),
        "lag_s_p50": round(statistics.median(lags), 2) if lags else None,
        "lag_s_p95": round(lags[int(0.95 * (len(lags) - 1))], 2) if lags else None,
        "unclustered": len(stored) - len(lags),
    }


def spread_polls(database: str, begin: float, feeds: int, interval: float) -> None:
    """Sources fall due evenly over the first interval, as they do once running."""
    engine = create_engine(database)
    with engine.begin() as connection:
        connection.execute(
            text(
                "UPDATE fetchstate SET next_check_at = "
                "to_timestamp(:begin + ((source_id * 7919) % :feeds) * :step)"
            ),
            {"begin": begin, "feeds": feeds, "step": interval / feeds},
        )
    engine.dispose()


def stored_times(database: str) -> dict[int, float]:
    """Each entry's storage time (its poll), as wall-clock seconds."""
    engine = create_engine(database)
    with engine.connect() as connection:
        rows = connection.execute(text("SELECT id, first_seen_at FROM entry")).all()
    engine.dispose()
    return {int(i): seen.replace(tzinfo=seen.tzinfo or UTC).timestamp() for i, seen in rows}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--workers", default="1,2,3", help="worker counts to run, e.g. 1,2,3")
    parser.add_argument("--feeds", type=int, default=10_000)
    parser.add_argument("--rate", type=float, default=10.0, help="new entries a second")
    parser.add_argument("--seconds", type=float, default=90.0, help="measured seconds per N")
    parser.add_argument("--interval", type=float, default=300.0, help="seconds between polls")
    parser.add_argument("--database", default=DEFAULT_DATABASE)
    parser.add_argument("--child", choices=["worker", "leader"], help=argparse.SUPPRESS)
    parser.add_argument("--port", type=int, default=0, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        _child_main(args)
        return
    runs = []
    for workers in (int(n) for n in args.workers.split(",")):
        figures = measure(workers, args)
        runs.append(figures)
        print(
            f"{workers} worker(s): {figures['ingest_eps']} entries/s ingested, "
            f"{figures['embedded_eps']}/s embedded ({figures['polls']} polls); CPU per entry: "
            f"workers {figures['worker_cpu_ms_per_entry']} ms "
            f"(embedding {figures['worker_embed_cpu_ms_per_entry']} ms), "
            f"leader {figures['leader_cpu_ms_per_entry']} ms; lag storage -> clustered "
            f"p50 {figures['lag_s_p50']} s, p95 {figures['lag_s_p95']} s",
            flush=True,
        )
    last = dict(runs[-1])
    last["worker_to_leader_cpu"] = round(
        last["worker_cpu_ms_per_entry"] / max(last["leader_cpu_ms_per_entry"], 1e-9), 1
    )
    print(json.dumps({**last, "runs": runs}))


def free_port() -> int:
    import socket

    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


if __name__ == "__main__":
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
    main()
