"""Events inside stories: which happening of its story a placed report is about.

The story level follows a developing story; inside each story this module keeps
its events (one act, statement or decision, at one place, on one day, with
follow-ups within about two days). A report already placed in a story meets
that story's recent events and joins the closest one, or founds a new event.

The decision is a pure function of features the clusterer already computes
(`Prepared`: a language-centred embedding, character n-grams, the calendar days
a headline names) and of time; every number it uses is read from the versioned
model file `models/events.json` (see `EventPolicy`), which records the data,
split and command that produced it.
"""

from __future__ import annotations

import heapq
import json
from dataclasses import dataclass, field, replace
from datetime import datetime, timedelta
from functools import lru_cache
from pathlib import Path
from typing import Any, ClassVar, NamedTuple

import numpy as np

from aggregator.cluster.decision import MODEL_DIR, Prepared, read_model_file
from aggregator.cluster.embedding import lead
from aggregator.cluster.features import EMPTY, Vector
from aggregator.cluster.snapshot import (
    Reader,
    SnapshotError,
    Writer,
    same_length,
    some_time,
    strings,
)
from aggregator.cluster.stories import COMPACT_SLACK, shared_keys

EVENTS_MODEL = MODEL_DIR / "events.json"
MEMBER_EMBEDDING = np.float16  # how an event keeps its members' embeddings
COPIES_REMEMBERED = 20_000  # recent reports whose event a copy can find, as dedupe's window


# What each number of models/events.json means, written into the file itself.
FIELDS = {
    "window_hours": "an event takes follow-ups for this long after its latest report, and no report later than this after its first (not fitted)",
    "join": "per method: least score to join an event; the score is the best cosine with "
    "the event's core, its first reports (language-centred embedding, or character n-gram "
    "TF-IDF under tfidf; plus cross for a report in another language, plus short when "
    "either is a bare headline), minus decay times "
    "the days since the event's latest report, minus age times the days since its first",
    "decay": "per method: score lost per day since the event's latest report",
    "age": "per method: score lost per day since the event's first report",
    "cross": "per method: added to the cosine with a core report in another language: a "
    "multilingual embedding puts two languages' reports of one happening further apart "
    "than two reports in one language",
    "short": "per method: added to the cosine with a core report when either of the two is a "
    "bare headline (no description, or one adding fewer than three words to the title): "
    "two headlines of one "
    "happening share fewer words than two headlines with their leads, and meet lower",
    "core": "per method: how many of an event's first reports a new report is compared with "
    "(about one a language of the three our set covers; not fitted)",
    "rules": "headlines naming calendar days, none of them the event's, found another event; "
    "an outlet's report never joins an event whose core only that outlet has reported",
}


class Rule(NamedTuple):
    """The fitted numbers of one method."""

    join: float
    decay: float
    core: int
    age: float
    cross: float
    short: float


@dataclass(frozen=True)
class EventPolicy:
    """The numbers of the event decision, as stored in models/events.json.

    `window_hours`: an event takes follow-ups for this long after its latest
    report (the definition's "about two days"; not fitted). Per clustering
    method: `core`, how many of an event's first reports a new report is
    compared with (not fitted), and the five fitted numbers: `join`, the
    least score at which a report joins an event, the score being the best
    cosine with the event's core, plus `cross` for a core report in another
    language and `short` when either of the two is a bare headline, minus
    `decay` for each day since the event's latest report and `age` for each
    day since its first.
    """

    window_hours: float
    join: dict[str, float]
    decay: dict[str, float]
    core: dict[str, int]
    age: dict[str, float]
    cross: dict[str, float]
    short: dict[str, float]

    def for_method(self, method: str) -> Rule:
        """The fitted numbers of `method`."""
        try:
            return Rule(
                self.join[method],
                self.decay[method],
                self.core[method],
                self.age[method],
                self.cross[method],
                self.short[method],
            )
        except KeyError:
            raise ValueError(
                f"{EVENTS_MODEL.name} has no event threshold for method {method!r}: "
                f"refit it with benchmarks/cluster.py --fit-events"
            ) from None

    def to_json(self, notes: dict[str, object]) -> str:
        body: dict[str, object] = {
            "meaning": FIELDS,
            "window_hours": self.window_hours,
            "join": dict(sorted(self.join.items())),
            "decay": dict(sorted(self.decay.items())),
            "core": dict(sorted(self.core.items())),
            "age": dict(sorted(self.age.items())),
            "cross": dict(sorted(self.cross.items())),
            "short": dict(sorted(self.short.items())),
            "notes": notes,
        }
        return json.dumps(body, indent=1, ensure_ascii=False) + "\n"


def read_policy(path: Path) -> EventPolicy:
    """The policy stored at `path`; an error naming the file and key when it is broken."""

    def build(body: dict[str, Any]) -> EventPolicy:
        return EventPolicy(
            window_hours=float(body["window_hours"]),
            join={str(k): float(v) for k, v in body["join"].items()},
            decay={str(k): float(v) for k, v in body["decay"].items()},
            core={str(k): int(v) for k, v in body["core"].items()},
            age={str(k): float(v) for k, v in body["age"].items()},
            cross={str(k): float(v) for k, v in body["cross"].items()},
            short={str(k): float(v) for k, v in body["short"].items()},
        )

    return read_model_file(path, "event", "benchmarks/cluster.py --fit-events", build)


@lru_cache(maxsize=1)
def load_policy() -> EventPolicy:
    """The shipped event policy."""
    return read_policy(EVENTS_MODEL)


@dataclass(frozen=True, slots=True)
class EventReport:
    """What the event decision reads of a report."""

    doc_id: str
    published: datetime
    embedding: np.ndarray | None  # unit, language-centred; None under the tfidf method
    grams: (
        Vector  # unit TF-IDF over character n-grams: comparable across scripts once transliterated
    )
    days: np.ndarray  # calendar days the headline names (month * 100 + day), ascending
    outlet: str = ""  # the source that published it ("": unknown, never the same as another)
    lang: str = ""  # its language ("": unknown, taken as the same as any other's)
    bare: bool = False  # a headline without a lead (`embedding.lead`)

    SNAPSHOT: ClassVar = (
        "doc_id published embedding grams days outlet lang bare",
        "",
    )  # `Event.save_all`

    @classmethod
    def from_prepared(cls, p: Prepared) -> EventReport:
        # With an embedding the n-grams are never read: not keeping them halves
        # what an event holds per member (an embedding is 1.5 kB).
        grams = EMPTY if p.embedding is not None else p.grams
        doc = p.doc
        bare = not lead(doc)
        return cls(doc.id, doc.published, p.embedding, grams, p.days, doc.source, doc.lang, bare)


@dataclass
class Event:
    """One happening of a story: its key (the founding report's id) and its core."""

    key: str
    story_id: str
    latest: datetime
    size: int = 0
    # When its first report appeared: an event is one day's happening with its
    # follow-ups, so it takes no report more than the window after it began, however
    # steadily a developing story keeps adding to it.
    started: datetime | None = None
    # Its first reports: what the happening is, before follow-ups drift from it.
    core: list[EventReport] = field(default_factory=list)
    days: frozenset[int] = frozenset()

    # What a snapshot saves (`save_all`, `load_all`); every field is saved.
    SNAPSHOT: ClassVar = ("key story_id latest size started core days", "")

    @staticmethod
    def save_all(out: Writer, events: list[Event]) -> None:
        """Many events and their members as a few long arrays, in the order given."""
        if events:
            out.state_of(events[0])
        members = [m for e in events for m in e.core]
        if members:
            out.state_of(members[0])
        out.value("keys", [e.key for e in events])
        out.value("story_ids", [e.story_id for e in events])
        out.times("latest", (e.latest for e in events))
        out.times("started", (e.started for e in events))
        out.array("size", np.array([e.size for e in events], np.int64), np.int64)
        out.ragged("days", [np.array(sorted(e.days), np.int64) for e in events], np.int64)
        out.array("members.count", np.array([len(e.core) for e in events], np.int64), np.int64)
        out.value("members.doc_ids", [m.doc_id for m in members])
        out.times("members.published", (m.published for m in members))
        out.optional("members.embedding", [m.embedding for m in members], MEMBER_EMBEDDING)
        out.ragged("members.grams.keys", [m.grams.keys for m in members], np.int32)
        out.ragged("members.grams.weights", [_gram_weights(m.grams) for m in members], np.float64)
        out.ragged("members.days", [m.days for m in members], np.uint32)
        out.value("members.outlets", [m.outlet for m in members])
        out.value("members.langs", [m.lang for m in members])
        out.array("members.bare", np.array([m.bare for m in members], np.bool_), np.bool_)

    @staticmethod
    def load_all(source: Reader) -> list[Event]:
        keys = strings(source.value("keys"))
        story_ids = strings(source.value("story_ids"))
        latest = source.times("latest")
        started = source.times("started")
        sizes = source.array("size", np.int64).tolist()
        days = source.ragged("days", np.int64)
        counts = source.array("members.count", np.int64).tolist()
        same_length(keys, story_ids, latest, started, sizes, days, counts)
        doc_ids = strings(source.value("members.doc_ids"))
        published = source.times("members.published")
        embeddings = source.optional("members.embedding", MEMBER_EMBEDDING)
        gram_keys = source.ragged("members.grams.keys", np.int32)
        gram_weights = source.ragged("members.grams.weights", np.float64)
        member_days = source.ragged("members.days", np.uint32)
        outlets = strings(source.value("members.outlets"))
        langs = strings(source.value("members.langs"))
        bare = source.array("members.bare", np.bool_).tolist()
        columns = (
            doc_ids,
            published,
            embeddings,
            gram_keys,
            gram_weights,
            member_days,
            outlets,
            langs,
            bare,
        )
        same_length(*columns)
        if sum(counts) != len(doc_ids):
            raise SnapshotError("events in the snapshot do not add up to their members")
        members = [
            EventReport(
                doc_id, some_time(at), vector, Vector(k, w) if len(k) else EMPTY, d, o, lang, b
            )
            for doc_id, at, vector, k, w, d, o, lang, b in zip(*columns, strict=True)
        ]
        events: list[Event] = []
        at_member = 0
        for i, key in enumerate(keys):
            n = counts[i]
            events.append(
                Event(
                    key,
                    story_ids[i],
                    some_time(latest[i]),
                    size=sizes[i],
                    started=started[i],
                    core=members[at_member : at_member + n],
                    days=frozenset(days[i].tolist()),
                )
            )
            at_member += n
        return events

    def add(self, report: EventReport, core: int) -> None:
        if len(self.core) < core:
            if report.embedding is not None and report.embedding.dtype != MEMBER_EMBEDDING:
                # Half precision moves a cosine by about 1e-3 and halves a member's bytes.
                report = replace(report, embedding=report.embedding.astype(MEMBER_EMBEDDING))
            self.core.append(report)
        self.size += 1
        self.latest = max(self.latest, report.published)
        self.days |= frozenset(report.days.tolist())


@dataclass(frozen=True)
class EventPlacement:
    """Where a report went inside its story: an event key, and whether it founded it."""

    event_key: str
    new_event: bool
    similarity: float


def similarity(report: EventReport, event: Event, cross: float = 0.0, short: float = 0.0) -> float:
    """The report's best cosine with the event's core (its first reports), each
    cosine with a core report in another language raised by `cross`, and each
    with a core report when either of the two is a bare headline by `short`.

    The core, not every member: follow-ups drift (the evacuation after the
    emergency, the reaction after the strike), and a look-alike happening of
    the same storyline meets some follow-up closely even when it is far from
    what the event is. The best match, not the mean: an event's first reports
    come in any of three languages, and a report meets the one in its own
    language closest. With the age decay of `score`, both fitted on the
    training part of our set (`benchmarks/cluster.py --fit-events`), the
    held-out events score B-cubed F1 0.88 at precision 0.95, against 0.83 at
    0.85 for the mean over the 16 latest members refitted the same way (whose
    fit takes no age decay). On the training part the mean scores the higher
    F1 (0.94 at precision 1.00, against 0.90 at 0.97): its hundred reports hold
    few look-alike happenings, so the core is a choice of design, not fitted.

    `cross`: even centred on each language's mean, a multilingual embedding
    keeps some of the language in the vector. Within one storyline of our
    training part, reports of one happening meet at a median cosine of 0.62 in
    one language and 0.48 across two, and reports of different happenings at
    0.38 and 0.31: one bar for both is too low for the first and too high for
    the second.
    """
    best = 0.0
    for other in event.core:
        if report.embedding is not None and other.embedding is not None:
            value = float(report.embedding @ other.embedding)
        else:
            value = report.grams.dot(other.grams) if report.grams is not EMPTY else 0.0
        if report.lang and other.lang and report.lang != other.lang:
            value += cross
        if report.bare or other.bare:
            value += short
        best = max(best, value)
    return best


def score(report: EventReport, event: Event, window_hours: float, rule: Rule) -> float | None:
    """How strongly the report belongs to the event; None when a rule rules it out.

    Rules: an event idle longer than the window takes no follow-up; a headline
    naming a calendar day the event's headlines never named, while they named
    one, is another day's happening; and a report never joins an event whose
    core only its own outlet has reported (`own_outlet_only`).

    The score loses `rule.age` a day since the event began: an event is one
    day's happening, and a look-alike of it a day or two later in the same
    storyline (the second bridge over one river, the emergency raised from
    regional to federal, the second gold of one team) is usually the next
    happening, not a follow-up, while follow-ups come mostly within the day.
    """
    gap_h = (report.published - event.latest).total_seconds() / 3600.0
    if gap_h > window_hours:
        return None
    started = event.started or event.latest
    age_h = (report.published - started).total_seconds() / 3600.0
    if age_h > window_hours:
        return None
    if len(report.days) and event.days and not shared_keys(report.days, _days(event.days)):
        return None
    if own_outlet_only(report, event):
        return None
    return (
        similarity(report, event, rule.cross, rule.short)
        - rule.decay * max(gap_h, 0.0) / 24.0
        - rule.age * max(age_h, 0.0) / 24.0
    )


def own_outlet_only(report: EventReport, event: Event) -> bool:
    """Whether the event's core holds only reports of the report's own outlet.

    An outlet reports a happening once; a second report of its own, before any
    other outlet has reported the first, is another happening of the storyline
    (the strike on a depot, then the border crossing, both "in Kursk region"),
    however alike the two read. Two reports of one outlet share its language,
    its wording and the storyline's places, so their cosine says little about
    whether they are one happening; another outlet's report says more. A
    follow-up of the outlet still joins once another outlet has reported the
    happening, or as a copy (dedupe gives a copy its original's event). On our
    set (`benchmarks/cluster.py`) the rule changes no event, in the training or
    the held-out part: there, a happening's first reports come from several
    outlets.
    """
    core = event.core
    return bool(report.outlet and core) and all(m.outlet == report.outlet for m in core)


def decide(
    report: EventReport, events: list[Event], policy: EventPolicy, method: str
) -> tuple[Event | None, float]:
    """The event the report joins (None: it founds one) and its best score."""
    rule = policy.for_method(method)
    best: Event | None = None
    best_score = 0.0
    for event in events:
        value = score(report, event, policy.window_hours, rule)
        if value is not None and (best is None or value > best_score):
            best, best_score = event, value
    if best is None or best_score < rule.join:
        return None, max(best_score, 0.0)
    return best, best_score


def joins_founded_by(
    first: EventReport, report: EventReport, policy: EventPolicy, method: str
) -> bool:
    """Whether `report` joins the event `first` founded, within one story (pair files)."""
    index = EventIndex(method, policy)
    founded = index.place("", first)
    return index.place("", report).event_key == founded.event_key


def _gram_weights(grams: Vector) -> np.ndarray:
    # Without n-grams a report holds the shared EMPTY vector, whose weights are float32.
    return grams.weights if len(grams) else np.zeros(0, np.float64)


def _days(days: frozenset[int]) -> np.ndarray:
    return np.array(sorted(days), np.uint32)


class EventIndex:
    """The live events of every story, placed online in arrival order.

    Events are bounded like stories are: an event idle for longer than the
    policy's window can take no report, so `expire` forgets it.
    """

    # What a snapshot saves of it, and what it rebuilds (see cluster/snapshot.py).
    SNAPSHOT: ClassVar = (
        "_by_story _event_of",
        "policy method _core _window _by_latest _pushed _live",
    )

    def __init__(self, method: str, policy: EventPolicy | None = None) -> None:
        self.policy = policy or load_policy()
        self.method = method
        # A missing method fails here, not at the first report.
        self._core = self.policy.for_method(method).core
        self._by_story: dict[str, list[Event]] = {}
        self._window = timedelta(hours=self.policy.window_hours)
        self._event_of: dict[str, str] = {}  # doc id -> event key, for copies
        # (latest, order, event) each time an event's latest moved: a lazy heap,
        # so expiry looks only at events due, not at every live one per report.
        self._by_latest: list[tuple[datetime, int, Event]] = []
        self._pushed = 0
        self._live = 0  # events in `_by_story`: the heap is rebuilt when stale rows outnumber them

    def save(self, out: Writer) -> None:
        out.state_of(self)
        out.value("stories", list(self._by_story))
        out.array(
            "stories.count", np.array([len(e) for e in self._by_story.values()], np.int64), np.int64
        )
        Event.save_all(out.at("events"), [e for es in self._by_story.values() for e in es])
        out.value("event_of.docs", list(self._event_of))
        out.value("event_of.keys", list(self._event_of.values()))

    def load(self, source: Reader) -> None:
        story_ids = strings(source.value("stories"))
        counts = source.array("stories.count", np.int64).tolist()
        events = Event.load_all(source.at("events"))
        same_length(story_ids, counts)
        if sum(counts) != len(events):
            raise SnapshotError("stories' events in the snapshot do not add up")
        by_story: dict[str, list[Event]] = {}
        at = 0
        for story_id, n in zip(story_ids, counts, strict=True):
            by_story[story_id] = events[at : at + n]
            at += n
        docs = strings(source.value("event_of.docs"))
        keys = strings(source.value("event_of.keys"))
        same_length(docs, keys)
        self._by_story = by_story
        self._event_of = dict(zip(docs, keys, strict=True))
        self._compact()

    def _compact(self) -> None:
        """The expiry heap with each live event once, by its latest report."""
        events = [e for es in self._by_story.values() for e in es]
        self._by_latest = [(event.latest, i, event) for i, event in enumerate(events)]
        heapq.heapify(self._by_latest)
        self._pushed = self._live = len(events)

    def place(self, story_id: str, report: EventReport) -> EventPlacement:
        """Put a report already placed in `story_id` into one of the story's events."""
        events = self._by_story.setdefault(story_id, [])
        event, value = decide(report, events, self.policy, self.method)
        if event is None:
            event = Event(report.doc_id, story_id, report.published, started=report.published)
            events.append(event)
            self._add(event, report, new=True)
            return EventPlacement(event.key, True, round(value, 6))
        self._add(event, report)
        return EventPlacement(event.key, False, round(value, 6))

    def restore(self, story_id: str, report: EventReport, event_key: str) -> None:
        """Replay a stored decision, in the order the decisions were made."""
        events = self._by_story.setdefault(story_id, [])
        event = next((e for e in events if e.key == event_key), None)
        if event is None:
            event = Event(event_key, story_id, report.published, started=report.published)
            events.append(event)
            self._add(event, report, new=True)
        else:
            self._add(event, report)

    def _add(self, event: Event, report: EventReport, *, new: bool = False) -> None:
        latest = event.latest
        event.add(report, self._core)
        if new or event.latest != latest:
            self._pushed += 1
            heapq.heappush(self._by_latest, (event.latest, self._pushed, event))
            self._live += new
            if len(self._by_latest) > 2 * self._live + COMPACT_SLACK:
                self._compact()
        self._remember(report.doc_id, event.key)

    def copy_of(self, duplicate_of: str) -> str | None:
        """The event of the report a copy repeats (a copy is one more report of it)."""
        return self._event_of.get(duplicate_of)

    def _remember(self, doc_id: str, event_key: str) -> None:
        self._event_of[doc_id] = event_key
        if len(self._event_of) > COPIES_REMEMBERED:
            del self._event_of[next(iter(self._event_of))]  # bounded: the oldest goes

    def merge_story(self, gone: str, into: str) -> list[tuple[str, str]]:
        """A story absorbed into another brings its events along. Each joins the
        receiving story's event that its founding report would have joined there,
        else stays its own: two stories that turn out to be one often each hold a
        report of the same happening (in two languages, say). Returns the
        (absorbed event key, into event key) pairs, for the store to re-point."""
        moved = self._by_story.pop(gone, [])
        events = self._by_story.setdefault(into, [])
        # Only the receiving story's own events: two moved events stay apart, as they
        # were when both were in one story.
        receiving = list(events)
        merged: list[tuple[str, str]] = []
        for event in moved:
            event.story_id = into
            founder = event.core[0]
            # Neither event began more than the window before the other: one happening.
            near = [
                e for e in receiving if (e.started or e.latest) - founder.published <= self._window
            ]
            target, _ = decide(founder, near, self.policy, self.method)
            if target is None:
                events.append(event)
            else:
                self._fold(event, target)
                merged.append((event.key, target.key))
        self._rename_copies(dict(merged))
        return merged

    def event_keys(self) -> list[str]:
        """The keys of the live events."""
        return [e.key for events in self._by_story.values() for e in events]

    def move_story(self, gone: str, into: str, renamed: dict[str, str]) -> bool:
        """Story `gone`'s events go to story `into`, as the store moved them (see
        `StoryAssigner.catch_up`): each joins the event `renamed` names for it, or the
        one of its own key already there, else stays its own. False when an event
        `renamed` names is not live here."""
        moved = self._by_story.pop(gone, [])
        events = self._by_story.setdefault(into, [])
        held = {e.key: e for e in events}
        for event in moved:
            event.story_id = into
            key = renamed.get(event.key, event.key)
            target = held.get(key)
            if target is None:
                if key != event.key:
                    return False
                events.append(event)
                held[key] = event
            else:
                self._fold(event, target)
        self._rename_copies(renamed)
        return True

    def _rename_copies(self, renamed: dict[str, str]) -> None:
        """Copies of the reports of a renamed event find the event it joined."""
        if renamed:
            for doc_id, key in self._event_of.items():
                if key in renamed:
                    self._event_of[doc_id] = renamed[key]

    def _fold(self, event: Event, into: Event) -> None:
        """`event`'s reports become `into`'s: its core fills `into`'s, its counts add up."""
        latest = into.latest
        for report in event.core:
            into.add(report, self._core)
        into.size += event.size - len(event.core)
        into.started = min(into.started or into.latest, event.started or event.latest)
        into.days |= event.days
        self._live -= 1  # `event` is gone; its rows in the heap are skipped as stale
        if into.latest != latest:
            self._pushed += 1
            heapq.heappush(self._by_latest, (into.latest, self._pushed, into))

    def expire(self, now: datetime) -> None:
        """Forget events that can take no more reports."""
        horizon = now - self._window
        heap = self._by_latest
        while heap and heap[0][0] < horizon:
            latest, _, event = heapq.heappop(heap)
            if event.latest != latest:
                continue  # a later report moved it on; it is in the heap again
            events = self._by_story.get(event.story_id)
            if events is None:
                continue
            for at, live in enumerate(events):
                if live is event:
                    del events[at]
                    self._live -= 1
                    break
            if not events:
                del self._by_story[event.story_id]

    def events(self, story_id: str) -> list[Event]:
        return list(self._by_story.get(story_id, []))
