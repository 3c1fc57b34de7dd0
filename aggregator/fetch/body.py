"""Reading a response body: streamed under a size cap, gzip and deflate inflated under it too.

Counting decoded bytes, not the bytes on the wire, is what refuses a gzip bomb; the cap
is checked as each piece arrives, so an oversized body is never held whole in memory.
A body labelled gzip or deflate that plainly is not compressed (it starts like a feed)
is read as it is, as browsers and feedparser do.
"""

from __future__ import annotations

import asyncio
import codecs
import zlib

import httpx

from aggregator.errors import FetchError

# We decode bodies ourselves (to cap the decoded size), so only ask for what we can decode.
ACCEPT_ENCODING = "gzip, deflate"
# How much of a body we do not need (an error page, a redirect's) is read to keep the
# connection for the next request; past either limit the connection is dropped instead.
DRAIN_BYTES = 64 * 1024
DRAIN_SECONDS = 1.0
GZIP_MAGIC = b"\x1f\x8b"
# How an uncompressed feed starts: markup, JSON, or a byte order mark (after whitespace).
_FEED_STARTS = (b"<", b"{", codecs.BOM_UTF8, codecs.BOM_UTF16_LE, codecs.BOM_UTF16_BE)


async def read_body(response: httpx.Response, limit: int, url: str) -> bytes:
    """The decoded body of a streamed response, or a FetchError "too_large"/"bad_encoding"."""
    if response.is_stream_consumed:
        # httpx.MockTransport hands over responses it has already read (and decoded).
        if len(response.content) > limit:
            raise too_large(limit, url)
        return response.content
    inflater = Inflater(content_coding(response, url), limit, url)
    declared = response.headers.get("content-length", "")
    if inflater.coding == "identity" and declared.isdigit() and int(declared) > limit:
        raise too_large(limit, url)
    parts = [inflater.feed(chunk) async for chunk in response.aiter_raw()]
    return b"".join(parts)


async def drain(response: httpx.Response) -> None:
    """Read and drop the rest of a small body, so that the connection can be used again.

    httpcore keeps a connection only when its response was read to the end; a 304 or a
    redirect left unread would cost a new connection for every poll.
    """
    if response.is_stream_consumed:
        return
    size = 0
    try:
        async with asyncio.timeout(DRAIN_SECONDS):
            async for chunk in response.aiter_raw():
                size += len(chunk)
                if size > DRAIN_BYTES:
                    return
    except (TimeoutError, httpx.HTTPError, httpx.StreamError):
        pass  # the connection is closed instead; the poll's outcome does not depend on it


def content_coding(response: httpx.Response, url: str) -> str:
    """ "identity", "gzip" or "deflate"; anything else (which we never ask for) is an error."""
    codings = [c.strip().lower() for c in response.headers.get("content-encoding", "").split(",")]
    codings = [c for c in codings if c and c != "identity"]
    if not codings:
        return "identity"
    if len(codings) == 1 and codings[0] in ("gzip", "x-gzip", "deflate"):
        return "deflate" if codings[0] == "deflate" else "gzip"
    raise FetchError(
        f"the body is compressed as {', '.join(codings)!r}, which we did not ask for and cannot "
        "read; tell the site's operator",
        url=url,
        code="bad_encoding",
    )


class Inflater:
    """Undoes gzip or deflate piece by piece, never producing more than `limit` bytes.

    The `max_length` of each decompression step keeps even one chunk of a bomb from
    filling memory.
    """

    def __init__(self, coding: str, limit: int, url: str) -> None:
        self.coding = coding
        self._limit = limit
        self._url = url
        self._size = 0
        self._zlib = zlib.decompressobj(16 + zlib.MAX_WBITS) if coding == "gzip" else None
        self._zlib_untouched = True  # no compressed byte seen yet: the label may still be wrong

    def feed(self, data: bytes) -> bytes:
        if self._zlib_untouched and _sent_uncompressed(self.coding, data):
            self.coding = "identity"  # mislabelled: read as it is, under the same cap
        if self.coding == "identity":
            return self._counted(data)
        self._zlib_untouched = False
        if self._zlib is None:
            self._zlib = zlib.decompressobj(_deflate_wbits(data))
        parts = []
        try:
            while data:
                # One byte more than the room left is enough to know the cap is passed.
                piece = self._zlib.decompress(data, self._limit - self._size + 1)
                parts.append(self._counted(piece))
                data = self._zlib.unconsumed_tail
        except zlib.error as exc:
            raise FetchError(
                f"the {self.coding}-compressed body is corrupt ({exc}); tell the site's operator",
                url=self._url,
                code="bad_encoding",
            ) from exc
        return b"".join(parts)

    def _counted(self, data: bytes) -> bytes:
        self._size += len(data)
        if self._size > self._limit:
            raise too_large(self._limit, self._url)
        return data


def _sent_uncompressed(coding: str, head: bytes) -> bool:
    """Whether the first bytes of a body labelled `coding` are in fact not compressed.

    A gzip stream always starts with its magic number; a zlib stream with a checksummed
    header. Raw deflate has no header, so only a body that starts like a feed is taken
    as uncompressed.
    """
    if coding == "identity" or not head:
        return False
    if coding == "gzip" and not head.startswith(GZIP_MAGIC[: len(head)]):
        return True
    return _deflate_wbits(head) != zlib.MAX_WBITS and head.lstrip(b" \t\r\n").startswith(
        _FEED_STARTS
    )


def _deflate_wbits(head: bytes) -> int:
    # "deflate" should mean a zlib stream, but many servers send raw deflate instead.
    is_zlib = len(head) >= 2 and head[0] & 0x0F == 8 and ((head[0] << 8) | head[1]) % 31 == 0
    return zlib.MAX_WBITS if is_zlib else -zlib.MAX_WBITS


def too_large(limit: int, url: str) -> FetchError:
    return FetchError(
        f"the body is larger than {limit} bytes (fetch.max_body_bytes) and was not read to "
        "the end; raise the limit if this feed is really that big",
        url=url,
        code="too_large",
    )
