"""Build the clusterer's background document frequencies (`python -m aggregator_eval.background`).

Writes `aggregator/cluster/background.npz`, which `aggregator.cluster.background`
loads: each hashed feature's expected share of news-sized documents, estimated
from wordfreq's general word frequencies of English, Russian and Ukrainian. It
needs the `wordfreq` package, which the clusterer itself never imports.
"""

from __future__ import annotations

import sys
from collections import defaultdict
from pathlib import Path

import numpy as np

from aggregator.cluster.background import PATH
from aggregator.cluster.features import FeatureWeights, Featuriser, tokens

LANGUAGES = ("en", "ru", "uk")
WORDS_PER_LANGUAGE = 60_000
DOC_TOKENS = 40.0  # about a headline and lead: a word of frequency f is in ~40 f of them
KEEP_ABOVE = 2e-4  # rarer features are left out: the table would grow, the IDF barely moves


def build(path: Path = PATH) -> int:
    """Write the table from wordfreq's lists; returns how many features it keeps."""
    import wordfreq  # build-time only, and not a dependency of the package

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
