"""Serve stage: the ASGI app answering for published documents, plus health checks.

The worker renders documents when a timeline changes and stores them; this app only
looks them up by path and answers with validators, 304s, HEAD and gzip.
"""

from __future__ import annotations

import gzip
import re
from collections import OrderedDict
from collections.abc import Callable
from datetime import datetime
from email.utils import format_datetime, parsedate_to_datetime

from starlette.applications import Starlette
from starlette.concurrency import run_in_threadpool
from starlette.datastructures import Headers
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from aggregator.errors import StoreError
from aggregator.publish import INDEX_PATH, utc
from aggregator.types import Document

Lookup = Callable[[str], Document | None]

CACHE_CONTROL = "public, max-age=300"
GZIP_MIN_BYTES = 512  # below this the gzip framing costs more than it saves
GZIP_CACHE_ENTRIES = 256
# Pages carry no script; the policy makes sure no published summary can add one.
HTML_POLICY = (
    "default-src 'none'; style-src 'unsafe-inline'; img-src http: https: data:; "
    "base-uri 'none'; form-action 'none'; frame-ancestors 'none'"
)
NOT_FOUND_PAGE = (
    b'<!DOCTYPE html>\n<html lang="en"><meta charset="utf-8"><title>Not found</title>\n'
    b'<h1>Not found</h1><p>Nothing is published at this address. <a href="/">All timelines</a></p>\n'
)
_ENTITY_TAG = re.compile(r'(?:W/)?"([^"]*)"')
_NO_STORE = {"Cache-Control": "no-store"}


PROMETHEUS_TYPE = "text/plain; version=0.0.4; charset=utf-8"


def create_app(
    lookup: Lookup,
    *,
    ready: Callable[[], bool] | None = None,
    metrics: Callable[[], bytes] | None = None,
) -> Starlette:
    """The app; `lookup(path)` is blocking (it may query the database) and runs in a thread.

    `metrics()` renders the Prometheus text exposition served at /metrics.
    """
    compressed = _GzipCache(GZIP_CACHE_ENTRIES)

    async def document(request: Request) -> Response:
        path = request.url.path
        if path == "/":
            path = INDEX_PATH
        try:
            doc = await run_in_threadpool(lookup, path)
        except StoreError:
            return _plain(request, 503, "store unavailable", {"Retry-After": "30", **_NO_STORE})
        if doc is None:
            headers = {"Cache-Control": "no-cache", "X-Content-Type-Options": "nosniff"}
            return _send(request, 404, NOT_FOUND_PAGE, "text/html; charset=utf-8", headers)
        use_gzip = len(doc.body) >= GZIP_MIN_BYTES and accepts_gzip(request.headers)
        headers = _validators(doc, weak=use_gzip)
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
            is_ready = True if ready is None else await run_in_threadpool(ready)
        except Exception:  # a failing readiness probe means not ready, never a 500
            is_ready = False
        if is_ready:
            return _plain(request, 200, "ready", _NO_STORE)
        return _plain(request, 503, "not ready", _NO_STORE)

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


def not_modified(headers: Headers, doc: Document) -> bool:
    """RFC 9110 13.1: If-None-Match (weak comparison) decides; else If-Modified-Since."""
    if_none_match = headers.get("if-none-match")
    if if_none_match is not None:
        if if_none_match.strip() == "*":
            return True
        ours = _opaque_tag(doc.etag)
        return any(tag == ours for tag in _ENTITY_TAG.findall(if_none_match))
    since = _http_date(headers.get("if-modified-since"))
    return since is not None and utc(doc.updated).replace(microsecond=0) <= since


def _validators(doc: Document, *, weak: bool) -> dict[str, str]:
    # A gzipped body is a different representation: its tag turns weak, as nginx does,
    # and weak comparison still matches it against the strong tag.
    etag = f'"{_opaque_tag(doc.etag)}"'
    headers = {
        "ETag": f"W/{etag}" if weak else etag,
        "Last-Modified": format_datetime(utc(doc.updated), usegmt=True),
        "Cache-Control": CACHE_CONTROL,
        "Vary": "Accept-Encoding",
        "X-Content-Type-Options": "nosniff",
    }
    if doc.content_type.startswith("text/html"):
        headers["Content-Security-Policy"] = HTML_POLICY
    return headers


def _opaque_tag(etag: str) -> str:
    match = _ENTITY_TAG.fullmatch(etag.strip())
    return match.group(1) if match else etag.strip().strip('"')


def _http_date(value: str | None) -> datetime | None:
    if not value:
        return None
    try:
        return utc(parsedate_to_datetime(value))
    except (TypeError, ValueError, IndexError):
        return None


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
