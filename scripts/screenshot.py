#!/usr/bin/env python3
"""Render a timeline page of the bundled demo in headless Chromium and save it as a PNG.

    .venv/bin/python scripts/screenshot.py [--out timeline.png] [--page /timelines/kursk.html]
                                           [--from DIR] [--width 1280] [--height 2000]

Runs `aggregator demo --out` into a temporary folder (or takes the folder --from
names), serves its documents with the aggregator's own app on 127.0.0.1, exactly as
`aggregator run` would with its headers, and points Debian's chromium at the page.
Nothing leaves the machine: the browser runs with background networking off.
"""

from __future__ import annotations

import argparse
import hashlib
import shutil
import socket
import subprocess
import sys
import tempfile
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import UTC, datetime
from pathlib import Path

import uvicorn

from aggregator.serve import create_app
from aggregator.types import Document

ROOT = Path(__file__).resolve().parent.parent
CONTENT_TYPES = {
    ".atom": "application/atom+xml; charset=utf-8",
    ".rss": "application/rss+xml; charset=utf-8",
    ".json": "application/feed+json; charset=utf-8",
    ".html": "text/html; charset=utf-8",
    ".opml": "text/x-opml; charset=utf-8",
}
BROWSERS = ("chromium", "chromium-browser", "google-chrome")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=Path("timeline.png"), help="PNG to write")
    parser.add_argument("--page", default="/timelines/kursk.html", help="path of the page")
    parser.add_argument("--from", dest="folder", type=Path, help="documents of a demo run")
    parser.add_argument("--width", type=int, default=1280)
    parser.add_argument("--height", type=int, default=2000)
    args = parser.parse_args(argv)
    browser = next((path for name in BROWSERS if (path := shutil.which(name))), None)
    if browser is None:
        print("no chromium found; install it with: apt-get install -y chromium", file=sys.stderr)
        return 2
    with tempfile.TemporaryDirectory(prefix="aggregator-shot-") as tmp:
        folder = args.folder or run_demo(Path(tmp) / "demo")
        with serving(folder_documents(folder)) as base_url:
            screenshot(browser, base_url + args.page, args.out, args.width, args.height, tmp)
    print(f"wrote {args.out} ({args.out.stat().st_size} bytes) of {args.page}")
    return 0


def run_demo(out: Path) -> Path:
    # From the repository's root, the demo reads the bundled config/aggregator.toml.
    command = [sys.executable, "-m", "aggregator", "demo", "--out", str(out)]
    # Its log goes to stderr, line by line for every poll: shown only if the demo fails.
    done = subprocess.run(command, cwd=ROOT, capture_output=True, text=True)
    if done.returncode != 0:
        sys.stderr.write(done.stdout + done.stderr)
        raise SystemExit(f"aggregator demo failed (exit {done.returncode}); its output is above")
    return out


def folder_documents(folder: Path) -> dict[str, Document]:
    """The documents of a published folder, keyed by URL path as the app looks them up."""
    documents = {}
    for file in folder.rglob("*"):
        if file.suffix in CONTENT_TYPES and file.is_file():
            path = "/" + file.relative_to(folder).as_posix()
            body = file.read_bytes()
            updated = datetime.fromtimestamp(file.stat().st_mtime, UTC)
            etag = f'"{hashlib.sha256(body).hexdigest()[:32]}"'
            documents[path] = Document(path, CONTENT_TYPES[file.suffix], body, etag, updated)
    return documents


@contextmanager
def serving(documents: dict[str, Document]) -> Iterator[str]:
    """The app on a free port of 127.0.0.1 in a thread; yields its base URL."""
    # IPPROTO_TCP, not the default 0: asyncio sets TCP_NODELAY only on sockets that say
    # they are TCP, and without it small responses wait ~40 ms for a delayed ACK.
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM, socket.IPPROTO_TCP)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.bind(("127.0.0.1", 0))
    config = uvicorn.Config(create_app(documents.get), log_level="warning", lifespan="off")
    server = uvicorn.Server(config)
    thread = threading.Thread(target=server.run, kwargs={"sockets": [sock]}, daemon=True)
    thread.start()
    try:
        while not server.started and thread.is_alive():
            threading.Event().wait(0.02)
        yield f"http://127.0.0.1:{sock.getsockname()[1]}"
    finally:
        server.should_exit = True
        thread.join(10)
        sock.close()


def screenshot(browser: str, url: str, out: Path, width: int, height: int, tmp: str) -> None:
    profile = tempfile.mkdtemp(prefix="profile-", dir=tmp)  # a fresh profile every run
    command = [
        browser,
        "--headless",
        "--no-sandbox",
        "--disable-gpu",
        "--disable-quic",
        "--no-first-run",
        "--disable-background-networking",
        "--disable-component-update",
        "--disable-sync",
        "--hide-scrollbars",
        f"--user-data-dir={profile}",
        f"--screenshot={out.resolve()}",
        f"--window-size={width},{height}",
        url,
    ]
    subprocess.run(command, check=True, timeout=120, capture_output=True)


if __name__ == "__main__":
    sys.exit(main())
