"""The bundled demo: fictional outlets whose feeds grow over a simulated week of August 2024.

`DemoServer` serves them on 127.0.0.1 as a `SimClock` advances; `demo_sources` lists their
feeds for a config. The content is invented; its `event` labels exist for tests only.
"""

from aggregator.demo.outlets import (
    Article,
    Demo,
    Outlet,
    SimClock,
    demo_sources,
    feed_url,
    load_demo,
    render_feed,
)
from aggregator.demo.server import DemoServer

__all__ = [
    "Article",
    "Demo",
    "DemoServer",
    "Outlet",
    "SimClock",
    "demo_sources",
    "feed_url",
    "load_demo",
    "render_feed",
]
