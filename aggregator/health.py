"""Job health: each worker job's last success and failures in a row, and readiness from them.

The worker records every run of its jobs here. `readiness()` is the pure decision
/readyz serves: the process may take traffic while the scheduler runs, the database
answers, a dispatch succeeded recently and the leader's clustering and publishing
have not failed cycle after cycle.
"""

from __future__ import annotations

import dataclasses
import threading
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

# One failed cycle is ordinary (a lost lease, a database retry); three in a row mean
# that timelines have stopped changing, and an orchestrator should know.
FAILURES_BEFORE_UNREADY = 3
STALLED_JOBS = ("cluster", "publish")


@dataclass(frozen=True)
class JobRecord:
    """One job's runs so far: when it last succeeded, and how it has failed since."""

    last_success: datetime | None = None
    consecutive_failures: int = 0
    last_error: str = ""

    def as_json(self) -> dict[str, Any]:
        return {
            "last_success": _iso(self.last_success),
            "consecutive_failures": self.consecutive_failures,
            "last_error": self.last_error or None,
        }


@dataclass(frozen=True)
class Readiness:
    """The answer of /readyz: ready or not, why not, and every job's record."""

    ready: bool
    problems: tuple[str, ...] = ()
    jobs: Mapping[str, JobRecord] = dataclasses.field(default_factory=dict)

    def __bool__(self) -> bool:
        return self.ready

    def as_json(self) -> dict[str, Any]:
        return {
            "ready": self.ready,
            "problems": list(self.problems),
            "jobs": {name: record.as_json() for name, record in sorted(self.jobs.items())},
        }


class JobHealth:
    """The records of one worker's jobs; written by the event loop, read by the probe's thread."""

    def __init__(self, clock: Callable[[], datetime] = lambda: datetime.now(UTC)) -> None:
        self._clock = clock
        self._jobs: dict[str, JobRecord] = {}
        self._lock = threading.Lock()

    def succeeded(self, job: str) -> None:
        with self._lock:
            self._jobs[job] = JobRecord(last_success=self._clock())

    def failed(self, job: str, error: str) -> JobRecord:
        """Count a failure; returns the record as it was before, to tell a repeat."""
        with self._lock:
            before = self._jobs.get(job, JobRecord())
            self._jobs[job] = JobRecord(
                last_success=before.last_success,
                consecutive_failures=before.consecutive_failures + 1,
                last_error=error,
            )
            return before

    def snapshot(self) -> dict[str, JobRecord]:
        with self._lock:
            return dict(self._jobs)


def readiness(
    jobs: Mapping[str, JobRecord],
    *,
    now: datetime,
    dispatch_within: timedelta,
    scheduling: bool,
    database: bool,
) -> Readiness:
    """Whether a worker may take traffic, with the reasons when it may not."""
    problems = []
    if not scheduling:
        problems.append("the scheduler is not running (starting or stopping)")
    if not database:
        problems.append("the database does not answer")
    dispatched = jobs.get("dispatch", JobRecord()).last_success
    if dispatched is None:
        problems.append("no dispatch has succeeded yet")
    elif now - dispatched >= dispatch_within:
        problems.append(f"no dispatch has succeeded since {_iso(dispatched)}")
    for name in STALLED_JOBS:
        record = jobs.get(name, JobRecord())
        if record.consecutive_failures >= FAILURES_BEFORE_UNREADY:
            problems.append(
                f"{name} failed {record.consecutive_failures} times in a row "
                f"(last: {record.last_error}); see the worker's log"
            )
    return Readiness(ready=not problems, problems=tuple(problems), jobs=dict(jobs))


def _iso(moment: datetime | None) -> str | None:
    return None if moment is None else moment.isoformat(timespec="seconds")
