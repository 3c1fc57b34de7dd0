"""Hot reload: a running worker process applies an edited settings file and survives a bad one.

`WorkerProcess` (a real `aggregator run` with its log lines collected) is also
what the crash and scale-out tests start.
"""

from __future__ import annotations

import asyncio
import dataclasses
import os
import resource
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator, Mapping
from pathlib import Path

import pytest
from httpserver import FeedServer

from aggregator.cli import main
from aggregator.settings import Settings, parse_settings
from aggregator.store import Store, open_store
from aggregator.worker import Worker

EVENT_WAIT = 30.0  # seconds: a bound on waiting for an event, reached only when it never comes
FEED = (
    b'<?xml version="1.0"?><rss version="2.0"><channel><title>t</title>'
    b"<link>http://x.test/</link><description>d</description>"
    b"<item><guid>1</guid><title>One</title><link>http://x.test/1</link></item>"
    b"</channel></rss>"
)


class WorkerProcess:
    """`aggregator --config FILE run --no-server` in a process of its own, its output kept.

    With `serve`, the feed server runs too; `open_files` caps its file descriptors.
    """

    def __init__(
        self,
        config: Path,
        env: Mapping[str, str] | None = None,
        *,
        serve: bool = False,
        open_files: int | None = None,
    ) -> None:
        def limit_files() -> None:
            assert open_files is not None
            resource.setrlimit(resource.RLIMIT_NOFILE, (open_files, open_files))

        self.process = subprocess.Popen(
            [sys.executable, "-m", "aggregator", "--config", str(config), "run"]
            + ([] if serve else ["--no-server"]),
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            env={**os.environ, **(env or {})},
            text=True,
            preexec_fn=None if open_files is None else limit_files,
        )
        self.lines: list[str] = []
        self._reader = threading.Thread(target=self._read, daemon=True)
        self._reader.start()

    def _read(self) -> None:
        assert self.process.stdout is not None
        for line in self.process.stdout:
            self.lines.append(line.rstrip("\n"))

    @property
    def output(self) -> str:
        return "\n".join(self.lines)

    def wait_for(self, found: Callable[[], bool], timeout: float, what: str) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if found():
                return
            if self.process.poll() is not None:
                break
            time.sleep(0.1)
        raise AssertionError(
            f"{what} did not happen in {timeout} s; the worker said:\n{self.output}"
        )

    def wait_for_line(self, text: str, timeout: float = 30) -> None:
        self.wait_for(lambda: any(text in line for line in self.lines), timeout, repr(text))

    def stop(self, timeout: float = 30) -> int:
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
        self.process.wait(timeout=timeout)
        self._reader.join(timeout=5)
        return self.process.returncode

    def kill(self) -> None:
        self.process.kill()
        self.process.wait(timeout=30)
        self._reader.join(timeout=5)


@pytest.fixture
def outlets() -> Iterator[FeedServer]:
    with FeedServer() as server:
        for name in ("alpha", "beta", "gamma", "delta"):
            server.serve_feed(f"/{name}.xml", FEED)
        yield server


def settings_text(server: FeedServer, tmp_path: Path, *names: str) -> str:
    text = (
        f'data_dir = "{tmp_path / "data"}"\n'
        "[fetch]\nallow_private_networks = true\n"
        "[worker]\ncycle_seconds = 0.3\n"
    )
    for name in names:
        text += (
            f'[[sources]]\nname = "{name}"\nurl = "{server.url(f"/{name}.xml")}"\ninterval = 1\n'
        )
    return text


def test_a_running_worker_applies_edits_and_keeps_running_on_a_bad_one(
    outlets: FeedServer, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    config = tmp_path / "aggregator.toml"
    config.write_text(settings_text(outlets, tmp_path, "alpha", "beta"))
    worker = WorkerProcess(config)
    try:
        worker.wait_for(lambda: len(outlets.requests_to("/beta.xml")) >= 2, 30, "beta polled twice")

        # added gamma, removed beta
        config.write_text(settings_text(outlets, tmp_path, "alpha", "gamma"))
        worker.wait_for(lambda: bool(outlets.requests_to("/gamma.xml")), 10, "gamma polled")
        worker.wait_for_line("config reloaded: source removed: beta")
        # Gamma's first poll comes after the sources were synced, so after any poll of
        # beta under way then; alpha, polled every second like beta, then serves as the
        # clock: two more polls of alpha and beta would have been polled again.
        beta = len(outlets.requests_to("/beta.xml"))
        alpha = len(outlets.requests_to("/alpha.xml"))
        worker.wait_for(
            lambda: len(outlets.requests_to("/alpha.xml")) >= alpha + 2, 10, "alpha polled twice"
        )
        assert len(outlets.requests_to("/beta.xml")) == beta, "beta is no longer polled"

        # an invalid edit: the same message as check-config, and the worker carries on
        bad = settings_text(outlets, tmp_path, "alpha").replace(
            "[fetch]\n", "[fetch]\nconcurency = 4\n"
        )
        config.write_text(bad)
        assert main(["check-config", str(config)]) == 2
        message = capsys.readouterr().err.strip().removeprefix("error: ")
        worker.wait_for_line("config reload rejected")
        rejected = next(line for line in worker.lines if "config reload rejected" in line)
        assert message in rejected
        alpha = len(outlets.requests_to("/alpha.xml"))
        worker.wait_for(
            lambda: len(outlets.requests_to("/alpha.xml")) >= alpha + 2, 10, "alpha still polled"
        )
        assert worker.process.poll() is None

        # fixed again: the next good edit applies
        config.write_text(settings_text(outlets, tmp_path, "alpha", "gamma", "delta"))
        worker.wait_for(lambda: bool(outlets.requests_to("/delta.xml")), 10, "delta polled")
    finally:
        code = worker.stop()
    assert code == 0, worker.output

    store = open_store(f"sqlite:///{tmp_path / 'data' / 'aggregator.db'}", create=False)
    try:
        configured = {s.name: s.in_config for s in store.source_statuses()}
    finally:
        store.close()
    assert configured == {"alpha": True, "beta": False, "gamma": True, "delta": True}


class OneEdit:
    """A settings watcher whose file was edited once, to `settings`."""

    def __init__(self, settings: Settings) -> None:
        self.settings: Settings | None = settings

    def poll(self) -> Settings | None:
        new, self.settings = self.settings, None
        return new


def test_a_reload_reaches_the_clusterer_only_between_leader_steps(sqlite_store: Store) -> None:
    old = parse_settings("", environ={})
    new = dataclasses.replace(
        old, cluster=dataclasses.replace(old.cluster, window_hours=old.cluster.window_hours + 1)
    )
    worker = Worker(old, sqlite_store)
    worker.watcher = OneEdit(new)  # type: ignore[assignment]
    pipeline = worker.pipeline
    inside, finish = threading.Event(), threading.Event()
    seen: list[tuple[str, object, Settings]] = []

    def cluster_step(deadline: float | None = None) -> int:
        seen.append(("start", pipeline.clusterer.assigner, pipeline.settings))
        inside.set()
        assert finish.wait(EVENT_WAIT), "the test let the step finish"
        seen.append(("end", pipeline.clusterer.assigner, pipeline.settings))
        return 0

    pipeline.cluster_step = cluster_step  # type: ignore[method-assign]

    async def main() -> None:
        step = asyncio.create_task(worker.cluster())
        assert await asyncio.to_thread(inside.wait, EVENT_WAIT), "the cluster step started"
        await worker.reload()  # while the step runs; it must not wait for it either
        assert worker.settings is new, "the worker took the edit at once"
        finish.set()
        await step
        inside.clear()
        await worker.cluster()  # the next leader step

    asyncio.run(main())
    (_, first, before), (_, last, during), (_, then, after) = (seen[0], seen[1], seen[2])
    assert last is first and during is before is old, "nothing changed under the running step"
    assert then is not first and after is new, "the next step started on the new settings"
    assert worker.health.snapshot()["reload"].consecutive_failures == 0
