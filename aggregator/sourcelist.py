"""Editing the [[sources]] of a settings file in place, keeping its comments and layout.

Every edit is validated as a whole file before it is written, so `sources add`
can never leave behind a file that `check-config` would refuse.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import tomlkit
from tomlkit.items import AoT, Table

from aggregator.errors import ConfigError
from aggregator.settings import Settings, SourceConfig, parse_settings


def _load(path: Path) -> tomlkit.TOMLDocument:
    try:
        return tomlkit.parse(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise ConfigError("file not found", file=str(path)) from None
    except tomlkit.exceptions.ParseError as exc:
        raise ConfigError(f"not valid TOML: {exc}", file=str(path), line=exc.line) from exc


def _save(path: Path, document: tomlkit.TOMLDocument) -> Settings:
    text = tomlkit.dumps(document)
    settings = parse_settings(text, file=str(path), environ={})  # refuse before writing
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(text, encoding="utf-8")
    tmp.replace(path)
    return settings


def _table(source: SourceConfig) -> Table:
    table = tomlkit.table()
    table["name"] = source.name
    table["url"] = source.url
    if source.interval is not None:
        table["interval"] = (
            int(source.interval) if source.interval.is_integer() else source.interval
        )
    if source.language:
        table["language"] = source.language
    if source.tags:
        table["tags"] = list(source.tags)
    if not source.enabled:
        table["enabled"] = False
    return table


def add_sources(path: Path, sources: Sequence[SourceConfig]) -> list[str]:
    """Append sources whose name and URL are both new; returns the names added."""
    document = _load(path)
    existing = document.get("sources")
    if existing is None:
        existing = AoT([])
        document.append("sources", existing)
    names = {str(t.get("name")) for t in existing}
    urls = {str(t.get("url")) for t in existing}
    added = []
    for source in sources:
        if source.name in names or source.url in urls:
            continue
        existing.append(_table(source))
        names.add(source.name)
        urls.add(source.url)
        added.append(source.name)
    if added:
        _save(path, document)
    return added


def remove_source(path: Path, name: str) -> None:
    document = _load(path)
    existing = document.get("sources")
    tables = list(existing) if existing is not None else []
    keep = [t for t in tables if str(t.get("name")) != name]
    if len(keep) == len(tables):
        raise ConfigError(
            f"no source named {name!r}; `aggregator sources list` shows the names",
            file=str(path),
            key="sources",
        )
    document["sources"] = AoT(keep)
    _save(path, document)
