"""The feed server, in process: headers, conditional requests, HEAD, gzip, 404 and probes."""

from __future__ import annotations

import threading
from collections.abc import AsyncIterator, Callable
from datetime import UTC, datetime

import httpx
import pytest

from aggregator.errors import StoreError
from aggregator.serve import create_app
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
    lookup: Callable[[str], Document | None], ready: Callable[[], bool] | None = None
) -> httpx.AsyncClient:
    app = create_app(lookup, ready=ready)
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
