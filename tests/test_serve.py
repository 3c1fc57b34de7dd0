"""The feed server, in process: headers, conditional requests, HEAD, gzip, 404, probes,
the in-memory document cache and WebSub Link headers."""

from __future__ import annotations

import asyncio
import dataclasses
import socket
import threading
import time
from collections.abc import AsyncIterator, Callable
from datetime import UTC, datetime
from typing import Any

import httpx
import pytest
from starlette.applications import Starlette

from aggregator.errors import StoreError
from aggregator.health import JobRecord, Readiness
from aggregator.listener import feed_server
from aggregator.serve import DocumentCache, create_app
from aggregator.types import Document

UPDATED = datetime(2026, 3, 1, 12, 0, 30, 500_000, tzinfo=UTC)
LAST_MODIFIED = "Sun, 01 Mar 2026 12:00:30 GMT"
ATOM_BODY = (
    b'<?xml version="1.0" encoding="utf-8"?>\n<feed xmlns="http://www.w3.org/2005/Atom">'
    + (b"<entry><title>report</title></entry>" * 100)
    + b"</feed>"
)

DOCUMENTS = {
    d.path: d
    for d in [
        Document(
            "/timelines/quake.atom",
            "application/atom+xml; charset=utf-8",
            ATOM_BODY,
            '"a1"',
            UPDATED,
        ),
        Document(
            "/timelines/quake.rss", "application/rss+xml; charset=utf-8", b"<rss/>", '"r1"', UPDATED
        ),
        Document(
            "/timelines/quake.json", "application/feed+json; charset=utf-8", b"{}", '"j1"', UPDATED
        ),
        Document("/timelines.opml", "text/x-opml; charset=utf-8", b"<opml/>", '"o1"', UPDATED),
        Document("/index.html", "text/html; charset=utf-8", b"<!DOCTYPE html>", '"i1"', UPDATED),
    ]
}

pytestmark = pytest.mark.anyio


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"


def client_for(
    lookup: Callable[[str], Document | None],
    ready: Callable[[], bool | Readiness] | None = None,
) -> httpx.AsyncClient:
    return client_for_app(create_app(lookup, ready=ready))


def client_for_app(app: Starlette) -> httpx.AsyncClient:
    return httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://test")


@pytest.fixture
async def client() -> AsyncIterator[httpx.AsyncClient]:
    async with client_for(DOCUMENTS.get) as client:
        yield client


@pytest.mark.parametrize("path", sorted(DOCUMENTS))
async def test_serves_each_document_with_its_headers(client: httpx.AsyncClient, path: str) -> None:
    response = await client.get(path, headers={"Accept-Encoding": "identity"})
    doc = DOCUMENTS[path]
    assert response.status_code == 200
    assert response.content == doc.body
    assert response.headers["content-type"] == doc.content_type
    assert response.headers["etag"] == doc.etag
    assert response.headers["last-modified"] == LAST_MODIFIED
    assert response.headers["cache-control"] == "public, max-age=300"
    assert "content-encoding" not in response.headers


async def test_root_is_the_index_page(client: httpx.AsyncClient) -> None:
    response = await client.get("/")
    assert response.content == DOCUMENTS["/index.html"].body
    assert "default-src 'none'" in response.headers["content-security-policy"]


@pytest.mark.parametrize(
    "if_none_match", ['"a1"', 'W/"a1"', '"other", "a1"', '"x",W/"a1" , "y"', "*"]
)
async def test_if_none_match_gives_304(client: httpx.AsyncClient, if_none_match: str) -> None:
    response = await client.get("/timelines/quake.atom", headers={"If-None-Match": if_none_match})
    assert response.status_code == 304
    assert response.content == b""
    assert response.headers["etag"].endswith('"a1"')
    assert response.headers["last-modified"] == LAST_MODIFIED


async def test_other_etag_gives_the_document(client: httpx.AsyncClient) -> None:
    headers = {"If-None-Match": '"stale", W/"older"', "If-Modified-Since": LAST_MODIFIED}
    response = await client.get("/timelines/quake.atom", headers=headers)
    # If-None-Match decides when present (RFC 9110 13.2.2), so the date is not consulted
    assert response.status_code == 200


@pytest.mark.parametrize(
    ("since", "status"),
    [
        (LAST_MODIFIED, 304),  # sub-second precision of the stored time is not a change
        ("Mon, 02 Mar 2026 00:00:00 GMT", 304),
        ("Sun, 01 Mar 2026 12:00:29 GMT", 200),
        ("not a date", 200),
    ],
)
async def test_if_modified_since(client: httpx.AsyncClient, since: str, status: int) -> None:
    response = await client.get("/timelines/quake.rss", headers={"If-Modified-Since": since})
    assert response.status_code == status


# Validators a broken client, cache or attacker may send: each is ignored (the whole
# document, 200) or, where it still names our tag, honoured; never a 500.
HOSTILE_VALIDATORS = [
    ({"If-Modified-Since": "Fri, 31 Dec 9999 23:59:59 -1400"}, 200),  # past datetime.max in UTC
    ({"If-Modified-Since": "Mon, 01 Jan 0001 00:00:00 +1400"}, 200),  # before datetime.min
    ({"If-Modified-Since": "Sat, 01 Jan 99999999999999999999 00:00:00 GMT"}, 200),
    ({"If-Modified-Since": "Sat, 01 Jan 2020 00:00:00 +99999999999999999999"}, 200),
    ({"If-Modified-Since": "Sat, 01 Jan 10000 00:00:00 GMT"}, 200),
    ({"If-Modified-Since": "Sat, 99 Jan 2020 99:99:99 GMT"}, 200),
    ({"If-Modified-Since": "Fri, 01 Jan 2100 00:00:00 GMT"}, 200),  # later than now: invalid
    ({"If-Modified-Since": LAST_MODIFIED + " " * 10_000}, 200),  # longer than any date
    ({"If-Modified-Since": b"\xff\xfe"}, 200),  # bytes no client should send
    ({"If-None-Match": '"a1'}, 200),  # unterminated
    ({"If-None-Match": "W/"}, 200),
    ({"If-None-Match": ""}, 200),
    ({"If-None-Match": ", ,,"}, 200),
    ({"If-None-Match": b'"\xe9t\xe9"'}, 200),
    ({"If-None-Match": '"x", ' * 20_000}, 200),  # a huge list, matched in linear time
    ({"If-None-Match": '"x", ' * 20_000 + '"a1"'}, 304),
]


@pytest.mark.parametrize(("headers", "status"), HOSTILE_VALIDATORS)
async def test_malformed_or_out_of_range_validators_are_ignored(
    client: httpx.AsyncClient, headers: dict[str, str | bytes], status: int
) -> None:
    response = await client.get("/timelines/quake.atom", headers=headers)
    assert response.status_code == status
    if status == 200:
        assert response.content == ATOM_BODY


async def test_gzip_when_accepted(client: httpx.AsyncClient) -> None:
    response = await client.get("/timelines/quake.atom", headers={"Accept-Encoding": "gzip"})
    assert response.status_code == 200
    assert response.headers["content-encoding"] == "gzip"
    assert response.headers["vary"] == "Accept-Encoding"
    assert response.headers["etag"] == 'W/"a1"'  # a different representation: weak tag
    assert response.content == ATOM_BODY  # httpx decoded it
    assert int(response.headers["content-length"]) < len(ATOM_BODY)
    # The weak tag sent back revalidates
    again = await client.get(
        "/timelines/quake.atom",
        headers={"Accept-Encoding": "gzip", "If-None-Match": response.headers["etag"]},
    )
    assert again.status_code == 304


@pytest.mark.parametrize("accept", ["identity", "gzip;q=0", "br", "*;q=0"])
async def test_no_gzip_when_refused(client: httpx.AsyncClient, accept: str) -> None:
    response = await client.get("/timelines/quake.atom", headers={"Accept-Encoding": accept})
    assert "content-encoding" not in response.headers


async def test_head_has_headers_and_no_body(client: httpx.AsyncClient) -> None:
    get = await client.get("/timelines/quake.atom", headers={"Accept-Encoding": "gzip"})
    head = await client.head("/timelines/quake.atom", headers={"Accept-Encoding": "gzip"})
    assert head.status_code == 200
    assert head.content == b""
    for name in ("content-type", "etag", "last-modified", "content-encoding", "content-length"):
        assert head.headers[name] == get.headers[name]


async def test_missing_document_is_404(client: httpx.AsyncClient) -> None:
    response = await client.get("/timelines/<script>.atom")
    assert response.status_code == 404
    assert response.headers["content-type"] == "text/html; charset=utf-8"
    assert b"Not found" in response.content
    assert b"<script>" not in response.content  # the path is not echoed back
    head = await client.head("/nothing")
    assert (head.status_code, head.content) == (404, b"")


async def test_lookup_runs_off_the_event_loop() -> None:
    threads: list[str] = []

    def lookup(path: str) -> Document | None:
        threads.append(threading.current_thread().name)
        return DOCUMENTS.get(path)

    async with client_for(lookup) as client:
        await client.get("/timelines/quake.json")
    assert threads and threads[0] != threading.main_thread().name


async def test_store_failure_is_503() -> None:
    def lookup(path: str) -> Document | None:
        raise StoreError("database is down")

    async with client_for(lookup) as client:
        response = await client.get("/timelines/quake.atom")
    assert response.status_code == 503
    assert response.headers["retry-after"] == "30"


async def test_healthz(client: httpx.AsyncClient) -> None:
    response = await client.get("/healthz")
    assert (response.status_code, response.text) == (200, "ok")


@pytest.mark.parametrize(("ready", "status"), [(None, 200), (True, 200), (False, 503)])
async def test_readyz(ready: bool | None, status: int) -> None:
    probe = None if ready is None else (lambda: ready)
    async with client_for(DOCUMENTS.get, ready=probe) as client:
        response = await client.get("/readyz")
    assert response.status_code == status


async def test_readyz_failing_probe_is_not_ready() -> None:
    def probe() -> bool:
        raise StoreError("database is down")

    async with client_for(DOCUMENTS.get, ready=probe) as client:
        response = await client.get("/readyz")
    assert response.status_code == 503
    assert response.json()["problems"] == ["the readiness check failed: StoreError"]


async def test_readyz_says_why_not_as_json() -> None:
    record = JobRecord(consecutive_failures=3, last_error="ValueError: boom")
    answer = Readiness(False, ("publish failed 3 times in a row",), {"publish": record})
    async with client_for(DOCUMENTS.get, ready=lambda: answer) as client:
        response = await client.get("/readyz")
    assert response.status_code == 503
    assert response.headers["content-type"] == "application/json"
    assert response.headers["cache-control"] == "no-store"
    assert response.json() == {
        "ready": False,
        "problems": ["publish failed 3 times in a row"],
        "jobs": {
            "publish": {
                "last_success": None,
                "consecutive_failures": 3,
                "last_error": "ValueError: boom",
            }
        },
    }


async def test_cache_control_follows_max_age() -> None:
    app = create_app(DOCUMENTS.get, max_age=30)
    transport = httpx.ASGITransport(app=app)
    async with httpx.AsyncClient(transport=transport, base_url="http://test") as client:
        response = await client.get("/timelines/quake.rss")
        again = await client.get("/timelines/quake.rss", headers={"If-None-Match": '"r1"'})
    assert response.headers["cache-control"] == "public, max-age=30"
    assert again.status_code == 304 and again.headers["cache-control"] == "public, max-age=30"


class CountingLookup:
    """A lookup that counts its calls and can be switched to a new version of a document."""

    def __init__(self) -> None:
        self.calls = 0
        self.documents = dict(DOCUMENTS)

    def __call__(self, path: str) -> Document | None:
        self.calls += 1
        return self.documents.get(path)


async def test_documents_are_looked_up_once_per_freshness_window() -> None:
    lookup = CountingLookup()
    async with client_for_app(create_app(lookup, fresh_for=60)) as client:
        for _ in range(5):
            assert (await client.get("/timelines/quake.json")).status_code == 200
        for _ in range(3):
            assert (await client.get("/missing")).status_code == 404
    assert lookup.calls == 2  # one per path, the 404 included


async def test_concurrent_requests_share_one_lookup() -> None:
    lookup = CountingLookup()
    async with client_for_app(create_app(lookup, fresh_for=60)) as client:
        responses = await asyncio.gather(*(client.get("/timelines/quake.rss") for _ in range(20)))
    assert {r.status_code for r in responses} == {200}
    assert lookup.calls == 1


async def test_a_replaced_document_is_served_once_the_window_passes() -> None:
    now = [0.0]
    lookup = CountingLookup()
    cache = DocumentCache(lookup, fresh_for=1.0, clock=lambda: now[0])
    assert (await cache.get("/timelines/quake.rss")) == DOCUMENTS["/timelines/quake.rss"]
    newer = dataclasses.replace(DOCUMENTS["/timelines/quake.rss"], body=b"<rss/>2", etag='"r2"')
    lookup.documents[newer.path] = newer
    now[0] = 0.5
    assert (await cache.get(newer.path)).etag == '"r1"'  # still fresh
    now[0] = 1.5
    assert (await cache.get(newer.path)).etag == '"r2"'


async def test_no_cache_when_fresh_for_is_zero() -> None:
    lookup = CountingLookup()
    async with client_for_app(create_app(lookup, fresh_for=0)) as client:
        await client.get("/timelines/quake.rss")
        await client.get("/timelines/quake.rss")
    assert lookup.calls == 2


async def test_the_cache_is_bounded() -> None:
    lookup = CountingLookup()
    cache = DocumentCache(lookup, fresh_for=60, entries=3)
    for n in range(10):
        await cache.get(f"/nothing/{n}")
    await cache.get("/nothing/0")
    assert lookup.calls == 11  # the first path was evicted and looked up again


async def test_lookup_errors_are_not_cached() -> None:
    failures = [StoreError("database is down")]

    def lookup(path: str) -> Document | None:
        if failures:
            raise failures.pop()
        return DOCUMENTS.get(path)

    async with client_for_app(create_app(lookup, fresh_for=60)) as client:
        assert (await client.get("/timelines/quake.rss")).status_code == 503
        assert (await client.get("/timelines/quake.rss")).status_code == 200


async def test_feeds_carry_websub_link_headers() -> None:
    app = create_app(DOCUMENTS.get, hub="https://hub.example/", base_url="https://feeds.example/")
    async with client_for_app(app) as client:
        feed = await client.get("/timelines/quake.atom")
        page = await client.get("/")
        not_modified = await client.get("/timelines/quake.atom", headers={"If-None-Match": "*"})
    expected = (
        '<https://hub.example/>; rel="hub", '
        '<https://feeds.example/timelines/quake.atom>; rel="self"'
    )
    assert feed.headers["link"] == expected
    assert not_modified.headers["link"] == expected
    assert "link" not in page.headers  # pages are not WebSub topics


async def test_no_websub_headers_without_a_hub(client: httpx.AsyncClient) -> None:
    response = await client.get("/timelines/quake.atom")
    assert "link" not in response.headers


# -- connections, over real sockets -------------------------------------------------
#
# These run the app under uvicorn as `aggregator run` does (aggregator.listener) and
# hold raw sockets to it. They wait for events (a socket reading EOF) with a bounded
# wait, never for a span of time.

HALF_REQUESTS = [
    b"",  # connects and says nothing
    b"GET /timel",  # half a request line
    b"GET /timelines/quake.atom HTTP/1.1\r\nHost: feeds.test\r\n",  # headers never ended
]
EVENT_WAIT = 30.0  # seconds: only reached when the expected event never comes


class RunningServer:
    """The feed app under `listener.feed_server` on a free 127.0.0.1 port, in a thread."""

    def __init__(self, documents: dict[str, Document] = DOCUMENTS, **bounds: Any) -> None:
        self.sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM, socket.IPPROTO_TCP)
        self.sock.bind(("127.0.0.1", 0))
        self.port = int(self.sock.getsockname()[1])
        self.server = feed_server(create_app(documents.get), "127.0.0.1", self.port, **bounds)
        self.thread = threading.Thread(
            target=self.server.run, kwargs={"sockets": [self.sock]}, daemon=True
        )

    def __enter__(self) -> RunningServer:
        self.thread.start()
        while not self.server.started:
            assert self.thread.is_alive(), "the feed server did not start"
            threading.Event().wait(0.02)
        return self

    def __exit__(self, *exc: object) -> None:
        self.server.should_exit = True
        self.thread.join(10)
        self.sock.close()

    def connect(self, send: bytes = b"") -> socket.socket:
        client = socket.create_connection(("127.0.0.1", self.port), timeout=EVENT_WAIT)
        if send:
            client.sendall(send)
        return client

    def connections_drop_to(self, count: int) -> bool:
        """Wait (bounded) until the server holds `count` connections or fewer."""
        deadline = time.monotonic() + EVENT_WAIT
        while len(self.server.server_state.connections) > count:
            if time.monotonic() > deadline:
                return False
            threading.Event().wait(0.02)
        return True

    def get(self, path: str, **headers: str) -> httpx.Response:
        return httpx.get(f"http://127.0.0.1:{self.port}{path}", headers=headers, timeout=10)


def closed_by_server(client: socket.socket) -> bool:
    """Wait (bounded) until the server ends the connection: EOF, a reset, or an answer
    followed by EOF; False if it is still open when the wait runs out."""
    client.settimeout(EVENT_WAIT)
    try:
        while client.recv(65536):
            pass  # a 400 or 408 answer before the close is fine too
    except ConnectionResetError:
        return True
    except TimeoutError:
        return False
    return True


def still_open(client: socket.socket) -> bool:
    client.setblocking(False)
    try:
        return client.recv(1, socket.MSG_PEEK) != b""
    except BlockingIOError:
        return True  # nothing to read and no EOF
    except ConnectionResetError:
        return False


def test_half_open_connections_are_closed_after_the_header_timeout() -> None:
    with RunningServer(header_timeout=0.5) as server:
        clients = [server.connect(half) for half in HALF_REQUESTS * 10]
        # a reader whose response is done and who then sends half a request
        reader = server.connect(b"GET /healthz HTTP/1.1\r\nHost: feeds.test\r\n\r\n")
        assert reader.recv(65536).startswith(b"HTTP/1.1 200")
        reader.sendall(b"GET /time")
        try:
            # others are served meanwhile (the cap test below shows it without a timeout)
            assert server.get("/timelines/quake.rss").status_code == 200
            assert all(closed_by_server(client) for client in [*clients, reader])
        finally:
            for client in [*clients, reader]:
                client.close()


def test_a_client_that_never_reads_its_response_is_let_go() -> None:
    big = Document("/big.json", "application/feed+json", bytes(8_000_000), '"b1"', UPDATED)
    with RunningServer({big.path: big}, header_timeout=0.5) as server:
        client = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        client.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)  # most stays server-side
        client.connect(("127.0.0.1", server.port))
        try:
            client.sendall(b"GET /big.json HTTP/1.1\r\nHost: feeds.test\r\n\r\n")
            client.settimeout(EVENT_WAIT)
            assert client.recv(64).startswith(b"HTTP/1.1 200")  # then it stops reading
            assert server.connections_drop_to(0), "the server still holds the connection"
            assert server.get("/healthz").status_code == 200  # others are served meanwhile
        finally:
            client.close()


def test_past_the_cap_the_longest_waiting_connections_make_room() -> None:
    with RunningServer(header_timeout=EVENT_WAIT * 4, max_connections=8) as server:
        clients = [server.connect(HALF_REQUESTS[n % 3]) for n in range(20)]
        try:
            # the reader's connection is the 21st: accepted, served, at the cost of the oldest
            assert server.get("/timelines/quake.rss").status_code == 200
            dropped, kept = clients[:13], clients[13:]
            assert all(closed_by_server(client) for client in dropped)
            assert all(still_open(client) for client in kept)
        finally:
            for client in clients:
                client.close()


def test_huge_headers_get_a_400_not_a_500() -> None:
    with RunningServer() as server:
        client = server.connect(
            b"GET /timelines/quake.atom HTTP/1.1\r\nHost: feeds.test\r\n"
            + b"If-None-Match: "
            + b'"x", ' * 50_000
            + b"\r\n\r\n"
        )
        try:
            client.settimeout(EVENT_WAIT)
            assert client.recv(65536).startswith(b"HTTP/1.1 400")
        except ConnectionResetError:
            pass  # closed while the rest of the headers were still arriving: also refused
        finally:
            client.close()
        assert server.get("/healthz").status_code == 200
