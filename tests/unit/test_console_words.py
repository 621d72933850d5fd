"""The console's words: both languages have every key, and dates are written as each language writes them."""

from __future__ import annotations

import datetime as dt
import re
from pathlib import Path

from api.console.i18n import EN, KO, ConsoleWords
from reports.i18n import Language

TEMPLATES = Path(__file__).resolve().parents[2] / "api" / "console" / "templates"


def test_both_languages_have_every_key_and_the_same_placeholders() -> None:
    assert set(EN) == set(KO)
    for key, text in EN.items():
        assert set(re.findall(r"{(\w+)}", text)) == set(re.findall(r"{(\w+)}", KO[key])), key


def test_every_word_the_templates_ask_for_exists_in_both_languages() -> None:
    asked = set()
    for template in TEMPLATES.glob("*.html"):
        asked |= set(re.findall(r"""w\[["'](\w+)["']\]""", template.read_text(encoding="utf-8")))
        asked |= set(re.findall(r"""w\.format\(["'](\w+)["']""", template.read_text(encoding="utf-8")))
    for language in Language:
        words = ConsoleWords(language)
        missing = [key for key in sorted(asked) if not _has(words, key)]
        assert not missing, (language, missing)


def _has(words: ConsoleWords, key: str) -> bool:
    try:
        words[key]
    except KeyError:
        return False
    return True


def test_dates_in_each_languages_conventions() -> None:
    seoul = dt.timezone(dt.timedelta(hours=9))
    moment = dt.datetime(2026, 12, 6, 5, 5, tzinfo=dt.UTC)
    assert ConsoleWords(Language.EN).moment(moment, seoul) == "6 Dec 2026, 14:05"
    assert ConsoleWords(Language.KO).moment(moment, seoul) == "2026. 12. 6. 14:05"
    assert ConsoleWords(Language.KO).date(dt.date(2026, 1, 31)) == "2026. 1. 31."
    assert ConsoleWords(Language.EN).role("factory_manager") == "factory manager"
    assert ConsoleWords(Language.KO).role("evaluator") == "평가자"
