"""Labelled files for evaluation: documents with gold labels at two levels, and pairs.

The format is ../shared/data's (JSON Lines sorted by `published`). A document
file's `cluster` names its gold group at the file's level: an event (one
happening, the default) or a storyline (a developing story over days: UCI's
stories are storylines, read with `level="storyline"`). An event-level file may
also give each document a `storyline`, and a `split` that names the part of
the file it belongs to ("train" or "heldout"), so that fitting and scoring
never share documents. Every mistake names the file and line.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Callable, Iterator
from dataclasses import dataclass, replace
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, Literal

from aggregator.errors import EvalError
from aggregator.types import ClusterDoc
from aggregator.values import primary_language

Level = Literal["event", "storyline"]
LEVELS: tuple[Level, ...] = ("event", "storyline")

# A pair whose dates are both unknown is compared as if published together.
UNDATED = datetime(2000, 1, 1, tzinfo=UTC)


@dataclass(frozen=True)
class Labelled:
    """The documents of a labelled file with their gold labels, in file order.

    `events` and `storylines` are None where the file does not label that level.
    """

    docs: list[ClusterDoc]
    events: list[str] | None
    storylines: list[str] | None

    def labels(self, level: Level) -> list[str] | None:
        return self.events if level == "event" else self.storylines


def load_documents(path: Path) -> list[ClusterDoc]:
    """The documents of a labelled file, in file order."""
    return load_labelled(path)[0]


def load_labelled(path: Path) -> tuple[list[ClusterDoc], list[str]]:
    """Documents and their gold `cluster` labels, in file order."""
    labelled = load_levels(path, "event")
    assert labelled.events is not None  # `cluster` is required at every level
    return labelled.docs, labelled.events


def load_levels(path: Path, level: Level = "event", split: str | None = None) -> Labelled:
    """Documents and their gold labels at both levels, where the file gives them.

    `level` says what the file's `cluster` labels. At the event level a
    `storyline` field, when present, labels the storylines; it must then be on
    every document. With `split`, only the documents whose `split` field has
    that value are kept (a held-out part, say).
    """
    if level not in LEVELS:
        raise EvalError(f"unknown level {level!r}: use event or storyline", file=str(path))
    docs: list[ClusterDoc] = []
    clusters: list[str] = []
    storylines: list[str] = []
    for line_no, row in _rows(path):
        try:
            if split is not None and _text(row, "split", required=True) != split:
                continue
            doc = _doc(row, "")
            cluster = _text(row, "cluster", required=True)
            storyline = _text(row, "storyline") if level == "event" else ""
        except (KeyError, TypeError, ValueError) as exc:
            raise EvalError(f"bad document: {exc}", file=str(path), line=line_no) from exc
        if storylines and not storyline or docs and storyline and not storylines:
            raise EvalError(
                "storyline is given on some documents and not on others: label every"
                " document's storyline, or none",
                file=str(path),
                line=line_no,
            )
        docs.append(doc)
        clusters.append(cluster)
        if storyline:
            storylines.append(storyline)
    if split is not None and not docs:
        raise EvalError(f"no document has split {split!r}: check the split's name", file=str(path))
    if level == "storyline":
        return Labelled(docs, None, clusters)
    return Labelled(docs, clusters, storylines or None)


def _rows(path: Path) -> Iterator[tuple[int, dict[str, Any]]]:
    try:
        with path.open(encoding="utf-8") as lines:
            for line_no, line in enumerate(lines, start=1):
                if not line.strip():
                    continue
                try:
                    row = json.loads(line)
                except json.JSONDecodeError as exc:
                    raise EvalError(
                        f"not JSON ({exc.msg}): fix or remove the line",
                        file=str(path),
                        line=line_no,
                    ) from exc
                if not isinstance(row, dict):
                    raise EvalError("expected a JSON object", file=str(path), line=line_no)
                yield line_no, row
    except OSError as exc:
        raise EvalError(f"cannot read: {exc.strerror}", file=str(path)) from exc
    except UnicodeDecodeError as exc:
        raise EvalError("not UTF-8 text", file=str(path)) from exc


def _doc(row: dict[str, Any], prefix: str, published: datetime | None = None) -> ClusterDoc:
    when = published or _time(row.get(prefix + "published"))
    if when is None:
        raise ValueError(f"{prefix}published is missing")
    return ClusterDoc(
        id=_text(row, prefix + "id", required=True),
        title=_text(row, prefix + "title", required=True),
        text=_text(row, prefix + "text"),
        url=_text(row, prefix + "url"),
        published=when,
        source=_text(row, prefix + "source"),
        lang=primary_language(_text(row, prefix + "lang")),  # as the store reads a feed's tag
        host=_text(row, prefix + "host"),
    )


def _text(row: dict[str, Any], key: str, *, required: bool = False) -> str:
    value = row.get(key)
    if value is None:
        if required:
            raise KeyError(f"{key} is missing")
        return ""
    if isinstance(value, int | float) and not isinstance(value, bool):
        return str(value)  # numeric ids
    if not isinstance(value, str):
        raise TypeError(f"{key} should be a string, not {type(value).__name__}")
    return value


def _time(value: Any) -> datetime | None:
    if value is None or value == "":
        return None
    if not isinstance(value, str):
        raise TypeError(f"published should be an ISO 8601 string, not {type(value).__name__}")
    parsed = datetime.fromisoformat(value)  # ValueError names the bad text
    return parsed.replace(tzinfo=UTC) if parsed.tzinfo is None else parsed.astimezone(UTC)


def load_pairs(path: Path) -> list[tuple[ClusterDoc, ClusterDoc, bool]]:
    pairs = []
    for line_no, row in _rows(path):
        try:
            pairs.append(_pair(row, line_no))
        except (KeyError, TypeError, ValueError) as exc:
            raise EvalError(f"bad pair: {exc}", file=str(path), line=line_no) from exc
    return pairs


def _pair(row: dict[str, Any], line_no: int) -> tuple[ClusterDoc, ClusterDoc, bool]:
    same = row.get("same")
    if not isinstance(same, bool):
        raise TypeError("same should be true or false")
    row = {**row}
    for side in ("a", "b"):
        row.setdefault(f"{side}_id", f"{side}{line_no}")
    # A date on one side only is the best guess for the other: the pair was
    # labelled as news of about one time.
    a_time, b_time = _time(row.get("a_published")), _time(row.get("b_published"))
    a_time = a_time or b_time or UNDATED
    b_time = b_time or a_time
    return _doc(row, "a_", a_time), _doc(row, "b_", b_time), same


# How a labelled report is told to the clusterer: as written, or as a feed that
# gives headlines alone would carry it (every report, or every other one).
Form = Callable[[ClusterDoc], ClusterDoc]


def as_written(doc: ClusterDoc) -> ClusterDoc:
    return doc


def bare(doc: ClusterDoc) -> ClusterDoc:
    """The report with its headline and link alone, as a feed without descriptions has it."""
    return replace(doc, text="")


def half_bare(doc: ClusterDoc) -> ClusterDoc:
    """Every other report bare, chosen by a hash of its id: a stream of both kinds of feed."""
    return bare(doc) if hashlib.sha1(f"bare:{doc.id}".encode()).digest()[0] & 1 else doc
