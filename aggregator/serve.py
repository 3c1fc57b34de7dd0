"""Serve stage: the ASGI app answering for published documents, plus health checks.

The worker renders documents when a timeline changes and stores them; this app only
looks them up by path and answers with validators, 304s, HEAD and gzip. Looked-up
documents are kept in memory for a second or so, so a feed polled by thousands of
readers costs one database query per second, not one per request.
"""

from __future__ import annotations

import asyncio
import gzip
import json
import re
import time
from collections import OrderedDict
from collections.abc import Callable
from datetime import UTC, datetime
from email.utils import format_datetime, parsedate_to_datetime

from starlette.applications import Starlette
from starlette.concurrency import run_in_threadpool
from starlette.datastructures import Headers
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from aggregator.errors import StoreError
from aggregator.health import Readiness
from aggregator.publish import INDEX_PATH, utc
from aggregator.types import Document

Lookup = Callable[[str], Document | None]

DEFAULT_MAX_AGE = 300
GZIP_MIN_BYTES = 512  # below this the gzip framing costs more than it saves
GZIP_CACHE_ENTRIES = 256
DOCUMENT_CACHE_ENTRIES = 1024
FRESH_FOR_SECONDS = 1.0  # how stale a served document may be after the worker replaced it
FEED_TYPES = ("application/atom+xml", "application/rss+xml", "application/feed+json")
# Pages carry no script; the policy makes sure no published summary can add one.
HTML_POLICY = (
    "default-src 'none'; style-src 'unsafe-inline'; img-src http: https: data:; "
    "base-uri 'none'; form-action 'none'; frame-ancestors 'none'"
)
NOT_FOUND_PAGE = (
    b'<!DOCTYPE html>\n<html lang="en"><meta charset="utf-8"><title>Not found</title>\n'
    b'<h1>Not found</h1><p>Nothing is published at this address. <a href="/">All timelines</a></p>\n'
)
MAX_HTTP_DATE_CHARS = 64  # "Sunday, 06-Nov-1994 08:49:37 GMT" and its kin are ~30
_ENTITY_TAG = re.compile(r'(?:W/)?"([^"]*)"')
_NO_STORE = {"Cache-Control": "no-store"}


PROMETHEUS_TYPE = "text/plain; version=0.0.4; charset=utf-8"


def create_app(
    lookup: Lookup,
    *,
    ready: Callable[[], bool | Readiness] | None = None,
    metrics: Callable[[], bytes] | None = None,
    max_age: int = DEFAULT_MAX_AGE,
    fresh_for: float = FRESH_FOR_SECONDS,
    hub: str = "",
    base_url: str = "",
) -> Starlette:
    """The app; `lookup(path)` is blocking (it may query the database) and runs in a thread.

    `ready()` answers /readyz: a `Readiness` (served as JSON, with each job's record)
    or a plain bool. `metrics()` renders the Prometheus text exposition served at /metrics. `max_age`
    is the Cache-Control lifetime readers may reuse a document for (the worker's cycle
    is a good value); `fresh_for` how many seconds a looked-up document is reused
    here (0 = look up every request). With `hub`, feeds carry WebSub's Link headers
    (rel="hub", and rel="self" under `base_url`).
    """
    documents = DocumentCache(lookup, fresh_for=fresh_for)
    compressed = _GzipCache(GZIP_CACHE_ENTRIES)
    cache_control = f"public, max-age={max(int(max_age), 0)}"

    async def document(request: Request) -> Response:
        path = request.url.path
        if path == "/":
            path = INDEX_PATH
        try:
            doc = await documents.get(path)
        except StoreError:
            return _plain(request, 503, "store unavailable", {"Retry-After": "30", **_NO_STORE})
        if doc is None:
            headers = {"Cache-Control": "no-cache", "X-Content-Type-Options": "nosniff"}
            return _send(request, 404, NOT_FOUND_PAGE, "text/html; charset=utf-8", headers)
        use_gzip = len(doc.body) >= GZIP_MIN_BYTES and accepts_gzip(request.headers)
        headers = _validators(doc, weak=use_gzip, cache_control=cache_control)
        if hub and doc.content_type.startswith(FEED_TYPES):
            headers["Link"] = _websub_links(hub, (base_url.rstrip("/") or _origin(request)) + path)
        if not_modified(request.headers, doc):
            return Response(status_code=304, headers=headers)
        body = doc.body
        if use_gzip:
            body = await compressed.get(doc)
            headers["Content-Encoding"] = "gzip"
        return _send(request, 200, body, doc.content_type, headers)

    async def healthz(request: Request) -> Response:
        return _plain(request, 200, "ok", _NO_STORE)

    async def readyz(request: Request) -> Response:
        try:
            answer = Readiness(True) if ready is None else await run_in_threadpool(ready)
        except Exception as exc:  # a failing readiness probe means not ready, never a 500
            answer = Readiness(False, (f"the readiness check failed: {type(exc).__name__}",))
        if not isinstance(answer, Readiness):
            answer = Readiness(answer, () if answer else ("not ready",))
        body = json.dumps(answer.as_json(), indent=1).encode()
        return _send(request, 200 if answer else 503, body, "application/json", _NO_STORE)

    async def metrics_page(request: Request) -> Response:
        if metrics is None:
            return _plain(request, 404, "metrics are not enabled", _NO_STORE)
        body = await run_in_threadpool(metrics)
        return Response(body, headers={**_NO_STORE, "Content-Type": PROMETHEUS_TYPE})

    routes = [
        Route("/healthz", healthz),
        Route("/metrics", metrics_page),
        Route("/readyz", readyz),
        Route("/{path:path}", document),
    ]
    return Starlette(routes=routes)


def accepts_gzip(headers: Headers) -> bool:
    """Whether Accept-Encoding allows gzip, honouring q=0 ("gzip;q=0", "*;q=0")."""
    qualities: dict[str, float] = {}
    for part in headers.get("accept-encoding", "").split(","):
        name, _, params = part.partition(";")
        quality = 1.0
        for param in params.split(";"):
            key, _, value = param.partition("=")
            if key.strip().lower() == "q":
                try:
                    quality = float(value)
                except ValueError:
                    quality = 0.0
        if name.strip():
            qualities[name.strip().lower()] = quality
    quality = qualities.get("gzip", qualities.get("x-gzip", qualities.get("*", 0.0)))
    return quality > 0


def not_modified(headers: Headers, doc: Document, *, now: datetime | None = None) -> bool:
    """RFC 9110 13.1: If-None-Match (weak comparison) decides; else If-Modified-Since.

    A validator that cannot be read, or a date later than `now`, is ignored: the
    client gets the whole document, never an error.
    """
    if_none_match = headers.get("if-none-match")
    if if_none_match is not None:
        if if_none_match.strip() == "*":
            return True
        ours = _opaque_tag(doc.etag)
        return any(tag == ours for tag in _ENTITY_TAG.findall(if_none_match))
    since = http_date(headers.get("if-modified-since"), now=now or datetime.now(UTC))
    return since is not None and utc(doc.updated).replace(microsecond=0) <= since


def _validators(doc: Document, *, weak: bool, cache_control: str) -> dict[str, str]:
    # A gzipped body is a different representation: its tag turns weak, as nginx does,
    # and weak comparison still matches it against the strong tag.
    etag = f'"{_opaque_tag(doc.etag)}"'
    headers = {
        "ETag": f"W/{etag}" if weak else etag,
        "Last-Modified": format_datetime(utc(doc.updated), usegmt=True),
        "Cache-Control": cache_control,
        "Vary": "Accept-Encoding",
        "X-Content-Type-Options": "nosniff",
    }
    if doc.content_type.startswith("text/html"):
        headers["Content-Security-Policy"] = HTML_POLICY
    return headers


def _websub_links(hub: str, topic: str) -> str:
    # WebSub 4: a publisher advertises the hub and the topic's canonical URL.
    return f'<{hub}>; rel="hub", <{topic}>; rel="self"'


def _origin(request: Request) -> str:
    return f"{request.url.scheme}://{request.url.netloc}"


def _opaque_tag(etag: str) -> str:
    match = _ENTITY_TAG.fullmatch(etag.strip())
    return match.group(1) if match else etag.strip().strip('"')


def http_date(value: str | None, *, now: datetime) -> datetime | None:
    """An HTTP-date as aware UTC, or None when it is not one a client could mean.

    Out-of-range years and offsets raise OverflowError deep in datetime (9999-12-31
    at -14:00 is past datetime.max in UTC); a date later than `now` is invalid too
    (RFC 7232 3.3), and a value longer than any date is not parsed at all.
    """
    if not value or len(value) > MAX_HTTP_DATE_CHARS:
        return None
    try:
        moment = utc(parsedate_to_datetime(value))
    except (TypeError, ValueError, IndexError, OverflowError):
        return None
    return moment if moment <= now else None


def _send(
    request: Request, status: int, body: bytes, content_type: str, headers: dict[str, str]
) -> Response:
    """A response whose HEAD form carries the GET's headers, Content-Length included."""
    if request.method == "HEAD":
        headers = {**headers, "Content-Length": str(len(body))}
        body = b""
    return Response(body, status_code=status, headers=headers, media_type=content_type)


def _plain(request: Request, status: int, text: str, headers: dict[str, str]) -> Response:
    return _send(request, status, text.encode(), "text/plain; charset=utf-8", headers)


class _GzipCache:
    """Compressed bodies by (path, etag): a popular feed is compressed once per version."""

    def __init__(self, entries: int) -> None:
        self._entries = entries
        self._bodies: OrderedDict[tuple[str, str], bytes] = OrderedDict()

    async def get(self, doc: Document) -> bytes:
        key = (doc.path, doc.etag)
        body = self._bodies.get(key)
        if body is None:
            body = await run_in_threadpool(gzip.compress, doc.body, 6, mtime=0)
            self._bodies[key] = body
            if len(self._bodies) > self._entries:
                self._bodies.popitem(last=False)
        else:
            self._bodies.move_to_end(key)
        return body


class DocumentCache:
    """Documents (and misses) by path, each looked up at most once per `fresh_for` seconds.

    Concurrent requests for a path whose entry has expired share one lookup, so a
    burst of readers never turns into a burst of database queries. Lookup errors
    are not kept: the next request tries again.
    """

    def __init__(
        self,
        lookup: Lookup,
        *,
        fresh_for: float,
        entries: int = DOCUMENT_CACHE_ENTRIES,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._lookup = lookup
        self._fresh_for = fresh_for
        self._entries = entries
        self._clock = clock
        self._found: OrderedDict[str, tuple[float, Document | None]] = OrderedDict()
        self._pending: dict[str, asyncio.Future[Document | None]] = {}

    async def get(self, path: str) -> Document | None:
        found = self._found.get(path)
        if found is not None and self._clock() - found[0] < self._fresh_for:
            return found[1]
        pending = self._pending.get(path)
        if pending is not None:
            return await asyncio.shield(pending)
        future: asyncio.Future[Document | None] = asyncio.get_running_loop().create_future()
        self._pending[path] = future
        try:
            doc = await run_in_threadpool(self._lookup, path)
        except BaseException as exc:
            future.set_exception(exc)
            future.exception()  # marks it retrieved when no other request waits on it
            raise
        finally:
            del self._pending[path]
        future.set_result(doc)
        if self._fresh_for > 0:
            self._remember(path, doc)
        return doc

    def _remember(self, path: str, doc: Document | None) -> None:
        self._found[path] = (self._clock(), doc)
        self._found.move_to_end(path)
        # Unknown paths are remembered too (a 404 flood stays off the database),
        # so the size is bounded.
        while len(self._found) > self._entries:
            self._found.popitem(last=False)
