"""Inline SVG charts for the pages: reports per hour or day, and the index's sparklines.

Plain SVG markup with a <title> for screen readers and tooltips; no script, no
external file, so the pages' Content-Security-Policy needs nothing extra.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from html import escape
from typing import Literal

from aggregator.publish import plural, utc

HOURLY_UP_TO = timedelta(days=2)  # longer spans are counted per day, week or month
MAX_BUCKETS = 60  # the bucket grows (day, week, month) until the whole span fits in this many
SPARKLINE_DAYS = 14

_HOUR = timedelta(hours=1)
_DAY = timedelta(days=1)
Unit = Literal["hour", "day", "week", "month"]
_STEPS: dict[Unit, timedelta] = {"hour": _HOUR, "day": _DAY, "week": timedelta(days=7)}
_LABELS: dict[Unit, str] = {
    "hour": "%d %b %H:00",
    "day": "%a %d %b",
    "week": "%d %b %Y",
    "month": "%b %Y",
}


@dataclass(frozen=True)
class Buckets:
    """Report counts per consecutive hour, day, week (from Monday) or month, oldest first."""

    unit: Unit
    starts: tuple[datetime, ...]  # each bucket's start, aware UTC
    counts: tuple[int, ...]

    def label(self, index: int) -> str:
        return f"{self.starts[index]:{_LABELS[self.unit]}}"


def count_reports(times: Sequence[datetime], *, max_buckets: int = MAX_BUCKETS) -> Buckets | None:
    """Counts per hour when the reports span at most HOURLY_UP_TO, else per day, per
    week or per month, the finest that shows the whole span in `max_buckets` bars: a
    storyline followed for a season, or one undated entry stamped when it was fetched
    long after the rest, still shows its first reports. Past `max_buckets` months,
    the oldest drop off the left edge. None if there are no reports."""
    if not times:
        return None
    moments = [utc(t) for t in times]
    first, latest = min(moments), max(moments)
    finest: tuple[Unit, ...] = ("day", "week")
    if latest - first <= HOURLY_UP_TO:
        finest = ("hour", *finest)
    for unit in finest:
        starts = _starts(first, latest, unit, max_buckets + 1)
        if len(starts) <= max_buckets:
            break
    else:
        unit, starts = "month", _starts(first, latest, "month", max_buckets)
    counts = Counter(_floor(m, unit) for m in moments if m >= starts[0])
    return Buckets(unit, tuple(starts), tuple(counts.get(s, 0) for s in starts))


def _starts(first: datetime, latest: datetime, unit: Unit, limit: int) -> list[datetime]:
    """The starts of the buckets of `unit` from `first`'s to `latest`'s, oldest first,
    at most the latest `limit` of them."""
    begin = _floor(first, unit)
    out = [_floor(latest, unit)]
    while out[-1] > begin and len(out) < limit:
        at = out[-1]
        if unit == "month":
            out.append(at.replace(year=at.year - (at.month == 1), month=(at.month - 2) % 12 + 1))
        else:
            out.append(at - _STEPS[unit])
    return out[::-1]


def daily_counts(
    times: Sequence[datetime], *, end: datetime | None = None, days: int = SPARKLINE_DAYS
) -> tuple[int, ...]:
    """Reports per day over the `days` days ending on `end`'s day (default: the latest)."""
    if not times:
        return ()
    moments = [utc(t) for t in times]
    last_day = _floor(utc(end) if end is not None else max(moments), "day")
    start = last_day - (days - 1) * _DAY
    counts = Counter(
        int((_floor(m, "day") - start) / _DAY) for m in moments if start <= m < last_day + _DAY
    )
    return tuple(counts.get(i, 0) for i in range(days))


def bar_chart(
    buckets: Buckets, *, noun: str = "report", width: int = 720, height: int = 140
) -> str:
    """Bars with the count above each and a few labels along the time axis."""
    unit = buckets.unit
    top, bottom = 18, 22  # room for counts above and labels below
    side = 36  # room for half an axis label at either end
    plot = height - top - bottom
    slot = (width - 2 * side) / len(buckets.counts)
    bar = max(slot * 0.7, 1.0)
    peak = max(buckets.counts) or 1
    total = sum(buckets.counts)
    title = f"{plural(total, noun)}, counted per {unit}; at most {peak} in one {unit}"
    parts = [
        f'<svg class="chart" viewBox="0 0 {width} {height}" width="100%" role="img" '
        f'aria-label="{escape(title)}" preserveAspectRatio="xMidYMid meet">',
        f"<title>{escape(title)}</title>",
        f'<line x1="{side}" y1="{top + plot}" x2="{width - side}" y2="{top + plot}" class="axis"/>',
    ]
    every = max(1, -(-len(buckets.counts) // 6))  # at most six axis labels, never touching
    for index, count in enumerate(buckets.counts):
        x = side + index * slot + (slot - bar) / 2
        h = plot * count / peak
        label = buckets.label(index)
        parts.append(
            f'<rect x="{x:.1f}" y="{top + plot - h:.1f}" width="{bar:.1f}" height="{h:.1f}">'
            f"<title>{escape(label)}: {plural(count, noun)}</title></rect>"
        )
        centre = x + bar / 2
        if count and slot >= 14:  # numbers only where they fit
            parts.append(
                f'<text x="{centre:.1f}" y="{top + plot - h - 4:.1f}" '
                f'text-anchor="middle">{count}</text>'
            )
        if index % every == 0:
            parts.append(
                f'<text x="{centre:.1f}" y="{height - 6}" text-anchor="middle">'
                f"{escape(label)}</text>"
            )
    parts.append("</svg>")
    return "".join(parts)


def sparkline(
    counts: Sequence[int], *, noun: str = "report", width: int = 112, height: int = 24
) -> str:
    """A small bar sparkline of daily counts, for the index page."""
    if not counts:
        return ""
    peak = max(counts) or 1
    slot = width / len(counts)
    title = f"{plural(sum(counts), noun)} in the last {plural(len(counts), 'day')}, per day"
    bars = []
    for index, count in enumerate(counts):
        if count:  # a day with one report still shows, however tall the peak
            h = max((height - 2) * count / peak, 2.0)
            bars.append(
                f'<rect x="{index * slot + 1:.1f}" y="{height - 1 - h:.1f}" '
                f'width="{max(slot - 2, 1):.1f}" height="{h:.1f}"/>'
            )
    baseline = f'<line x1="0" y1="{height - 0.5}" x2="{width}" y2="{height - 0.5}"/>'
    return (
        f'<svg class="spark" viewBox="0 0 {width} {height}" width="{width}" height="{height}" '
        f'role="img" aria-label="{escape(title)}"><title>{escape(title)}</title>'
        f"{baseline}{''.join(bars)}</svg>"
    )


def _floor(moment: datetime, unit: Unit) -> datetime:
    """The start of the hour, day, week (Monday) or month `moment` is in."""
    if unit == "hour":
        return moment.replace(minute=0, second=0, microsecond=0)
    day = moment.replace(hour=0, minute=0, second=0, microsecond=0)
    if unit == "week":
        return day - timedelta(days=day.weekday())
    return day.replace(day=1) if unit == "month" else day
