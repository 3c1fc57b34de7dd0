"""How hard one cycle may press on servers: a global limit, a per-host limit, host pauses.

The host is that of the source's URL: a redirect to another host stays in the slot it
started in. A host whose answers show a host-wide rate limit (see hints.py) is paused
for the rest of the cycle: the polls still queued for it are not sent.
"""

from __future__ import annotations

import asyncio
from collections import defaultdict
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from datetime import datetime

from aggregator.fetch import hints


class Politeness:
    def __init__(
        self, concurrency: int, per_host: int, *, pause_fallback_s: float, pause_cap_s: float
    ) -> None:
        self._global = asyncio.Semaphore(max(1, concurrency))
        self._per_host = max(1, per_host)
        self._hosts: dict[str, asyncio.Semaphore] = {}
        self._answers: defaultdict[str, list[tuple[int | None, hints.Headers, datetime]]]
        self._answers = defaultdict(list)
        self._paused: dict[str, datetime] = {}
        self._pause_fallback_s = pause_fallback_s
        self._pause_cap_s = pause_cap_s

    @asynccontextmanager
    async def slot(self, host: str) -> AsyncIterator[None]:
        host_limit = self._hosts.setdefault(host, asyncio.Semaphore(self._per_host))
        # Host first: polls queued behind a busy host must not hold global slots.
        async with host_limit, self._global:
            yield

    def paused_until(self, host: str) -> datetime | None:
        return self._paused.get(host)

    def note(self, host: str, status: int, headers: hints.Headers, received: datetime) -> None:
        """Remember a rate-limited answer; pause the host once its answers show a host-wide limit."""
        if not hints.is_rate_limited(status, headers):
            return
        self._answers[host].append((status, headers, received))
        until = hints.host_pause(
            self._answers[host], fallback_s=self._pause_fallback_s, cap_s=self._pause_cap_s
        )
        if until is not None:
            self._paused[host] = until
