"""Polling many sources in one cycle: one client, redirects followed and checked hop by hop.

`fetch_all`, and the `fetch` that `polling` yields, never raise for one source's
failure: each failure becomes a FetchResult with a stable `error_code`, and a poll its
host asked us to hold back comes back unrequested with the code DEFERRED.
"""

from __future__ import annotations

import asyncio
import hashlib
import logging
import time
from collections.abc import AsyncIterator, Callable, Coroutine, Sequence
from contextlib import asynccontextmanager
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

import httpx

from aggregator.errors import FetchError
from aggregator.fetch import failures, guard
from aggregator.fetch import transport as transports
from aggregator.fetch.body import ACCEPT_ENCODING, drain, read_body
from aggregator.fetch.guard import AddressPolicy, Guard, Resolve, checked_url, parse_networks
from aggregator.fetch.politeness import Politeness
from aggregator.settings import FetchSettings
from aggregator.types import FetchRequest, FetchResult

logger = logging.getLogger(__name__)

ACCEPT = (
    "application/rss+xml, application/atom+xml, application/feed+json, "
    "application/rdf+xml;q=0.9, application/xml;q=0.9, text/xml;q=0.9, "
    "application/json;q=0.8, */*;q=0.5"
)
DEFERRED = "deferred"  # error_code of a poll not sent because its host asked for a pause

_REDIRECTS = frozenset({301, 302, 303, 307, 308})
_PERMANENT_REDIRECTS = frozenset({301, 308})


def _utc_now() -> datetime:
    return datetime.now(UTC)


async def fetch_all(
    requests: Sequence[FetchRequest],
    settings: FetchSettings,
    *,
    transport: httpx.AsyncBaseTransport | None = None,
    now: Callable[[], datetime] = _utc_now,
    resolve: Resolve | None = None,
) -> list[FetchResult]:
    """Poll every source concurrently and return one result per request, in order
    (see `polling`)."""
    if not requests:
        return []
    async with polling(settings, transport=transport, now=now, resolve=resolve) as fetch:
        return list(await asyncio.gather(*(fetch(request) for request in requests)))


@asynccontextmanager
async def polling(
    settings: FetchSettings,
    *,
    transport: httpx.AsyncBaseTransport | None = None,
    now: Callable[[], datetime] = _utc_now,
    resolve: Resolve | None = None,
) -> AsyncIterator[Callable[[FetchRequest], Coroutine[Any, Any, FetchResult]]]:
    """`fetch(request)` for as many polls as the caller starts, side by side.

    One client is shared by all polls; at most `settings.concurrency` polls are in
    flight, and at most `settings.per_host_concurrency` to one host. Unless private
    networks are allowed, every hop's host is resolved (by `resolve`, default the
    system's resolver) and refused when an address is not public; connections then go
    to the checked addresses only. A `transport` (tests) replaces the network.
    """
    address_guard = _guard(settings, resolve)
    politeness = Politeness(
        settings.concurrency,
        settings.per_host_concurrency,
        pause_fallback_s=settings.default_interval,
        pause_cap_s=settings.max_interval,
    )
    limits = httpx.Limits(
        max_connections=settings.concurrency, max_keepalive_connections=settings.concurrency
    )
    network = transport or transports.for_cycle(limits, address_guard)
    async with _client(settings, network) as client:
        yield _Poller(client, settings, politeness, address_guard, now).fetch


def _guard(settings: FetchSettings, resolve: Resolve | None) -> Guard | None:
    if settings.allow_private_networks:
        return None
    allowed = parse_networks(settings.allowed_networks)
    # guard.system_resolve is looked up at each call so that a test can stand in for DNS.
    return Guard(AddressPolicy(allowed), resolve or guard.system_resolve)


def _client(settings: FetchSettings, transport: httpx.AsyncBaseTransport) -> httpx.AsyncClient:
    return httpx.AsyncClient(
        transport=transport,
        headers={
            "User-Agent": settings.user_agent,
            "Accept": ACCEPT,
            "Accept-Encoding": ACCEPT_ENCODING,
        },
        timeout=httpx.Timeout(
            connect=settings.timeout_connect,
            read=settings.timeout_read,
            write=settings.timeout_read,
            pool=settings.timeout_total,
        ),
        # Redirects are followed by hand so that every hop is checked and counted.
        follow_redirects=False,
    )


@dataclass
class _Trail:
    """How far one poll got, updated hop by hop so that a failure can report it."""

    url: str
    status: int | None = None
    permanent_redirect: str | None = None


@dataclass(frozen=True)
class _Answer:
    """The final, non-redirect response of a poll; `body` is read only for 2xx."""

    status: int
    headers: dict[str, str]
    body: bytes | None


class _Poller:
    """Polls one source at a time through the shared client, within the shared limits."""

    def __init__(
        self,
        client: httpx.AsyncClient,
        settings: FetchSettings,
        politeness: Politeness,
        guard: Guard | None,
        now: Callable[[], datetime],
    ) -> None:
        self._client = client
        self._settings = settings
        self._politeness = politeness
        self._guard = guard
        self._now = now

    async def fetch(self, request: FetchRequest) -> FetchResult:
        trail = _Trail(request.url)
        fetched_at, started = self._now(), time.perf_counter()
        try:
            url = checked_url(request.url)
            host = url.host
            async with self._politeness.slot(host):
                # The clock starts once we hold a slot: queueing is not the server's fault.
                fetched_at, started = self._now(), time.perf_counter()
                until = self._politeness.paused_until(host)
                if until is not None:
                    return _deferred(request, fetched_at, host, until)
                answer = await self._poll(request, url, trail)
                self._politeness.note(host, answer.status, answer.headers, fetched_at)
        except FetchError as exc:
            return _failure(request, trail, fetched_at, started, exc.code, exc.reason)
        except Exception as exc:  # a bug must not take the other sources down with it
            logger.exception("unexpected error while fetching %s", request.url)
            message = f"unexpected {type(exc).__name__}: {exc}; this is a bug, please report it"
            return _failure(request, trail, fetched_at, started, "internal", message)
        return _success(request, trail, fetched_at, started, answer)

    async def _poll(self, request: FetchRequest, url: httpx.URL, trail: _Trail) -> _Answer:
        try:
            async with asyncio.timeout(self._settings.timeout_total):
                return await self._follow(request, url, trail)
        except TimeoutError as exc:
            raise failures.total_timeout(trail.url, self._settings) from exc

    async def _follow(self, request: FetchRequest, url: httpx.URL, trail: _Trail) -> _Answer:
        for hop in range(self._settings.max_redirects + 1):
            if hop:
                url = checked_url(trail.url)
            if self._guard is not None:
                port = url.port or (443 if url.scheme == "https" else 80)
                await self._guard.addresses(url.host, port)
            with failures.translated(trail.url, self._settings):
                async with self._open(url, request) as response:
                    trail.status = response.status_code
                    location = _redirect_target(response, url)
                    if location is None:
                        return await self._answer(response, url)
                    await drain(response)
            if hop == 0 and response.status_code in _PERMANENT_REDIRECTS:
                trail.permanent_redirect = location
            trail.url = location
        trail.permanent_redirect = None  # nothing to adopt from a failed poll
        raise failures.too_many_redirects(trail.url, self._settings)

    @asynccontextmanager
    async def _open(self, url: httpx.URL, request: FetchRequest) -> AsyncIterator[httpx.Response]:
        outgoing = self._client.build_request("GET", url, headers=_conditional_headers(request))
        response = await self._client.send(outgoing, stream=True)
        try:
            yield response
        finally:
            await response.aclose()

    async def _answer(self, response: httpx.Response, url: httpx.URL) -> _Answer:
        headers = _plain_headers(response.headers)
        if not 200 <= response.status_code < 300:
            await drain(response)
            return _Answer(response.status_code, headers, None)
        body = await read_body(response, self._settings.max_body_bytes, str(url))
        return _Answer(response.status_code, headers, body)


def _conditional_headers(request: FetchRequest) -> dict[str, str]:
    headers = {}
    # Stored validators came from a server; skip any that could not be sent back verbatim.
    if request.etag and _sendable(request.etag):
        headers["If-None-Match"] = request.etag
    if request.last_modified and _sendable(request.last_modified):
        headers["If-Modified-Since"] = request.last_modified
    return headers


def _sendable(value: str) -> bool:
    return value.isascii() and value.isprintable()


def _redirect_target(response: httpx.Response, url: httpx.URL) -> str | None:
    """The absolute URL a redirect points to, or None when the response is no redirect."""
    if response.status_code not in _REDIRECTS:
        return None
    location = response.headers.get("location", "").strip()
    try:
        target = url.join(location) if location else None
    except httpx.InvalidURL:
        target = None
    if target is None or target.scheme not in ("http", "https"):
        raise failures.bad_redirect(str(url), response.status_code, location)
    return str(target)


def _plain_headers(headers: httpx.Headers) -> dict[str, str]:
    # The body we return is decoded, so the headers describing its encoding no longer apply.
    return {
        name.lower(): value
        for name, value in headers.items()
        if name.lower() not in ("content-encoding", "content-length")
    }


def _deferred(request: FetchRequest, at: datetime, host: str, until: datetime) -> FetchResult:
    message = (
        f"not requested: {host} showed a host-wide rate limit and asked us to wait until "
        f"{until:%Y-%m-%d %H:%M:%S} UTC; every source on it waits till then"
    )
    return FetchResult(
        request=request,
        fetched_at=at,
        status=None,
        final_url=request.url,
        etag=request.etag,
        last_modified=request.last_modified,
        body_hash=request.body_hash,
        error_code=DEFERRED,
        error=message,
    )


def _failure(
    request: FetchRequest,
    trail: _Trail,
    fetched_at: datetime,
    started: float,
    code: str,
    message: str,
    headers: dict[str, str] | None = None,
) -> FetchResult:
    # The old validators are kept so that storing this result never forgets them.
    return FetchResult(
        request=request,
        fetched_at=fetched_at,
        status=trail.status,
        final_url=trail.url,
        headers=headers or {},
        etag=request.etag,
        last_modified=request.last_modified,
        body_hash=request.body_hash,
        error_code=code,
        error=message,
        duration_s=time.perf_counter() - started,
    )


def _success(
    request: FetchRequest, trail: _Trail, fetched_at: datetime, started: float, answer: _Answer
) -> FetchResult:
    if answer.status == 304:
        return FetchResult(
            request=request,
            fetched_at=fetched_at,
            status=304,
            final_url=trail.url,
            headers=answer.headers,
            etag=answer.headers.get("etag") or request.etag,
            last_modified=answer.headers.get("last-modified") or request.last_modified,
            body_hash=request.body_hash,
            not_modified=True,
            duration_s=time.perf_counter() - started,
            permanent_redirect=trail.permanent_redirect,
        )
    if answer.body is None:
        code, message = failures.http_error(answer.status, answer.headers)
        return _failure(request, trail, fetched_at, started, code, message, answer.headers)
    body_hash = hashlib.sha256(answer.body).hexdigest()
    # A server without validators sends the same bytes again: nothing to parse.
    unchanged = body_hash == request.body_hash
    return FetchResult(
        request=request,
        fetched_at=fetched_at,
        status=answer.status,
        final_url=trail.url,
        headers=answer.headers,
        body=None if unchanged else answer.body,
        etag=answer.headers.get("etag"),
        last_modified=answer.headers.get("last-modified"),
        body_hash=body_hash,
        not_modified=unchanged,
        duration_s=time.perf_counter() - started,
        permanent_redirect=trail.permanent_redirect,
    )
