"""What a response says about when to come back: Retry-After, freshness, rate limits.

Pure functions of a status, lower-case headers and the time the answer came, shared by
the poller (pausing a host within a cycle) and the next-check policy (schedule.py).
Dates in headers are read against the response's own Date header when it has one, so a
server whose clock is off still gets the delay it meant.

A rate limit is taken as host-wide, rather than as the one feed's, when the answer
carries quota headers (IETF `RateLimit`/`RateLimit-Policy`, or the common
`X-RateLimit-*`): those count the client's requests to the server, not to a document.
It is also taken as host-wide when two sources of one host are rate-limited in the same
cycle: the server is then limiting us, whatever it says.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from datetime import UTC, datetime, timedelta
from email.utils import parsedate_to_datetime

Headers = Mapping[str, str]

QUOTA_HEADERS = frozenset(
    {
        "ratelimit",
        "ratelimit-policy",
        "ratelimit-limit",
        "ratelimit-remaining",
        "ratelimit-reset",
        "x-ratelimit-limit",
        "x-ratelimit-remaining",
        "x-ratelimit-reset",
    }
)
HOST_WIDE_AFTER = 2  # rate-limited sources of one host in one cycle that pause the host
# Longer numbers than this are no delay a server means (ten digits of seconds is over
# 300 years); they are ignored like any other value we cannot read.
_LONGEST_SECONDS_DIGITS = 10


def is_rate_limited(status: int | None, headers: Headers) -> bool:
    """429, or 503 with a Retry-After (a 503 without one is an ordinary server failure)."""
    return status == 429 or (status == 503 and "retry-after" in headers)


def shows_host_wide_limit(headers: Headers) -> bool:
    return any(name in QUOTA_HEADERS for name in headers)


def retry_after(headers: Headers, received: datetime) -> float | None:
    """Seconds to wait from a Retry-After header, as delta-seconds or an HTTP date."""
    value = headers.get("retry-after", "").strip()
    if not value:
        return None
    if value.isdigit():
        return _seconds(value)
    moment = _http_date(value)
    if moment is None:
        return None
    return max((moment - _server_now(headers, received)).total_seconds(), 0.0)


def freshness(headers: Headers, received: datetime) -> float | None:
    """Seconds the response stays fresh: Cache-Control max-age less Age, else Expires less Date.

    None when the response says nothing or forbids caching; max-age wins over Expires
    as RFC 9111 has it.
    """
    directives = _cache_control(headers.get("cache-control", ""))
    if "no-store" in directives or "no-cache" in directives:
        return None
    max_age = _seconds(directives.get("max-age", ""))
    if max_age is not None:
        fresh = max_age - (_seconds(headers.get("age", "")) or 0.0)
    else:
        expires = _http_date(headers.get("expires", ""))
        if expires is None:
            return None
        fresh = (expires - _server_now(headers, received)).total_seconds()
    return fresh if fresh > 0 else None


def host_pause(
    answers: Iterable[tuple[int | None, Headers, datetime]], *, fallback_s: float, cap_s: float
) -> datetime | None:
    """Until when a host's answers of one cycle ask us to leave the whole host alone, if at all.

    `answers` are (status, headers, received) of one host's polls; the pause lasts the
    longest Retry-After among the rate-limited ones (`fallback_s` when they give none),
    and never more than `cap_s`, so that polling never stops for good.
    """
    limited = [(headers, at) for status, headers, at in answers if is_rate_limited(status, headers)]
    if not limited:
        return None
    if len(limited) < HOST_WIDE_AFTER and not any(shows_host_wide_limit(h) for h, _ in limited):
        return None
    ends = []
    for headers, at in limited:
        wait = retry_after(headers, at)
        ends.append(at + timedelta(seconds=min(fallback_s if wait is None else wait, cap_s)))
    return max(ends)


def _seconds(value: str) -> float | None:
    """Delta-seconds (RFC 9111 section 1.2.2): ASCII digits only, so "²" or "٣" are no number."""
    value = value.strip()
    if not (value.isascii() and value.isdigit() and len(value) <= _LONGEST_SECONDS_DIGITS):
        return None
    return float(value)


def _cache_control(value: str) -> dict[str, str]:
    directives = {}
    for part in value.split(","):
        name, _, argument = part.partition("=")
        if name.strip():
            directives[name.strip().lower()] = argument.strip().strip('"')
    return directives


def _http_date(value: str) -> datetime | None:
    if not value.strip():
        return None
    try:
        moment = parsedate_to_datetime(value.strip()[:64])
    except (TypeError, ValueError, IndexError, OverflowError):
        return None
    return moment.replace(tzinfo=UTC) if moment.tzinfo is None else moment


def _server_now(headers: Headers, received: datetime) -> datetime:
    return _http_date(headers.get("date", "")) or received
