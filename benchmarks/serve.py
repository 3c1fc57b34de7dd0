"""Requests per second for a timeline feed: the aggregator's app against a static file server.

    .venv/bin/python benchmarks/serve.py [--runs 3] [--seconds 3] [--connections 32] [--items 200]

One Atom feed of --items reports is rendered and stored in a SQLite store, as the
worker does. Two servers run on 127.0.0.1, each in its own process under the same
uvicorn configuration: the aggregator's app looking documents up in that store, and
Starlette's StaticFiles serving the same bytes from a file (the web server a static
`publish.out_dir` would get). A load generator in another process, wrk when it is
installed (apt-get install wrk) and otherwise a few processes of httpx clients, asks
for the feed plainly (200) and with its ETag (304). Each measurement runs --runs
times for --seconds, interleaved; the figures are medians. The last line printed is
one JSON object: feed_rps, feed_304_rps, static_rps, ratio (feed_rps / static_rps).
The app runs under aggregator.listener's bounded protocol, as `aggregator run` serves
it; feed_plain_uvicorn_rps is the same app under plain uvicorn, for the bounds' cost.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import multiprocessing
import re
import shutil
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import UTC, datetime, timedelta
from pathlib import Path

import httpx

FEED_PATH = "/timelines/bench.atom"
ATOM_TYPE = "application/atom+xml; charset=utf-8"
T0 = datetime(2024, 8, 6, tzinfo=UTC)
WRK_THREADS = 1  # two cores: one for the server, one for the load
# A server may still be writing responses queued before the last measurement ended
# (StaticFiles streams from threads); measuring the next target then would be unfair.
SETTLE_SECONDS = 1.0


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--seconds", type=float, default=3.0)
    parser.add_argument("--connections", type=int, default=32)
    parser.add_argument("--items", type=int, default=200)
    parser.add_argument(
        "--serve", choices=["app", "uncached", "plain", "static"], help=argparse.SUPPRESS
    )
    parser.add_argument("--dir", type=Path, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.serve:
        serve(args.serve, args.dir)
        return 0
    with tempfile.TemporaryDirectory(prefix="aggregator-bench-") as tmp:
        folder = Path(tmp)
        body, etag = prepare(folder, args.items)
        load = "wrk" if shutil.which("wrk") else "httpx"
        print(f"feed: {len(body)} bytes, {args.items} items; load: {load}, "
              f"{args.connections} connections, {args.runs} runs of {args.seconds:g} s each")  # fmt: skip
        with (
            server("app", folder) as app_url,
            server("uncached", folder) as uncached_url,
            server("plain", folder) as plain_url,
            server("static", folder) as static_url,
        ):
            check(app_url, etag)
            check(static_url, None)
            # (url, If-None-Match, Accept-Encoding); the last two are for context:
            # gzip as most readers ask, and the app without its in-memory cache.
            targets = {
                "feed_rps": (app_url, None, None),
                "feed_304_rps": (app_url, etag, None),
                "static_rps": (static_url, None, None),
                "feed_gzip_rps": (app_url, None, "gzip"),
                "feed_uncached_rps": (uncached_url, None, None),
                "feed_plain_uvicorn_rps": (plain_url, None, None),
            }
            results: dict[str, list[float]] = {name: [] for name in targets}
            for run in range(args.runs):
                for name, (url, if_none_match, encoding) in targets.items():
                    headers = {"If-None-Match": if_none_match, "Accept-Encoding": encoding}
                    sent = {key: value for key, value in headers.items() if value}
                    time.sleep(SETTLE_SECONDS)
                    rps = measure(load, url + FEED_PATH, sent, args)
                    results[name].append(rps)
                    print(f"run {run + 1}: {name:18} {rps:8.0f} requests/s")
    figures = {name: round(statistics.median(values), 1) for name, values in results.items()}
    figures["ratio"] = round(figures["feed_rps"] / figures["static_rps"], 3)
    print(
        f"median: feed {figures['feed_rps']:.0f}/s, feed 304 {figures['feed_304_rps']:.0f}/s, "
        f"static {figures['static_rps']:.0f}/s, ratio {figures['ratio']:.2f}; "
        f"feed gzip {figures['feed_gzip_rps']:.0f}/s, "
        f"without the cache {figures['feed_uncached_rps']:.0f}/s, "
        f"without the connection bounds {figures['feed_plain_uvicorn_rps']:.0f}/s"
    )
    print(json.dumps(figures))
    return 0


def prepare(folder: Path, items: int) -> tuple[bytes, str]:
    """Render the feed, store it as the worker would, and write the same bytes as a file."""
    from aggregator.publish.feeds import render_atom
    from aggregator.settings import PublishSettings
    from aggregator.store import open_store
    from aggregator.types import Document

    body = render_atom(timeline(items), PublishSettings())
    etag = '"' + hashlib.sha256(body).hexdigest()[:32] + '"'
    store = open_store(f"sqlite:///{folder / 'bench.db'}")
    try:
        store.put_documents([Document(FEED_PATH, ATOM_TYPE, body, etag, T0)])
    finally:
        store.close()
    static = folder / "static" / FEED_PATH.lstrip("/")
    static.parent.mkdir(parents=True)
    static.write_bytes(body)
    return body, etag


def timeline(items: int) -> object:
    from aggregator.types import TimelineDoc, TimelineItem

    text = "<p>Ukrainian forces pressed on into the Kursk region, officials said. " * 6 + "</p>"
    return TimelineDoc(
        slug="bench",
        title="Kursk incursion",
        description="Ukraine's cross-border offensive into Russia's Kursk region.",
        id="tag:127.0.0.1,2026:timeline/bench",
        updated=T0 + timedelta(hours=items),
        items=tuple(
            TimelineItem(
                id=f"tag:127.0.0.1,2026:entry/{n}",
                title=f"Report {n} on the Kursk incursion",
                link=f"https://outlet{n % 9}.example/news/{n}",
                summary_html=text,
                outlet=f"Outlet {n % 9}",
                outlet_url=f"https://outlet{n % 9}.example/feed",
                outlet_site=f"https://outlet{n % 9}.example/",
                published=T0 + timedelta(hours=n),
                updated=T0 + timedelta(hours=n),
            )
            for n in range(items, 0, -1)
        ),
    )


def serve(kind: str, folder: Path) -> None:
    """Child process: one server on a free 127.0.0.1 port, announced on stdout."""
    import uvicorn

    if kind in ("app", "uncached", "plain"):
        from aggregator.serve import create_app
        from aggregator.store import open_store

        store = open_store(f"sqlite:///{folder / 'bench.db'}")
        app = create_app(store.document, fresh_for=0 if kind == "uncached" else 1.0)
    else:
        from starlette.applications import Starlette
        from starlette.routing import Mount
        from starlette.staticfiles import StaticFiles

        app = Starlette(routes=[Mount("/", StaticFiles(directory=folder / "static"))])
    # IPPROTO_TCP, not the default 0: asyncio sets TCP_NODELAY only on sockets that say
    # they are TCP, and without it small responses wait ~40 ms for a delayed ACK.
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM, socket.IPPROTO_TCP)
    sock.bind(("127.0.0.1", 0))
    print(sock.getsockname()[1], flush=True)
    config = uvicorn.Config(app, log_level="warning", access_log=False, lifespan="off")
    if kind in ("app", "uncached"):  # as `aggregator run` serves: with the connection bounds
        from aggregator.listener import ServerConfig

        config = ServerConfig(app, host="127.0.0.1", port=0)
    uvicorn.Server(config).run(sockets=[sock])


@contextmanager
def server(kind: str, folder: Path) -> Iterator[str]:
    command = [sys.executable, __file__, "--serve", kind, "--dir", str(folder)]
    process = subprocess.Popen(command, stdout=subprocess.PIPE, text=True)
    try:
        assert process.stdout is not None
        url = f"http://127.0.0.1:{int(process.stdout.readline())}"
        deadline = time.monotonic() + 30
        while True:
            try:
                httpx.get(url + "/healthz", timeout=1)
                break
            except httpx.TransportError:
                if time.monotonic() > deadline or process.poll() is not None:
                    raise RuntimeError(f"the {kind} server did not start") from None
                time.sleep(0.05)
        yield url
    finally:
        process.terminate()
        process.wait(10)


def check(url: str, etag: str | None) -> None:
    """Both servers answer the feed, and ours answers 304 to its ETag."""
    response = httpx.get(url + FEED_PATH)
    assert response.status_code == 200, response.status_code
    if etag is not None:
        again = httpx.get(url + FEED_PATH, headers={"If-None-Match": etag})
        assert again.status_code == 304, again.status_code


def measure(load: str, url: str, headers: dict[str, str], args: argparse.Namespace) -> float:
    if load == "wrk":
        return wrk(url, headers, args.connections, args.seconds)
    return httpx_load(url, headers, args.connections, args.seconds)


def wrk(url: str, headers: dict[str, str], connections: int, seconds: float) -> float:
    command = ["wrk", f"-t{WRK_THREADS}", f"-c{connections}", f"-d{max(int(seconds), 1)}s"]
    for name, value in headers.items():
        command += ["-H", f"{name}: {value}"]
    done = subprocess.run(
        [*command, url], capture_output=True, text=True, check=True, timeout=seconds + 30
    )
    if "Socket errors" in done.stdout or re.search(r"Non-2xx or 3xx responses: [1-9]", done.stdout):
        raise RuntimeError(f"errors under load:\n{done.stdout}")
    match = re.search(r"Requests/sec:\s+([\d.]+)", done.stdout)
    if match is None:
        raise RuntimeError(f"cannot read wrk's output:\n{done.stdout}")
    return float(match.group(1))


def httpx_load(url: str, headers: dict[str, str], connections: int, seconds: float) -> float:
    """Without wrk: two processes of keep-alive clients, each counting its responses."""
    workers = 2
    with multiprocessing.Pool(workers) as pool:
        counts = pool.starmap(
            _client_loop, [(url, headers, max(connections // workers, 1), seconds)] * workers
        )
    return sum(counts) / seconds


def _client_loop(url: str, headers: dict[str, str], connections: int, seconds: float) -> int:
    import asyncio

    async def loop(client: httpx.AsyncClient, deadline: float) -> int:
        done = 0
        while time.monotonic() < deadline:
            response = await client.get(url, headers=headers)
            done += response.status_code in (200, 304)
        return done

    async def run() -> int:
        limits = httpx.Limits(max_connections=connections)
        async with httpx.AsyncClient(limits=limits) as client:
            deadline = time.monotonic() + seconds
            return sum(await asyncio.gather(*(loop(client, deadline) for _ in range(connections))))

    return asyncio.run(run())


if __name__ == "__main__":
    sys.exit(main())
