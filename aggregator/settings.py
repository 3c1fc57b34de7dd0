"""The one settings object, read: from the TOML file and the environment, every value
held to its declaration in aggregator.settings_schema, every mistake reported at once.

`load_settings(path)` reads the file, applies AGGREGATOR_* environment overrides and
validates everything, raising ConfigError (ConfigErrors for several) naming file, key
and line, or the variable. `check_source` and `with_values` hold values given on the
command line or in OPML to the same checks. Stages receive the section they need
(`settings.fetch`, ...), never a global.
"""

from __future__ import annotations

import dataclasses
import os
import re
import tomllib
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

from aggregator import values
from aggregator.errors import ConfigError, ConfigErrors
from aggregator.settings_schema import (
    CLUSTER_METHODS,
    DEFAULT_CONFIG,
    LOG_LEVELS,
    PROJECT_URL,
    SECTIONS,
    SOURCE_INTERVAL,
    TOP_LEVEL,
    ClusterSettings,
    DemoSettings,
    FetchSettings,
    PublishSettings,
    ServerSettings,
    Settings,
    SourceConfig,
    TimelineConfig,
    WorkerSettings,
    documented_settings,
    reference_rows,
)
from aggregator.values import InvalidValue

__all__ = [
    "CLUSTER_METHODS",
    "DEFAULT_CONFIG",
    "LOG_LEVELS",
    "PROJECT_URL",
    "ClusterSettings",
    "DemoSettings",
    "FetchSettings",
    "PublishSettings",
    "ServerSettings",
    "Settings",
    "SourceConfig",
    "TimelineConfig",
    "WorkerSettings",
    "check_source",
    "documented_settings",
    "load_settings",
    "parse_duration",
    "parse_settings",
    "reference_rows",
    "with_values",
]

_NOT_SETTINGS = ("AGGREGATOR_CONFIG", "AGGREGATOR_TEST_")  # the file's path; the test suite's own
_KINDS: dict[Any, type] = {"bool": bool, "int": int, "float": float, "str": str}
_SOURCE_KEYS = {"name", "url", "interval", "language", "tags", "enabled"}
_TIMELINE_KEYS = {"name", "title", "match", "description", "language"}
_SLUG = re.compile(r"^[a-z0-9][a-z0-9-]{0,62}$")
_SKIP = object()  # a value that was refused: reported, and the default stands


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
        if len(parts) == 1 and parts[0] in TOP_LEVEL:
            raw[parts[0]] = value
            ctx.overrides[parts[0]] = shown
        elif len(parts) == 2 and parts[1] in _field_names(SECTIONS.get(parts[0])):
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
    allowed = set(TOP_LEVEL) | set(SECTIONS) | {"sources", "timelines"}
    for key in raw:
        if key not in allowed:
            ctx.report(key, f"unknown key; expected one of {', '.join(sorted(allowed))}")
    top = _section_values({key: raw[key] for key in TOP_LEVEL if key in raw}, Settings, None, ctx)
    sections = {}
    for name, cls in SECTIONS.items():
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
    return values.language(str(values.typed(value, str)))


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
        language = (
            ctx.attempt(f"{where}.language", _language, item["language"])
            if item.get("language")
            else ""
        )
        if len(ctx.problems) == before:
            timelines.append(TimelineConfig(name, title, match, description, language))
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
