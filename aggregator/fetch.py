"""Fetch stage: poll feed URLs over HTTP and hand back raw bodies with their validators.

First stage of the pipeline (fetch -> parse -> store ...). `fetch_all` never raises for
one source's failure: each failure becomes a FetchResult with a stable `error_code`.
"""

from __future__ import annotations

import asyncio
import hashlib
import ipaddress
import logging
import socket
import ssl
import time
import zlib
from collections.abc import AsyncIterator, Callable, Iterator, Sequence
from contextlib import asynccontextmanager, contextmanager
from dataclasses import dataclass
from datetime import UTC, datetime

import httpx

from aggregator.errors import FetchError
from aggregator.settings import FetchSettings
from aggregator.types import FetchRequest, FetchResult

logger = logging.getLogger(__name__)

ACCEPT = (
    "application/rss+xml, application/atom+xml, application/feed+json, "
    "application/rdf+xml;q=0.9, application/xml;q=0.9, text/xml;q=0.9, "
    "application/json;q=0.8, */*;q=0.5"
)
# We decode bodies ourselves (to cap the decoded size), so only ask for what we can decode.
ACCEPT_ENCODING = "gzip, deflate"

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
) -> list[FetchResult]:
    """Poll every source concurrently and return one result per request, in order.

    One client is shared by all polls; at most `settings.concurrency` polls are in
    flight, and at most `settings.per_host_concurrency` to one host. The host is that of
    the source's URL: a redirect to another host stays in the slot it started in.
    """
    if not requests:
        return []
    limits = _Limits(settings.concurrency, settings.per_host_concurrency)
    async with _client(settings, transport) as client:
        poller = _Poller(client, settings, limits, now)
        return list(await asyncio.gather(*(poller.fetch(request) for request in requests)))


def _client(
    settings: FetchSettings, transport: httpx.AsyncBaseTransport | None
) -> httpx.AsyncClient:
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
        limits=httpx.Limits(
            max_connections=settings.concurrency,
            max_keepalive_connections=settings.concurrency,
        ),
        # Redirects are followed by hand so that every hop is checked and counted.
        follow_redirects=False,
    )


class _Limits:
    """The global and per-host concurrency limits, as asyncio semaphores."""

    def __init__(self, concurrency: int, per_host: int) -> None:
        self._global = asyncio.Semaphore(max(1, concurrency))
        self._per_host = max(1, per_host)
        self._hosts: dict[str, asyncio.Semaphore] = {}

    @asynccontextmanager
    async def slot(self, host: str) -> AsyncIterator[None]:
        host_limit = self._hosts.setdefault(host, asyncio.Semaphore(self._per_host))
        # Host first: polls queued behind a busy host must not hold global slots.
        async with host_limit, self._global:
            yield


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
        limits: _Limits,
        now: Callable[[], datetime],
    ) -> None:
        self._client = client
        self._settings = settings
        self._limits = limits
        self._now = now

    async def fetch(self, request: FetchRequest) -> FetchResult:
        trail = _Trail(request.url)
        fetched_at, started = self._now(), time.perf_counter()
        try:
            url = _checked_url(request.url)
            async with self._limits.slot(url.host):
                # The clock starts once we hold a slot: queueing is not the server's fault.
                fetched_at, started = self._now(), time.perf_counter()
                answer = await self._poll(request, trail)
        except FetchError as exc:
            return _failure(request, trail, fetched_at, started, exc.code, exc.reason)
        except Exception as exc:  # a bug must not take the other sources down with it
            logger.exception("unexpected error while fetching %s", request.url)
            message = f"unexpected {type(exc).__name__}: {exc}; this is a bug, please report it"
            return _failure(request, trail, fetched_at, started, "internal", message)
        return _success(request, trail, fetched_at, started, answer)

    async def _poll(self, request: FetchRequest, trail: _Trail) -> _Answer:
        total = self._settings.timeout_total
        try:
            async with asyncio.timeout(total):
                with _translated(trail, self._settings):
                    return await self._follow(request, trail)
        except TimeoutError as exc:
            raise FetchError(
                f"the fetch took longer than {total:g} s in all (fetch.timeout_total); "
                "the server is too slow or keeps the connection dribbling. Polling retries later",
                url=trail.url,
                code="timeout",
            ) from exc

    async def _follow(self, request: FetchRequest, trail: _Trail) -> _Answer:
        for hop in range(self._settings.max_redirects + 1):
            url = _checked_url(trail.url)
            if not self._settings.allow_private_networks:
                await _refuse_private_address(url)
            async with self._open(url, request) as response:
                trail.status = response.status_code
                location = _redirect_target(response, url)
                if location is None:
                    return await self._answer(response, url)
            if hop == 0 and response.status_code in _PERMANENT_REDIRECTS:
                trail.permanent_redirect = location
            trail.url = location
        raise FetchError(
            f"more than {self._settings.max_redirects} redirects (fetch.max_redirects), "
            "probably a redirect loop; open the URL in a browser and fix the source's url",
            url=trail.url,
            code="too_many_redirects",
        )

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
            return _Answer(response.status_code, headers, None)
        body = await _read_body(response, self._settings.max_body_bytes, str(url))
        return _Answer(response.status_code, headers, body)


def _checked_url(raw: str) -> httpx.URL:
    try:
        url = httpx.URL(raw)
    except httpx.InvalidURL as exc:
        raise FetchError(
            f"the URL is not valid ({exc}); fix the source's url", url=raw, code="bad_url"
        ) from exc
    if url.scheme not in ("http", "https"):
        scheme = f"'{url.scheme}:'" if url.scheme else "a URL without a scheme"
        raise FetchError(
            f"only http and https URLs can be polled, not {scheme}; fix the source's url",
            url=raw,
            code="bad_url",
        )
    if not url.host:
        raise FetchError("the URL has no host name; fix the source's url", url=raw, code="bad_url")
    return url


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
        raise FetchError(
            f"the server answered HTTP {response.status_code} but with an unusable Location "
            f"header ({location!r}); tell the site's operator or fix the source's url",
            url=str(url),
            code="bad_redirect",
        )
    return str(target)


async def _refuse_private_address(url: httpx.URL) -> None:
    """Refuse hosts that resolve to loopback, private, link-local or other non-public addresses.

    httpx resolves the name again when it connects, so a DNS server that changes its
    answer in between is not stopped here; pinning the connection to the checked
    address (a custom transport) is left for the hardening work.
    """
    host = url.raw_host.decode("ascii")
    port = url.port or (443 if url.scheme == "https" else 80)
    try:
        infos = await asyncio.get_running_loop().getaddrinfo(host, port, type=socket.SOCK_STREAM)
    except socket.gaierror as exc:
        raise FetchError(
            f"the host name {host!r} does not resolve ({exc.strerror}); check the URL for typos",
            url=str(url),
            code="dns",
        ) from exc
    for *_, sockaddr in infos:
        address = ipaddress.ip_address(sockaddr[0])
        if not _is_public(address):
            raise FetchError(
                f"{host} resolves to {address}, a private or local address, which is refused; "
                "set fetch.allow_private_networks = true if this source is meant to be on "
                "your own network",
                url=str(url),
                code="private_address",
            )


def _is_public(address: ipaddress.IPv4Address | ipaddress.IPv6Address) -> bool:
    if isinstance(address, ipaddress.IPv6Address) and address.ipv4_mapped is not None:
        address = address.ipv4_mapped
    return address.is_global and not address.is_multicast


def _plain_headers(headers: httpx.Headers) -> dict[str, str]:
    # The body we return is decoded, so the headers describing its encoding no longer apply.
    return {
        name.lower(): value
        for name, value in headers.items()
        if name.lower() not in ("content-encoding", "content-length")
    }


async def _read_body(response: httpx.Response, limit: int, url: str) -> bytes:
    if response.is_stream_consumed:
        # httpx.MockTransport hands over responses it has already read (and decoded).
        if len(response.content) > limit:
            raise _too_large(limit, url)
        return response.content
    inflater = _Inflater(_content_coding(response, url), limit, url)
    declared = response.headers.get("content-length", "")
    if inflater.coding == "identity" and declared.isdigit() and int(declared) > limit:
        raise _too_large(limit, url)
    parts = [inflater.feed(chunk) async for chunk in response.aiter_raw()]
    return b"".join(parts)


def _content_coding(response: httpx.Response, url: str) -> str:
    codings = [c.strip().lower() for c in response.headers.get("content-encoding", "").split(",")]
    codings = [c for c in codings if c and c != "identity"]
    if not codings:
        return "identity"
    if len(codings) == 1 and codings[0] in ("gzip", "x-gzip", "deflate"):
        return "deflate" if codings[0] == "deflate" else "gzip"
    raise FetchError(
        f"the body is compressed as {', '.join(codings)!r}, which we did not ask for and cannot "
        "read; tell the site's operator",
        url=url,
        code="bad_encoding",
    )


class _Inflater:
    """Undoes gzip or deflate piece by piece, never producing more than `limit` bytes.

    Counting decoded bytes (not the bytes on the wire) is what refuses a gzip bomb,
    and the `max_length` of each step keeps even one chunk of it from filling memory.
    """

    def __init__(self, coding: str, limit: int, url: str) -> None:
        self.coding = coding
        self._limit = limit
        self._url = url
        self._size = 0
        self._zlib = zlib.decompressobj(16 + zlib.MAX_WBITS) if coding == "gzip" else None

    def feed(self, data: bytes) -> bytes:
        if self.coding == "identity":
            return self._counted(data)
        if self._zlib is None:
            self._zlib = zlib.decompressobj(_deflate_wbits(data))
        parts = []
        try:
            while data:
                # One byte more than the room left is enough to know the cap is passed.
                piece = self._zlib.decompress(data, self._limit - self._size + 1)
                parts.append(self._counted(piece))
                data = self._zlib.unconsumed_tail
        except zlib.error as exc:
            raise FetchError(
                f"the {self.coding}-compressed body is corrupt ({exc}); tell the site's operator",
                url=self._url,
                code="bad_encoding",
            ) from exc
        return b"".join(parts)

    def _counted(self, data: bytes) -> bytes:
        self._size += len(data)
        if self._size > self._limit:
            raise _too_large(self._limit, self._url)
        return data


def _deflate_wbits(head: bytes) -> int:
    # "deflate" should mean a zlib stream, but many servers send raw deflate instead.
    is_zlib = len(head) >= 2 and head[0] & 0x0F == 8 and ((head[0] << 8) | head[1]) % 31 == 0
    return zlib.MAX_WBITS if is_zlib else -zlib.MAX_WBITS


def _too_large(limit: int, url: str) -> FetchError:
    return FetchError(
        f"the body is larger than {limit} bytes (fetch.max_body_bytes) and was not read to "
        "the end; raise the limit if this feed is really that big",
        url=url,
        code="too_large",
    )


@contextmanager
def _translated(trail: _Trail, settings: FetchSettings) -> Iterator[None]:
    """Turn httpx's exceptions into FetchErrors with a stable code and a readable message."""
    try:
        yield
    except httpx.ConnectTimeout as exc:
        raise _error(
            trail,
            "timeout",
            f"no connection within {settings.timeout_connect:g} s (fetch.timeout_connect); "
            "the server may be down or dropping our packets. Polling retries later",
        ) from exc
    except httpx.TimeoutException as exc:
        raise _error(
            trail,
            "timeout",
            f"the server sent nothing for {settings.timeout_read:g} s (fetch.timeout_read); "
            "it may be overloaded. Polling retries later",
        ) from exc
    except httpx.ConnectError as exc:
        raise _connect_error(trail, exc) from exc
    except (httpx.UnsupportedProtocol, httpx.InvalidURL) as exc:
        raise _error(trail, "bad_url", f"the URL cannot be requested ({exc}); fix it") from exc
    except httpx.ProtocolError as exc:
        raise _error(
            trail,
            "protocol",
            f"the server broke the HTTP exchange ({exc or type(exc).__name__}); "
            "usually temporary, polling retries later",
        ) from exc
    except (httpx.HTTPError, httpx.StreamError) as exc:
        raise _error(
            trail,
            "network",
            f"network error ({exc or type(exc).__name__}); polling retries later",
        ) from exc


def _connect_error(trail: _Trail, exc: httpx.ConnectError) -> FetchError:
    causes = list(_causes(exc))
    if any(isinstance(cause, ssl.SSLError) for cause in causes):
        message = (
            f"the TLS handshake failed ({exc}); the site's certificate may be invalid or "
            "expired. Tell the site's operator"
        )
        return _error(trail, "tls", message)
    if any(isinstance(cause, socket.gaierror) for cause in causes):
        message = f"the host name does not resolve ({exc}); check the URL for typos"
        return _error(trail, "dns", message)
    if any(isinstance(cause, ConnectionRefusedError) for cause in causes):
        reason = "the connection was refused: nothing listens on that port"
    else:
        reason = f"could not connect ({causes[-1]})"  # the innermost cause names the OS error
    message = f"{reason}; the server may be down. Polling retries later"
    return _error(trail, "connect", message)


def _causes(exc: BaseException) -> Iterator[BaseException]:
    seen: BaseException | None = exc
    while seen is not None:
        yield seen
        seen = seen.__cause__ or seen.__context__


def _error(trail: _Trail, code: str, message: str) -> FetchError:
    return FetchError(message, url=trail.url, code=code)


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
        code, message = _http_error(answer.status)
        return _failure(request, trail, fetched_at, started, code, message, answer.headers)
    body_hash = hashlib.sha256(answer.body).hexdigest()
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


def _http_error(status: int) -> tuple[str, str]:
    code = f"http_{status}"
    if status in (401, 403):
        return code, (
            f"the server refuses access (HTTP {status}); the feed may need a login or block "
            "our User-Agent. Check the URL in a browser"
        )
    if status in (404, 410):
        return code, (f"the feed is not there (HTTP {status}); check the URL or remove the source")
    if status == 429:
        return code, (
            "the server asks us to slow down (HTTP 429); give this source a longer interval"
        )
    if status >= 500:
        return code, (
            f"the server failed (HTTP {status}); usually temporary, polling retries later"
        )
    return code, f"unexpected answer HTTP {status}; check the URL in a browser"
