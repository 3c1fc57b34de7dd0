"""The next-check policy and the fetch state a poll leaves, without a network."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest

from aggregator.errors import ParseError
from aggregator.schedule import (
    REDIRECT_ADOPT_AFTER,
    activity_interval,
    error_interval,
    host_pauses,
    next_check,
    poll_outcome,
    success_interval,
)
from aggregator.settings import FetchSettings
from aggregator.store.database import FetchStateView
from aggregator.types import EntryData, FetchRequest, FetchResult, ParsedFeed

NOW = datetime(2024, 8, 6, 12, tzinfo=UTC)
SETTINGS = FetchSettings(default_interval=900, min_interval=300, max_interval=86400)
NO_JITTER = FetchSettings(default_interval=900, min_interval=300, max_interval=86400, jitter=0)
STATE = FetchStateView(
    interval_s=None, error_count=0, ttl_s=None, redirect_url=None, redirect_count=0
)


def result(**changes: object) -> FetchResult:
    values: dict[str, object] = {
        "request": FetchRequest(source_id=1, name="Kyiv Wire", url="http://a/feed", etag='"old"'),
        "fetched_at": NOW,
        "status": 200,
        "final_url": "http://a/feed",
        "etag": '"new"',
        "body": b"<rss/>",
    }
    values.update(changes)
    return FetchResult(**values)  # type: ignore[arg-type]


def req(n: int) -> FetchRequest:
    return FetchRequest(source_id=n, name=f"source {n}", url=f"http://a/{n}")


def entry(published: datetime) -> EntryData:
    key = published.isoformat()
    return EntryData(key, key, None, "", "", None, published, None, key)


def test_success_waits_the_default_interval_with_bounded_jitter() -> None:
    outcome = poll_outcome(result(), STATE, SETTINGS)
    wait = outcome.next_check_at - NOW
    assert timedelta(seconds=900) <= wait <= timedelta(seconds=990)
    assert outcome.status == "ok" and outcome.etag == '"new"'


def test_configured_interval_wins_and_ttl_lengthens() -> None:
    assert success_interval(SETTINGS, configured=60, ttl_s=None) == 60
    assert success_interval(SETTINGS, configured=None, ttl_s=3600) == 3600
    assert success_interval(SETTINGS, configured=None, ttl_s=10**7) == 86400


def test_errors_back_off_exponentially_to_the_cap_and_never_stop() -> None:
    waits = [error_interval(SETTINGS, configured=None, error_count=n) for n in range(1, 12)]
    assert waits[:3] == [900, 1800, 3600]
    assert waits[-1] == 86400 and all(w > 0 for w in waits)


def test_a_failure_counts_and_keeps_the_validators() -> None:
    failed = result(status=500, body=None, error_code="http_500", error="server error")
    outcome = poll_outcome(failed, STATE, SETTINGS)
    assert outcome.status == "error" and outcome.error_code == "http_500"
    assert outcome.keep_validators
    assert outcome.next_check_at - NOW >= timedelta(seconds=900)


def test_gone_is_visible() -> None:
    outcome = poll_outcome(
        result(status=410, body=None, error_code="http_410", error="gone"), STATE, SETTINGS
    )
    assert outcome.status == "gone"


def test_a_parse_error_is_recorded_for_the_source() -> None:
    error = ParseError(
        "an HTML page, not a feed", url="http://a/feed", source="Kyiv Wire", code="not_a_feed"
    )
    outcome = poll_outcome(result(), STATE, SETTINGS, parse_error=error)
    assert (outcome.status, outcome.error_code) == ("error", "not_a_feed")
    assert "HTML page" in (outcome.error or "")


def test_feed_ttl_is_kept() -> None:
    feed = ParsedFeed(title="Wire", link="http://a/", language="en", ttl_minutes=120, entries=())
    outcome = poll_outcome(result(), STATE, SETTINGS, feed=feed)
    assert outcome.ttl_s == 7200 and outcome.feed_title == "Wire"
    assert outcome.next_check_at - NOW >= timedelta(hours=2)


def test_permanent_redirect_is_adopted_only_after_repetition() -> None:
    state = STATE
    for poll in range(1, REDIRECT_ADOPT_AFTER + 1):
        outcome = poll_outcome(result(permanent_redirect="http://b/feed"), state, SETTINGS)
        state = FetchStateView(None, 0, None, outcome.redirect_url, outcome.redirect_count)
        adopted = outcome.new_url == "http://b/feed"
        assert adopted == (poll == REDIRECT_ADOPT_AFTER)


def test_jitter_is_stable_per_source() -> None:
    assert next_check(NOW, 900, key="a") == next_check(NOW, 900, key="a")
    assert next_check(NOW, 900, key="a") != next_check(NOW, 900, key="b")


# --- the automatic interval ------------------------------------------------------------


def every(minutes: float, count: int, *, until: datetime = NOW) -> list[datetime]:
    return [until - timedelta(minutes=minutes * n) for n in range(count)]


def test_a_busy_source_is_polled_about_as_often_as_it_publishes() -> None:
    assert activity_interval(SETTINGS, every(30, 40), NOW) == pytest.approx(30 * 60, rel=0.05)


def test_a_feed_showing_only_its_last_entries_still_gives_its_rate() -> None:
    # Ten entries in the last 90 minutes and nothing older stored: a feed truncated at ten.
    assert activity_interval(SETTINGS, every(10, 10), NOW) == pytest.approx(600, rel=0.1)


def test_a_source_falling_quiet_slows_down_poll_by_poll() -> None:
    burst = every(5, 6, until=NOW - timedelta(hours=10))
    waits = [activity_interval(SETTINGS, burst, NOW + timedelta(hours=h)) for h in (0, 12, 48)]
    assert waits == sorted(waits) and waits[0] < waits[-1]


def test_quiet_for_a_week_means_the_longest_interval_and_no_history_the_default() -> None:
    assert activity_interval(SETTINGS, [NOW - timedelta(days=9)], NOW) == 86400
    assert activity_interval(SETTINGS, [], NOW) is None
    assert poll_outcome(result(), STATE, NO_JITTER).next_check_at - NOW == timedelta(seconds=900)


def test_the_automatic_interval_stays_within_min_and_max() -> None:
    flood = every(0.1, 50)
    assert activity_interval(SETTINGS, flood, NOW) == SETTINGS.min_interval


def test_entries_of_this_poll_count_before_they_are_stored() -> None:
    feed = ParsedFeed("Wire", None, None, None, tuple(entry(t) for t in every(20, 12)))
    outcome = poll_outcome(result(), STATE, NO_JITTER, feed=feed)
    assert outcome.next_check_at - NOW == timedelta(minutes=20)


def test_stored_entry_times_drive_the_interval_after_a_304() -> None:
    not_modified = result(status=304, body=None, not_modified=True)
    outcome = poll_outcome(not_modified, STATE, NO_JITTER, entry_times=every(60, 30))
    assert outcome.next_check_at - NOW == timedelta(hours=1)


def test_a_configured_interval_overrides_activity_and_hints() -> None:
    state = FetchStateView(600, 0, None, None, 0)
    fresh = result(headers={"cache-control": "max-age=7200"})
    outcome = poll_outcome(fresh, state, NO_JITTER, entry_times=every(60, 30))
    assert outcome.next_check_at - NOW == timedelta(seconds=600)


# --- the server's hints ----------------------------------------------------------------


@pytest.mark.parametrize(
    ("headers", "wait"),
    [
        ({"cache-control": "public, max-age=3600"}, 3600),
        ({"cache-control": "max-age=3600", "age": "600"}, 3000),
        ({"cache-control": "max-age=60"}, 900),  # shorter than the interval: no effect
        ({"cache-control": "no-cache, max-age=3600"}, 900),
        ({"cache-control": "max-age=99999999"}, 86400),  # capped: polling never stops
        (
            {"expires": "Tue, 06 Aug 2024 14:00:00 GMT", "date": "Tue, 06 Aug 2024 12:00:00 GMT"},
            7200,
        ),
        (  # Expires is read against the server's own clock, not ours
            {"expires": "Tue, 06 Aug 2024 15:00:00 GMT", "date": "Tue, 06 Aug 2024 13:00:00 GMT"},
            7200,
        ),
        ({"expires": "0"}, 900),
        ({"expires": "Tue, 06 Aug 2024 14:00:00 GMT", "cache-control": "max-age=5400"}, 5400),
    ],
)
def test_freshness_hints_delay_the_next_poll(headers: dict[str, str], wait: float) -> None:
    outcome = poll_outcome(result(headers=headers), STATE, NO_JITTER)
    assert outcome.next_check_at - NOW == timedelta(seconds=wait)


@pytest.mark.parametrize(
    ("status", "headers", "wait"),
    [
        (429, {"retry-after": "7200"}, 7200),
        (429, {"retry-after": "60"}, 900),  # the error backoff is longer still
        (429, {"retry-after": "Tue, 06 Aug 2024 15:00:00 GMT"}, 3 * 3600),
        (
            503,
            {
                "retry-after": "Tue, 06 Aug 2024 16:00:00 GMT",
                "date": "Tue, 06 Aug 2024 14:00:00 GMT",
            },
            2 * 3600,
        ),
        (503, {"retry-after": "999999999"}, 86400),  # capped: polling never stops
        (429, {"retry-after": "soon"}, 900),
        (404, {"retry-after": "7200"}, 900),  # only 429 and 503 are asked to wait
    ],
)
def test_retry_after_delays_the_source(status: int, headers: dict[str, str], wait: float) -> None:
    failed = result(status=status, body=None, headers=headers, error_code=f"http_{status}")
    outcome = poll_outcome(failed, STATE, NO_JITTER)
    assert outcome.status == "error"
    assert outcome.next_check_at - NOW == timedelta(seconds=wait)


def test_jitter_follows_the_setting() -> None:
    spread = {
        poll_outcome(result(request=req(n)), STATE, SETTINGS).next_check_at for n in range(20)
    }
    assert len(spread) == 20
    assert all(timedelta(seconds=900) <= t - NOW <= timedelta(seconds=990) for t in spread)
    assert {
        poll_outcome(result(request=req(n)), STATE, NO_JITTER).next_check_at for n in range(5)
    } == {NOW + timedelta(seconds=900)}


# --- host-wide rate limits -------------------------------------------------------------


def limited(url: str, **headers: str) -> FetchResult:
    return result(
        request=FetchRequest(source_id=1, name=url, url=url),
        status=429,
        body=None,
        headers={"retry-after": "3600", **headers},
        error_code="http_429",
    )


def test_a_quota_header_makes_a_rate_limit_host_wide() -> None:
    pauses = host_pauses(
        [limited("http://a.test/1", **{"x-ratelimit-remaining": "0"}), result()], SETTINGS
    )
    assert pauses == {"a.test": NOW + timedelta(hours=1)}


def test_one_rate_limited_feed_alone_pauses_no_host() -> None:
    assert host_pauses([limited("http://a.test/1"), limited("http://b.test/1")], SETTINGS) == {}


def test_two_rate_limited_feeds_of_one_host_pause_it() -> None:
    pauses = host_pauses([limited("http://a.test/1"), limited("http://a.test/2")], SETTINGS)
    assert pauses == {"a.test": NOW + timedelta(hours=1)}


def test_a_backlog_found_in_one_poll_is_one_arrival_not_a_burst() -> None:
    # Twenty undated entries, all first seen by the poll an hour ago.
    backlog = [NOW - timedelta(hours=1)] * 20
    assert activity_interval(SETTINGS, backlog, NOW) == 3600
