"""A real HTTP server on 127.0.0.1 for tests: routes answer with feeds, errors or silence.

Import it as a plain module (`from httpserver import FeedServer`; pytest puts tests/
on sys.path) or as `tests.httpserver` when the project root is on sys.path.
"""

from __future__ import annotations

import hashlib
import threading
import time
from collections.abc import Callable, Iterable
from datetime import UTC, datetime
from email.utils import format_datetime, parsedate_to_datetime
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from types import TracebackType
from typing import NamedTuple
from urllib.parse import urlsplit


class Request(NamedTuple):
    """What a route handler sees; header names are lower-case."""

    method: str
    path: str  # with the query string
    headers: dict[str, str]


class LoggedRequest(NamedTuple):
    path: str
    headers: dict[str, str]
    time_start: float  # time.monotonic()
    time_end: float  # when the answer was ready (streamed bodies: fully sent)
    client_port: int = 0  # the client's end of the connection: equal ports, one connection


# A body is bytes, or an iterable of chunks sent one by one (to dribble or stall).
Body = bytes | Iterable[bytes]
Reply = tuple[int, dict[str, str], Body]
Handler = Callable[[Request], Reply]


class FeedServer:
    """A threaded HTTP server on an ephemeral port of 127.0.0.1, started as a context manager.

        with FeedServer() as srv:
            srv.serve_feed("/feed.xml", RSS)
            url = srv.url("/feed.xml")

    Unknown paths answer 404. A handler that raises answers 500 and the exception is
    kept in `srv.errors`, so a test can show it. With `keep_alive=True` it speaks
    HTTP/1.1 and keeps connections open between sized answers (streamed ones close).
    """

    def __init__(self, *, keep_alive: bool = False) -> None:
        self.keep_alive = keep_alive
        self._routes: dict[str, Handler] = {}
        self._log: list[LoggedRequest] = []
        self._lock = threading.Lock()
        self.errors: list[BaseException] = []
        # Set when the server stops, so that stalled handlers let go of their threads.
        self.stopping = threading.Event()
        self._httpd = ThreadingHTTPServer(("127.0.0.1", 0), _make_handler(self))
        self._httpd.daemon_threads = True
        self._httpd.block_on_close = False  # a stuck handler must not hang the test run
        self._thread = threading.Thread(
            target=self._httpd.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True
        )

    @property
    def port(self) -> int:
        return int(self._httpd.server_address[1])

    @property
    def base_url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def url(self, path: str) -> str:
        return self.base_url + path

    @property
    def requests(self) -> list[LoggedRequest]:
        """A snapshot of the requests answered so far, in the order they finished."""
        with self._lock:
            return list(self._log)

    def requests_to(self, path: str) -> list[LoggedRequest]:
        return [entry for entry in self.requests if urlsplit(entry.path).path == path]

    def route(self, path: str, handler: Handler) -> str:
        """Answer requests for `path` (query string ignored) with `handler`; returns the URL."""
        with self._lock:
            self._routes[path] = handler
        return self.url(path)

    def serve_feed(
        self,
        path: str,
        body: bytes,
        content_type: str = "application/rss+xml; charset=utf-8",
        *,
        etag: bool | str = True,
        last_modified: datetime | str | None = None,
        headers: dict[str, str] | None = None,
    ) -> str:
        """Serve a document the way a well-behaved feed server does, 304s included.

        `etag=True` derives a strong ETag from the body, a string is used as given and
        False sends none. Calling it again for the same path replaces the document.
        """
        tag = f'"{hashlib.sha256(body).hexdigest()[:16]}"' if etag is True else etag or None
        stamp = (
            format_datetime(last_modified.astimezone(UTC), usegmt=True)
            if isinstance(last_modified, datetime)
            else last_modified
        )
        reply_headers = {"Content-Type": content_type, **(headers or {})}
        if tag:
            reply_headers["ETag"] = tag
        if stamp:
            reply_headers["Last-Modified"] = stamp

        def handler(request: Request) -> Reply:
            if _not_modified(request.headers, tag, stamp):
                return 304, {k: v for k, v in reply_headers.items() if k != "Content-Type"}, b""
            return 200, reply_headers, body

        return self.route(path, handler)

    def redirect(self, path: str, location: str, status: int = 301) -> str:
        return self.route(path, lambda request: (status, {"Location": location}, b""))

    def stall(self, path: str) -> str:
        """Accept requests for `path` and never answer them (until the server stops)."""

        def silence(request: Request) -> Reply:
            self.stopping.wait()
            return 503, {}, b""

        return self.route(path, silence)

    def __enter__(self) -> FeedServer:
        self._thread.start()
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stopping.set()
        self._httpd.shutdown()
        self._httpd.server_close()
        self._thread.join(timeout=5)

    # Called from the handler threads.
    def _handler_for(self, path: str) -> Handler | None:
        with self._lock:
            return self._routes.get(urlsplit(path).path)

    def _record(self, entry: LoggedRequest) -> None:
        with self._lock:
            self._log.append(entry)

    def _record_error(self, exc: BaseException) -> None:
        with self._lock:
            self.errors.append(exc)


def _not_modified(headers: dict[str, str], etag: str | None, last_modified: str | None) -> bool:
    # RFC 9110: If-None-Match wins over If-Modified-Since when both are sent.
    if "if-none-match" in headers:
        tags = {tag.strip() for tag in headers["if-none-match"].split(",")}
        return etag is not None and (etag in tags or "*" in tags)
    since, stamp = headers.get("if-modified-since"), last_modified
    if not since or not stamp:
        return False
    try:
        return parsedate_to_datetime(stamp) <= parsedate_to_datetime(since)
    except (TypeError, ValueError):
        return False


def _make_handler(server: FeedServer) -> type[BaseHTTPRequestHandler]:
    class _Handler(BaseHTTPRequestHandler):
        # HTTP/1.0: one request per connection, bodies may end with the connection.
        protocol_version = "HTTP/1.1" if server.keep_alive else "HTTP/1.0"

        def do_GET(self) -> None:
            self._dispatch()

        def do_HEAD(self) -> None:
            self._dispatch()

        def do_POST(self) -> None:
            self._dispatch()

        def _dispatch(self) -> None:
            started = time.monotonic()
            headers = {name.lower(): value for name, value in self.headers.items()}
            logged = False

            def log() -> None:
                nonlocal logged
                if not logged:
                    logged = True
                    port = int(self.client_address[1])
                    server._record(
                        LoggedRequest(self.path, headers, started, time.monotonic(), port)
                    )

            try:
                self._answer(Request(self.command, self.path, headers), log)
            except (BrokenPipeError, ConnectionResetError):
                pass  # the client gave up, as clients under test often do on purpose
            finally:
                log()

        def _answer(self, request: Request, log: Callable[[], None]) -> None:
            handler = server._handler_for(request.path)
            reply: Reply = (404, {"Content-Type": "text/plain"}, b"not found")
            if handler is not None:
                try:
                    reply = handler(request)
                except Exception as exc:
                    server._record_error(exc)
                    reply = (500, {"Content-Type": "text/plain"}, repr(exc).encode())
            status, headers, body = reply
            bodiless = request.method == "HEAD" or status == 304
            self.send_response(status)
            for name, value in headers.items():
                self.send_header(name, value)
            if isinstance(body, bytes) and not any(n.lower() == "content-length" for n in headers):
                self.send_header("Content-Length", str(len(body)))
            if not isinstance(body, bytes) and server.keep_alive:
                self.send_header("Connection", "close")  # only its end can end this body
                self.close_connection = True
            if bodiless or isinstance(body, bytes):
                # The client is done as soon as a sized answer's last byte arrives, and a
                # test may then read `srv.requests`: log before sending it.
                log()
            self.end_headers()
            if bodiless:
                return
            for chunk in [body] if isinstance(body, bytes) else body:
                self.wfile.write(chunk)
                self.wfile.flush()

        def log_message(self, format: str, *args: object) -> None:
            pass  # keep test output quiet; srv.requests is the log

    return _Handler
