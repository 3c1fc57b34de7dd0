"""Requests per second of a conditional refresh: our fetch path against a bare httpx loop.

    .venv/bin/python benchmarks/poll.py [--feeds 5000] [--rounds 3] [--concurrency 16] [--hosts 8]

A minimal asyncio HTTP/1.1 server in another process serves --feeds feeds, each with
its own ETag, spread over --hosts loopback addresses (127.0.0.2, 127.0.0.3, ...: one
host each to the per-host limit) and answers 304 to a request that sends it back. Each
round makes every feed's conditional request twice, interleaved: once through
`aggregator.fetch.fetch_all` with fetch.concurrency = --concurrency and the default
per-host limit (2), once through a bare httpx.AsyncClient loop with a semaphore of the
same size and the same connection limits. Both take a new client per refresh, as a
worker cycle does. One warm-up round is not counted; the figures are medians. The last
line printed is one JSON object: ours_rps, bare_rps, ratio (ours / bare) and the setup.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import statistics
import subprocess
import sys
import time
from collections.abc import Awaitable, Callable
from datetime import UTC, datetime
from email.utils import format_datetime

import httpx

from aggregator.fetch import ACCEPT, fetch_all
from aggregator.settings import FetchSettings
from aggregator.types import FetchRequest

Refresh = Callable[[list[FetchRequest]], Awaitable[None]]


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--feeds", type=int, default=5000)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--concurrency", type=int, default=16)
    parser.add_argument("--hosts", type=int, default=8)
    parser.add_argument("--serve", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.serve:
        asyncio.run(serve(args.hosts))
        return 0
    server = subprocess.Popen(
        [sys.executable, __file__, "--serve", "--hosts", str(args.hosts)],
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        assert server.stdout is not None
        origins = json.loads(server.stdout.readline())  # the server says where it listens
        return asyncio.run(measure(args, origins))
    finally:
        server.terminate()
        server.wait(timeout=10)


async def measure(args: argparse.Namespace, origins: list[str]) -> int:
    requests = [
        FetchRequest(
            source_id=n,
            name=f"feed {n}",
            url=f"{origins[n % len(origins)]}/feeds/{n}",
            etag=_etag(n),
        )
        for n in range(args.feeds)
    ]
    settings = FetchSettings(
        concurrency=args.concurrency,
        allow_private_networks=True,  # the server is on loopback
        timeout_total=30.0,
    )

    async def ours(batch: list[FetchRequest]) -> None:
        results = await fetch_all(batch, settings)
        _check(status for result in results for status in [result.status])

    async def bare(batch: list[FetchRequest]) -> None:
        await bare_loop(batch, settings)

    print(
        f"{args.feeds} feeds on {len(origins)} loopback hosts, all answering 304; "
        f"{args.concurrency} requests at once, per host {settings.per_host_concurrency} (ours)"
    )
    await _rps(ours, requests), await _rps(bare, requests)  # warm-up, not counted
    figures: dict[str, list[float]] = {"ours": [], "bare": []}
    for round_number in range(args.rounds):
        # Alternate who goes first, so that drift in the machine's speed evens out.
        order = [("ours", ours), ("bare", bare)]
        for name, refresh in order if round_number % 2 == 0 else order[::-1]:
            figures[name].append(await _rps(refresh, requests))
        print(
            f"round {round_number + 1}: ours {figures['ours'][-1]:.0f} requests/s, "
            f"bare httpx {figures['bare'][-1]:.0f} requests/s"
        )
    ours_rps, bare_rps = (statistics.median(figures[name]) for name in ("ours", "bare"))
    print(f"median: ours {ours_rps:.0f} requests/s, bare httpx {bare_rps:.0f} requests/s")
    summary = {
        "ours_rps": round(ours_rps, 1),
        "bare_rps": round(bare_rps, 1),
        "ratio": round(ours_rps / bare_rps, 3),
        "feeds": args.feeds,
        "concurrency": args.concurrency,
        "hosts": len(origins),
        "rounds": args.rounds,
    }
    print(json.dumps(summary))
    return 0


async def bare_loop(requests: list[FetchRequest], settings: FetchSettings) -> None:
    """The same conditional GETs with nothing of ours: a semaphore and httpx."""
    limits = httpx.Limits(
        max_connections=settings.concurrency, max_keepalive_connections=settings.concurrency
    )
    headers = {"User-Agent": settings.user_agent, "Accept": ACCEPT}
    gate = asyncio.Semaphore(settings.concurrency)
    async with httpx.AsyncClient(limits=limits, headers=headers) as client:

        async def one(request: FetchRequest) -> int:
            async with gate:
                response = await client.get(request.url, headers={"If-None-Match": request.etag})
                return response.status_code

        _check(await asyncio.gather(*(one(request) for request in requests)))


async def _rps(refresh: Refresh, requests: list[FetchRequest]) -> float:
    started = time.perf_counter()
    await refresh(requests)
    return len(requests) / (time.perf_counter() - started)


def _check(statuses: object) -> None:
    seen = set(statuses)  # type: ignore[call-overload]
    if seen != {304}:
        raise SystemExit(f"expected every feed to answer 304, got {sorted(map(str, seen))}")


def _etag(n: int) -> str:
    return f'"v{n}"'


# --- the feed server (run in its own process with --serve) ----------------------------


class _FeedProtocol(asyncio.Protocol):
    """HTTP/1.1 with keep-alive, GET only: 304 for a matching If-None-Match, else the feed."""

    def __init__(self) -> None:
        self._buffer = b""
        self._transport: asyncio.Transport | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        assert isinstance(transport, asyncio.Transport)
        self._transport = transport

    def data_received(self, data: bytes) -> None:
        self._buffer += data
        while (end := self._buffer.find(b"\r\n\r\n")) >= 0:
            head, self._buffer = self._buffer[:end], self._buffer[end + 4 :]
            assert self._transport is not None
            self._transport.write(_reply(head))


def _reply(head: bytes) -> bytes:
    request_line, *header_lines = head.split(b"\r\n")
    path = request_line.split(b" ")[1].decode()
    number = path.rsplit("/", 1)[-1]
    etag = _etag(int(number) if number.isdigit() else 0).encode()
    sent = b""
    for line in header_lines:
        name, _, value = line.partition(b":")
        if name.strip().lower() == b"if-none-match":
            sent = value.strip()
    date = format_datetime(datetime.now(UTC), usegmt=True).encode()
    if sent == etag:
        return b"HTTP/1.1 304 Not Modified\r\nDate: %s\r\nETag: %s\r\n\r\n" % (date, etag)
    body = b'<?xml version="1.0"?><rss version="2.0"><channel><title>%s</title></channel></rss>'
    body %= etag
    return (
        b"HTTP/1.1 200 OK\r\nDate: %s\r\nETag: %s\r\nContent-Type: application/rss+xml\r\n"
        b"Content-Length: %d\r\n\r\n%s" % (date, etag, len(body), body)
    )


async def serve(hosts: int) -> None:
    loop = asyncio.get_running_loop()
    servers = [
        await loop.create_server(_FeedProtocol, f"127.0.0.{2 + n}", 0, backlog=1024)
        for n in range(hosts)
    ]
    origins = []
    for server in servers:
        host, port = server.sockets[0].getsockname()[:2]
        origins.append(f"http://{host}:{port}")
    print(json.dumps(origins), flush=True)
    await asyncio.Event().wait()  # until the parent terminates us


if __name__ == "__main__":
    sys.exit(main())
