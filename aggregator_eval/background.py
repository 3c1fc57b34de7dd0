"""Build the clusterer's background document frequencies (`python -m aggregator_eval.background`).

Writes `aggregator/cluster/background.npz`, which `aggregator.cluster.background`
loads: each hashed feature's expected share of news-sized documents, estimated
from wordfreq's general word frequencies of English, Russian and Ukrainian; and
the words that are no names: the commonest words of thirty more languages
(their articles and pronouns, which start many a headline with a capital, and
what their news names every day), and the function words of each of those
languages; and, for German, which writes every noun with a capital, the words
of its reports that are common nouns. It needs the `wordfreq` package, which the
clusterer itself never imports.
"""

from __future__ import annotations

import sys
from collections import defaultdict
from pathlib import Path
from typing import Any

import numpy as np

from aggregator.cluster.background import PATH
from aggregator.cluster.features import FeatureWeights, Featuriser, tokens, word_key

LANGUAGES = ("en", "ru", "uk")
# Languages whose commonest words are no names, beside LANGUAGES, whose own common
# words the shares already rule out. In a script without capitals every rare word
# may be a name (`features.capitalised_tokens`), so these lists matter most there:
# Arabic, Persian, Hebrew, Hindi, Bengali, Urdu, Tamil, and Chinese, whose words
# wordfreq lists as segmented and `features.tokens` reads as pairs of syllables.
# Japanese and Korean are left out: wordfreq lists their particles apart, which
# their text writes joined to the word before.
# fmt: off
NAME_LANGUAGES = (
    "ar", "bg", "bn", "ca", "cs", "da", "de", "el", "es", "fa", "fi", "fr", "he", "hi", "hu",
    "id", "it", "lt", "lv", "mk", "ms", "nb", "nl", "pl", "pt", "ro", "sh", "sk", "sl", "sv",
    "ta", "tr", "ur", "vi", "zh",
)
# fmt: on
COMMONEST = 500  # a language's commonest words: its function words and its daily news
# A language's commonest words that are dropped from its reports' words, as the
# function words of English, Russian and Ukrainian are (`features.tokens`): mostly
# its articles, prepositions and pronouns, which the shares, taken from LANGUAGES
# only, would weigh as rare and make every two of its reports look alike.
FUNCTION_WORDS = 100
# Languages that write every noun with a capital, where a capital says little of a
# name: their words used far more in them than in English ("Regierung", "Hurrikan",
# "Flugzeugabsturz", against "Scholz", "Helene", "Boeing", which English news names
# too) are nouns in their reports (`background.common_nouns`). Above NOUN_FLOOR only:
# a rarer word ("Selenskyj") is a name as before.
NOUN_LANGUAGES = ("de",)
NOUN_RATIO = 50.0
NOUN_FLOOR = 1e-6
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
    arrays: dict[str, Any] = {
        "keys": np.asarray(kept, dtype=np.uint32),
        "share": np.asarray([share[k] for k in kept], dtype=np.float16),
        "not_names": np.asarray(not_names, dtype=np.uint32),
    }
    for lang in NOUN_LANGUAGES:
        arrays[f"nouns_{lang}"] = np.asarray(sorted(common_nouns(wordfreq, lang)), np.uint32)
    for lang in NAME_LANGUAGES:
        function_words = {
            word_key(token)
            for word in wordfreq.top_n_list(lang, FUNCTION_WORDS)
            for token in tokens(word)
        }
        arrays[f"function_words_{lang}"] = np.asarray(sorted(function_words), np.uint32)
    np.savez_compressed(path, **arrays)
    return len(kept)


def common_nouns(wordfreq: Any, lang: str) -> set[int]:
    """Word keys of `lang`'s words at NOUN_FLOOR or above, NOUN_RATIO times as frequent
    in it as in English."""
    keys: set[int] = set()
    for word in wordfreq.top_n_list(lang, WORDS_PER_LANGUAGE * 4):
        freq = wordfreq.word_frequency(word, lang)
        if freq < NOUN_FLOOR:
            break  # the list goes from the commonest down
        if freq >= NOUN_RATIO * wordfreq.word_frequency(word, "en"):
            keys.update(word_key(token) for token in tokens(word))
    return keys


if __name__ == "__main__":
    print(f"kept {build(Path(sys.argv[1]) if len(sys.argv) > 1 else PATH)} features")
