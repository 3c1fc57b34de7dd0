"""What the store hands out: frozen views of its rows, and the one way times are stored.

ORM rows never leave `aggregator.store`; these values do.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime


def to_db(moment: datetime) -> datetime:
    """Aware UTC, the form every table stores (a naive time is taken as UTC)."""
    return moment.replace(tzinfo=UTC) if moment.tzinfo is None else moment.astimezone(UTC)


def from_db(moment: datetime) -> datetime:
    return moment.replace(tzinfo=UTC) if moment.tzinfo is None else moment.astimezone(UTC)


def maybe_from_db(moment: datetime | None) -> datetime | None:
    return None if moment is None else from_db(moment)


@dataclass(frozen=True)
class IngestCounts:
    new: int = 0
    updated: int = 0
    unchanged: int = 0
    tombstoned: int = 0  # listed by the feed, but removed by retention: not stored again
    recorded: bool = True  # False: another worker owned the source by then; state untouched
    to_embed: tuple[int, ...] = ()  # ids of entries stored without a vector: new, or rewritten


@dataclass(frozen=True)
class SourceStatus:
    """One line of `aggregator sources list`."""

    id: int
    name: str
    url: str
    enabled: bool
    in_config: bool
    status: str
    last_http_status: int | None
    last_error_code: str | None
    last_error: str | None
    error_count: int
    last_checked_at: datetime | None
    next_check_at: datetime | None
    entries: int


@dataclass(frozen=True)
class FetchStateView:
    """What the next-check policy needs to know about a source."""

    interval_s: float | None
    error_count: int
    ttl_s: float | None
    redirect_url: str | None
    redirect_count: int


@dataclass(frozen=True, slots=True)
class EntryView:
    """An entry with its outlet, as the publisher needs it."""

    id: int
    story_id: int | None
    duplicate_of: int | None
    title: str
    url: str
    summary: str
    text: str
    language: str | None
    outlet: str
    outlet_url: str
    outlet_site: str | None
    published: datetime  # the outlet's date, else when we first saw it
    first_seen: datetime
    changed: datetime
    event_key: str | None = None  # the entry id that began its event; None: stored before events


@dataclass(frozen=True, slots=True)
class StoryView:
    id: int
    key: str
    title: str
    first_at: datetime
    last_at: datetime
    entry_count: int
    source_count: int
    updated_at: datetime
    revision: int = 0  # grows with every change; publishing marks one revision done


@dataclass(frozen=True)
class ReportSpan:
    """What a timeline's description states of all its reports, copies included:
    its outlets (sorted), its first and latest report, and how many there are."""

    sources: tuple[str, ...] = ()
    first_report: datetime | None = None
    latest_report: datetime | None = None
    reports: int = 0


@dataclass(frozen=True)
class LeaderView:
    """Who holds the in-order work now; `until` None means nobody holds it."""

    owner: str | None
    term: int
    until: datetime | None


@dataclass(frozen=True)
class RetentionReport:
    entries: int = 0  # entries removed (their identity kept as tombstones)
    stories: tuple[int, ...] = ()  # stories left without entries, removed too
    tombstones: int = 0  # tombstones of entries no feed listed for the retention age
