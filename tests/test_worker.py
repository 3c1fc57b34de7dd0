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
import time
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from email.utils import format_datetime
from pathlib import Path

import httpx
import pytest
import yaml
from httpserver import FeedServer
from sqlalchemy import text
from test_reload import WorkerProcess

from aggregator.pipeline import Pipeline
from aggregator.settings import Settings, SourceConfig, parse_settings
from aggregator.store import Store
from aggregator.worker import Worker

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
    )


async def run_for(worker: Worker, seconds: float) -> None:
    async def stop_later() -> None:
        await asyncio.sleep(seconds)
        worker.stopping.set()

    stopper = asyncio.create_task(stop_later())
    await worker.run(serve=False)
    await stopper


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
    runs: list[str] = []
    publish = worker.pipeline.publish_step

    def counting_publish(deadline: float | None = None) -> list[str]:
        runs.append("publish")
        return publish(deadline)

    worker.pipeline.publish_step = counting_publish  # type: ignore[method-assign]
    caplog.set_level(logging.INFO)
    started = time.monotonic()
    asyncio.run(run_for(worker, 4.5))
    assert time.monotonic() - started < 10, "stopping is bounded even with a fetch hanging"

    assert "dispatch took longer than 1.8 s and was stopped" in caplog.text
    assert len(runs) >= 5, "the publish job kept its schedule while the fetch hung"
    # the hung poll was rolled back: its source is free and due for any worker now
    claimed = sqlite_store.claim_due(worker.pipeline.clock(), "another", lease_s=60, limit=5)
    assert [r.name for r in claimed] == ["hung"]
    assert sqlite_store.leader() is not None and sqlite_store.leader().until is None  # type: ignore[union-attr]


def test_ready_after_a_successful_dispatch_and_not_once_stopping(
    outlets: FeedServer, sqlite_store: Store
) -> None:
    worker = Worker(settings_for(outlets, "good", cycle_seconds=0.2), sqlite_store)
    seen: list[bool] = [worker.ready()]

    async def probe() -> None:
        await asyncio.sleep(1.5)
        seen.append(await asyncio.to_thread(worker.ready))
        worker.stopping.set()

    async def main() -> None:
        prober = asyncio.create_task(probe())
        await worker.run(serve=False)
        await prober

    asyncio.run(main())
    seen.append(worker.ready())
    assert seen == [False, True, False]
    assert sqlite_store.counts()["entries"] == 1


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
        deadline = time.monotonic() + 30
        while not outlets.requests_to("/good.xml") and time.monotonic() < deadline:
            time.sleep(0.1)
        assert outlets.requests_to("/good.xml"), "the worker polled"
        time.sleep(0.5)
    finally:
        process.send_signal(signal.SIGTERM)
        started = time.monotonic()
        output = process.communicate(timeout=30)[0].decode()
    assert process.returncode == 0, output
    assert time.monotonic() - started < 12, output
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
        assert httpx.get(f"{base}/readyz", timeout=5).status_code == 200
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
