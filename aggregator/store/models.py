"""SQLModel tables: sources and their fetch state, entries, stories, published documents.

Times are aware UTC datetimes; SQLModel's UTC column type stores them portably
(SQLite keeps no zone) and gives them back aware. The schema changes only through
the Alembic revisions in `migrations/versions/`; a change here needs one there.
"""

from __future__ import annotations

from datetime import datetime

from sqlalchemy import Column, LargeBinary, Text, UniqueConstraint
from sqlmodel import Field, SQLModel


class Source(SQLModel, table=True):
    """A configured feed. Rows outlive their config line so stored entries keep their outlet."""

    id: int | None = Field(default=None, primary_key=True)
    name: str = Field(unique=True, index=True)
    url: str  # the URL polled: the config's, or where it permanently redirected
    config_url: str | None = None  # the URL as the config gives it
    enabled: bool = True
    in_config: bool = True  # False once removed from the config file
    language: str | None = None
    tags: str = ""  # comma-separated
    interval_s: float | None = None  # the config's own interval, overriding the automatic one
    title: str | None = None  # the feed's own title
    site_url: str | None = None
    created_at: datetime


class FetchState(SQLModel, table=True):
    """Per-source polling state; written in the same transaction as the entries it describes."""

    source_id: int = Field(primary_key=True, foreign_key="source.id")
    status: str = "new"  # new | ok | error | gone
    etag: str | None = None
    last_modified: str | None = None
    body_hash: str | None = None
    last_http_status: int | None = None
    last_error_code: str | None = None
    last_error: str | None = Field(default=None, sa_column=Column(Text))
    error_count: int = 0
    ttl_s: float | None = None
    last_checked_at: datetime | None = None
    last_success_at: datetime | None = None
    next_check_at: datetime | None = Field(default=None, index=True)
    redirect_url: str | None = None  # a permanent redirect seen on recent polls
    redirect_count: int = 0
    # The worker polling this source now, and until when its claim holds: a worker
    # that dies leaves a claim that simply runs out.
    lease_owner: str | None = None
    lease_until: datetime | None = None


class Entry(SQLModel, table=True):
    __table_args__ = (UniqueConstraint("source_id", "key", name="uq_entry_source_key"),)

    id: int | None = Field(default=None, primary_key=True)
    source_id: int = Field(foreign_key="source.id", index=True)
    key: str  # identity within the source: guid, else link, else a content hash
    url: str = ""
    canonical_url: str = Field(default="", index=True)
    title: str = Field(default="", sa_column=Column(Text, nullable=False))
    summary: str = Field(default="", sa_column=Column(Text, nullable=False))  # sanitised HTML
    text: str = Field(default="", sa_column=Column(Text, nullable=False))  # plain text
    author: str | None = None
    language: str | None = None
    content_hash: str
    published_at: datetime | None = None
    updated_at: datetime | None = None
    first_seen_at: datetime = Field(index=True)  # retention counts an entry's age from here
    changed_at: datetime
    sort_at: datetime = Field(index=True)  # published, else first seen: the clustering order
    story_id: int | None = Field(default=None, foreign_key="story.id", index=True)
    duplicate_of: int | None = Field(default=None, index=True)
    # The event inside its story: the founding entry's id (None: clustered before events)
    event_key: str | None = None
    clustered: bool = Field(default=False, index=True)
    embedding: bytes | None = Field(default=None, sa_column=Column(LargeBinary))


class Story(SQLModel, table=True):
    """One real-world event: the entries clustered together."""

    id: int | None = Field(default=None, primary_key=True)
    key: str = Field(unique=True)  # the clusterer's id: the founding entry's id
    title: str = Field(default="", sa_column=Column(Text, nullable=False))
    first_at: datetime
    last_at: datetime = Field(index=True)
    entry_count: int = 0
    source_count: int = 0
    updated_at: datetime
    dirty: bool = Field(default=True, index=True)  # changed since it was last published
    # Bumped whenever the story changes, so a publisher that rendered an older
    # revision cannot mark a newer change as published.
    revision: int = 0


class TimelineStory(SQLModel, table=True):
    """Stories a configured timeline has collected."""

    timeline: str = Field(primary_key=True)
    story_id: int = Field(primary_key=True, foreign_key="story.id")


class TimelineRule(SQLModel, table=True):
    """The match rule a configured timeline's stories were collected by: when the
    configured rule differs, the timeline's stories are collected again."""

    timeline: str = Field(primary_key=True)
    rule: str  # aggregator.timelines.rule_key of the configured timeline


class PublishedDocument(SQLModel, table=True):
    """A rendered feed, OPML or page, served as stored."""

    path: str = Field(primary_key=True)
    content_type: str
    body: bytes = Field(sa_column=Column(LargeBinary, nullable=False))
    etag: str
    updated_at: datetime


class Tombstone(SQLModel, table=True):
    """The identity of an entry retention removed, so a feed still listing it adds nothing."""

    source_id: int = Field(primary_key=True, foreign_key="source.id")
    key: str = Field(primary_key=True)
    removed_at: datetime  # when removed, or since then last listed by its feed


class ClusterSnapshot(SQLModel, table=True):
    """The leader's clusterer state, saved so that the next leader replays only what came
    after it (aggregator/cluster/snapshot.py). Only a snapshot whose fingerprint matches
    the code and settings of the leader reading it is used."""

    id: int | None = Field(default=None, primary_key=True)
    fingerprint: str = Field(index=True)
    created_at: datetime
    latest_at: datetime  # the latest clustered entry's time when it was saved
    decisions: int  # stored decisions inside the window it reflects
    term: int  # the leader term that saved it
    # A digest of its parts' names and checksums; empty while its parts are being
    # written (a draft: never read, and dropped by the next save).
    checksum: str
    size: int  # bytes of its parts


class ClusterSnapshotPart(SQLModel, table=True):
    """One piece of a snapshot: a part (one array or JSON value) is cut into pieces of
    a megabyte, so that neither the leader saving it nor the one reading it ever
    holds the whole snapshot as one blob."""

    snapshot_id: int = Field(primary_key=True, foreign_key="clustersnapshot.id", ondelete="CASCADE")
    name: str = Field(primary_key=True)
    seq: int = Field(primary_key=True)
    checksum: str  # sha256 of `body`
    body: bytes = Field(sa_column=Column(LargeBinary, nullable=False))


class Leader(SQLModel, table=True):
    """Who runs the in-order work (clustering, publishing, retention), and until when.

    `term` grows whenever another worker takes over, so a former leader's late
    writes can be recognised and refused.
    """

    name: str = Field(primary_key=True)
    owner: str | None = None
    term: int = 0
    until: datetime | None = None
