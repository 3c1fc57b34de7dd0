"""Build the clusterer's background document frequencies (`python -m aggregator_eval.background`).

Writes `aggregator/cluster/background.npz`, which `aggregator.cluster.background`
loads: each hashed feature's expected share of news-sized documents, estimated
from wordfreq's general word frequencies of English, Russian and Ukrainian; and
the words that are no names: the commonest words of thirty-five more languages
(their articles and pronouns, which start many a headline with a capital, and
what their news names every day; in the eight written without capitals, every
word common enough), and the function words of each of those languages; and,
for German, which writes every noun with a capital, the words of its reports
that are common nouns. It needs the `wordfreq` package, which the clusterer
itself never imports.
"""

from __future__ import annotations

import sys
from collections import defaultdict
from collections.abc import Iterable
from pathlib import Path
from typing import Any

import numpy as np

from aggregator.cluster.background import PATH
from aggregator.cluster.features import FeatureWeights, Featuriser, tokens, word_key

LANGUAGES = ("en", "ru", "uk")
# Languages whose commonest words are no names, beside LANGUAGES, whose own common
# words the shares already rule out.
# fmt: off
NAME_LANGUAGES = (
    "bg", "ca", "cs", "da", "de", "el", "es", "fi", "fr", "hu", "id", "it", "lt", "lv", "mk",
    "ms", "nb", "nl", "pl", "pt", "ro", "sh", "sk", "sl", "sv", "tr", "vi",
)
# Languages written without capitals, where every rare word may be a name
# (`features.capitalised_tokens`). Their lists apply to their scripts' words only,
# whose transliterations would otherwise rule out a Latin name now and then (Hindi
# "मोदी" is "modi"), and hold every word common enough that the shares would call
# it no name, had the shipped table held the language. Chinese words are listed
# as wordfreq segments them, and `features.tokens` reads them as pairs of
# syllables. Japanese and Korean are left out: wordfreq lists their particles
# apart, which their text writes joined to the word before.
CASELESS_LANGUAGES = ("ar", "bn", "fa", "he", "hi", "ta", "ur", "zh")
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
    # A word's expected share of reports is about DOC_TOKENS times its frequency.
    common = FeatureWeights().name_max_share / DOC_TOKENS
    caseless = {
        word
        for lang in CASELESS_LANGUAGES
        for word, freq in wordfreq.get_frequency_dict(lang).items()
        if freq >= common
    }
    arrays: dict[str, Any] = {
        "keys": np.asarray(kept, dtype=np.uint32),
        "share": np.asarray([share[k] for k in kept], dtype=np.float16),
        "not_names": word_keys(commonest(wordfreq, NAME_LANGUAGES, COMMONEST)),
        "not_names_caseless": word_keys(
            commonest(wordfreq, CASELESS_LANGUAGES, COMMONEST) | caseless
        ),
    }
    for lang in NOUN_LANGUAGES:
        arrays[f"nouns_{lang}"] = word_keys(common_nouns(wordfreq, lang))
    for lang in NAME_LANGUAGES + CASELESS_LANGUAGES:
        function_words = commonest(wordfreq, (lang,), FUNCTION_WORDS)
        arrays[f"function_words_{lang}"] = word_keys(function_words)
    np.savez_compressed(path, **arrays)
    return len(kept)


def commonest(wordfreq: Any, langs: Iterable[str], n: int) -> set[str]:
    """The `n` commonest words of each language."""
    return {word for lang in langs for word in wordfreq.top_n_list(lang, n)}


def word_keys(words: Iterable[str]) -> np.ndarray:
    """The ascending `features.word_key`s of the words' tokens."""
    keys = {word_key(token) for word in words for token in tokens(word)}
    return np.asarray(sorted(keys), np.uint32)


def common_nouns(wordfreq: Any, lang: str) -> set[str]:
    """`lang`'s words at NOUN_FLOOR or above, NOUN_RATIO times as frequent in it as
    in English."""
    nouns: set[str] = set()
    for word in wordfreq.top_n_list(lang, WORDS_PER_LANGUAGE * 4):
        freq = wordfreq.word_frequency(word, lang)
        if freq < NOUN_FLOOR:
            break  # the list goes from the commonest down
        if freq >= NOUN_RATIO * wordfreq.word_frequency(word, "en"):
            nouns.add(word)
    return nouns


if __name__ == "__main__":
    print(f"kept {build(Path(sys.argv[1]) if len(sys.argv) > 1 else PATH)} features")
