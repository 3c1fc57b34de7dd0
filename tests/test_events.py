"""Events inside a story: hand-written reports grouped by the shipped event policy."""

from __future__ import annotations

import json
from dataclasses import replace
from datetime import UTC, datetime, timedelta
from pathlib import Path

import numpy as np
import pytest

from aggregator.cluster import Tuning, recommended_threshold
from aggregator.cluster.embedding import LanguageCentring, embed
from aggregator.cluster.events import (
    EVENTS_MODEL,
    EventIndex,
    EventPolicy,
    EventReport,
    load_policy,
    read_policy,
)
from aggregator.cluster.features import EMPTY, FeatureWeights, Featuriser, key_array
from aggregator.errors import ModelError
from aggregator.settings import ClusterSettings
from aggregator.store import Store
from aggregator.types import Assignment, ClusterDoc
from aggregator_eval.hard_cases import event_steps, events_of, load_cases

T0 = datetime(2024, 8, 6, 8, 0, tzinfo=UTC)
STORY = "kursk-incursion"


def reports(texts: list[tuple[float, str, str, str]]) -> list[EventReport]:
    """Reports as the embedding method reads them: (hours after T0, language, headline, lead).

    Vectors are centred on each language's running mean, as the clusterer centres them.
    """
    docs = [
        ClusterDoc(
            str(i), title, text, f"https://x.example/{i}", T0 + timedelta(hours=h), "x", lang
        )
        for i, (h, lang, title, text) in enumerate(texts)
    ]
    featuriser = Featuriser(FeatureWeights())
    centring = LanguageCentring()
    out = []
    for doc, raw in zip(docs, embed(docs), strict=True):
        counted = featuriser.counts(doc)
        featuriser.learn(counted)
        centring.learn(doc.lang, raw)
        row = centring.centre(doc.lang, raw)
        grams = featuriser.vector(counted.grams)
        days = key_array(counted.days)
        out.append(EventReport(doc.id, doc.published, row, grams, days, lang=doc.lang))
    return out


def place_all(items: list[EventReport], method: str = "embedding") -> list[str]:
    index = EventIndex(method)
    return [index.place(STORY, report).event_key for report in items]


HARD_CASES = Path(__file__).resolve().parent.parent / "benchmarks" / "data" / "hard-cases.json"
CASES = {case.name: case for case in load_cases(HARD_CASES, "event")}


# Each case is a hard negative of the issue: a regional and then a federal emergency
# hours apart, which the multilingual embedding rates about as alike as one
# decision's reports across languages; two bridges struck two days apart. The event
# fit never chooses a policy that breaks one (benchmarks/cluster.py); this checks the
# policy shipped, the reports placed by the story level as the worker places them.
@pytest.mark.parametrize("name", sorted(CASES))
def test_the_shipped_policy_keeps_every_hard_case(name: str) -> None:
    case = CASES[name]
    settings = ClusterSettings(method="embedding", threshold=recommended_threshold("embedding"))
    steps = event_steps(case, settings, Tuning(), embed(list(case.docs)))
    assert case.broken(events_of(steps, "embedding")) == [], case.why


# The other side of the same limit: the join that keeps look-alike happenings in one
# language apart (0.62, less 0.25 a day since the event began) asks a follow-up in
# the event's language 22 hours on for a cosine of 0.85; this one meets it at 0.62.
@pytest.mark.xfail(
    strict=True, reason="a next-day follow-up in one language reads as the next happening"
)
def test_a_follow_up_next_day_joins_its_event() -> None:
    keys = place_all(reports([
        (0, "en", "Russia declares a federal emergency over the Kursk incursion",
         "The federal emergency regime covers the whole Kursk region."),
        (22, "en", "Federal emergency in Kursk region: evacuation continues",
         "A day after the federal emergency was declared, buses left the Kursk region border towns."),
    ]))  # fmt: skip
    assert keys == ["0", "0"]


# -- the rules, on synthetic embeddings --------------------------------------------------

UNIT = np.eye(4, dtype=np.float32)


def embedded(doc_id: str, hours: float, row: np.ndarray, days: tuple[int, ...] = ()) -> EventReport:
    return EventReport(doc_id, T0 + timedelta(hours=hours), row, EMPTY, key_array(days))


def test_an_event_idle_longer_than_the_window_takes_no_follow_up() -> None:
    # Without the age decay, so that the window alone decides.
    policy = load_policy()
    window = policy.window_hours
    index = EventIndex("embedding", replace(policy, age={"embedding": 0.0}))
    assert index.place(STORY, embedded("a", 0, UNIT[0])).new_event
    assert not index.place(STORY, embedded("b", window - 1, UNIT[0])).new_event
    # measured from the event's latest report, "b"
    assert index.place(STORY, embedded("c", 2 * window, UNIT[0])).new_event


def test_a_merged_story_s_event_joins_the_same_happening_and_only_that() -> None:
    index = EventIndex("embedding")
    index.place("a", embedded("crossing-en", 0, UNIT[0]))
    index.place("b", embedded("crossing-uk", 1, UNIT[0]))  # the same happening, apart
    index.place("b", embedded("depot-uk", 2, UNIT[2]))  # another one
    index.place("b", embedded("crossing-uk-2", 3, UNIT[0]))

    assert index.merge_story("b", "a") == [("crossing-uk", "crossing-en")]
    keys = {e.key: e.size for e in index.events("a")}
    assert keys == {"crossing-en": 3, "depot-uk": 1}
    assert index.copy_of("crossing-uk-2") == "crossing-en", "a copy finds the merged event"
    assert index.place("a", embedded("later", 4, UNIT[0])).event_key == "crossing-en"


def test_headlines_naming_other_calendar_days_are_other_events() -> None:
    index = EventIndex("embedding")
    first = index.place(STORY, embedded("a", 0, UNIT[0], days=(806,)))
    other = index.place(STORY, embedded("b", 1, UNIT[0], days=(807,)))
    same = index.place(STORY, embedded("c", 2, UNIT[0], days=(806,)))
    assert other.new_event and same.event_key == first.event_key


def at_cosine(value: float) -> np.ndarray:
    """A unit row whose cosine with UNIT[0] is `value`."""
    return np.float32(value) * UNIT[0] + np.float32(np.sqrt(1.0 - value * value)) * UNIT[1]


def test_a_report_in_another_language_meets_a_lower_bar() -> None:
    # Between the two bars: too far for a report in the event's language, near
    # enough for one in another, whose embedding keeps some of its language.
    rule = load_policy().for_method("embedding")
    assert rule.cross > 0
    row = at_cosine(rule.join - rule.cross / 2)
    first = replace(embedded("en", 0, UNIT[0]), lang="en")
    for lang, joins in (("en", False), ("uk", True), ("", False)):
        index = EventIndex("embedding")
        index.place(STORY, first)
        placed = index.place(STORY, replace(embedded(lang or "x", 0.5, row), lang=lang))
        assert placed.new_event is not joins, lang


def test_a_bare_headline_meets_a_lower_bar() -> None:
    # Two headlines of one happening without their leads share fewer words, and meet
    # lower, than the same reports with them: between the two bars, a report joins
    # when it or the core report it meets is a bare headline, and not otherwise.
    rule = load_policy().for_method("embedding")
    assert rule.short > 0
    row = at_cosine(rule.join - rule.short / 2)
    for first_bare, second_bare in ((False, False), (True, False), (False, True), (True, True)):
        index = EventIndex("embedding")
        index.place(STORY, replace(embedded("a", 0, UNIT[0]), bare=first_bare))
        placed = index.place(STORY, replace(embedded("b", 0.5, row), bare=second_bare))
        assert placed.new_event is not (first_bare or second_bare), (first_bare, second_bare)


HEADLINE = "Drone strike sets oil depot ablaze"


@pytest.mark.parametrize(
    ("title", "text", "bare"),
    [
        (HEADLINE, "", True),
        (HEADLINE, "  Drone strike   sets oil depot ablaze ", True),  # the headline again
        (HEADLINE, "Drone strike sets oil depot ablaze - North Wire", True),  # and the outlet
        (HEADLINE, "The fire at the Lgov depot burned for six hours.", False),
        # Written without spaces: a sentence is many words, not one.
        ("东京股市暴跌", "东京股市周一创下1987年以来最大跌幅", False),
        ("东京股市暴跌", "东京股市暴跌", True),
    ],
)
def test_a_report_is_bare_when_its_feed_gives_no_lead(title: str, text: str, bare: bool) -> None:
    from aggregator.cluster import StoryAssigner
    from aggregator.settings import ClusterSettings

    doc = ClusterDoc("a", title, text, "https://x.example/a", T0, "x")
    assigner = StoryAssigner(ClusterSettings(method="tfidf"))
    report = EventReport.from_prepared(assigner._prepare(doc, (), None, learn=False))
    assert report.bare is bare


def test_a_report_is_weighed_against_the_events_first_reports_not_its_drift() -> None:
    rule = load_policy().for_method("embedding")
    index = EventIndex("embedding")
    for n in range(rule.core):
        index.place(STORY, embedded(f"core{n}", n * 0.1, UNIT[0]))
    # Follow-ups that drift away from what the event was still join it...
    drift = at_cosine(rule.join + 0.02)
    assert index.place(STORY, embedded("drift", 1, drift)).event_key == "core0"
    # ...but a report like them and unlike its first reports is another happening.
    far = at_cosine(rule.join - 0.2) @ at_cosine(rule.join + 0.02)
    assert far > rule.join  # close to the drifted follow-up, not to the event's core
    assert index.place(STORY, embedded("other", 1.5, at_cosine(rule.join - 0.2))).new_event


def test_a_look_alike_two_days_into_an_event_founds_another() -> None:
    rule = load_policy().for_method("embedding")
    assert rule.age > 0
    row = at_cosine(min(rule.join + rule.age * 0.5, 0.99))
    index = EventIndex("embedding")
    for n in range(rule.core):
        index.place(STORY, embedded(f"core{n}", n * 0.1, UNIT[0]))
    # A report this close to the event's first reports joins within hours...
    assert index.place(STORY, embedded("soon", 3, row)).event_key == "core0"
    # ...and as close a day and a half after the event began is the next happening.
    assert index.place(STORY, embedded("later", 36, row)).new_event


def outlet_report(doc_id: str, hours: float, row: np.ndarray, outlet: str) -> EventReport:
    return replace(embedded(doc_id, hours, row), outlet=outlet)


def test_two_happenings_in_one_region_on_one_day_stay_two_events_of_one_storyline() -> None:
    # A drone strike on a depot and a troop crossing, both "in Kursk region": the
    # Russian outlet's two reports read alike enough to join (its language, its
    # wording, the one place), while each happening's reports in other languages
    # read like their own happening only.
    rule = load_policy().for_method("embedding")
    strike, crossing = UNIT[0], at_cosine(min(rule.join + 0.1, 0.99))
    index = EventIndex("embedding")
    placed = [
        index.place(STORY, outlet_report(doc_id, hours, row, outlet))
        for doc_id, hours, row, outlet in [
            ("strike-ru", 0.0, strike, "baltic-observer"),
            ("crossing-ru", 1.5, crossing, "baltic-observer"),
            ("strike-en", 2.0, strike, "northwire"),
            ("strike-uk", 3.0, strike, "kyiv-ranok"),
            ("crossing-en", 3.5, crossing, "northwire"),
            ("crossing-uk", 6.0, crossing, "kyiv-ranok"),
            # The first outlet's follow-up joins once others have reported the strike.
            ("strike-ru-update", 7.0, strike, "baltic-observer"),
        ]
    ]
    keys = [p.event_key for p in placed]
    assert keys[0] == keys[2] == keys[3] == keys[6] == "strike-ru"
    assert keys[1] == keys[4] == keys[5] == "crossing-ru"
    # One storyline holds both events, the strike's with its ru, en and uk reports.
    assert {e.key: e.size for e in index.events(STORY)} == {"strike-ru": 4, "crossing-ru": 3}


def test_events_stay_inside_their_story_until_the_stories_merge() -> None:
    index = EventIndex("embedding")
    index.place("s1", embedded("a", 0, UNIT[0]))
    assert index.place("s2", embedded("b", 1, UNIT[0])).new_event
    assert {e.key for e in index.events("s2")} == {"b"}
    index.merge_story("s2", "s1")
    assert {e.key for e in index.events("s1")} == {"a"}
    assert index.events("s2") == []


def test_restore_replays_stored_events() -> None:
    index = EventIndex("embedding")
    index.restore(STORY, embedded("a", 0, UNIT[0]), "a")
    index.restore(STORY, embedded("b", 1, UNIT[1]), "b")
    assert index.place(STORY, embedded("c", 2, UNIT[1])).event_key == "b"


def test_expire_forgets_exactly_the_events_idle_past_the_window() -> None:
    window = load_policy().window_hours
    index = EventIndex("embedding")
    index.place("s1", embedded("old", 0, UNIT[0]))
    index.place("s1", embedded("kept", 1, UNIT[1]))
    index.place("s1", embedded("kept-on", 1.5, UNIT[1]))  # moves "kept" on
    index.place("s2", embedded("moved", 0.5, UNIT[2]))
    index.merge_story("s2", "s1")  # its event now lives in s1
    index.place("s3", embedded("lone", 0.2, UNIT[3]))
    index.expire(T0 + timedelta(hours=window + 1.2))
    assert [e.key for e in index.events("s1")] == ["kept"]
    assert index.events("s3") == []
    index.expire(T0 + timedelta(hours=window + 2))
    assert index.events("s1") == []


def test_the_shipped_model_records_its_data_split_and_command() -> None:
    body = json.loads(EVENTS_MODEL.read_text(encoding="utf-8"))
    policy = read_policy(EVENTS_MODEL)
    assert set(policy.join) == set(policy.decay) == set(policy.cross) == {"embedding", "tfidf"}
    assert "--fit-events" in body["notes"]["command"] and set(body["meaning"]) >= set(body) - {
        "meaning",
        "notes",
    }
    for method in policy.join:  # each fitted on training parts only, which its notes name
        fit = body["notes"]["fits"][method]
        assert "train" in fit["split"] and len(fit["split"]) == len(fit["data"])


def test_a_broken_model_file_names_the_file_and_the_fix(tmp_path: Path) -> None:
    path = tmp_path / "events.json"
    path.write_text('{"window_hours": 48, "join": {}}', encoding="utf-8")
    with pytest.raises(ModelError, match=r"events\.json.*--fit-events"):
        read_policy(path)
    policy = EventPolicy(
        48.0,
        {"tfidf": 0.2},
        {"tfidf": 0.0},
        {"tfidf": 3},
        {"tfidf": 0.0},
        {"tfidf": 0.0},
        {"tfidf": 0.0},
    )
    with pytest.raises(ValueError, match="embedding"):
        EventIndex("embedding", policy)


# -- the clusterer: every placed report gets an event key, kept across a restart ----------

OWN_SET = Path(__file__).resolve().parent.parent / "benchmarks" / "data" / "conflict-2024-08.jsonl"


def test_the_clusterer_places_each_report_in_an_event_as_the_evaluation_does() -> None:
    from aggregator.cluster import RECOMMENDED_THRESHOLDS, StoryAssigner
    from aggregator.settings import ClusterSettings
    from aggregator_eval.evaluate import load_levels, place_events, run_stories, stream_order

    labelled = load_levels(OWN_SET, "event", "heldout")
    docs, _ = stream_order(labelled.docs, labelled.docs, None)
    settings = ClusterSettings(method="tfidf", threshold=RECOMMENDED_THRESHOLDS["tfidf"])
    assigner = StoryAssigner(settings)
    steps = run_stories(assigner, docs, None, merge=True)
    assert all(step.event_key for step in steps)
    # What the store holds: each key as placed, re-pointed by the merges after it.
    renamed = dict(assigner.event_merges())
    stored = []
    for step in steps:
        key = step.event_key
        while key in renamed:
            key = renamed[key]
        stored.append(key)
    assert stored == place_events(steps, EventIndex("tfidf"))
    # A story holds several events; an event never spans two stories at once.
    assert len({s.event_key for s in steps}) > len({s.story_id for s in steps})


def test_a_restored_clusterer_keeps_the_stored_events() -> None:
    from aggregator.cluster import RECOMMENDED_THRESHOLDS, StoryAssigner
    from aggregator.settings import ClusterSettings

    settings = ClusterSettings(method="tfidf", threshold=RECOMMENDED_THRESHOLDS["tfidf"])
    first = StoryAssigner(settings)
    docs = [
        ClusterDoc("1", "Strike destroys Seym bridge in Kursk region", "", "", T0, "a", "en"),
        ClusterDoc("2", "Seym bridge in Kursk region destroyed by strike", "", "", T0, "b", "en"),
    ]
    stored = [first.add(doc) for doc in docs]
    assert stored[0].event_key == stored[1].event_key == "1"
    later = ClusterDoc(
        "3", "Kursk region: Seym bridge strike destroys crossing", "", "", T0, "c", "en"
    )
    again = StoryAssigner(settings)
    # Stored under another key (an earlier policy decided so): the replay keeps it.
    again.restore(docs[0], stored[0])
    again.restore(docs[1], replace(stored[1], event_key="2"))
    assert again.add(later).event_key in {"1", "2"}
    assert first.add(later).event_key == "1"


def test_a_stored_event_key_comes_back_with_its_entry(store: Store) -> None:
    from aggregator.settings import SourceConfig
    from aggregator.types import EntryData, PollOutcome

    store.sync_sources([SourceConfig(name="Kyiv Wire", url="http://kw.test/feed")], T0)
    [request] = store.claim_due(T0, "w", lease_s=60, limit=1)
    listed = [
        EntryData(
            key=key,
            title=title,
            link=f"http://kw.test/{key}",
            summary_html=title,
            text=title,
            author=None,
            published=T0 + timedelta(minutes=n),
            updated=None,
            content_hash=key,
        )  # fmt: skip
        for n, (key, title) in enumerate(
            [("a", "Strike destroys Seym bridge"), ("b", "Seym bridge destroyed by strike")]
        )
    ]
    status = PollOutcome(checked_at=T0, next_check_at=T0 + timedelta(hours=1), status="ok")
    store.record_poll(request.source_id, status, listed, owner="w")
    first, second = store.pending_docs()
    store.save_assignments(
        [
            Assignment(first.id, first.id, new_story=True, event_key=first.id),
            Assignment(second.id, first.id, event_key=second.id),
        ],
        T0,
    )
    replayed = {doc.id: a.event_key for doc, a, _ in store.clustered_since(T0 - timedelta(days=1))}
    assert replayed == {first.id: first.id, second.id: second.id}
