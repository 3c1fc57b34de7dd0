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

from aggregator.publish import plural, utc

HOURLY_UP_TO = timedelta(days=2)  # longer spans are counted per day
MAX_BUCKETS = 60  # older buckets drop off the left edge beyond this
SPARKLINE_DAYS = 14

_HOUR = timedelta(hours=1)
_DAY = timedelta(days=1)


@dataclass(frozen=True)
class Buckets:
    """Report counts per consecutive hour or day, oldest first."""

    start: datetime  # the first bucket's start, aware UTC
    step: timedelta
    counts: tuple[int, ...]

    @property
    def unit(self) -> str:
        return "hour" if self.step == _HOUR else "day"

    def label(self, index: int) -> str:
        moment = self.start + index * self.step
        return f"{moment:%d %b %H:00}" if self.step == _HOUR else f"{moment:%a %d %b}"


def count_reports(times: Sequence[datetime], *, max_buckets: int = MAX_BUCKETS) -> Buckets | None:
    """Hourly counts when the reports span at most HOURLY_UP_TO, else daily; None if none."""
    if not times:
        return None
    moments = [utc(t) for t in times]
    first, latest = min(moments), max(moments)
    step = _HOUR if latest - first <= HOURLY_UP_TO else _DAY
    start = _floor(first, step)
    end = _floor(latest, step)
    total = int((end - start) / step) + 1
    if total > max_buckets:
        start = end - (max_buckets - 1) * step
        total = max_buckets
    counts = Counter(int((_floor(m, step) - start) / step) for m in moments if m >= start)
    return Buckets(start, step, tuple(counts.get(i, 0) for i in range(total)))


def daily_counts(
    times: Sequence[datetime], *, end: datetime | None = None, days: int = SPARKLINE_DAYS
) -> tuple[int, ...]:
    """Reports per day over the `days` days ending on `end`'s day (default: the latest)."""
    if not times:
        return ()
    moments = [utc(t) for t in times]
    last_day = _floor(utc(end) if end is not None else max(moments), _DAY)
    start = last_day - (days - 1) * _DAY
    counts = Counter(
        int((_floor(m, _DAY) - start) / _DAY) for m in moments if start <= m < last_day + _DAY
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


def _floor(moment: datetime, step: timedelta) -> datetime:
    if step == _HOUR:
        return moment.replace(minute=0, second=0, microsecond=0)
    return moment.replace(hour=0, minute=0, second=0, microsecond=0)
