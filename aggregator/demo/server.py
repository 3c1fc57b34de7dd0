"""The demo outlets served over HTTP on 127.0.0.1, each feed showing what its clock has reached.

GET/HEAD /<slug>/feed answers with ETag and Last-Modified and 304 on a match; / lists the
outlets; anything else is 404. Requests are not logged.
"""

from __future__ import annotations

import hashlib
import html
import threading
from collections.abc import Mapping
from datetime import UTC, datetime
from email.utils import format_datetime, parsedate_to_datetime
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from types import TracebackType
from typing import Any, NamedTuple
from urllib.parse import urlsplit

from aggregator.demo.outlets import Demo, SimClock, feed_url, load_demo, render_feed
from aggregator.errors import AggregatorError

HOST = "127.0.0.1"


class Response(NamedTuple):
    status: int
    headers: dict[str, str]
    body: bytes


class DemoServer:
    """Serves the demo outlets from a daemon thread; starts at once, stops on `stop()`.

    `port=0` picks a free port. Use it as a context manager to stop it on leaving the block.
    """

    def __init__(self, clock: SimClock, port: int = 0, *, demo: Demo | None = None) -> None:
        self.clock = clock
        self.demo = demo or load_demo()
        try:
            self._httpd = _HTTPServer((HOST, port), _Handler)
        except OSError as exc:
            raise AggregatorError(
                f"the demo server cannot listen on {HOST}:{port} ({exc.strerror}); "
                "is another demo running? Stop it, or choose another [demo] port"
            ) from exc
        self._httpd.demo_server = self
        self._thread = threading.Thread(
            target=self._httpd.serve_forever,
            kwargs={"poll_interval": 0.1},  # how long stop() may wait for the loop
            name="demo-server",
            daemon=True,
        )
        self._thread.start()
        self._stopped = False

    @property
    def port(self) -> int:
        return int(self._httpd.server_address[1])

    @property
    def base_url(self) -> str:
        return f"http://{HOST}:{self.port}"

    def feed_urls(self) -> dict[str, str]:
        return {o.slug: feed_url(self.base_url, o.slug) for o in self.demo.outlets}

    def stop(self) -> None:
        if self._stopped:
            return
        self._stopped = True
        self._httpd.shutdown()
        self._httpd.server_close()
        self._thread.join()

    def __enter__(self) -> DemoServer:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()

    def respond(self, path: str, headers: Mapping[str, str]) -> Response:
        """The answer to a GET of `path` (query ignored) with these request headers."""
        route = urlsplit(path).path
        if route in ("/", "/index.html"):
            return Response(200, {"Content-Type": "text/html; charset=utf-8"}, self._index())
        parts = route.strip("/").split("/")
        slugs = {o.slug for o in self.demo.outlets}
        if len(parts) == 2 and parts[1] == "feed" and parts[0] in slugs:
            return self._feed(parts[0], headers)
        return Response(404, {"Content-Type": "text/plain; charset=utf-8"}, b"not found\n")

    def _feed(self, slug: str, request_headers: Mapping[str, str]) -> Response:
        outlet = self.demo.outlet(slug)
        visible = self.demo.visible(slug, self.clock.now())
        body, content_type = render_feed(
            outlet, visible, base_url=self.base_url, updated=self.demo.start
        )
        etag = f'"{hashlib.sha256(body).hexdigest()[:32]}"'
        headers = {"Content-Type": content_type, "ETag": etag, "Cache-Control": "no-cache"}
        last_modified = visible[-1].published if visible else None
        if last_modified is not None:
            headers["Last-Modified"] = format_datetime(last_modified, usegmt=True)
        if _not_modified(request_headers, etag, last_modified):
            return Response(304, headers, b"")
        return Response(200, headers, body)

    def _index(self) -> bytes:
        now = self.clock.now()
        rows = "".join(
            f"<tr><td>{html.escape(o.name)}</td><td>{o.language}</td><td>{o.format}</td>"
            f"<td>{len(self.demo.visible(o.slug, now))}</td>"
            f'<td><a href="/{o.slug}/feed">/{o.slug}/feed</a></td></tr>\n'
            for o in self.demo.outlets
        )
        page = (
            '<!doctype html>\n<html lang="en"><head><meta charset="utf-8">'
            "<title>Demo outlets</title></head><body>\n"
            f"<h1>Demo outlets</h1>\n<p>Simulated time: {now:%Y-%m-%d %H:%M} UTC</p>\n"
            "<table><tr><th>Outlet</th><th>Language</th><th>Format</th><th>Items</th>"
            f"<th>Feed</th></tr>\n{rows}</table>\n</body></html>\n"
        )
        return page.encode("utf-8")


def _not_modified(
    request_headers: Mapping[str, str], etag: str, last_modified: datetime | None
) -> bool:
    headers = {name.lower(): value for name, value in request_headers.items()}
    # RFC 9110 13.2.2: when If-None-Match is present, If-Modified-Since is ignored.
    if_none_match = headers.get("if-none-match")
    if if_none_match is not None:
        tags = {tag.strip().removeprefix("W/") for tag in if_none_match.split(",")}
        return "*" in tags or etag in tags
    if_modified_since = headers.get("if-modified-since")
    if if_modified_since is None or last_modified is None:
        return False
    try:
        since = parsedate_to_datetime(if_modified_since)
    except (TypeError, ValueError):
        return False
    if since.tzinfo is None:
        since = since.replace(tzinfo=UTC)
    return last_modified.replace(microsecond=0) <= since


class _HTTPServer(ThreadingHTTPServer):
    daemon_threads = True
    demo_server: DemoServer


class _Handler(BaseHTTPRequestHandler):
    server: _HTTPServer
    protocol_version = "HTTP/1.1"
    timeout = 30  # drop idle keep-alive connections

    def do_GET(self) -> None:
        self._answer(send_body=True)

    def do_HEAD(self) -> None:
        self._answer(send_body=False)

    def _answer(self, *, send_body: bool) -> None:
        response = self.server.demo_server.respond(self.path, dict(self.headers.items()))
        self.send_response(response.status)
        for name, value in response.headers.items():
            self.send_header(name, value)
        if response.status != 304:
            self.send_header("Content-Length", str(len(response.body)))
        self.end_headers()
        if send_body and response.status != 304:
            self.wfile.write(response.body)

    def log_message(self, format: str, *args: Any) -> None:
        pass  # the demo must not print a line per request over the aggregator's own output
