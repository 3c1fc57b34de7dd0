"""Evaluation: metric values on tiny examples, file reading, and a whole small run."""

from __future__ import annotations

import json
from dataclasses import replace
from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest

from aggregator.cluster import RECOMMENDED_THRESHOLDS
from aggregator.errors import EvalError
from aggregator.settings import ClusterSettings
from aggregator_eval.evaluate import (
    bcubed_scores,
    evaluate_documents,
    evaluate_file,
    evaluate_pairs,
    load_documents,
    load_labelled,
    pairwise_scores,
)

SETTINGS = ClusterSettings(threshold=RECOMMENDED_THRESHOLDS["tfidf"])


def approx(*values: float) -> Any:
    return pytest.approx(values, abs=1e-9)


def test_pairwise_perfect_clustering() -> None:
    assert pairwise_scores(["a", "a", "b"], [1, 1, 2]) == approx(1.0, 1.0, 1.0)


def test_pairwise_known_answer() -> None:
    # Gold {0,1,2} {3,4}; predicted {0,1} {2,3,4}.
    # Predicted pairs: 01, 23, 24, 34 (4); gold pairs: 01, 02, 12, 34 (4); both: 01, 34.
    gold = ["x", "x", "x", "y", "y"]
    pred = ["p", "p", "q", "q", "q"]
    assert pairwise_scores(gold, pred) == approx(0.5, 0.5, 0.5)


def test_pairwise_all_singletons_claims_nothing() -> None:
    # No predicted pair: nothing wrongly merged (precision 1) and nothing found.
    assert pairwise_scores(["a", "a"], [1, 2]) == approx(1.0, 0.0, 0.0)


def test_pairwise_one_big_cluster() -> None:
    # Gold {0,1} {2,3}; all in one: 6 predicted pairs, 2 of them right.
    assert pairwise_scores(["a", "a", "b", "b"], [1, 1, 1, 1]) == approx(1 / 3, 1.0, 0.5)


def test_bcubed_known_answer() -> None:
    gold = ["x", "x", "x", "y", "y"]
    pred = ["p", "p", "q", "q", "q"]
    # precision per doc: 2/2, 2/2, 1/3, 2/3, 2/3 -> 3.6667 / 5
    # recall per doc:    2/3, 2/3, 1/3, 2/2, 2/2 -> 3.6667 / 5
    p = (1 + 1 + 1 / 3 + 2 / 3 + 2 / 3) / 5
    assert bcubed_scores(gold, pred) == approx(p, p, p)


def test_bcubed_singletons() -> None:
    assert bcubed_scores(["a", "a"], [1, 2]) == approx(1.0, 0.5, 2 / 3)


def test_metrics_refuse_unequal_lengths() -> None:
    with pytest.raises(ValueError, match="2 gold labels but 1"):
        pairwise_scores(["a", "b"], [1])


def test_empty_input_scores_perfect() -> None:
    assert bcubed_scores([], []) == approx(1.0, 1.0, 1.0)
    assert pairwise_scores([], []) == approx(1.0, 1.0, 1.0)


def row(id: str, title: str, minutes: int, cluster: str, **extra: str) -> dict[str, str]:
    return {
        "id": id,
        "title": title,
        "text": "",
        "url": "",
        "published": f"2024-08-06T09:{minutes:02d}:00Z",
        "source": "",
        "host": "",
        "lang": "en",
        "cluster": cluster,
        **extra,
    }


ROWS = [
    row("1", "Ukrainian troops cross border into Kursk region near Sudzha", 0, "kursk"),
    row("2", "Central bank cuts key interest rate as inflation slows", 1, "rate"),
    row("3", "Kursk region: Ukrainian troops push on near Sudzha", 2, "kursk"),
    row("4", "Central bank lowers key interest rate, inflation slowing", 3, "rate"),
    row(
        "5",
        "Ukrainian troops cross border into Kursk region near Sudzha",
        4,
        "kursk",
        source="copycat",
    ),
    row("6", "Drone strike sets oil depot ablaze", 5, "depot"),
]


def write_jsonl(path: Path, rows: list[dict[str, Any]]) -> Path:
    path.write_text("".join(json.dumps(r) + "\n" for r in rows), encoding="utf-8")
    return path


def test_load_documents_reads_every_field(tmp_path: Path) -> None:
    docs, gold = load_labelled(write_jsonl(tmp_path / "d.jsonl", ROWS))
    assert [d.id for d in docs] == ["1", "2", "3", "4", "5", "6"]
    assert gold[:2] == ["kursk", "rate"]
    assert docs[4].source == "copycat"
    assert docs[0].published.utcoffset() is not None
    assert load_documents(tmp_path / "d.jsonl") == docs


def test_numeric_ids_and_missing_optional_fields_are_accepted(tmp_path: Path) -> None:
    path = tmp_path / "d.jsonl"
    path.write_text(
        '{"id": 7, "title": "t", "published": "2024-08-06T09:00:00", "cluster": "c"}\n\n'
    )
    (only,) = load_documents(path)
    assert only.id == "7" and only.text == "" and only.published.tzinfo is not None


@pytest.mark.parametrize(
    ("line", "reason"),
    [
        ("{not json", "not JSON"),
        ("[1, 2]", "expected a JSON object"),
        ('{"id": "1", "title": "t", "cluster": "c"}', "published is missing"),
        ('{"id": "1", "title": "t", "published": "yesterday", "cluster": "c"}', "yesterday"),
        ('{"id": "1", "title": "t", "published": "2024-08-06T09:00:00Z"}', "cluster is missing"),
        (
            '{"id": "1", "title": ["t"], "published": "2024-08-06T09:00:00Z", "cluster": "c"}',
            "title should be a string",
        ),
    ],
)
def test_bad_line_raises_eval_error_naming_file_and_line(
    tmp_path: Path, line: str, reason: str
) -> None:
    path = tmp_path / "bad.jsonl"
    path.write_text(json.dumps(ROWS[0]) + "\n" + line + "\n", encoding="utf-8")
    with pytest.raises(EvalError, match=reason) as caught:
        load_documents(path)
    assert caught.value.file == str(path)
    assert caught.value.line == 2
    assert f"{path}:2" in str(caught.value)


def test_missing_file_raises_eval_error(tmp_path: Path) -> None:
    with pytest.raises(EvalError, match="cannot read"):
        load_documents(tmp_path / "absent.jsonl")


def test_evaluate_file_reports_every_figure(tmp_path: Path) -> None:
    path = write_jsonl(tmp_path / "d.jsonl", ROWS)
    result = evaluate_file(path, SETTINGS)
    assert result["docs"] == 6
    assert result["gold_clusters"] == 3
    assert result["predicted_clusters"] == 3
    assert result["duplicates"] == 1
    assert result["pairwise_precision"] == 1.0
    assert result["pairwise_f1"] == 1.0
    assert result["bcubed_f1"] == 1.0
    assert result["docs_per_s"] > 0


def test_shuffled_order_is_repeatable(tmp_path: Path) -> None:
    path = write_jsonl(tmp_path / "d.jsonl", ROWS)
    once = evaluate_file(path, SETTINGS, shuffle_seed=1)
    again = evaluate_file(path, SETTINGS, shuffle_seed=1)
    for figure in ("predicted_clusters", "pairwise_f1", "bcubed_f1", "duplicates"):
        assert once[figure] == again[figure]
    assert once["order"] == "shuffled(seed=1)"


def test_documents_streamed_among_others_are_scored_alone(tmp_path: Path) -> None:
    # The unlabelled reports go through the same stream (the first Kursk report
    # now repeats one of them, a copy) but add no figure of their own.
    docs, gold = load_labelled(write_jsonl(tmp_path / "d.jsonl", ROWS[:4]))
    earlier = replace(docs[0], id="other-1", published=docs[0].published - timedelta(minutes=5))
    unrelated = replace(docs[1], id="other-2", title="Film festival opens with a premiere")
    result = evaluate_documents(docs, gold, SETTINGS, among=[earlier, unrelated])
    assert result["docs"] == 4 and result["gold_clusters"] == 2
    assert result["duplicates"] == 1
    assert result["bcubed_f1"] == 1.0
    alone = evaluate_documents(docs, gold, SETTINGS)
    assert alone["docs"] == 4 and alone["duplicates"] == 0


def pair(
    a: str, b: str, same: bool, a_date: str | None = "2024-08-06", b_date: str | None = "2024-08-06"
) -> dict[str, Any]:
    return {
        "a_title": a,
        "a_text": "",
        "a_lang": "en",
        "a_published": a_date,
        "b_title": b,
        "b_text": "",
        "b_lang": "en",
        "b_published": b_date,
        "same": same,
    }


def test_evaluate_pairs_counts_decisions(tmp_path: Path) -> None:
    path = write_jsonl(
        tmp_path / "pairs.jsonl",
        [
            pair(
                "Ukrainian troops cross into Kursk region near Sudzha",
                "Kursk region: Ukrainian troops push on near Sudzha",
                True,
            ),
            pair(
                "Central bank cuts key interest rate", "Drone strike sets oil depot ablaze", False
            ),
            pair(
                "Ukrainian troops cross into Kursk region near Sudzha",
                "Drone strike sets oil depot ablaze in Rostov region",
                False,
                None,
                None,
            ),
            pair(
                "Central bank cuts key interest rate as inflation slows",
                "Central bank lowers key interest rate, inflation slowing",
                True,
                None,
            ),
        ],
    )
    result = evaluate_pairs(path, SETTINGS)
    assert result["pairs"] == 4
    assert (result["tp"], result["fp"], result["fn"]) == (2, 0, 0)
    assert result["precision"] == result["recall"] == result["f1"] == 1.0


def test_pairs_far_apart_in_time_are_not_one_event(tmp_path: Path) -> None:
    title = "Ukrainian troops cross into Kursk region near Sudzha"
    path = write_jsonl(
        tmp_path / "pairs.jsonl",
        [pair(title, title + " again", True, "2024-08-06", "2024-10-06")],
    )
    assert evaluate_pairs(path, SETTINGS)["fn"] == 1


def test_bad_pair_line_raises_eval_error(tmp_path: Path) -> None:
    path = tmp_path / "pairs.jsonl"
    path.write_text(json.dumps(pair("a", "b", True)) + "\n" + '{"a_title": "x", "same": "yes"}\n')
    with pytest.raises(EvalError, match="same should be true or false") as caught:
        evaluate_pairs(path, SETTINGS)
    assert caught.value.line == 2


def test_crosslingual_recall_counts_only_pairs_across_languages() -> None:
    from aggregator_eval.evaluate import crosslingual_pair_recall

    gold = ["k", "k", "k", "o"]
    langs = ["en", "uk", "uk", "ru"]
    # Cross pairs in gold: en-uk twice; predicted joins en with one uk only.
    assert crosslingual_pair_recall(gold, ["a", "a", "b", "c"], langs) == 0.5
    assert crosslingual_pair_recall(["x", "y"], ["a", "a"], ["en", "uk"]) is None


def test_worst_merges_and_splits_name_the_stories_involved() -> None:
    from datetime import UTC, datetime

    from aggregator.types import ClusterDoc
    from aggregator_eval.evaluate import worst_merges, worst_splits

    when = datetime(2024, 8, 6, tzinfo=UTC)
    docs = [ClusterDoc(str(i), f"t{i}", "", "", when, "s", "en") for i in range(4)]
    gold = ["k", "k", "o", "o"]
    pred = ["p", "q", "q", "q"]
    merge = worst_merges(gold, pred, docs, 5)[0]
    assert merge["story"] == "q" and merge["wrong_pairs"] == 2
    split = worst_splits(gold, pred, docs, 5)[0]
    assert split["gold"] == "k" and split["pieces"] == 2


def test_near_duplicate_pairs_score_copies_and_reports(tmp_path: Path) -> None:
    from aggregator_eval.evaluate import evaluate_near_duplicates, near_duplicate_pairs

    path = write_jsonl(
        tmp_path / "docs.jsonl",
        [
            {
                "id": str(i),
                "title": title,
                "text": "",
                "published": "2024-08-06T09:00:00Z",
                "cluster": "kursk",
            }
            for i, title in enumerate(
                [
                    "Ukrainian troops cross the border into Russia's Kursk region",
                    "Russia says its forces are repelling an attack near Sudzha in Kursk",
                ]
            )
        ],
    )
    docs, gold = load_labelled(path)
    result = evaluate_near_duplicates(near_duplicate_pairs(docs, gold))
    assert result["copies"] == 2 and result["pairs"] == 4
    assert result["fp"] == 0


# -- two levels: events inside storylines ------------------------------------------------

# Kursk and the depot are two events of one storyline ("war"); the rate cut is
# another storyline. The first two rows belong to the held-out part.
STORYLINE = {"kursk": "war", "depot": "war", "rate": "economy"}
LEVEL_ROWS = [
    {**r, "storyline": STORYLINE[r["cluster"]], "split": "heldout" if i < 2 else "train"}
    for i, r in enumerate(ROWS)
]


def test_event_file_reads_storylines_beside_events(tmp_path: Path) -> None:
    from aggregator_eval.evaluate import load_levels

    labelled = load_levels(write_jsonl(tmp_path / "d.jsonl", LEVEL_ROWS))
    assert labelled.events == ["kursk", "rate", "kursk", "rate", "kursk", "depot"]
    assert labelled.storylines == ["war", "economy", "war", "economy", "war", "war"]


def test_storyline_level_reads_cluster_as_the_storyline(tmp_path: Path) -> None:
    from aggregator_eval.evaluate import load_levels

    labelled = load_levels(write_jsonl(tmp_path / "d.jsonl", ROWS), "storyline")
    assert labelled.events is None
    assert labelled.storylines == ["kursk", "rate", "kursk", "rate", "kursk", "depot"]


def test_storyline_on_some_documents_only_is_refused(tmp_path: Path) -> None:
    from aggregator_eval.evaluate import load_levels

    rows = [*LEVEL_ROWS[:3], ROWS[3]]
    with pytest.raises(EvalError, match="storyline is given on some documents") as caught:
        load_levels(write_jsonl(tmp_path / "d.jsonl", rows))
    assert caught.value.line == 4


def test_split_keeps_only_its_part(tmp_path: Path) -> None:
    from aggregator_eval.evaluate import load_levels

    path = write_jsonl(tmp_path / "d.jsonl", LEVEL_ROWS)
    assert [d.id for d in load_levels(path, split="heldout").docs] == ["1", "2"]
    with pytest.raises(EvalError, match="no document has split 'test'"):
        load_levels(path, split="test")
    with pytest.raises(EvalError, match="split is missing"):
        load_levels(write_jsonl(tmp_path / "plain.jsonl", ROWS), split="heldout")


def test_one_level_of_stories_is_scored_against_both_label_sets(tmp_path: Path) -> None:
    # The clusterer keeps the three events apart: perfect at the event level,
    # while the storyline "war" is split in two (kursk x3, depot x1).
    result = evaluate_file(write_jsonl(tmp_path / "d.jsonl", LEVEL_ROWS), SETTINGS)
    event, storyline = result["levels"]["event"], result["levels"]["storyline"]
    assert result["level"] == "event" and result["bcubed_f1"] == event["bcubed_f1"] == 1.0
    assert (event["gold_clusters"], storyline["gold_clusters"]) == (3, 2)
    assert storyline["bcubed_precision"] == 1.0
    # recall per document: kursk 3/4 (x3), depot 1/4, rate 2/2 (x2) -> 4.5 / 6
    assert storyline["bcubed_recall"] == 0.75
    # gold pairs: war 6, economy 1; found: kursk 3, rate 1
    assert storyline["pairwise_recall"] == pytest.approx(4 / 7, abs=1e-4)


def test_storyline_level_file_has_only_storyline_figures(tmp_path: Path) -> None:
    path = write_jsonl(tmp_path / "d.jsonl", ROWS)
    result = evaluate_file(path, SETTINGS, level="storyline", shuffle_seed=2)
    assert result["level"] == "storyline"
    assert list(result["levels"]) == ["storyline"]
    assert result["levels"]["storyline"]["bcubed_f1"] == result["bcubed_f1"]


def test_eval_command_scores_a_held_out_part_at_both_levels(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    from aggregator.cli import main

    path = write_jsonl(tmp_path / "d.jsonl", LEVEL_ROWS)
    config = tmp_path / "absent.toml"
    config.write_text("", encoding="utf-8")
    args = ["--config", str(config), "eval", str(path), "--method", "tfidf", "--split", "heldout"]
    assert main(args) == 0
    result = json.loads(capsys.readouterr().out)
    assert result["docs"] == 2 and set(result["levels"]) == {"event", "storyline"}
    assert main([*args[:3], str(path), "--method", "tfidf", "--level", "storyline"]) == 0
    assert json.loads(capsys.readouterr().out)["levels"]["storyline"]["gold_clusters"] == 3


# -- our own uk/ru/en set (benchmarks/data): the properties its README promises -----------

OWN_SET = Path(__file__).resolve().parent.parent / "benchmarks" / "data" / "conflict-2024-08.jsonl"


def labelled_rows(path: Path) -> list[dict[str, str]]:
    """A set's rows, after checking what every set of ours promises: unique ids in
    published order, each event in one storyline and two languages or more, and
    each storyline on one side of the train/heldout split, and no link that spells
    its label: the clusterer reads a bare headline's URL slug, so a slug naming the
    gold event would hand it the answer."""
    from collections import defaultdict

    from aggregator_eval.evaluate import load_levels

    rows = [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines()]
    labelled = load_levels(path)
    assert labelled.events is not None and labelled.storylines is not None
    assert len({r["id"] for r in rows}) == len(rows)
    assert [r["published"] for r in rows] == sorted(r["published"] for r in rows)
    storyline_of: defaultdict[str, set[str]] = defaultdict(set)
    langs: defaultdict[str, set[str]] = defaultdict(set)
    split_of: defaultdict[str, set[str]] = defaultdict(set)
    for r in rows:
        storyline_of[r["cluster"]].add(r["storyline"])
        langs[r["cluster"]].add(r["lang"])
        split_of[r["storyline"]].add(r["split"])
    assert all(len(s) == 1 for s in storyline_of.values()), "an event in two storylines"
    assert all(len(one) >= 2 for one in langs.values()), "an event in one language"
    assert all(len(s) == 1 for s in split_of.values()), "a storyline on both sides of the split"
    assert {r["split"] for r in rows} == {"train", "heldout"}
    assert len({r["url"] for r in rows}) == len(rows)
    for r in rows:
        slug = r["url"].rsplit("/", 1)[-1]
        assert r["cluster"] not in slug and r["storyline"] not in slug, r["id"]
    return rows


def test_own_set_is_labelled_at_both_levels_with_a_split_by_storyline() -> None:
    rows = labelled_rows(OWN_SET)
    assert len(rows) >= 300
    assert len({r["cluster"] for r in rows}) >= 40 and len({r["storyline"] for r in rows}) >= 8
    kursk = [r for r in rows if r["storyline"] == "kursk-incursion"]
    days = sorted({r["published"][:10] for r in kursk})
    assert len({r["cluster"] for r in kursk}) >= 12 and int(days[-1][8:]) - int(days[0][8:]) >= 10


def test_the_look_alike_set_pairs_storylines_of_one_kind_on_both_sides_of_the_split() -> None:
    rows = labelled_rows(OWN_SET.with_name("lookalikes-2024.jsonl"))
    assert len({r["lang"] for r in rows}) >= 6
    for part in ("train", "heldout"):
        lines = {r["storyline"] for r in rows if r["split"] == part}
        assert len(lines) >= 4 and len(lines) % 2 == 0, "storylines come in look-alike pairs"


def test_the_drifting_storylines_are_labelled_like_our_other_sets() -> None:
    rows = labelled_rows(OWN_SET.with_name("drift-2024.jsonl"))
    assert len({r["lang"] for r in rows}) >= 8
    for part in ("train", "heldout"):
        lines = {r["storyline"] for r in rows if r["split"] == part}
        events = {r["cluster"] for r in rows if r["split"] == part}
        assert len(lines) >= 5 and len(events) >= 3 * len(lines), "storylines of several events"


def test_events_inside_a_story_are_scored_at_the_event_level(tmp_path: Path) -> None:
    # One story follows the bridge strikes over a week; a strike three days after
    # the first is another event (past the event window), which the story alone
    # cannot say and the event level does.
    def at(day: int, hour: int, id: str, title: str, cluster: str) -> dict[str, str]:
        r = row(id, title, 0, cluster, storyline="bridges")
        return {**r, "published": f"2024-08-{day:02d}T{hour:02d}:00:00Z"}

    rows = [
        at(16, 9, "1", "Strike destroys Seym bridge in Kursk region", "first"),
        at(16, 11, "2", "Seym bridge in Kursk region destroyed by strike", "first"),
        at(19, 9, "3", "Strike hits another Seym bridge in Kursk region", "second"),
        at(19, 10, "4", "Another Seym bridge in Kursk region hit by strike", "second"),
    ]
    settings = ClusterSettings(threshold=RECOMMENDED_THRESHOLDS["tfidf"], window_hours=240)
    result = evaluate_file(write_jsonl(tmp_path / "d.jsonl", rows), settings)
    assert result["predicted_stories"] == 1  # the story follows the storyline...
    assert result["stories_as_events"]["bcubed_precision"] == 0.5
    assert result["predicted_events"] == 2  # ...and its events stay apart
    assert result["levels"]["event"]["bcubed_f1"] == result["bcubed_f1"] == 1.0
    assert result["levels"]["storyline"]["bcubed_f1"] == 1.0


def test_a_pair_is_one_event_only_inside_the_event_window(tmp_path: Path) -> None:
    # Like words two and a half days apart: one story still takes both, but an event
    # is one day's happening with its follow-ups, so the pair is not one event.
    first = "Ukrainian troops cross into Kursk region near Sudzha"
    later = "Ukrainian troops in Kursk region push on from Sudzha, officials say"
    path = write_jsonl(
        tmp_path / "pairs.jsonl",
        [pair(first, later, False, "2024-08-06", "2024-08-08T12:00:00+00:00")],
    )
    result = evaluate_pairs(path, SETTINGS)
    assert result["story_level"]["fp"] == 1
    assert result["fp"] == 0
