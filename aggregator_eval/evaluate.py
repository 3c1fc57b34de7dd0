"""Score the cluster stage on labelled JSON Lines files (`aggregator eval`).

Documents stream through the same `StoryAssigner` the worker uses, and each
placed report through an `EventIndex` that groups a story's reports into its
events; events are scored at the event level and stories at the storyline
level. The scores
are pairwise and B-cubed precision, recall and F1 from contingency counts, the
same per language, the recall of gold pairs across languages, and the worst
merges and splits, so a person can see what goes wrong. Pair files score the
same-event decision alone: b in the story a founded, and in a's event there.
"""

from __future__ import annotations

import hashlib
import random
import time
from collections import Counter, defaultdict
from collections.abc import Callable, Hashable, Sequence
from dataclasses import dataclass, replace
from datetime import datetime
from pathlib import Path
from typing import Any, TypeVar

import numpy as np

from aggregator.cluster import StoryAssigner, Tuning
from aggregator.cluster.decision import PairModel
from aggregator.cluster.embedding import doc_text, embed
from aggregator.cluster.events import (
    EventIndex,
    EventPolicy,
    EventReport,
    joins_founded_by,
    load_policy,
)
from aggregator.cluster.storylines import StorylinePolicy
from aggregator.dedupe import NearDuplicates
from aggregator.settings import ClusterSettings
from aggregator.types import ClusterDoc
from aggregator_eval.labelled import (
    LEVELS,
    UNDATED,
    Form,
    Labelled,
    Level,
    as_written,
    load_documents,
    load_labelled,
    load_levels,
    load_pairs,
)

__all__ = [  # the readers are re-exported: callers score and read through one module
    "LEVELS",
    "UNDATED",
    "Labelled",
    "Level",
    "load_documents",
    "load_labelled",
    "load_levels",
    "load_pairs",
]

Label = TypeVar("Label")


def evaluate_file(
    path: Path,
    settings: ClusterSettings,
    *,
    level: Level = "event",
    split: str | None = None,
    shuffle_seed: int | None = None,
    tuning: Tuning | None = None,
    model: PairModel | None = None,
    cross_model: PairModel | None = None,
    cache: Path | None = None,
    examples: int = 5,
    merge: bool = False,
    events: EventPolicy | None = None,
    storyline_policy: StorylinePolicy | None = None,
) -> dict[str, Any]:
    """Stream a labelled file through a fresh StoryAssigner and score the stories.

    `level` says what the file's `cluster` labels (see `aggregator_eval.labelled`);
    `split` keeps only the documents of that part of the file. Documents go in
    published order. With `shuffle_seed`, the order is shuffled and the sorted
    publication times are dealt out again in the new order: a stream whose
    stories interleave, as real feeds do, instead of each story arriving as one
    run (an artefact of how some sets were recorded). `cache` names a folder
    where embeddings are kept between runs, keyed by the texts. `model` and
    `cross_model` replace the shipped pair models (a refit under test).
    """
    labelled = load_levels(path, level, split)
    gold = labelled.labels(level)
    assert gold is not None  # `cluster` labels the file's own level
    return evaluate_documents(
        labelled.docs,
        gold,
        settings,
        level=level,
        storylines=labelled.storylines if level == "event" else None,
        name=str(path) if split is None else f"{path} [{split}]",
        shuffle_seed=shuffle_seed,
        tuning=tuning,
        model=model,
        cross_model=cross_model,
        cache=cache,
        examples=examples,
        merge=merge,
        events=events,
        storyline_policy=storyline_policy,
    )


def evaluate_documents(
    docs: Sequence[ClusterDoc],
    gold: Sequence[str],
    settings: ClusterSettings,
    *,
    level: Level = "event",
    storylines: Sequence[str] | None = None,
    name: str = "",
    shuffle_seed: int | None = None,
    tuning: Tuning | None = None,
    model: PairModel | None = None,
    cross_model: PairModel | None = None,
    cache: Path | None = None,
    examples: int = 5,
    merge: bool = False,
    events: EventPolicy | None = None,
    storyline_policy: StorylinePolicy | None = None,
    among: Sequence[ClusterDoc] = (),
) -> dict[str, Any]:
    """`evaluate_file` on documents already loaded (the demo's articles, a test's list).

    `gold` labels the documents at `level`; `storylines`, when given with
    event labels, labels them at the storyline level too. The top-level
    figures score against `gold`; `levels` holds the figures at every level
    labelled. Events, the pairs (story, event), are scored against event
    labels; stories against storyline labels. `events` and `storyline_policy`
    replace the shipped event and storyline policies (a refit under test).

    With `merge`, a merge pass runs after each report, as a worker would after
    each batch, and the stories it absorbs are re-pointed to the ones they went
    into, their events with them.

    `among`: unlabelled documents streamed with the labelled ones, in published
    order, as a worker's other feeds would be; they shape the stream (its
    language means, its word counts, its live stories) but are not scored.
    """
    if storylines is not None and level != "event":
        raise ValueError("storyline labels go with event-level gold labels")
    labels = list(zip(gold, storylines or [""] * len(gold), strict=True))
    docs, labels = stream_order(docs, labels, shuffle_seed)
    gold = [event for event, _ in labels]
    assigner = StoryAssigner(
        settings, tuning=tuning, model=model, cross_model=cross_model, storylines=storyline_policy
    )
    stream, scored = interleaved(docs, among)
    started = time.perf_counter()
    # The worker embeds each entry once, when stored; timed apart from clustering.
    vectors = cached_vectors(stream, cache) if assigner.uses_embeddings else None
    embed_s = time.perf_counter() - started
    started = time.perf_counter()
    steps = run_stories(assigner, stream, vectors, merge=merge)
    elapsed = time.perf_counter() - started
    every_story = final_stories(steps)
    every_event = place_events(steps, EventIndex(settings.method, events))
    stories = [every_story[i] for i in scored]
    event_keys = [every_event[i] for i in scored]
    pred_events = [f"{story} {key}" for story, key in zip(stories, event_keys, strict=True)]
    # Event-level gold is met by events; storyline-level gold by stories.
    pred = pred_events if level == "event" else stories
    langs = [doc.lang or "?" for doc in docs]
    by_level: dict[str, Sequence[str]] = {level: gold}
    if storylines is not None:
        by_level["storyline"] = [storyline for _, storyline in labels]
    return {
        "file": name,
        "level": level,
        "order": "published" if shuffle_seed is None else f"shuffled(seed={shuffle_seed})",
        "method": settings.method,
        "threshold": assigner.threshold,
        "docs": len(docs),
        "gold_clusters": len(set(gold)),
        "predicted_clusters": len(set(pred)),
        "predicted_stories": len(set(stories)),
        "predicted_events": len(set(pred_events)),
        "duplicates": sum(steps[i].duplicate_of is not None for i in scored),
        "merges": sum(len(step.merges) for step in steps),
        **_scores(gold, pred),
        "crosslingual_pair_recall": crosslingual_pair_recall(gold, pred, langs),
        "levels": {
            one: level_scores(labels_at, pred_events if one == "event" else stories, langs)
            for one in LEVELS
            if (labels_at := by_level.get(one)) is not None
        },
        # What the stories alone score against the event labels (the level before events).
        "stories_as_events": (_scores(gold, stories) if level == "event" else None),
        "languages": per_language(gold, pred, langs),
        "docs_per_s": round(len(stream) / elapsed, 1) if elapsed > 0 else None,
        "embed_docs_per_s": (
            round(len(stream) / embed_s, 1) if vectors is not None and embed_s > 0 else None
        ),
        "worst_merges": worst_merges(gold, pred, docs, examples),
        "worst_splits": worst_splits(gold, pred, docs, examples),
    }


def interleaved(
    docs: Sequence[ClusterDoc], among: Sequence[ClusterDoc]
) -> tuple[list[ClusterDoc], list[int]]:
    """`docs` and `among` in one stream by published time (`docs` keep their order
    among themselves), and where each of `docs` stands in it."""
    if not among:
        return list(docs), list(range(len(docs)))
    tagged = [(doc, True) for doc in docs] + [(doc, False) for doc in among]
    order = sorted(range(len(tagged)), key=lambda i: tagged[i][0].published)  # stable
    stream = [tagged[i][0] for i in order]
    return stream, [at for at, i in enumerate(order) if tagged[i][1]]


@dataclass(frozen=True)
class Step:
    """One report's way through the story level, as the event level reads it."""

    story_id: str
    duplicate_of: str | None
    report: EventReport | None  # None for a copy: it takes its original's event
    merges: tuple[tuple[str, str], ...]  # (absorbed, into) stories merged right after it
    event_key: str = ""  # the event the assigner itself chose (its shipped policy)


def run_stories(
    assigner: StoryAssigner,
    docs: Sequence[ClusterDoc],
    vectors: np.ndarray | None,
    *,
    merge: bool,
) -> list[Step]:
    """Place each document in a story, in order, with what its event will be decided on."""
    steps = []
    for i, doc in enumerate(docs):
        vector = None if vectors is None else vectors[i]
        assignment = assigner.add(doc, vector)
        report = None
        if assignment.duplicate_of is None:
            # The statistics were learned by `add`; this reads the report as it was placed.
            report = EventReport.from_prepared(assigner._prepare(doc, (), vector, learn=False))
        merges = tuple(assigner.merge_converged()) if merge else ()
        steps.append(
            Step(assignment.story_id, assignment.duplicate_of, report, merges, assignment.event_key)
        )
    return steps


def in_storylines(
    assigner: StoryAssigner,
    docs: Sequence[ClusterDoc],
    vectors: np.ndarray | None,
    storylines: Sequence[str],
) -> list[Step]:
    """`docs` placed by the story level (`run_stories`, merge passes on), each then put
    in the storyline `storylines` names for it, with no story merges left: events
    grouped as if the story level had found those storylines, every event of one
    competing with every other (how the event fit groups its training part)."""
    steps = run_stories(assigner, docs, vectors, merge=True)
    return [
        replace(step, story_id=line, merges=())
        for step, line in zip(steps, storylines, strict=True)
    ]


def place_events(steps: Sequence[Step], index: EventIndex) -> list[str]:
    """The event key of each step, placed online as a worker would place them."""
    keys = []
    renamed: dict[str, str] = {}  # events that joined another when their stories merged
    clock: datetime | None = None
    for step in steps:
        if step.report is not None and (clock is None or step.report.published > clock):
            clock = step.report.published
            index.expire(clock)  # as the clusterer's clock moves on
        if step.report is None:
            assert step.duplicate_of is not None
            keys.append(index.copy_of(step.duplicate_of) or step.duplicate_of)
        else:
            keys.append(index.place(step.story_id, step.report).event_key)
        for gone, into in step.merges:
            renamed.update(index.merge_story(gone, into))
    return [_final_story(key, renamed) for key in keys]


def level_scores(
    gold: Sequence[Hashable], pred: Sequence[Hashable], langs: Sequence[str]
) -> dict[str, Any]:
    """The figures of one level: gold groups, scores, and recall across languages."""
    return {
        "gold_clusters": len(set(gold)),
        **_scores(gold, pred),
        "crosslingual_pair_recall": crosslingual_pair_recall(gold, pred, langs),
    }


def final_stories(steps: Sequence[Step]) -> list[str]:
    """Each step's story as the stream left it: the one it was merged into, if any."""
    merged_into = {gone: into for step in steps for gone, into in step.merges}
    return [_final_story(step.story_id, merged_into) for step in steps]


def _final_story(story_id: str, merged_into: dict[str, str]) -> str:
    # A story absorbed into one that was later absorbed too: follow the chain.
    while story_id in merged_into:
        story_id = merged_into[story_id]
    return story_id


def stream_order(
    docs: Sequence[ClusterDoc], labels: Sequence[Label], shuffle_seed: int | None
) -> tuple[list[ClusterDoc], list[Label]]:
    """Documents in published order, or shuffled with the sorted times dealt out again."""
    order = sorted(range(len(docs)), key=lambda i: docs[i].published)
    if shuffle_seed is None:
        return [docs[i] for i in order], [labels[i] for i in order]
    times = [docs[i].published for i in order]
    random.Random(shuffle_seed).shuffle(order)
    shuffled = [replace(docs[i], published=t) for i, t in zip(order, times, strict=True)]
    return shuffled, [labels[i] for i in order]


def cached_vectors(docs: Sequence[ClusterDoc], cache: Path | None) -> np.ndarray:
    """Embeddings of the documents, read from or written to `cache` when given.

    The cache file is keyed by the set of texts, so every order of one file
    (shuffled or not) shares it.
    """
    if cache is None:
        return embed(docs)
    texts = [doc_text(d) for d in docs]
    unique = sorted(set(texts))
    digest = hashlib.sha1("\x1e".join(unique).encode()).hexdigest()
    path = cache / f"{digest}.npy"
    if path.exists():
        matrix = np.load(path, allow_pickle=False)
    else:
        first = {text: doc for doc, text in zip(docs, texts, strict=True)}
        matrix = embed([first[text] for text in unique])
        cache.mkdir(parents=True, exist_ok=True)
        np.save(path, matrix, allow_pickle=False)
    row = {text: i for i, text in enumerate(unique)}
    return matrix[[row[text] for text in texts]]


def _scores(gold: Sequence[Hashable], pred: Sequence[Hashable]) -> dict[str, float]:
    pp, pr, pf = pairwise_scores(gold, pred)
    bp, br, bf = bcubed_scores(gold, pred)
    figures = {
        "pairwise_precision": pp,
        "pairwise_recall": pr,
        "pairwise_f1": pf,
        "bcubed_precision": bp,
        "bcubed_recall": br,
        "bcubed_f1": bf,
    }
    return {name: round(value, 4) for name, value in figures.items()}


def per_language(
    gold: Sequence[Hashable], pred: Sequence[Hashable], langs: Sequence[str]
) -> dict[str, dict[str, float]]:
    """The scores over each language's documents alone (pairs within that language)."""
    out = {}
    for lang in sorted(set(langs)):
        rows = [i for i, one in enumerate(langs) if one == lang]
        figures: dict[str, float] = {"docs": len(rows)}
        figures |= _scores([gold[i] for i in rows], [pred[i] for i in rows])
        out[lang] = figures
    return out


def crosslingual_pair_recall(
    gold: Sequence[Hashable], pred: Sequence[Hashable], langs: Sequence[str]
) -> float | None:
    """Of the gold pairs whose two documents differ in language, the share put together.

    None when the file has no such pair. Counted per cell, so O(n).
    """
    gold_lang: Counter[tuple[Hashable, str]] = Counter(zip(gold, langs, strict=True))
    both_lang: Counter[tuple[Hashable, Hashable, str]] = Counter(
        zip(gold, pred, langs, strict=True)
    )
    cross_gold = _cross_pairs(Counter(gold), gold_lang, lambda key: key[0])
    cross_both = _cross_pairs(Counter(zip(gold, pred, strict=True)), both_lang, lambda key: key[:2])
    return round(cross_both / cross_gold, 4) if cross_gold else None


def _cross_pairs(sizes: Counter[Any], by_lang: Counter[Any], group: Any) -> int:
    # Pairs within a group minus pairs within one language of the group.
    same_lang: defaultdict[Any, int] = defaultdict(int)
    for key, n in by_lang.items():
        same_lang[group(key)] += _pairs(n)
    return sum(_pairs(n) - same_lang[key] for key, n in sizes.items())


def worst_merges(
    gold: Sequence[str], pred: Sequence[str], docs: Sequence[ClusterDoc], limit: int
) -> list[dict[str, Any]]:
    """Predicted stories that mix gold stories, by wrongly joined pairs, with headlines."""
    return [
        {"story": story, "wrong_pairs": wrong, "parts": parts}
        for wrong, story, parts, _ in _mixed(pred, gold, "gold", docs, limit)
    ]


def worst_splits(
    gold: Sequence[str], pred: Sequence[str], docs: Sequence[ClusterDoc], limit: int
) -> list[dict[str, Any]]:
    """Gold stories spread over several predicted ones, by missed pairs, with headlines."""
    return [
        {"gold": story, "missed_pairs": missed, "pieces": pieces, "parts": parts}
        for missed, story, parts, pieces in _mixed(gold, pred, "story", docs, limit)
    ]


def _mixed(
    groups: Sequence[str],
    labels: Sequence[str],
    label_name: str,
    docs: Sequence[ClusterDoc],
    limit: int,
) -> list[tuple[int, str, list[dict[str, Any]], int]]:
    """Groups whose members carry several labels, worst first: (pairs across labels,
    group, its four largest parts with a headline each, number of parts)."""
    members: defaultdict[str, list[int]] = defaultdict(list)
    for i, group in enumerate(groups):
        members[group].append(i)
    found = []
    for group, rows in members.items():
        by_label = Counter(labels[i] for i in rows)
        across = _pairs(len(rows)) - sum(_pairs(n) for n in by_label.values())
        if across:
            parts = [
                {label_name: label, "docs": n, "title": _first_title(rows, labels, docs, label)}
                for label, n in by_label.most_common(4)
            ]
            found.append((across, group, parts, len(by_label)))
    found.sort(key=lambda m: (-m[0], m[1]))
    return found[:limit]


def _first_title(
    rows: Sequence[int], labels: Sequence[str], docs: Sequence[ClusterDoc], label: str
) -> str:
    first = next(i for i in rows if labels[i] == label)
    return f"[{docs[first].lang}] {docs[first].title}"[:120]


@dataclass(frozen=True)
class PairCase:
    """One labelled pair as the clusterer sees it, for the story and the event decision."""

    same: bool  # the label: one event
    kind: str  # the two languages, "ru-ru"
    probability: float  # that b joins a story founded by a (1.0: b copies a)
    first: EventReport  # what the event decision reads of a
    second: EventReport  # and of b


def pair_cases(
    path: Path,
    settings: ClusterSettings,
    *,
    tuning: Tuning | None = None,
    model: PairModel | None = None,
    cross_model: PairModel | None = None,
    cache: Path | None = None,
    keep: Callable[[ClusterDoc], bool] | None = None,
    form: Form = as_written,
) -> tuple[list[PairCase], float]:
    """The pairs of a pair file, and the story threshold they are decided at.

    The assigner first learns term (and language) statistics from every text in
    the file, labels unseen, as a running worker would have from its stream;
    then each pair gets the probability b has against a story founded by a.
    `keep` chooses the pairs by their first document (one half of a file); `form`
    says how each document is told (`labelled.bare`: its headline alone).
    """
    pairs = [(form(a), form(b), same) for a, b, same in load_pairs(path)]
    assigner = StoryAssigner(settings, tuning=tuning, model=model, cross_model=cross_model)
    unique = list({doc.id: doc for a, b, _ in pairs for doc in (a, b)}.values())
    vectors = cached_vectors(unique, cache) if assigner.uses_embeddings else None
    assigner.warm(unique, vectors)
    row_of = {doc.id: i for i, doc in enumerate(unique)}
    cases = []
    for a, b, same in pairs:
        if keep is not None and not keep(a):
            continue
        vecs = None if vectors is None else (vectors[row_of[a.id]], vectors[row_of[b.id]])
        first, second = assigner.event_reports(a, b, vecs)
        probability = assigner.similarity(a, b, vecs)
        cases.append(PairCase(same, f"{a.lang}-{b.lang}", probability, first, second))
    return cases, assigner.threshold


def same_event(case: PairCase, threshold: float, policy: EventPolicy, method: str) -> bool:
    """Whether the clusterer puts b in a's event: a copy, or in a's story and its event."""
    if case.probability == 1.0:
        return True
    return case.probability >= threshold and joins_founded_by(
        case.first, case.second, policy, method
    )


def evaluate_pairs(
    path: Path,
    settings: ClusterSettings,
    *,
    tuning: Tuning | None = None,
    model: PairModel | None = None,
    cross_model: PairModel | None = None,
    cache: Path | None = None,
    keep: Callable[[ClusterDoc], bool] | None = None,
    events: EventPolicy | None = None,
) -> dict[str, Any]:
    """Score the same-event decision on a pair file (see `pair_cases`).

    A pair is decided the same event when b would go into a's event: as a copy
    of a, or into the story a founded and then into a's event there (the event
    policy: `events`, or the shipped one). `story_level` scores the story
    decision alone, for information: a story follows a happening further than
    one event does.
    """
    cases, threshold = pair_cases(
        path,
        settings,
        tuning=tuning,
        model=model,
        cross_model=cross_model,
        cache=cache,
        keep=keep,
    )
    policy = events or load_policy()
    decisions = [
        (same_event(case, threshold, policy, settings.method), case.same, case.kind)
        for case in cases
    ]
    stories = [(case.probability >= threshold, case.same, case.kind) for case in cases]
    result: dict[str, Any] = {
        "file": str(path),
        "method": settings.method,
        "threshold": threshold,
        "pairs": len(decisions),
        "same": sum(case.same for case in cases),
        **decision_scores(decisions),
        "story_level": decision_scores(stories),
    }
    kinds = sorted({kind for _, _, kind in decisions})
    if len(kinds) > 1:
        result["languages"] = {
            kind: {"pairs": sum(k == kind for _, _, k in decisions)}
            | decision_scores([d for d in decisions if d[2] == kind])
            for kind in kinds
        }
    return result


def decision_scores(decisions: Sequence[tuple[bool, bool, str]]) -> dict[str, Any]:
    tp = sum(decided and same for decided, same, _ in decisions)
    fp = sum(decided and not same for decided, same, _ in decisions)
    fn = sum(same and not decided for decided, same, _ in decisions)
    precision = tp / (tp + fp) if tp + fp else 1.0
    recall = tp / (tp + fn) if tp + fn else 1.0
    return {
        "tp": tp,
        "fp": fp,
        "fn": fn,
        "precision": round(precision, 4),
        "recall": round(recall, 4),
        "f1": round(_f1(precision, recall), 4),
    }


def pairwise_scores(
    gold: Sequence[Hashable], pred: Sequence[Hashable]
) -> tuple[float, float, float]:
    """Pairwise precision, recall, F1 over all unordered document pairs.

    Counts pairs per contingency cell, so O(n). With no predicted-together pair
    precision is 1.0 (nothing wrongly merged); with no gold pair recall is 1.0.
    """
    cells, gold_sizes, pred_sizes = _contingency(gold, pred)
    together = sum(_pairs(n) for n in cells.values())
    predicted = sum(_pairs(n) for n in pred_sizes.values())
    actual = sum(_pairs(n) for n in gold_sizes.values())
    precision = together / predicted if predicted else 1.0
    recall = together / actual if actual else 1.0
    return precision, recall, _f1(precision, recall)


def bcubed_scores(gold: Sequence[Hashable], pred: Sequence[Hashable]) -> tuple[float, float, float]:
    """B-cubed precision, recall, F1 averaged over documents, from contingency counts."""
    cells, gold_sizes, pred_sizes = _contingency(gold, pred)
    n = len(gold)
    if n == 0:
        return 1.0, 1.0, 1.0
    # Each of the n_gp documents in cell (g, p) scores n_gp / |p| and n_gp / |g|.
    precision = sum(c * c / pred_sizes[p] for (_, p), c in cells.items()) / n
    recall = sum(c * c / gold_sizes[g] for (g, _), c in cells.items()) / n
    return precision, recall, _f1(precision, recall)


def _contingency(
    gold: Sequence[Hashable], pred: Sequence[Hashable]
) -> tuple[Counter[tuple[Hashable, Hashable]], Counter[Hashable], Counter[Hashable]]:
    if len(gold) != len(pred):
        raise ValueError(f"{len(gold)} gold labels but {len(pred)} predicted labels")
    return Counter(zip(gold, pred, strict=True)), Counter(gold), Counter(pred)


def _pairs(n: int) -> int:
    return n * (n - 1) // 2


def _f1(precision: float, recall: float) -> float:
    total = precision + recall
    return 2 * precision * recall / total if total else 0.0


# -- near-duplicates ---------------------------------------------------------------


def near_duplicate_pairs(
    docs: Sequence[ClusterDoc], gold: Sequence[str], seed: int = 1, limit: int = 1000
) -> list[tuple[ClusterDoc, ClusterDoc, bool]]:
    """Copy and not-copy pairs built from labelled documents.

    Copies: each document lightly edited (one word dropped, case and punctuation
    changed, an agency tag added), and, where it has a body of 200 characters
    or more, the same body under another report's headline. Not copies: two
    different reports of one gold story, the hardest kind of negative.
    """
    rng = random.Random(seed)
    rows = list(range(len(docs)))
    rng.shuffle(rows)
    by_story: defaultdict[str, list[int]] = defaultdict(list)
    for i in rows:
        by_story[gold[i]].append(i)
    out: list[tuple[ClusterDoc, ClusterDoc, bool]] = []
    for i in rows[:limit]:
        doc = docs[i]
        words = doc.title.split()
        if len(words) > 3:
            del words[rng.randrange(len(words))]
        edited = replace(doc, id=doc.id + "-edit", title=" ".join(words).upper() + " (Wire)")
        out.append((doc, edited, True))
        if len(doc.text) >= 200:
            other = docs[rng.choice(rows)]
            out.append((doc, replace(doc, id=doc.id + "-retitled", title=other.title), True))
        mates = [j for j in by_story[gold[i]] if j != i and docs[j].title != doc.title]
        if mates:
            out.append((doc, docs[rng.choice(mates)], False))
    return out


def evaluate_near_duplicates(
    pairs: Sequence[tuple[ClusterDoc, ClusterDoc, bool]], name: str = ""
) -> dict[str, Any]:
    """Precision and recall of the MinHash copy decision on labelled pairs."""
    decisions = [
        (NearDuplicates.pair(a.title, a.text, b.title, b.text), same, "") for a, b, same in pairs
    ]
    return {
        "file": name,
        "check": "near-duplicates",
        "pairs": len(decisions),
        "copies": sum(same for _, same, _ in decisions),
        **decision_scores(decisions),
    }
