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
from urllib.parse import parse_qsl, urlencode, urlsplit, urlunsplit

import numpy as np

# Query parameters that say how a reader arrived, never which article it is.
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


def _clean_query(query: str) -> str:
    pairs = [
        (key, value)
        for key, value in parse_qsl(query, keep_blank_values=True)
        if not _is_tracking(key)
    ]
    return urlencode(sorted(pairs))


def _is_tracking(key: str) -> bool:
    key = key.lower()
    return key in TRACKING_PARAMS or key.startswith(TRACKING_PREFIXES)


def normalise_text(text: str) -> str:
    """NFKC, casefolded, with punctuation and whitespace runs folded to one space."""
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
_MASK32 = np.uint64(0xFFFFFFFF)
_RNG = np.random.default_rng(20240806)  # fixed: signatures must agree across runs
_MULTIPLIERS = _RNG.integers(1, 2**63, SIGNATURE_SIZE, dtype=np.uint64) | np.uint64(1)
_OFFSETS = _RNG.integers(0, 2**63, SIGNATURE_SIZE, dtype=np.uint64)


def shingle_text(title: str, text: str) -> str:
    return normalise_text(f"{title} {text[:BODY_CHARS]}")


def signature(title: str, text: str) -> np.ndarray | None:
    """MinHash signature (uint32) of a report's character shingles; None if too short."""
    folded = shingle_text(title, text)
    if len(folded) < MIN_CHARS:
        return None
    shingles = {folded[i : i + SHINGLE_CHARS] for i in range(len(folded) - SHINGLE_CHARS + 1)}
    hashes = np.fromiter((zlib.crc32(s.encode()) for s in shingles), np.uint64, len(shingles))
    # Multiply-shift hashing, one odd multiplier per row; uint64 wraps by design.
    mixed = (hashes[:, None] * _MULTIPLIERS[None, :] + _OFFSETS[None, :]) >> np.uint64(32)
    return (mixed & _MASK32).min(axis=0).astype(np.uint32)


def similar(a: np.ndarray, b: np.ndarray) -> float:
    """Estimated Jaccard overlap of two signatures' shingle sets."""
    return float(np.count_nonzero(a == b)) / len(a)


class NearDuplicates:
    """The latest `capacity` reports' signatures, looked up by LSH bands.

    `add` answers, for each new report, which earlier report it copies (the
    first one seen), then remembers it; the oldest fall out, so memory and the
    cost of a look-up stay bounded.
    """

    def __init__(self, capacity: int = 20_000, threshold: float = NEAR_JACCARD) -> None:
        self.capacity = capacity
        self.threshold = threshold
        self._signatures: dict[str, np.ndarray] = {}  # doc id -> signature, oldest first
        self._buckets: dict[bytes, list[str]] = {}

    def add(self, doc_id: str, title: str, text: str) -> str | None:
        sig = signature(title, text)
        if sig is None:
            return None
        first = self._match(sig)
        self._remember(doc_id, sig)
        return first

    def _match(self, sig: np.ndarray) -> str | None:
        best: tuple[float, str] | None = None
        seen: set[str] = set()
        for band in self._bands(sig):
            for other in self._buckets.get(band, ()):
                if other in seen:
                    continue
                seen.add(other)
                score = similar(sig, self._signatures[other])
                if score >= self.threshold and (best is None or score > best[0]):
                    best = (score, other)
        return None if best is None else best[1]

    def _remember(self, doc_id: str, sig: np.ndarray) -> None:
        if doc_id in self._signatures:
            return
        self._signatures[doc_id] = sig
        for band in self._bands(sig):
            self._buckets.setdefault(band, []).append(doc_id)
        if len(self._signatures) > self.capacity:
            old_id = next(iter(self._signatures))
            old = self._signatures.pop(old_id)
            for band in self._bands(old):
                bucket = self._buckets[band]
                bucket.remove(old_id)
                if not bucket:
                    del self._buckets[band]

    @staticmethod
    def _bands(sig: np.ndarray) -> list[bytes]:
        rows = len(sig) // BANDS
        return [bytes([i]) + sig[i * rows : (i + 1) * rows].tobytes() for i in range(BANDS)]

    @staticmethod
    def pair(a_title: str, a_text: str, b_title: str, b_text: str) -> bool:
        """Whether two reports are copies, by the same measure as `add`."""
        a, b = signature(a_title, a_text), signature(b_title, b_text)
        return a is not None and b is not None and similar(a, b) >= NEAR_JACCARD
