"""Sources and their polls: syncing the config, claiming due sources, recording a poll.

A worker claims due sources by writing a lease (owner, until) on their fetch
state; PostgreSQL skips rows another worker is claiming (FOR UPDATE SKIP
LOCKED) and the UPDATE re-checks the lease, so two workers never hold one source.
A poll's entries, its fetch state and the lease's release are one transaction.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence
from datetime import datetime, timedelta
from typing import Any

from sqlalchemy import bindparam, func, insert, or_, update
from sqlmodel import Session, col, select

from aggregator.dedupe import canonical_url
from aggregator.errors import StoreError
from aggregator.settings import SourceConfig
from aggregator.store.models import Entry, FetchState, Source, Story, Tombstone
from aggregator.store.views import (
    FetchStateView,
    IngestCounts,
    SourceStatus,
    from_db,
    maybe_from_db,
    to_db,
)
from aggregator.types import EntryData, FetchRequest, PollOutcome


def sync_sources(session: Session, configs: Sequence[SourceConfig], now: datetime) -> None:
    """Make the source rows match the config; new sources are due at once."""
    wanted = {c.name: c for c in configs}
    rows = {s.name: s for s in session.exec(select(Source)).all()}
    for name, config in wanted.items():
        row = rows.get(name)
        if row is None:
            row = Source(name=name, url=config.url, config_url=config.url, created_at=to_db(now))
            session.add(row)
            session.flush()
            assert row.id is not None
            session.add(FetchState(source_id=row.id, next_check_at=to_db(now)))
        elif (row.config_url or row.url) != config.url:
            # the operator changed the address; an adopted redirect of the old one is moot
            row.url = row.config_url = config.url
            state = session.get(FetchState, row.id)
            if state is not None:  # a new address starts afresh
                state.etag = state.last_modified = state.body_hash = None
                state.next_check_at = to_db(now)
                state.status, state.error_count = "new", 0
        _update_if_changed(row, config)
    for name, row in rows.items():
        if name not in wanted and row.in_config:
            row.in_config = False
    session.commit()


def _update_if_changed(row: Source, config: SourceConfig) -> None:
    # Workers sync at start and on every reload: an unchanged config must write
    # nothing, or several workers starting together would queue on row locks.
    values = {
        "enabled": config.enabled,
        "in_config": True,
        "language": config.language,
        "tags": ",".join(config.tags),
        "interval_s": config.interval,
    }
    for name, value in values.items():
        if getattr(row, name) != value:
            setattr(row, name, value)


def claim_due(
    session: Session,
    now: datetime,
    owner: str,
    lease_s: float,
    limit: int,
    due_by: datetime | None = None,
) -> list[FetchRequest]:
    """Lease up to `limit` sources due by `due_by` (default now) to `owner`, oldest first."""
    moment = to_db(now)
    free = or_(col(FetchState.lease_until).is_(None), col(FetchState.lease_until) < moment)
    due = col(FetchState.next_check_at) <= to_db(due_by or now)
    candidates = session.exec(
        select(FetchState.source_id)
        .join(Source, col(Source.id) == col(FetchState.source_id))
        .where(col(Source.enabled), col(Source.in_config), col(FetchState.status) != "gone")
        .where(due, free)
        .order_by(col(FetchState.next_check_at), col(FetchState.source_id))
        .limit(limit)
        .with_for_update(of=FetchState, skip_locked=True)  # SQLite: one writer anyway
    ).all()
    if not candidates:
        session.commit()
        return []
    claimed = session.exec(
        update(FetchState)
        .where(col(FetchState.source_id).in_(list(candidates)), due, free)
        .values(lease_owner=owner, lease_until=to_db(now + timedelta(seconds=lease_s)))
        .returning(col(FetchState.source_id))
    ).all()
    rows = session.exec(
        select(Source, FetchState)
        .join(FetchState, col(FetchState.source_id) == col(Source.id))
        .where(col(Source.id).in_([row[0] for row in claimed]))
        .order_by(col(FetchState.next_check_at), col(Source.id))
    ).all()
    session.commit()
    return [_request(source, state) for source, state in rows]


def _request(source: Source, state: FetchState) -> FetchRequest:
    return FetchRequest(
        source_id=source.id or 0,
        name=source.name,
        url=source.url,
        etag=state.etag,
        last_modified=state.last_modified,
        body_hash=state.body_hash,
    )


def release_claims(session: Session, owner: str, source_ids: Sequence[int] | None) -> int:
    """Give back leases not recorded yet (all of the owner's when `source_ids` is None)."""
    query = update(FetchState).where(col(FetchState.lease_owner) == owner)
    if source_ids is not None:
        query = query.where(col(FetchState.source_id).in_(list(source_ids)))
    result = session.exec(query.values(lease_owner=None, lease_until=None))
    session.commit()
    return int(result.rowcount or 0)


def due_requests(session: Session, now: datetime, limit: int | None) -> list[FetchRequest]:
    """Due sources without claiming them (for listing; workers use claim_due)."""
    query = (
        select(Source, FetchState)
        .join(FetchState, col(FetchState.source_id) == col(Source.id))
        .where(col(Source.enabled), col(Source.in_config))
        .where(col(FetchState.status) != "gone")
        .where(col(FetchState.next_check_at) <= to_db(now))
        .order_by(col(FetchState.next_check_at), col(Source.id))
    )
    if limit is not None:
        query = query.limit(limit)
    return [_request(source, state) for source, state in session.exec(query).all()]


_SOURCE_AND_STATE = (
    select(Source, FetchState)
    .join(FetchState, col(FetchState.source_id) == col(Source.id))
    .where(col(Source.id) == bindparam("source_id"))
)


def _source_and_state(session: Session, source_id: int) -> tuple[Source, FetchState]:
    row = session.exec(_SOURCE_AND_STATE, params={"source_id": source_id}).first()
    if row is None:
        raise StoreError(f"source {source_id} does not exist")
    return row[0], row[1]


def fetch_state(session: Session, source_id: int) -> FetchStateView:
    source, state = _source_and_state(session, source_id)
    return FetchStateView(
        interval_s=source.interval_s,
        error_count=state.error_count,
        ttl_s=state.ttl_s,
        redirect_url=state.redirect_url,
        redirect_count=state.redirect_count,
    )


def recent_entry_times(session: Session, source_id: int, limit: int) -> list[datetime]:
    """When the source's newest entries appeared (published, else first seen), newest first."""
    times = session.exec(
        select(Entry.sort_at)
        .where(Entry.source_id == source_id)
        .order_by(col(Entry.sort_at).desc())
        .limit(limit)
    ).all()
    return [from_db(moment) for moment in times]


def record_poll(
    session: Session,
    source_id: int,
    outcome: PollOutcome,
    entries: Sequence[EntryData],
    owner: str | None,
) -> IngestCounts:
    """Store a poll's entries, its fetch state and the lease's release in one transaction.

    With an `owner`, the fetch state is only written while that owner still holds
    the lease: a worker that lost it (it ran out and another claimed the source)
    must not overwrite the newer poll's state. Its entries are stored either way;
    storing them is idempotent.
    """
    source, state = _source_and_state(session, source_id)
    counts = _upsert_entries(session, source_id, entries, outcome.checked_at)
    holds = owner is None or state.lease_owner == owner
    if holds:
        _apply_outcome(source, state, outcome)
        state.lease_owner = state.lease_until = None
    session.commit()
    return counts if holds else _not_recorded(counts)


def _not_recorded(counts: IngestCounts) -> IngestCounts:
    return dataclasses.replace(counts, recorded=False)


def source_statuses(session: Session) -> list[SourceStatus]:
    counts = dict(
        session.exec(select(Entry.source_id, func.count()).group_by(col(Entry.source_id))).all()
    )
    rows = session.exec(
        select(Source, FetchState)
        .join(FetchState, col(FetchState.source_id) == col(Source.id))
        .order_by(col(Source.name))
    ).all()
    return [
        SourceStatus(
            id=source.id or 0,
            name=source.name,
            url=source.url,
            enabled=source.enabled,
            in_config=source.in_config,
            status=state.status,
            last_http_status=state.last_http_status,
            last_error_code=state.last_error_code,
            last_error=state.last_error,
            error_count=state.error_count,
            last_checked_at=maybe_from_db(state.last_checked_at),
            next_check_at=maybe_from_db(state.next_check_at),
            entries=counts.get(source.id or 0, 0),
        )
        for source, state in rows
    ]


def sources_in_error(session: Session) -> int:
    """Configured sources whose last poll failed (error or gone)."""
    return int(
        session.exec(
            select(func.count())
            .select_from(FetchState)
            .join(Source, col(Source.id) == col(FetchState.source_id))
            .where(col(Source.in_config), col(Source.enabled))
            .where(col(FetchState.status).in_(["error", "gone"]))
        ).one()
    )


def _apply_outcome(source: Source, state: FetchState, outcome: PollOutcome) -> None:
    state.last_checked_at = to_db(outcome.checked_at)
    state.next_check_at = to_db(outcome.next_check_at)
    state.status = outcome.status
    state.last_http_status = outcome.http_status
    state.redirect_url, state.redirect_count = outcome.redirect_url, outcome.redirect_count
    if outcome.status == "ok":
        state.error_count = 0
        state.last_error_code = state.last_error = None
        state.last_success_at = to_db(outcome.checked_at)
    else:
        state.error_count += 1
        state.last_error_code, state.last_error = outcome.error_code, outcome.error
    if not outcome.keep_validators:
        state.etag, state.last_modified = outcome.etag, outcome.last_modified
        state.body_hash = outcome.body_hash
    if outcome.ttl_s is not None:
        state.ttl_s = outcome.ttl_s
    if outcome.feed_title:
        source.title = outcome.feed_title
    if outcome.site_url:
        source.site_url = outcome.site_url
    if outcome.new_url:
        source.url = outcome.new_url


# Built once: building a statement and its cache key costs more than running it.
_TOMBSTONED = select(Tombstone.key).where(
    Tombstone.source_id == bindparam("source_id"),
    col(Tombstone.key).in_(bindparam("keys", expanding=True)),
)
_INSERT_ENTRIES = insert(Entry.__table__)  # type: ignore[attr-defined]


def _of_keys(*columns: Any) -> Any:
    """`columns` of one source's entries with the given keys."""
    return select(*columns).where(
        Entry.source_id == bindparam("source_id"),
        col(Entry.key).in_(bindparam("keys", expanding=True)),
    )


_STORED_HASHES = _of_keys(Entry.key, Entry.content_hash)
# The new entries' ids, so that the worker can compute their vectors. Read after
# the insert rather than returned by it: SQLite returns ids in the rows' order
# only one INSERT a row, and one executemany costs a fraction of fifty of those.
_STORED_IDS = _of_keys(Entry.key, Entry.id)


def _upsert_entries(
    session: Session, source_id: int, entries: Sequence[EntryData], now: datetime
) -> IngestCounts:
    unique: dict[str, EntryData] = {}
    for data in entries:
        unique.setdefault(data.key, data)  # a feed listing one guid twice keeps the first
    if not unique:
        return IngestCounts()
    keys = {"source_id": source_id, "keys": list(unique)}
    seen = to_db(now)
    removed = set(session.exec(_TOMBSTONED, params=keys).all())
    if removed:  # still listed: the tombstone must outlive the listing (see retention)
        session.exec(
            update(Tombstone)
            .where(col(Tombstone.source_id) == source_id, col(Tombstone.key).in_(removed))
            .values(removed_at=seen)
        )
    # Most entries of a poll are stored already and unchanged: their hashes say so,
    # without loading their rows.
    stored = dict(session.exec(_STORED_HASHES, params=keys).all())
    fresh = [
        _new_entry(source_id, data, seen)
        for key, data in unique.items()
        if key not in removed and key not in stored
    ]
    changed = {
        key: data
        for key, data in unique.items()
        if key not in removed and key in stored and stored[key] != data.content_hash
    }
    to_embed: list[int] = []
    if fresh:  # one executemany, in feed order, instead of an ORM object per entry
        session.exec(_INSERT_ENTRIES, params=fresh)
        new_keys = [row["key"] for row in fresh]
        stored_ids = session.exec(_STORED_IDS, params={"source_id": source_id, "keys": new_keys})
        ids = {key: entry_id for key, entry_id in stored_ids.all() if entry_id is not None}
        to_embed += [ids[key] for key in new_keys]
    if changed:
        rows = session.exec(
            select(Entry).where(Entry.source_id == source_id, col(Entry.key).in_(list(changed)))
        ).all()
        for row in rows:
            if _update_entry(session, row, changed[row.key], now) and row.id is not None:
                to_embed.append(row.id)
    new, updated = len(fresh), len(changed)
    unchanged = len(unique) - new - updated - len(removed)
    return IngestCounts(
        new=new,
        updated=updated,
        unchanged=unchanged,
        tombstoned=len(removed),
        to_embed=tuple(to_embed),
    )


def _new_entry(source_id: int, data: EntryData, seen: datetime) -> dict[str, Any]:
    """An entry's row as the values of an INSERT; `seen` is now, as stored."""
    published = data.published or data.updated
    return {
        "source_id": source_id,
        "key": data.key,
        "url": data.link or "",
        "canonical_url": canonical_url(data.link or ""),
        "title": data.title,
        "summary": data.summary_html,
        "text": data.text,
        "author": data.author,
        "language": data.language,
        "content_hash": data.content_hash,
        "published_at": None if published is None else to_db(published),
        "updated_at": None if data.updated is None else to_db(data.updated),
        "first_seen_at": seen,
        "changed_at": seen,
        # an entry dated in the future by a wrong clock is ordered as if seen now
        "sort_at": to_db(min(published, seen)) if published else seen,
        "story_id": None,
        "duplicate_of": None,
        "clustered": False,
        "embedding": None,
    }


def _update_entry(session: Session, row: Entry, data: EntryData, now: datetime) -> bool:
    """Take the entry's new text; True when its vector must be computed again."""
    row.title, row.summary, row.text = data.title, data.summary_html, data.text
    row.author, row.content_hash = data.author, data.content_hash
    row.url, row.canonical_url = data.link or row.url, canonical_url(data.link or row.url)
    row.updated_at = None if data.updated is None else to_db(data.updated)
    row.changed_at = to_db(now)
    if not row.clustered:
        # A vector stored before its clustering was saved describes the old text.
        # A clustered entry keeps its own: it is what the stored decision was made on.
        row.embedding = None
    if row.story_id is not None:
        story = session.get(Story, row.story_id)
        if story is not None:
            story.dirty = True
            story.revision += 1
    return not row.clustered
