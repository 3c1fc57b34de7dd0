"""The long-running process: APScheduler runs the pipeline's steps as jobs, uvicorn serves.

    dispatch   every worker.cycle_seconds: claim, poll and ingest due sources
    cluster    every worker.cycle_seconds: assign new entries to stories (leader only)
    publish    every worker.cycle_seconds: render the timelines that changed (leader only)
    retention  hourly: remove entries older than worker.retention_days (leader only)
    reload     every 2 s when worker.reload_config: apply edits of the settings file

Every job has max_instances=1, coalesces missed runs and has a misfire grace, and
runs under a time limit, so a hung fetch cannot hold up the schedule. A job that
fails is logged (with its traceback the first time the same error comes), counted
in /metrics and in its health record (/readyz), and runs again at its next time;
the other jobs go on. The three leader jobs take turns on one lock: they share the
clusterer and the lease. A reloaded configuration reaches the pipeline under that
lock too, at the start of the next leader step, never in the middle of one.
SIGINT and SIGTERM stop the schedule and give running jobs STOP_GRACE_SECONDS to
end their batch (each is one transaction); fetches still running then are
cancelled and their claims handed back. The leader lease is released and the
process returns, within a few seconds more than the grace.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import signal
import threading
import time
from collections.abc import Awaitable, Callable, Iterator
from datetime import UTC, datetime, timedelta

from apscheduler.schedulers.asyncio import AsyncIOScheduler
from starlette.applications import Starlette

from aggregator import logs
from aggregator.health import JobHealth, Readiness, readiness
from aggregator.listener import feed_server, serve_until
from aggregator.metrics import Metrics, shared_state_metrics
from aggregator.pipeline import Pipeline
from aggregator.reload import POLL_SECONDS, ConfigWatcher, describe_changes
from aggregator.serve import create_app
from aggregator.settings import Settings
from aggregator.store import Store
from aggregator.types import Document

log = logging.getLogger(__name__)

STOP_GRACE_SECONDS = 5.0  # then fetches still running are cancelled and their claims returned
RETENTION_EVERY_SECONDS = 3600.0
RETENTION_FIRST_AFTER_SECONDS = 60.0
LEADER_JOBS = ("cluster", "publish", "retention")
ERROR_CHARS = 300  # an error's message may quote a whole feed; /readyz shows its start

Step = Callable[[float], Awaitable[object]]  # takes the deadline (time.monotonic())


def _not_a_dispatch_overrun(record: logging.LogRecord) -> bool:
    """False for APScheduler's warning that a dispatch was skipped while one still runs:
    the running dispatch claims the sources that fall due meanwhile (a slow source
    keeps it running), so nothing is missed and the warning every cycle is noise."""
    message = record.getMessage()
    return not (
        message.startswith('Execution of job "dispatch ') and "running instances" in message
    )


class LeaderBusy(Exception):
    """A leader step waited its whole budget for the previous one to end."""


class Worker:
    def __init__(
        self,
        settings: Settings,
        store: Store,
        pipeline: Pipeline | None = None,
        *,
        metrics: Metrics | None = None,
        stop_grace: float = STOP_GRACE_SECONDS,
    ) -> None:
        self.settings = settings
        self.stop_grace = stop_grace
        self.store = store
        self.metrics = metrics or Metrics(store, lambda: self.settings)
        self.pipeline = pipeline or Pipeline(settings, store, events=self.metrics)
        self.stopping = asyncio.Event()
        self.health = JobHealth()
        self.scheduler: AsyncIOScheduler | None = None
        self.watcher = ConfigWatcher(settings.path) if settings.path else None
        self._running: dict[str, asyncio.Task[object]] = {}
        self._leader_lock = threading.Lock()
        # Reloaded settings wait here for the next leader step, which applies them
        # under the leader lock: the clusterer is never swapped while a step uses it.
        self._pending: Settings | None = None
        self._pending_lock = threading.Lock()

    # -- health ------------------------------------------------------------

    def ready(self) -> Readiness:
        """/readyz: the scheduler runs, the database answers, a dispatch succeeded
        recently, and clustering and publishing are not failing cycle after cycle."""
        scheduling = not self.stopping.is_set() and (
            self.scheduler is not None and self.scheduler.running
        )
        return readiness(
            self.health.snapshot(),
            now=datetime.now(UTC),
            dispatch_within=timedelta(seconds=max(10 * self.settings.worker.cycle_seconds, 300)),
            scheduling=scheduling,
            database=self.store.ping(),
        )

    # -- the schedule --------------------------------------------------------

    def _schedule(self) -> AsyncIOScheduler:
        scheduler = AsyncIOScheduler(timezone=UTC)
        logging.getLogger("apscheduler.scheduler").addFilter(_not_a_dispatch_overrun)
        cycle = self.settings.worker.cycle_seconds
        now = datetime.now(UTC)
        jobs: list[tuple[str, Callable[[], Awaitable[None]], float, datetime]] = [
            ("dispatch", self.dispatch, cycle, now),
            ("cluster", self.cluster, cycle, now),
            ("publish", self.publish, cycle, now),
            (
                "retention",
                self.retention,
                RETENTION_EVERY_SECONDS,
                now + timedelta(seconds=RETENTION_FIRST_AFTER_SECONDS),
            ),
        ]
        if self.watcher is not None and self.settings.worker.reload_config:
            jobs.append(("reload", self.reload, POLL_SECONDS, now))
        for name, job, every, first in jobs:
            scheduler.add_job(
                job,
                "interval",
                seconds=every,
                id=name,
                name=name,
                max_instances=1,
                coalesce=True,
                # A run more than one period late is dropped: the next one is as good.
                misfire_grace_time=max(1, int(every)),
                next_run_time=first,
            )
        return scheduler

    def _reschedule(self, cycle: float) -> None:
        if self.scheduler is None:
            return
        for name in ("dispatch", "cluster", "publish"):
            self.scheduler.reschedule_job(name, trigger="interval", seconds=cycle)

    # -- the jobs ------------------------------------------------------------

    async def dispatch(self) -> None:
        # No new batch after half a lease; cancelled before the leases could run out.
        lease = self.settings.worker.lease_seconds
        await self._run("dispatch", self._dispatch, lease / 2, lease * 0.9)

    async def _dispatch(self, deadline: float) -> object:
        # A dispatch runs until its deadline while sources keep falling due: each batch
        # of polls it stores counts as a success for /readyz, not only its end.
        return await self.pipeline.dispatch(
            deadline=deadline, stored=lambda: self.health.succeeded("dispatch")
        )

    async def cluster(self) -> None:
        await self._run_leader("cluster", self.pipeline.cluster_step)

    async def publish(self) -> None:
        await self._run_leader("publish", self.pipeline.publish_step)

    async def retention(self) -> None:
        await self._run_leader("retention", self.pipeline.retain_step)

    async def reload(self) -> None:
        await self._run("reload", self._reload, POLL_SECONDS, 10 * POLL_SECONDS)

    async def _reload(self, deadline: float) -> None:
        assert self.watcher is not None
        new = await asyncio.to_thread(self.watcher.poll)
        if new is None:
            return
        old = self.settings
        for line in describe_changes(old, new) or ["nothing that matters changed"]:
            log.info("config reloaded: %s", line, extra={"event": "reload"})
        self.settings = new
        with self._pending_lock:
            self._pending = new
        if new.worker.cycle_seconds != old.worker.cycle_seconds:
            self._reschedule(new.worker.cycle_seconds)
        if (new.log_level, new.worker.log_format) != (old.log_level, old.worker.log_format):
            logs.configure(new.log_level, new.worker.log_format)

    def _budget(self) -> float:
        # Long enough for a big backlog, short enough to stay well inside the leader lease.
        return min(max(4 * self.settings.worker.cycle_seconds, 60.0), self._lease() / 2)

    def _lease(self) -> float:
        return self.settings.worker.lease_seconds

    async def _run_leader(self, name: str, step: Callable[[float], object]) -> None:
        """Run a leader step in a thread, one at a time: they share the clusterer."""
        budget = self._budget()

        def locked(deadline: float) -> object:
            if not self._leader_lock.acquire(timeout=budget):
                raise LeaderBusy(f"the previous leader step still runs after {budget:g} s")
            try:
                self._apply_pending()
                return step(deadline)
            finally:
                self._leader_lock.release()

        async def in_thread(deadline: float) -> object:
            return await asyncio.to_thread(locked, deadline)

        # The thread cannot be cancelled; its deadline makes it stop between batches.
        await self._run(name, in_thread, budget, 2 * budget)

    def _apply_pending(self) -> None:
        """Hand reloaded settings to the pipeline; called holding the leader lock."""
        with self._pending_lock:
            new, self._pending = self._pending, None
        if new is not None:
            self.pipeline.apply_settings(new)

    async def _run(self, name: str, step: Step, budget: float, limit: float) -> bool:
        """Run one job under a time limit; True if it succeeded.

        Whatever goes wrong is logged, counted and recorded for /readyz, and the job
        runs again at its next time: one bad run must not end the service.
        """
        if self.stopping.is_set():
            return False
        task = asyncio.current_task()
        assert task is not None
        self._running[name] = task
        try:
            async with asyncio.timeout(limit):
                await step(time.monotonic() + budget)
        except TimeoutError:
            self._failed(name, f"took longer than {limit:g} s and was stopped", "job_timeout")
        except LeaderBusy as exc:
            self._failed(name, f"skipped: {exc}", "job_skipped")
        except asyncio.CancelledError:
            if not self.stopping.is_set():
                raise
        except Exception as exc:
            self._failed(name, _summary(exc), "job_failed", exc)
        else:
            self.health.succeeded(name)
            return True
        finally:
            self._running.pop(name, None)
        return False

    def _failed(self, name: str, error: str, event: str, exc: Exception | None = None) -> None:
        before = self.health.failed(name, error)
        self.metrics.job_failed(name)
        streak = before.consecutive_failures + 1
        context = {"event": event, "job": name, "consecutive_failures": streak}
        if exc is None:
            log.error("%s %s; it runs again at its next time", name, error, extra=context)
        elif before.consecutive_failures and before.last_error == error:
            # The same error cycle after cycle: its traceback is in the log already.
            log.error(
                "%s failed again (%d times in a row): %s; the traceback is at the first",
                name,
                streak,
                error,
                extra=context,
            )
        else:
            log.exception("%s failed; it runs again at its next time", name, extra=context)

    # -- running and stopping ------------------------------------------------------

    async def run(self, *, serve: bool = True, ops_port: int | None = None) -> None:
        """Run until SIGINT/SIGTERM; `ops_port` serves only /healthz, /readyz, /metrics."""
        self._warn_about_settings()
        self.scheduler = self._schedule()
        self.scheduler.start()
        try:
            with stop_on_signals(self.stopping):
                if serve and self.settings.server.enabled:
                    await self._serve(self.store.document, self.settings.server.port)
                elif ops_port is not None:
                    await self._serve(_no_documents, ops_port)
                else:
                    await self.stopping.wait()
        finally:
            await self.shutdown()

    async def shutdown(self) -> None:
        """Stop scheduling, let running jobs end their batch, hand back the leases."""
        self.stopping.set()
        self.pipeline.stop()
        if self.scheduler is not None and self.scheduler.running:
            # Pause, not shut down, for now: APScheduler's shutdown cancels running jobs.
            self.scheduler.pause()
        running = [task for task in self._running.values() if task is not asyncio.current_task()]
        if running:
            log.info("waiting up to %.0f s for %d running jobs", self.stop_grace, len(running))
            _, late = await asyncio.wait(running, timeout=self.stop_grace)
            for task in late:
                task.cancel()
            if late:
                # Cancelled fetches hand their claims back; a leader step in its thread
                # stops at its next batch, which the pipeline's stop() already asked for.
                await asyncio.wait(late, timeout=self.stop_grace)
        if self.scheduler is not None and self.scheduler.running:
            self.scheduler.shutdown(wait=False)
        try:
            await asyncio.wait_for(asyncio.to_thread(self.pipeline.close), 10)
        except Exception:
            log.exception("could not hand back the leases; they run out by themselves")
        log.info("stopped")

    async def _serve(self, lookup: Callable[[str], Document | None], port: int) -> None:
        app = feed_app(self.settings, lookup, ready=self.ready, metrics=self.metrics.render)
        server = feed_server(app, self.settings.server.host, port)
        log.info("serving at http://%s:%d/", self.settings.server.host, port)
        await serve_until(server, self.stopping)

    def _warn_about_settings(self) -> None:
        worker = self.settings.worker
        if worker.lease_seconds < 2 * self.settings.fetch.timeout_total:
            log.warning(
                "worker.lease_seconds (%g) is less than twice fetch.timeout_total (%g): a slow "
                "poll may outlive its lease and be repeated by another worker",
                worker.lease_seconds,
                self.settings.fetch.timeout_total,
            )
        if worker.lease_seconds < 2 * worker.cycle_seconds:
            log.warning(
                "worker.lease_seconds (%g) is less than two cycles (%g s): the leader lease "
                "may lapse between cycles and pass from worker to worker",
                worker.lease_seconds,
                worker.cycle_seconds,
            )


def feed_app(
    settings: Settings,
    lookup: Callable[[str], Document | None],
    *,
    ready: Callable[[], bool | Readiness],
    metrics: Callable[[], bytes],
) -> Starlette:
    """The feed server as the settings describe it: readers may cache for one cycle."""
    return create_app(
        lookup,
        ready=ready,
        metrics=metrics,
        max_age=max(int(settings.worker.cycle_seconds), 1),
        hub=settings.publish.websub_hub,
        base_url=settings.publish.base_url,
    )


async def run_feed_server(settings: Settings, store: Store) -> None:
    """`aggregator serve`: the feeds, health checks and shared-state metrics, no worker."""
    metrics = shared_state_metrics(store, lambda: settings)
    stopping = asyncio.Event()

    def ready() -> Readiness:  # no jobs here: the database is all this process needs
        if store.ping():
            return Readiness(True)
        return Readiness(False, ("the database does not answer",))

    app = feed_app(settings, store.document, ready=ready, metrics=metrics)
    server = feed_server(app, settings.server.host, settings.server.port)
    log.info("serving timelines at http://%s:%d/", settings.server.host, settings.server.port)
    with stop_on_signals(stopping):
        await serve_until(server, stopping)
    log.info("stopped")


@contextlib.contextmanager
def stop_on_signals(stopping: asyncio.Event) -> Iterator[None]:
    loop = asyncio.get_running_loop()
    handled = []
    for sig in (signal.SIGINT, signal.SIGTERM):
        with contextlib.suppress(NotImplementedError, RuntimeError):
            loop.add_signal_handler(sig, stopping.set)
            handled.append(sig)
    try:
        yield
    finally:
        for sig in handled:
            loop.remove_signal_handler(sig)


def _summary(exc: Exception) -> str:
    """The error's type and message, cut to a line: it is shown in /readyz and the log."""
    text = f"{type(exc).__name__}: {exc}".replace("\n", " ")
    return text if len(text) <= ERROR_CHARS else text[: ERROR_CHARS - 1] + "…"


def _no_documents(path: str) -> Document | None:
    return None
