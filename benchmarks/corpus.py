"""Poll a folder of feed files over HTTP through the real ingest, and report what each left.

Meant for feedparser's own test corpus (the `tests/` folder of its source
distribution: `pip download --no-binary :all: --no-deps feedparser`, then unpack)
or any other folder of odd feeds. Every file is served on 127.0.0.1, with the
`Header:` lines feedparser's files declare in their leading comment sent as HTTP
headers, and configured as one source; one dispatch polls them all into a fresh
SQLite store. Prints the sources left without entries and without a readable
error, any traceback, and a JSON summary last.

    .venv/bin/python benchmarks/corpus.py /path/to/feedparser-6.0.11/tests
"""

from __future__ import annotations

import argparse
import asyncio
import dataclasses
import json
import logging
import re
import sys
import tempfile
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import feedparser

from aggregator.pipeline import Pipeline
from aggregator.settings import SourceConfig, parse_settings
from aggregator.store import open_store

SUFFIXES = {".xml", ".rdf", ".atom", ".rss", ".json", ".z", ".gz", ".bz2", ".xml.gz"}
_HEADER = re.compile(rb"^\s*Header:\s*([\w-]+):\s*(.*?)\s*$", re.M)


def declared_headers(body: bytes) -> list[tuple[str, str]]:
    """The `Header: Name: value` lines of a feedparser test file's leading comment."""
    head = body[:2048]
    if b"<!--" not in head:
        return []
    comment = head[head.index(b"<!--") : head.find(b"-->") if b"-->" in head else len(head)]
    return [(n.decode(), v.decode("latin-1")) for n, v in _HEADER.findall(comment)]


def feedparser_entries(path: Path) -> int:
    """Entries feedparser itself reads from the file that carry an id, a link, a title or text."""
    body = path.read_bytes()
    parsed = feedparser.parse(body, response_headers=dict(declared_headers(body)))
    return sum(
        bool(e.get("id") or e.get("link") or e.get("title") or e.get("summary") or e.get("content"))
        for e in parsed.entries
    )


def serve(root: Path) -> ThreadingHTTPServer:
    class Handler(BaseHTTPRequestHandler):
        def do_GET(self) -> None:  # noqa: N802 - the http.server API
            target = (root / self.path.lstrip("/").split("?")[0]).resolve()
            if root not in target.parents or not target.is_file():
                self.send_error(404)
                return
            body = target.read_bytes()
            headers = dict(declared_headers(body))
            self.send_response(int(headers.pop("Status", "200").split()[0] or 200))
            headers.setdefault("Content-Type", "application/xml")
            for name, value in headers.items():
                self.send_header(name, value)
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, format: str, *args: object) -> None:
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    return server


class Tracebacks(logging.Handler):
    def __init__(self) -> None:
        super().__init__(logging.ERROR)
        self.records: list[logging.LogRecord] = []

    def emit(self, record: logging.LogRecord) -> None:
        if record.exc_info:
            self.records.append(record)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("folder", type=Path)
    args = parser.parse_args()
    root = args.folder.resolve()
    files = sorted(
        p for p in root.rglob("*") if p.is_file() and "".join(p.suffixes[-1:]) in SUFFIXES
    )
    server = serve(root)
    port = server.server_address[1]
    base = parse_settings("", environ={})
    settings = dataclasses.replace(
        base,
        sources=tuple(
            SourceConfig(
                name=str(p.relative_to(root)),
                url=f"http://127.0.0.1:{port}/{p.relative_to(root).as_posix()}",
            )
            for p in files
        ),
        fetch=dataclasses.replace(base.fetch, allow_private_networks=True),
    )
    tracebacks = Tracebacks()
    logging.getLogger().addHandler(tracebacks)
    with tempfile.TemporaryDirectory() as tmp:
        store = open_store(f"sqlite:///{tmp}/corpus.db")
        pipeline = Pipeline(settings, store)
        asyncio.run(pipeline.dispatch())
        # Everything stored must also cluster and publish.
        pipeline.cluster()
        pipeline.publish(full=True)
        statuses = store.source_statuses()
        store.close()
    server.shutdown()
    expected = {str(p.relative_to(root)): feedparser_entries(p) for p in files}
    short = [s for s in statuses if s.entries < expected.get(s.name, 0)]
    for s in short:
        print(
            f"fewer entries than feedparser reads: {s.name}: {s.entries} of "
            f"{expected[s.name]} ({s.last_error_code}: {s.last_error})"
        )
    silent = [s for s in statuses if s.entries == 0 and not s.last_error and s.status != "ok"]
    for s in silent:
        print(f"no entries and no readable error: {s.name} ({s.status})")
    for record in tracebacks.records:
        print(f"traceback: {record.getMessage()}")
    summary = {
        "files": len(files),
        "with_entries": sum(s.entries > 0 for s in statuses),
        "entries": sum(s.entries for s in statuses),
        "feedparser_entries": sum(expected.values()),
        "sources_short_of_feedparser": len(short),
        "errors": sum(s.status != "ok" for s in statuses),
        "errors_without_message": sum(s.status != "ok" and not s.last_error for s in statuses),
        "tracebacks": len(tracebacks.records),
    }
    print(json.dumps(summary))
    return 0 if not summary["tracebacks"] and not summary["errors_without_message"] else 1


if __name__ == "__main__":
    sys.exit(main())
