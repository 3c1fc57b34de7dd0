"""The long-running process: APScheduler drives the pipeline's cycle, uvicorn serves feeds.

Both share one asyncio loop. SIGINT and SIGTERM stop scheduling, let the running
cycle finish (each source's entries and state are one transaction, so a cut
never loses what was stored), and return.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import signal
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta

import uvicorn
from apscheduler.schedulers.asyncio import AsyncIOScheduler

from aggregator.pipeline import Pipeline
from aggregator.serve import create_app
from aggregator.settings import Settings
from aggregator.store import Store

log = logging.getLogger(__name__)

STOP_GRACE_SECONDS = 30.0


class Worker:
    def __init__(self, settings: Settings, store: Store, pipeline: Pipeline | None = None) -> None:
        self.settings = settings
        self.store = store
        self.pipeline = pipeline or Pipeline(settings, store)
        self.stopping = asyncio.Event()
        self.last_success: datetime | None = None
        self._cycle: asyncio.Task[object] | None = None

    async def cycle(self) -> None:
        if self.stopping.is_set():
            return
        self._cycle = asyncio.current_task()
        try:
            await self.pipeline.run_cycle()
            self.last_success = datetime.now(UTC)
        except Exception:  # one bad cycle must not end the service
            log.exception("worker cycle failed; the next cycle will try again")
        finally:
            self._cycle = None

    def ready(self) -> bool:
        """Ready: the database answers and a cycle succeeded recently."""
        if self.last_success is None or not self.store.ping():
            return False
        limit = timedelta(seconds=max(10 * self.settings.worker.cycle_seconds, 300))
        return datetime.now(UTC) - self.last_success < limit

    async def run(self, *, serve: bool = True) -> None:
        scheduler = AsyncIOScheduler(timezone=UTC)
        scheduler.add_job(
            self.cycle,
            "interval",
            seconds=self.settings.worker.cycle_seconds,
            id="cycle",
            max_instances=1,
            coalesce=True,
            misfire_grace_time=int(self.settings.worker.cycle_seconds) + 1,
            next_run_time=datetime.now(UTC),
        )
        scheduler.start()
        try:
            with _stop_on_signals(self.stopping):
                if serve and self.settings.server.enabled:
                    await self._serve()
                else:
                    await self.stopping.wait()
        finally:
            scheduler.shutdown(wait=False)
            await self._finish_cycle()

    async def _serve(self) -> None:
        server = _QuietServer(
            uvicorn.Config(
                create_app(self.store.document, ready=self.ready),
                host=self.settings.server.host,
                port=self.settings.server.port,
                log_level="warning",
                lifespan="off",
            )
        )
        log.info(
            "serving timelines at http://%s:%d/",
            self.settings.server.host,
            self.settings.server.port,
        )
        serving = asyncio.create_task(server.serve())
        stop = asyncio.create_task(self.stopping.wait())
        await asyncio.wait({serving, stop}, return_when=asyncio.FIRST_COMPLETED)
        server.should_exit = True
        await serving
        stop.cancel()

    async def _finish_cycle(self) -> None:
        task = self._cycle
        if task is None:
            return
        log.info("waiting up to %.0f s for the running cycle to finish", STOP_GRACE_SECONDS)
        with contextlib.suppress(asyncio.CancelledError):
            try:
                await asyncio.wait_for(asyncio.shield(task), STOP_GRACE_SECONDS)
            except TimeoutError:
                task.cancel()


class _QuietServer(uvicorn.Server):
    """uvicorn without its own signal handling: the worker owns SIGINT and SIGTERM."""

    @contextlib.contextmanager
    def capture_signals(self) -> Iterator[None]:
        yield


@contextlib.contextmanager
def _stop_on_signals(stopping: asyncio.Event) -> Iterator[None]:
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
