"""The report's numbers, words and HTML from an evaluation, without services (the pipeline's are in
tests/integration/test_report.py)."""

from __future__ import annotations

import datetime as dt
import math
import re
from collections.abc import Mapping, Sequence

import numpy as np
import pytest

from kpi_engine.breakdown import breakdown
from kpi_engine.evaluation import evaluate, stated_design_warnings
from kpi_engine.results import comparison_document
from kpi_engine.service import Evaluation
from pilot_core.contract import TimeClass
from pilot_core.demonstration import DemonstrationPlan, Method, Phase, plan_hash
from pilot_core.design import design_target
from pilot_core.device_hours import DeviceHour, StateEvent
from pilot_core.kpi import COMPONENT_NAMES
from reports.content import PARETO_ROWS, ReportContent, report_content
from reports.i18n import KO, METHOD_NOTES, TEXT, Language, Words, number, signed_percent
from reports.render import render_html
from tests.unit.test_evaluation import meter_hours, plan, press_hours

HANGUL = re.compile("[가-힣]")
NOW = dt.datetime(2026, 11, 20, 9, 30, tzinfo=dt.UTC)


def content_of(
    the_plan: DemonstrationPlan, hours: Mapping[str, Sequence[DeviceHour]], *, frozen: bool = True
) -> ReportContent:
    digest = plan_hash(the_plan)
    result = evaluate(the_plan, digest, hours, {"press": 60.0})
    evaluation = Evaluation(1, "press-line", 2, frozen, the_plan, result, "sha256:data", 0, False)
    return report_content(evaluation, breakdown(the_plan, hours), NOW)


def faulty_hours(seed: int) -> dict[str, list[DeviceHour]]:
    """Two phases of a press with a fault code per day (many causes) and a daily changeover."""
    rng = np.random.default_rng(seed)
    press = press_hours(range(5), 30.0, rng) + press_hours(range(7, 12), 25.0, rng)
    for day, hour in enumerate(press[9::24]):
        hour.events = [
            StateEvent(hour.start_ms + 60_000, "fault", TimeClass.UNPLANNED_DELAY, f"E{day:03d} <b>$x$</b> -->"),
            StateEvent(hour.start_ms + (5 + day) * 60_000, "changeover", TimeClass.SETUP, "to P"),
            StateEvent(hour.start_ms + 30 * 60_000, "running", TimeClass.PRODUCTION),
        ]
    return {"press": press, "meter": meter_hours(range(5)) + meter_hours(range(7, 12))}


def test_both_languages_say_everything() -> None:
    assert set(TEXT[Language.KO]) == set(TEXT[Language.EN])
    for language, text in TEXT.items():
        assert all(value.strip() for value in text.values()), language
    # Korean readers read it without English: every sentence and heading is in Hangul.
    symbols = {"not_applicable", "unit_ratio", "legend_phase_value"}
    untranslated = [key for key, value in KO.items() if key not in symbols and not HANGUL.search(value)]
    assert untranslated == [], untranslated
    assert len(METHOD_NOTES) == 7


def test_numbers_read_the_same_in_both_languages() -> None:
    assert [number(v) for v in (0, 0.0423, 4.5, 47.17, 187.7, 12_345.6)] == [
        "0",
        "0.042",
        "4.50",
        "47.17",
        "187.7",
        "12,346",
    ]
    assert signed_percent(-0.1234) == "−12.3%" and signed_percent(0.05, digits=0) == "+5%"
    ko, en = Words(Language.KO), Words(Language.EN)
    assert ko.value(47.17, "s") == "47.17 초" and en.value(47.17, "s") == "47.17 s"
    assert ko.value(0.8531, "ratio") == en.value(0.8531, "ratio") == "85.31%"
    assert ko.interval((-0.2, 0.031)) == "−20.0% … +3.1%"
    assert ko.target("lower", 8) == "−8%" and en.target("higher", 12.5) == "+12.5%"


def test_the_content_is_the_comparison_document_and_the_pareto_adds_up() -> None:
    the_plan = plan()
    hours = faulty_hours(5)
    content = content_of(the_plan, hours)
    result = evaluate(the_plan, plan_hash(the_plan), hours, {"press": 60.0})
    document = comparison_document(Evaluation(1, "press-line", 2, True, the_plan, result, "sha256:data", 0, False))
    rows = {row.kpi: row for row in content.kpis}
    for change in document.kpis:
        row = rows[change.kpi]
        assert (row.baseline, row.pilot) == (change.baseline.value, change.pilot.value)
        assert (row.relative_change, row.relative_interval) == (change.relative_change, change.relative_interval)
        assert row.verdict == (change.target.verdict if change.target else None)
    assert rows["cycle_time_mean"].target_change_pct == 5
    assert {"cycle_time_p50", "cycle_time_p95"} <= set(rows)

    # Ten distinct fault codes and a changeover: the Pareto stays short and still adds up to PBT − APT.
    assert len(content.downtime) <= PARETO_ROWS
    for phase in Phase:
        lost = math.fsum(row.seconds[phase] for row in content.downtime)
        components = result.phases[phase].components
        assert lost == pytest.approx(components.pbt_s - components.apt_s)
        assert lost == pytest.approx(content.phases[phase].downtime_s)
        assert math.fsum(b.share[phase] for b in content.cycle_times) == pytest.approx(1.0)
    assert [d.planned_busy_h for d in content.days] == [8.0] * 10 and all(d.oee for d in content.days)
    assert content.method.hours == {Phase.BASELINE: 5 * 24, Phase.PILOT: 5 * 24}
    assert content.method.bandwidth == {Phase.BASELINE: 24, Phase.PILOT: 24}
    assert content.method.critical_value > content.method.normal_critical_value


@pytest.mark.parametrize("language", list(Language))
def test_the_html_escapes_what_users_typed(language: Language) -> None:
    the_plan = plan(name="<script>alert('plan')</script>", name_ko="<img src=x onerror=alert(1)>")
    html = render_html(content_of(the_plan, faulty_hours(6)), language)
    assert "<script>" not in html and "<img" not in html and "<b>$x$</b>" not in html
    assert "&lt;script&gt;alert(&#39;plan&#39;)&lt;/script&gt;" in html
    assert html.count("<svg") == 4 and 'id="preview-banner"' not in html
    assert f'<html lang="{language.value}">' in html
    assert TEXT[language]["section_method"] in html and TEXT[language]["chart_daily_oee"] in html


def test_a_draft_is_a_preview_and_a_report_without_data_still_renders() -> None:
    the_plan = plan()
    draft = render_html(content_of(the_plan, {}, frozen=False), Language.KO)
    assert 'id="preview-banner"' in draft and KO["preview"] in draft and KO["draft"] in draft
    assert draft.count(">데이터 없음<") == 0  # chart text is drawn as outlines, not as text
    assert draft.count("<svg") == 4
    content = content_of(the_plan, {}, frozen=False)
    assert content.downtime == [] and content.cycle_times == [] and content.days == []


@pytest.mark.parametrize("language", list(Language))
def test_energy_without_a_meter_in_scope_has_no_value_and_the_report_says_why(language: Language) -> None:
    the_plan = plan(devices=["press"], energy_meters=[])
    content = content_of(the_plan, {"press": faulty_hours(5)["press"]})
    (row,) = [r for r in content.kpis if r.kpi == "energy_per_good_unit"]
    assert row.baseline is None and row.pilot is None
    assert all(day.energy_per_good_unit is None for day in content.days)
    assert content.phases[Phase.BASELINE].energy_per_good_unit is None
    words = Words(language)
    explanation = words.explanation(row, content.method)
    assert TEXT[language]["why_no_energy_meter"] in explanation
    shown = re.sub(r"<[^>]+>", "", render_html(content, language))  # each word is a span of its own
    assert explanation in shown


def test_every_design_note_and_the_stated_mde_warning_read_in_both_languages() -> None:
    """The engine's notes for a target it cannot design, and its stated-MDE warning, have words in KO and EN."""
    units = np.zeros((40, len(COMPONENT_NAMES)))
    units[:, COMPONENT_NAMES.index("output_cycles")] = 60
    units[:, COMPONENT_NAMES.index("output_cycle_time_s")] = 1800 + 60 * np.sin(np.arange(40))
    designs = [
        design_target("cycle_time_mean", 5, np.zeros_like(units), level=0.9, planned_pilot_hours=40, coverage=1.0),
        design_target("cycle_time_mean", 5, units[:4], level=0.9, planned_pilot_hours=40, coverage=1.0),
        design_target("cycle_time_mean", 5, units, level=0.9, planned_pilot_hours=4, coverage=1.0),
        design_target(
            "cycle_time_mean",
            5,
            units[:4],
            level=0.9,
            planned_pilot_hours=40,
            coverage=1.0,
            method=Method.CONTROL_LINE,
            control=units[:4],
        ),
        design_target(
            "cycle_time_mean",
            5,
            units,
            level=0.9,
            planned_pilot_hours=40,
            coverage=1.0,
            method=Method.CONTROL_LINE,
            control=np.zeros_like(units),
        ),
    ]
    assert all(d.note for d in designs)
    stated = plan(design={"stated_mde_pct": {"cycle_time_mean": 0.5}})
    (warning,) = stated_design_warnings(stated, designs[2:3])
    for language in Language:
        words = Words(language)
        for design in designs:
            assert words.design_gap(design.note) != design.note, (language, design.note)
        assert words.warning(warning) != warning
