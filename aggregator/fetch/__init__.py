"""Fetch stage: poll feed URLs over HTTP, politely and defensively, and hand back raw bodies.

First stage of the pipeline (fetch -> parse -> store ...); the next-check policy that
reads its results is `aggregator.schedule`.

    poller.py      polling, fetch_all: one client per cycle, redirects followed hop by hop
    politeness.py  the global and per-host limits, host pauses within a cycle
    guard.py       http(s) only; addresses checked after DNS, connections pinned to them
    transport.py   the httpx transport over httpcore's pool and the guard's network backend
    body.py        the body streamed under a size cap, gzip/deflate inflated under it too
    failures.py    httpx's exceptions and HTTP error statuses as readable FetchErrors
    hints.py       what a response says about when to come back (Retry-After, max-age...)
"""

from aggregator.fetch.poller import ACCEPT, DEFERRED, fetch_all, polling

__all__ = ["ACCEPT", "DEFERRED", "fetch_all", "polling"]
