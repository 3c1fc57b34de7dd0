"""Log lines: one per event, as text or as JSON (worker.log_format), with their context.

Stages attach context with `extra={"source_id": ..., "source": ..., "timeline": ...}`;
both formats carry it, the JSON one as fields a log system can filter on.
"""

from __future__ import annotations

import json
import logging
import sys
from datetime import UTC, datetime
from typing import Any, TextIO

# Attributes every LogRecord has; anything else on a record came from `extra=`.
_STANDARD = set(vars(logging.LogRecord("", 0, "", 0, "", None, None))) | {"message", "asctime"}
TEXT_FORMAT = "%(asctime)s %(levelname)s %(name)s: %(message)s"


def context_of(record: logging.LogRecord) -> dict[str, Any]:
    return {k: v for k, v in vars(record).items() if k not in _STANDARD and not k.startswith("_")}


class TextFormatter(logging.Formatter):
    """The classic line, followed by the event's context as key=value pairs."""

    def __init__(self) -> None:
        super().__init__(TEXT_FORMAT)

    def format(self, record: logging.LogRecord) -> str:
        line = super().format(record)
        context = context_of(record)
        if not context:
            return line
        pairs = " ".join(f"{key}={_plain(value)}" for key, value in sorted(context.items()))
        first, newline, rest = line.partition("\n")  # a traceback stays below the line
        return f"{first} [{pairs}]{newline}{rest}"


class JsonFormatter(logging.Formatter):
    """One JSON object per line: time, level, logger, message, context, traceback."""

    def format(self, record: logging.LogRecord) -> str:
        fields: dict[str, Any] = {
            "time": datetime.fromtimestamp(record.created, UTC).isoformat(timespec="milliseconds"),
            "level": record.levelname,
            "logger": record.name,
            "message": record.getMessage(),
        }
        fields.update(context_of(record))
        if record.exc_info:
            fields["exception"] = self.formatException(record.exc_info)
        return json.dumps(fields, ensure_ascii=False, default=str)


class _Stderr(logging.StreamHandler[TextIO]):
    """Writes to sys.stderr as it is at each line: tests and embedding programs swap it."""

    def emit(self, record: logging.LogRecord) -> None:
        self.stream = sys.stderr
        super().emit(record)


def configure(level: str, log_format: str, stream: TextIO | None = None) -> None:
    """Send every log line to stderr (or `stream`) in the chosen format, replacing handlers."""
    handler = logging.StreamHandler(stream) if stream is not None else _Stderr()
    handler.setFormatter(JsonFormatter() if log_format == "json" else TextFormatter())
    root = logging.getLogger()
    for old in list(root.handlers):
        root.removeHandler(old)
    root.addHandler(handler)
    root.setLevel(level.upper())
    # One line per request from these drowns the events that matter.
    for noisy in ("httpx", "httpcore", "apscheduler", "alembic.runtime"):
        logging.getLogger(noisy).setLevel(logging.WARNING)


def _plain(value: Any) -> str:
    text = str(value)
    return json.dumps(text, ensure_ascii=False) if (" " in text or not text) else text
