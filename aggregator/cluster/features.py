"""Turn a report into sparse TF-IDF vectors and name keys that Cyrillic and Latin share.

Text is transliterated with anyascii, so "Курськ" and "Kursk" meet; features are
truncated word stems (a crude stemmer that serves English, Russian and Ukrainian
alike) and in-word character n-grams, hashed into a fixed space so that the
online document frequencies stay bounded however long the service runs. Document
frequencies start from a shipped background table (`background`), so a young
clusterer already knows that "region" is common and "Sudzha" is not.
"""

from __future__ import annotations

import math
import re
import unicodedata
import zlib
from collections import defaultdict
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from typing import ClassVar
from urllib.parse import unquote

import numpy as np
from anyascii import anyascii

from aggregator.cluster import background
from aggregator.cluster.embedding import LEAD_CHARS, headline
from aggregator.cluster.snapshot import Reader, SnapshotError, Writer, same_length, strings
from aggregator.types import ClusterDoc

Counts = dict[int, float]  # feature -> weighted term frequency

HASH_BITS = 20  # 1M buckets: 4 MB of counts, collisions rare at news vocabulary sizes
_HASH_MASK = (1 << HASH_BITS) - 1
# A name from a script without capitals carries its script in the bits above the
# hash (`name_hash`); one with capitals has none there, and sorts first.
SCRIPT_BITS = 4
# Japanese writes names in kana and Han alike, and Han is read as Chinese is.
_SCRIPT_OF = {"HIRAGANA": "CJK", "KATAKANA": "CJK"}
_KATAKANA = re.compile(r"[\u30a0-\u30ff]+")
# A name's sound as its consonants (`sound_of`): spellings that transliterate one
# name from different scripts fold together ("gh" for Arabic غ, "l" and "r" for
# Korean and Japanese, "p" and "b" for Arabic, which has no p), vowels and the
# letters that Arabic and Hebrew write for vowels (w, v, y) drop, and the first
# SOUND_LETTERS consonants are kept, of names that have at least SOUND_MIN.
_SOUND_FOLDS = (
    ("shch", "s"), ("sch", "s"), ("gh", "g"), ("kh", "h"), ("sh", "s"), ("zh", "z"),
    ("ch", "c"), ("ts", "c"), ("tz", "c"), ("ph", "f"), ("th", "t"), ("dh", "d"),
    ("q", "k"), ("l", "r"), ("j", "z"), ("p", "b"), ("x", "ks"),
)  # fmt: skip
_SOUND_VOWELS = re.compile(r"[aeiouywv]")
SOUND_MIN = 3
SOUND_LETTERS = 4
# Sounds remembered, each with the latest name of each script that has it: about 3 MB.
SOUNDS_REMEMBERED = 25_000
TOKEN_CACHE = 8192  # distinct tokens whose features are kept (about 5 MB)
# Capitalised words of the latest reports in languages that capitalise names only,
# remembered so that a German report may name them (`Featuriser.counts`): about 2 MB.
CAPITALS_REMEMBERED = 25_000
_TOKEN = re.compile(r"[a-z0-9]+")
_WORD = re.compile(r"\w+")
_APOSTROPHES = re.compile(r"['`\u2019]")  # anyascii writes the soft sign as '
# A run of Han ideographs: Chinese writes no spaces between words, and anyascii
# runs a run's syllables together ("北京" -> "BeiJing"). A run is read as its pairs
# of neighbouring syllables ("beijing", "jingshi"), as search engines index Chinese:
# most Chinese words are two characters long, and a lone syllable names nothing.
_HAN_RUN = re.compile(r"[\u3400-\u4dbf\u4e00-\u9fff\uf900-\ufaff\U00020000-\U0003134f]+")
# Japanese joins its words with hiragana: particles and endings ("ロシアのクルスク",
# Russia's Kursk), never names. They are dropped, as other languages' function words
# are, so that the katakana and Han between them are read as words of their own.
_HIRAGANA = re.compile(r"[\u3041-\u309f]+")
# Korean writes a particle joined to the word before it ("러시아가", "러시아는": Russia,
# as subject and as topic). The commonest are cut off a word of Hangul that keeps
# two syllables or more, so that one name has one spelling.
_HANGUL_PARTICLE = re.compile(
    r"(?<=[\uac00-\ud7a3]{2})(?:에서|으로|에게|까지|부터|께서|이|가|은|는|을|를|의|에|로|와|과|도)"
    r"(?![\uac00-\ud7a3])"
)
# Emoji, pictographs, arrows, dingbats, currency signs and the joiners between
# them: anyascii spells them out (":red_circle:", ":zap:"), and a channel that opens
# every headline with one would share those words across everything it reports.
_SYMBOLS = re.compile(
    "[\u20a0-\u20cf\u2190-\u21ff\u2300-\u23ff\u25a0-\u27bf\u2900-\u297f"
    "\u2b00-\u2bff\ufe00-\ufe0f\u200d\u20e3\U0001f000-\U0001faff]+"
)
# A text in capitals (at least this many words, most of them written all in
# capitals) shouts: its capitals name nothing ("BREAKING: TROOPS ENTER REGION").
SHOUTING_WORDS = 3
# A run of digits (of any script) with separators between its groups: "1,000",
# "1 000", "4,35", "33.000"; `numbers` tells thousands groups from a decimal part.
_NUMBER_RUN = re.compile(r"\d+(?:[.,\u00a0\u2009\u202f ]\d+)*")
_NUMBER_SEPARATOR = re.compile(r"([.,\u00a0\u2009\u202f ])")
_SLUG_WORD = re.compile(r"[^\W\d_]+")  # letters of any script
# Month names as headlines write a calendar day: English (with the usual
# abbreviations; "May" is both), and the genitive of Russian and Ukrainian.
_MONTH_NAMES = (
    "january jan января січня",
    "february feb февраля лютого",
    "march mar марта березня",
    "april apr апреля квітня",
    "may мая травня",
    "june jun июня червня",
    "july jul июля липня",
    "august aug августа серпня",
    "september sep sept сентября вересня",
    "october oct октября жовтня",
    "november nov ноября листопада",
    "december dec декабря грудня",
)
_MONTH = {name: month for month, names in enumerate(_MONTH_NAMES, 1) for name in names.split()}
_MONTH_ALT = "|".join(sorted(_MONTH, key=len, reverse=True))
# "8 ноября", "8th of November", "16-го листопада"; and "November 8", "Aug. 6th".
_DAY_MONTH = re.compile(rf"\b(\d{{1,2}})(?:st|nd|rd|th|-?го)?\s+(?:of\s+)?({_MONTH_ALT})\b", re.I)
_MONTH_DAY = re.compile(rf"\b({_MONTH_ALT})\.?\s+(\d{{1,2}})(?:st|nd|rd|th)?\b(?![.,:]\d)", re.I)

# Function words of English, Russian and Ukrainian: they say nothing about which
# event a report is about. The Cyrillic ones are kept in Cyrillic and transliterated
# below, so the list always matches the spelling `tokens` produces.
_STOPWORDS_EN = """
    a an and are as at be been but by can could did do does for from had has have he her his
    how i if in into is it its may might more most new no not now of on or our over says
    said say she so than that the their them then there these they this those to up us was
    we were what when where which who why will with would you your after about all also
    just out one two get gets got back first last near amid against across before under
    while during since still very
"""
_STOPWORDS_CYRILLIC = """
    в во на и с со о об по за к ко из от до не что как это для при у уже же было был была
    были будет его ее её их он она они мы вы или а но то так тем чем после перед над под между
    та з зі від що як це про але вже буде його її їхній він вона вони ми ви або
"""


def transliterate(text: str) -> str:
    """Text of any script in lower-case ASCII, apostrophes dropped: "Курська" -> "kurska"."""
    text = unicodedata.normalize("NFKC", text)
    if not text.isascii():
        text = _HANGUL_PARTICLE.sub("", _HIRAGANA.sub(" ", _SYMBOLS.sub(" ", text)))
        text = anyascii(_HAN_RUN.sub(_han_pairs, text))
    return _APOSTROPHES.sub("", text.lower())


def _han_pairs(run: re.Match[str]) -> str:
    """A run of Han ideographs as its pairs of neighbouring syllables, set apart by spaces
    ("北京市" -> " BeiJing JingShi "); a lone ideograph as its syllable."""
    syllables = [anyascii(ideograph) for ideograph in run[0]]
    pairs = [a + b for a, b in zip(syllables, syllables[1:], strict=False)] or syllables
    return f" {' '.join(pairs)} "


STOPWORDS = frozenset(_STOPWORDS_EN.split()) | frozenset(
    transliterate(word) for word in _STOPWORDS_CYRILLIC.split()
)


@dataclass(frozen=True, slots=True)
class Vector:
    """A sparse vector as two parallel arrays: ascending feature ids and their weights.

    Arrays rather than a dict: a story keeps two of these for its life, and a
    dict costs about 100 bytes an entry where these cost 6 (int32 + float16).
    """

    keys: np.ndarray  # int32, ascending, unique
    weights: np.ndarray  # float16 (a story's centroid) or float64 (a report's)

    SNAPSHOT: ClassVar = ("keys weights", "")  # see cluster/snapshot.py

    def __len__(self) -> int:
        return len(self.keys)

    def norm(self) -> float:
        return math.sqrt(float(np.dot(self.weights, self.weights)))

    def dot(self, other: Vector) -> float:
        """Sum of products over the features both have."""
        if not len(self.keys) or not len(other.keys):
            return 0.0
        small, big = (self, other) if len(self.keys) <= len(other.keys) else (other, self)
        at = np.searchsorted(big.keys, small.keys)
        at[at == len(big.keys)] = 0
        hit = big.keys[at] == small.keys
        return float(np.dot(small.weights[hit].astype(np.float64), big.weights[at[hit]]))

    def unit(self) -> Vector:
        norm = self.norm()
        return Vector(self.keys, self.weights / norm) if norm else EMPTY


EMPTY = Vector(np.zeros(0, np.int32), np.zeros(0, np.float32))
NO_KEYS = np.zeros(0, np.uint32)


def key_array(keys: Iterable[int]) -> np.ndarray:
    """Hashed keys (names, figures) as one small ascending array, cheaper than a set.

    Sorted in Python: a report has a few dozen at most, and `np.unique` costs
    more than the sort.
    """
    return np.array(sorted(set(keys)), np.uint32)


def word_key(token: str) -> int:
    """A whole token's 32-bit key, as `background.not_names` lists them: not a stem's
    bucket, whose million slots would make one rare name in a hundred collide."""
    return zlib.crc32(token.encode())


def number_keys(figures: Iterable[str]) -> np.ndarray:
    return key_array(word_key(figure) for figure in figures)


@dataclass(frozen=True)
class FeatureWeights:
    """How a report's words become features; fixed for the life of a clusterer."""

    title_weight: float = 2.0  # a headline word counts as this many body words
    stem_length: int = 6  # words are cut to this many letters before matching
    ngram_sizes: tuple[int, ...] = (3, 4, 5)  # in-word character n-grams; () turns them off
    # The lead carries the event and later paragraphs drift: read the headline
    # and as much of the body as the embedding does.
    body_chars: int = LEAD_CHARS
    url_words: bool = True  # use the URL slug's words when the body is empty
    background_docs: float = 20_000.0  # the shipped frequencies weigh as this many reports
    # A capitalised word (or any word of a script without capitals) in fewer
    # documents than this is a name, unless it is among the commonest words of
    # another language (`background.not_names`) or, in a German report, a common
    # noun (`background.common_nouns`).
    name_max_share: float = 2e-3


@dataclass(frozen=True)
class Counted:
    """A report's features before weighting: word stems, n-grams, names and numbers."""

    words: Counts
    grams: Counts
    names: frozenset[int]  # hashed name keys of capitalised, rare words (people, places)
    numbers: frozenset[str]  # figures as written, separators folded ("1,000" -> "1000")
    days: frozenset[int]  # calendar days the headline names, as month * 100 + day
    # Word keys of its capitalised words, when its language capitalises names only
    # (see `Featuriser.counts`): what other reports may take for names.
    capitals: frozenset[int] = frozenset()
    # (sound, script, name key) of its names whose letters spell their sound (not Han).
    sounds: tuple[tuple[str, int, int], ...] = ()


def tokens(text: str) -> list[str]:
    """Transliterated, lower-cased word tokens without function words."""
    latin = transliterate(text)
    return [t for t in _TOKEN.findall(latin) if len(t) > 1 and t not in STOPWORDS]


def capitalised_tokens(text: str) -> Iterator[tuple[str, int, bool]]:
    """Transliterated tokens of the words that may be names, each with its script
    (`script_of`: 0 for one with capitals) and whether its letters spell its sound
    (`sound_of`; Han's do not): the words written with a capital (none from a text
    that shouts, written in capitals throughout), and every word of a script without
    capitals (Arabic, Hebrew, Devanagari, Hangul, Han, kana), where only rarity
    tells a name (`Featuriser.counts`)."""
    words = [w for w in _WORD.findall(unicodedata.normalize("NFKC", text)) if not w.isdigit()]
    shouting = sum(len(w) > 1 and w.isupper() for w in words)
    shouts = shouting >= SHOUTING_WORDS and 2 * shouting > len(words)
    for word in words:
        if script := script_of(word[0]):
            spelled = None
            if script == _HAN_SCRIPT:  # of a Japanese run, only its katakana spell
                spelled = {token for run in _KATAKANA.findall(word) for token in tokens(run)}
            for token in tokens(word):
                yield token, script, spelled is None or token in spelled
        elif word[0].isupper() and not shouts:
            yield from ((token, 0, True) for token in tokens(word))


def script_of(char: str) -> int:
    """0 for a letter of a script with capitals (or no letter); for one without
    ("ك", "ק", "क", "한", "北"), a number from 1 to 15 that its script's name picks
    (kana and Han one)."""
    if unicodedata.category(char) != "Lo":
        return 0
    script = unicodedata.name(char, "?").split()[0]
    return 1 + zlib.crc32(_SCRIPT_OF.get(script, script).encode()) % ((1 << SCRIPT_BITS) - 1)


_HAN_SCRIPT = script_of("中")


def sound_of(token: str) -> str | None:
    """The first consonants of a transliterated name, which its spellings in other
    scripts share ("baltimore", "boltimoeo" from 볼티모어, "baltymwr" from بالتيمور:
    "brtm"); None for a name with too few."""
    for spelled, folded in _SOUND_FOLDS:
        token = token.replace(spelled, folded)
    consonants = _REPEATS.sub(r"\1", _SOUND_VOWELS.sub("", token))
    return consonants[:SOUND_LETTERS] if len(consonants) >= SOUND_MIN else None


# Latin spellings of one Cyrillic sound, folded so that transliterations of Russian
# and Ukrainian forms meet the English one ("Sudzhi", "Sudzha" -> "sudz").
_FOLDS = (("shch", "sh"), ("zh", "z"), ("kh", "h"), ("ts", "c"), ("ch", "c"), ("ie", "i"))
_FOLD_LETTERS = str.maketrans({"y": "i", "j": "i", "w": "v", "x": "h"})
_REPEATS = re.compile(r"(.)\1+")
# Case and adjective endings of Russian and Ukrainian names (after folding), longest
# first; "sk"/"k" make "Kursk", "Kurskoi" and "Rostovskii" fall to their roots.
_NAME_ENDINGS = tuple(
    sorted(
        [
            "aia",
            "iaia",
            "oiu",
            "aiu",
            "ogo",
            "ego",
            "omu",
            "emu",
            "ami",
            "iami",
            "iah",
            "ah",
            "ih",
            "im",
            "om",
            "em",
            "ovi",
            "evi",
            "ov",
            "ev",
            "oi",
            "ii",
            "ei",
            "ai",
            "ia",
            "iu",
            "a",
            "e",
            "i",
            "o",
            "u",
            "sk",
            "k",
        ],
        key=len,
        reverse=True,
    )
)
NAME_ROOT = 4  # endings are not stripped below this many letters
NAME_KEY_CHARS = 7


# A region named after its centre ("Курщина", "Харківщина", "Донеччина", "Белгородчина"),
# in any case: the centre's name, its last consonants softened, before "-щина"/"-чина".
_REGION = re.compile(r"^(?P<root>[a-z]{3,}?)(?P<join>shch|chch|dch)in(?:[aeiouy]|oyu|oy|oi)?$")


def region_centre(token: str) -> str:
    """The centre's transliterated name in a region's name ("kurshchini" -> "kursk",
    "kharkivshchina" -> "kharkiv", "donechchina" -> "donets"); other tokens as they are."""
    found = _REGION.match(token)
    if found is None:
        return token
    root, join = found["root"], found["join"]
    if join == "chch":  # Донець(к) + чина
        return root + "ts"
    if join == "dch":  # Белгород + чина
        return root + "d"
    # Харків + щина; a short root lost "sk" to the softening: Кур(ськ) + щина.
    return root if len(root) >= NAME_ROOT else root + "sk"


def name_key(token: str) -> str:
    """A transliterated name folded to a root that its uk, ru and en forms share.

    Crude on purpose: names are few and rare, so a rare collision costs little,
    while "Курській"/"Курщині"/"Курской"/"Kursk" failing to meet costs every
    cross-language pair.
    """
    key = region_centre(token)
    for latin, folded in _FOLDS:
        key = key.replace(latin, folded)
    key = _REPEATS.sub(r"\1", key.translate(_FOLD_LETTERS))
    for _ in range(3):
        ending = next(
            (e for e in _NAME_ENDINGS if key.endswith(e) and len(key) - len(e) >= NAME_ROOT), ""
        )
        if not ending:
            break
        key = key[: -len(ending)]
    return key[:NAME_KEY_CHARS]


def numbers(text: str) -> frozenset[str]:
    """The figures a text gives, written alike whatever the language's habits: digits
    in ASCII, thousands groups joined, a decimal comma as a point and its trailing
    zeros dropped. "1,000", "1 000", "1.000" and "1000" are all "1000"; "4,35" and
    "4.35" are "4.35". A separator before exactly three digits joins a thousands group
    (after a first group of one to three digits other than 0, and before any decimal
    part); a comma or point before other digits starts the decimal part; anything
    else ends the figure."""
    found: set[str] = set()
    for run in _NUMBER_RUN.finditer(text):
        parts = _NUMBER_SEPARATOR.split(run.group())  # digits, separator, digits, ...
        lead = figure = parts[0]  # the figure's first group, and the figure so far
        decimal = False
        for separator, digits in zip(parts[1::2], parts[2::2], strict=True):
            if len(digits) == 3 and len(lead) <= 3 and lead != "0" and not decimal:
                figure += digits
            elif separator in ".," and not decimal:
                figure, decimal = f"{figure}.{digits}", True
            else:
                found.add(_figure(figure, decimal))
                lead = figure = digits
                decimal = False
        found.add(_figure(figure, decimal))
    return frozenset(found)


def _figure(figure: str, decimal: bool) -> str:
    if not figure.isascii():  # Arabic-Indic, Devanagari, full-width digits
        figure = "".join(str(unicodedata.decimal(c)) if c != "." else c for c in figure)
    return figure.rstrip("0").rstrip(".") if decimal else figure


def calendar_days(title: str) -> frozenset[int]:
    """The calendar days a headline names ("forecast for 8 November"), as month * 100 + day."""
    found = _DAY_MONTH.findall(title) + [(day, month) for month, day in _MONTH_DAY.findall(title)]
    return frozenset(
        _MONTH[month.lower()] * 100 + int(day)
        for day, month in found
        # "Top 3 may surprise": the English month is written with a capital.
        if 1 <= int(day) <= 31 and month != "may"
    )


def slug_text(url: str) -> str:
    """The words of a URL's path, which often repeat or extend the headline: letters
    of any script, once percent-decoded ("%D0%BA%D1%83..." is "ку..."); digits,
    punctuation and the hex of encoded bytes are no words."""
    path = url.split("?", 1)[0].split("#", 1)[0]
    path = unquote(path.split("://", 1)[-1].partition("/")[2])
    words = _SLUG_WORD.findall(path)
    # Slug noise: file extensions and ids; real slugs have several words.
    words = [w for w in words if w.lower() not in {"html", "htm", "php", "aspx", "story"}]
    return " ".join(words) if len(words) >= 3 else ""


def _hash(feature: str) -> int:
    return zlib.crc32(feature.encode()) & _HASH_MASK


def name_hash(token: str, script: int = 0) -> int:
    """A name's key (`name_key`, hashed), its script (`script_of`) in the bits above.
    A script without capitals transliterates its names in its own way, which seldom
    meets another script's ("كورسك" -> "kwrsk", "쿠르스크" -> "kuleuseukeu", "Kursk"),
    so that two reports name nothing in common across two scripts says nothing
    (`decision.comparable_names`)."""
    return _hash("n" + name_key(token)) | (script << HASH_BITS)


class Featuriser:
    """Counts features of reports and keeps their online document frequencies."""

    # What a snapshot saves of it, and what it rebuilds (see cluster/snapshot.py).
    SNAPSHOT: ClassVar = (
        "_df _docs _capitals _sounds",
        "weights _prior _prior_docs _not_names _nouns _function_words _token_cache",
    )

    def __init__(self, weights: FeatureWeights, *, background: bool = True) -> None:
        self.weights = weights
        self._df = np.zeros(1 << HASH_BITS, dtype=np.int32)
        self._docs = 0
        self._prior = _shared_prior() if background else np.zeros(1 << HASH_BITS, np.float32)
        self._prior_docs = weights.background_docs if background else 0.0
        # Words among the commonest of another language ("Der", "Le", "Berlin"): no names.
        # Per kind of script (with capitals, without; see `capitalised_tokens`).
        self._not_names = _shared_not_names() if background else (frozenset(), frozenset())
        # Per language that writes every noun with a capital (German): its common
        # nouns, which its reports name only once a report in a language that
        # capitalises names alone has written them with a capital (`_capitals`):
        # "Hurrikan" is never a name, "Magdeburg" is one once another language wrote it.
        self._nouns = _shared_nouns() if background else {}
        # Per language beside en, ru and uk: its function words, dropped from its words.
        self._function_words = _shared_function_words() if background else {}
        self._capitals: dict[int, None] = {}  # oldest first, at most CAPITALS_REMEMBERED
        # A name's sound (`sound_of`) -> script -> the latest name key of that script
        # with it, oldest sound first: a name written in a script without capitals
        # also names what other scripts wrote with its sound ("بالتيمور", Baltimore).
        self._sounds: dict[str, dict[int, int]] = {}
        # Token -> its features: news repeats its words, and hashing every n-gram
        # of every token again was most of the cost of replaying a window.
        self._token_cache: dict[str, tuple[int, ...]] = {}

    def save(self, out: Writer) -> None:
        """The document frequencies, sparse: most of the million buckets stay empty."""
        out.state_of(self)
        seen = np.flatnonzero(self._df).astype(np.int32)
        out.array("df_keys", seen, np.int32)
        out.array("df_counts", self._df[seen], np.int32)
        out.value("docs", self._docs)
        out.array(
            "capitals", np.fromiter(self._capitals, np.uint32, len(self._capitals)), np.uint32
        )
        flat = [
            (sound, script, key)
            for sound, keys in self._sounds.items()
            for script, key in keys.items()
        ]
        out.value("sounds", [sound for sound, _, _ in flat])
        out.array("sound_scripts", np.array([script for _, script, _ in flat], np.int64), np.int64)
        out.array("sound_keys", np.array([key for _, _, key in flat], np.uint32), np.uint32)

    def load(self, source: Reader) -> None:
        keys = source.array("df_keys", np.int32)
        counts = source.array("df_counts", np.int32)
        if len(keys) != len(counts) or (
            len(keys) and (keys.min() < 0 or keys.max() >= len(self._df))
        ):
            raise SnapshotError("the document frequencies in the snapshot are malformed")
        self._df[:] = 0
        self._df[keys] = counts
        self._docs = int(source.value("docs"))
        self._capitals = dict.fromkeys(source.array("capitals", np.uint32).tolist())
        sounds = strings(source.value("sounds"))
        scripts = source.array("sound_scripts", np.int64).tolist()
        keys = source.array("sound_keys", np.uint32).tolist()
        same_length(sounds, scripts, keys)
        self._sounds = {}
        for sound, script, key in zip(sounds, scripts, keys, strict=True):
            self._sounds.setdefault(sound, {})[script] = key

    def stem_key(self, token: str) -> int:
        return _hash("w" + token[: self.weights.stem_length])

    def token_features(self, token: str) -> tuple[int, ...]:
        """The hashed stem of a token, then its character n-grams."""
        cache = self._token_cache
        found = cache.get(token)
        if found is None:
            if len(cache) >= TOKEN_CACHE:
                cache.clear()  # bounded; the common words come back at once
            found = cache[token] = tuple(self._token_features(token))
        return found

    def _token_features(self, token: str) -> Iterator[int]:
        yield self.stem_key(token)
        padded = f" {token} "
        for n in self.weights.ngram_sizes:
            for i in range(len(padded) - n + 1):
                yield _hash("g" + padded[i : i + n])

    def counts(self, doc: ClusterDoc) -> Counted:
        """Weighted term counts of a report, and its names and numbers."""
        w = self.weights
        title = headline(doc)
        body = doc.text[: w.body_chars]
        if not body.strip() and w.url_words:
            body = slug_text(doc.url)
        words: defaultdict[int, float] = defaultdict(float)
        grams: defaultdict[int, float] = defaultdict(float)
        function_words = self._function_words.get(doc.lang)
        for text, weight in ((title, w.title_weight), (body, 1.0)):
            for token in tokens(text):
                if function_words and word_key(token) in function_words:
                    continue
                stem, *token_grams = self.token_features(token)
                words[stem] += weight
                for gram in token_grams:
                    grams[gram] += weight
        capitalised = [
            (token, word, script, spelled)
            for text in (title, body)
            for token, script, spelled in capitalised_tokens(text)
            if (word := word_key(token)) not in self._not_names[script > 0]
        ]
        nouns = self._nouns.get(doc.lang)
        named = [
            (token, script, spelled, name_hash(token, script))
            for token, word, script, spelled in capitalised
            if (nouns is None or word not in nouns or word in self._capitals)
            and self.share(self.stem_key(token)) < w.name_max_share
        ]
        capitals = (
            frozenset(word for _, word, script, _ in capitalised if not script)
            if nouns is None
            else frozenset()
        )
        sounds = tuple(
            (sound, script, key)
            for token, script, spelled, key in named
            if spelled and (sound := sound_of(token))
        )
        return Counted(
            words,
            grams,
            frozenset(key for *_, key in named) | self._sounded(sounds),
            numbers(f"{title} {body}"),
            calendar_days(title),
            capitals,
            sounds,
        )

    def _sounded(self, sounds: Iterable[tuple[str, int, int]]) -> frozenset[int]:
        """The names other scripts wrote with the sounds of a report's names in a
        script without capitals, or that scripts without capitals wrote with the
        sounds of its names with capitals: one name across scripts that transliterate
        it apart."""
        return frozenset(
            key
            for sound, script, _ in sounds
            for other, key in self._sounds.get(sound, {}).items()
            if other != script
        )

    def learn(self, counted: Counted) -> None:
        """Count one more report in the document frequencies."""
        self._docs += 1
        # Keys are unique within each kind; a stem and an n-gram sharing a bucket count twice.
        for counts in (counted.words, counted.grams):
            self._df[np.fromiter(counts, np.int64, len(counts))] += 1
        for word in counted.capitals:
            self._capitals.pop(word, None)  # the latest last
            self._capitals[word] = None
        while len(self._capitals) > CAPITALS_REMEMBERED:
            del self._capitals[next(iter(self._capitals))]
        for sound, script, key in counted.sounds:
            scripts = self._sounds.pop(sound, {})  # the latest last
            scripts[script] = key
            self._sounds[sound] = scripts
        while len(self._sounds) > SOUNDS_REMEMBERED:
            del self._sounds[next(iter(self._sounds))]

    def share(self, key: int) -> float:
        """Estimated share of reports containing a feature: background and stream blended."""
        prior = self._prior_docs
        return (float(self._df[key]) + prior * float(self._prior[key])) / (self._docs + prior + 1)

    def idf(self, key: int) -> float:
        prior = self._prior_docs
        seen = float(self._df[key]) + prior * float(self._prior[key])
        return math.log((1.0 + self._docs + prior) / (1.0 + seen)) + 1.0

    def vector(self, counts: Counts) -> Vector:
        """Sublinear TF times IDF, L2-normalised."""
        if not counts:
            return EMPTY
        keys = np.fromiter(counts.keys(), np.int32, len(counts))
        tf = np.fromiter(counts.values(), np.float64, len(counts))
        order = np.argsort(keys, kind="stable")
        keys, tf = keys[order], tf[order]
        prior = self._prior_docs
        seen = self._df[keys].astype(np.float64) + prior * self._prior[keys].astype(np.float64)
        idf = np.log((1.0 + self._docs + prior) / (1.0 + seen)) + 1.0
        # A word said five times is not five times the evidence of one said once.
        sublinear = np.where(tf >= 1.0, 1.0 + np.log(np.maximum(tf, 1.0)), tf)
        raw = sublinear * idf
        norm = math.sqrt(float(np.dot(raw, raw)))
        if norm == 0.0:
            return EMPTY
        return Vector(keys, raw / norm)


_PRIOR: np.ndarray | None = None


def _shared_not_names() -> tuple[frozenset[int], frozenset[int]]:
    # The parameter of Featuriser hides the module there.
    return background.not_names(), background.not_names(caseless=True)


def _shared_nouns() -> dict[str, frozenset[int]]:
    return background.common_nouns()


def _shared_function_words() -> dict[str, frozenset[int]]:
    return background.function_words()


def _shared_prior() -> np.ndarray:
    # One read-only copy for every clusterer in the process (tests build many).
    global _PRIOR
    if _PRIOR is None:
        _PRIOR = background.shares(HASH_BITS)
        _PRIOR.setflags(write=False)
    return _PRIOR
