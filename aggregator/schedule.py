"""When a source is next due: a pure function of the poll's outcome and the settings.

Successes wait the source's interval (the config's own, else the default, else the
feed's <ttl> when longer); errors back off exponentially up to the maximum and
never stop polling for good. A little jitter keeps sources added together apart.
"""

from __future__ import annotations

import hashlib
from dataclasses import replace
from datetime import datetime, timedelta

from aggregator.errors import SourceError
from aggregator.settings import FetchSettings
from aggregator.store.database import FetchStateView
from aggregator.types import FetchResult, ParsedFeed, PollOutcome


def jitter_fraction(key: str) -> float:
    """A stable value in [0, 1) per source, so jitter is deterministic and testable."""
    digest = hashlib.sha256(key.encode()).digest()
    return int.from_bytes(digest[:4], "big") / 2**32


def success_interval(
    settings: FetchSettings, *, configured: float | None, ttl_s: float | None
) -> float:
    if configured is not None:
        return configured  # the operator's word wins
    interval = settings.default_interval
    if ttl_s:
        interval = max(interval, ttl_s)
    return min(max(interval, settings.min_interval), settings.max_interval)


def error_interval(settings: FetchSettings, *, configured: float | None, error_count: int) -> float:
    """error_count counts this failure too: 1 after the first failure."""
    base = configured if configured is not None else settings.default_interval
    return min(base * 2 ** max(error_count - 1, 0), settings.max_interval)


def next_check(now: datetime, interval_s: float, *, key: str, jitter: float = 0.1) -> datetime:
    """`now + interval`, spread by up to `jitter` of the interval per source."""
    return now + timedelta(seconds=interval_s * (1 + jitter * jitter_fraction(key)))


REDIRECT_ADOPT_AFTER = 3  # polls in a row that must show the same permanent redirect


def poll_outcome(
    result: FetchResult,
    state: FetchStateView,
    settings: FetchSettings,
    *,
    feed: ParsedFeed | None = None,
    parse_error: SourceError | None = None,
) -> PollOutcome:
    """Decide the fetch state a poll leaves behind: status, error, validators, next check."""
    now, key = result.fetched_at, result.request.name
    redirect_url, redirect_count = _redirect_streak(result, state)
    adopt = redirect_url if redirect_count >= REDIRECT_ADOPT_AFTER else None
    base = PollOutcome(
        checked_at=now,
        next_check_at=now,
        status="ok",
        http_status=result.status,
        redirect_url=None if adopt else redirect_url,
        redirect_count=0 if adopt else redirect_count,
        new_url=adopt,
    )
    error_code, error = result.error_code, result.error
    if parse_error is not None:
        error_code, error = parse_error.code, parse_error.reason
    if error_code is not None:
        interval = error_interval(
            settings, configured=state.interval_s, error_count=state.error_count + 1
        )
        return replace(
            base,
            next_check_at=next_check(now, interval, key=key),
            status="gone" if result.status == 410 else "error",
            error_code=error_code,
            error=error,
            keep_validators=parse_error is None,
        )
    ttl_s = feed.ttl_minutes * 60.0 if feed and feed.ttl_minutes else None
    interval = success_interval(settings, configured=state.interval_s, ttl_s=ttl_s or state.ttl_s)
    return replace(
        base,
        next_check_at=next_check(now, interval, key=key),
        etag=result.etag,
        last_modified=result.last_modified,
        body_hash=result.body_hash,
        ttl_s=ttl_s,
        feed_title=feed.title if feed else None,
        site_url=feed.link if feed else None,
        keep_validators=result.status == 304,
    )


def _redirect_streak(result: FetchResult, state: FetchStateView) -> tuple[str | None, int]:
    """Count consecutive polls that showed the same permanent redirect target."""
    target = result.permanent_redirect
    if target is None:
        return None, 0
    if target == state.redirect_url:
        return target, state.redirect_count + 1
    return target, 1
