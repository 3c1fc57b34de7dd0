"""Guessing the language of entries no one declared one for."""

from __future__ import annotations

from datetime import UTC, datetime

import pytest

from aggregator.language import guess_language, undeclared_language
from aggregator.types import EntryData

T0 = datetime(2024, 8, 6, 8, 0, tzinfo=UTC)


def entry(key: str, title: str, text: str = "", language: str | None = None) -> EntryData:
    return EntryData(
        key=key,
        title=title,
        link=f"http://a.test/{key}",
        summary_html="",
        text=text,
        author=None,
        published=T0,
        updated=None,
        content_hash=key,
        language=language,
    )


@pytest.mark.parametrize(
    ("text", "language"),
    [
        ("Ukrainian troops crossed into Russia's Kursk region on Tuesday, officials said, "
         "and fighting continued near the town of Sudzha for a second day.", "en"),
        ("Украинские войска вошли в Курскую область во вторник, бои продолжаются у Суджи "
         "второй день, сообщили власти региона.", "ru"),
        ("Українські війська увійшли до Курської області у вівторок, бої тривають біля "
         "Суджі вже другу добу, повідомила влада.", "uk"),
        ("Les troupes ukrainiennes sont entrées dans la région de Koursk mardi, et les "
         "combats se poursuivent près de Soudja pour le deuxième jour.", "fr"),
    ],
)  # fmt: skip
def test_a_paragraph_is_told_by_its_language(text: str, language: str) -> None:
    assert guess_language([text]) == language


def test_too_little_text_leaves_the_language_unknown() -> None:
    assert guess_language(["Snowden at SXSW"]) is None
    assert guess_language(["", "  "]) is None


def test_a_poll_is_guessed_as_one_from_its_undeclared_entries() -> None:
    entries = [
        entry("a", "Бої тривають біля Суджі", "Губернатор повідомив про евакуацію мешканців."),
        entry("b", "Сирський доповів про перебіг операції", "Полонених узяли за тиждень боїв."),
        entry("c", "Wire copy", "A wire story in English that the feed tagged itself.", "en"),
    ]
    assert undeclared_language(entries, configured="") == "uk"
    # A source whose operator configured its language is left to that.
    assert undeclared_language(entries, configured="ru") is None
    assert undeclared_language(entries[2:], configured="") is None  # nothing to guess
