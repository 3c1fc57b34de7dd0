"""The README's promises: `aggregator demo --out`, `aggregator run` on the bundled config."""

from __future__ import annotations

import argparse
import json
import os
import random
import re
import shlex
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
from test_evaluate import row, write_jsonl

from aggregator.cli import main

ROOT = Path(__file__).resolve().parent.parent


def assert_good_timeline(atom: bytes, rss: bytes, json_feed: bytes, *, min_outlets: int) -> None:
    feeds = [feedparser.parse(body) for body in (atom, rss)]
    for feed in feeds:
        assert feed.bozo == 0, feed.get("bozo_exception")
        assert len({entry.source.title for entry in feed.entries}) >= min_outlets
    # Newest first by each event's latest report, which JSON Feed lists: two events
    # of one day may overlap, so the one that began earlier can come first.
    items = json.loads(json_feed)["items"]
    latest = [
        max(
            [r["date_published"] for r in item["_aggregator"].get("reports", [])]
            or [item["date_published"]]
        )
        for item in items
    ]
    assert latest == sorted(latest, reverse=True), "items newest first"
    ids = [item["id"] for item in items]
    assert [e.id for e in feeds[0].entries] == [e.id for e in feeds[1].entries] == ids


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
            atom.read_bytes(),
            atom.with_suffix(".rss").read_bytes(),
            atom.with_suffix(".json").read_bytes(),
            min_outlets=3,
        )
        feed = json.loads(atom.with_suffix(".json").read_text())
        assert feed["version"] == "https://jsonfeed.org/version/1.1" and feed["items"]
    kursk = feedparser.parse((out / "timelines" / "kursk.atom").read_bytes())
    languages = {entry.get("language") or "" for entry in kursk.entries}
    titles = " ".join(entry.title for entry in kursk.entries)
    assert re.search("[а-яіїє]", titles, re.I), f"Ukrainian or Russian reports join: {languages}"
    assert any("also reported by" in entry.summary.lower() for entry in kursk.entries), (
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
        # A safety net, not a timing claim: the first clustering cycle loads the model,
        # which takes minutes on a busy two-core machine; the loop ends at the first story.
        deadline = time.monotonic() + 300
        while time.monotonic() < deadline and atom is None:
            time.sleep(1)
            try:
                index = httpx.get(f"{base}/", timeout=5)
            except httpx.TransportError:
                continue
            # A story's own timeline, or the configured one that follows it alone.
            slugs = re.findall(rb"/timelines/([a-z0-9-]+)\.atom", index.content)
            for slug in (s for s in slugs if s != b"all"):
                body = httpx.get(f"{base}/timelines/{slug.decode()}.atom", timeout=5).content
                outlets = {e.source.title for e in feedparser.parse(body).entries}
                if len(outlets) >= 3:
                    atom = body
                    rss = httpx.get(f"{base}/timelines/{slug.decode()}.rss", timeout=5).content
                    json_feed = httpx.get(f"{base}/timelines/{slug.decode()}.json", timeout=5)
                    break
        assert atom is not None and rss is not None, "no timeline merged three outlets in time"
        assert_good_timeline(atom, rss, json_feed.content, min_outlets=3)
        assert httpx.get(f"{base}/healthz", timeout=5).status_code == 200
    finally:
        process.send_signal(signal.SIGTERM)
        output = process.communicate(timeout=60)[0].decode()
    assert process.returncode == 0, output


@pytest.mark.parametrize("taken", ["demo", "server"])
def test_run_on_a_taken_port_says_so_in_one_line(tmp_path: Path, taken: str) -> None:
    with socket.socket() as holder:
        holder.bind(("127.0.0.1", 0))
        holder.listen()
        ports = {"demo": free_port(), "server": free_port(), taken: holder.getsockname()[1]}
        env = {
            **os.environ,
            "AGGREGATOR_DATA_DIR": str(tmp_path / "data"),
            "AGGREGATOR_DEMO__PORT": str(ports["demo"]),
            "AGGREGATOR_SERVER__PORT": str(ports["server"]),
        }
        done = subprocess.run(
            [
                sys.executable,
                "-m",
                "aggregator",
                "--config",
                str(ROOT / "config" / "aggregator.toml"),
                "run",
            ],
            env=env,
            capture_output=True,
            text=True,
            timeout=300,
        )
    assert done.returncode == 1, done.stderr
    assert "Traceback" not in done.stderr
    [error] = [line for line in done.stderr.splitlines() if line.startswith("error:")]
    assert f"127.0.0.1:{ports[taken]}" in error and "in use" in error, error


# -- database errors: one line naming the database and what to do -----------------

DB_COMMANDS = [
    ["run", "--no-server"],
    ["sources", "list"],
    ["poll", "--once"],
    ["db", "current"],
    ["db", "upgrade"],
    ["publish", "--out", "site"],
    ["serve"],
]


def _settings_file(folder: Path, database_url: str = "") -> Path:
    path = folder / "aggregator.toml"
    path.write_text(
        f'database_url = "{database_url}"\ndata_dir = "{folder / "data"}"\n'
        '[server]\nport = 1\n[[sources]]\nname = "a"\nurl = "https://a.example/feed"\n'
    )
    return path


@pytest.mark.parametrize("command", DB_COMMANDS, ids=" ".join)
def test_a_corrupt_sqlite_file_is_one_line(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], command: list[str]
) -> None:
    config = _settings_file(tmp_path)
    database = tmp_path / "data" / "aggregator.db"
    database.parent.mkdir()
    database.write_bytes(random.Random(16).randbytes(64 * 1024))
    assert main(["--config", str(config), *command]) == 1
    assert capsys.readouterr().err == (
        f"error: database {database}: file is not a database (sqlite3); "
        "restore it from a backup or move it away to start afresh\n"
    )


@pytest.mark.parametrize("command", DB_COMMANDS, ids=" ".join)
def test_an_unreachable_postgresql_is_one_line_without_the_password(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], command: list[str]
) -> None:
    port = free_port()  # nothing listens there
    url = f"postgresql+psycopg://aggregator:s3cret@127.0.0.1:{port}/news"
    config = _settings_file(tmp_path, url)
    assert main(["--config", str(config), *command]) == 1
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "Traceback" not in err
    assert err.startswith(
        f"error: database postgresql+psycopg://aggregator:***@127.0.0.1:{port}/news: "
    )
    assert "s3cret" not in err
    assert "check that the database server runs" in err


def test_the_command_line_shows_no_traceback_for_a_database_it_cannot_create(
    tmp_path: Path,
) -> None:
    (tmp_path / "data").write_text("a file where the data folder should be")
    config = _settings_file(tmp_path)
    done = subprocess.run(
        [sys.executable, "-m", "aggregator", "--config", str(config), "sources", "list"],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert done.returncode in (1, 2), done.stderr
    assert done.stderr.startswith("error: ") and done.stderr.count("\n") == 1, done.stderr


# -- the README's commands exist as written ------------------------------------------


def _readme_commands() -> list[str]:
    readme = (ROOT / "README.md").read_text()
    found = re.findall(r"`(aggregator [^`]+)`", readme)
    found += re.findall(r"^\$? ?(aggregator [^#\n]+)", readme, re.M)
    commands = []
    for text in found:
        text = text.replace("\\|", "|").strip()
        # "db upgrade|current" and "[--no-server [--metrics-port PORT]]" name several commands
        words = re.sub(r"[\[\]]", "", text).split()
        choices = [word.split("|") for word in words]
        for index in range(max(len(c) for c in choices)):
            commands.append(" ".join(c[min(index, len(c) - 1)] for c in choices))
    return sorted(set(commands))


PLACEHOLDERS = {"PORT": "9100", "SEED": "7", "DIR": "out", "FILE": "x.toml", "NAME": "heldout"}


@pytest.mark.parametrize("command", _readme_commands())
def test_every_command_the_readme_names_parses(command: str) -> None:
    from aggregator.cli import _parser

    words = [PLACEHOLDERS.get(word, word) for word in shlex.split(command)[1:]]
    parser = _parser()
    if _subcommand(parser, words) is not None:
        return  # "sources add" as named in the commands table, without its arguments
    try:
        args = parser.parse_args(words)
    except SystemExit as exc:
        pytest.fail(f"README's `{command}` is not a command line the CLI takes ({exc})")
    assert getattr(args, "handler", None), f"`{command}` names no command"


def _subparsers(parser: argparse.ArgumentParser) -> dict[str, argparse.ArgumentParser]:
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            return dict(action.choices)
    return {}


def _subcommand(parser: argparse.ArgumentParser, words: list[str]) -> object:
    """The parser that `words` name as commands only ("sources add"), else None."""
    for word in words:
        parser = _subparsers(parser).get(word)  # type: ignore[assignment]
        if parser is None:
            return None
    return parser


def test_every_option_the_readme_names_exists() -> None:
    from aggregator.cli import _parser

    readme = (ROOT / "README.md").read_text()
    # Options of other programs the README runs (python -m ..., pytest, benchmarks,
    # systemctl, docker) aside.
    others = r"systemctl|docker|python|pip |pytest|scripts/|benchmarks/"
    ours = [line for line in readme.splitlines() if not re.search(others, line)]
    mentioned = set(re.findall(r"(?<![\w-])(--[a-z][a-z-]+)", "\n".join(ours)))
    known: set[str] = set()
    stack = [_parser()]
    while stack:
        parser = stack.pop()
        known |= set(parser._option_string_actions)
        stack += _subparsers(parser).values()
    assert sorted(mentioned - known) == []


def test_eval_options_are_held_to_the_settings_checks(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    data = tmp_path / "labelled.jsonl"
    data.write_text("")
    args = ["eval", str(data), "--threshold", "nan", "--window-hours", "-5"]
    assert main(args) == 2
    assert capsys.readouterr().err.splitlines() == [
        "error: --threshold: expected a number at least 0 and below 1, got nan",
        "error: --window-hours: expected a number more than 0 and at most 87600, got -5",
    ]


def test_a_broken_model_file_is_one_line_naming_the_rebuild(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    from aggregator.cluster import storylines

    policy = tmp_path / "storylines.json"
    body = json.loads(storylines.STORYLINES_MODEL.read_text(encoding="utf-8"))
    policy.write_text(json.dumps(body), encoding="utf-8")
    (tmp_path / body["space"]).write_bytes(b"\x93NUMPY cut short")
    monkeypatch.setattr(storylines, "STORYLINES_MODEL", policy)
    storylines.load_policy.cache_clear()
    data = write_jsonl(
        tmp_path / "labelled.jsonl", [row("a", "Storm floods the harbour", 0, "storm")]
    )
    try:
        assert main(["eval", str(data)]) == 1
    finally:
        storylines.load_policy.cache_clear()
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "Traceback" not in err
    assert err.startswith(f"error: the storyline space {tmp_path / body['space']} cannot be read")
    assert err.rstrip().endswith("rebuild it with python -m aggregator_eval.space")
