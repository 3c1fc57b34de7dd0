"""Parse and publish adversarial feed bodies of 1, 4 and 15 MB; time per MB and peak memory.

Each shape is a body built to make some parser or regular expression on feed text
work harder than linearly (shapes seen in hostile feeds and a few more), next to an ordinary
feed of the same size. Every (shape, size) runs in a fresh subprocess, so its peak
resident memory (ru_maxrss) is its own: it counts the body, parse_feed, and rendering
the first parsed entry as one item of an Atom, RSS and JSON Feed timeline.

    .venv/bin/python benchmarks/hostile.py [--sizes 1 4 15] [--shapes doctype author ...]

Prints one line per run, then one JSON object: seconds per MB for every shape and size,
each shape's ratio to the ordinary feed at the largest size, peak memory in MB, and
whether every shape is within 5x of the ordinary feed and under 500 MB.
"""

from __future__ import annotations

import argparse
import json
import resource
import subprocess
import sys
import time
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path

MB = 1024 * 1024
RATIO_TARGET = 5.0
MEMORY_TARGET_MB = 500.0

RSS_HEAD = (
    b'<?xml version="1.0" encoding="utf-8"?><rss version="2.0" '
    b'xmlns:content="http://purl.org/rss/1.0/modules/content/" '
    b'xmlns:dc="http://purl.org/dc/elements/1.1/"><channel><title>Outlet</title>'
    b"<link>http://outlet.test/</link>"
)
RSS_TAIL = b"</channel></rss>"
ATOM_HEAD = (
    b'<?xml version="1.0" encoding="utf-8"?><feed xmlns="http://www.w3.org/2005/Atom">'
    b"<title>Outlet</title><id>urn:outlet</id>"
)
ATOM_TAIL = b"</feed>"


def _filled(head: bytes, unit: Callable[[int], bytes], tail: bytes, size: int) -> bytes:
    """head + unit(0) + unit(1) + ... + tail, about `size` bytes."""
    parts, total, n = [head], len(head) + len(tail), 0
    while total < size:
        part = unit(n)
        parts.append(part)
        total += len(part)
        n += 1
    parts.append(tail)
    return b"".join(parts)


def _item(n: int, inner: bytes) -> bytes:
    return b"<item><guid>id-%d</guid><title>Report %d</title>%s</item>" % (n, n, inner)


def ordinary(size: int) -> bytes:
    def unit(n: int) -> bytes:
        return (
            b"<item><title>Report %d: Ukrainian forces advance near Sudzha in Kursk region</title>"
            b"<link>http://outlet.test/a/%d</link><guid>id-%d</guid>"
            b"<pubDate>Tue, 06 Aug 2024 12:%02d:00 GMT</pubDate>"
            b"<author>desk@outlet.test (News Desk)</author><description>&lt;p&gt;Troops crossed "
            b"the border at dawn, officials said. %s&lt;/p&gt;</description></item>"
            % (n, n, n, n % 60, b"More detail follows here. " * 20)
        )

    return _filled(RSS_HEAD, unit, RSS_TAIL, size)


def doctype(size: int) -> bytes:
    # "<!DOCTYPE x " repeated: the DOCTYPE search used to rescan to the end from each.
    opening = b"<!DOCTYPE x "
    feed = RSS_HEAD + _item(0, b"") + RSS_TAIL
    prolog = opening * ((size - len(feed)) // len(opening))
    return b'<?xml version="1.0" encoding="utf-8"?>' + prolog + feed[feed.index(b"<rss") :]


def author_at(size: int) -> bytes:
    # An author of 20,000 "@ (" per entry.
    return _filled(
        RSS_HEAD, lambda n: _item(n, b"<author>%s</author>" % (b"@ (" * 20_000)), RSS_TAIL, size
    )


def author_letters(size: int) -> bytes:
    # A run of e-mail letters: feedparser's e-mail pattern is quadratic in it.
    return _filled(
        RSS_HEAD,
        lambda n: _item(n, b"<dc:creator>%s</dc:creator>" % (b"a" * 60_000)),
        RSS_TAIL,
        size,
    )


def html_title(size: int) -> bytes:
    # "&lt;a " repeated in an HTML title: html.parser's tag search was quadratic.
    def unit(n: int) -> bytes:
        return b'<entry><id>urn:%d</id><title type="html">%s</title></entry>' % (
            n,
            b"&lt;a " * 40_000,
        )

    return _filled(ATOM_HEAD, unit, ATOM_TAIL, size)


def nested_div(size: int) -> bytes:
    # 40,000 nested <div>: HTML tree building is quadratic in the depth.
    body = b"<div>" * 40_000 + b"text" + b"</div>" * 40_000
    return _filled(
        RSS_HEAD,
        lambda n: _item(n, b"<description><![CDATA[%s]]></description>" % body),
        RSS_TAIL,
        size,
    )


def nested_xhtml(size: int) -> bytes:
    # The same depth as XML elements of Atom xhtml content, which feedparser rebuilds.
    def unit(n: int) -> bytes:
        deep = b"<div>" * 5_000 + b"text" + b"</div>" * 5_000
        return (
            b'<entry><id>urn:%d</id><title>t</title><content type="xhtml">'
            b'<div xmlns="http://www.w3.org/1999/xhtml">%s</div></content></entry>' % (n, deep)
        )

    return _filled(ATOM_HEAD, unit, ATOM_TAIL, size)


def huge_title(size: int) -> bytes:
    # One title as large as the body.
    feed = RSS_HEAD + _item(0, b"") + RSS_TAIL
    words = b"Kursk " * ((size - len(feed)) // 6)
    return feed.replace(b"<title>Report 0</title>", b"<title>%s</title>" % words)


def attributes(size: int) -> bytes:
    # A tag with a huge attribute list in content.
    attrs = b" ".join(b'a%d="x"' % i for i in range(20_000))
    return _filled(
        RSS_HEAD,
        lambda n: _item(n, b"<description><![CDATA[<p %s>text</p>]]></description>" % attrs),
        RSS_TAIL,
        size,
    )


def entities(size: int) -> bytes:
    # Character and entity references, most of them to be checked or decoded.
    refs = b"&#65;&#x42;&amp;&lt;&#xD800;&#x110000;" * 2_000
    return _filled(
        RSS_HEAD, lambda n: _item(n, b"<description>%s</description>" % refs), RSS_TAIL, size
    )


def html_entities(size: int) -> bytes:
    # HTML's named entities, which XML does not define: each becomes a numeric reference.
    refs = b"&mdash;&eacute;&nbsp;&hellip;&nosuchname;" * 2_000
    return _filled(
        RSS_HEAD, lambda n: _item(n, b"<description>%s</description>" % refs), RSS_TAIL, size
    )


def legacy_encoding(size: int) -> bytes:
    # windows-1251 text in a body that declares no encoding: UTF-8 fails, chardet guesses.
    text = "Украинские войска продвигаются у Суджи в Курской области. ".encode("cp1251")
    head = RSS_HEAD.replace(b' encoding="utf-8"', b"")
    return _filled(
        head, lambda n: _item(n, b"<description>%s</description>" % (text * 20)), RSS_TAIL, size
    )


def text_inputs(size: int) -> bytes:
    # <textInput> inside items, dropped before parsing; some never closed.
    box = b"<textInput><name>q</name><link>http://outlet.test/s</link></textInput><textInput>"
    return _filled(RSS_HEAD, lambda n: _item(n, box * 200), RSS_TAIL, size)


def long_line(size: int) -> bytes:
    # One word without spaces as long as the body, in the description.
    feed = RSS_HEAD + _item(0, b"<description>X</description>") + RSS_TAIL
    return feed.replace(b">X<", b">%s<" % (b"x" * (size - len(feed))))


def tiny_entries(size: int) -> bytes:
    return _filled(RSS_HEAD, lambda n: b"<item><guid>%d</guid></item>" % n, RSS_TAIL, size)


def unclosed_tags(size: int) -> bytes:
    # "<a " repeated as raw HTML in content (not escaped): the sanitiser's tag reading.
    return _filled(
        RSS_HEAD,
        lambda n: _item(n, b"<description><![CDATA[%s]]></description>" % (b"<a " * 40_000)),
        RSS_TAIL,
        size,
    )


def truncated(size: int) -> bytes:
    # An ordinary feed cut off in transit: feedparser reads it again with its slower
    # fallback parser.
    return ordinary(size)[:-100]


def xml_base(size: int) -> bytes:
    # Links in HTML content under xml:base go through feedparser's URI resolver.
    def unit(n: int) -> bytes:
        html = b'&lt;a href="pics/%d" ' % n * 2_000
        return (
            b'<entry><id>urn:%d</id><title>t</title><content type="html">%s</content></entry>'
            % (n, html)
        )

    head = ATOM_HEAD.replace(b"<feed ", b'<feed xml:base="http://outlet.test/blog/" ')
    return _filled(head, unit, ATOM_TAIL, size)


SHAPES: dict[str, Callable[[int], bytes]] = {
    "ordinary": ordinary,
    "doctype": doctype,
    "author_at": author_at,
    "author_letters": author_letters,
    "html_title": html_title,
    "nested_div": nested_div,
    "nested_xhtml": nested_xhtml,
    "huge_title": huge_title,
    "attributes": attributes,
    "entities": entities,
    "html_entities": html_entities,
    "legacy_encoding": legacy_encoding,
    "text_inputs": text_inputs,
    "long_line": long_line,
    "tiny_entries": tiny_entries,
    "unclosed_tags": unclosed_tags,
    "truncated": truncated,
    "xml_base": xml_base,
}


def run_one(shape: str, megabytes: float) -> dict[str, float | int | str]:
    """Parse one body and publish its first entry, in this process; the figures as a dict."""
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
    from aggregator.errors import ParseError
    from aggregator.parse import parse_feed
    from aggregator.publish.feeds import render_atom, render_json, render_rss
    from aggregator.settings import PublishSettings
    from aggregator.types import TimelineDoc, TimelineItem

    body = SHAPES[shape](int(megabytes * MB))
    started = time.perf_counter()
    try:
        feed = parse_feed(
            body, {"content-type": "application/rss+xml"}, url="http://outlet.test/feed"
        )
    except ParseError as error:  # a readable refusal is an outcome too, timed the same
        parse_s = time.perf_counter() - started
        return _figures(shape, body, parse_s, 0, 0.0, outcome=error.code)
    parse_s = time.perf_counter() - started
    now = datetime(2024, 8, 6, 12, tzinfo=UTC)
    first = feed.entries[0]
    item = TimelineItem(
        id="tag:outlet.test,2024:1",
        title=first.title or "untitled",
        link=first.link or "http://outlet.test/1",
        summary_html=first.summary_html,
        outlet="Outlet",
        outlet_url="http://outlet.test/feed",
        outlet_site="http://outlet.test/",
        published=first.published or now,
        updated=first.updated or now,
    )
    doc = TimelineDoc(
        slug="bench",
        title=item.title,
        description="Benchmark",
        id="tag:bench",
        updated=now,
        items=(item,),
    )
    settings = PublishSettings()
    started = time.perf_counter()
    for render in (render_atom, render_rss, render_json):
        render(doc, settings)
    publish_s = time.perf_counter() - started
    return _figures(shape, body, parse_s, len(feed.entries), publish_s, outcome="entries")


def _figures(
    shape: str, body: bytes, parse_s: float, entries: int, publish_s: float, *, outcome: str
) -> dict[str, float | int | str]:
    peak_mb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    return {
        "shape": shape,
        "mb": round(len(body) / MB, 2),
        "outcome": outcome,  # "entries", or the ParseError's code
        "entries": entries,
        "parse_s": round(parse_s, 3),
        "s_per_mb": round(parse_s / (len(body) / MB), 4),
        "publish_s": round(publish_s, 4),
        "peak_mb": round(peak_mb, 1),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", nargs="+", type=float, default=[1, 4, 15])
    parser.add_argument("--shapes", nargs="+", choices=sorted(SHAPES), default=list(SHAPES))
    parser.add_argument("--one", nargs=2, metavar=("SHAPE", "MB"), help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.one:
        print(json.dumps(run_one(args.one[0], float(args.one[1]))))
        return
    shapes = ["ordinary", *[s for s in args.shapes if s != "ordinary"]]
    runs = []
    for size in args.sizes:
        for shape in shapes:
            answer = subprocess.run(
                [sys.executable, __file__, "--one", shape, str(size)],
                capture_output=True,
                text=True,
                check=True,
            )
            figures = json.loads(answer.stdout.strip().splitlines()[-1])
            runs.append(figures)
            print(
                f"{shape:15} {figures['mb']:6.2f} MB  {figures['s_per_mb']:7.3f} s/MB  "
                f"publish {figures['publish_s']:6.3f} s  peak {figures['peak_mb']:6.1f} MB  "
                f"{figures['outcome']} {figures['entries']}",
                flush=True,
            )
    largest = max(args.sizes)
    at_largest = {r["shape"]: r for r in runs if r["mb"] >= largest * 0.9}
    base = float(at_largest["ordinary"]["s_per_mb"])
    ratios = {shape: round(float(r["s_per_mb"]) / base, 2) for shape, r in at_largest.items()}
    peak = max(float(r["peak_mb"]) for r in runs)
    summary = {
        "benchmark": "hostile",
        "s_per_mb": {f"{r['shape']}@{r['mb']}": r["s_per_mb"] for r in runs},
        "publish_s": {f"{r['shape']}@{r['mb']}": r["publish_s"] for r in runs},
        f"ratio_to_ordinary_at_{largest:g}mb": ratios,
        "peak_mb": peak,
        "within_5x": all(ratio <= RATIO_TARGET for ratio in ratios.values()),
        "under_500mb": peak < MEMORY_TARGET_MB,
    }
    print(json.dumps(summary))


if __name__ == "__main__":
    main()
