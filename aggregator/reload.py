"""Hot reload: notice edits of the settings file and load them, keeping the last good ones.

The worker asks `ConfigWatcher.poll()` every couple of seconds. It compares the
file's bytes rather than its mtime, which also catches editors and config
managers that keep the mtime or swap symlinks. An edit that does not validate is
logged with the message `aggregator check-config` prints, and nothing changes.
"""

from __future__ import annotations

import dataclasses
import hashlib
import logging
from collections.abc import Callable, Sequence
from pathlib import Path

from aggregator.errors import ConfigError
from aggregator.settings import Settings, SourceConfig, TimelineConfig, load_settings

log = logging.getLogger(__name__)

POLL_SECONDS = 2.0
# Settings a running process cannot take over: they shaped its connections and sockets.
NEEDS_RESTART = ("database_url", "data_dir", "server", "demo")


class ConfigWatcher:
    """Polls one settings file; `poll()` returns new, valid settings once per change."""

    def __init__(
        self, path: str | Path, *, load: Callable[[Path], Settings] = load_settings
    ) -> None:
        self.path = Path(path)
        self._load = load
        self._seen = self._fingerprint()

    def poll(self) -> Settings | None:
        fingerprint = self._fingerprint()
        if fingerprint == self._seen:
            return None
        self._seen = fingerprint
        try:
            return self._load(self.path)
        except ConfigError as exc:
            log.error(
                "config reload rejected, still running on the last good config: %s",
                exc,
                extra={"event": "reload", "file": str(self.path)},
            )
            return None

    def _fingerprint(self) -> str | None:
        try:
            return hashlib.sha256(self.path.read_bytes()).hexdigest()
        except OSError:
            return None  # being replaced, or gone: wait for the next version


def describe_changes(old: Settings, new: Settings) -> list[str]:
    """What a reload changes, one line each: sources, timelines, then other settings."""
    lines = _named_changes("source", old.sources, new.sources)
    lines += _named_changes("timeline", old.timelines, new.timelines)
    for key in _changed_keys(old, new):
        if key.split(".")[0] in NEEDS_RESTART:
            lines.append(f"{key} changed, but takes effect only after a restart")
        else:
            lines.append(f"{key} changed")
    return lines


def _named_changes(
    kind: str,
    old: Sequence[SourceConfig | TimelineConfig],
    new: Sequence[SourceConfig | TimelineConfig],
) -> list[str]:
    before = {item.name: item for item in old}
    after = {item.name: item for item in new}
    lines = [f"{kind} added: {name}" for name in after if name not in before]
    lines += [f"{kind} removed: {name}" for name in before if name not in after]
    lines += [
        f"{kind} changed: {name}"
        for name in after
        if name in before and before[name] != after[name]
    ]
    return lines


def _changed_keys(old: Settings, new: Settings) -> list[str]:
    keys = []
    for field in dataclasses.fields(Settings):
        if field.name in ("sources", "timelines", "path"):
            continue
        before, after = getattr(old, field.name), getattr(new, field.name)
        if dataclasses.is_dataclass(before) and before != after:
            keys += [
                f"{field.name}.{f.name}"
                for f in dataclasses.fields(before)
                if getattr(before, f.name) != getattr(after, f.name)
            ]
        elif not dataclasses.is_dataclass(before) and before != after:
            keys.append(field.name)
    return keys
