"""WebSub publishing: after a publish, tell the hub which feeds changed.

Feeds advertise the hub (`publish.websub_hub`) with rel="hub" links; subscribers ask
the hub for pushes; the publisher pings the hub with each changed feed's URL and
the hub fetches it and fans it out. The ping is the de facto form every hub accepts
(PubSubHubbub 0.4, which WebSub left open): a form-encoded POST of hub.mode=publish
and hub.url=<topic>, one topic per request, answered with a 2xx.
"""

from __future__ import annotations

import asyncio
from collections.abc import Iterable, Sequence

import httpx

from aggregator.publish import ALL_STORIES_SLUG, safe_url, timeline_links
from aggregator.settings import PublishSettings

TIMEOUT = httpx.Timeout(10.0)
MAX_CONCURRENT = 4  # a hub is one server; a handful of pings at once is polite enough
USER_AGENT = "aggregator-websub/0.1"


async def notify_hub(
    hub: str,
    topic_urls: Sequence[str],
    *,
    transport: httpx.AsyncBaseTransport | None = None,
) -> list[str]:
    """Ping the hub once per topic; returns one readable error per topic the hub refused.

    Never raises for network or hub failures: a missed ping only delays readers
    until their next poll, so the caller logs the errors and carries on.
    """
    hub_url = safe_url(hub)
    if hub_url is None:
        return [f"WebSub hub {hub!r} is not an http(s) URL; fix publish.websub_hub"]
    topics = list(dict.fromkeys(topic_urls))  # each changed feed once
    if not topics:
        return []
    limit = asyncio.Semaphore(MAX_CONCURRENT)
    headers = {"User-Agent": USER_AGENT}
    async with httpx.AsyncClient(transport=transport, timeout=TIMEOUT, headers=headers) as client:
        results = await asyncio.gather(*(_ping(client, limit, hub_url, t) for t in topics))
    return [error for error in results if error is not None]


async def _ping(
    client: httpx.AsyncClient, limit: asyncio.Semaphore, hub: str, topic: str
) -> str | None:
    async with limit:
        try:
            response = await client.post(hub, data={"hub.mode": "publish", "hub.url": topic})
        except httpx.HTTPError as exc:
            reason = str(exc) or type(exc).__name__
            return f"WebSub hub {hub} unreachable for {topic}: {reason}"
    if response.is_success:
        return None
    detail = response.text.strip()[:200]
    return f"WebSub hub {hub} refused {topic}: HTTP {response.status_code}" + (
        f" ({detail})" if detail else ""
    )


def changed_topics(slugs: Iterable[str], settings: PublishSettings) -> list[str]:
    """The feed URLs (the topics) to ping after publishing the timelines `slugs`.

    Every feed format of each changed timeline, and the all-stories feeds, which
    the publisher re-renders whenever any timeline changes.
    """
    names = list(dict.fromkeys(slugs))
    if not names:
        return []
    if ALL_STORIES_SLUG not in names:
        names.append(ALL_STORIES_SLUG)
    topics = []
    for slug in names:
        links = timeline_links(slug, settings)
        topics += [links.atom, links.rss, links.json]
    return topics
