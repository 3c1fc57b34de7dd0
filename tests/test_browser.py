"""The published pages in a real browser: headless Chromium loads the index and the Kursk page.

The demo's whole week runs through the pipeline into a SQLite file, then `aggregator
serve` serves it on 127.0.0.1 exactly as a user starts it. Chromium is driven over
the DevTools protocol on a pipe (`--remote-debugging-pipe`: NUL-separated JSON on
file descriptors 3 and 4), so the standard library suffices. Each page must render
its parts and cause no console error, uncaught exception or failed request; a
screenshot of each is kept under the test's temporary folder. Skipped, saying why,
when Chromium is absent (Debian: apt-get install chromium; `.ci/run` installs it).
"""

from __future__ import annotations

import base64
import contextlib
import dataclasses
import fcntl
import json
import os
import selectors
import shutil
import socket
import struct
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from httpserver import FeedServer

from aggregator.demo.simulate import run_demo
from aggregator.settings import load_settings

ROOT = Path(__file__).resolve().parent.parent
BROWSERS = ("chromium", "chromium-browser", "google-chrome")
WIDTH, HEIGHT = 1280, 1000
FAVICON = "/favicon.ico"


class DevToolsError(RuntimeError):
    """Chromium answered a command with an error, went silent, or exited."""


@dataclasses.dataclass(frozen=True)
class Problem:
    """Something a reader would see in the browser's console."""

    kind: str  # console, exception, log, request
    text: str


@dataclasses.dataclass(frozen=True)
class Loaded:
    """What a page showed: facts read from its DOM, its problems and its screenshot."""

    facts: dict[str, Any]
    problems: list[Problem]
    screenshot: Path


class Chromium:
    """One headless Chromium, commanded over --remote-debugging-pipe."""

    def __init__(self, binary: str, profile: Path) -> None:
        # Chromium reads commands on fd 3 and writes answers and events on fd 4.
        commands_read, self._commands = os.pipe()
        self._answers, answers_write = os.pipe()
        command = [
            binary,
            "--headless",
            "--no-sandbox",  # tests run as root in CI containers
            "--disable-gpu",
            "--no-first-run",
            "--disable-background-networking",  # nothing leaves the machine
            "--disable-component-update",
            "--disable-sync",
            "--disable-extensions",
            "--hide-scrollbars",
            "--remote-debugging-pipe",
            f"--user-data-dir={profile}",
            f"--window-size={WIDTH},{HEIGHT}",
        ]

        # Both ends are moved to 10 and above first, so that bash's `3<&` and `4>&`
        # cannot overwrite one with the other; bash then hands them to Chromium as 3 and 4.
        high_read, high_write = (
            fcntl.fcntl(fd, fcntl.F_DUPFD_CLOEXEC, 10) for fd in (commands_read, answers_write)
        )
        os.close(commands_read)
        os.close(answers_write)
        launch = f'exec "$@" 3<&{high_read} 4>&{high_write} {high_read}<&- {high_write}>&-'
        self.process = subprocess.Popen(
            ["bash", "-c", launch, "chromium", *command],
            stdin=subprocess.DEVNULL,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
            pass_fds=(high_read, high_write),
        )
        os.close(high_read)  # Chromium's ends now; ours are self._commands and self._answers
        os.close(high_write)
        self._buffer = b""
        self._next_id = 0
        self.events: list[dict[str, Any]] = []

    def close(self) -> None:
        if self.process.poll() is None:
            with contextlib.suppress(DevToolsError):  # it may be gone already
                self.call("Browser.close", timeout=10)
            try:
                self.process.wait(10)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait(10)
        os.close(self._commands)
        os.close(self._answers)

    def call(
        self,
        method: str,
        params: dict[str, Any] | None = None,
        *,
        session: str | None = None,
        timeout: float = 60,
    ) -> dict[str, Any]:
        """Send one command and wait for its answer; events met meanwhile are kept."""
        self._next_id += 1
        message: dict[str, Any] = {"id": self._next_id, "method": method, "params": params or {}}
        if session:
            message["sessionId"] = session
        os.write(self._commands, json.dumps(message).encode() + b"\0")
        deadline = time.monotonic() + timeout
        while True:
            received = self._receive(deadline, waiting_for=method)
            if received.get("id") == self._next_id:
                if "error" in received:
                    raise DevToolsError(f"{method}: {received['error']}")
                result: dict[str, Any] = received.get("result", {})
                return result
            self.events.append(received)

    def wait_for(self, event: str, session: str, timeout: float = 60) -> None:
        deadline = time.monotonic() + timeout
        while not any(
            e.get("method") == event and e.get("sessionId") == session for e in self.events
        ):
            self.events.append(self._receive(deadline, waiting_for=event))

    def _receive(self, deadline: float, *, waiting_for: str) -> dict[str, Any]:
        with selectors.DefaultSelector() as selector:
            selector.register(self._answers, selectors.EVENT_READ)
            while b"\0" not in self._buffer:
                left = deadline - time.monotonic()
                if left <= 0 or not selector.select(left):
                    raise DevToolsError(f"Chromium did not answer {waiting_for} in time")
                chunk = os.read(self._answers, 1 << 20)
                if not chunk:
                    raise DevToolsError(
                        f"Chromium exited (code {self.process.poll()}) during {waiting_for}"
                    )
                self._buffer += chunk
        message, _, self._buffer = self._buffer.partition(b"\0")
        loaded: dict[str, Any] = json.loads(message)
        return loaded

    def load(self, url: str, facts_script: str, screenshot: Path) -> Loaded:
        """Open `url` in a new tab, wait for its load event, read facts, take a screenshot."""
        target = self.call("Target.createTarget", {"url": "about:blank"})["targetId"]
        session = self.call("Target.attachToTarget", {"targetId": target, "flatten": True})[
            "sessionId"
        ]
        for domain in ("Page", "Runtime", "Log", "Network"):
            self.call(f"{domain}.enable", session=session)
        self.call(
            "Emulation.setDeviceMetricsOverride",
            {"width": WIDTH, "height": HEIGHT, "deviceScaleFactor": 1, "mobile": False},
            session=session,
        )
        first_event = len(self.events)
        navigated = self.call("Page.navigate", {"url": url}, session=session)
        if navigated.get("errorText"):
            raise DevToolsError(f"{url}: {navigated['errorText']}")
        self.wait_for("Page.loadEventFired", session)
        evaluated = self.call(
            "Runtime.evaluate",
            {"expression": facts_script, "returnByValue": True},
            session=session,
        )
        if "exceptionDetails" in evaluated:
            raise DevToolsError(f"the facts script failed: {evaluated['exceptionDetails']}")
        shot = self.call(
            "Page.captureScreenshot",
            {"format": "png", "captureBeyondViewport": True},
            session=session,
        )
        screenshot.write_bytes(base64.b64decode(shot["data"]))
        self.call("Target.closeTarget", {"targetId": target})
        events = [e for e in self.events[first_event:] if e.get("sessionId") == session]
        return Loaded(evaluated["result"]["value"], problems_in(events), screenshot)


def problems_in(events: list[dict[str, Any]]) -> list[Problem]:
    """Console errors and warnings, uncaught exceptions, error log entries, failed requests.

    The browser's own request for /favicon.ico is left out: no page asks for it, and
    a browser shows no error when it is missing.
    """
    urls = {
        e["params"]["requestId"]: e["params"]["request"]["url"]
        for e in events
        if e.get("method") == "Network.requestWillBeSent"
    }
    problems = []
    for event in events:
        method, params = event.get("method"), event.get("params", {})
        url = urls.get(params.get("requestId"), "") or params.get("entry", {}).get("url", "")
        if url.endswith(FAVICON):
            continue
        if method == "Runtime.consoleAPICalled" and params["type"] in (
            "error",
            "warning",
            "assert",
        ):
            text = " ".join(str(a.get("value", a.get("description", ""))) for a in params["args"])
            problems.append(Problem("console", f"{params['type']}: {text}"))
        elif method == "Runtime.exceptionThrown":
            details = params["exceptionDetails"]
            text = details.get("exception", {}).get("description") or details.get("text", "")
            problems.append(Problem("exception", text))
        elif method == "Log.entryAdded" and params["entry"]["level"] in ("error", "warning"):
            problems.append(Problem("log", f"{params['entry']['text']} {url}".strip()))
        elif method == "Network.responseReceived" and params["response"]["status"] >= 400:
            problems.append(Problem("request", f"{params['response']['status']} {url}"))
        elif method == "Network.loadingFailed" and not params.get("canceled"):
            problems.append(Problem("request", f"{params.get('errorText', 'failed')} {url}"))
    return problems


def png_size(path: Path) -> tuple[int, int]:
    header = path.read_bytes()[:24]
    assert header[:8] == b"\x89PNG\r\n\x1a\n", f"{path} is not a PNG"
    width, height = struct.unpack(">II", header[16:24])
    return width, height


# -- fixtures ------------------------------------------------------------------------


@pytest.fixture(scope="module")
def chromium(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Chromium]:
    binary = next((path for name in BROWSERS if (path := shutil.which(name))), None)
    if binary is None:
        pytest.skip("Chromium is not installed (Debian: apt-get install chromium)")
    browser = Chromium(binary, tmp_path_factory.mktemp("chromium-profile"))
    try:
        browser.call("Browser.getVersion", timeout=60)
        yield browser
    finally:
        browser.close()


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def answers(url: str) -> bool:
    try:
        return httpx.get(url, timeout=2, trust_env=False).status_code == 200
    except httpx.TransportError:
        return False


@pytest.fixture(scope="module")
def site(chromium: Chromium, tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """Base URL of `aggregator serve` over the database of the demo's whole week."""
    tmp = tmp_path_factory.mktemp("browser-site")
    port = free_port()
    base_url = f"http://127.0.0.1:{port}"
    database = tmp / "demo.db"
    settings = load_settings(ROOT / "config" / "aggregator.toml", environ={})
    settings = dataclasses.replace(
        settings, publish=dataclasses.replace(settings.publish, base_url=base_url)
    )
    run_demo(settings, database, tmp / "out")
    env = {
        **os.environ,
        "AGGREGATOR_CONFIG": str(ROOT / "config" / "aggregator.toml"),
        "AGGREGATOR_DATABASE_URL": f"sqlite:///{database}",
        "AGGREGATOR_PUBLISH__BASE_URL": base_url,
        "AGGREGATOR_SERVER__PORT": str(port),
        "AGGREGATOR_DEMO__ENABLED": "false",
    }
    log = (tmp / "serve.log").open("w")
    server = subprocess.Popen(
        [sys.executable, "-m", "aggregator", "serve"],
        cwd=tmp,
        env=env,
        stdout=log,
        stderr=subprocess.STDOUT,
    )
    try:
        deadline = time.monotonic() + 60
        while not answers(f"{base_url}/healthz"):
            if server.poll() is not None or time.monotonic() > deadline:
                pytest.fail(f"aggregator serve did not start: {(tmp / 'serve.log').read_text()}")
            time.sleep(0.1)
        yield base_url
    finally:
        server.terminate()
        server.wait(30)
        log.close()


# -- what the pages must show --------------------------------------------------------

INDEX_FACTS = """(() => {
  const feeds = [...document.querySelectorAll('a[href]')]
    .map(a => a.getAttribute('href'))
    .filter(h => /\\.(atom|rss|json|opml)$/.test(h));
  return {
    title: document.title,
    heading: document.querySelector('h1')?.textContent.trim(),
    timelines: [...document.querySelectorAll('h2 a')].map(a => a.textContent.trim()),
    timeline_links: [...document.querySelectorAll('h2 a')].map(a => a.getAttribute('href')),
    sparklines: document.querySelectorAll('svg').length,
    feeds: feeds,
    width: document.documentElement.scrollWidth,
  };
})()"""

PAGE_FACTS = """(() => {
  const chart = document.querySelector('svg.chart');
  return {
    title: document.title,
    heading: document.querySelector('h1')?.textContent.trim(),
    alternates: [...document.querySelectorAll('link[rel=alternate]')]
      .map(l => [l.getAttribute('type'), l.getAttribute('href')]),
    chart_bars: chart ? chart.querySelectorAll('rect').length : 0,
    chart_height: chart ? chart.getBoundingClientRect().height : 0,
    days: [...document.querySelectorAll('section.day h2')].map(h => h.textContent.trim()),
    entries: document.querySelectorAll('li.entry').length,
    // an event of one report lists none: its entry is its report
    reports: [...document.querySelectorAll('li.entry')]
      .reduce((n, e) => n + Math.max(1, e.querySelectorAll('ul.reports li').length), 0),
    languages: [...new Set([...document.querySelectorAll('li.entry [lang]')]
      .map(e => e.getAttribute('lang')))],
    feeds: [...document.querySelectorAll('p.feeds a')].map(a => a.getAttribute('href')),
    width: document.documentElement.scrollWidth,
  };
})()"""


def test_the_index_renders_every_timeline_with_its_feeds(
    chromium: Chromium, site: str, tmp_path: Path
) -> None:
    loaded = chromium.load(site + "/", INDEX_FACTS, tmp_path / "index.png")
    facts = loaded.facts
    assert loaded.problems == []
    assert facts["title"] == facts["heading"] == "Aggregator demo timelines"
    assert facts["timelines"][0] == "Kursk incursion"
    assert len(facts["timelines"]) >= 5
    assert facts["sparklines"] >= len(facts["timelines"]), "a sparkline per timeline"
    assert facts["width"] <= WIDTH, "nothing overflows sideways"
    for kind in (".atom", ".rss", ".json", ".opml"):
        assert any(href.endswith(kind) for href in facts["feeds"]), kind
    for href in facts["feeds"] + facts["timeline_links"]:
        url = href if href.startswith("http") else site + href
        assert httpx.get(url, trust_env=False).status_code == 200, url
    assert png_size(loaded.screenshot)[0] == WIDTH


def test_the_kursk_page_renders_its_chart_days_and_feeds(
    chromium: Chromium, site: str, tmp_path: Path
) -> None:
    loaded = chromium.load(site + "/timelines/kursk.html", PAGE_FACTS, tmp_path / "kursk.png")
    facts = loaded.facts
    assert loaded.problems == []
    assert facts["heading"] == "Kursk incursion" and "Kursk incursion" in facts["title"]
    assert facts["chart_bars"] >= 5 and facts["chart_height"] > 50, "the chart is drawn"
    assert facts["days"][-1] == "Tuesday 6 August 2024", "days run back to the first report"
    # one entry per event, each listing its reports (every language among them)
    assert len(facts["days"]) >= 2 and facts["reports"] >= 20 > facts["entries"] >= 2
    assert {"en", "uk", "ru"} <= set(facts["languages"])
    types = {kind for kind, _ in facts["alternates"]}
    assert {"application/atom+xml", "application/rss+xml", "application/feed+json"} <= types
    assert len(facts["feeds"]) == 3
    for href in facts["feeds"] + [href for _, href in facts["alternates"]]:
        url = href if href.startswith("http") else site + href
        assert httpx.get(url, trust_env=False).status_code == 200, url
    assert facts["width"] <= WIDTH, "nothing overflows sideways"
    width, height = png_size(loaded.screenshot)
    assert width == WIDTH and height > HEIGHT, "the whole page is in the screenshot"


def test_a_broken_page_is_caught(chromium: Chromium, tmp_path: Path) -> None:
    """The checks above can fail: errors of every kind on a page are reported."""
    page = (
        b"<!DOCTYPE html><html><head><title>broken</title></head><body>"
        b'<img src="/missing.png"><script>console.error("drawn wrong"); nothing();</script>'
        b"</body></html>"
    )
    with FeedServer() as server:
        server.route("/page.html", lambda _: (200, {"Content-Type": "text/html"}, page))
        loaded = chromium.load(server.url("/page.html"), "document.title", tmp_path / "b.png")
    kinds = {problem.kind for problem in loaded.problems}
    texts = " ".join(problem.text for problem in loaded.problems)
    assert loaded.facts == "broken"
    assert {"console", "exception", "request"} <= kinds, loaded.problems
    assert "drawn wrong" in texts and "nothing is not defined" in texts and "404" in texts
