"""Identity keys for reports: a canonical URL and a normalised-text hash.

The cluster stage (`aggregator.cluster.StoryAssigner`) folds a report whose key
matches an earlier one into that report, as a duplicate, instead of judging it again.
"""

from __future__ import annotations

import hashlib
import re
import unicodedata
from urllib.parse import parse_qsl, urlencode, urlsplit, urlunsplit

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
