"""What every setting is: its type, default, range or check, and help, declared once.

The dataclasses here are the settings object the stages receive; aggregator.settings
reads them from a file and the environment, holding every value to these declarations,
and the README's reference table is generated from them (`reference_rows`).
"""

from __future__ import annotations

import dataclasses
import json
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from aggregator import values
from aggregator.values import DAY, YEAR, Bounds

DEFAULT_CONFIG = Path("config/aggregator.toml")
PROJECT_URL = "https://github.com/aggregator-project/aggregator"


def setting(
    default: Any,
    help: str,
    *,
    bounds: Bounds | None = None,
    check: Callable[[Any], Any] | None = None,
    values: str = "",
    factory: Callable[[], Any] | None = None,
) -> Any:
    """Declare a setting: its default, the help line the README documents, and the
    bounds (numbers) or check (text, whose `values` say what it takes) every value is
    held to wherever it comes from."""
    meta = {"help": help, "bounds": bounds, "check": check, "values": values}
    if factory is not None:
        return field(default_factory=factory, metadata=meta)
    return field(default=default, metadata=meta)


def seconds(default: float, help: str, at_most: float) -> Any:
    """A duration: seconds as a number, or text like "30s", "15m", "2h", "1d"."""
    return field(
        default=default,
        metadata={"help": help, "bounds": Bounds(more_than=0, at_most=at_most), "duration": True},
    )


def count(default: int, help: str, at_least: int, at_most: int) -> Any:
    return setting(default, help, bounds=Bounds(at_least=at_least, at_most=at_most))


def choice(default: str, help: str, choices: tuple[str, ...]) -> Any:
    return setting(
        default,
        help,
        check=lambda value: values.one_of(value, choices),
        values=", ".join(f'"{choice}"' for choice in choices),
    )


PORT = Bounds(at_least=1, at_most=65535)
# A source's own interval: the same span as fetch.max_interval may take.
SOURCE_INTERVAL = Bounds(more_than=0, at_most=YEAR)
LOG_LEVELS = ("DEBUG", "INFO", "WARNING", "ERROR")
CLUSTER_METHODS = ("embedding", "tfidf")


def _log_level(value: str) -> str:
    values.one_of(value.upper(), LOG_LEVELS)
    return value


def _optional_url(value: str) -> str:
    return values.http_url(value) if value else value


@dataclass(frozen=True)
class FetchSettings:
    timeout_connect: float = seconds(10.0, "Seconds to wait for a TCP/TLS connection.", DAY)
    timeout_read: float = seconds(30.0, "Seconds to wait for each chunk of the response.", DAY)
    timeout_total: float = seconds(60.0, "Seconds a whole fetch may take, redirects included.", DAY)
    concurrency: int = count(16, "Requests in flight at once, across all hosts.", 1, 10_000)
    per_host_concurrency: int = count(2, "Requests in flight at once to one host.", 1, 10_000)
    max_body_bytes: int = count(
        15 * 1024 * 1024, "Largest feed body accepted, after decompression.", 1, 2**30
    )
    max_redirects: int = count(5, "Longest redirect chain followed.", 0, 100)
    default_interval: float = seconds(
        900.0, "Seconds between polls of a source without its own interval.", YEAR
    )
    min_interval: float = seconds(
        300.0, "Shortest automatic interval between polls of one source.", YEAR
    )
    max_interval: float = seconds(
        86400.0, "Longest interval between polls of one source, errors included.", YEAR
    )
    jitter: float = setting(
        0.1,
        "Fraction of a source's interval added at random, spreading polls.",
        bounds=Bounds(at_least=0, at_most=1),
    )
    allow_private_networks: bool = setting(
        False, "Allow sources on loopback and private addresses."
    )
    allowed_networks: str = setting(
        "",
        "Networks reachable even when private networks are refused, as CIDR separated "
        'by commas, e.g. "10.0.0.0/8, 127.0.0.1/32".',
        check=values.networks,
        values="CIDR networks or addresses",
    )
    user_agent: str = setting(
        f"aggregator/0.1 (+{PROJECT_URL})",
        "User-Agent header sent with every request.",
        check=values.header_value,
        values="printable ASCII",
    )


@dataclass(frozen=True)
class ClusterSettings:
    method: str = choice(
        "embedding",
        'Event clusterer: "embedding" (multilingual model, joins languages) or "tfidf" '
        "(no model, fast, for small machines).",
        CLUSTER_METHODS,
    )
    threshold: float = setting(
        0.0,
        "Probability from the learned pair model a report needs to join a story "
        "(0 = the method's own cut: tfidf 0.25, embedding 0.55).",
        bounds=Bounds(at_least=0, below=1),
    )
    window_hours: float = setting(
        96.0,
        "Stories idle longer than this stop taking new reports.",
        bounds=Bounds(more_than=0, at_most=10 * 8760),
    )
    merge_stories: bool = setting(True, "Merge live stories that have grown into one event.")
    dedupe_titles: bool = setting(
        True, "Treat the same normalised title and text from two outlets as one item."
    )


@dataclass(frozen=True)
class PublishSettings:
    base_url: str = setting(
        "http://127.0.0.1:8080",
        "Public URL of the feed server; feed self links start with it.",
        check=values.http_url,
        values="http(s) URL",
    )
    min_sources: int = count(
        2, "Distinct outlets a story needs before it becomes a timeline.", 1, 10_000
    )
    max_items: int = count(200, "Most items in one published feed.", 1, 100_000)
    max_stories: int = count(
        100, "Most stories in the all-stories feed and the index page.", 1, 100_000
    )
    out_dir: str = setting("", 'Also write every published document into this folder ("" = off).')
    title: str = setting("Aggregator timelines", "Title of the index page and all-stories feed.")
    language: str = setting(
        "",
        "Language an event is titled in when one of its reports is in it, like en or uk "
        '(a timeline\'s own `language` comes first; "" = the most representative report).',
        check=values.optional_language,
        values='language code or ""',
    )
    websub_hub: str = setting(
        "",
        'WebSub hub to advertise in feeds and notify on changes ("" = off).',
        check=_optional_url,
        values='http(s) URL or ""',
    )


@dataclass(frozen=True)
class ServerSettings:
    enabled: bool = setting(True, "Serve feeds over HTTP while `aggregator run` works.")
    host: str = setting(
        "127.0.0.1",
        "Address the feed server listens on.",
        check=values.host,
        values="host name or IP address",
    )
    port: int = setting(8080, "Port the feed server listens on.", bounds=PORT)


@dataclass(frozen=True)
class WorkerSettings:
    cycle_seconds: float = seconds(
        30.0, "Seconds between worker cycles (each polls due sources, clusters, publishes).", DAY
    )
    lease_seconds: float = seconds(
        300.0, "How long a worker's claim on a due source lasts if the worker dies.", 7 * DAY
    )
    migrate_on_start: bool = setting(True, "Upgrade the database schema when the worker starts.")
    reload_config: bool = setting(True, "Apply edits of the settings file while running.")
    retention_days: float = setting(
        90.0,
        "Entries stored longer than this leave the database (their identity is kept).",
        bounds=Bounds(more_than=0, at_most=100 * 365),
    )
    log_format: str = choice("text", 'Log lines as "text" or "json".', ("text", "json"))


@dataclass(frozen=True)
class DemoSettings:
    enabled: bool = setting(False, "Serve the bundled demo outlets on 127.0.0.1 while running.")
    port: int = setting(8765, "Port of the demo outlets' server.", bounds=PORT)
    seconds_per_day: float = seconds(
        10.0, "Real seconds for one simulated day of the demo's news.", DAY
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
    language: str = ""  # events titled in this language when they have a report in it


@dataclass(frozen=True)
class Settings:
    database_url: str = setting(
        "",
        'SQLAlchemy URL of the database ("" = a SQLite file in data_dir).',
        check=values.database_url,
        values='SQLAlchemy URL or ""',
    )
    data_dir: str = setting(
        "data",
        "Folder for the SQLite database and other state.",
        check=values.not_empty,
        values="a path",
    )
    log_level: str = setting(
        "INFO",
        "Logging level: DEBUG, INFO, WARNING or ERROR.",
        check=_log_level,
        values=", ".join(f'"{level}"' for level in LOG_LEVELS),
    )
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


SECTIONS: dict[str, type] = {
    "fetch": FetchSettings,
    "cluster": ClusterSettings,
    "publish": PublishSettings,
    "server": ServerSettings,
    "worker": WorkerSettings,
    "demo": DemoSettings,
}
TOP_LEVEL = ("database_url", "data_dir", "log_level")


def documented_settings() -> list[tuple[str, Any, str]]:
    """Every scalar setting as (dotted key, default, help): the README's reference table."""
    return [(key, f.default, f.metadata["help"]) for key, f in scalar_fields()]


def reference_rows() -> list[str]:
    """The README's reference table, one Markdown row per setting, from the declarations."""
    rows = []
    for key, declared in scalar_fields():
        default = json.dumps(declared.default, ensure_ascii=False)
        help = declared.metadata["help"]
        rows.append(f"| `{key}` | `{default}` | {_values_taken(declared)} | {help} |")
    return rows


def _values_taken(declared: dataclasses.Field[Any]) -> str:
    meta = declared.metadata
    bounds: Bounds | None = meta.get("bounds")
    if meta.get("duration") and bounds is not None:
        return f'seconds, or "15m", "2h"...; {bounds.describe(values.span)}'
    if bounds is not None:
        return bounds.describe()
    if declared.type == "bool":
        return "true or false"
    return str(meta.get("values") or "text")


def scalar_fields() -> list[tuple[str, dataclasses.Field[Any]]]:
    rows = [(f.name, f) for f in dataclasses.fields(Settings) if f.name in TOP_LEVEL]
    for section, cls in SECTIONS.items():
        rows += [(f"{section}.{f.name}", f) for f in dataclasses.fields(cls)]
    return rows
