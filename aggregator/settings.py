"""The one settings object: every setting declared once with its default and help.

`load_settings(path)` reads the TOML file, applies AGGREGATOR_* environment
overrides and validates everything, raising ConfigError naming file, key and
line. Stages receive the section they need (`settings.fetch`, ...), never a global.
"""

from __future__ import annotations

import dataclasses
import json
import os
import re
import tomllib
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from aggregator import values
from aggregator.errors import ConfigError, ConfigErrors
from aggregator.values import DAY, YEAR, Bounds, InvalidValue

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
        "(0 = the method's own cut: tfidf 0.25, embedding 0.45).",
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
_KINDS: dict[Any, type] = {"bool": bool, "int": int, "float": float, "str": str}
_SOURCE_KEYS = {"name", "url", "interval", "language", "tags", "enabled"}
_TIMELINE_KEYS = {"name", "title", "match", "description"}
_SLUG = re.compile(r"^[a-z0-9][a-z0-9-]{0,62}$")
_LANGUAGE = re.compile(r"[A-Za-z]{2,8}(-[A-Za-z0-9]{1,8})*")  # BCP 47's shape, as feeds carry it
_SKIP = object()  # a value that was refused: reported, and the default stands


def documented_settings() -> list[tuple[str, Any, str]]:
    """Every scalar setting as (dotted key, default, help): the README's reference table."""
    return [(key, f.default, f.metadata["help"]) for key, f in _scalar_fields()]


def reference_rows() -> list[str]:
    """The README's reference table, one Markdown row per setting, from the declarations."""
    rows = []
    for key, declared in _scalar_fields():
        default = json.dumps(declared.default, ensure_ascii=False)
        help = declared.metadata["help"]
        rows.append(f"| `{key}` | `{default}` | {_values_taken(declared)} | {help} |")
    return rows


def _values_taken(declared: dataclasses.Field[Any]) -> str:
    meta = declared.metadata
    bounds: Bounds | None = meta.get("bounds")
    if meta.get("duration") and bounds is not None and bounds.at_most is not None:
        longest = bounds.at_most / DAY
        return f'seconds, or "15m", "2h"...; more than 0, at most {longest:g} day' + (
            "s" if longest != 1 else ""
        )
    if bounds is not None:
        return bounds.describe()
    if declared.type == "bool":
        return "true or false"
    return str(meta.get("values") or "text")


def _scalar_fields() -> list[tuple[str, dataclasses.Field[Any]]]:
    rows = [(f.name, f) for f in dataclasses.fields(Settings) if f.name in _TOP_LEVEL]
    for section, cls in _SECTIONS.items():
        rows += [(f"{section}.{f.name}", f) for f in dataclasses.fields(cls)]
    return rows


class _Context:
    """Where values came from, and every mistake found so far, so that one pass reports
    them all, each naming the file and line or the environment variable."""

    def __init__(self, file: str | None, text: str = "") -> None:
        self.file = file
        self.lines = text.splitlines()
        self.problems: list[ConfigError] = []
        self.overrides: dict[str, str] = {}  # dotted key -> "AGGREGATOR_...=value"

    def error(self, key: str, message: str) -> ConfigError:
        if key in self.overrides:
            return ConfigError(message, key=key, variable=self.overrides[key])
        return ConfigError(message, file=self.file, key=key, line=self.line_of(key))

    def report(self, key: str, message: str) -> None:
        self.problems.append(self.error(key, message))

    def attempt(self, key: str, check: Callable[..., Any], *args: Any) -> Any:
        """check(*args), or _SKIP after reporting the InvalidValue it raised under `key`."""
        try:
            return check(*args)
        except InvalidValue as exc:
            self.report(key, str(exc))
            return _SKIP

    def finish(self) -> None:
        if self.problems:
            # file order; mistakes in environment variables (no line) last
            ordered = sorted(self.problems, key=lambda p: (p.line is None, p.line or 0))
            raise ConfigErrors.of(ordered)

    def line_of(self, key: str) -> int | None:
        # tomllib reports no positions for valid TOML, so find the table's header, then
        # the key's assignment within that table; good enough to point at.
        match = re.fullmatch(r"(?:(\w+)(?:\[(\d+)\])?\.)?(\w+)(?:\[(\d+)\])?", key)
        if not match:
            return None
        table, table_index, leaf, leaf_index = match.groups()
        if table is None and leaf_index is not None:  # "sources[2]": the header itself
            return self._header(leaf, int(leaf_index))
        if table is None:  # a top-level key, or a table's own name ("fetch")
            return self._assignment(leaf, 0) or self._header(leaf, 0)
        start = self._header(table, int(table_index or 0))
        if start is None:
            return None
        return self._assignment(leaf, start) or start

    def _assignment(self, leaf: str, start: int) -> int | None:
        """The line assigning `leaf` in the table whose header is line `start` (0: top)."""
        assignment = re.compile(rf"^\s*[\"']?{re.escape(leaf)}[\"']?\s*=")
        for number in range(start, len(self.lines)):
            line = self.lines[number]
            if line.lstrip().startswith("["):
                return None
            if assignment.match(line):
                return number + 1
        return None

    def _header(self, name: str, index: int) -> int | None:
        """The line of the index-th [name] or [[name]] header, counting from 0."""
        header = re.compile(rf"^\s*\[\[?\s*\"?{re.escape(name)}\"?\s*\]")
        found = [n for n, line in enumerate(self.lines, start=1) if header.match(line)]
        return found[index] if index < len(found) else None


class _AtLine(_Context):
    """Values from one place without a settings file: an OPML outline, the command line."""

    def __init__(self, file: str | None, line: int | None) -> None:
        super().__init__(file)
        self.fixed_line = line

    def line_of(self, key: str) -> int | None:
        return self.fixed_line


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
    """Settings from TOML text; raises ConfigError, or ConfigErrors listing every mistake."""
    ctx = _Context(file, text)
    try:
        raw = tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        match = re.search(r"line (\d+)", str(exc))
        raise ConfigError(
            f"not valid TOML: {exc}", file=file, line=int(match.group(1)) if match else None
        ) from exc
    _apply_environment(raw, environ if environ is not None else {}, ctx)
    settings = _build(raw, ctx)
    ctx.finish()
    return settings


def check_source(
    given: Mapping[str, Any],
    *,
    names: Mapping[str, str],
    file: str | None = None,
    line: int | None = None,
) -> SourceConfig:
    """A source from values given outside the settings file (`sources add`, OPML import),
    held to the very checks of the file; `names` says what each key is called there."""
    ctx = _AtLine(file, line)
    source = _build_source(given, lambda key: names.get(key, key), ctx)
    ctx.finish()
    assert source is not None  # no problems reported, so every value was taken
    return source


def with_values(section: Any, given: Mapping[str, Any], *, names: Mapping[str, str]) -> Any:
    """A copy of a settings section (`settings.cluster`...) with values given outside the
    file, text read as the setting's type and held to its declaration; `names` says what
    each key is called there (`--threshold`). None values are left out."""
    ctx = _AtLine(None, None)
    raw = {key: value for key, value in given.items() if value is not None}
    fields = {f.name: f for f in dataclasses.fields(section)}
    taken = {}
    for key, value in raw.items():
        checked = ctx.attempt(
            names.get(key, key), _value, value, fields[key], isinstance(value, str)
        )
        if checked is not _SKIP:
            taken[key] = checked
    ctx.finish()
    return dataclasses.replace(section, **taken)


def _apply_environment(raw: dict[str, Any], environ: Mapping[str, str], ctx: _Context) -> None:
    """AGGREGATOR_DATABASE_URL, AGGREGATOR_FETCH__CONCURRENCY... override the file.

    The text stays text here; `_section_value` reads it as the setting's type, so a
    mistake is reported against the variable, with the same message the file gets."""
    for name, value in environ.items():
        if not name.startswith("AGGREGATOR_") or name.startswith(_NOT_SETTINGS):
            continue
        parts = name[len("AGGREGATOR_") :].lower().split("__")
        shown = f"{name}={values.hide_password(value)}"
        if len(parts) == 1 and parts[0] in _TOP_LEVEL:
            raw[parts[0]] = value
            ctx.overrides[parts[0]] = shown
        elif len(parts) == 2 and parts[1] in _field_names(_SECTIONS.get(parts[0])):
            section = raw.setdefault(parts[0], {})
            if isinstance(section, dict):
                section[parts[1]] = value
                ctx.overrides[".".join(parts)] = shown
        else:
            ctx.problems.append(
                ConfigError(
                    "unknown environment override; use AGGREGATOR_<KEY> for top-level keys "
                    "or AGGREGATOR_<SECTION>__<KEY> (for example AGGREGATOR_FETCH__CONCURRENCY)",
                    key=name,
                    variable=shown,
                )
            )


def _field_names(cls: type | None) -> set[str]:
    return {f.name for f in dataclasses.fields(cls)} if cls is not None else set()


def _build(raw: dict[str, Any], ctx: _Context) -> Settings:
    allowed = set(_TOP_LEVEL) | set(_SECTIONS) | {"sources", "timelines"}
    for key in raw:
        if key not in allowed:
            ctx.report(key, f"unknown key; expected one of {', '.join(sorted(allowed))}")
    top = _section_values({key: raw[key] for key in _TOP_LEVEL if key in raw}, Settings, None, ctx)
    sections = {}
    for name, cls in _SECTIONS.items():
        section = raw.get(name, {})
        if not isinstance(section, dict):
            ctx.report(name, f"must be a table ([{name}])")
            section = {}
        sections[name] = cls(**_section_values(section, cls, name, ctx))
    settings = Settings(
        **top,
        **sections,
        sources=_build_sources(raw.get("sources", []), ctx),
        timelines=_build_timelines(raw.get("timelines", []), ctx),
        path=ctx.file,
    )
    _check_together(settings, ctx)
    return settings


def _section_values(
    raw: dict[str, Any], cls: type, name: str | None, ctx: _Context
) -> dict[str, Any]:
    """The valid values of one table, by field name; each refused value is reported."""
    fields = {f.name: f for f in dataclasses.fields(cls)}
    taken: dict[str, Any] = {}
    for key, value in raw.items():
        dotted = f"{name}.{key}" if name else key
        if key not in fields:
            ctx.report(dotted, f"unknown key; [{name}] takes {', '.join(sorted(fields))}")
            continue
        checked = ctx.attempt(dotted, _value, value, fields[key], dotted in ctx.overrides)
        if checked is not _SKIP:
            taken[key] = checked
    return taken


def _value(value: Any, declared: dataclasses.Field[Any], from_text: bool) -> Any:
    """One setting's value, read and held to its declaration (type, bounds, check)."""
    meta = declared.metadata
    if meta.get("duration"):
        return values.duration(value, meta["bounds"])
    kind = _KINDS[declared.type]
    if from_text:
        value = values.from_text(value, kind)
    value = values.typed(value, kind)
    if meta.get("bounds") is not None:
        values.in_bounds(value, meta["bounds"])
    if meta.get("check") is not None:
        meta["check"](value)
    return value


def parse_duration(value: Any) -> float:
    """A source's interval: seconds from 900, "900", "15m", "2h", "1d" or "30s"."""
    return values.duration(value, SOURCE_INTERVAL)


def _array_of_tables(raw: Any, name: str, ctx: _Context) -> list[dict[str, Any]]:
    if not isinstance(raw, list) or not all(isinstance(item, dict) for item in raw):
        ctx.report(name, f"must be written as [[{name}]] tables")
        return []
    return raw


def _has_keys(
    item: Mapping[str, Any],
    where: str,
    kind: str,
    allowed: set[str],
    required: tuple[str, ...],
    ctx: _Context,
) -> bool:
    """Report unknown and missing keys; True when the table can be read on."""
    for key in item:
        if key not in allowed:
            ctx.report(f"{where}.{key}", f"unknown key; {kind} takes {', '.join(sorted(allowed))}")
    missing = [key for key in required if key not in item]
    for key in missing:
        ctx.report(where, f"missing required key '{key}'")
    return not missing


def _build_sources(raw: Any, ctx: _Context) -> tuple[SourceConfig, ...]:
    sources: list[SourceConfig] = []
    seen: set[str] = set()
    for index, item in enumerate(_array_of_tables(raw, "sources", ctx)):
        where = f"sources[{index}]"
        if not _has_keys(item, where, "a source", _SOURCE_KEYS, ("name", "url"), ctx):
            continue
        source = _build_source(item, f"{where}.{{}}".format, ctx)
        if source is None:
            continue
        if source.name in seen:
            ctx.report(
                f"{where}.name", f"duplicate source name {source.name!r}; names must be unique"
            )
        seen.add(source.name)
        sources.append(source)
    return tuple(sources)


def _build_source(
    item: Mapping[str, Any], key_of: Callable[[str], str], ctx: _Context
) -> SourceConfig | None:
    """One source from its values, or None after reporting what is wrong with them."""
    before = len(ctx.problems)
    name = ctx.attempt(key_of("name"), _name, item.get("name"))
    url = ctx.attempt(key_of("url"), _url, item.get("url"))
    interval = (
        ctx.attempt(key_of("interval"), parse_duration, item["interval"])
        if item.get("interval") is not None
        else None
    )
    language = (
        ctx.attempt(key_of("language"), _language, item["language"])
        if item.get("language") is not None
        else None
    )
    tags = ctx.attempt(key_of("tags"), _tags, item.get("tags", []))
    enabled = ctx.attempt(key_of("enabled"), values.typed, item.get("enabled", True), bool)
    if len(ctx.problems) > before:
        return None
    return SourceConfig(name, url, interval, language, tags, enabled)


def _name(value: Any) -> str:
    return str(values.not_empty(values.typed(value, str))).strip()


def _url(value: Any) -> str:
    return values.http_url(str(values.typed(value, str)).strip())


def _language(value: Any) -> str:
    text = str(values.typed(value, str)).strip()
    if not _LANGUAGE.fullmatch(text):
        raise InvalidValue(f"expected a language code like en, uk or pt-BR, got {value!r}")
    return text


def _tags(value: Any) -> tuple[str, ...]:
    if not isinstance(value, list | tuple) or not all(isinstance(t, str) for t in value):
        raise InvalidValue('expected a list of strings, like ["ukraine"]')
    return tuple(value)


def _build_timelines(raw: Any, ctx: _Context) -> tuple[TimelineConfig, ...]:
    timelines: list[TimelineConfig] = []
    seen: set[str] = set()
    for index, item in enumerate(_array_of_tables(raw, "timelines", ctx)):
        where = f"timelines[{index}]"
        if not _has_keys(item, where, "a timeline", _TIMELINE_KEYS, ("name", "match"), ctx):
            continue
        before = len(ctx.problems)
        name = ctx.attempt(f"{where}.name", _slug, item["name"])
        if name is not _SKIP and name in seen:
            ctx.report(f"{where}.name", f"duplicate timeline name {name!r}")
        seen.add(name)
        match = ctx.attempt(f"{where}.match", _words, item["match"])
        default_title = name if isinstance(name, str) else ""
        title = ctx.attempt(f"{where}.title", values.typed, item.get("title", default_title), str)
        description = ctx.attempt(
            f"{where}.description", values.typed, item.get("description", ""), str
        )
        if len(ctx.problems) == before:
            timelines.append(TimelineConfig(name, title, match, description))
    return tuple(timelines)


def _slug(value: Any) -> str:
    name = str(values.typed(value, str))
    if not _SLUG.match(name):
        raise InvalidValue(
            f"{name!r} cannot be used in a URL; use lower-case letters, digits and dashes"
        )
    return name


def _words(value: Any) -> tuple[str, ...]:
    words = [value] if isinstance(value, str) else value
    if (
        not isinstance(words, list)
        or not words
        or not all(isinstance(word, str) and word.strip() for word in words)
    ):
        raise InvalidValue('expected a non-empty list of words, like ["Kursk", "Курськ"]')
    return tuple(word.strip() for word in words)


def _check_together(settings: Settings, ctx: _Context) -> None:
    """Rules between settings; each one alone was checked where it was read."""
    if settings.fetch.min_interval > settings.fetch.max_interval:
        ctx.report("fetch.min_interval", "must not exceed fetch.max_interval")
