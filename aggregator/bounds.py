"""How much of one entry the parse stage keeps: length caps, a sane date range, HTML depth.

Part of the parse stage (fetch -> parse -> store): whatever a feed sends, an entry that
leaves parse is small enough for dedupe, clustering and publishing to handle in bounded
time and memory. A value that was cut ends with ELLIPSIS, so a reader can tell.
"""

from __future__ import annotations

import re
from datetime import UTC, datetime, timedelta

MAX_TITLE_CHARS = 500  # entry and feed titles, as plain text
MAX_AUTHOR_CHARS = 200
MAX_LINK_CHARS = 2048  # longer links are dropped: a cut URL leads nowhere
MAX_KEY_CHARS = 1024  # longer guids are replaced by their SHA-256, which stays unique
MAX_LANGUAGE_CHARS = 35  # the longest BCP 47 tags in use; longer ones are ignored
MAX_HTML_CHARS = 200_000  # the entry's body (summary or content), as HTML before sanitising
MAX_HTML_DEPTH = 64  # element nesting kept in a body; deeper tags are dropped, text kept
ELLIPSIS = "…"

# Dates outside this range are wrong clocks or junk; the entry is dated by its fetch instead.
EARLIEST_DATE = datetime(1970, 1, 1, tzinfo=UTC)
FUTURE_SLACK = timedelta(days=1)  # time zones mislabelled by a day's worth still pass

# One tag of possibly broken HTML. `[^<>]*` stops at the next "<", and the possessive
# name never gives characters back to it: every character is looked at a bounded number
# of times whatever the input ("<aaaa..." without ">" was quadratic without `*+`).
_TAG = re.compile(r"<(/?)([A-Za-z][A-Za-z0-9:-]*+)([^<>]*+)>")
# Elements that never hold children, and those whose end the HTML parser implies at the
# next sibling: neither deepens the tree, so neither counts towards MAX_HTML_DEPTH.
_FLAT = frozenset(
    "area base br col embed hr img input link meta source track wbr "  # noqa: SIM905
    "p li dt dd tr td th option optgroup rb rp rt rtc tbody thead tfoot colgroup".split()
)


def capped(text: str, limit: int, *, was_cut: bool = False) -> str:
    """`text` at most `limit` characters, ending with ELLIPSIS when anything was left out.

    `was_cut` says an earlier step already dropped part of the value.
    """
    if len(text) <= limit and not was_cut:
        return text
    cut = text[: limit - len(ELLIPSIS)]
    space = cut.rfind(" ", max(0, len(cut) - 40))  # end on a word when one ends nearby
    return (cut[:space] if space > 0 else cut).rstrip() + ELLIPSIS


def html_prefix(fragment: str, limit: int) -> tuple[str, bool]:
    """The first `limit` characters of raw HTML, not ending inside a tag or a reference.

    Returns the prefix and whether anything was cut. Sanitising the prefix closes the
    elements it leaves open, so the result is still well-formed.
    """
    if len(fragment) <= limit:
        return fragment, False
    cut = fragment[:limit]
    if cut.rfind("<") > cut.rfind(">"):
        cut = cut[: cut.rfind("<")]
    amp = cut.rfind("&")
    if amp > cut.rfind(";") and len(cut) - amp <= 32:
        cut = cut[:amp]
    return cut, True


def shallow(fragment: str, max_depth: int = MAX_HTML_DEPTH) -> str:
    """Raw HTML with the tags nested deeper than `max_depth` dropped, their text kept.

    HTML parsers spend time in proportion to the depth for each element they open, so
    40,000 nested <div> take minutes; this pass is linear and runs before the sanitiser.
    It only removes markup, so whatever it leaves is still sanitised afterwards.
    """
    if fragment.count("<") <= max_depth:
        return fragment  # too few tags to nest that deep
    parts: list[str] = []
    depth = dropped = 0
    position = 0
    for tag in _TAG.finditer(fragment):
        closing, name, rest = tag.group(1), tag.group(2).lower(), tag.group(3)
        keep = True
        if name in _FLAT or rest.endswith("/"):
            pass
        elif closing:
            if dropped:
                dropped, keep = dropped - 1, False
            else:
                depth = max(0, depth - 1)
        elif depth >= max_depth:
            dropped, keep = dropped + 1, False
        else:
            depth += 1
        if not keep:
            parts.append(fragment[position : tag.start()])
            position = tag.end()
    if position == 0:
        return fragment
    parts.append(fragment[position:])
    return "".join(parts)


def sane_date(moment: datetime | None, fetched_at: datetime) -> datetime | None:
    """`moment` if it lies between EARLIEST_DATE and a day after the fetch, else None."""
    if moment is None or moment < EARLIEST_DATE or moment > fetched_at + FUTURE_SLACK:
        return None
    return moment
