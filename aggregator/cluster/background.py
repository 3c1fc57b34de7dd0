"""Background document frequencies shipped with the package, so IDF means something at once.

A fresh clusterer has seen a handful of reports: its own document frequencies
would call "Kursk" and "region" equally rare, and two early reports that share
one place name would look like one event. The shipped table gives each hashed
feature the share of news-sized documents expected to contain it, estimated
from general word frequencies of English, Russian and Ukrainian; online counts
take over as the stream grows (see `features.Featuriser.idf`). The file also
lists the words that are never names, whatever their share: the commonest
words of thirty-five more languages (in the eight written without capitals, such
as Arabic and Chinese, where every rare word may be a name, each word common
enough to be none). A German or French headline starts with "Der"
or "Le", and those languages' news names "Berlin" and "Paris" every day; a
young clusterer that has seen few such reports would take them for rare names
that two unrelated reports share. German writes every noun with a capital: the
file lists, for German reports only, the words German uses far more than English
does ("Regierung", "Hurrikan"), which are common nouns there, not names; and,
for each of those languages, its commonest hundred words, which are dropped
from its reports' words as English function words are: the shares know nothing
of "der" or "les", and would weigh them as rare words that every two reports of
the language share.

This module only loads the table; `python -m aggregator_eval.background`
rebuilds the file.
"""

from __future__ import annotations

from functools import lru_cache
from pathlib import Path

import numpy as np

PATH = Path(__file__).with_name("background.npz")


@lru_cache(maxsize=1)
def _arrays() -> dict[str, np.ndarray]:
    """Every array of the file, read once (none when the file is missing)."""
    if not PATH.exists():
        return {}
    with np.load(PATH, allow_pickle=False) as data:
        return {name: data[name] for name in data.files}


def table() -> tuple[np.ndarray, np.ndarray]:
    """(sorted hashed feature keys, share of documents containing each), or empty arrays."""
    arrays = _arrays()
    if "keys" not in arrays:
        return np.zeros(0, dtype=np.uint32), np.zeros(0, dtype=np.float32)
    return arrays["keys"].astype(np.uint32), arrays["share"].astype(np.float32)


@lru_cache(maxsize=2)
def not_names(caseless: bool = False) -> frozenset[int]:
    """Keys of the words that are no names (`features.word_key`; empty when the file
    lists none): of scripts with capitals, or (`caseless`) of scripts without, where
    the list holds every word of the language common enough to be no name."""
    name = "not_names_caseless" if caseless else "not_names"
    return frozenset(_arrays().get(name, np.zeros(0, np.uint32)).tolist())


@lru_cache(maxsize=1)
def common_nouns() -> dict[str, frozenset[int]]:
    """Per language that writes every noun with a capital (German), the keys of its
    words that are common nouns, never names in its reports (`features.word_key`)."""
    return _by_language("nouns_")


@lru_cache(maxsize=1)
def function_words() -> dict[str, frozenset[int]]:
    """Per language beside English, Russian and Ukrainian (whose function words
    `features.tokens` drops itself), the keys of its commonest words, dropped from
    its reports' words (`features.word_key`)."""
    return _by_language("function_words_")


def _by_language(prefix: str) -> dict[str, frozenset[int]]:
    return {
        name.removeprefix(prefix): frozenset(keys.tolist())
        for name, keys in _arrays().items()
        if name.startswith(prefix)
    }


def shares(hash_bits: int) -> np.ndarray:
    """A dense array over the hash space: expected document share of each feature."""
    keys, share = table()
    dense = np.zeros(1 << hash_bits, dtype=np.float32)
    if len(keys) and int(keys.max()) < len(dense):
        dense[keys] = share
    return dense
