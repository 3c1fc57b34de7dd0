"""Editing the [[sources]] of a settings file in place, keeping its comments and layout.

An edit changes only the lines of the sources it adds or removes: a new source goes
after the last one, after one blank line as the bundled file separates its blocks.
Every edit is validated as a whole file before it is written, so `sources add` can
never leave behind a file that `check-config` would refuse, and the file is replaced
atomically with its mode and owner kept (a 0600 file holding a password stays 0600).
"""

from __future__ import annotations

import os
import re
import tempfile
import tomllib
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import tomlkit

from aggregator.errors import ConfigError
from aggregator.settings import Settings, SourceConfig, parse_settings

# A table header line: [name] or [[name]], with an optional comment after it.
_HEADER = re.compile(r"^\s*\[\[?\s*([^\]]+?)\s*\]\]?\s*(#.*)?$")
_SOURCES_HEADER = re.compile(r"^\s*\[\[\s*\"?sources\"?\s*\]\]\s*(#.*)?$")


def add_sources(path: Path, sources: Sequence[SourceConfig]) -> list[str]:
    """Append sources whose name and URL are both new; returns the names added."""
    text = _read(path)
    present = _raw_sources(text, path)
    names = {str(item.get("name")) for item in present}
    urls = {str(item.get("url")) for item in present}
    added: list[SourceConfig] = []
    for source in sources:
        if source.name in names or source.url in urls:
            continue
        added.append(source)
        names.add(source.name)
        urls.add(source.url)
    if added:
        _save(path, _with_sources(text, added))
    return [source.name for source in added]


def remove_source(path: Path, name: str) -> None:
    text = _read(path)
    index = next(
        (i for i, item in enumerate(_raw_sources(text, path)) if str(item.get("name")) == name),
        None,
    )
    if index is None:
        raise ConfigError(
            f"no source named {name!r}; `aggregator sources list` shows the names",
            file=str(path),
            key="sources",
        )
    _save(path, _without_source(text, index))


def _read(path: Path) -> str:
    try:
        return path.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise ConfigError("file not found", file=str(path)) from None
    except (OSError, UnicodeDecodeError) as exc:
        raise ConfigError(f"cannot read the file: {exc}", file=str(path)) from exc


def _raw_sources(text: str, path: Path) -> list[dict[str, Any]]:
    try:
        raw = tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(f"not valid TOML: {exc}", file=str(path)) from exc
    sources = raw.get("sources", [])
    return [item for item in sources if isinstance(item, dict)] if isinstance(sources, list) else []


# -- editing the text ---------------------------------------------------------


def _with_sources(text: str, sources: Sequence[SourceConfig]) -> str:
    """The text with a block per source after the last [[sources]] block (or at the end)."""
    data = _data(text)
    expected = {**data, "sources": [*data.get("sources", []), *map(_raw, sources)]}
    blocks = "\n".join(_block(source) for source in sources)
    lines = text.splitlines(keepends=True)
    spans = _source_spans(lines)
    if spans:
        end = spans[-1][1]
        edited = "".join(lines[:end]) + "\n" + blocks + "".join(lines[end:])
        if _data(edited) == expected:
            return edited
    body = text if not text or text.endswith("\n") else text + "\n"
    edited = body + ("\n" if body.strip() and not body.endswith("\n\n") else "") + blocks
    if _data(edited) == expected:
        return edited
    # Written in a shape the line editor does not follow (`sources = [...]`, say):
    # tomlkit appends to it, keeping comments elsewhere.
    document = tomlkit.parse(text)
    if "sources" not in document:
        document.append("sources", tomlkit.aot())
    for source in sources:
        document["sources"].append(_raw(source))
    return tomlkit.dumps(document)


def _without_source(text: str, index: int) -> str:
    """The text without the index-th [[sources]] block and the blank lines that set it
    apart; comments above the block, which may speak of its neighbours too, stay."""
    data = _data(text)
    expected = {**data, "sources": [s for i, s in enumerate(data["sources"]) if i != index]}
    lines = text.splitlines(keepends=True)
    spans = _source_spans(lines)
    if len(spans) == len(data["sources"]):
        start, end = spans[index]
        if start > 0 and not lines[start - 1].strip():
            while start > 0 and not lines[start - 1].strip():
                start -= 1  # the blank lines before it, as `sources add` wrote them...
        else:
            while end < len(lines) and not lines[end].strip():
                end += 1  # ...or, with none, those after it
        edited = "".join(lines[:start] + lines[end:])
        if _data(edited) in (expected, _without_empty(expected)):
            return edited
    # Written in a shape the line editor does not follow (`sources = [...]`, say):
    # tomlkit removes the item, keeping comments elsewhere.
    document = tomlkit.parse(text)
    del document["sources"][index]
    return tomlkit.dumps(document)


def _without_empty(data: dict[str, Any]) -> dict[str, Any]:
    return {key: value for key, value in data.items() if key != "sources" or value}


def _source_spans(lines: list[str]) -> list[tuple[int, int]]:
    """(first, end) line indexes of each [[sources]] block: its header to its last
    key or comment line, before the blank lines and comments that lead the next table."""
    headers = _headers(lines)
    spans = []
    for position, start in enumerate(headers):
        if not _SOURCES_HEADER.match(lines[start]):
            continue
        stop = headers[position + 1] if position + 1 < len(headers) else len(lines)
        end = stop
        while end > start + 1 and (not lines[end - 1].strip() or _comment(lines[end - 1])):
            end -= 1
        spans.append((start, end))
    return spans


def _headers(lines: list[str]) -> list[int]:
    """Indexes of table header lines, skipping the insides of multi-line strings."""
    found, quote = [], None
    for number, line in enumerate(lines):
        if quote is None and _HEADER.match(line):
            found.append(number)
        for delimiter in re.findall(r'"""|\'\'\'', line):
            quote = delimiter if quote is None else None if delimiter == quote else quote
    return found


def _comment(line: str) -> bool:
    return line.lstrip().startswith("#")


def _block(source: SourceConfig) -> str:
    rows = [f"{key} = {tomlkit.item(value).as_string()}" for key, value in _raw(source).items()]
    return "[[sources]]\n" + "".join(f"{row}\n" for row in rows)


def _raw(source: SourceConfig) -> dict[str, Any]:
    """The source as the file writes it: only what differs from the defaults."""
    raw: dict[str, Any] = {"name": source.name, "url": source.url}
    if source.interval is not None:
        interval = source.interval
        raw["interval"] = int(interval) if interval.is_integer() else interval
    if source.language:
        raw["language"] = source.language
    if source.tags:
        raw["tags"] = list(source.tags)
    if not source.enabled:
        raw["enabled"] = False
    return raw


def _data(text: str) -> dict[str, Any]:
    try:
        return tomllib.loads(text)
    except tomllib.TOMLDecodeError:
        return {"unreadable": text}  # never equal to what an edit expects


# -- writing --------------------------------------------------------------------


def _save(path: Path, text: str) -> Settings:
    settings = parse_settings(text, file=str(path), environ={})  # refuse before writing
    write_atomically(path, text)
    return settings


def write_atomically(path: Path, text: str) -> None:
    """Replace the file at once, keeping its mode and owner: a reader (the running
    worker's reload) sees the old file or the new one, never half of one."""
    target = Path(os.path.realpath(path))  # edit the file a symlink points at
    status = target.stat()
    handle, temporary = tempfile.mkstemp(dir=target.parent, prefix=f".{target.name}.")
    try:
        with os.fdopen(handle, "w", encoding="utf-8") as out:  # mkstemp's mode is 0600
            out.write(text)
            out.flush()
            os.fchmod(out.fileno(), status.st_mode & 0o7777)
            if (status.st_uid, status.st_gid) != (os.getuid(), os.getgid()):
                _keep_owner(out.fileno(), status, target)
            os.fsync(out.fileno())
        os.replace(temporary, target)
    except BaseException:
        Path(temporary).unlink(missing_ok=True)
        raise
    _sync_folder(target.parent)


def _keep_owner(descriptor: int, status: os.stat_result, target: Path) -> None:
    try:
        os.fchown(descriptor, status.st_uid, status.st_gid)
    except PermissionError:
        raise ConfigError(
            f"cannot keep the file's owner (uid {status.st_uid}, gid {status.st_gid}); "
            "run the command as that user or as root",
            file=str(target),
        ) from None


def _sync_folder(folder: Path) -> None:
    # The rename is durable once the folder's entry is on disk.
    try:
        descriptor = os.open(folder, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(descriptor)
    except OSError:
        pass  # some file systems cannot sync a folder; the rename still happened
    finally:
        os.close(descriptor)
