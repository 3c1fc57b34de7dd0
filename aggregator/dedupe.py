"""Identity keys for reports: a canonical URL, a normalised-text hash, MinHash signatures.

The cluster stage (`aggregator.cluster.StoryAssigner`) folds a report whose key
matches an earlier one, or whose text nearly copies an earlier one (syndicated
wire copy, a changed headline, light edits), into that report as a duplicate
instead of judging it again.
"""

from __future__ import annotations

import hashlib
import re
import unicodedata
import zlib
from typing import TYPE_CHECKING, ClassVar
from urllib.parse import parse_qsl, unquote_plus, urlencode, urlsplit, urlunsplit

import numpy as np

if TYPE_CHECKING:
    from aggregator.cluster.snapshot import Reader, Writer

# Query parameters that say how a reader arrived, never which article it is. The
# README lists them; dedupe keys and published links drop the same ones.
TRACKING_PARAMS = frozenset(
    {
        "fbclid", "gclid", "dclid", "gbraid", "wbraid", "msclkid", "yclid", "twclid",
        "mc_cid", "mc_eid", "_openstat", "_ga", "_gl", "igshid", "si", "spm",
        "ref", "ref_src", "ref_url", "referrer", "cmpid", "ocid", "icid", "ncid",
        "s_cid", "at_medium", "at_campaign", "track", "rss", "feed_id", "from_rss",
    }
)  # fmt: skip
TRACKING_PREFIXES = ("utm_", "pk_", "mtm_", "hsa_")
DEFAULT_PORTS = {"http": 80, "https": 443}
_SEPARATORS = re.compile(r"[\W_]+")
# ASCII letters lowered, digits kept, every other byte a separator (a space).
_ASCII_FOLD = bytes(
    ord(chr(byte).lower()) if chr(byte).isascii() and chr(byte).isalnum() else 0x20
    for byte in range(256)
)


def canonical_url(url: str) -> str:
    """The URL as a dedupe key: two links to one article give the same string.

    Lower-cases scheme and host, folds "www." and http into https (no site serves
    different articles on the two), drops default ports, userinfo, the fragment
    and tracking parameters, sorts the rest and strips a trailing slash.
    """
    url = url.strip()
    if not url:
        return ""
    try:
        parts = urlsplit(url)
        port = parts.port
    except ValueError:
        return url  # unparseable (bad port, bad IPv6): the raw text is still a key
    scheme = parts.scheme.lower()
    host = (parts.hostname or "").rstrip(".")
    host = host.removeprefix("www.")
    if port is not None and DEFAULT_PORTS.get(scheme) != port:
        host = f"{host}:{port}"
    if scheme == "http":
        scheme = "https"
    path = parts.path.rstrip("/")
    return urlunsplit((scheme, host, path, _clean_query(parts.query), ""))


def untracked_url(url: str) -> str:
    """The link without its tracking parameters, otherwise exactly as the outlet gave it.

    What feeds and pages publish: unlike `canonical_url`, it keeps the scheme, host,
    path, parameter order and encoding, which a site may need to serve the article.
    A fragment made only of tracking parameters (`#utm_source=rss`) goes too.
    """
    try:
        parts = urlsplit(url)
    except ValueError:
        return url
    query, fragment = _untracked_pairs(parts.query), parts.fragment
    if "=" in fragment and not _untracked_pairs(fragment):
        fragment = ""
    if (query, fragment) == (parts.query, parts.fragment):
        return url
    return urlunsplit(parts._replace(query=query, fragment=fragment))


def _untracked_pairs(query: str) -> str:
    if not query:
        return ""
    kept = [
        pair
        for pair in query.split("&")
        if pair and not is_tracking_param(unquote_plus(pair.partition("=")[0]))
    ]
    return "&".join(kept)


def _clean_query(query: str) -> str:
    if not query:
        return ""  # most article links have none
    pairs = [
        (key, value)
        for key, value in parse_qsl(query, keep_blank_values=True)
        if not is_tracking_param(key)
    ]
    return urlencode(sorted(pairs))


def is_tracking_param(key: str) -> bool:
    """True for a query parameter that only tracks the reader (TRACKING_PARAMS, prefixes)."""
    key = key.lower()
    return key in TRACKING_PARAMS or key.startswith(TRACKING_PREFIXES)


def normalise_text(text: str) -> str:
    """NFKC, casefolded, with punctuation and whitespace runs folded to one space."""
    if text.isascii():
        # The same in bytes: NFKC keeps ASCII as it is, casefolding lowers A-Z.
        return b" ".join(text.encode("ascii").translate(_ASCII_FOLD).split()).decode("ascii")
    folded = unicodedata.normalize("NFKC", text).casefold()
    return " ".join(_SEPARATORS.sub(" ", folded).split())


def text_key(title: str, text: str) -> str:
    """A hash of the normalised title and text; "" when both are empty.

    A reposted copy that differs only in case, punctuation, spacing or Unicode
    compatibility forms has the same key. The title and text are kept apart so
    that text moved into the title does not collide.
    """
    title_n, text_n = normalise_text(title), normalise_text(text)
    if not title_n and not text_n:
        return ""
    digest = hashlib.blake2b(f"{title_n}\x1f{text_n}".encode(), digest_size=16)
    return digest.hexdigest()


# -- near-duplicates ---------------------------------------------------------------

SHINGLE_CHARS = 5  # character shingles: robust to one changed word in a short headline
SIGNATURE_SIZE = 64
BANDS = 16  # 16 bands of 4 rows: a pair at Jaccard 0.7 becomes a candidate 99% of the time
NEAR_JACCARD = 0.7  # estimated shingle overlap from which two texts are copies
MIN_CHARS = 40  # shorter texts ("Market update") have too few shingles to judge
BODY_CHARS = 2000  # a copy is recognisable by its opening; the rest costs time
_RNG = np.random.default_rng(20240806)  # fixed: signatures must agree across runs
_MULTIPLIERS = (_RNG.integers(0, 2**32, SIGNATURE_SIZE, dtype=np.uint64) | 1).astype(np.uint32)
_BAND_BYTES = SIGNATURE_SIZE // BANDS * 4  # a band's rows as uint32 bytes
_ONES = np.ones(SIGNATURE_SIZE, np.float32)
_MANY_CANDIDATES = 256  # from here, repeated candidates cost more than dropping them


def _crc32_by_position() -> tuple[np.ndarray, int]:
    """Tables that give the CRC-32 of any SHINGLE_CHARS bytes without a Python loop.

    For messages of one length CRC-32 is affine: the CRC of the zero message,
    XOR one table value per byte, chosen by the byte and its position.
    """
    zero = zlib.crc32(bytes(SHINGLE_CHARS))
    tables = np.empty((SHINGLE_CHARS, 256), np.uint32)
    for position in range(SHINGLE_CHARS):
        for value in range(256):
            message = bytearray(SHINGLE_CHARS)
            message[position] = value
            tables[position, value] = zlib.crc32(message) ^ zero
    return tables, zero


_CRC_TABLES, _CRC_ZERO = _crc32_by_position()


def shingle_text(title: str, text: str) -> str:
    return normalise_text(f"{title} {text[:BODY_CHARS]}")


def shingle_hashes(folded: str) -> np.ndarray:
    """CRC-32 (uint32) of each SHINGLE_CHARS-character shingle's UTF-8; repeats allowed."""
    count = len(folded) - SHINGLE_CHARS + 1
    if count < 1:
        return np.zeros(0, np.uint32)
    if not folded.isascii():
        # A character is 1 to 4 bytes here, so shingles differ in length: one at a time.
        shingles = {folded[i : i + SHINGLE_CHARS] for i in range(count)}
        return np.fromiter((zlib.crc32(s.encode()) for s in shingles), np.uint32, len(shingles))
    data = np.frombuffer(folded.encode("ascii"), np.uint8)
    crc = np.full(count, _CRC_ZERO, np.uint32)
    for position, table in enumerate(_CRC_TABLES):
        crc ^= table[data[position : position + count]]
    return crc


def signature(title: str, text: str) -> np.ndarray | None:
    """MinHash signature (uint32) of a report's character shingles; None if too short."""
    folded = shingle_text(title, text)
    if len(folded) < MIN_CHARS:
        return None
    # Multiplicative hashing in 32 bits, one odd multiplier per row (uint32 wraps
    # by design). An odd multiplier permutes the 32-bit values, so two rows agree
    # only when both texts' smallest product comes from the same shingle: no
    # chance agreements. 32 bits, not 64: this is the ingest path's costliest step.
    return np.multiply.outer(_MULTIPLIERS, shingle_hashes(folded)).min(axis=1)


def similar(a: np.ndarray, b: np.ndarray) -> float:
    """Estimated Jaccard overlap of two signatures' shingle sets."""
    return float(np.count_nonzero(a == b)) / len(a)


class NearDuplicates:
    """The latest `capacity` reports' signatures, looked up by LSH bands.

    `add` answers, for each new report, which earlier report it copies (the
    first one seen), then remembers it; the oldest fall out, so memory and the
    cost of a look-up stay bounded. Signatures are rows of one array, so a report
    is compared with all its candidates at once; a bucket is its rows' numbers
    packed in bytes, which the garbage collector need not visit.
    """

    # What a snapshot of the clusterer saves of it, and what it rebuilds
    # (see cluster/snapshot.py).
    SNAPSHOT: ClassVar = ("_rows _ids _free _signatures _buckets", "capacity threshold")

    def __init__(self, capacity: int = 20_000, threshold: float = NEAR_JACCARD) -> None:
        self.capacity = capacity
        self.threshold = threshold
        self._rows: dict[str, int] = {}  # doc id -> its row in _signatures, oldest first
        self._ids: list[str] = []  # row -> doc id
        self._free: list[int] = []  # rows of forgotten reports
        self._signatures = np.empty((0, SIGNATURE_SIZE), np.uint32)
        # One dict per band: the band's bytes -> rows with that band (int32), oldest first.
        self._buckets: list[dict[bytes, bytes]] = [{} for _ in range(BANDS)]

    def save(self, out: Writer) -> None:
        """Rows, ids and each band's buckets exactly as they are (their order decides ties)."""
        out.state_of(self)
        # oldest first: the order they are forgotten in
        out.value("row_ids", list(self._rows))
        out.array("rows", np.fromiter(self._rows.values(), np.int64, len(self._rows)), np.int64)
        out.value("ids", self._ids)
        out.array("free", np.array(self._free, np.int64), np.int64)
        out.array("signatures", self._signatures, np.uint32)
        for band, buckets in enumerate(self._buckets):
            keys = np.frombuffer(b"".join(buckets), np.uint8).reshape(-1, _BAND_BYTES)
            out.array(f"band{band}.keys", keys, np.uint8)
            out.ragged(
                f"band{band}.rows", [np.frombuffer(v, np.int32) for v in buckets.values()], np.int32
            )

    def load(self, source: Reader) -> None:
        from aggregator.cluster.snapshot import SnapshotError, strings

        ids = strings(source.value("ids"))
        row_ids = strings(source.value("row_ids"))
        row_numbers = source.array("rows", np.int64).tolist()
        if len(row_ids) != len(row_numbers) or any(not 0 <= r < len(ids) for r in row_numbers):
            raise SnapshotError("near-duplicate rows in the snapshot are malformed")
        rows = dict(zip(row_ids, row_numbers, strict=True))
        signatures = source.array("signatures", np.uint32)
        if signatures.shape[1:] != (SIGNATURE_SIZE,) or len(signatures) < len(ids):
            raise SnapshotError("near-duplicate signatures in the snapshot are malformed")
        buckets: list[dict[bytes, bytes]] = []
        for band in range(BANDS):
            keys = source.array(f"band{band}.keys", np.uint8)
            members = source.ragged(f"band{band}.rows", np.int32)
            if len(keys) != len(members):
                raise SnapshotError("a near-duplicate band in the snapshot is malformed")
            buckets.append({k.tobytes(): m.tobytes() for k, m in zip(keys, members, strict=True)})
        self._rows, self._ids = rows, ids
        self._free = source.array("free", np.int64).tolist()
        self._signatures = signatures.copy()
        self._buckets = buckets

    def add(self, doc_id: str, title: str, text: str) -> str | None:
        sig = signature(title, text)
        if sig is None:
            return None
        bands = self._bands(sig)
        first = self._match(sig, bands)
        self._remember(doc_id, sig, bands)
        return first

    def _match(self, sig: np.ndarray, bands: list[bytes]) -> str | None:
        # Candidates in the order they are met, by band, then oldest first; argmax
        # picks the first of the best, so a tie goes to the one met first.
        met = b"".join(
            [buckets.get(band, b"") for buckets, band in zip(self._buckets, bands, strict=True)]
        )
        if not met:
            return None
        rows = np.frombuffer(met, np.int32)
        if len(rows) > _MANY_CANDIDATES:  # close copies share many bands: score each once
            rows = rows[np.sort(np.unique(rows, return_index=True)[1])]
        # Agreeing rows counted by a matrix-vector product: exact (at most 64), and
        # much quicker than count_nonzero along an axis.
        agreeing = (self._signatures[rows] == sig).astype(np.float32) @ _ONES
        first = int(agreeing.argmax())
        if int(agreeing[first]) / len(sig) < self.threshold:
            return None
        return self._ids[rows[first]]

    def _remember(self, doc_id: str, sig: np.ndarray, bands: list[bytes]) -> None:
        if doc_id in self._rows:
            return
        row = self._free_row()
        self._signatures[row] = sig
        self._ids[row] = doc_id
        self._rows[doc_id] = row
        packed = np.int32(row).tobytes()
        for buckets, band in zip(self._buckets, bands, strict=True):
            buckets[band] = buckets.get(band, b"") + packed
        if len(self._rows) > self.capacity:
            self._forget(next(iter(self._rows)))

    def _free_row(self) -> int:
        if self._free:
            return self._free.pop()
        row = len(self._ids)
        self._ids.append("")
        if row == len(self._signatures):  # grow by doubling, up to what capacity needs
            size = max(row + 1, min(2 * row, self.capacity + 1), 64)
            grown = np.empty((size, SIGNATURE_SIZE), np.uint32)
            grown[:row] = self._signatures
            self._signatures = grown
        return row

    def _forget(self, doc_id: str) -> None:
        row = self._rows.pop(doc_id)
        for buckets, band in zip(self._buckets, self._bands(self._signatures[row]), strict=True):
            rows = np.frombuffer(buckets[band], np.int32)
            kept = rows[rows != row]
            if len(kept):
                buckets[band] = kept.tobytes()
            else:
                del buckets[band]
        self._free.append(row)

    @staticmethod
    def _bands(sig: np.ndarray) -> list[bytes]:
        raw = sig.tobytes()
        return [raw[start : start + _BAND_BYTES] for start in range(0, len(raw), _BAND_BYTES)]

    @staticmethod
    def pair(a_title: str, a_text: str, b_title: str, b_text: str) -> bool:
        """Whether two reports are copies, by the same measure as `add`."""
        a, b = signature(a_title, a_text), signature(b_title, b_text)
        return a is not None and b is not None and similar(a, b) >= NEAR_JACCARD
