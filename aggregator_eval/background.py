"""Build the clusterer's background document frequencies (`python -m aggregator_eval.background`).

Writes `aggregator/cluster/background.npz`, which `aggregator.cluster.background`
loads: each hashed feature's expected share of news-sized documents, estimated
from wordfreq's general word frequencies of English, Russian and Ukrainian; and
the words that are no names: the commonest words of thirty more languages
(their articles and pronouns, which start many a headline with a capital, and
what their news names every day). It needs the `wordfreq` package, which the
clusterer itself never imports.
"""

from __future__ import annotations

import sys
from collections import defaultdict
from pathlib import Path

import numpy as np

from aggregator.cluster.background import PATH
from aggregator.cluster.features import FeatureWeights, Featuriser, tokens, word_key

LANGUAGES = ("en", "ru", "uk")
# Languages whose commonest words are no names: wordfreq's lists that need no
# tokeniser of their own (Chinese, Japanese and Korean do), beside LANGUAGES,
# whose own common words the shares already rule out.
# fmt: off
NAME_LANGUAGES = (
    "ar", "bg", "ca", "cs", "da", "de", "el", "es", "fa", "fi", "fr", "he", "hu", "id", "it",
    "lt", "lv", "mk", "ms", "nb", "nl", "pl", "pt", "ro", "sh", "sk", "sl", "sv", "tr", "vi",
)
# fmt: on
COMMONEST = 500  # a language's commonest words: its function words and its daily news
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
    not_names = sorted(
        {
            word_key(token)
            for lang in NAME_LANGUAGES
            for word in wordfreq.top_n_list(lang, COMMONEST)
            for token in tokens(word)
        }
    )
    np.savez_compressed(
        path,
        keys=np.asarray(kept, dtype=np.uint32),
        share=np.asarray([share[k] for k in kept], dtype=np.float16),
        not_names=np.asarray(not_names, dtype=np.uint32),
    )
    return len(kept)


if __name__ == "__main__":
    print(f"kept {build(Path(sys.argv[1]) if len(sys.argv) > 1 else PATH)} features")
