"""Hot reload: a running worker process applies an edited settings file and survives a bad one.

`WorkerProcess` (a real `aggregator run` with its log lines collected) is also
what the crash and scale-out tests start.
"""

from __future__ import annotations

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
from aggregator.store import open_store

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
            if open_files is not None:
                resource.setrlimit(resource.RLIMIT_NOFILE, (open_files, open_files))

        self.process = subprocess.Popen(
            [sys.executable, "-m", "aggregator", "--config", str(config), "run"]
            + ([] if serve else ["--no-server"]),
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            env={**os.environ, **(env or {})},
            text=True,
            preexec_fn=limit_files,
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
        edited = time.monotonic()
        worker.wait_for(lambda: bool(outlets.requests_to("/gamma.xml")), 10, "gamma polled")
        assert time.monotonic() - edited < 6, "applied within seconds"
        worker.wait_for_line("config reloaded: source removed: beta")
        time.sleep(1.5)  # past any poll of beta already under way
        seen = len(outlets.requests_to("/beta.xml"))
        time.sleep(2.5)  # beta's interval is 1 s: it would be polled again if still there
        assert len(outlets.requests_to("/beta.xml")) == seen, "beta is no longer polled"

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
