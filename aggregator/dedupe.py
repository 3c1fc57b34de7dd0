"""Identity keys for reports: a canonical URL, a normalised-text hash, MinHash signatures.

The cluster stage (`aggregator.cluster.StoryAssigner`) folds a report whose key
matches an earlier one, or whose text nearly copies an earlier one (syndicated
wire copy, a changed headline, light edits), into that report as a duplicate
instead of judging it again.
"""

from __future__ import annotations

import hashlib
import math
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
# Latest buckets kept in a dict before they are merged into the sorted arrays: a
# merge sorts them all (a few tens of ms at capacity), so not too often.
FRESH_BUCKETS = 16_384
_NO_ROWS = np.zeros(0, np.int32)
_NO_BANDS = np.zeros(0, np.intp)
# Odd multipliers of the band hash (64 bits, wrapping), and one per band number.
_HASH_MULTIPLIERS = (_RNG.integers(0, 2**63, 2, dtype=np.uint64) * 2 + 1).astype(np.uint64)
_BAND_SALTS = _RNG.integers(0, 2**63, BANDS, dtype=np.uint64)


def _crc32_by_position() -> tuple[np.ndarray, ...]:
    """Tables that give the CRC-32 of any SHINGLE_CHARS bytes without a Python loop.

    For messages of one length CRC-32 is affine: the CRC of the zero message,
    XOR one table value per byte, chosen by the byte and its position. The zero
    message's CRC is folded into the first table.
    """
    zero = zlib.crc32(bytes(SHINGLE_CHARS))
    tables = np.empty((SHINGLE_CHARS, 256), np.uint32)
    for position in range(SHINGLE_CHARS):
        for value in range(256):
            message = bytearray(SHINGLE_CHARS)
            message[position] = value
            tables[position, value] = zlib.crc32(message) ^ zero
    tables[0] ^= zero
    return tuple(tables)


_CRC_TABLES = _crc32_by_position()


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
    # Byte values as indices once (`take` is quicker than indexing with uint8).
    data = np.frombuffer(folded.encode("ascii"), np.uint8).astype(np.intp)
    crc = _CRC_TABLES[0].take(data[:count])
    for position in range(1, SHINGLE_CHARS):
        crc ^= _CRC_TABLES[position].take(data[position : position + count])
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


def _band_hashes(sig: np.ndarray) -> np.ndarray:
    """A 64-bit hash (uint64) of each band of a signature, with its band number in it."""
    halves = np.ascontiguousarray(sig).view(np.uint64).reshape(BANDS, 2)
    mixed = (halves[:, 0] * _HASH_MULTIPLIERS[0]) ^ (halves[:, 1] * _HASH_MULTIPLIERS[1])
    return mixed ^ _BAND_SALTS


def similar(a: np.ndarray, b: np.ndarray) -> float:
    """Estimated Jaccard overlap of two signatures' shingle sets."""
    return float(np.count_nonzero(a == b)) / len(a)


class NearDuplicates:
    """The latest `capacity` reports' signatures, looked up by LSH bands.

    `add` answers, for each new report, which earlier report it copies (the
    first one seen), then remembers it; the oldest fall out, so memory and the
    cost of a look-up stay bounded. Signatures are rows of one array, so a report
    is compared with all its candidates at once.

    A bucket (the rows sharing one band's value, oldest first) is found by a
    64-bit hash of the band and its number: most are in two sorted arrays (hash,
    row), the latest in a small dict of packed rows that is merged into them now
    and then. A row of a forgotten report is -1 there until the next merge. This
    is a tenth of the bytes of a dict per band, and exact: a candidate whose band
    differs (a hash collision) is left out.
    """

    # What a snapshot of the clusterer saves of it, and what it rebuilds
    # (see cluster/snapshot.py).
    SNAPSHOT: ClassVar = (
        "_rows _ids _free _signatures _times _hashes _hash_rows _fresh _forgotten",
        "capacity threshold horizon",
    )

    def __init__(
        self, capacity: int = 20_000, threshold: float = NEAR_JACCARD, horizon: float = math.inf
    ) -> None:
        self.capacity = capacity
        self.threshold = threshold
        self.horizon = horizon  # seconds after a report in which a later one can copy it
        self._rows: dict[str, int] = {}  # doc id -> its row in _signatures, oldest first
        self._ids: list[str] = []  # row -> doc id
        self._free: list[int] = []  # rows of forgotten reports
        self._signatures = np.empty((0, SIGNATURE_SIZE), np.uint32)
        self._times = np.empty(0, np.float64)  # row -> the report's POSIX time
        # Buckets: band hashes ascending, each with its row (int32, -1: forgotten),
        # a hash's rows oldest first; then the latest, hash -> rows packed in bytes.
        self._hashes = np.empty(0, np.uint64)
        self._hash_rows = np.empty(0, np.int32)
        self._fresh: dict[int, bytes] = {}
        self._forgotten = 0  # rows of `_hash_rows` that are -1

    def save(self, out: Writer) -> None:
        """Rows, ids and buckets exactly as they are (their order decides ties)."""
        out.state_of(self)
        # oldest first: the order they are forgotten in
        out.value("row_ids", list(self._rows))
        out.array("rows", np.fromiter(self._rows.values(), np.int64, len(self._rows)), np.int64)
        out.value("ids", self._ids)
        out.array("free", np.array(self._free, np.int64), np.int64)
        out.array("signatures", self._signatures, np.uint32)
        out.array("times", self._times, np.float64)
        out.array("hashes", self._hashes, np.uint64)
        out.array("hash_rows", self._hash_rows, np.int32)
        fresh = self._fresh
        out.array("fresh.hashes", np.fromiter(fresh, np.uint64, len(fresh)), np.uint64)
        out.ragged("fresh.rows", [np.frombuffer(v, np.int32) for v in fresh.values()], np.int32)

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
        times = source.array("times", np.float64)
        if len(times) != len(signatures):
            raise SnapshotError("near-duplicate times in the snapshot are malformed")
        hashes = source.array("hashes", np.uint64)
        hash_rows = source.array("hash_rows", np.int32)
        fresh_hashes = source.array("fresh.hashes", np.uint64).tolist()
        fresh_rows = source.ragged("fresh.rows", np.int32)
        if len(hashes) != len(hash_rows) or len(fresh_hashes) != len(fresh_rows):
            raise SnapshotError("near-duplicate buckets in the snapshot are malformed")
        if np.any(hashes[1:] < hashes[:-1]) or np.any(hash_rows >= len(ids)):
            raise SnapshotError("near-duplicate buckets in the snapshot are malformed")
        self._rows, self._ids = rows, ids
        self._free = source.array("free", np.int64).tolist()
        self._signatures, self._times = signatures.copy(), times.copy()
        self._hashes, self._hash_rows = hashes.copy(), hash_rows.copy()
        self._fresh = {h: r.tobytes() for h, r in zip(fresh_hashes, fresh_rows, strict=True)}
        self._forgotten = int(np.count_nonzero(hash_rows < 0))

    def add(self, doc_id: str, title: str, text: str, at: float = 0.0) -> str | None:
        """The earlier report this one (published at POSIX time `at`) copies, if any
        within the horizon; then it is remembered."""
        sig = signature(title, text)
        if sig is None:
            return None
        hashes = _band_hashes(sig)
        first = self._match(sig, hashes, at)
        self._remember(doc_id, sig, hashes, at)
        return first

    def _match(self, sig: np.ndarray, hashes: np.ndarray, at: float) -> str | None:
        # Candidates in the order they are met, by band, then oldest first; argmax
        # picks the first of the best, so a tie goes to the one met first.
        met, met_bands = self._bucket_rows(hashes)
        if not len(met):
            return None
        rows, bands = met, met_bands
        if len(rows) > _MANY_CANDIDATES:  # close copies share many bands: score each once
            first_seen = np.sort(np.unique(rows, return_index=True)[1])
            rows, bands = rows[first_seen], bands[first_seen]
        agree, scores = self._scores(sig, rows, at)
        first = int(scores.argmax())
        if scores[first] < self.threshold * len(sig):
            return None
        # A bucket is found by a hash of its band, so a candidate's band may differ
        # from the report's (two bands, one hash). Only the best candidate's band
        # needs comparing: when it is the report's own, the candidates left out by
        # comparing all could not have come first; when not, every candidate met is
        # compared, and those whose band differs are struck out.
        if agree[first].reshape(BANDS, -1)[bands[first]].all():
            return self._ids[rows[first]]
        agree, scores = self._scores(sig, met, at)
        by_band = agree.reshape(len(met), BANDS, -1)
        scores[~by_band[np.arange(len(met)), met_bands].all(axis=1)] = -1
        first = int(scores.argmax())
        return self._ids[met[first]] if scores[first] >= self.threshold * len(sig) else None

    def _scores(self, sig: np.ndarray, rows: np.ndarray, at: float) -> tuple[np.ndarray, ...]:
        """Which signature rows agree with `sig`, and how many agree per candidate row.

        Counted by a matrix-vector product: exact (at most 64), and much quicker than
        count_nonzero along an axis. A forgotten row (-1, only there while `_forgotten`
        counts some) reads the last signature; its score, and that of a report beyond
        the horizon, is struck out (-1).
        """
        agree = self._signatures[rows] == sig
        scores = agree.astype(np.float32) @ _ONES
        if self._forgotten:
            scores[rows < 0] = -1
        if self.horizon < math.inf:
            scores[self._times[rows] < at - self.horizon] = -1
        return agree, scores

    def _bucket_rows(self, hashes: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """The rows in every bucket of the band hashes, band by band, each bucket oldest
        first, with the band each was met in; a forgotten row is -1, and a row whose band
        only shares its hash with the report's is among them."""
        starts = np.searchsorted(self._hashes, hashes, "left").tolist()
        ends = np.searchsorted(self._hashes, hashes, "right").tolist()
        hash_rows, fresh = self._hash_rows, self._fresh
        # Each bucket's rows as bytes, joined once: a numpy array per bucket cost more.
        parts: list[bytes] = []
        bands: list[int] = []
        counts: list[int] = []
        for band, key in enumerate(hashes.tolist()):
            start, end = starts[band], ends[band]
            if start < end:
                parts.append(hash_rows[start:end].tobytes())
                bands.append(band)
                counts.append(end - start)
            newer = fresh.get(key)
            if newer is not None:
                parts.append(newer)
                bands.append(band)
                counts.append(len(newer) // 4)
        if not parts:
            return _NO_ROWS, _NO_BANDS
        rows = np.frombuffer(b"".join(parts), np.int32)
        return rows, np.repeat(np.array(bands, np.intp), counts)

    def _remember(self, doc_id: str, sig: np.ndarray, hashes: np.ndarray, at: float) -> None:
        if doc_id in self._rows:
            return
        row = self._free_row()
        self._signatures[row] = sig
        self._times[row] = at
        self._ids[row] = doc_id
        self._rows[doc_id] = row
        packed = np.int32(row).tobytes()
        fresh = self._fresh
        for key in hashes.tolist():
            fresh[key] = fresh.get(key, b"") + packed
        if len(self._rows) > self.capacity:
            self._forget(next(iter(self._rows)))
        if len(fresh) > FRESH_BUCKETS:
            self._merge_fresh()

    def _merge_fresh(self) -> None:
        """Move the latest buckets into the sorted arrays, dropping forgotten rows."""
        fresh = self._fresh
        sizes = [len(packed) // 4 for packed in fresh.values()]
        kept = self._hash_rows >= 0
        hashes = np.concatenate(
            (self._hashes[kept], np.repeat(np.fromiter(fresh, np.uint64, len(fresh)), sizes))
        )
        # The buckets' rows joined as bytes, then read at once: an array each cost more.
        fresh_rows = np.frombuffer(b"".join(fresh.values()), np.int32)
        all_rows = np.concatenate((self._hash_rows[kept], fresh_rows))
        # Stable: a hash's older rows (already merged, then in the order added) stay first.
        order = np.argsort(hashes, kind="stable")
        self._hashes, self._hash_rows = hashes[order], all_rows[order]
        self._fresh = {}
        self._forgotten = 0

    def _free_row(self) -> int:
        if self._free:
            return self._free.pop()
        row = len(self._ids)
        self._ids.append("")
        if row == len(self._signatures):  # grow by doubling, up to what capacity needs
            size = max(row + 1, min(2 * row, self.capacity + 1), 64)
            grown = np.empty((size, SIGNATURE_SIZE), np.uint32)
            grown[:row] = self._signatures
            times = np.empty(size, np.float64)
            times[:row] = self._times
            self._signatures, self._times = grown, times
        return row

    def _forget(self, doc_id: str) -> None:
        row = self._rows.pop(doc_id)
        hashes = _band_hashes(self._signatures[row])
        starts = np.searchsorted(self._hashes, hashes, "left")
        lengths = np.searchsorted(self._hashes, hashes, "right") - starts
        if lengths.any():
            # Every bucket's slots at once: a Python loop over the bands cost more.
            ends = np.cumsum(lengths)
            slots = np.arange(int(ends[-1])) + np.repeat(starts - (ends - lengths), lengths)
            at = slots[self._hash_rows[slots] == row]
            self._hash_rows[at] = -1
            self._forgotten += len(at)
        for key in hashes.tolist():
            newer = self._fresh.get(key)
            if newer is not None:
                rows = np.frombuffer(newer, np.int32)
                kept = rows[rows != row]
                if len(kept):
                    self._fresh[key] = kept.tobytes()
                else:
                    del self._fresh[key]
        self._free.append(row)

    @staticmethod
    def pair(a_title: str, a_text: str, b_title: str, b_text: str) -> bool:
        """Whether two reports are copies, by the same measure as `add`."""
        a, b = signature(a_title, a_text), signature(b_title, b_text)
        return a is not None and b is not None and similar(a, b) >= NEAR_JACCARD
