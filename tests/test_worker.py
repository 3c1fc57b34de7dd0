"""The worker process: its jobs, their time limits, stopping, readiness, and how it is deployed.

In-process workers run on a real asyncio loop with feeds from 127.0.0.1; the
stopping test runs `aggregator run` as a process and sends it SIGTERM. The
deployment files are validated with the tools that read them: `docker compose
config` (or docker-compose) and `systemd-analyze verify`, skipped where absent.
"""

from __future__ import annotations

import asyncio
import dataclasses
import logging
import os
import re
import selectors
import shutil
import signal
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from datetime import UTC, datetime, timedelta
from email.utils import format_datetime
from pathlib import Path

import httpx
import pytest
import yaml
from httpserver import FeedServer, Request
from sqlalchemy import text
from test_reload import WorkerProcess

from aggregator.health import JobRecord, readiness
from aggregator.pipeline import Pipeline
from aggregator.settings import Settings, SourceConfig, parse_settings
from aggregator.store import Store
from aggregator.worker import Worker, feed_app

ROOT = Path(__file__).resolve().parent.parent
FEED = (
    b'<?xml version="1.0"?><rss version="2.0"><channel><title>t</title>'
    b"<link>http://x.test/</link><description>d</description>"
    b"<item><guid>a-1</guid><title>Troops cross the border near Sudzha</title>"
    b"<link>http://x.test/1</link><description>Report</description></item>"
    b"</channel></rss>"
)


@pytest.fixture
def outlets() -> Iterator[FeedServer]:
    with FeedServer() as server:
        server.serve_feed("/good.xml", FEED)
        server.stall("/hung.xml")
        yield server


def settings_for(server: FeedServer, *paths: str, **worker: float) -> Settings:
    base = parse_settings("", environ={})
    return dataclasses.replace(
        base,
        sources=tuple(SourceConfig(name=p, url=server.url(f"/{p}.xml")) for p in paths),
        # A hung server holds a poll until fetch.timeout_total: longer than the test.
        fetch=dataclasses.replace(
            base.fetch, allow_private_networks=True, timeout_total=120, timeout_read=120
        ),
        worker=dataclasses.replace(base.worker, **worker),
        # These tests are about jobs, not stories: the clusterer without a model is quick.
        cluster=dataclasses.replace(base.cluster, method="tfidf"),
    )


EVENT_WAIT = 30.0  # seconds: a bound on waiting for an event, reached only when it never comes


async def run_until(worker: Worker, happened: Callable[[], bool], what: str) -> None:
    """Run the worker until `happened()` (checked every few ms), then stop it; the whole
    run, stopping included, is bounded by EVENT_WAIT."""

    async def stop_when_it_happens() -> None:
        try:
            async with asyncio.timeout(EVENT_WAIT):
                while not happened():
                    await asyncio.sleep(0.02)
        finally:
            worker.stopping.set()

    watcher = asyncio.create_task(stop_when_it_happens())
    async with asyncio.timeout(2 * EVENT_WAIT):
        await worker.run(serve=False)
    try:
        await watcher
    except TimeoutError:
        raise AssertionError(f"{what} did not happen in {EVENT_WAIT} s") from None


def test_every_job_runs_once_at_a_time_coalesced_with_a_grace(sqlite_store: Store) -> None:
    settings = dataclasses.replace(parse_settings("", environ={}), path="aggregator.toml")
    worker = Worker(settings, sqlite_store)
    worker.watcher = object()  # type: ignore[assignment]  # any watcher adds the reload job
    jobs = {job.id: job for job in worker._schedule().get_jobs()}
    assert set(jobs) == {"dispatch", "cluster", "publish", "retention", "reload"}
    for job in jobs.values():
        assert job.max_instances == 1 and job.coalesce is True
        assert job.misfire_grace_time is not None and job.misfire_grace_time >= 1


def test_a_hung_fetch_is_cut_off_and_the_other_jobs_keep_running(
    outlets: FeedServer, sqlite_store: Store, caplog: pytest.LogCaptureFixture
) -> None:
    # lease 2 s: the dispatch job is stopped after 1.8 s, long before the fetch's own timeout
    settings = settings_for(outlets, "hung", lease_seconds=2, cycle_seconds=0.3)
    worker = Worker(settings, sqlite_store, stop_grace=1)
    publishes_while_hung: list[bool] = []
    publish = worker.pipeline.publish_step

    def counting_publish(deadline: float | None = None) -> list[str]:
        publishes_while_hung.append("dispatch" in worker._running)
        return publish(deadline)

    def dispatch_cut_off() -> bool:
        record = worker.health.snapshot().get("dispatch")
        return record is not None and record.consecutive_failures >= 1

    worker.pipeline.publish_step = counting_publish  # type: ignore[method-assign]
    caplog.set_level(logging.INFO)
    # the fetch would hang for 120 s: the run ending within EVENT_WAIT shows stopping is bounded
    asyncio.run(run_until(worker, dispatch_cut_off, "the hung dispatch was cut off"))

    assert "dispatch took longer than 1.8 s and was stopped" in caplog.text
    # The running dispatch claims what falls due meanwhile: no "skipped" warning each cycle.
    assert 'Execution of job "dispatch' not in caplog.text
    assert sum(publishes_while_hung) >= 2, "the publish job kept its schedule while the fetch hung"
    # the hung poll was rolled back: its source is free and due for any worker now
    claimed = sqlite_store.claim_due(worker.pipeline.clock(), "another", lease_s=60, limit=5)
    assert [r.name for r in claimed] == ["hung"]
    assert sqlite_store.leader() is not None and sqlite_store.leader().until is None  # type: ignore[union-attr]


def test_ready_after_a_successful_dispatch_and_not_once_stopping(
    outlets: FeedServer, sqlite_store: Store
) -> None:
    worker = Worker(settings_for(outlets, "good", cycle_seconds=0.2), sqlite_store)
    seen: list[bool] = [bool(worker.ready())]

    def dispatched() -> bool:
        if "dispatch" not in worker.health.snapshot():
            return False
        seen.append(bool(worker.ready()))
        return True

    asyncio.run(run_until(worker, dispatched, "a dispatch succeeded"))
    stopped = worker.ready()
    assert seen == [False, True]
    assert not stopped and "the scheduler is not running" in stopped.problems[0]
    assert sqlite_store.counts()["entries"] == 1


def test_ready_once_polls_are_stored_while_the_dispatch_job_still_runs(
    outlets: FeedServer, sqlite_store: Store
) -> None:
    # A hung source keeps the first dispatch job running (it hangs for longer than the
    # test, and the job's deadline is half the default lease, 150 s): the worker is
    # ready as soon as the healthy source's poll is stored, not when the job ends.
    worker = Worker(
        settings_for(outlets, "hung", "good", cycle_seconds=0.2), sqlite_store, stop_grace=1
    )
    first: list[asyncio.Task[object]] = []

    def ready_during_the_first_dispatch() -> bool:
        running = worker._running.get("dispatch")
        if running is not None and not first:
            first.append(running)
        return bool(first) and running is first[0] and bool(worker.ready())

    asyncio.run(
        run_until(worker, ready_during_the_first_dispatch, "ready during the first dispatch")
    )
    assert sqlite_store.counts()["entries"] == 1


def test_readyz_fails_once_publishing_failed_three_cycles_and_says_why(
    outlets: FeedServer, sqlite_store: Store, caplog: pytest.LogCaptureFixture
) -> None:
    worker = Worker(settings_for(outlets, "good"), sqlite_store)
    failures = [ValueError("template exploded")] * 4

    def publish_step(deadline: float | None = None) -> list[str]:
        if failures:
            raise failures.pop()
        return []

    worker.pipeline.publish_step = publish_step  # type: ignore[method-assign]
    app = feed_app(
        worker.settings, sqlite_store.document, ready=worker.ready, metrics=worker.metrics.render
    )

    async def readyz() -> httpx.Response:
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(transport=transport, base_url="http://feeds.test") as client:
            return await client.get("/readyz")

    async def main() -> list[httpx.Response]:
        worker.scheduler = worker._schedule()
        worker.scheduler.start(paused=True)  # running, but the test calls each job itself
        try:
            seen = []
            await worker.dispatch()
            for _ in range(4):  # four cycles: clustering works, publishing fails
                await worker.cluster()
                await worker.publish()
                seen.append(await readyz())
            await worker.publish()  # it works again
            seen.append(await readyz())
            return seen
        finally:
            worker.scheduler.shutdown(wait=False)
            worker.pipeline.close()

    caplog.set_level(logging.INFO)
    responses = asyncio.run(main())
    assert [r.status_code for r in responses] == [200, 200, 503, 503, 200]
    failing = responses[3].json()
    assert failing["ready"] is False
    assert failing["problems"] == [
        "publish failed 4 times in a row (last: ValueError: template exploded); "
        "see the worker's log"
    ]
    assert failing["jobs"]["publish"]["consecutive_failures"] == 4
    assert failing["jobs"]["publish"]["last_success"] is None
    assert failing["jobs"]["cluster"]["consecutive_failures"] == 0
    assert (
        failing["jobs"]["cluster"]["last_success"] and failing["jobs"]["dispatch"]["last_success"]
    )
    recovered = responses[4].json()
    assert recovered["ready"] is True and recovered["jobs"]["publish"]["consecutive_failures"] == 0
    # the same error four times: one traceback, then one line each
    assert caplog.text.count("Traceback") == 1
    assert caplog.text.count("publish failed again") == 3
    assert 'aggregator_job_failures_total{job="publish"} 4.0' in worker.metrics.render().decode()
    assert 'aggregator_job_failures_total{job="cluster"} 0.0' in worker.metrics.render().decode()


NOW = datetime(2026, 12, 2, 20, 0, tzinfo=UTC)
FRESH = JobRecord(last_success=NOW - timedelta(seconds=30))


@pytest.mark.parametrize(
    ("jobs", "problem"),
    [
        ({"dispatch": FRESH}, None),
        ({"dispatch": FRESH, "cluster": JobRecord(None, 2, "E: x")}, None),  # two: still ready
        ({"dispatch": FRESH, "publish": JobRecord(None, 3, "E: x")}, "publish failed 3 times"),
        ({"dispatch": FRESH, "cluster": JobRecord(NOW, 5, "E: x")}, "cluster failed 5 times"),
        ({"dispatch": FRESH, "retention": JobRecord(None, 9, "E: x")}, None),  # hourly, not urgent
        ({}, "no dispatch has succeeded yet"),
        ({"dispatch": JobRecord(last_success=NOW - timedelta(minutes=6))}, "no dispatch has"),
    ],
)
def test_readiness_from_the_job_records(jobs: dict[str, JobRecord], problem: str | None) -> None:
    answer = readiness(
        jobs, now=NOW, dispatch_within=timedelta(minutes=5), scheduling=True, database=True
    )
    assert answer.ready is (problem is None)
    if problem is not None:
        [said] = answer.problems
        assert said.startswith(problem)


def test_retention_removes_old_entries_and_a_feed_still_listing_them_adds_nothing(
    sqlite_store: Store,
) -> None:
    now = datetime.now(UTC)

    def listing(extra: str) -> bytes:
        old = format_datetime(now - timedelta(days=200), usegmt=True)
        return FEED.replace(
            b"</channel>",
            f"<item><guid>old-1</guid><title>Last spring's report</title><pubDate>{old}</pubDate>"
            f"</item><item><guid>{extra}</guid><title>Today's report {extra}</title></item>"
            "</channel>".encode(),
        )

    with FeedServer() as server:
        server.serve_feed("/good.xml", listing("new-1"))
        pipeline = Pipeline(settings_for(server, "good", retention_days=90), sqlite_store)
        asyncio.run(pipeline.run_cycle())
        assert sqlite_store.counts()["entries"] == 3
        # Age counts from when an entry was stored: say last spring's report was stored
        # last spring, as it would have been by a service running then.
        with sqlite_store.session() as session:
            session.exec(
                text("UPDATE entry SET first_seen_at = :t WHERE key = 'old-1'"),
                params={"t": (now - timedelta(days=200)).replace(tzinfo=None)},
            )
            session.commit()
        assert pipeline.retain_step() == 1
        assert sqlite_store.tombstones() == 1

        server.serve_feed("/good.xml", listing("new-2"))  # still lists the old report
        with sqlite_store.session() as session:  # make the source due again now
            session.exec(text("UPDATE fetchstate SET next_check_at = :t"), params={"t": now})
            session.commit()
        report = asyncio.run(pipeline.run_cycle())
    assert report.new_entries == 1, "only the really new report"
    assert sqlite_store.counts()["entries"] == 3


def free_port() -> int:
    import socket

    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def test_sigterm_during_a_hung_fetch_exits_0_within_bounded_time(
    outlets: FeedServer, tmp_path: Path
) -> None:
    hung_asked = threading.Event()

    def hang(request: Request) -> tuple[int, dict[str, str], bytes]:
        hung_asked.set()
        outlets.stopping.wait()
        return 503, {}, b""

    outlets.route("/hung.xml", hang)
    config = tmp_path / "aggregator.toml"
    port = free_port()
    config.write_text(
        f'data_dir = "{tmp_path / "data"}"\n'
        "[fetch]\nallow_private_networks = true\ntimeout_total = 120\ntimeout_read = 120\n"
        "[worker]\ncycle_seconds = 0.5\n"
        f'[[sources]]\nname = "hung"\nurl = "{outlets.url("/hung.xml")}"\n'
        f'[[sources]]\nname = "good"\nurl = "{outlets.url("/good.xml")}"\n'
    )
    process = subprocess.Popen(
        [sys.executable, "-m", "aggregator", "--config", str(config), "run", "--no-server"]
        + ["--metrics-port", str(port)],
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
    )
    try:
        assert hung_asked.wait(EVENT_WAIT), "the worker polled the hung source"
    finally:
        process.send_signal(signal.SIGTERM)
        # the hung fetch would take 120 s: exiting within EVENT_WAIT shows stopping is bounded
        output = process.communicate(timeout=EVENT_WAIT)[0].decode()
    assert process.returncode == 0, output
    assert "released 2 claimed sources" in output or "waiting up to" in output, output


def test_serve_answers_feeds_and_probes_without_polling_and_stops_on_sigterm(
    tmp_path: Path,
) -> None:
    port = free_port()
    config = tmp_path / "aggregator.toml"
    config.write_text(f'data_dir = "{tmp_path / "data"}"\n[server]\nport = {port}\n')
    process = subprocess.Popen(
        [sys.executable, "-m", "aggregator", "--config", str(config), "serve"],
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
    )
    base = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            try:
                health = httpx.get(f"{base}/healthz", timeout=2)
                break
            except httpx.TransportError:
                time.sleep(0.2)
        assert health.status_code == 200
        ready = httpx.get(f"{base}/readyz", timeout=5)
        assert ready.status_code == 200 and ready.json() == {
            "ready": True,
            "problems": [],
            "jobs": {},
        }
        assert "aggregator_sources_in_error 0.0" in httpx.get(f"{base}/metrics", timeout=5).text
        assert httpx.get(f"{base}/timelines/none.atom", timeout=5).status_code == 404
    finally:
        process.send_signal(signal.SIGTERM)
        output = process.communicate(timeout=30)[0].decode()
    assert process.returncode == 0, output


def test_300_half_open_connections_under_256_files_stop_neither_server_nor_worker(
    outlets: FeedServer, tmp_path: Path
) -> None:
    port = free_port()
    config = tmp_path / "aggregator.toml"

    def settings_text(*names: str) -> str:
        text = (
            f'data_dir = "{tmp_path / "data"}"\n[server]\nport = {port}\n'
            "[fetch]\nallow_private_networks = true\n[worker]\ncycle_seconds = 0.3\n"
        )
        for name in names:
            url = outlets.url(f"/{name}.xml")
            text += f'[[sources]]\nname = "{name}"\nurl = "{url}"\ninterval = 1\n'
        return text

    outlets.serve_feed("/other.xml", FEED)
    config.write_text(settings_text("good"))
    worker = WorkerProcess(config, serve=True, open_files=256)
    base = f"http://127.0.0.1:{port}"
    clients: list[socket.socket] = []
    try:
        worker.wait_for(lambda: answers(f"{base}/healthz"), 30, "the feed server answers")
        clients = connect_all(port, 300)
        for client in clients[::2]:  # half of them send half a request line; all hold on
            client.sendall(b"GET /timel")
        assert httpx.get(f"{base}/healthz", timeout=30).status_code == 200
        polls = len(outlets.requests_to("/good.xml"))
        worker.wait_for(
            lambda: len(outlets.requests_to("/good.xml")) >= polls + 2, 30, "good polled again"
        )
        config.write_text(settings_text("good", "other"))  # and a reload still reads the file
        worker.wait_for(lambda: bool(outlets.requests_to("/other.xml")), 30, "other polled")
        assert httpx.get(f"{base}/readyz", timeout=30).status_code == 200
    finally:
        for client in clients:
            client.close()
        code = worker.stop()
    assert code == 0, worker.output
    assert "Too many open files" not in worker.output, worker.output


def connect_all(port: int, count: int) -> list[socket.socket]:
    """`count` connections made at once, as a flood of clients would; blocking again."""
    clients = [socket.socket() for _ in range(count)]
    with selectors.DefaultSelector() as selector:
        for client in clients:
            client.setblocking(False)
            client.connect_ex(("127.0.0.1", port))
            selector.register(client, selectors.EVENT_WRITE)
        pending = set(clients)
        while pending:
            ready = selector.select(timeout=30)
            assert ready, f"{len(pending)} of {count} connections were never accepted"
            for key, _ in ready:
                selector.unregister(key.fileobj)
                pending.discard(key.fileobj)  # type: ignore[arg-type]
    for client in clients:
        assert client.getsockopt(socket.SOL_SOCKET, socket.SO_ERROR) == 0
        client.settimeout(30)
    return clients


def answers(url: str) -> bool:
    try:
        return httpx.get(url, timeout=2).status_code == 200
    except httpx.TransportError:
        return False


# -- deployment -------------------------------------------------------------------


def compose() -> dict[str, object]:
    loaded = yaml.safe_load((ROOT / "compose.yaml").read_text())
    assert isinstance(loaded, dict)
    return loaded


def compose_command() -> list[str] | None:
    docker = shutil.which("docker")
    if (
        docker
        and subprocess.run([docker, "compose", "version"], capture_output=True).returncode == 0
    ):
        return [docker, "compose"]
    legacy = shutil.which("docker-compose")
    return [legacy] if legacy else None


def test_compose_file_follows_the_compose_specification(tmp_path: Path) -> None:
    command = compose_command()
    if command is None:
        pytest.skip(
            "neither `docker compose` nor docker-compose is installed (Debian: docker-compose)"
        )
    result = subprocess.run(
        [*command, "--file", str(ROOT / "compose.yaml"), "config", "--quiet"],
        capture_output=True,
        text=True,
        cwd=ROOT,
        env={**os.environ, "COMPOSE_PROJECT_NAME": "aggregator-test"},
    )
    assert result.returncode == 0, result.stderr


def test_compose_runs_postgres_two_workers_and_the_server_with_healthchecks() -> None:
    services = compose()["services"]
    assert isinstance(services, dict)
    assert {"postgres", "migrate", "worker", "web"} <= set(services)
    worker, web = services["worker"], services["web"]
    assert worker["deploy"]["replicas"] == 2
    assert "--no-server" in worker["command"] and "serve" in web["command"]
    for name in ("postgres", "worker", "web"):
        assert "test" in services[name]["healthcheck"], name
    volumes = compose()["volumes"]
    assert isinstance(volumes, dict) and volumes, "a named volume keeps the database"
    assert any(str(v).startswith(f"{n}:") for n in volumes for v in services["postgres"]["volumes"])


def test_systemd_unit_is_hardened_and_verifies(tmp_path: Path) -> None:
    unit = (ROOT / "deploy" / "aggregator.service").read_text()
    for option in (
        "DynamicUser=yes",
        "ProtectSystem=strict",
        "StateDirectory=aggregator",
        "NoNewPrivileges=yes",
        "ProtectHome=yes",
        "PrivateTmp=yes",
        "KillSignal=SIGTERM",
    ):
        assert re.search(rf"^{re.escape(option)}$", unit, re.M), option
    # Readers' connections, fetches and the database share the descriptor limit: the
    # default soft limit of 1024 ran out under 300 half-open connections at 256.
    limit = re.search(r"^LimitNOFILE=(\d+)$", unit, re.M)
    assert limit is not None and int(limit.group(1)) >= 65536, "LimitNOFILE= is set"
    analyze = shutil.which("systemd-analyze")
    if analyze is None:
        pytest.skip("systemd-analyze is not installed (Debian: systemd)")
    # verify wants the executables to exist: point them at this checkout's.
    executable = shutil.which("aggregator") or str(Path(sys.executable).with_name("aggregator"))
    copy = tmp_path / "aggregator.service"
    copy.write_text(unit.replace("/opt/aggregator/bin/aggregator", executable))
    result = subprocess.run([analyze, "verify", str(copy)], capture_output=True, text=True)
    problems = [line for line in result.stderr.splitlines() if "aggregator.service" in line]
    assert result.returncode == 0 and problems == [], result.stderr
