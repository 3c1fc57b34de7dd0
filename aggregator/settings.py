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
    max_body_bytes: int = setting(
        15 * 1024 * 1024, "Largest feed body accepted, after decompression."
    )
    max_redirects: int = setting(5, "Longest redirect chain followed.")
    default_interval: float = setting(
        900.0, "Seconds between polls of a source without its own interval."
    )
    min_interval: float = setting(300.0, "Shortest automatic interval between polls of one source.")
    max_interval: float = setting(
        86400.0, "Longest interval between polls of one source, errors included."
    )
    jitter: float = setting(
        0.1, "Fraction of a source's interval added at random, spreading polls."
    )
    allow_private_networks: bool = setting(
        False, "Allow sources on loopback and private addresses."
    )
    allowed_networks: str = setting(
        "",
        "Networks reachable even when private networks are refused, as CIDR separated "
        'by commas, e.g. "10.0.0.0/8, 127.0.0.1/32".',
    )
    user_agent: str = setting(
        f"aggregator/0.1 (+{PROJECT_URL})", "User-Agent header sent with every request."
    )


@dataclass(frozen=True)
class ClusterSettings:
    method: str = setting(
        "embedding",
        "Event clusterer: 'embedding' (multilingual model, joins languages) or 'tfidf' "
        "(no model, fast, for small machines).",
    )
    threshold: float = setting(
        0.0,
        "Probability from the learned pair model a report needs to join a story "
        "(0 = the method's own cut: tfidf 0.25, embedding 0.45).",
    )
    window_hours: float = setting(96.0, "Stories idle longer than this stop taking new reports.")
    merge_stories: bool = setting(True, "Merge live stories that have grown into one event.")
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
    websub_hub: str = setting(
        "", "WebSub hub to advertise in feeds and notify on changes ('' = off)."
    )


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
    lease_seconds: float = setting(
        300.0, "How long a worker's claim on a due source lasts if the worker dies."
    )
    migrate_on_start: bool = setting(True, "Upgrade the database schema when the worker starts.")
    reload_config: bool = setting(True, "Apply edits of the settings file while running.")
    retention_days: float = setting(
        90.0, "Entries older than this leave the database (their identity is kept)."
    )
    log_format: str = setting("text", "Log lines as 'text' or 'json'.")


@dataclass(frozen=True)
class DemoSettings:
    enabled: bool = setting(False, "Serve the bundled demo outlets on 127.0.0.1 while running.")
    port: int = setting(8765, "Port of the demo outlets' server.")
    seconds_per_day: float = setting(10.0, "Real seconds for one simulated day of the demo's news.")


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


_SECTIONS: dict[str, type] = {
    "fetch": FetchSettings,
    "cluster": ClusterSettings,
    "publish": PublishSettings,
    "server": ServerSettings,
    "worker": WorkerSettings,
    "demo": DemoSettings,
}
_TOP_LEVEL = ("database_url", "data_dir", "log_level")
_NOT_SETTINGS = ("AGGREGATOR_CONFIG", "AGGREGATOR_TEST_")  # the file's path; the test suite's own
_LOG_LEVELS = ("DEBUG", "INFO", "WARNING", "ERROR")
_CLUSTER_METHODS = ("tfidf", "embedding")
_TYPE_NAMES = {bool: "true or false", int: "a whole number", float: "a number", str: "a string"}
_SOURCE_KEYS = {"name", "url", "interval", "language", "tags", "enabled"}
_TIMELINE_KEYS = {"name", "title", "match", "description"}
_SLUG = re.compile(r"^[a-z0-9][a-z0-9-]{0,62}$")


def documented_settings() -> list[tuple[str, Any, str]]:
    """Every scalar setting as (dotted key, default, help): the README's reference table."""
    rows: list[tuple[str, Any, str]] = []
    for f in dataclasses.fields(Settings):
        if f.name in _TOP_LEVEL:
            rows.append((f.name, f.default, f.metadata["help"]))
    for section, cls in _SECTIONS.items():
        for f in dataclasses.fields(cls):
            rows.append((f"{section}.{f.name}", f.default, f.metadata["help"]))
    return rows


class _Context:
    """Where values came from, so every error can name the file, key and line."""

    def __init__(self, file: str, text: str) -> None:
        self.file = file
        self.lines = text.splitlines()

    def error(self, key: str, message: str) -> ConfigError:
        return ConfigError(message, file=self.file, key=key, line=self.line_of(key))

    def line_of(self, key: str) -> int | None:
        # tomllib reports no positions for valid TOML, so find the key's last
        # component as an assignment or a table header; good enough to point at.
        leaf = re.escape(key.split(".")[-1].split("[")[0])
        pattern = re.compile(rf"^\s*(\[+\s*)?(\"?){leaf}\2\s*(=|\])")
        for number, line in enumerate(self.lines, start=1):
            if pattern.match(line):
                return number
        return None


def load_settings(
    path: str | Path | None = None, *, environ: Mapping[str, str] | None = None
) -> Settings:
    """Read, override from the environment and validate; raise ConfigError on any fault."""
    environ = os.environ if environ is None else environ
    path = Path(path or environ.get("AGGREGATOR_CONFIG") or DEFAULT_CONFIG)
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise ConfigError(
            "file not found; pass the path of a settings file or create one "
            "from config/aggregator.toml",
            file=str(path),
        ) from None
    except (OSError, UnicodeDecodeError) as exc:
        raise ConfigError(f"cannot read the file: {exc}", file=str(path)) from exc
    return parse_settings(text, file=str(path), environ=environ)


def parse_settings(
    text: str, *, file: str = "<string>", environ: Mapping[str, str] | None = None
) -> Settings:
    ctx = _Context(file, text)
    try:
        raw = tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        match = re.search(r"line (\d+)", str(exc))
        raise ConfigError(
            f"not valid TOML: {exc}", file=file, line=int(match.group(1)) if match else None
        ) from exc
    _apply_environment(raw, environ if environ is not None else {}, ctx)
    return _build(raw, ctx)


def _apply_environment(raw: dict[str, Any], environ: Mapping[str, str], ctx: _Context) -> None:
    """AGGREGATOR_DATABASE_URL, AGGREGATOR_FETCH__CONCURRENCY... override the file."""
    for name, value in environ.items():
        if not name.startswith("AGGREGATOR_") or name.startswith(_NOT_SETTINGS):
            continue
        parts = name[len("AGGREGATOR_") :].lower().split("__")
        if len(parts) == 1 and parts[0] in _TOP_LEVEL:
            raw[parts[0]] = value
        elif len(parts) == 2 and parts[1] in _field_names(_SECTIONS.get(parts[0])):
            raw.setdefault(parts[0], {})
            if isinstance(raw[parts[0]], dict):
                raw[parts[0]][parts[1]] = _from_env_text(value)
        else:
            raise ConfigError(
                "unknown environment override; use AGGREGATOR_<KEY> for top-level keys "
                "or AGGREGATOR_<SECTION>__<KEY> (for example AGGREGATOR_FETCH__CONCURRENCY)",
                file="environment",
                key=name,
            )


def _field_names(cls: type | None) -> set[str]:
    return {f.name for f in dataclasses.fields(cls)} if cls is not None else set()


def _from_env_text(value: str) -> Any:
    lowered = value.strip().lower()
    if lowered in ("true", "false"):
        return lowered == "true"
    for kind in (int, float):
        try:
            return kind(value)
        except ValueError:
            pass
    return value


def _build(raw: dict[str, Any], ctx: _Context) -> Settings:
    allowed = set(_TOP_LEVEL) | set(_SECTIONS) | {"sources", "timelines"}
    for key in raw:
        if key not in allowed:
            raise ctx.error(key, f"unknown key; expected one of {', '.join(sorted(allowed))}")
    top: dict[str, Any] = {}
    for key in _TOP_LEVEL:
        if key in raw:
            top[key] = _check_type(raw[key], str, key, ctx)
    sections = {
        name: _build_section(raw.get(name, {}), cls, name, ctx) for name, cls in _SECTIONS.items()
    }
    settings = Settings(
        **top,
        **sections,
        sources=_build_sources(raw.get("sources", []), ctx),
        timelines=_build_timelines(raw.get("timelines", []), ctx),
        path=ctx.file,
    )
    _validate(settings, ctx)
    return settings


def _build_section(raw: Any, cls: type, name: str, ctx: _Context) -> Any:
    if not isinstance(raw, dict):
        raise ctx.error(name, f"must be a table ([{name}])")
    fields = {f.name: f for f in dataclasses.fields(cls)}
    values: dict[str, Any] = {}
    for key, value in raw.items():
        if key not in fields:
            raise ctx.error(
                f"{name}.{key}", f"unknown key; [{name}] takes {', '.join(sorted(fields))}"
            )
        values[key] = _check_type(value, fields[key].type, f"{name}.{key}", ctx)
    return cls(**values)


def _check_type(value: Any, kind: Any, key: str, ctx: _Context) -> Any:
    kind = {"bool": bool, "int": int, "float": float, "str": str}.get(kind, kind)
    if kind is float and isinstance(value, int) and not isinstance(value, bool):
        return float(value)
    if kind is int and isinstance(value, float) and value.is_integer():
        return int(value)
    if isinstance(value, bool) and kind is not bool:
        raise ctx.error(key, f"expected {_TYPE_NAMES[kind]}, got {value!r}")
    if not isinstance(value, kind):
        raise ctx.error(key, f"expected {_TYPE_NAMES[kind]}, got {value!r}")
    return value


def parse_duration(value: Any, key: str, ctx: _Context) -> float:
    """Seconds from 900, 900.0, "15m", "2h", "1d" or "30s"."""
    if isinstance(value, bool):
        raise ctx.error(key, f'expected seconds or a duration like "15m", got {value!r}')
    if isinstance(value, int | float):
        seconds = float(value)
    elif isinstance(value, str) and (
        m := re.fullmatch(r"\s*(\d+(?:\.\d+)?)\s*([smhd]?)\s*", value)
    ):
        seconds = float(m.group(1)) * {"": 1, "s": 1, "m": 60, "h": 3600, "d": 86400}[m.group(2)]
    else:
        raise ctx.error(key, f'expected seconds or a duration like "15m", got {value!r}')
    if seconds <= 0:
        raise ctx.error(key, "must be more than zero")
    return seconds


def _array_of_tables(raw: Any, name: str, ctx: _Context) -> list[dict[str, Any]]:
    if not isinstance(raw, list) or not all(isinstance(item, dict) for item in raw):
        raise ctx.error(name, f"must be written as [[{name}]] tables")
    return raw


def _check_keys(
    item: dict[str, Any],
    where: str,
    kind: str,
    allowed: set[str],
    required: tuple[str, ...],
    ctx: _Context,
) -> None:
    for key in item:
        if key not in allowed:
            raise ctx.error(
                f"{where}.{key}", f"unknown key; {kind} takes {', '.join(sorted(allowed))}"
            )
    for key in required:
        if key not in item:
            raise ctx.error(where, f"missing required key '{key}'")


def _build_sources(raw: Any, ctx: _Context) -> tuple[SourceConfig, ...]:
    sources: list[SourceConfig] = []
    seen: set[str] = set()
    for index, item in enumerate(_array_of_tables(raw, "sources", ctx)):
        where = f"sources[{index}]"
        _check_keys(item, where, "a source", _SOURCE_KEYS, ("name", "url"), ctx)
        name = _check_type(item["name"], str, f"{where}.name", ctx).strip()
        if not name:
            raise ctx.error(f"{where}.name", "must not be empty")
        if name in seen:
            raise ctx.error(
                f"{where}.name", f"duplicate source name {name!r}; names must be unique"
            )
        seen.add(name)
        url = _check_type(item["url"], str, f"{where}.url", ctx).strip()
        check_feed_url(url, f"{where}.url", ctx)
        tags = item.get("tags", [])
        if not isinstance(tags, list) or not all(isinstance(t, str) for t in tags):
            raise ctx.error(f"{where}.tags", 'expected a list of strings, like ["ukraine"]')
        sources.append(
            SourceConfig(
                name=name,
                url=url,
                interval=parse_duration(item["interval"], f"{where}.interval", ctx)
                if "interval" in item
                else None,
                language=_check_type(item["language"], str, f"{where}.language", ctx)
                if "language" in item
                else None,
                tags=tuple(tags),
                enabled=_check_type(item.get("enabled", True), bool, f"{where}.enabled", ctx),
            )
        )
    return tuple(sources)


def check_feed_url(url: str, key: str, ctx: _Context) -> None:
    parts = urlsplit(url)
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise ctx.error(key, f"{url!r} is not an http or https URL; write the feed's full address")


def _build_timelines(raw: Any, ctx: _Context) -> tuple[TimelineConfig, ...]:
    timelines: list[TimelineConfig] = []
    seen: set[str] = set()
    for index, item in enumerate(_array_of_tables(raw, "timelines", ctx)):
        where = f"timelines[{index}]"
        _check_keys(item, where, "a timeline", _TIMELINE_KEYS, ("name", "match"), ctx)
        name = _check_type(item["name"], str, f"{where}.name", ctx)
        if not _SLUG.match(name):
            raise ctx.error(
                f"{where}.name",
                f"{name!r} cannot be used in a URL; use lower-case letters, digits and dashes",
            )
        if name in seen:
            raise ctx.error(f"{where}.name", f"duplicate timeline name {name!r}")
        seen.add(name)
        match = item["match"]
        if isinstance(match, str):
            match = [match]
        if (
            not isinstance(match, list)
            or not match
            or not all(isinstance(m, str) and m.strip() for m in match)
        ):
            raise ctx.error(
                f"{where}.match", 'expected a non-empty list of words, like ["Kursk", "Курськ"]'
            )
        timelines.append(
            TimelineConfig(
                name=name,
                title=_check_type(item.get("title", name), str, f"{where}.title", ctx),
                match=tuple(m.strip() for m in match),
                description=_check_type(
                    item.get("description", ""), str, f"{where}.description", ctx
                ),
            )
        )
    return tuple(timelines)


def _validate(settings: Settings, ctx: _Context) -> None:
    if settings.log_level.upper() not in _LOG_LEVELS:
        raise ctx.error("log_level", f"expected one of {', '.join(_LOG_LEVELS)}")
    if settings.worker.log_format not in ("text", "json"):
        raise ctx.error("worker.log_format", "expected 'text' or 'json'")
    if not 0 <= settings.fetch.jitter <= 1:
        raise ctx.error("fetch.jitter", "expected a number from 0 to 1")
    if settings.publish.websub_hub:
        check_feed_url(settings.publish.websub_hub, "publish.websub_hub", ctx)
    if settings.cluster.method not in _CLUSTER_METHODS:
        raise ctx.error("cluster.method", f"expected one of {', '.join(_CLUSTER_METHODS)}")
    if not 0 <= settings.cluster.threshold < 1:
        raise ctx.error("cluster.threshold", "expected a number from 0 (the method's own) to 1")
    for key in ("concurrency", "per_host_concurrency", "max_body_bytes"):
        if getattr(settings.fetch, key) < 1:
            raise ctx.error(f"fetch.{key}", "must be at least 1")
    if settings.fetch.min_interval > settings.fetch.max_interval:
        raise ctx.error("fetch.min_interval", "must not exceed fetch.max_interval")
    if settings.publish.min_sources < 1:
        raise ctx.error("publish.min_sources", "must be at least 1")
    check_feed_url(settings.publish.base_url, "publish.base_url", ctx)
    if not 0 < settings.server.port < 65536:
        raise ctx.error("server.port", "expected a port number from 1 to 65535")
    if settings.database_url and "://" not in settings.database_url:
        raise ctx.error(
            "database_url",
            "expected an SQLAlchemy URL such as sqlite:///data/aggregator.db "
            "or postgresql+psycopg://user@host/db",
        )
