"""The feed server's connections: uvicorn's HTTP/1.1 protocol with two bounds added.

uvicorn times out a connection only after a response; a client that connects and
sends nothing, or half a request line, kept its socket open for ever, and a few
hundred of those used up the process's file descriptors (dispatch and reload then
failed with EMFILE). Here a client has `header_timeout` seconds, from connecting or
from its last response, to send a whole request's headers; and the open connections
are capped, well below the descriptor limit: past the cap, the connection that has
waited longest for a request is closed to make room for the new one.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import logging
import resource
import socket
from collections import OrderedDict
from collections.abc import Iterator
from typing import Any

import uvicorn
from uvicorn.protocols.http.h11_impl import H11Protocol
from uvicorn.server import ServerState

from aggregator.errors import AggregatorError

log = logging.getLogger(__name__)

HEADER_TIMEOUT_SECONDS = 10.0  # a slow mobile client sends its headers in well under a second
KEEP_ALIVE_SECONDS = 5  # uvicorn's default: an idle keep-alive connection is closed sooner
# Connections may take half the file descriptors. A burst of new ones takes more
# for a moment: asyncio accepts up to one backlog's worth of sockets per loop turn,
# and about three turns pass before the protocol sees one and makes room, so the
# backlog is a sixteenth. What is left stays for the database, the feeds being
# fetched, the settings file and the log.
CONNECTION_SHARE = 0.5
BURST_SHARE = 1 / 16
MIN_CONNECTIONS = 16
MIN_BACKLOG, MAX_BACKLOG = 16, 2048  # uvicorn's default is the maximum
UNLIMITED_DESCRIPTORS = 65536  # what to assume when the limit itself is unlimited


def descriptor_limit() -> int:
    soft, _ = resource.getrlimit(resource.RLIMIT_NOFILE)
    return UNLIMITED_DESCRIPTORS if soft == resource.RLIM_INFINITY else int(soft)


def connection_cap(descriptors: int) -> int:
    """How many connections the server keeps open at most."""
    return max(MIN_CONNECTIONS, int(descriptors * CONNECTION_SHARE))


def accept_batch(descriptors: int) -> int:
    """The listen backlog, which is also how many sockets asyncio accepts in one go."""
    return min(MAX_BACKLOG, max(MIN_BACKLOG, int(descriptors * BURST_SHARE)))


class ServerConfig(uvicorn.Config):
    """uvicorn's settings plus the bounds; the protocol reads them from its config."""

    def __init__(
        self,
        app: Any,
        *,
        host: str,
        port: int,
        header_timeout: float = HEADER_TIMEOUT_SECONDS,
        max_connections: int | None = None,
    ) -> None:
        descriptors = descriptor_limit()
        super().__init__(
            app,
            host=host,
            port=port,
            http=BoundedH11Protocol,
            timeout_keep_alive=KEEP_ALIVE_SECONDS,
            backlog=accept_batch(descriptors),
            log_level="warning",
            lifespan="off",
        )
        self.header_timeout = header_timeout
        self.max_connections = max_connections or connection_cap(descriptors)
        self.open: set[BoundedH11Protocol] = set()
        # Connections between requests, longest waiting first: the first to go at the cap.
        self.waiting: OrderedDict[BoundedH11Protocol, None] = OrderedDict()
        self.warned_at_cap = False


class BoundedH11Protocol(H11Protocol):
    """One connection: a deadline for each request's headers, and room made at the cap."""

    def __init__(
        self,
        config: uvicorn.Config,
        server_state: ServerState,
        app_state: dict[str, Any],
        _loop: asyncio.AbstractEventLoop | None = None,
    ) -> None:
        super().__init__(config, server_state, app_state, _loop)
        assert isinstance(config, ServerConfig)
        self.bounds = config
        self._deadline: asyncio.TimerHandle | None = None
        self._unsent = 0  # bytes of the last response the client had not read yet

    def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
        super().connection_made(transport)
        self.bounds.open.add(self)
        self._await_request()
        self._make_room()

    def data_received(self, data: bytes) -> None:
        super().data_received(data)
        if not self._between_requests():
            self._forget_deadline()

    def on_response_complete(self) -> None:
        super().on_response_complete()
        # A pipelined request may have started already; then its own response re-arms.
        if not self.transport.is_closing() and self._between_requests():
            self._await_request()

    def connection_lost(self, exc: Exception | None) -> None:
        self._forget_deadline()
        self.bounds.open.discard(self)
        super().connection_lost(exc)

    # -- the bounds ---------------------------------------------------------

    def _between_requests(self) -> bool:
        return self.cycle is None or self.cycle.response_complete

    def _await_request(self) -> None:
        self._forget_deadline()
        self._unsent = self.transport.get_write_buffer_size()
        self._deadline = self.loop.call_later(self.bounds.header_timeout, self._expire)
        self.bounds.waiting[self] = None

    def _forget_deadline(self) -> None:
        if self._deadline is not None:
            self._deadline.cancel()
            self._deadline = None
        self.bounds.waiting.pop(self, None)

    def _expire(self) -> None:
        self._deadline = None
        unsent = self.transport.get_write_buffer_size()
        if 0 < unsent < self._unsent:
            # Still reading its last response, slowly but steadily: give it more time.
            self._await_request()
            return
        # abort, not close: close would wait for a client that never reads its response.
        self._drop()

    def _drop(self) -> None:
        self._forget_deadline()
        self.bounds.open.discard(self)
        self.transport.abort()

    def _make_room(self) -> None:
        excess = len(self.bounds.open) - self.bounds.max_connections
        if excess <= 0:
            return
        if not self.bounds.warned_at_cap:
            self.bounds.warned_at_cap = True
            log.warning(
                "%d connections are open, the most this server keeps (half the file "
                "descriptor limit: raise LimitNOFILE or ulimit -n for more); the longest "
                "waiting for a request are closed to make room",
                self.bounds.max_connections,
            )
        for idle in list(itertools.islice(self.bounds.waiting, excess + 1)):
            if excess > 0 and idle is not self:
                idle._drop()
                excess -= 1
        if excess > 0:  # every other connection is in the middle of a request
            self._drop()


def feed_server(
    app: Any,
    host: str,
    port: int,
    *,
    header_timeout: float = HEADER_TIMEOUT_SECONDS,
    max_connections: int | None = None,
) -> uvicorn.Server:
    """A uvicorn server for `app` with the bounds above, leaving signals to the process."""
    config = ServerConfig(
        app, host=host, port=port, header_timeout=header_timeout, max_connections=max_connections
    )
    return QuietServer(config)


def _check_can_listen(host: str, port: int) -> None:
    """Bind the address as uvicorn will (SO_REUSEADDR), then let it go."""
    try:
        family, kind, proto, _, address = socket.getaddrinfo(
            host, port, type=socket.SOCK_STREAM, flags=socket.AI_PASSIVE
        )[0]
        with socket.socket(family, kind, proto) as probe:
            probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            probe.bind(address)
    except OSError as exc:
        raise AggregatorError(
            f"the web server cannot listen on {host}:{port} ({exc.strerror or exc}); is "
            "another aggregator running? Stop it, or choose another [server] host or port"
        ) from exc


async def serve_until(server: uvicorn.Server, stopping: asyncio.Event) -> None:
    """Run a uvicorn server until `stopping` is set (or the server ends by itself).

    Raises AggregatorError, naming the address, when nothing can listen there: uvicorn
    would log the cause and end the whole process instead."""
    _check_can_listen(server.config.host, server.config.port)
    serving = asyncio.create_task(server.serve())
    stop = asyncio.create_task(stopping.wait())
    await asyncio.wait({serving, stop}, return_when=asyncio.FIRST_COMPLETED)
    server.should_exit = True
    await serving
    stop.cancel()


class QuietServer(uvicorn.Server):
    """uvicorn without its own signal handling: the process owns SIGINT and SIGTERM."""

    @contextlib.contextmanager
    def capture_signals(self) -> Iterator[None]:
        yield
