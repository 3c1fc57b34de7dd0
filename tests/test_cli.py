"""The README's promises: `aggregator demo --out`, `aggregator run` on the bundled config."""

from __future__ import annotations

import json
import os
import re
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import feedparser
import httpx
import pytest
from lxml import etree

from aggregator.cli import main

ROOT = Path(__file__).resolve().parent.parent


def assert_good_timeline(atom: bytes, rss: bytes, *, min_outlets: int) -> None:
    for body in (atom, rss):
        feed = feedparser.parse(body)
        assert feed.bozo == 0, feed.get("bozo_exception")
        dates = [entry.published_parsed for entry in feed.entries]
        assert dates == sorted(dates, reverse=True), "items newest first"
        assert len({entry.source.title for entry in feed.entries}) >= min_outlets


def merged_timelines(folder: Path, min_outlets: int) -> list[Path]:
    found = []
    for path in sorted(folder.glob("timelines/story-*.atom")):
        feed = feedparser.parse(path.read_bytes())
        if len({entry.source.title for entry in feed.entries}) >= min_outlets:
            found.append(path)
    return found


def test_demo_writes_every_document(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    out = tmp_path / "site"
    config = ROOT / "config" / "aggregator.toml"
    assert main(["--config", str(config), "demo", "--out", str(out)]) == 0
    assert "0 failed" in capsys.readouterr().out

    stories = merged_timelines(out, 3)
    assert stories, "at least one story timeline merges three outlets"
    for atom in [*stories, out / "timelines" / "kursk.atom"]:
        assert_good_timeline(
            atom.read_bytes(), atom.with_suffix(".rss").read_bytes(), min_outlets=3
        )
        feed = json.loads(atom.with_suffix(".json").read_text())
        assert feed["version"] == "https://jsonfeed.org/version/1.1" and feed["items"]
    kursk = feedparser.parse((out / "timelines" / "kursk.atom").read_bytes())
    languages = {entry.get("language") or "" for entry in kursk.entries}
    titles = " ".join(entry.title for entry in kursk.entries)
    assert re.search("[а-яіїє]", titles, re.I), f"Ukrainian or Russian reports join: {languages}"
    assert any("Also reported by" in entry.summary for entry in kursk.entries), (
        "syndicated copy folded"
    )
    outline = etree.parse(str(out / "timelines.opml")).getroot()
    assert any(
        o.get("xmlUrl", "").endswith("/timelines/kursk.atom") for o in outline.iter("outline")
    )
    assert (out / "index.html").read_bytes().startswith(b"<!DOCTYPE html>")


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def test_run_serves_merged_timelines_and_stops_cleanly(tmp_path: Path) -> None:
    demo_port, feed_port = free_port(), free_port()
    config = tmp_path / "aggregator.toml"
    text = (ROOT / "config" / "aggregator.toml").read_text()
    config.write_text(text.replace("127.0.0.1:8765", f"127.0.0.1:{demo_port}"))
    env = {
        **os.environ,
        "AGGREGATOR_DATA_DIR": str(tmp_path / "data"),
        "AGGREGATOR_DEMO__PORT": str(demo_port),
        "AGGREGATOR_DEMO__SECONDS_PER_DAY": "2",
        "AGGREGATOR_SERVER__PORT": str(feed_port),
        "AGGREGATOR_WORKER__CYCLE_SECONDS": "1",
    }
    process = subprocess.Popen(
        [sys.executable, "-m", "aggregator", "--config", str(config), "run"],
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
    )
    base = f"http://127.0.0.1:{feed_port}"
    try:
        atom = rss = None
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline and atom is None:
            time.sleep(1)
            try:
                index = httpx.get(f"{base}/", timeout=5)
            except httpx.TransportError:
                continue
            for slug in re.findall(rb"/timelines/(story-\d+)\.atom", index.content):
                body = httpx.get(f"{base}/timelines/{slug.decode()}.atom", timeout=5).content
                outlets = {e.source.title for e in feedparser.parse(body).entries}
                if len(outlets) >= 3:
                    atom = body
                    rss = httpx.get(f"{base}/timelines/{slug.decode()}.rss", timeout=5).content
                    break
        assert atom is not None and rss is not None, "no timeline merged three outlets in time"
        assert_good_timeline(atom, rss, min_outlets=3)
        assert httpx.get(f"{base}/healthz", timeout=5).status_code == 200
    finally:
        process.send_signal(signal.SIGTERM)
        output = process.communicate(timeout=60)[0].decode()
    assert process.returncode == 0, output
