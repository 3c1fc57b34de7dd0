"""Storylines: the developing stories that thread a story's events over days and weeks.

The story level (`assigner`, `stories`) groups the reports of one happening and
its close follow-ups, and forgets a story idle for `cluster.window_hours`. A
storyline (the August incursion into Kursk region and everything that followed
it) lasts longer and drifts: its later events share few words with its first.
This module keeps every live storyline as a decayed centroid of its latest
reports' language-centred embeddings, seen through a linear map that weighs
down what differs between the events of one storyline (their languages, places
and kinds of happening; `models/storyline-space.npy`), and decayed counts of
the names they mention (transliterated, so "Курськ" and "Kursk" count as one),
both following the drift, and links a storyline that took reports to the live
storyline nearest to it when their score (see `score`) reaches the join fitted
on the training part of our set (`models/storylines.json`,
`benchmarks/cluster.py --fit-storylines`). A storyline idle for `window_days`
takes no more stories.

A storyline's id is the id of its first story, and what the store calls a story
is a storyline: a story linked into a storyline is merged into it there, so a
timeline follows the storyline and lists one item per event inside it.
"""

from __future__ import annotations

import heapq
import json
import math
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from functools import lru_cache
from pathlib import Path
from typing import Any, ClassVar, NamedTuple, TypeVar

import numpy as np

from aggregator.cluster.decision import MODEL_DIR, read_model_file
from aggregator.cluster.embedding import DIM
from aggregator.cluster.features import NO_KEYS
from aggregator.cluster.snapshot import (
    Reader,
    SnapshotError,
    Writer,
    same_length,
    some_time,
    strings,
)
from aggregator.cluster.stories import COMPACT_SLACK, EMBEDDING_SUM, EmbeddingShelf
from aggregator.errors import ModelError

STORYLINES_MODEL = MODEL_DIR / "storylines.json"
SPACE_REFIT = "python -m aggregator_eval.space"
K = TypeVar("K")  # a key of decayed counts: a name's hash or a language
CANDIDATES = 8  # nearest live storylines a changed storyline is weighed against
AHEAD = 256  # changed storylines whose nearest are found in one matrix product (`link`)

# What each number of models/storylines.json means, written into the file itself.
FIELDS = {
    "window_days": "a storyline idle this long takes no more stories (the definition's "
    "'days and weeks'; not fitted)",
    "memory": "a storyline's centroid mostly holds about this many latest reports, so it "
    "follows the drift of its news (not fitted)",
    "lone": "score lost when either storyline holds a single report: one headline is too little "
    "to tell its storyline by, and a lone report on a depot fire in Kursk region reads like the "
    "incursion there (not fitted: with it at 0 the fit links such reports)",
    "join": "per method: least score at which two storylines become one; the score is the "
    "cosine of their centroids of language-centred embeddings, plus names times the cosine "
    "of their name counts less names_floor (or minus lone while either holds a single report), "
    "plus cross times one less the cosine of their language counts, "
    "minus decay times the days between the later one's first report "
    "and the earlier one's latest; a method without a join links no storylines (its "
    "stories are its storylines)",
    "decay": "per method: score lost per day between the two storylines",
    "names": "per method: weight of the cosine of the two storylines' decayed counts of "
    "name keys (transliterated, folded names and places) added to the score, once both "
    "hold two reports or more",
    "names_floor": "per method: the name cosine that counts as no evidence; names add "
    "`names` times (their cosine minus this floor), so two storylines that name little in "
    "common lose score (a drone strike in Rostov region and one on Odesa's port read alike "
    "but name different places)",
    "cross": "per method: added to the score times one less the cosine of the two storylines' "
    "decayed counts of their reports' languages: a multilingual embedding keeps some of the "
    "language in a centroid, so a storyline told in English meets one told in Ukrainian and "
    "Russian lower than one told in English (the WHO's mpox emergency, one happening, met "
    "itself across languages at 0.59)",
    "space": "the file beside this one of the linear map (a matrix DIM by DIM) that a "
    "report's centred embedding goes through before it counts in a storyline's centroid, or "
    '"" for none; how it was made is in the JSON file of the same name (fitted before the '
    "numbers above, which were fitted under it)",
}
NAMES_KEPT_ABOVE = 0.05  # a name's or language's decayed count below this is forgotten
NAMES_KEPT = 32  # a storyline keeps at most this many of its heaviest names (memory bound)
# A lone report names too few names to tell its storyline by: "Kursk" in one
# headline about a depot fire is no evidence of the incursion there.
NAMES_FROM_REPORTS = 2


class Rule(NamedTuple):
    """The fitted numbers of one method."""

    join: float
    decay: float
    names: float
    names_floor: float = 0.0
    lone: float = 0.0
    cross: float = 0.0


@dataclass(frozen=True)
class StorylinePolicy:
    """The numbers of the storyline decision, as stored in models/storylines.json."""

    window_days: float
    memory: int
    join: dict[str, float]
    decay: dict[str, float]
    names: dict[str, float]
    names_floor: dict[str, float] = field(default_factory=dict)
    lone: float = 0.0
    cross: dict[str, float] = field(default_factory=dict)
    space_file: str = ""
    # The matrix of `space_file` (None: the centred embeddings as they are).
    space: np.ndarray | None = field(default=None, compare=False, repr=False)

    def for_method(self, method: str) -> Rule | None:
        """The numbers of `method`; None: it links no storylines."""
        if method not in self.join:
            return None
        return Rule(
            self.join[method],
            self.decay.get(method, 0.0),
            self.names.get(method, 0.0),
            self.names_floor.get(method, 0.0),
            self.lone,
            self.cross.get(method, 0.0),
        )

    def to_json(self, notes: dict[str, object]) -> str:
        body: dict[str, object] = {
            "meaning": FIELDS,
            "window_days": self.window_days,
            "memory": self.memory,
            "lone": self.lone,
            "join": dict(sorted(self.join.items())),
            "decay": dict(sorted(self.decay.items())),
            "names": dict(sorted(self.names.items())),
            "names_floor": dict(sorted(self.names_floor.items())),
            "cross": dict(sorted(self.cross.items())),
            "space": self.space_file,
            "notes": notes,
        }
        return json.dumps(body, indent=1, ensure_ascii=False) + "\n"


def read_policy(path: Path) -> StorylinePolicy:
    """The policy stored at `path`; an error naming the file and key when it is broken."""

    def build(body: dict[str, Any]) -> StorylinePolicy:
        space_file = str(body["space"])
        return StorylinePolicy(
            window_days=float(body["window_days"]),
            memory=int(body["memory"]),
            lone=float(body["lone"]),
            join={str(k): float(v) for k, v in body["join"].items()},
            decay={str(k): float(v) for k, v in body["decay"].items()},
            names={str(k): float(v) for k, v in body["names"].items()},
            names_floor={str(k): float(v) for k, v in body["names_floor"].items()},
            cross={str(k): float(v) for k, v in body["cross"].items()},
            space_file=space_file,
            space=read_space(path.with_name(space_file)) if space_file else None,
        )

    return read_model_file(path, "storyline", "benchmarks/cluster.py --fit-storylines", build)


def read_space(path: Path) -> np.ndarray:
    """The storyline space's matrix stored at `path`, checked for its shape."""
    try:
        matrix = np.load(path, allow_pickle=False)
    except (OSError, ValueError) as exc:
        raise ModelError(
            f"the storyline space {path} cannot be read ({exc}): reinstall, or rebuild it"
            f" with {SPACE_REFIT}"
        ) from exc
    if matrix.shape != (DIM, DIM) or not np.isfinite(matrix).all():
        raise ModelError(
            f"the storyline space {path} is not a finite {DIM} by {DIM} matrix"
            f" (shape {matrix.shape}): rebuild it with {SPACE_REFIT}"
        )
    return matrix.astype(np.float32)


@lru_cache(maxsize=1)
def load_policy() -> StorylinePolicy:
    """The shipped storyline policy."""
    return read_policy(STORYLINES_MODEL)


@dataclass
class Storyline:
    """One developing story: its id, the stories in it, and its decayed centroid."""

    id: str
    started: datetime
    latest: datetime
    size: int = 0
    stories: set[str] = field(default_factory=set)  # live stories of the assigner in it
    # Decayed sum of its reports' embeddings, in half precision like a story's own
    # sum (owned: updated in place): 768 bytes a storyline, not 1.5 kB.
    total: np.ndarray | None = None
    names: dict[int, float] = field(default_factory=dict)  # decayed counts of name keys
    languages: dict[str, float] = field(default_factory=dict)  # decayed counts of languages
    # The norm of `total` once asked for, until `total` next changes: a link pass
    # asks each storyline for its `unit` a dozen times. A float, not the unit
    # vector itself, which would cost 1.5 KB a storyline.
    total_norm: float | None = field(default=None, repr=False, compare=False)

    # What a snapshot saves (`save_all`, `load_all`); every other field is saved.
    SNAPSHOT: ClassVar = ("id started latest size stories total names languages", "total_norm")

    @staticmethod
    def save_all(out: Writer, lines: list[Storyline]) -> None:
        """Many storylines as a few long arrays, in the order given."""
        if lines:
            out.state_of(lines[0])
        out.value("ids", [line.id for line in lines])
        out.times("started", (line.started for line in lines))
        out.times("latest", (line.latest for line in lines))
        out.array("size", np.array([line.size for line in lines], np.int64), np.int64)
        out.array("stories.count", np.array([len(x.stories) for x in lines], np.int64), np.int64)
        # sorted: a set has no order of its own, and equal states should save alike
        out.value("stories", [story_id for line in lines for story_id in sorted(line.stories)])
        out.optional("total", [line.total for line in lines], EMBEDDING_SUM)
        out.ragged("names.keys", [np.array(list(x.names), np.int64) for x in lines], np.int64)
        out.ragged(
            "names.counts",
            [np.array(list(x.names.values()), np.float64) for x in lines],
            np.float64,
        )
        out.value("languages", [line.languages for line in lines])

    @staticmethod
    def load_all(source: Reader) -> list[Storyline]:
        ids = strings(source.value("ids"))
        started = source.times("started")
        latest = source.times("latest")
        sizes = source.array("size", np.int64).tolist()
        counts = source.array("stories.count", np.int64).tolist()
        stories = strings(source.value("stories"))
        totals = source.optional("total", EMBEDDING_SUM)
        keys = source.ragged("names.keys", np.int64)
        weights = source.ragged("names.counts", np.float64)
        languages = source.value("languages")
        same_length(ids, started, latest, sizes, counts, totals, keys, weights, languages)
        if not all(
            isinstance(x, dict) and all(isinstance(v, float | int) for v in x.values())
            for x in languages
        ):
            raise SnapshotError("storyline languages in the snapshot are malformed")
        if sum(counts) != len(stories):
            raise SnapshotError("storylines in the snapshot do not add up to their stories")
        lines: list[Storyline] = []
        at = 0
        for i, line_id in enumerate(ids):
            lines.append(
                Storyline(
                    line_id,
                    some_time(started[i]),
                    some_time(latest[i]),
                    size=sizes[i],
                    stories=set(stories[at : at + counts[i]]),
                    total=totals[i],
                    names=dict(zip(keys[i].tolist(), weights[i].tolist(), strict=True)),
                    languages={str(k): float(v) for k, v in languages[i].items()},
                )
            )
            at += counts[i]
        return lines

    def add(
        self,
        published: datetime,
        vector: np.ndarray | None,
        names: Iterable[int],
        memory: int,
        lang: str = "",
    ) -> None:
        keep = 1.0 - 1.0 / memory
        self.names = _decayed(self.names, keep)
        for key in names:
            self.names[key] = self.names.get(key, 0.0) + 1.0
        self._trim_names()
        self.languages = _decayed(self.languages, keep)
        if lang:
            self.languages[lang] = self.languages.get(lang, 0.0) + 1.0
        self.size += 1
        self.latest = max(self.latest, published)
        self.started = min(self.started, published)
        if vector is not None:
            vector = np.asarray(vector).astype(EMBEDDING_SUM)  # a copy, never the caller's
            if self.total is None:
                self.total = vector
            else:
                self.total *= EMBEDDING_SUM(1.0 - 1.0 / memory)
                self.total += vector
            self.total_norm = None

    def absorb(self, other: Storyline, memory: int) -> None:
        """Take in a storyline found to be the same one: its reports count as the latest."""
        self.size += other.size
        self.latest = max(self.latest, other.latest)
        self.started = min(self.started, other.started)
        self.stories |= other.stories
        _add_counts(self.names, other.names)
        self._trim_names()
        _add_counts(self.languages, other.languages)
        if other.total is not None:
            if self.total is None:
                self.total = other.total.copy()
            else:
                self.total *= EMBEDDING_SUM((1.0 - 1.0 / memory) ** min(other.size, 4 * memory))
                self.total += other.total
            self.total_norm = None

    def _trim_names(self) -> None:
        if len(self.names) > NAMES_KEPT:
            heaviest = sorted(self.names.items(), key=lambda kw: (-kw[1], kw[0]))[:NAMES_KEPT]
            self.names = dict(heaviest)

    @property
    def unit(self) -> np.ndarray | None:
        if self.total is None:
            return None
        as32 = self.total.astype(np.float32)
        if self.total_norm is None:
            self.total_norm = math.sqrt(float(as32 @ as32))
        norm = self.total_norm
        return as32 / np.float32(norm) if norm else None


def _decayed(counts: dict[K, float], keep: float) -> dict[K, float]:
    """Decayed counts after one more report: each times `keep`, the faintest forgotten."""
    return {k: w * keep for k, w in counts.items() if w * keep > NAMES_KEPT_ABOVE}


def _add_counts(into: dict[K, float], other: Mapping[K, float]) -> None:
    for key, w in other.items():
        into[key] = into.get(key, 0.0) + w


def counts_cosine(a: Mapping[Any, float], b: Mapping[Any, float]) -> float:
    """The cosine of two storylines' decayed counts of names or languages (0 when either
    has none)."""
    if not a or not b:
        return 0.0
    small, big = (a, b) if len(a) <= len(b) else (b, a)
    dot = sum(w * big.get(k, 0.0) for k, w in small.items())
    return dot / math.sqrt(sum(w * w for w in a.values()) * sum(w * w for w in b.values()))


def score(line: Storyline, other: Storyline, rule: Rule) -> float:
    """How strongly two storylines are one: the cosine of their embedding centroids,
    plus `rule.names` times the cosine of their name counts less `rule.names_floor`
    (once both hold two reports), less `rule.decay` per day between them, less
    `rule.lone` when either holds a single report, plus `rule.cross` times how little
    their languages overlap (nothing when either has reports of no known language)."""
    a, b = line.unit, other.unit
    if a is None or b is None:
        return 0.0
    bonus = 0.0
    if min(line.size, other.size) < NAMES_FROM_REPORTS:
        bonus = -rule.lone
    elif rule.names:
        bonus = rule.names * (counts_cosine(line.names, other.names) - rule.names_floor)
    if rule.cross and line.languages and other.languages:
        bonus += rule.cross * (1.0 - counts_cosine(line.languages, other.languages))
    first, second = sorted((line, other), key=lambda s: s.started)
    apart_days = max((second.started - first.latest).total_seconds(), 0.0) / 86400.0
    return float(a @ b) + bonus - rule.decay * apart_days


class StorylineIndex:
    """The live storylines, which story of the assigner is in which, and the links between them.

    Bounded like the story level: a storyline idle for `window_days` is forgotten,
    at most `max_storylines` live (the least recently active go first), and only
    the most recently active `shelf_rows` are scanned for links.
    """

    # What a snapshot saves of it, and what it rebuilds (see cluster/snapshot.py).
    SNAPSHOT: ClassVar = (
        "_lines _of_story _shelf _changed _by_latest _activity",
        "policy _rule _window _max _changed_cap",
    )

    def __init__(
        self,
        method: str,
        policy: StorylinePolicy | None = None,
        *,
        shelf_rows: int,
        dim: int,
        max_storylines: int,
    ) -> None:
        self.policy = policy or load_policy()
        self._rule = self.policy.for_method(method)
        self._lines: dict[str, Storyline] = {}
        self._of_story: dict[str, str] = {}  # live story id -> its storyline's id
        self._shelf = EmbeddingShelf(shelf_rows, dim) if self._rule is not None else None
        self._changed: dict[str, None] = {}  # storylines that took reports since `link`
        self._changed_cap = shelf_rows
        self._by_latest: list[tuple[datetime, str]] = []  # lazy heap: stale rows skipped
        self._window = timedelta(days=self.policy.window_days)
        self._activity: dict[str, None] = {}  # storyline ids, least recently active first
        self._max = max_storylines

    def save(self, out: Writer) -> None:
        out.state_of(self)
        Storyline.save_all(out.at("lines"), list(self._lines.values()))
        out.value("of_story.stories", list(self._of_story))
        out.value("of_story.lines", list(self._of_story.values()))
        out.value("changed", list(self._changed))
        out.times("by_latest.at", (at for at, _ in self._by_latest))
        out.value("by_latest.ids", [line_id for _, line_id in self._by_latest])
        out.value("activity", list(self._activity))
        out.value("shelf", self._shelf is not None)
        if self._shelf is not None:
            self._shelf.save(out.at("shelf"))

    def load(self, source: Reader) -> None:
        lines = Storyline.load_all(source.at("lines"))
        stories = strings(source.value("of_story.stories"))
        of_lines = strings(source.value("of_story.lines"))
        times = source.times("by_latest.at")
        heap_ids = strings(source.value("by_latest.ids"))
        same_length(stories, of_lines)
        same_length(times, heap_ids)
        if bool(source.value("shelf")) != (self._shelf is not None):
            raise SnapshotError("the snapshot's storylines were made under another method")
        if self._shelf is not None:
            self._shelf.load(source.at("shelf"))
        self._lines = {line.id: line for line in lines}
        self._of_story = dict(zip(stories, of_lines, strict=True))
        self._changed = dict.fromkeys(strings(source.value("changed")))
        self._by_latest = [(some_time(t), i) for t, i in zip(times, heap_ids, strict=True)]
        self._activity = dict.fromkeys(strings(source.value("activity")))

    def of(self, story_id: str) -> str:
        """The storyline a story is in (a story not seen yet is its own)."""
        return self._of_story.get(story_id, story_id)

    def get(self, storyline_id: str) -> Storyline | None:
        return self._lines.get(storyline_id)

    def place(
        self,
        story_id: str,
        published: datetime,
        vector: np.ndarray | None,
        names: np.ndarray = NO_KEYS,
        *,
        lang: str = "",
        storyline_id: str | None = None,
    ) -> str:
        """Count a report (in language `lang`, "" if unknown) placed in `story_id` in the
        story's storyline, its centred embedding `vector` seen through the policy's
        space; returns its id.

        A story new to the index starts its own storyline, or joins `storyline_id`
        (a stored decision replayed).
        """
        line_id = self._of_story.get(story_id) or storyline_id or story_id
        line = self._lines.get(line_id)
        if line is None:
            line = self._lines[line_id] = Storyline(line_id, published, published)
        if story_id not in self._of_story:
            self._of_story[story_id] = line_id
            line.stories.add(story_id)
        if vector is not None and self.policy.space is not None:
            vector = self.policy.space @ np.asarray(vector, np.float32)
        self._add(line, published, vector, names.tolist(), lang)
        self._changed[line_id] = None
        if len(self._changed) > self._changed_cap:
            # Nobody links (a replay of a big window): stay bounded, as the story
            # level does, and forget the oldest change. Only the most recently
            # active storylines are on the shelf that `link` scans for each.
            del self._changed[next(iter(self._changed))]
        if self._shelf is not None and (unit := line.unit) is not None:
            self._shelf.put(line_id, unit)
        while len(self._lines) > self._max:
            self._drop(next(iter(self._activity)))
        return line_id

    def touch(self, story_id: str, published: datetime) -> str:
        """A copy placed in `story_id` keeps its storyline live; returns its id."""
        line = self._lines.get(self.of(story_id))
        if line is not None:
            self._add(line, published, None, (), count=False)
            return line.id
        return self.of(story_id)

    def merge_stories(self, gone: str, into: str) -> tuple[str, str] | None:
        """Two stories of the assigner merged: their storylines become one if they were
        two. Returns (absorbed storyline, the one it went into), or None."""
        line_gone, line_into = self.of(gone), self.of(into)
        self._forget_story(gone)
        if line_gone == line_into or line_gone not in self._lines:
            return None
        return self._join(self._lines[line_gone], self._lines[line_into])

    def forget_story(self, story_id: str) -> None:
        """A story expired: its storyline lives on while the window lasts."""
        self._forget_story(story_id)

    def link(self) -> list[tuple[str, str]]:
        """Join each storyline that took reports since the last call to its nearest live
        storyline, if their score reaches the join. Returns (absorbed, into) pairs.

        A storyline that absorbed another has changed too, and meets its nearest
        again in the same call, until no join is left to make: the state a call
        leaves is the same whenever the next one comes, so a leader restored from
        a snapshot, which links first thing, decides as the one that saved it.
        Each round joins two storylines into one, so the rounds end.
        """
        if self._rule is None or self._shelf is None:
            self._changed = {}
            return []
        merges: list[tuple[str, str]] = []
        while self._changed:
            changed, self._changed = list(self._changed), {}
            for start in range(0, len(changed), AHEAD):
                self._link_block(changed[start : start + AHEAD], self._rule, self._shelf, merges)
        return merges

    def _link_block(
        self,
        line_ids: list[str],
        rule: Rule,
        shelf: EmbeddingShelf,
        merges: list[tuple[str, str]],
    ) -> None:
        """`link` the storylines of `line_ids` in turn. Their nearest storylines are found
        together first, on the shelf as it stands; after a join has changed the shelf,
        those of the rest are found again one by one."""
        live = [line for line in map(self._lines.get, line_ids) if line is not None]
        units = [line.unit for line in live]  # None: without embeddings
        lines = [line for line, unit in zip(live, units, strict=True) if unit is not None]
        given = [unit for unit in units if unit is not None]
        ahead = shelf.nearest_each(np.stack(given), CANDIDATES) if given else []
        joined = False
        for line, nearest in zip(lines, ahead, strict=True):
            if self._lines.get(line.id) is not line:
                continue  # absorbed earlier in this pass
            unit = line.unit
            if unit is None:
                continue
            best: Storyline | None = None
            best_score = rule.join
            for other_id in shelf.nearest(unit, CANDIDATES) if joined else nearest:
                other = self._lines.get(other_id)
                if other is None or other.id == line.id:
                    continue
                if line.latest - other.latest > self._window:
                    continue  # idle past the window: it takes no more stories
                value = score(line, other, rule)
                if value >= best_score:
                    best, best_score = other, value
            if best is not None:
                merges.append(self._join(line, best))
                joined = True

    def expire(self, now: datetime) -> None:
        """Forget storylines idle for longer than the window."""
        horizon = now - self._window
        while self._by_latest and self._by_latest[0][0] < horizon:
            latest, line_id = heapq.heappop(self._by_latest)
            line = self._lines.get(line_id)
            if line is not None and line.latest == latest:  # else a later report moved it on
                self._drop(line_id)

    def _add(
        self,
        line: Storyline,
        published: datetime,
        vector: np.ndarray | None,
        names: Iterable[int],
        lang: str = "",
        *,
        count: bool = True,
    ) -> None:
        moved = published > line.latest or line.size == 0
        self._activity.pop(line.id, None)
        self._activity[line.id] = None
        if count:
            line.add(published, vector, names, self.policy.memory, lang)
        else:
            line.latest = max(line.latest, published)
        if moved:
            self._push_latest(line)

    def _push_latest(self, line: Storyline) -> None:
        heapq.heappush(self._by_latest, (line.latest, line.id))
        if len(self._by_latest) > 2 * len(self._lines) + COMPACT_SLACK:
            # Stale rows outnumber live ones: keep one row per live storyline, the
            # only ones expiry would act on (as `StoryIndex` does).
            self._by_latest = [(x.latest, x.id) for x in self._lines.values()]
            heapq.heapify(self._by_latest)

    def ids(self) -> list[str]:
        """The ids of the live storylines."""
        return list(self._lines)

    def join_into(self, gone: str, into: str) -> bool:
        """Join storyline `gone` into `into`, which keeps its id: a join the store made
        that this state missed (see `StoryAssigner.catch_up`). False when `into` is not
        live here; nothing to do when `gone` is not."""
        line, other = self._lines.get(gone), self._lines.get(into)
        if line is None or line is other:
            return True
        if other is None:
            return False
        self._fold(line, other)
        return True

    def _join(self, a: Storyline, b: Storyline) -> tuple[str, str]:
        # The larger keeps its id (ties: the earlier), so the published timeline of a
        # long storyline keeps its address as young ones join it.
        into, gone = sorted((a, b), key=lambda s: (-s.size, s.started, s.id))
        self._fold(gone, into)
        return gone.id, into.id

    def _fold(self, gone: Storyline, into: Storyline) -> None:
        later = gone.latest > into.latest
        into.absorb(gone, self.policy.memory)
        if later:
            self._push_latest(into)
        for story_id in gone.stories:
            self._of_story[story_id] = into.id
        self._drop(gone.id)
        self._changed[into.id] = None
        if self._shelf is not None and (unit := into.unit) is not None:
            self._shelf.put(into.id, unit)

    def _drop(self, line_id: str) -> None:
        line = self._lines.pop(line_id)
        self._activity.pop(line_id, None)
        for story_id in line.stories:
            if self._of_story.get(story_id) == line_id:
                del self._of_story[story_id]
        self._changed.pop(line_id, None)
        if self._shelf is not None:
            self._shelf.remove(line_id)

    def _forget_story(self, story_id: str) -> None:
        line_id = self._of_story.pop(story_id, None)
        line = None if line_id is None else self._lines.get(line_id)
        if line is not None:
            line.stories.discard(story_id)
