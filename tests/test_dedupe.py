"""Canonical URLs and text keys: two links or copies of one article meet."""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from aggregator.dedupe import (
    TRACKING_PARAMS,
    TRACKING_PREFIXES,
    canonical_url,
    normalise_text,
    text_key,
    untracked_url,
)

SAME_ARTICLE = [
    # (one link, another link to the same article)
    ("https://www.example.com/news/kursk", "https://example.com/news/kursk"),
    ("HTTPS://Example.COM/news/kursk", "https://example.com/news/kursk"),
    ("http://example.com/news/kursk", "https://example.com/news/kursk"),
    ("https://example.com:443/news/kursk", "https://example.com/news/kursk"),
    ("http://example.com:80/news/kursk", "https://example.com/news/kursk"),
    ("https://example.com/news/kursk/", "https://example.com/news/kursk"),
    ("https://example.com/news/kursk#comments", "https://example.com/news/kursk"),
    (
        "https://example.com/news/kursk?utm_source=rss&utm_medium=feed",
        "https://example.com/news/kursk",
    ),
    ("https://example.com/news/kursk?fbclid=abc&gclid=def", "https://example.com/news/kursk"),
    ("https://example.com/a?mc_cid=1&mc_eid=2&yclid=3&ref=tw", "https://example.com/a"),
    ("https://example.com/a?b=2&a=1", "https://example.com/a?a=1&b=2"),
    ("https://example.com/a?id=7&utm_campaign=x", "https://example.com/a?id=7"),
    ("  https://example.com/a  ", "https://example.com/a"),
    ("https://user:pw@example.com/a", "https://example.com/a"),
]

DIFFERENT_ARTICLES = [
    ("https://example.com/news/kursk?id=1", "https://example.com/news/kursk?id=2"),
    ("https://example.com/news/kursk", "https://example.org/news/kursk"),
    ("https://example.com:8443/a", "https://example.com/a"),
    (
        "https://example.com/News/Kursk",
        "https://example.com/news/kursk",
    ),  # paths are case-sensitive
    ("https://news.example.com/a", "https://example.com/a"),
]


@pytest.mark.parametrize(("a", "b"), SAME_ARTICLE)
def test_links_to_one_article_have_one_canonical_url(a: str, b: str) -> None:
    assert canonical_url(a) == canonical_url(b)


@pytest.mark.parametrize(("a", "b"), DIFFERENT_ARTICLES)
def test_links_to_different_articles_stay_apart(a: str, b: str) -> None:
    assert canonical_url(a) != canonical_url(b)


def test_canonical_url_reads_as_a_url() -> None:
    url = "http://WWW.Example.com:80/news/kursk/?utm_source=x&page=2&id=9#top"
    assert canonical_url(url) == "https://example.com/news/kursk?id=9&page=2"


PUBLISHED_LINKS = [
    # (a link as an outlet's feed gives it, the link we publish)
    (
        "https://example.com/news/kursk?utm_source=rss&utm_medium=feed",
        "https://example.com/news/kursk",
    ),
    ("https://example.com/a?fbclid=1&id=7&gclid=2&mc_cid=3&yclid=4", "https://example.com/a?id=7"),
    ("https://example.com/a?UTM_Campaign=x&b=2&a=1", "https://example.com/a?b=2&a=1"),
    ("https://example.com/a?q=kursk%20region&utm_term=x", "https://example.com/a?q=kursk%20region"),
    ("https://example.com/a?id=7#utm_source=rss", "https://example.com/a?id=7"),
    # Everything else stays as the outlet wrote it: the site may need it.
    ("http://www.Example.com/News/?id=7#top", "http://www.Example.com/News/?id=7#top"),
    ("https://example.com/a?", "https://example.com/a?"),
    ("http://[::1", "http://[::1"),
]


@pytest.mark.parametrize(("link", "published"), PUBLISHED_LINKS)
def test_published_links_lose_tracking_parameters_only(link: str, published: str) -> None:
    assert untracked_url(link) == published
    assert canonical_url(untracked_url(link)) == canonical_url(link), "the same article"


@pytest.mark.parametrize("url", ["", "   "])
def test_empty_url_has_empty_key(url: str) -> None:
    assert canonical_url(url) == ""


def test_unparseable_url_is_still_a_key() -> None:
    assert canonical_url("http://example.com:notaport/a") == "http://example.com:notaport/a"


def test_reposted_copy_with_trivial_differences_has_the_same_text_key() -> None:
    original = text_key(
        "Ukrainian troops advance in Kursk region", "Fighting continues near Sudzha."
    )
    copy = text_key(
        "  UKRAINIAN troops advance — in Kursk region!", "Fighting   continues near Sudzha"
    )
    assert original == copy


def test_unicode_compatibility_forms_fold() -> None:
    # Full-width letters and a ligature, as some CMSs emit them.
    assert text_key("Ｋursk ﬁghting", "") == text_key("kursk fighting", "")


def test_cyrillic_text_keys_fold_case() -> None:
    assert text_key("ВСУ вошли в Курскую область", "") == text_key(
        "всу вошли в курскую область.", ""
    )


def test_different_text_has_a_different_key() -> None:
    assert text_key("Kursk: troops advance", "") != text_key("Kursk: troops retreat", "")


def test_title_and_text_are_not_interchangeable() -> None:
    assert text_key("Kursk", "troops advance") != text_key("Kursk troops", "advance")


def test_empty_title_and_text_have_empty_key() -> None:
    assert text_key("", "") == ""
    assert text_key("  ", "!!") == ""


def test_normalise_text_folds_punctuation_and_space() -> None:
    assert normalise_text("  Hello,\tWorld!  ") == "hello world"


BODY = (
    "Ukrainian forces launched a cross-border incursion into the Kursk region on Tuesday, "
    "attacking Russian positions near the town of Sudzha, officials said."
)


def test_a_wire_copy_under_a_new_headline_is_a_near_duplicate() -> None:
    from aggregator.dedupe import NearDuplicates

    index = NearDuplicates()
    assert index.add("wire", "Ukrainian troops cross into Kursk region", BODY) is None
    copy = BODY.replace("officials said", "Russian officials said") + " (Wire)"
    assert index.add("daily", "Kursk: Ukraine launches attack", copy) == "wire"


def test_another_report_of_the_same_event_is_not_a_near_duplicate() -> None:
    from aggregator.dedupe import NearDuplicates

    other = (
        "Moscow said its troops were pushing back Ukrainian units that had entered Kursk "
        "region, as the governor urged residents of border districts to leave."
    )
    assert not NearDuplicates.pair(
        "Ukrainian troops cross into Kursk", BODY, "Russia repels", other
    )


def test_the_near_duplicate_index_forgets_the_oldest() -> None:
    from aggregator.dedupe import NearDuplicates

    index = NearDuplicates(capacity=1)
    index.add("a", "Ukrainian troops cross into Kursk region", BODY)
    index.add("b", "Central bank cuts its key rate", "The bank lowered its rate to 5 percent " * 3)
    assert index.add("c", "Ukrainian troops cross into Kursk region", BODY) is None


def _near_by_definition(
    docs: list[tuple[str, str, str]],
    capacity: int,
    times: list[float] | None = None,
    horizon: float = math.inf,
) -> list[str | None]:
    """What `NearDuplicates.add` answers, by its definition: of the latest `capacity`
    reports sharing a band, band by band and oldest first, the first that agrees most
    (of those at most `horizon` seconds older, with each report's time in `times`)."""
    from aggregator.dedupe import BANDS, NEAR_JACCARD, signature

    kept: list[tuple[str, np.ndarray, float]] = []
    answers: list[str | None] = []
    for n, (doc_id, title, text) in enumerate(docs):
        at = 0.0 if times is None else times[n]
        sig = signature(title, text)
        if sig is None:
            answers.append(None)
            continue
        bands = sig.reshape(BANDS, -1)
        met = [
            (other_id, other)
            for band in range(BANDS)
            for other_id, other, other_at in kept
            if np.array_equal(other.reshape(BANDS, -1)[band], bands[band])
            and other_at >= at - horizon
        ]
        scores = [int(np.count_nonzero(other == sig)) for _, other in met]
        best = max(range(len(met)), key=lambda n: (scores[n], -n), default=None)
        fits = best is not None and scores[best] / len(sig) >= NEAR_JACCARD
        answers.append(met[best][0] if best is not None and fits else None)
        if doc_id not in {k for k, _, _ in kept}:
            kept = [*kept, (doc_id, sig, at)][-capacity:]
    return answers


def _edited_reports() -> list[tuple[str, str, str]]:
    """160 reports, many of them light edits of one another."""
    words = BODY.split()
    docs = []
    for n in range(160):
        edited = list(words)
        edited[n % len(words)] = f"edit{n % 7}"  # seven versions of each word's edit
        if n % 5 == 0:
            edited = edited[::-1]  # another text altogether
        docs.append((str(n), f"Report {n % 3}", " ".join(edited)))
    return docs


@pytest.mark.parametrize(
    ("fresh_buckets", "capacity"), [(0, 12), (40, 12), (16_384, 12), (200, 2), (16_384, 1)]
)
def test_the_near_duplicate_index_answers_as_its_definition(
    fresh_buckets: int, capacity: int, monkeypatch: pytest.MonkeyPatch
) -> None:
    """However often its latest buckets are merged into the sorted ones, and as reports
    are forgotten and their rows reused."""
    from aggregator import dedupe

    monkeypatch.setattr(dedupe, "FRESH_BUCKETS", fresh_buckets)
    docs = _edited_reports()
    index = dedupe.NearDuplicates(capacity=capacity)
    answers = [index.add(*doc) for doc in docs]
    assert answers == _near_by_definition(docs, capacity)
    assert sum(a is not None for a in answers) > 40


@pytest.mark.parametrize(
    ("fresh_buckets", "capacity", "horizon"),
    [
        (0, 12, math.inf),
        (40, 12, 30.0),
        (16_384, 200, math.inf),
        (16_384, 200, 30.0),
        (200, 2, 30.0),
    ],
)
def test_bands_that_only_share_their_hash_do_not_make_candidates(
    fresh_buckets: int, capacity: int, horizon: float, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Buckets are found by a hash of each band: with one that collides all the time
    (three values in all), the answers are still the definition's, within a horizon too."""
    from aggregator import dedupe

    real_hashes = dedupe._band_hashes
    monkeypatch.setattr(dedupe, "_band_hashes", lambda sig: real_hashes(sig) % np.uint64(3))
    monkeypatch.setattr(dedupe, "FRESH_BUCKETS", fresh_buckets)
    docs = _edited_reports()
    times = [10.0 * (n // 2) for n in range(len(docs))]
    index = dedupe.NearDuplicates(capacity=capacity, horizon=horizon)
    answers = [index.add(*doc, at) for doc, at in zip(docs, times, strict=True)]
    assert answers == _near_by_definition(docs, capacity, times, horizon)
    assert sum(a is not None for a in answers) > 40


def test_a_copy_of_a_forgotten_report_before_the_next_merge_is_not_a_near_duplicate(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    from aggregator import dedupe

    monkeypatch.setattr(dedupe, "FRESH_BUCKETS", 20)  # merged after the second report
    index = dedupe.NearDuplicates(capacity=2)
    index.add("a", "Ukrainian troops cross into Kursk region", BODY)
    index.add("b", "Central bank cuts its key rate", "The bank lowered its rate to 5 percent " * 3)
    index.add("c", "Storm floods the coast", "Rain and wind flooded the coastal towns overnight.")
    assert index.add("d", "Ukrainian troops cross into Kursk region", BODY) is None


# --- the fast paths give what the definitions give ---------------------------------


def _signature_by_definition(title: str, text: str) -> list[int] | None:
    """MinHash over the set of 5-character shingles, one CRC-32 each, as documented."""
    import zlib

    from aggregator import dedupe

    folded = dedupe.shingle_text(title, text)
    if len(folded) < dedupe.MIN_CHARS:
        return None
    shingles = {folded[i : i + dedupe.SHINGLE_CHARS] for i in range(len(folded) - 4)}
    hashes = [zlib.crc32(s.encode()) for s in shingles]
    # One odd 32-bit multiplier per row, products taken modulo 2**32.
    return [min(int(a) * h % 2**32 for h in hashes) for a in dedupe._MULTIPLIERS]


_TEXT = st.text(
    alphabet=st.sampled_from("aZ9 _.,-\t—éЖ中😀ﬁ") | st.characters(blacklist_categories=["Cs"]),
    max_size=120,
)


@settings(max_examples=300, deadline=None)
@given(title=_TEXT, text=_TEXT)
def test_signatures_are_minhash_of_the_shingle_crcs(title: str, text: str) -> None:
    from aggregator.dedupe import signature

    sig = signature(title, text)
    expected = _signature_by_definition(title, text)
    assert (None if sig is None else sig.tolist()) == expected


@settings(max_examples=300, deadline=None)
@given(st.text(alphabet=st.characters(max_codepoint=127), max_size=80))
def test_ascii_text_normalises_as_unicode_text_does(text: str) -> None:
    import re
    import unicodedata

    folded = unicodedata.normalize("NFKC", text).casefold()
    assert normalise_text(text) == " ".join(re.sub(r"[\W_]+", " ", folded).split())


def test_a_tie_goes_to_the_earliest_copy() -> None:
    from aggregator.dedupe import NearDuplicates

    index = NearDuplicates()
    index.add("first", "Ukrainian troops cross into Kursk region", BODY)
    index.add("second", "Ukrainian troops cross into Kursk region", BODY)
    assert index.add("third", "Ukrainian troops cross into Kursk region", BODY) == "first"


def test_a_forgotten_report_leaves_no_trace_in_the_buckets() -> None:
    from aggregator.dedupe import NearDuplicates

    index = NearDuplicates(capacity=2)
    for n in range(5):
        index.add(f"copy{n}", "Ukrainian troops cross into Kursk region", BODY)
    assert index.add("again", "Ukrainian troops cross into Kursk region", BODY) == "copy3"


def test_the_readme_lists_every_tracking_parameter() -> None:
    readme = (Path(__file__).parent.parent / "README.md").read_text()
    names = [*TRACKING_PARAMS, *(f"{prefix}*" for prefix in TRACKING_PREFIXES)]
    assert [name for name in names if f"`{name}`" not in readme] == []
