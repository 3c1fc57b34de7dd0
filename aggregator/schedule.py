"""When a source is next due: pure functions of a poll's outcome, its history and the settings.

    configured    the source's own `interval` wins over everything below, Retry-After excepted
    automatic     the mean gap between the source's recent entries (its last ACTIVITY_ENTRIES
                  within ACTIVITY_WINDOW, counting the quiet time since the newest), clamped
                  to [min_interval, max_interval]; default_interval until it has entries
    hints         never sooner than the feed's RSS <ttl>, Cache-Control max-age or Expires
    errors        the interval doubles with each failure in a row, up to max_interval, and
                  polling never stops; a 429 or 503 waits at least its Retry-After
    jitter        up to `jitter` of the interval later, varying per source and per poll

`poll_outcome` decides the whole fetch state a poll leaves; `host_pauses` which hosts asked,
host-wide, to be left alone for a while (see aggregator.fetch.hints for the signals).
"""

from __future__ import annotations

import hashlib
from collections import defaultdict
from collections.abc import Iterable, Sequence
from dataclasses import replace
from datetime import datetime, timedelta
from urllib.parse import urlsplit

from aggregator.errors import SourceError
from aggregator.fetch import hints
from aggregator.settings import FetchSettings
from aggregator.store.database import FetchStateView
from aggregator.types import FetchResult, ParsedFeed, PollOutcome

ACTIVITY_WINDOW = timedelta(days=7)
ACTIVITY_ENTRIES = 50
REDIRECT_ADOPT_AFTER = 3  # polls in a row that must show the same permanent redirect
# No wait is longer, whatever a setting or a header says: a year is already "never",
# and a wait past datetime's range would fail instead of scheduling.
LONGEST_WAIT = timedelta(days=366)


def jitter_fraction(key: str) -> float:
    """A stable value in [0, 1) per key, so jitter is deterministic and testable."""
    digest = hashlib.sha256(key.encode()).digest()
    return int.from_bytes(digest[:4], "big") / 2**32


def next_check(now: datetime, interval_s: float, *, key: str, jitter: float = 0.1) -> datetime:
    """`now + interval`, later by up to `jitter` of the interval.

    The fraction depends on the source and the poll's time: sources polled together
    part ways, and one source does not keep the same offset forever.
    """
    fraction = jitter_fraction(f"{key}@{now.isoformat()}")
    seconds = interval_s * (1 + jitter * fraction)
    if not seconds < LONGEST_WAIT.total_seconds():  # also true for NaN
        return now + LONGEST_WAIT
    return now + timedelta(seconds=max(seconds, 0.0))


def _clamped(settings: FetchSettings, interval_s: float) -> float:
    return min(max(interval_s, settings.min_interval), settings.max_interval)


def activity_interval(
    settings: FetchSettings, entry_times: Iterable[datetime], now: datetime
) -> float | None:
    """The automatic interval from when the source's entries appeared; None without any.

    Counting the time since the newest entry lets a source that falls quiet slow down
    poll by poll, and a feed that shows only its last few entries still gives a rate.
    Entries sharing one time count once: undated entries are timed by the poll that
    found them, and a first poll's whole backlog is one arrival, not a burst.
    """
    times = sorted(set(entry_times), reverse=True)
    if not times:
        return None
    recent = [t for t in times if now - ACTIVITY_WINDOW <= t <= now][:ACTIVITY_ENTRIES]
    if not recent:
        return settings.max_interval  # nothing for a week: once a day is plenty
    # n entries show n - 1 gaps; the time since the newest stretches the last of them.
    observed = (now - recent[-1]).total_seconds()
    return _clamped(settings, observed / max(len(recent) - 1, 1))


def success_interval(
    settings: FetchSettings,
    *,
    configured: float | None,
    ttl_s: float | None = None,
    activity_s: float | None = None,
    fresh_s: float | None = None,
) -> float:
    """The wait after a good poll: the configured interval, else automatic and hints."""
    if configured is not None:
        return configured  # the operator's word wins
    interval = settings.default_interval if activity_s is None else activity_s
    # The server says nothing changes sooner; polling earlier would only fetch the same.
    interval = max(interval, ttl_s or 0.0, fresh_s or 0.0)
    return _clamped(settings, interval)


def error_interval(settings: FetchSettings, *, configured: float | None, error_count: int) -> float:
    """error_count counts this failure too: 1 after the first failure."""
    base = configured if configured is not None else settings.default_interval
    return min(base * 2 ** max(error_count - 1, 0), settings.max_interval)


def poll_outcome(
    result: FetchResult,
    state: FetchStateView,
    settings: FetchSettings,
    *,
    feed: ParsedFeed | None = None,
    parse_error: SourceError | None = None,
    entry_times: Sequence[datetime] = (),
) -> PollOutcome:
    """Decide the fetch state a poll leaves behind: status, error, validators, next check.

    `entry_times` are when the source's stored entries appeared (published, else first
    seen), as read before this poll's entries are stored; they drive the automatic interval.
    """
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
        asked = _retry_after(result, settings)
        return replace(
            base,
            next_check_at=next_check(now, max(interval, asked), key=key, jitter=settings.jitter),
            status="gone" if result.status == 410 else "error",
            error_code=error_code,
            error=error,
            keep_validators=parse_error is None,
        )
    ttl_s = feed.ttl_minutes * 60.0 if feed and feed.ttl_minutes else None
    interval = success_interval(
        settings,
        configured=state.interval_s,
        ttl_s=ttl_s or state.ttl_s,
        activity_s=activity_interval(settings, _entry_times(entry_times, feed, now), now),
        fresh_s=hints.freshness(result.headers, now),
    )
    return replace(
        base,
        next_check_at=next_check(now, interval, key=key, jitter=settings.jitter),
        etag=result.etag,
        last_modified=result.last_modified,
        body_hash=result.body_hash,
        ttl_s=ttl_s,
        feed_title=feed.title if feed else None,
        site_url=feed.link if feed else None,
        keep_validators=result.status == 304,
    )


def host_pauses(results: Sequence[FetchResult], settings: FetchSettings) -> dict[str, datetime]:
    """Hosts whose answers in this cycle showed a host-wide rate limit, and until when.

    Hosts are named as `urlsplit(url).hostname` of the sources' configured URLs.
    """
    answers: defaultdict[str, list[tuple[int | None, hints.Headers, datetime]]]
    answers = defaultdict(list)
    for result in results:
        host = urlsplit(result.request.url).hostname
        if host and result.status is not None:
            answers[host].append((result.status, result.headers, result.fetched_at))
    pauses = {}
    for host, seen in answers.items():
        until = hints.host_pause(
            seen, fallback_s=settings.default_interval, cap_s=settings.max_interval
        )
        if until is not None:
            pauses[host] = until
    return pauses


def _retry_after(result: FetchResult, settings: FetchSettings) -> float:
    """The wait a 429 or 503 asked for, capped so that polling never stops for good."""
    if not hints.is_rate_limited(result.status, result.headers):
        return 0.0
    asked = hints.retry_after(result.headers, result.fetched_at) or 0.0
    return min(asked, settings.max_interval)


def _entry_times(
    stored_times: Sequence[datetime], feed: ParsedFeed | None, now: datetime
) -> list[datetime]:
    """When the source's recent entries appeared: the stored ones, and the feed's newer ones.

    The feed's dated entries newer than every stored one are the ones this poll brings.
    """
    stored = list(stored_times)
    newest = max(stored, default=None)
    for entry in feed.entries if feed else ():
        dated = entry.published or entry.updated
        if dated is not None:
            dated = min(dated, now)  # a clock running ahead must not look like activity
            if newest is None or dated > newest:
                stored.append(dated)
    return stored


def _redirect_streak(result: FetchResult, state: FetchStateView) -> tuple[str | None, int]:
    """Count consecutive polls that showed the same permanent redirect target."""
    target = result.permanent_redirect
    if target is None:
        return None, 0
    if target == state.redirect_url:
        return target, state.redirect_count + 1
    return target, 1
