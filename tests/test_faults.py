"""The fault matrix: every way a feed server can fail us or attack us, through the real pipeline.

Each case plays one fault on a real HTTP server on 127.0.0.1 while a healthy neighbour
source is polled in the same cycles, runs `Pipeline.run_cycle` over a SQLite file, and
checks what `aggregator sources list` would show afterwards: status, last HTTP status,
error code and count, next check and URL, and that the neighbour was fetched normally.
Name lookups are answered by a stand-in resolver, so that a name resolving to a private
address is refused without any packet leaving the machine.
"""

from __future__ import annotations

import asyncio
import codecs
import dataclasses
import gzip
import ipaddress
import socket
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from email.utils import format_datetime
from pathlib import Path
from typing import Any, NamedTuple

import httpx
import pytest
from httpserver import FeedServer, LoggedRequest, Reply, Request
from sqlmodel import select

from aggregator.cli import main
from aggregator.fetch import guard
from aggregator.pipeline import CycleReport, Pipeline
from aggregator.settings import FetchSettings, Settings, SourceConfig, parse_settings
from aggregator.store import Store, open_store
from aggregator.store.database import SourceStatus
from aggregator.store.models import Entry

T0 = datetime(2024, 8, 6, 12, tzinfo=UTC)
STEP = timedelta(days=2)  # longer than any interval with its jitter: every source is due again
DEFAULT = 900.0  # fetch.default_interval, the first error's wait
LATER = 1.1  # the most jitter adds (fetch.jitter = 0.1)
MAX_BODY = 100_000
SECRET = "xxe-secret-3f9c1"
PRIVATE_NAME = "intranet.example"

NEIGHBOUR = b"""<?xml version="1.0" encoding="utf-8"?>
<rss version="2.0"><channel><title>Neighbour</title><link>http://neighbour.test/</link>
<item><title>All is well</title><link>http://neighbour.test/1</link><guid>n1</guid></item>
</channel></rss>"""


def rss(title: str = "First report", encoding: str = "utf-8") -> bytes:
    document = (
        f'<?xml version="1.0" encoding="{encoding}"?>'
        '<rss version="2.0"><channel><title>Outlet</title><link>http://outlet.test/</link>'
        f"<item><title>{title}</title><link>http://outlet.test/1</link><guid>one</guid></item>"
        "</channel></rss>"
    )
    return document.encode("utf-8" if encoding.lower() in ("utf-8", "iso-8859-1") else encoding)


BILLION_LAUGHS = (
    b'<?xml version="1.0"?>\n<!DOCTYPE rss [\n <!ENTITY lol "lol">\n'
    + b"".join(
        b' <!ENTITY lol%d "%s">\n' % (n, (b"&lol%d;" % (n - 1) if n > 1 else b"&lol;") * 10)
        for n in range(1, 10)
    )
    + b']>\n<rss version="2.0"><channel><title>Laughs</title>'
    b"<item><title>&lol9;</title><guid>laugh</guid><description>&lol9;</description></item>"
    b"</channel></rss>"
)


def LoopbackAllowed(**values: Any) -> FetchSettings:  # noqa: N802 - reads like the settings type
    """FetchSettings that refuse private networks but admit loopback, where test servers live."""
    return FetchSettings(**{"allowed_networks": "127.0.0.0/8", **values})


class Ctx(NamedTuple):
    """What a case needs to set up its server."""

    srv: FeedServer
    tmp: Path


class Clock:
    def __init__(self, now: datetime) -> None:
        self.now = now

    def __call__(self) -> datetime:
        return self.now


@dataclass(frozen=True)
class Run:
    """What a case's cycles left behind."""

    ctx: Ctx
    store: Store
    reports: list[CycleReport]
    last_poll: datetime
    faulty: SourceStatus
    neighbour: SourceStatus

    def requests_to(self, path: str) -> list[LoggedRequest]:
        return self.ctx.srv.requests_to(path)

    def entry_texts(self) -> list[str]:
        with self.store.session() as session:
            rows = session.exec(select(Entry).where(Entry.source_id == self.faulty.id)).all()
            return [f"{row.title}\n{row.text}\n{row.summary}" for row in rows]


@dataclass(frozen=True)
class Case:
    """One row of the matrix: the fault, how many cycles, and the stored state expected."""

    id: str
    serve: Callable[[Ctx], str]  # sets up the server; returns the source's URL
    polls: int = 1
    status: str = "ok"
    error_code: str | None = None
    error_count: int = 0
    http_status: int | None = 200
    wait: float | None = DEFAULT  # seconds from the last poll to the next check, before jitter
    url: Callable[[Ctx], str] | None = None  # the stored URL expected; None: unchanged
    entries: int = 0
    requests: int | None = None  # requests to /feed the server saw, when it matters
    check: Callable[[Run], None] | None = None


# --- what the server plays ------------------------------------------------------------


def feed(**options: Any) -> Callable[[Ctx], str]:
    return lambda ctx: ctx.srv.serve_feed("/feed", rss(), **options)


def answer(status: int, headers: dict[str, str] | None = None, body: bytes = b"") -> Callable:
    return lambda ctx: ctx.srv.route("/feed", lambda req: (status, headers or {}, body))


def redirect(status: int) -> Callable[[Ctx], str]:
    def serve(ctx: Ctx) -> str:
        ctx.srv.serve_feed("/moved", rss())
        return ctx.srv.redirect("/feed", "/moved", status)

    return serve


def redirect_loop(ctx: Ctx) -> str:
    ctx.srv.redirect("/loop", "/feed", 301)
    return ctx.srv.redirect("/feed", "/loop", 301)


def retry_at_http_date(ctx: Ctx) -> str:
    # Against the server's own clock (its Date header), as a real server would write it.
    def reply(req: Request) -> Reply:
        when = datetime.now(UTC) + timedelta(hours=3)
        return 429, {"Retry-After": format_datetime(when, usegmt=True)}, b"slow down"

    return ctx.srv.route("/feed", reply)


def refused(ctx: Ctx) -> str:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    return f"http://127.0.0.1:{port}/feed"  # bound, released: nothing listens there


def never_answers(ctx: Ctx) -> str:
    return ctx.srv.stall("/feed")


def dribbles(ctx: Ctx) -> str:
    def slowly(req: Request) -> Reply:
        def chunks() -> Iterator[bytes]:
            yield b'<?xml version="1.0"?><rss version="2.0"><channel>'
            while not ctx.srv.stopping.wait(0.1):  # a byte every 0.1 s, until told to stop
                yield b" "

        return 200, {"Content-Type": "application/rss+xml"}, chunks()

    return ctx.srv.route("/feed", slowly)


def gzip_bomb(ctx: Ctx) -> str:
    bomb = gzip.compress(b"\0" * 20_000_000, compresslevel=9)
    return ctx.srv.route("/feed", lambda req: (200, {"Content-Encoding": "gzip"}, bomb))


def xxe(ctx: Ctx) -> str:
    secret = ctx.tmp / "secret.txt"
    secret.write_text(SECRET)
    document = (
        f'<?xml version="1.0"?><!DOCTYPE rss [<!ENTITY xxe SYSTEM "file://{secret}">]>'
        '<rss version="2.0"><channel><title>XXE</title>'
        "<item><title>Leak &xxe;</title><guid>leak</guid><description>&xxe;</description>"
        "</item></channel></rss>"
    ).encode()
    return ctx.srv.serve_feed("/feed", document)


def misdeclared(ctx: Ctx) -> str:
    # The common lie: every text/* answer labelled latin-1, the feed really UTF-8.
    return ctx.srv.serve_feed("/feed", rss("Курськ", "utf-8"), "text/xml; charset=iso-8859-1")


def cp1251_as_utf8(ctx: Ctx) -> str:
    body = rss("Курськ", "windows-1251").replace(b"windows-1251", b"utf-8")
    return ctx.srv.serve_feed("/feed", body, "application/rss+xml; charset=utf-8")


def with_bom(ctx: Ctx) -> str:
    return ctx.srv.serve_feed("/feed", codecs.BOM_UTF8 + rss())


def to_private_hop(ctx: Ctx) -> str:
    return ctx.srv.redirect("/feed", f"http://{PRIVATE_NAME}/admin", 302)


def private_name(ctx: Ctx) -> str:
    return f"http://{PRIVATE_NAME}:{ctx.srv.port}/feed"


# --- what is checked beyond the table -------------------------------------------------


def sent_validators(*expected: str) -> Callable[[Run], None]:
    def check(run: Run) -> None:
        second = run.requests_to("/feed")[-1].headers
        sent = {name for name in ("if-none-match", "if-modified-since") if name in second}
        assert sent == set(expected)

    return check


def parsing_skipped(run: Run) -> None:
    # The second cycle: the neighbour's 304 and our unchanged body, not parsed again.
    assert run.reports[-1].not_modified == 2 and run.reports[-1].new_entries == 0


def nothing_expanded(run: Run) -> None:
    [text] = run.entry_texts()
    assert "lollol" not in text and len(text) < 200


def no_file_read(run: Run) -> None:
    assert run.entry_texts() and not any(SECRET in text for text in run.entry_texts())


def title_is(title: str) -> Callable[[Run], None]:
    def check(run: Run) -> None:
        assert any(text.startswith(title) for text in run.entry_texts()), run.entry_texts()

    return check


def only_the_first_hop(run: Run) -> None:
    assert [r.path for r in run.ctx.srv.requests if r.path != "/neighbour.xml"] == ["/feed"]


MATRIX = [
    Case("200", feed(), entries=1),
    Case(
        "304",
        feed(last_modified=T0),
        polls=2,
        http_status=304,
        wait=86400,  # one entry in two days: polled daily
        entries=1,
        check=sent_validators("if-none-match", "if-modified-since"),
    ),
    Case(
        "etag-only",
        feed(etag=True),
        polls=2,
        http_status=304,
        wait=86400,
        entries=1,
        check=sent_validators("if-none-match"),
    ),
    Case(
        "last-modified-only",
        feed(etag=False, last_modified=T0),
        polls=2,
        http_status=304,
        wait=86400,
        entries=1,
        check=sent_validators("if-modified-since"),
    ),
    Case(
        "unchanged-body-without-304",
        answer(200, {"Content-Type": "application/rss+xml"}, rss()),
        polls=2,
        wait=86400,
        entries=1,
        check=parsing_skipped,
    ),
    *(
        Case(
            f"{status}-adopted-after-3-polls",
            redirect(status),
            polls=3,
            http_status=304,
            wait=86400,
            url=lambda ctx: ctx.srv.url("/moved"),
            entries=1,
        )
        for status in (301, 308)
    ),
    *(
        Case(
            f"{status}-never-adopted",
            redirect(status),
            polls=3,
            http_status=304,
            wait=86400,
            entries=1,
            requests=3,
        )
        for status in (302, 307)
    ),
    Case(
        "redirect-loop",
        redirect_loop,
        status="error",
        error_code="too_many_redirects",
        error_count=1,
        http_status=301,
    ),
    Case(
        "redirect-to-file-scheme",
        lambda ctx: ctx.srv.redirect("/feed", "file:///etc/passwd", 302),
        status="error",
        error_code="bad_redirect",
        error_count=1,
        http_status=302,
    ),
    Case("404", answer(404), status="error", error_code="http_404", error_count=1, http_status=404),
    Case(
        "410-disables",
        answer(410),
        polls=2,
        status="gone",
        error_code="http_410",
        error_count=1,
        http_status=410,
        wait=None,
        requests=1,  # never polled again
    ),
    Case(
        "429-retry-after-seconds",
        answer(429, {"Retry-After": "7200"}),
        status="error",
        error_code="http_429",
        error_count=1,
        http_status=429,
        wait=7200,
    ),
    Case(
        "429-retry-after-http-date",
        retry_at_http_date,
        status="error",
        error_code="http_429",
        error_count=1,
        http_status=429,
        wait=3 * 3600,
    ),
    Case(
        "500-backs-off-exponentially",
        answer(500),
        polls=2,
        status="error",
        error_code="http_500",
        error_count=2,
        http_status=500,
        wait=2 * DEFAULT,
    ),
    Case("503", answer(503), status="error", error_code="http_503", error_count=1, http_status=503),
    Case(
        "503-retry-after",
        answer(503, {"Retry-After": "3600"}),
        status="error",
        error_code="http_503",
        error_count=1,
        http_status=503,
        wait=3600,
    ),
    Case(
        "connection-refused",
        refused,
        status="error",
        error_code="connect",
        error_count=1,
        http_status=None,
    ),
    Case(
        "accepts-never-answers",
        never_answers,
        status="error",
        error_code="timeout",
        error_count=1,
        http_status=None,
    ),
    Case(
        "dribbles-slowly",
        dribbles,
        status="error",
        error_code="timeout",
        error_count=1,
        http_status=200,
    ),
    Case(
        "body-over-the-cap",
        answer(200, {}, b"<rss>" + b"x" * (2 * MAX_BODY)),
        status="error",
        error_code="too_large",
        error_count=1,
    ),
    Case("gzip-bomb", gzip_bomb, status="error", error_code="too_large", error_count=1),
    Case(
        "billion-laughs",
        answer(200, {"Content-Type": "application/rss+xml"}, BILLION_LAUGHS),
        entries=1,
        check=nothing_expanded,
    ),
    Case("xxe-local-file", xxe, entries=1, check=no_file_read),
    Case(
        "html-instead-of-feed",
        answer(200, {"Content-Type": "text/html"}, b"<!doctype html><html><body>Hi</body></html>"),
        status="error",
        error_code="not_a_feed",
        error_count=1,
    ),
    Case("wrong-declared-charset", misdeclared, entries=1, check=title_is("Курськ")),
    Case("cp1251-declared-utf-8", cp1251_as_utf8, entries=1, check=title_is("Курськ")),
    Case("utf-8-bom", with_bom, entries=1),
    Case("empty-body", answer(200), status="error", error_code="empty", error_count=1),
    Case(
        "binary-junk",
        answer(200, {"Content-Type": "application/octet-stream"}, bytes(range(256)) * 8),
        status="error",
        error_code="not_a_feed",
        error_count=1,
    ),
    Case(
        "name-resolving-to-a-private-address",
        private_name,
        status="error",
        error_code="private_address",
        error_count=1,
        http_status=None,
        requests=0,
    ),
    Case(
        "redirect-to-a-private-address",
        to_private_hop,
        status="error",
        error_code="private_address",
        error_count=1,
        http_status=302,
        check=only_the_first_hop,
    ),
]


# --- running a case -------------------------------------------------------------------


def fetch_settings(**overrides: Any) -> FetchSettings:
    values: dict[str, Any] = {
        "allow_private_networks": False,  # the guard is on; loopback is allowed by name
        "timeout_connect": 1.0,
        "timeout_read": 0.5,
        "timeout_total": 1.5,
        "max_body_bytes": MAX_BODY,
        **overrides,
    }
    return LoopbackAllowed(**values)


def settings_with(sources: list[SourceConfig], **fetch: Any) -> Settings:
    base = parse_settings("", environ={})
    return dataclasses.replace(base, sources=tuple(sources), fetch=fetch_settings(**fetch))


@pytest.fixture(autouse=True)
def fake_dns(monkeypatch: pytest.MonkeyPatch) -> list[str]:
    """Names resolve here, never through DNS; returns the names asked for."""
    answers = {"localhost": "127.0.0.1", PRIVATE_NAME: "10.20.30.40"}
    asked: list[str] = []

    async def resolve(host: str, port: int) -> list[Any]:
        asked.append(host)
        if host not in answers:
            raise socket.gaierror(socket.EAI_NONAME, "Name or service not known")
        return [ipaddress.ip_address(answers[host])]

    monkeypatch.setattr(guard, "system_resolve", resolve)
    return asked


@pytest.fixture
def srv() -> Iterator[FeedServer]:
    with FeedServer() as server:
        yield server
    assert not server.errors, server.errors


def cycles(pipeline: Pipeline, clock: Clock, polls: int) -> list[CycleReport]:
    reports = []
    for n in range(polls):
        if n:
            clock.now += STEP
        reports.append(asyncio.run(pipeline.run_cycle()))
    return reports


@pytest.mark.parametrize("case", MATRIX, ids=lambda case: case.id)
def test_fault(case: Case, srv: FeedServer, sqlite_store: Store, tmp_path: Path) -> None:
    ctx = Ctx(srv, tmp_path)
    url = case.serve(ctx)
    srv.serve_feed("/neighbour.xml", NEIGHBOUR)
    sources = [
        SourceConfig(name="Faulty", url=url),
        SourceConfig(name="Neighbour", url=srv.url("/neighbour.xml")),
    ]
    clock = Clock(T0)
    reports = cycles(Pipeline(settings_with(sources), sqlite_store, clock=clock), clock, case.polls)

    statuses = {s.name: s for s in sqlite_store.source_statuses()}
    run = Run(ctx, sqlite_store, reports, clock.now, statuses["Faulty"], statuses["Neighbour"])
    faulty = run.faulty
    assert (faulty.status, faulty.last_error_code, faulty.error_count) == (
        case.status,
        case.error_code,
        case.error_count,
    ), faulty.last_error
    assert faulty.last_http_status == case.http_status
    assert faulty.url == (case.url(ctx) if case.url else url)
    assert faulty.entries == case.entries
    if case.error_code:
        assert faulty.last_error and 20 < len(faulty.last_error) < 400
        assert "Traceback" not in faulty.last_error and "bug" not in faulty.last_error
    if case.wait is not None:
        assert faulty.next_check_at is not None
        waited = (faulty.next_check_at - clock.now).total_seconds()
        assert case.wait - 2 <= waited <= case.wait * LATER + 2, waited
    if case.requests is not None:
        assert len(srv.requests_to("/feed")) == case.requests
    if case.check:
        case.check(run)
    # The neighbour, polled in the same cycles, did not notice.
    neighbour = run.neighbour
    assert (neighbour.status, neighbour.error_count, neighbour.entries) == ("ok", 0, 1)
    assert neighbour.last_checked_at == clock.now
    assert len(srv.requests_to("/neighbour.xml")) == case.polls


# --- politeness, through the pipeline -------------------------------------------------


class GatedTransport(httpx.AsyncBaseTransport):
    """Holds every request until the test lets it go; answers with a small feed."""

    def __init__(self) -> None:
        self.held: list[asyncio.Event] = []
        self.arrived = asyncio.Event()

    async def handle_async_request(self, request: httpx.Request) -> httpx.Response:
        gate = asyncio.Event()
        self.held.append(gate)
        self.arrived.set()
        await gate.wait()
        return httpx.Response(200, headers={"Content-Type": "application/rss+xml"}, content=rss())


async def held_at_each_release(transport: GatedTransport, releases: int) -> list[int]:
    """How many requests were held at once each time one was let go; no clock involved."""
    counts = []
    for _ in range(releases):
        async with asyncio.timeout(60):  # a failsafe against hanging, not a measurement
            await transport.arrived.wait()
        for _ in range(300):  # let every poll that may start reach the transport
            await asyncio.sleep(0)
        counts.append(len(transport.held))
        transport.held.pop(0).set()
        transport.arrived.clear()
        if transport.held:
            transport.arrived.set()
    return counts


@pytest.mark.parametrize(("limit", "expected"), [(1, [1, 1]), (2, [2, 1])])
def test_two_sources_on_one_host_overlap_only_as_far_as_the_per_host_limit_allows(
    sqlite_store: Store, limit: int, expected: list[int]
) -> None:
    sources = [SourceConfig(name=f"Section {n}", url=f"http://localhost/s{n}") for n in (1, 2)]
    settings = settings_with(sources, per_host_concurrency=limit, concurrency=8)
    transport = GatedTransport()
    pipeline = Pipeline(settings, sqlite_store, clock=Clock(T0), transport=transport)

    async def cycle() -> tuple[CycleReport, list[int]]:
        return await asyncio.gather(pipeline.run_cycle(), held_at_each_release(transport, 2))

    report, held = asyncio.run(cycle())

    assert (report.polled, report.errors) == (2, 0)
    assert held == expected  # with a limit of one: one after the other, never side by side


def test_a_host_wide_rate_limit_holds_back_every_source_of_the_host(
    srv: FeedServer, sqlite_store: Store
) -> None:
    srv.route(
        "/a", lambda req: (429, {"Retry-After": "3600", "RateLimit-Policy": "100;w=3600"}, b"")
    )
    for path in ("/b", "/c"):
        srv.serve_feed(path, rss())
    srv.serve_feed("/elsewhere", NEIGHBOUR)
    sources = [SourceConfig(name=name, url=srv.url(f"/{name}")) for name in ("a", "b", "c")]
    # "localhost" is another host to the limiter (the same server to us).
    other = SourceConfig(name="elsewhere", url=f"http://localhost:{srv.port}/elsewhere")
    clock = Clock(T0)
    pipeline = Pipeline(settings_with([*sources, other], per_host_concurrency=1), sqlite_store)
    pipeline.clock = clock

    asyncio.run(pipeline.run_cycle())
    clock.now += timedelta(minutes=30)
    asyncio.run(pipeline.run_cycle())

    statuses = {s.name: s for s in sqlite_store.source_statuses()}
    assert [r.path for r in srv.requests if r.path != "/elsewhere"] == ["/a"]
    assert (statuses["a"].status, statuses["a"].last_error_code) == ("error", "http_429")
    for name in ("b", "c"):  # never asked, so nothing to count against them
        held = statuses[name]
        assert (held.status, held.error_count, held.last_error) == ("new", 0, None)
        assert held.next_check_at is not None and held.next_check_at >= T0 + timedelta(hours=1)
    assert statuses["elsewhere"].status == "ok" and statuses["elsewhere"].entries == 1


def test_a_rate_limit_without_host_wide_signs_holds_back_only_its_source(
    srv: FeedServer, sqlite_store: Store
) -> None:
    srv.route("/a", lambda req: (429, {"Retry-After": "3600"}, b""))
    srv.serve_feed("/b", rss())
    sources = [SourceConfig(name=name, url=srv.url(f"/{name}")) for name in ("a", "b")]
    settings = settings_with(sources, per_host_concurrency=1)

    asyncio.run(Pipeline(settings, sqlite_store, clock=Clock(T0)).run_cycle())

    statuses = {s.name: s for s in sqlite_store.source_statuses()}
    assert statuses["a"].last_error_code == "http_429"
    assert (statuses["b"].status, statuses["b"].entries) == ("ok", 1)


def test_a_new_source_is_requested_once(srv: FeedServer, sqlite_store: Store) -> None:
    srv.serve_feed("/old", NEIGHBOUR)
    srv.serve_feed("/new", rss())
    old = SourceConfig(name="old", url=srv.url("/old"))
    clock = Clock(T0)
    pipeline = Pipeline(settings_with([old]), sqlite_store, clock=clock)
    asyncio.run(pipeline.run_cycle())

    pipeline.apply_settings(settings_with([old, SourceConfig(name="new", url=srv.url("/new"))]))
    for _ in range(3):
        clock.now += timedelta(minutes=1)
        asyncio.run(pipeline.run_cycle())

    assert len(srv.requests_to("/new")) == 1 and len(srv.requests_to("/old")) == 1
    new = next(s for s in sqlite_store.source_statuses() if s.name == "new")
    assert (new.status, new.entries) == ("ok", 1)


def test_an_adopted_url_survives_a_restart(srv: FeedServer, sqlite_store: Store) -> None:
    url = redirect(301)(Ctx(srv, Path()))
    settings = settings_with([SourceConfig(name="moved", url=url)])
    clock = Clock(T0)
    cycles(Pipeline(settings, sqlite_store, clock=clock), clock, 3)
    assert sqlite_store.source_statuses()[0].url == srv.url("/moved")

    clock.now += STEP
    asyncio.run(Pipeline(settings, sqlite_store, clock=clock).run_cycle())

    assert sqlite_store.source_statuses()[0].url == srv.url("/moved")

    # the operator giving a new address wins over the adopted one
    sqlite_store.sync_sources([SourceConfig(name="moved", url=srv.url("/elsewhere"))], clock.now)
    assert sqlite_store.source_statuses()[0].url == srv.url("/elsewhere")


def test_sources_list_shows_what_each_fault_left(
    srv: FeedServer, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    srv.route("/limited", lambda req: (429, {"Retry-After": "7200"}, b""))
    srv.serve_feed("/feed", rss())
    database = tmp_path / "agg.db"
    config = tmp_path / "aggregator.toml"
    config.write_text(
        f'database_url = "sqlite:///{database}"\n[fetch]\nallow_private_networks = true\n'
        f'[[sources]]\nname = "Limited"\nurl = "{srv.url("/limited")}"\n'
        f'[[sources]]\nname = "Fine"\nurl = "{srv.url("/feed")}"\n'
    )
    store = open_store(f"sqlite:///{database}")
    settings = dataclasses.replace(
        parse_settings(config.read_text(), environ={}), fetch=fetch_settings()
    )
    asyncio.run(Pipeline(settings, store, clock=Clock(T0)).run_cycle())
    store.close()

    assert main(["--config", str(config), "sources", "list"]) == 0

    listing = capsys.readouterr().out
    header, *lines = listing.splitlines()
    for column in ("STATUS", "HTTP", "ERRS", "ENTRIES", "NEXT CHECK"):
        assert column in header
    limited = next(line for line in lines if line.startswith("Limited"))
    assert "error" in limited and " 429 " in limited and "2024-08-06 14:" in limited
    assert "last error (http_429)" in listing and "Retry-After: 7200" in listing
    fine = next(line for line in lines if line.startswith("Fine"))
    assert " ok " in fine and " 200 " in fine
