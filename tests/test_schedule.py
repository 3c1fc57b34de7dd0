"""The next-check policy and the fetch state a poll leaves, without a network."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

from aggregator.errors import ParseError
from aggregator.schedule import (
    REDIRECT_ADOPT_AFTER,
    error_interval,
    next_check,
    poll_outcome,
    success_interval,
)
from aggregator.settings import FetchSettings
from aggregator.store.database import FetchStateView
from aggregator.types import FetchRequest, FetchResult, ParsedFeed

NOW = datetime(2024, 8, 6, 12, tzinfo=UTC)
SETTINGS = FetchSettings(default_interval=900, min_interval=300, max_interval=86400)
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
