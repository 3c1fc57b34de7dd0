"""Background document frequencies shipped with the package, so IDF means something at once.

A fresh clusterer has seen a handful of reports: its own document frequencies
would call "Kursk" and "region" equally rare, and two early reports that share
one place name would look like one event. The shipped table gives each hashed
feature the share of news-sized documents expected to contain it, estimated
from general word frequencies of English, Russian and Ukrainian; online counts
take over as the stream grows (see `features.Featuriser.idf`).

`python -m aggregator.cluster.background` rebuilds the file; it needs the
`wordfreq` package, which the clusterer itself never imports.
"""

from __future__ import annotations

import sys
from collections import defaultdict
from functools import lru_cache
from pathlib import Path

import numpy as np

PATH = Path(__file__).with_name("background.npz")
LANGUAGES = ("en", "ru", "uk")
WORDS_PER_LANGUAGE = 60_000
DOC_TOKENS = 40.0  # about a headline and lead: a word of frequency f is in ~40 f of them
KEEP_ABOVE = 2e-4  # rarer features are left out: the table would grow, the IDF barely moves


@lru_cache(maxsize=1)
def table() -> tuple[np.ndarray, np.ndarray]:
    """(sorted hashed feature keys, share of documents containing each), or empty arrays."""
    if not PATH.exists():
        return np.zeros(0, dtype=np.uint32), np.zeros(0, dtype=np.float32)
    with np.load(PATH, allow_pickle=False) as data:
        return data["keys"].astype(np.uint32), data["share"].astype(np.float32)


def shares(hash_bits: int) -> np.ndarray:
    """A dense array over the hash space: expected document share of each feature."""
    keys, share = table()
    dense = np.zeros(1 << hash_bits, dtype=np.float32)
    if len(keys) and int(keys.max()) < len(dense):
        dense[keys] = share
    return dense


def build(path: Path = PATH) -> int:
    """Write the table from wordfreq's lists; returns how many features it keeps."""
    import wordfreq  # build-time only

    from aggregator.cluster.features import FeatureWeights, Featuriser, tokens

    featuriser = Featuriser(FeatureWeights(), background=False)
    share: defaultdict[int, float] = defaultdict(float)
    for lang in LANGUAGES:
        per_lang: defaultdict[int, float] = defaultdict(float)
        for word in wordfreq.top_n_list(lang, WORDS_PER_LANGUAGE):
            freq = wordfreq.word_frequency(word, lang)
            for token in tokens(word):
                for key in featuriser.token_features(token):
                    per_lang[key] += freq
        # A feature common in any one language is common: take the largest share.
        for key, freq in per_lang.items():
            share[key] = max(share[key], min(1.0, DOC_TOKENS * freq))
    kept = sorted(k for k, s in share.items() if s >= KEEP_ABOVE)
    np.savez_compressed(
        path,
        keys=np.asarray(kept, dtype=np.uint32),
        share=np.asarray([share[k] for k in kept], dtype=np.float16),
    )
    return len(kept)


if __name__ == "__main__":
    print(f"kept {build(Path(sys.argv[1]) if len(sys.argv) > 1 else PATH)} features")
