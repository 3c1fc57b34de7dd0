"""Cleaning an XML feed's bytes before feedparser sees them.

Part of the parse stage (fetch -> parse -> store). Each step here is one linear pass
over the body and only removes or replaces what the XML parsers choke on or spend
unbounded time on: stray control bytes, an internal DTD subset, character references
to code points XML cannot carry, overlong text in the small elements (authors, dates,
ttl) whose values feedparser reads with regular expressions, and markup past
MAX_TAGS (feedparser's work is per element, so a body of tiny elements costs many
times an ordinary feed of the same size). The two public label fixes below correct a
charset that the headers or the XML declaration get wrong.
"""

from __future__ import annotations

import codecs
import html.entities
import re

# The same C0 controls as bytes, ESC excepted because ISO-2022 encodings need it.
_CONTROL_BYTES = bytes([*range(0x00, 0x09), 0x0B, 0x0C, *range(0x0E, 0x1B), *range(0x1C, 0x20)])
# `[^\[<>]*` stops at the next tag: "<!DOCTYPE x " repeated must not be rescanned to the
# end of the body from each of its starts.
_DOCTYPE_WITH_SUBSET = re.compile(rb"<!DOCTYPE\s[^\[<>]*\[", re.IGNORECASE)
_SUBSET_END = re.compile(rb"\]\s*>")
_ROOT_ELEMENT = re.compile(rb"<[A-Za-z_]")
_XML_ENCODING = re.compile(rb"encoding=[\"'][\w.:-]+[\"']")
_CHARSET_PARAM = re.compile(r";\s*charset=\"?([\w.:-]+)\"?", re.IGNORECASE)
_XML_DECLARES_UTF8 = re.compile(rb"^\s*<\?xml[^>]{0,512}encoding=[\"']utf-?8[\"']", re.IGNORECASE)
_XML_DECLARES_ENCODING = re.compile(rb"^\s*<\?xml[^>]{0,512}encoding=", re.IGNORECASE)
_UTF8_BOM = b"\xef\xbb\xbf"
_UTF16_BOMS = (b"\xff\xfe", b"\xfe\xff")  # UTF-32's begin alike
_SINGLE_BYTE_CYRILLIC_WORD = re.compile(rb"[\xc0-\xff]{4,}")
# Well-formed non-ASCII characters per bad sequence from which a body is UTF-8 with
# damage, not a single-byte encoding under a UTF-8 label (`utf8_as_labelled`): two
# letters of windows-1252 or 1251 text rarely pair up as UTF-8 ("Ã©"), and a
# damaged UTF-8 feed has few bad bytes.
_DAMAGE_RATIO = 4
_SINGLE_BYTE_CHARSETS = frozenset(
    {"iso-8859-1", "latin-1", "latin1", "us-ascii", "ascii", "windows-1252", "cp1252"}
)
_CHAR_REF = re.compile(rb"&#(?:[xX]([0-9A-Fa-f]+)|([0-9]+));")
_REPLACEMENT_REF = b"&#xFFFD;"
_LONGEST_CHAR_REF_DIGITS = 7  # "1114111" and "10FFFF" fit; more digits are out of range

# Elements whose text feedparser matches with regular expressions that backtrack
# (the author's e-mail pattern is quadratic in a run of letters), with or without a
# namespace prefix. Their real values are short; longer text is cut before parsing.
_SMALL_ELEMENT = re.compile(
    rb"<(?:[\w.-]++:)?(?:author|creator|managingeditor|webmaster|publisher|owner|email|"
    rb"pubdate|published|updated|issued|modified|created|date|lastbuilddate|ttl)"
    rb"(?:\s[^<>]*+)?>",
    re.IGNORECASE,
)
SMALL_ELEMENT_BYTES = 1024  # more than any cap in aggregator.bounds needs
_RUN = 64  # longest run of e-mail letters left unbroken in those elements
_EMAIL_LETTERS_RUN = re.compile(rb"[A-Za-z0-9_.+-]{%d}(?=[A-Za-z0-9_.+-])" % _RUN)
_CDATA = b"<![CDATA["
_ELLIPSIS_REF = b"&#8230;"
# An ordinary 15 MB feed (the default fetch.max_body_bytes) has about 250,000 tags; a
# body of "<a/>" has 4 million. What comes after the cut is dropped: the entries before
# it are kept, as from any feed cut off in transit.
MAX_TAGS = 500_000
_ENTRY_ENDS = (b"</item>", b"</entry>")
_LONGEST_CLOSING = 4096  # what may follow the last entry: the channel's and root's end tags
_UTF16_32_STARTS = (
    codecs.BOM_UTF32_LE,
    codecs.BOM_UTF32_BE,
    codecs.BOM_UTF16_LE,
    codecs.BOM_UTF16_BE,
)


def cleaned(body: bytes) -> bytes:
    """The body, as bytes the XML parsers read in linear time and never fail on."""
    body = _as_utf8(body)
    if b"\x00" in body[:4]:
        return body  # UTF-16 or UTF-32 without a BOM we could read: left to feedparser
    body = body.translate(None, _CONTROL_BYTES)
    body = _without_internal_subset(body)
    body = _legal_char_refs(body)
    body = _html_entities_as_refs(body)
    body = _without_text_inputs(body)
    return _tags_capped(_small_elements_capped(body))


_TEXT_INPUT_TAG = re.compile(rb"<(/?)textinput\b[^<>]*>", re.IGNORECASE)
_ENTRY_BOUNDARY = re.compile(rb"</?(?:item|entry)\b", re.IGNORECASE)  # never dropped


def _without_text_inputs(body: bytes) -> bytes:
    """The body without its <textInput> elements: a channel's search box, which nothing
    here shows, and which feedparser 6 fails on (KeyError) when one sits inside an item,
    losing the whole feed. One pass over the tags: an opening never closed stays, and
    so does a span that would take an item's or entry's own tags with it."""
    pieces: list[bytes] = []
    kept = 0  # the body is copied up to here
    opened: int | None = None  # where the element being dropped starts
    for tag in _TEXT_INPUT_TAG.finditer(body):
        closing = bool(tag.group(1))
        if not closing:
            opened = tag.start()  # an earlier opening left unclosed stays as it is
        if (closing or tag.group(0).endswith(b"/>")) and opened is not None:
            if not _ENTRY_BOUNDARY.search(body, opened, tag.start()):
                pieces.append(body[kept:opened])
                kept = tag.end()
            opened = None
    if not pieces:
        return body
    pieces.append(body[kept:])
    return b"".join(pieces)


def _tags_capped(body: bytes, limit: int = MAX_TAGS) -> bytes:
    """The body cut after its last entry within `limit` tags, closed as the body closes.

    Keeping the document well-formed matters: a cut body would send feedparser to its
    fallback parser, which reads everything again at a third of the speed.
    """
    if body.count(b"<") <= limit:
        return body
    position = -1
    for _ in range(limit):
        position = body.find(b"<", position + 1)
    ends = [(body.rfind(end, 0, position), end) for end in _ENTRY_ENDS]
    cut_at, end = max(ends)
    last_at, last_end = max((body.rfind(end), end) for end in _ENTRY_ENDS)
    closing = body[last_at + len(last_end) :]
    if cut_at < 0 or len(closing) > _LONGEST_CLOSING:
        return body[:position]  # no entry to end on: the fallback parser keeps what it can
    return body[: cut_at + len(end)] + closing


def _as_utf8(body: bytes) -> bytes:
    """UTF-16 and UTF-32 bodies with a byte order mark, re-encoded as UTF-8.

    Every later step works on ASCII-compatible bytes; a wide body would skip them.
    """
    for bom in _UTF16_32_STARTS:
        if body.startswith(bom):
            encoding = {2: "utf-16", 4: "utf-32"}[len(bom)]
            try:
                text = body.decode(encoding)
            except UnicodeDecodeError:
                return body
            return _XML_ENCODING.sub(b'encoding="utf-8"', text.encode("utf-8"), count=1)
    return body


def _without_internal_subset(body: bytes) -> bytes:
    """Drop a DTD's internal subset, where entity bombs and external entities live.

    feedparser and expat already refuse the worst, but dropping it means nothing is
    expanded at all.
    """
    doctype = _DOCTYPE_WITH_SUBSET.search(body)
    if doctype is None or _ROOT_ELEMENT.search(body, 0, doctype.start()):
        return body
    end = _SUBSET_END.search(body, doctype.end())
    if end is None:
        return body
    return body[: doctype.end() - 1] + b">" + body[end.end() :]


# A named entity XML does not predefine: feeds written by hand use HTML's (&mdash;).
_HTML_ENTITY = re.compile(rb"&(?!(?:amp|lt|gt|quot|apos);)([A-Za-z][A-Za-z0-9]{1,31};)")


def _html_entities_as_refs(body: bytes) -> bytes:
    """HTML's named entities (&mdash;, &eacute;, &nbsp;) as numeric references.

    XML knows none of them without a DTD, so one such entity made the whole document
    malformed: feedparser read it again with its slower fallback parser, and a feed
    with no items yet was refused. Names HTML does not know are left as they are.
    """
    return _HTML_ENTITY.sub(_numeric_refs, body) if _HTML_ENTITY.search(body) else body


def _numeric_refs(entity: re.Match[bytes]) -> bytes:
    text = html.entities.html5.get(entity.group(1).decode("ascii"))
    if text is None:
        return entity.group()
    return b"".join(b"&#%d;" % ord(char) for char in text)


def _legal_char_refs(body: bytes) -> bytes:
    """Character references to code points XML forbids become U+FFFD.

    feedparser's fallback parser calls chr() on them and fails on surrogates
    (&#xD800;) and numbers past U+10FFFF.
    """
    if b"&#" not in body:
        return body
    return _CHAR_REF.sub(_legal_char_ref, body)


def _legal_char_ref(reference: re.Match[bytes]) -> bytes:
    hex_digits, decimal_digits = reference.groups()
    digits = (hex_digits or decimal_digits).lstrip(b"0") or b"0"
    if len(digits) > _LONGEST_CHAR_REF_DIGITS:
        return _REPLACEMENT_REF
    code = int(digits, 16 if hex_digits else 10)
    legal = (
        code in (0x9, 0xA, 0xD)
        or 0x20 <= code <= 0xD7FF
        or 0xE000 <= code <= 0xFFFD
        or 0x10000 <= code <= 0x10FFFF
    )
    return reference.group() if legal else _REPLACEMENT_REF


def _small_elements_capped(body: bytes) -> bytes:
    """Cut the text of author, date and ttl elements to SMALL_ELEMENT_BYTES.

    A cut author ends with an ellipsis reference, so that the stored value says it was
    cut; runs of e-mail letters are broken every _RUN characters, which bounds the work
    of feedparser's e-mail pattern.
    """
    parts: list[bytes] = []
    position = 0
    for start in _SMALL_ELEMENT.finditer(body):
        text_start = start.end()
        if text_start < position:
            continue
        in_cdata = body.startswith(_CDATA, text_start)
        if in_cdata:
            text_start += len(_CDATA)
            text_end = body.find(b"]]>", text_start)
        else:
            text_end = body.find(b"<", text_start)
        if text_end < 0:
            text_end = len(body)
        text = body[text_start:text_end]
        shorter = _shortened(text, in_cdata)
        if shorter is text:
            continue
        parts += [body[position:text_start], shorter]
        position = text_end
    if not parts:
        return body
    parts.append(body[position:])
    return b"".join(parts)


def _shortened(text: bytes, in_cdata: bool) -> bytes:
    was_cut = len(text) > SMALL_ELEMENT_BYTES
    if was_cut:
        text = text[:SMALL_ELEMENT_BYTES]
        while text and 0x80 <= text[-1] < 0xC0:  # inside a UTF-8 sequence
            text = text[:-1]
        if text and text[-1] >= 0xC0:  # a lead byte whose sequence was cut
            text = text[:-1]
        amp = text.rfind(b"&")
        if not in_cdata and amp > text.rfind(b";"):
            text = text[:amp]  # inside a reference
        text += b"]]>" + _ELLIPSIS_REF + _CDATA if in_cdata else _ELLIPSIS_REF
    if len(text) > _RUN and _EMAIL_LETTERS_RUN.search(text):
        return _EMAIL_LETTERS_RUN.sub(lambda run: run.group() + b" ", text)
    return text


def drop_misleading_charset(headers: dict[str, str], body: bytes) -> None:
    """Ignore a single-byte charset in Content-Type when the body is plainly UTF-8.

    Many servers label every text/* response latin-1; feedparser trusts the header
    over the document, which would turn a UTF-8 feed into mojibake.
    """
    content_type = headers.get("content-type", "")
    declared = _CHARSET_PARAM.search(content_type)
    if declared is None or declared.group(1).lower() not in _SINGLE_BYTE_CHARSETS:
        return
    if body.isascii():
        return
    try:
        body.decode("utf-8")
    except UnicodeDecodeError:
        return
    headers["content-type"] = content_type[: declared.start()] + content_type[declared.end() :]


def utf8_as_labelled(headers: dict[str, str], body: bytes) -> bytes:
    """A body that claims to be UTF-8 (in Content-Type, its XML declaration or a
    UTF-8 byte-order mark), or declares no encoding (XML's default is UTF-8), and
    does not decode as UTF-8, made to.

    Two causes, told apart by the bytes. Damage: a UTF-8 feed with a few bad
    bytes (a truncated copy, one pasted Latin-1 word) holds many well-formed
    multi-byte sequences and few bad bytes; feedparser would read the whole
    document as windows-1252 and garble every Cyrillic or Greek letter in it, so
    the bad bytes alone become U+FFFD. A mislabelled Cyrillic single-byte feed:
    old CMSes label windows-1251 or KOI8 pages UTF-8, and decoded as labelled
    every letter of a Ukrainian or Russian feed would be lost. Whole words of
    bytes in 0xC0-0xFF do not occur in Latin-script single-byte text, and in
    running text most letters are lower case, which windows-1251 puts in
    0xE0-0xFF and KOI8 in 0xC0-0xDF; this one only under an explicit UTF-8
    label. Anything else (a Latin-1 feed labelled UTF-8, a legacy feed that
    declares nothing) is left to feedparser's own fallback and guess.
    """
    declared = _CHARSET_PARAM.search(headers.get("content-type", ""))
    says_utf8 = declared is not None and declared.group(1).lower() in ("utf-8", "utf8")
    says_utf8 = says_utf8 or body.startswith(_UTF8_BOM) or bool(_XML_DECLARES_UTF8.match(body))
    # Nothing declared and no byte-order mark: XML's default, UTF-8.
    silent = declared is None and not _XML_DECLARES_ENCODING.match(body)
    silent = silent and not body.startswith(_UTF16_BOMS)
    if body.isascii() or not (says_utf8 or silent):
        return body
    try:
        body.decode("utf-8")
        return body
    except UnicodeDecodeError:
        pass
    repaired = body.decode("utf-8", errors="replace")
    replaced = repaired.count("\ufffd")
    bad = replaced - body.count("\ufffd".encode())
    well_formed = len(repaired) - len(repaired.encode("ascii", "ignore")) - replaced
    if well_formed >= _DAMAGE_RATIO * bad:
        return repaired.encode("utf-8")
    if not says_utf8 or not _SINGLE_BYTE_CYRILLIC_WORD.search(body):
        return body  # left to feedparser, which guesses an undeclared encoding
    upper_half = sum(1 for byte in body if byte >= 0xE0)
    lower_half = sum(1 for byte in body if 0xC0 <= byte < 0xE0)
    text = body.decode("cp1251" if upper_half >= lower_half else "koi8-u", errors="replace")
    headers["content-type"] = _CHARSET_PARAM.sub("; charset=utf-8", headers.get("content-type", ""))
    return _XML_ENCODING.sub(b'encoding="utf-8"', text.encode("utf-8"), count=1)
