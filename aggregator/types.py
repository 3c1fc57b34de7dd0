"""Plain, immutable values passed between the pipeline's stages.

fetch -> FetchResult -> parse -> ParsedFeed(EntryData...) -> store -> ClusterDoc
-> dedupe/cluster -> Assignment -> publish(TimelineDoc(TimelineItem...)).
ORM rows never leave `aggregator.store`; these types are what crosses.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import datetime


@dataclass(frozen=True)
class FetchRequest:
    """What the fetcher needs to poll one source, read from its stored state."""

    source_id: int
    name: str
    url: str
    etag: str | None = None
    last_modified: str | None = None
    body_hash: str | None = None


@dataclass(frozen=True)
class FetchResult:
    """The outcome of one poll. `body` is None for 304, unchanged bodies and errors."""

    request: FetchRequest
    fetched_at: datetime
    status: int | None  # HTTP status of the final response; None when no response came
    final_url: str
    headers: Mapping[str, str] = field(default_factory=dict)
    body: bytes | None = None
    etag: str | None = None
    last_modified: str | None = None
    body_hash: str | None = None
    not_modified: bool = False  # 304, or 200 with the same body hash as last time
    error_code: str | None = None  # stable key, e.g. "http_404", "timeout"
    error: str | None = None  # readable message naming what to do
    duration_s: float = 0.0
    permanent_redirect: str | None = None  # target of a 301/308 seen on this poll

    @property
    def ok(self) -> bool:
        return self.error_code is None


@dataclass(frozen=True)
class EntryData:
    """One entry as parsed from a feed, before storing."""

    key: str  # identity within its source: guid, else link, else a hash of title+content
    title: str
    link: str | None
    summary_html: str  # sanitised HTML, safe to republish
    text: str  # plain text of title-less body, for dedupe and clustering
    author: str | None
    published: datetime | None  # aware UTC
    updated: datetime | None  # aware UTC
    content_hash: str  # changes when title or body change
    language: str | None = None


@dataclass(frozen=True)
class ParsedFeed:
    title: str | None
    link: str | None  # the outlet's site
    language: str | None
    ttl_minutes: int | None
    entries: tuple[EntryData, ...]
    # What is malformed in the document, when its entries could be read all the same.
    defect: str | None = None


@dataclass(frozen=True)
class ClusterDoc:
    """An entry as dedupe and clustering see it (also what `aggregator eval` streams)."""

    id: str
    title: str
    text: str
    url: str
    published: datetime  # aware UTC; first-seen time when the feed gave none
    source: str
    lang: str = ""
    host: str = ""


@dataclass(frozen=True)
class Assignment:
    """Where one document went: a story, and the document it duplicates if any."""

    doc_id: str
    story_id: str
    duplicate_of: str | None = None  # doc id of the first copy (same canonical URL or text)
    new_story: bool = False
    similarity: float = 0.0
    # The event inside the story: its founding entry's id ("" = not decided). Not
    # compared: an assignment is equal to another by where its story decision went.
    event_key: str = field(default="", compare=False)


@dataclass(frozen=True)
class ReportLine:
    """One outlet's report of an event, as an event's item lists it."""

    outlet: str
    link: str
    published: datetime
    language: str | None = None
    outlet_site: str | None = None
    also: tuple[tuple[str, str], ...] = ()  # (outlet, link) of its merged copies
    title: str = ""  # its own headline, in its own language


@dataclass(frozen=True)
class TimelineItem:
    """One event (or one report) in a published timeline; duplicates fold into `also`.

    An event of several reports lists them all in `reports`, oldest first; the item's
    own fields then describe its most representative report.
    """

    id: str  # stable tag: URI, never changes once published
    title: str
    link: str
    summary_html: str
    outlet: str
    outlet_url: str  # the outlet's feed URL (RSS <source url>, Atom source)
    outlet_site: str | None
    published: datetime
    updated: datetime
    language: str | None = None
    also: tuple[tuple[str, str], ...] = ()  # (outlet, link) of merged duplicates
    reports: tuple[ReportLine, ...] = ()  # every report of the event when it has several


@dataclass(frozen=True)
class TimelineDoc:
    """A timeline ready to render: feed metadata and items, newest first."""

    slug: str  # path segment: /timelines/<slug>.atom
    title: str
    description: str
    id: str  # stable tag: URI of the feed
    updated: datetime
    items: tuple[TimelineItem, ...]
    sources: tuple[str, ...] = ()  # distinct outlets, for the description and index
    first_report: datetime | None = None
    latest_report: datetime | None = None
    reports: int | None = None  # every report, copies and items past max_items included


@dataclass(frozen=True)
class Document:
    """A rendered document as served: feeds, OPML and pages, keyed by URL path."""

    path: str  # e.g. "/timelines/kursk.atom"
    content_type: str
    body: bytes
    etag: str  # quoted strong validator, e.g. '"3f2a..."'
    updated: datetime  # Last-Modified


@dataclass(frozen=True)
class PollOutcome:
    """The fetch state to store after one poll, decided by the pipeline."""

    checked_at: datetime
    next_check_at: datetime
    status: str  # ok | error | gone
    http_status: int | None = None
    error_code: str | None = None
    error: str | None = None
    etag: str | None = None
    last_modified: str | None = None
    body_hash: str | None = None
    ttl_s: float | None = None
    feed_title: str | None = None
    site_url: str | None = None
    new_url: str | None = None  # adopt a permanent redirect
    redirect_url: str | None = None
    redirect_count: int = 0
    keep_validators: bool = False  # a 304 or an error leaves the stored validators alone
