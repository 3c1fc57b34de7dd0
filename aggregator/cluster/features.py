"""Turn a report into a sparse TF-IDF vector that Cyrillic and Latin spellings share.

Text is transliterated with Unidecode, so "Курськ" and "Kursk" meet; features are
truncated word stems (a crude stemmer that serves English, Russian and Ukrainian
alike) and in-word character n-grams, hashed into a fixed space so that the
online document frequencies stay bounded however long the service runs.
"""

from __future__ import annotations

import math
import re
import unicodedata
import zlib
from collections import defaultdict
from collections.abc import Iterable
from dataclasses import dataclass

import numpy as np
from unidecode import unidecode

from aggregator.types import ClusterDoc

Vector = dict[int, float]
Counts = dict[int, float]  # feature -> weighted term frequency

HASH_BITS = 20  # 1M buckets: 4 MB of counts, collisions rare at news vocabulary sizes
_HASH_MASK = (1 << HASH_BITS) - 1
_TOKEN = re.compile(r"[a-z0-9]+")
_APOSTROPHES = re.compile(r"['`\u2019]")  # Unidecode writes the Ukrainian soft sign as '

# Function words of English and (transliterated) Russian and Ukrainian: they say
# nothing about which event a report is about.
_STOPWORDS = """
    a an and are as at be been but by can could did do does for from had has have he her his
    how i if in into is it its may might more most new no not now of on or our over says
    said say she so than that the their them then there these they this those to up us was
    we were what when where which who why will with would you your after about all also
    just out one two get gets got back first last near amid against across before under
    while during since still very
    v vo na i s so o ob po za k ko iz ot do ne chto kak eto dlia pri u uzhe zhe bylo byl byla
    byli budet ego ee ikh on ona oni my vy ili a no to tak tem chem posle pered nad pod mezhdu
    ta z zi vid shcho iak tse pro ale vzhe bude iogo ii ikhnii vin vona voni mi vi abo
"""
STOPWORDS = frozenset(_STOPWORDS.split())


@dataclass(frozen=True)
class FeatureWeights:
    """How a report's words become features; fixed for the life of a clusterer."""

    title_weight: float = 2.0  # a headline word counts as this many body words
    stem_length: int = 6  # words are cut to this many letters before matching
    ngram_sizes: tuple[int, ...] = (3, 4, 5)  # in-word character n-grams; () turns them off
    ngram_share: float = 0.5  # share of the cosine that comes from n-grams
    body_chars: int = 1200  # the lead carries the event; later paragraphs drift
    url_words: bool = True  # use the URL slug's words when the body is empty


def tokens(text: str) -> list[str]:
    """Transliterated, lower-cased word tokens without function words."""
    latin = unidecode(unicodedata.normalize("NFKC", text)).lower()
    latin = _APOSTROPHES.sub("", latin)
    return [t for t in _TOKEN.findall(latin) if len(t) > 1 and t not in STOPWORDS]


def slug_text(url: str) -> str:
    """The words of a URL's path, which often repeat or extend the headline."""
    path = url.split("?", 1)[0].split("#", 1)[0]
    path = path.split("://", 1)[-1].partition("/")[2]
    words = re.sub(r"[^A-Za-z\u0400-\u04ff]+", " ", path).split()
    # Slug noise: file extensions and ids; real slugs have several words.
    words = [w for w in words if w.lower() not in {"html", "htm", "php", "aspx", "story"}]
    return " ".join(words) if len(words) >= 3 else ""


def _hash(feature: str) -> int:
    return zlib.crc32(feature.encode()) & _HASH_MASK


class Featuriser:
    """Counts features of reports and keeps their online document frequencies."""

    def __init__(self, weights: FeatureWeights) -> None:
        self.weights = weights
        self._df = np.zeros(1 << HASH_BITS, dtype=np.int32)
        self._docs = 0

    def counts(self, doc: ClusterDoc) -> tuple[Counts, Counts]:
        """Weighted term counts of a report: (word stems, character n-grams)."""
        w = self.weights
        body = doc.text[: w.body_chars]
        if not body.strip() and w.url_words:
            body = slug_text(doc.url)
        words: defaultdict[int, float] = defaultdict(float)
        grams: defaultdict[int, float] = defaultdict(float)
        for text, weight in ((doc.title, w.title_weight), (body, 1.0)):
            for token in tokens(text):
                words[_hash("w" + token[: w.stem_length])] += weight
                for gram in self._ngrams(token):
                    grams[_hash(gram)] += weight
        return words, grams

    def _ngrams(self, token: str) -> Iterable[str]:
        padded = f" {token} "
        for n in self.weights.ngram_sizes:
            for i in range(len(padded) - n + 1):
                yield padded[i : i + n]

    def learn(self, words: Counts, grams: Counts) -> None:
        """Count one more report in the document frequencies."""
        self._docs += 1
        for key in (*words, *grams):
            self._df[key] += 1

    def vector(self, words: Counts, grams: Counts) -> Vector:
        """Sublinear TF times IDF, each block L2-normalised and scaled by its share.

        The dot product of two such vectors is the share-weighted mix of the word
        cosine and the n-gram cosine.
        """
        share = self.weights.ngram_share if grams else 0.0
        vec = self._block(words, math.sqrt(1.0 - share))
        if share:
            for key, value in self._block(grams, math.sqrt(share)).items():
                vec[key] = vec.get(key, 0.0) + value  # a hash collision adds, never hides
        return vec

    def idf(self, key: int) -> float:
        return math.log((1.0 + self._docs) / (1.0 + float(self._df[key]))) + 1.0

    def _block(self, counts: Counts, scale: float) -> Vector:
        raw = {key: _sublinear(tf) * self.idf(key) for key, tf in counts.items()}
        norm = math.sqrt(sum(v * v for v in raw.values()))
        if norm == 0.0:
            return {}
        factor = scale / norm
        return {key: v * factor for key, v in raw.items()}


def _sublinear(tf: float) -> float:
    # A word said five times is not five times the evidence of one said once.
    return 1.0 + math.log(tf) if tf >= 1.0 else tf
