"""The one settings object: every setting declared once with its default and help.

`load_settings(path)` reads the TOML file, applies AGGREGATOR_* environment
overrides and validates everything, raising ConfigError naming file, key and
line. Stages receive the section they need (`settings.fetch`, ...), never a global.
"""

from __future__ import annotations

import dataclasses
import os
import re
import tomllib
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

from aggregator.errors import ConfigError

DEFAULT_CONFIG = Path("config/aggregator.toml")
PROJECT_URL = "https://github.com/aggregator-project/aggregator"


def setting(default: Any, help: str, **extra: Any) -> Any:
    """Declare a setting: its default and the help line the README documents."""
    factory = extra.pop("factory", None)
    meta = {"help": help, **extra}
    if factory is not None:
        return field(default_factory=factory, metadata=meta)
    return field(default=default, metadata=meta)


@dataclass(frozen=True)
class FetchSettings:
    timeout_connect: float = setting(10.0, "Seconds to wait for a TCP/TLS connection.")
    timeout_read: float = setting(30.0, "Seconds to wait for each chunk of the response.")
    timeout_total: float = setting(60.0, "Seconds a whole fetch may take, redirects included.")
    concurrency: int = setting(16, "Requests in flight at once, across all hosts.")
    per_host_concurrency: int = setting(2, "Requests in flight at once to one host.")
    max_body_bytes: int = setting(15 * 1024 * 1024, "Largest feed body accepted, after decompression.")
    max_redirects: int = setting(5, "Longest redirect chain followed.")
    default_interval: float = setting(900.0, "Seconds between polls of a source without its own interval.")
    min_interval: float = setting(300.0, "Shortest automatic interval between polls of one source.")
    max_interval: float = setting(86400.0, "Longest interval between polls of one source, errors included.")
    allow_private_networks: bool = setting(False, "Allow sources on loopback and private addresses.")
    user_agent: str = setting(
        f"aggregator/0.1 (+{PROJECT_URL})", "User-Agent header sent with every request."
    )


@dataclass(frozen=True)
class ClusterSettings:
    method: str = setting(
        "tfidf", "Event clusterer: 'tfidf' (no model, fast) or 'embedding' (multilingual model)."
    )
    threshold: float = setting(0.32, "Similarity a report needs to join an existing story.")
    window_hours: float = setting(96.0, "Stories idle longer than this stop taking new reports.")
    dedupe_titles: bool = setting(
        True, "Treat the same normalised title and text from two outlets as one item."
    )


@dataclass(frozen=True)
class PublishSettings:
    base_url: str = setting(
        "http://127.0.0.1:8080", "Public URL of the feed server; feed self links start with it."
    )
    min_sources: int = setting(2, "Distinct outlets a story needs before it becomes a timeline.")
    max_items: int = setting(200, "Most items in one published feed.")
    max_stories: int = setting(100, "Most stories in the all-stories feed and the index page.")
    out_dir: str = setting("", "Also write every published document into this folder ('' = off).")
    title: str = setting("Aggregator timelines", "Title of the index page and all-stories feed.")


@dataclass(frozen=True)
class ServerSettings:
    enabled: bool = setting(True, "Serve feeds over HTTP while `aggregator run` works.")
    host: str = setting("127.0.0.1", "Address the feed server listens on.")
    port: int = setting(8080, "Port the feed server listens on.")


@dataclass(frozen=True)
class WorkerSettings:
    cycle_seconds: float = setting(
        30.0, "Seconds between worker cycles (each polls due sources, clusters, publishes)."
    )


@dataclass(frozen=True)
class DemoSettings:
    enabled: bool = setting(False, "Serve the bundled demo outlets on 127.0.0.1 while running.")
    port: int = setting(8765, "Port of the demo outlets' server.")
    seconds_per_day: float = setting(
        20.0, "Real seconds for one simulated day of the demo's news."
    )


@dataclass(frozen=True)
class SourceConfig:
    name: str
    url: str
    interval: float | None = None
    language: str | None = None
    tags: tuple[str, ...] = ()
    enabled: bool = True


@dataclass(frozen=True)
class TimelineConfig:
    name: str  # slug in feed URLs
    title: str
    match: tuple[str, ...]  # case-insensitive substrings of a story's reports
    description: str = ""


@dataclass(frozen=True)
class Settings:
    database_url: str = setting(
        "", "SQLAlchemy URL of the database ('' = a SQLite file in data_dir)."
    )
    data_dir: str = setting("data", "Folder for the SQLite database and other state.")
    log_level: str = setting("INFO", "Logging level: DEBUG, INFO, WARNING or ERROR.")
    fetch: FetchSettings = setting(None, "", factory=FetchSettings)
    cluster: ClusterSettings = setting(None, "", factory=ClusterSettings)
    publish: PublishSettings = setting(None, "", factory=PublishSettings)
    server: ServerSettings = setting(None, "", factory=ServerSettings)
    worker: WorkerSettings = setting(None, "", factory=WorkerSettings)
    demo: DemoSettings = setting(None, "", factory=DemoSettings)
    sources: tuple[SourceConfig, ...] = ()
    timelines: tuple[TimelineConfig, ...] = ()
    path: str | None = None  # the file these settings came from

    @property
    def resolved_database_url(self) -> str:
        if self.database_url:
            return self.database_url
        return f"sqlite:///{Path(self.data_dir) / 'aggregator.db'}"
