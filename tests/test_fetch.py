"""Fetch stage against a real HTTP server on 127.0.0.1; MockTransport only for narrow cases."""

from __future__ import annotations

import asyncio
import gzip
import hashlib
import ipaddress
import socket
import zlib
from collections.abc import Iterable, Iterator
from datetime import UTC, datetime
from typing import Any

import httpx
import pytest
from httpserver import FeedServer, Request

from aggregator.fetch import DEFERRED, fetch_all, guard
from aggregator.settings import FetchSettings
from aggregator.types import FetchRequest, FetchResult

RSS = b"""<?xml version="1.0" encoding="utf-8"?>
<rss version="2.0"><channel><title>Outlet</title><link>http://outlet.test/</link>
<item><title>First</title><link>http://outlet.test/1</link><guid>one</guid></item>
</channel></rss>"""
ATOM = b"""<?xml version="1.0" encoding="utf-8"?>
<feed xmlns="http://www.w3.org/2005/Atom"><title>Outlet</title><id>urn:outlet</id>
<updated>2024-05-01T10:00:00Z</updated>
<entry><title>First</title><id>urn:one</id><updated>2024-05-01T10:00:00Z</updated></entry>
</feed>"""
RDF = b"""<?xml version="1.0"?>
<rdf:RDF xmlns:rdf="http://www.w3.org/1999/02/22-rdf-syntax-ns#" xmlns="http://purl.org/rss/1.0/">
<channel rdf:about="http://outlet.test/"><title>Outlet</title><link>http://outlet.test/</link>
<description>d</description></channel>
<item rdf:about="http://outlet.test/1"><title>First</title><link>http://outlet.test/1</link></item>
</rdf:RDF>"""
JSON_FEED = b"""{"version": "https://jsonfeed.org/version/1.1", "title": "Outlet",
"items": [{"id": "one", "url": "http://outlet.test/1", "title": "First"}]}"""


def settings(**overrides: Any) -> FetchSettings:
    # The test server lives on 127.0.0.1, which the SSRF guard refuses by default.
    values: dict[str, Any] = {"allow_private_networks": True, "timeout_total": 5.0, **overrides}
    return FetchSettings(**values)


def request(url: str, source_id: int = 1, **validators: str | None) -> FetchRequest:
    return FetchRequest(source_id=source_id, name=f"source {source_id}", url=url, **validators)


def fetch(
    *requests: FetchRequest,
    transport: httpx.AsyncBaseTransport | None = None,
    **overrides: Any,
) -> list[FetchResult]:
    return asyncio.run(fetch_all(requests, settings(**overrides), transport=transport))


def fetch_one(url: str, **overrides: Any) -> FetchResult:
    return fetch(request(url), **overrides)[0]


def free_port() -> int:
    """A port on 127.0.0.1 that nothing listens on (bound, then released)."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@pytest.fixture
def srv() -> Iterator[FeedServer]:
    with FeedServer() as server:
        yield server
    assert not server.errors, server.errors


# --- successful polls ----------------------------------------------------------------


@pytest.mark.parametrize(
    ("document", "content_type"),
    [
        (RSS, "application/rss+xml; charset=utf-8"),
        (ATOM, "application/atom+xml"),
        (RDF, "application/rdf+xml"),
        (JSON_FEED, "application/feed+json"),
    ],
    ids=["rss2", "atom", "rss1", "jsonfeed"],
)
def test_a_feed_comes_back_whole_with_its_validators(
    srv: FeedServer, document: bytes, content_type: str
) -> None:
    url = srv.serve_feed(
        "/feed", document, content_type, last_modified="Wed, 01 May 2024 10:00:00 GMT"
    )

    result = fetch_one(url)

    assert result.ok and result.status == 200 and not result.not_modified
    assert result.body == document
    assert result.headers["content-type"] == content_type
    assert result.body_hash == hashlib.sha256(document).hexdigest()
    assert result.etag and result.etag.startswith('"')
    assert result.last_modified == "Wed, 01 May 2024 10:00:00 GMT"
    assert result.final_url == url and result.permanent_redirect is None


def test_requests_name_us_and_ask_for_feed_types(srv: FeedServer) -> None:
    url = srv.serve_feed("/feed", RSS)

    fetch_one(url, user_agent="test-agent/1.0")

    [logged] = srv.requests
    assert logged.headers["user-agent"] == "test-agent/1.0"
    assert "application/rss+xml" in logged.headers["accept"]
    assert "application/atom+xml" in logged.headers["accept"]
    assert "if-none-match" not in logged.headers  # nothing stored yet, nothing to validate


def test_fetched_at_comes_from_the_injected_clock(srv: FeedServer) -> None:
    url = srv.serve_feed("/feed", RSS)
    moment = datetime(2024, 5, 1, 12, 0, tzinfo=UTC)

    [result] = asyncio.run(fetch_all([request(url)], settings(), now=lambda: moment))

    assert result.fetched_at == moment


# --- conditional GET -----------------------------------------------------------------


def test_etag_is_sent_back_and_a_304_keeps_the_old_state(srv: FeedServer) -> None:
    url = srv.serve_feed("/feed", RSS)
    first = fetch_one(url)

    [second] = fetch(request(url, etag=first.etag, body_hash=first.body_hash))

    assert srv.requests[-1].headers["if-none-match"] == first.etag
    assert second.ok and second.status == 304 and second.not_modified
    assert second.body is None
    assert second.etag == first.etag and second.body_hash == first.body_hash


def test_last_modified_alone_is_enough_for_a_304(srv: FeedServer) -> None:
    stamp = datetime(2024, 5, 1, 10, 0, tzinfo=UTC)
    url = srv.serve_feed("/feed", RSS, etag=False, last_modified=stamp)
    first = fetch_one(url)
    assert first.etag is None and first.last_modified == "Wed, 01 May 2024 10:00:00 GMT"

    [second] = fetch(request(url, last_modified=first.last_modified))

    assert srv.requests[-1].headers["if-modified-since"] == first.last_modified
    assert second.not_modified and second.status == 304 and second.body is None
    assert second.last_modified == first.last_modified


def test_an_unchanged_body_without_304_counts_as_not_modified(srv: FeedServer) -> None:
    url = srv.serve_feed("/feed", RSS, etag=False)  # a server that ignores validators
    first = fetch_one(url)

    [second] = fetch(request(url, body_hash=first.body_hash))

    assert second.ok and second.status == 200 and second.not_modified
    assert second.body is None and second.body_hash == first.body_hash


def test_a_changed_body_is_returned_with_its_new_validators(srv: FeedServer) -> None:
    url = srv.serve_feed("/feed", RSS)
    first = fetch_one(url)
    srv.serve_feed("/feed", ATOM)

    [second] = fetch(request(url, etag=first.etag, body_hash=first.body_hash))

    assert second.status == 200 and not second.not_modified
    assert second.body == ATOM
    assert second.etag != first.etag and second.body_hash != first.body_hash


def test_stored_validators_that_cannot_be_sent_are_left_out(srv: FeedServer) -> None:
    url = srv.serve_feed("/feed", RSS)

    [result] = fetch(request(url, etag='"caf\u00e9"', last_modified="line\nbreak"))

    assert result.ok and result.body == RSS
    assert "if-none-match" not in srv.requests[-1].headers
    assert "if-modified-since" not in srv.requests[-1].headers


# --- HTTP and network failures -------------------------------------------------------


@pytest.mark.parametrize(
    ("status", "code", "advice"),
    [
        (404, "http_404", "check the URL"),
        (410, "http_410", "remove the source"),
        (403, "http_403", "refuses access"),
        (429, "http_429", "longer interval"),
        (500, "http_500", "retries later"),
        (503, "http_503", "retries later"),
    ],
)
def test_http_errors_get_a_code_and_advice(
    srv: FeedServer, status: int, code: str, advice: str
) -> None:
    url = srv.route("/feed", lambda req: (status, {"Retry-After": "120"}, b"nope"))

    [result] = fetch(request(url, etag='"old"', body_hash="abc"))

    assert not result.ok and result.error_code == code and result.status == status
    assert f"HTTP {status}" in (result.error or "") and advice in (result.error or "")
    assert result.body is None
    assert result.headers["retry-after"] == "120"  # kept for the politeness work to come
    assert result.etag == '"old"' and result.body_hash == "abc"  # storing it forgets nothing


def test_connection_refused(srv: FeedServer) -> None:
    result = fetch_one(f"http://127.0.0.1:{free_port()}/feed")

    assert result.error_code == "connect" and result.status is None
    assert "refused" in (result.error or "")


def test_a_server_that_never_answers_hits_the_total_deadline(srv: FeedServer) -> None:
    url = srv.stall("/feed")

    # The server answers only when it stops, after this returns; the read timeout is
    # far away: only the total deadline can have ended the poll.
    result = fetch_one(url, timeout_total=0.3, timeout_read=30.0)

    assert result.error_code == "timeout"
    assert "0.3 s" in (result.error or "") and "fetch.timeout_total" in (result.error or "")


def test_a_dribbling_server_cannot_hold_us_past_the_deadline(srv: FeedServer) -> None:
    def dribble() -> Iterator[bytes]:
        for _ in range(200):  # 10 s in all, each byte well inside the read timeout
            if srv.stopping.wait(0.05):
                return
            yield b" "

    url = srv.route("/feed", lambda req: (200, {"Content-Type": "application/rss+xml"}, dribble()))

    result = fetch_one(url, timeout_total=0.4, timeout_read=5.0)

    # Each byte comes well inside the read timeout: the total deadline ended the poll.
    assert result.error_code == "timeout" and result.status == 200
    assert "fetch.timeout_total" in (result.error or "")


@pytest.mark.parametrize("declared", [True, False], ids=["content-length", "streamed"])
def test_a_body_over_the_cap_is_refused(srv: FeedServer, declared: bool) -> None:
    big = b"<rss>" + b"x" * 200_000

    def reply(req: Request) -> tuple[int, dict[str, str], bytes | Iterable[bytes]]:
        chunks = (big[i : i + 8192] for i in range(0, len(big), 8192))
        return 200, {}, big if declared else chunks

    url = srv.route("/feed", reply)

    result = fetch_one(url, max_body_bytes=100_000)

    assert result.error_code == "too_large" and result.body is None
    assert "100000 bytes" in (result.error or "")


def test_a_gzip_bomb_is_refused_by_its_decoded_size(srv: FeedServer) -> None:
    bomb = gzip.compress(b"\0" * 30_000_000, compresslevel=9)
    assert len(bomb) < 100_000  # small on the wire, so only decoding gives it away
    url = srv.route("/feed", lambda req: (200, {"Content-Encoding": "gzip"}, bomb))

    result = fetch_one(url, max_body_bytes=1_000_000)

    assert result.error_code == "too_large" and result.body is None


def test_a_gzipped_feed_is_decoded(srv: FeedServer) -> None:
    url = srv.route(
        "/feed",
        lambda req: (
            200,
            {"Content-Encoding": "gzip", "Content-Type": "text/xml"},
            gzip.compress(RSS),
        ),
    )

    result = fetch_one(url)

    assert "gzip" in srv.requests[-1].headers["accept-encoding"]
    assert result.ok and result.body == RSS
    assert "content-encoding" not in result.headers  # the body handed on is decoded


# --- redirects -----------------------------------------------------------------------


@pytest.mark.parametrize(
    ("status", "permanent"), [(301, True), (308, True), (302, False), (307, False)]
)
def test_a_redirect_is_followed_and_a_permanent_one_recorded(
    srv: FeedServer, status: int, permanent: bool
) -> None:
    target = srv.serve_feed("/new", RSS)
    old = srv.redirect("/old", "/new", status)  # relative Location, resolved against /old

    result = fetch_one(old)

    assert result.ok and result.body == RSS and result.final_url == target
    assert result.permanent_redirect == (target if permanent else None)


def test_only_the_first_hop_decides_the_permanent_redirect(srv: FeedServer) -> None:
    srv.serve_feed("/c", RSS)
    srv.redirect("/b", "/c", 301)
    url = srv.redirect("/a", "/b", 302)

    result = fetch_one(url)

    assert result.ok and result.final_url == srv.url("/c")
    assert result.permanent_redirect is None


def test_a_redirect_loop_stops_at_the_limit(srv: FeedServer) -> None:
    srv.redirect("/a", "/b", 301)
    url = srv.redirect("/b", "/a", 301)

    result = fetch_one(url, max_redirects=4)

    assert result.error_code == "too_many_redirects"
    assert len(srv.requests) == 5  # the first request and four redirects followed
    assert result.permanent_redirect is None  # nothing to adopt from a failed poll


def test_a_redirect_to_another_scheme_is_refused(srv: FeedServer) -> None:
    url = srv.redirect("/feed", "file:///etc/passwd", 302)

    result = fetch_one(url)

    assert result.error_code == "bad_redirect" and "file:///etc/passwd" in (result.error or "")


# --- many sources at once ------------------------------------------------------------


def test_one_failing_source_does_not_stop_the_others(srv: FeedServer) -> None:
    srv.serve_feed("/rss", RSS)
    srv.serve_feed("/atom", ATOM, "application/atom+xml")
    srv.stall("/slow")
    requests = [
        request(srv.url("/rss"), 1),
        request(srv.url("/missing"), 2),
        request(srv.url("/atom"), 3),
        request("gopher://outlet.test/", 4),
        request(srv.url("/slow"), 5),
    ]

    results = fetch(*requests, timeout_total=0.5)

    assert [r.request for r in results] == requests  # same order as asked
    assert [r.error_code for r in results] == [None, "http_404", None, "bad_url", "timeout"]
    assert results[0].body == RSS and results[2].body == ATOM


class GatedTransport(httpx.AsyncBaseTransport):
    """Holds every request until the test lets it go, counting those held at once.

    It answers in the event loop of the polls, so between two releases the test can
    let every poll that may start start (see `until_quiet`): no clock is involved.
    """

    def __init__(self) -> None:
        self.held: list[tuple[httpx.Request, asyncio.Event]] = []
        self.hosts_held: list[list[str]] = []  # the hosts held at each quiet moment

    async def handle_async_request(self, request: httpx.Request) -> httpx.Response:
        gate = asyncio.Event()
        self.held.append((request, gate))
        await gate.wait()
        return httpx.Response(200, content=RSS)

    def release_one(self) -> None:
        _, gate = self.held.pop(0)
        gate.set()


async def until_quiet() -> None:
    # Every step a poll takes between two awaits of ours is a task switch: a few
    # hundred switches let each runnable poll reach the transport or a full semaphore.
    for _ in range(300):
        await asyncio.sleep(0)


def gated_fetch(
    requests: list[FetchRequest], **overrides: Any
) -> tuple[list[FetchResult], list[list[str]]]:
    """Poll through a GatedTransport, releasing one request at each quiet moment."""

    async def scenario() -> tuple[list[FetchResult], list[list[str]]]:
        transport = GatedTransport()
        polls = asyncio.ensure_future(
            fetch_all(requests, settings(**overrides), transport=transport)
        )
        for _ in range(10 * len(requests)):
            await until_quiet()
            if polls.done():
                break
            transport.hosts_held.append([str(r.url.host) for r, _ in transport.held])
            transport.release_one()
        return await polls, transport.hosts_held

    return asyncio.run(scenario())


def test_no_more_than_per_host_concurrency_requests_hit_one_host() -> None:
    requests = [request(f"http://outlet.test/feed?n={n}", n) for n in range(6)]

    results, held = gated_fetch(requests, concurrency=10, per_host_concurrency=2)

    assert all(r.ok for r in results)
    assert max(len(hosts) for hosts in held) == 2  # two at once, never three
    assert len(held) == 6  # each request was held, and released, once


def test_the_global_limit_applies_across_hosts() -> None:
    urls = ["http://a.test/feed", "http://b.test/feed"] * 2
    requests = [request(url, n) for n, url in enumerate(urls)]

    results, held = gated_fetch(requests, concurrency=1, per_host_concurrency=5)

    assert all(r.ok for r in results)
    assert [len(hosts) for hosts in held] == [1, 1, 1, 1]


def test_one_busy_host_does_not_hold_back_another() -> None:
    urls = [f"http://busy.test/feed?n={n}" for n in range(4)] + ["http://quiet.test/feed"]
    requests = [request(url, n) for n, url in enumerate(urls)]

    _, held = gated_fetch(requests, concurrency=10, per_host_concurrency=1)

    assert sorted(held[0]) == ["busy.test", "quiet.test"]


def test_no_sources_no_work() -> None:
    assert fetch() == []


# --- refused before any request ------------------------------------------------------


@pytest.mark.parametrize(
    "url", ["ftp://outlet.test/feed", "outlet.test/feed", "http:///feed", "http://[::1/feed"]
)
def test_only_http_urls_are_polled(url: str) -> None:
    result = fetch_one(url)

    assert result.error_code == "bad_url" and result.status is None
    assert "source's url" in (result.error or "")


def test_private_addresses_are_refused_unless_allowed(srv: FeedServer) -> None:
    url = srv.serve_feed("/feed", RSS)

    result = fetch_one(url, allow_private_networks=False)

    assert result.error_code == "private_address"
    assert "allow_private_networks" in (result.error or "")
    assert srv.requests == []  # refused before connecting


@pytest.mark.parametrize(
    "url",
    [
        "http://10.1.2.3/feed",
        "http://192.168.0.10/feed",
        "http://169.254.169.254/latest/meta-data/",
        "http://[::1]:8080/feed",
        "http://[::ffff:127.0.0.1]/feed",
        "http://0.0.0.0/feed",
    ],
)
def test_well_known_private_targets_are_refused(url: str) -> None:
    # IP literals resolve without DNS, and the guard refuses them before any connection.
    result = fetch_one(url, allow_private_networks=False)

    assert result.error_code == "private_address"


def test_every_redirect_hop_is_checked_for_private_addresses() -> None:
    seen: list[str] = []

    def handler(req: httpx.Request) -> httpx.Response:
        seen.append(str(req.url))
        return httpx.Response(302, headers={"Location": "http://127.0.0.1/admin"})

    # MockTransport answers in-process; the public IP literal is never contacted.
    [result] = fetch(
        request("http://1.2.3.4/feed"),
        transport=httpx.MockTransport(handler),
        allow_private_networks=False,
    )

    assert result.error_code == "private_address" and result.final_url == "http://127.0.0.1/admin"
    assert seen == ["http://1.2.3.4/feed"]


# --- content codings ------------------------------------------------------------------


@pytest.mark.parametrize(
    "encoded",
    [zlib.compress(RSS), zlib.compress(RSS)[2:-4]],
    ids=["zlib-deflate", "raw-deflate"],
)
def test_both_kinds_of_deflate_are_decoded(srv: FeedServer, encoded: bytes) -> None:
    url = srv.route("/feed", lambda req: (200, {"Content-Encoding": "deflate"}, encoded))

    result = fetch_one(url)

    assert result.ok and result.body == RSS


@pytest.mark.parametrize(
    ("encoding", "content"),
    [("br", b"\x1b\x00"), ("gzip", b"\x1f\x8b\x08\x00 not really gzip")],
    ids=["unasked-brotli", "corrupt-gzip"],
)
def test_undecodable_bodies_are_reported(srv: FeedServer, encoding: str, content: bytes) -> None:
    url = srv.route("/feed", lambda req: (200, {"Content-Encoding": encoding}, content))

    result = fetch_one(url)

    assert result.error_code == "bad_encoding" and encoding in (result.error or "")


# --- narrow cases through MockTransport ----------------------------------------------


def test_mock_transport_responses_are_read_too() -> None:
    # MockTransport hands over responses that httpx has already read and decoded.
    transport = httpx.MockTransport(
        lambda req: httpx.Response(
            200, headers={"Content-Encoding": "gzip"}, content=gzip.compress(RSS)
        )
    )

    [ok] = fetch(request("http://outlet.test/feed"), transport=transport)
    [too_big] = fetch(request("http://outlet.test/feed"), transport=transport, max_body_bytes=10)

    assert ok.ok and ok.body == RSS
    assert too_big.error_code == "too_large"


def test_a_304_with_a_fresh_etag_updates_it() -> None:
    transport = httpx.MockTransport(lambda req: httpx.Response(304, headers={"ETag": '"v2"'}))

    [result] = fetch(
        request(
            "http://outlet.test/feed", etag='"v1"', last_modified="Wed, 01 May 2024 10:00:00 GMT"
        ),
        transport=transport,
    )

    assert result.not_modified and result.etag == '"v2"'
    assert result.last_modified == "Wed, 01 May 2024 10:00:00 GMT"


def test_an_unexpected_exception_becomes_that_sources_error() -> None:
    def handler(req: httpx.Request) -> httpx.Response:
        if req.url.path == "/broken":
            raise RuntimeError("transport bug")
        return httpx.Response(200, content=RSS)

    results = fetch(
        request("http://outlet.test/broken", 1),
        request("http://outlet.test/feed", 2),
        transport=httpx.MockTransport(handler),
    )

    assert results[0].error_code == "internal" and "transport bug" in (results[0].error or "")
    assert results[1].ok and results[1].body == RSS


# --- addresses checked after DNS, connections pinned to them ---------------------------


def LoopbackAllowed(**values: Any) -> FetchSettings:  # noqa: N802 - reads like the settings type
    """FetchSettings that refuse private networks but admit loopback, where test servers live."""
    return FetchSettings(**{"allowed_networks": "127.0.0.0/8", **values})


def fake_dns(monkeypatch: pytest.MonkeyPatch, answers: dict[str, list[str]]) -> list[str]:
    """Answer name lookups from `answers` instead of DNS; returns the names asked for."""
    asked: list[str] = []

    async def resolve(host: str, port: int) -> list[Any]:
        asked.append(host)
        if host not in answers:
            raise socket.gaierror(socket.EAI_NONAME, "Name or service not known")
        return [ipaddress.ip_address(a) for a in answers[host]]

    monkeypatch.setattr(guard, "system_resolve", resolve)
    return asked


def guarded(*requests: FetchRequest, **overrides: Any) -> list[FetchResult]:
    values: dict[str, Any] = {"timeout_total": 5.0, **overrides}
    return asyncio.run(fetch_all(requests, LoopbackAllowed(**values)))


def test_a_name_is_resolved_once_and_the_connection_goes_to_the_checked_address(
    srv: FeedServer, monkeypatch: pytest.MonkeyPatch
) -> None:
    srv.serve_feed("/feed", RSS)
    asked = fake_dns(monkeypatch, {"feeds.example": ["127.0.0.1"]})
    url = f"http://feeds.example:{srv.port}/feed"

    results = guarded(request(url, 1), request(url + "?again", 2))

    assert all(r.ok and r.body == RSS for r in results)
    assert asked == ["feeds.example"]  # one lookup per host and cycle, reused to connect
    assert {r.headers["host"] for r in srv.requests} == {f"feeds.example:{srv.port}"}


@pytest.mark.parametrize(
    "addresses",
    [["10.0.0.7"], ["93.184.216.34", "192.168.1.1"], ["169.254.169.254"], ["fd00::1"]],
    ids=["private", "public-and-private", "metadata", "ipv6-unique-local"],
)
def test_a_name_resolving_to_a_private_address_is_refused(
    monkeypatch: pytest.MonkeyPatch, addresses: list[str]
) -> None:
    fake_dns(monkeypatch, {"intranet.example": addresses})

    [result] = guarded(request("http://intranet.example/feed"))

    assert result.error_code == "private_address" and result.status is None
    assert "intranet.example" in (result.error or "")


def test_allowed_networks_admit_only_themselves(monkeypatch: pytest.MonkeyPatch) -> None:
    fake_dns(monkeypatch, {"intranet.example": ["10.0.0.7"]})
    settings = LoopbackAllowed(allowed_networks="10.0.0.0/29")
    # MockTransport answers in-process: the admitted private address is never contacted.
    transport = httpx.MockTransport(lambda req: httpx.Response(200, content=RSS))
    requests = [request("http://intranet.example/feed", 1), request("http://10.0.0.9/feed", 2)]

    results = asyncio.run(fetch_all(requests, settings, transport=transport))

    assert [r.error_code for r in results] == [None, "private_address"]


def test_a_redirect_to_a_name_resolving_privately_is_refused_at_that_hop(
    srv: FeedServer, monkeypatch: pytest.MonkeyPatch
) -> None:
    fake_dns(monkeypatch, {"intranet.example": ["10.0.0.7"]})
    url = srv.redirect("/feed", "http://intranet.example/admin", 302)

    [result] = guarded(request(url))

    assert result.error_code == "private_address"
    assert result.final_url == "http://intranet.example/admin"
    assert [r.path for r in srv.requests] == ["/feed"]


def test_an_unknown_name_is_a_dns_error(monkeypatch: pytest.MonkeyPatch) -> None:
    fake_dns(monkeypatch, {})

    [result] = guarded(request("http://nowhere.example/feed"))

    assert result.error_code == "dns" and "nowhere.example" in (result.error or "")


# --- rate limits ---------------------------------------------------------------------


def test_a_host_wide_rate_limit_holds_back_the_rest_of_the_host(srv: FeedServer) -> None:
    srv.route(
        "/limited",
        lambda req: (429, {"Retry-After": "600", "X-RateLimit-Remaining": "0"}, b"slow down"),
    )
    srv.serve_feed("/feed", RSS)
    requests = [request(srv.url("/limited"), 1)] + [
        request(srv.url(f"/feed?n={n}"), n) for n in (2, 3)
    ]
    elsewhere = request(f"http://localhost:{srv.port}/feed", 4)  # another host to us

    results = fetch(*requests, elsewhere, per_host_concurrency=1)

    assert [r.error_code for r in results] == ["http_429", DEFERRED, DEFERRED, None]
    assert "600" in (results[0].error or "") and "host-wide" in (results[1].error or "")
    assert results[1].status is None and results[1].etag == requests[1].etag
    assert [r.path for r in srv.requests if r.headers["host"].startswith("127.")] == ["/limited"]


def test_a_rate_limit_without_host_wide_signs_holds_back_only_its_source(
    srv: FeedServer,
) -> None:
    srv.route("/limited", lambda req: (429, {"Retry-After": "600"}, b"slow down"))
    srv.serve_feed("/feed", RSS)

    results = fetch(
        request(srv.url("/limited"), 1), request(srv.url("/feed"), 2), per_host_concurrency=1
    )

    assert [r.error_code for r in results] == ["http_429", None]


def test_two_rate_limited_sources_of_one_host_hold_back_the_rest(srv: FeedServer) -> None:
    srv.route("/limited", lambda req: (503, {"Retry-After": "120"}, b"busy"))
    srv.serve_feed("/feed", RSS)
    requests = [request(srv.url(f"/limited?n={n}"), n) for n in (1, 2)]

    results = fetch(*requests, request(srv.url("/feed"), 3), per_host_concurrency=1)

    assert [r.error_code for r in results] == ["http_503", "http_503", DEFERRED]
    assert len(srv.requests) == 2


def test_connections_are_kept_across_304s_redirects_and_errors() -> None:
    # httpcore reuses a connection only once its response was read to the end.
    with FeedServer(keep_alive=True) as srv:
        url = srv.serve_feed("/feed", RSS)
        srv.redirect("/old", "/feed", 302)
        srv.route("/missing", lambda req: (404, {}, b"no such feed " * 100))
        tag = fetch_one(url).etag
        polls = [request(url, 1, etag=tag), request(srv.url("/old"), 2, etag=tag)]
        polls += [request(srv.url("/missing"), 3), request(url, 4, etag=tag)]

        results = fetch(*polls, concurrency=1)

        assert [r.status for r in results] == [304, 304, 404, 304]
        assert len({r.client_port for r in srv.requests[1:]}) == 1
