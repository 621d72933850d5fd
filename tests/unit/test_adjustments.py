"""The adjustment methods of issue 21: an adjusted baseline (IPMVP, ASHRAE Guideline 14) and a control line
(difference-in-differences), as pure maths, in the plan, and in an evaluation."""

from __future__ import annotations

import datetime as dt
import json
import math
import re
from collections.abc import Callable

import numpy as np
import pytest
from pydantic import TypeAdapter, ValidationError

from bench.confounders import BEYOND, energy_hours, two_lines
from kpi_engine.breakdown import breakdown
from kpi_engine.evaluation import DemonstrationResult, evaluate
from kpi_engine.results import comparison_document
from kpi_engine.service import Evaluation
from pilot_core import adjusted_baseline as adjusted_method
from pilot_core.adjusted_baseline import adjusted_baseline
from pilot_core.comparison import Verdict
from pilot_core.contract import TimeClass
from pilot_core.control_line import control_line, did
from pilot_core.demonstration import DemonstrationPlan, Method, canonical_json, plan_hash
from pilot_core.device_hours import HOUR_MS, DeviceHour, StateEvent
from pilot_core.histogram import LogHistogram
from pilot_core.kpi import COMPONENT_NAMES
from pilot_core.time_accounting import ProductionTotals
from reports.i18n import TEXT, Language, Words
from reports.render import render_html
from tests.unit.test_evaluation import START_MS, plan
from tests.unit.test_report_content import content_of

DAY_MS = 24 * HOUR_MS
VARIABLES = ("production_volume", "ambient_temperature", "shift_hours")


def test_a_plant_wide_change_is_not_the_pilots_effect() -> None:
    treated, control = two_lines(np.random.default_rng(1), 336, plant=-0.08, effect=0.0)
    result = did("cycle_time_mean", treated, control, 0.95)
    assert result.treated_change is not None and result.treated_change < -0.05  # the naive reading: a gain
    assert result.relative_interval is not None
    assert result.relative_interval[0] <= 0 <= result.relative_interval[1]


def test_the_control_line_recovers_the_pilots_own_effect() -> None:
    treated, control = two_lines(np.random.default_rng(2), 336, plant=-0.08, effect=-0.10)
    result = control_line("cycle_time_mean", treated, control, 0.95)
    low, high = result.estimate.relative_interval or (0.0, 0.0)
    assert low <= -0.10 <= high < 0
    assert result.pre_trend.parallel is True and result.pre_trend.note == ""


def test_a_failed_pre_trend_is_flagged() -> None:
    treated, control = two_lines(np.random.default_rng(3), 336, plant=0.0, effect=0.0)
    baseline = treated[0].copy()
    drift = np.linspace(1.0, 1.3, len(baseline))  # the treated line slows over the baseline, the control does not
    baseline[:, COMPONENT_NAMES.index("output_cycle_time_s")] *= drift
    result = control_line("cycle_time_mean", (baseline, treated[1]), control, 0.90)
    assert result.pre_trend.parallel is False
    assert "not parallel" in result.pre_trend.note


def test_paired_hours_must_be_the_same_hours() -> None:
    treated, control = two_lines(np.random.default_rng(4), 50, plant=0.0, effect=0.0)
    with pytest.raises(ValueError, match="paired"):
        did("cycle_time_mean", treated, (control[0][:-1], control[1]), 0.9)


def energy(
    effect: float, seed: int = 5, **weather: tuple[float, float]
) -> tuple[tuple[np.ndarray, dict[str, np.ndarray]], ...]:
    rng = np.random.default_rng(seed)
    e_b, x_b, _ = energy_hours(rng, 336, False, 0.0, **weather)
    e_p, x_p, _ = energy_hours(rng, 336, True, effect, **weather)
    return (e_b, x_b), (e_p, x_p)


def test_the_adjusted_baseline_recovers_savings_under_changed_conditions() -> None:
    baseline, pilot = energy(-0.05)
    naive = pilot[0].sum() / baseline[0].sum() - 1
    assert naive > 0.1  # warmer, more volume, a third shift: the raw comparison sees more energy, not less
    result = adjusted_baseline("energy_kwh", VARIABLES, baseline, pilot, 0.95)
    assert result.model is not None and result.model.passes and not result.refused
    assert result.model.cv_rmse <= 0.30 and abs(result.model.nmbe) <= 0.10 and result.model.r_squared > 0.5
    low, high = result.relative_interval or (0.0, 0.0)
    assert low <= -0.05 <= high < 0
    assert result.savings is not None and result.savings > 0
    assert result.fractional_savings_uncertainty is not None


def test_a_pilot_beyond_the_baselines_conditions_gets_no_verdict() -> None:
    """IPMVP: the model is valid over the conditions it was fitted on. A pilot warmer on average than every
    baseline hour would be judged by an extrapolation, whose interval fell short of its level (bench.confounders)."""
    baseline, pilot = energy(-0.05, seed=1, baseline_weather=BEYOND)
    result = adjusted_baseline("energy_kwh", VARIABLES, baseline, pilot, 0.9)
    assert result.model is not None and result.model.passes  # the fit itself is fine
    assert result.refused.startswith("the pilot's conditions lie outside the baseline's")
    assert "mean ambient_temperature" in result.refused and "production_volume" not in result.refused
    assert result.relative_change is None and result.relative_interval is None
    temperature = {c.variable: c for c in result.conditions}["ambient_temperature"]
    assert temperature.pilot_mean > temperature.baseline_max and temperature.pilot_hours_outside > 0.5


def test_revision_1_computes_as_kpi_engine_3_did() -> None:
    """Bundles of kpi_engine 3 are verified with revision 1: bandwidth half the sample, a verdict whatever the
    pilot's conditions, none reported; the same model and centre as the present revision."""
    baseline, pilot = energy(-0.05, seed=1, baseline_weather=BEYOND)
    present = adjusted_baseline("energy_kwh", VARIABLES, baseline, pilot, 0.9)
    engine_3 = adjusted_baseline("energy_kwh", VARIABLES, baseline, pilot, 0.9, revision=1)
    assert present.refused and not engine_3.refused and engine_3.relative_interval is not None
    assert engine_3.conditions == () and not any("outside the baseline's range" in w for w in engine_3.warnings)
    assert engine_3.method == adjusted_method.METHOD_REVISION_1 != present.method
    assert engine_3.model == present.model and engine_3.adjusted_baseline == present.adjusted_baseline
    baseline, pilot = energy(-0.05)
    intervals = [
        adjusted_baseline("energy_kwh", VARIABLES, baseline, pilot, 0.9, revision=r).relative_interval for r in (1, 2)
    ]
    assert intervals[0] != intervals[1]  # the bandwidth: half the sample, then the whole


def test_pilot_hours_outside_the_baselines_range_are_shown_and_warned_of() -> None:
    baseline, pilot = energy(-0.05)  # spring reaches the pilot's weather; demand ramps past the baseline's
    result = adjusted_baseline("energy_kwh", VARIABLES, baseline, pilot, 0.9)
    assert not result.refused and result.relative_interval is not None
    conditions = {c.variable: c for c in result.conditions}
    assert list(conditions) == list(VARIABLES)
    for name, c in conditions.items():
        assert c.baseline_min <= c.pilot_mean <= c.baseline_max
        warned = [w for w in result.warnings if f"have {name} outside the baseline's range" in w]
        assert bool(warned) == (c.pilot_hours_outside > 0)
    assert (
        conditions["production_volume"].pilot_hours_outside > 0 and conditions["shift_hours"].pilot_hours_outside == 0
    )


def test_a_model_failing_guideline_14_gives_no_verdict() -> None:
    baseline, pilot = energy(0.0)
    noisy = baseline[0] * np.random.default_rng(9).lognormal(0, 0.8, len(baseline[0]))
    result = adjusted_baseline("energy_kwh", VARIABLES, (noisy, baseline[1]), pilot, 0.9)
    assert result.refused.startswith("the baseline model fails ASHRAE Guideline 14")
    assert result.relative_change is None and result.relative_interval is None


def test_too_few_baseline_hours_for_the_parameters() -> None:
    baseline, pilot = energy(0.0)
    short = (baseline[0][:3], {k: v[:3] for k, v in baseline[1].items()})
    result = adjusted_baseline("energy_kwh", VARIABLES, short, pilot, 0.9)
    assert "3 baseline hours for a model of 4 parameters" in result.refused
    assert result.relative_interval is None and result.model is None


def test_a_variable_without_data_gives_no_verdict() -> None:
    baseline, pilot = energy(0.0)
    gap = dict(pilot[1], ambient_temperature=np.full(len(pilot[0]), np.nan))
    result = adjusted_baseline("energy_kwh", VARIABLES, baseline, (pilot[0], gap), 0.9)
    assert result.refused == "the independent variable 'ambient_temperature' has no data for every pilot hour"
    missing = adjusted_baseline("energy_kwh", VARIABLES, (baseline[0], {}), pilot, 0.9)
    assert "'production_volume' has no data" in missing.refused
    flat = dict(baseline[1], shift_hours=np.ones(len(baseline[0])))
    constant = adjusted_baseline("energy_kwh", VARIABLES, (baseline[0], flat), pilot, 0.9)
    assert constant.refused == "the independent variable 'shift_hours' does not vary over the baseline"


CONTROL = {
    "devices": ["press-2"],
    "output_devices": ["press-2"],
    "independence": "separate cell, own operators and own material feed",
}


def test_a_control_device_that_is_also_treated_is_refused() -> None:
    with pytest.raises(ValidationError, match="press also treated"):
        plan(devices=["press", "meter"], control_line={**CONTROL, "devices": ["press"], "output_devices": ["press"]})
    with pytest.raises(ValidationError, match="not in scope: press-9"):
        plan(control_line={**CONTROL, "devices": ["press-9"], "output_devices": ["press-9"]})
    with pytest.raises(ValidationError, match="declares no control_line"):
        plan(targets=[{"kpi": "cycle_time_mean", "direction": "decrease", "change_pct": 5, "method": "control_line"}])
    with pytest.raises(ValidationError, match="declares no adjusted_baseline"):
        plan(targets=[{"kpi": "energy_per_good_unit", "direction": "decrease", "change_pct": 5,
                       "method": "adjusted_baseline"}])  # fmt: skip
    with pytest.raises(ValidationError, match="listed twice"):
        plan(adjusted_baseline={"variables": ["production_volume", "production_volume"], "reason": "volume"})


def test_a_plan_without_the_methods_keeps_its_hash() -> None:
    plain = plan()
    document = json.loads(canonical_json(plain))
    assert "adjusted_baseline" not in document and "control_line" not in document
    assert all("method" not in t for t in document["targets"])
    target = {"kpi": "cycle_time_mean", "direction": "decrease", "change_pct": 5, "method": "control_line"}
    chosen = plan(targets=[target], devices=["press", "meter", "press-2"], control_line=CONTROL)
    assert plan_hash(chosen) != plan_hash(plain)
    assert json.loads(canonical_json(chosen))["targets"][0]["method"] == "control_line"


def cell_hours(device: str, days: range, cycle_s: float, rng: np.random.Generator, drift: float) -> list[DeviceHour]:
    """A press in shift 08–16 whose cycle time follows the plant's common drift."""
    hours = []
    for day in days:
        for hh in range(24):
            start = START_MS + day * DAY_MS + hh * HOUR_MS
            hour = DeviceHour(device, start, state_at_start=StateEvent(start - 1, "running", TimeClass.PRODUCTION))
            if 8 <= hh < 16:
                mean = cycle_s * (1 + drift * rng.normal())
                times = rng.normal(mean, mean * 0.05, int(3600 / mean))
                hour.production["P"] = ProductionTotals(len(times), len(times), 0, 0, float(times.sum()), len(times))
                hour.cycle_times = LogHistogram.of(times)
            hours.append(hour)
    return hours


def test_an_evaluation_judges_a_target_against_its_control_line() -> None:
    """The whole plant 10% faster, the pilot adds nothing: the plain comparison says met, the control line not."""
    rng = np.random.default_rng(11)
    chosen = plan(
        devices=["press", "meter", "press-2"],
        control_line=CONTROL,
        targets=[{"kpi": "cycle_time_mean", "direction": "decrease", "change_pct": 5, "method": "control_line"}],
    )
    hours = {
        "press": cell_hours("press", range(5), 30.0, rng, 0.02) + cell_hours("press", range(7, 12), 27.0, rng, 0.02),
        "press-2": cell_hours("press-2", range(5), 40.0, rng, 0.02)
        + cell_hours("press-2", range(7, 12), 36.0, rng, 0.02),
    }
    result = evaluate(chosen, plan_hash(chosen), hours)
    raw = result.comparisons["cycle_time_mean"]
    assert raw.relative_change == pytest.approx(-0.10, abs=0.01)  # the line's figures leave the control out
    (target,) = result.targets
    assert target.method is Method.CONTROL_LINE
    assert target.check.verdict is not Verdict.MET
    effect = result.control_lines["cycle_time_mean"]
    assert effect.estimate.relative_interval is not None
    assert effect.estimate.relative_interval[0] <= 0 <= effect.estimate.relative_interval[1]
    days = breakdown(chosen, hours)  # the report's charts: the line's days, never the control's
    assert sum(d.components.output_cycles for d in days.days) == sum(
        result.phases[phase].components.output_cycles for phase in result.phases
    )
    assert sum(d.components.cycles for d in days.days) == sum(p.components.cycles for p in result.phases.values())
    adapter = TypeAdapter(DemonstrationResult)  # the result cache keeps the methods' results too
    stored = json.loads(json.dumps(adapter.dump_python(result, mode="json"), allow_nan=False))
    assert adapter.validate_python(stored) == result


def test_an_adjusted_baseline_that_cannot_be_fitted_is_inconclusive_with_its_reason() -> None:
    """The meter reported nothing in the baseline: no model, no verdict, and the reason says so."""
    chosen = plan(
        adjusted_baseline={"variables": ["production_volume", "shift_hours"], "reason": "volume and shifts"},
        targets=[
            {"kpi": "energy_per_good_unit", "direction": "decrease", "change_pct": 5, "method": "adjusted_baseline"}
        ],
    )
    rng = np.random.default_rng(12)
    hours = {
        "press": cell_hours("press", range(5), 30.0, rng, 0.02) + cell_hours("press", range(7, 12), 30.0, rng, 0.02),
        "meter": [
            DeviceHour("meter", START_MS + d * DAY_MS + h * HOUR_MS, machine=False, energy_kwh=2.0)
            for d in range(7, 12)
            for h in range(24)
        ],
    }
    result = evaluate(chosen, plan_hash(chosen), hours)
    (target,) = result.targets
    assert target.check.verdict is Verdict.INCONCLUSIVE
    assert result.adjusted is not None and result.adjusted.refused
    assert target.check.reason == result.adjusted.refused == "the baseline has no energy_kwh to model"
    assert result.adjusted.relative_change is None


def metered(press: list[DeviceHour], rng: np.random.Generator, per_unit_kwh: float) -> list[DeviceHour]:
    """A meter whose energy follows the press's output: a base load plus energy per unit produced."""
    return [
        DeviceHour(
            "meter",
            hour.start_ms,
            machine=False,
            energy_kwh=(0.5 + per_unit_kwh * sum(t.produced for t in hour.production.values()))
            * (1 + 0.03 * rng.normal()),
        )
        for hour in press
    ]


@pytest.mark.parametrize("language", list(Language))
def test_the_report_shows_each_method_with_its_diagnostics(language: Language) -> None:
    rng = np.random.default_rng(13)
    chosen = plan(
        devices=["press", "meter", "press-2"],
        control_line=CONTROL,
        adjusted_baseline={"variables": ["production_volume"], "reason": "energy follows output"},
        targets=[
            {"kpi": "cycle_time_mean", "direction": "decrease", "change_pct": 5, "method": "control_line"},
            {"kpi": "energy_per_good_unit", "direction": "decrease", "change_pct": 5, "method": "adjusted_baseline"},
        ],
    )
    before = cell_hours("press", range(5), 30.0, rng, 0.02)
    after = cell_hours("press", range(7, 12), 27.0, rng, 0.02)
    hours = {
        "press": before + after,
        "meter": metered(before, rng, 0.02) + metered(after, rng, 0.018),  # 10% less per unit, same base load
        "press-2": cell_hours("press-2", range(5), 40.0, rng, 0.02)
        + cell_hours("press-2", range(7, 12), 36.0, rng, 0.02),
    }
    content = content_of(chosen, hours)
    assert content.adjusted is not None and content.adjusted.model is not None and content.adjusted.model.passes
    produced = np.array([sum(t.produced for t in h.production.values()) for h in after])
    truth = (0.5 + 0.018 * produced).sum() / (0.5 + 0.02 * produced).sum() - 1  # at the pilot's conditions
    low, high = content.adjusted.relative_interval or (0.0, 0.0)
    assert low <= truth <= high < -0.05
    rows = {r.kpi: r for r in content.kpis}
    assert rows["energy_per_good_unit"].verdict is Verdict.MET
    assert rows["cycle_time_mean"].method == "control_line"
    words = Words(language)
    html = render_html(content, language)
    assert 'id="adjustments"' in html and 'id="adjusted-baseline"' in html and 'data-passes="true"' in html
    assert 'class="control-line" data-kpi="cycle_time_mean"' in html and 'data-parallel="true"' in html
    assert 'class="condition" data-variable="production_volume"' in html  # its baseline range against the pilot's
    shown = re.sub(r"<[^>]+>", "", html)
    for key in ("section_adjustments", "adjusted_title", "control_title", "control_parallel"):
        assert TEXT[language][key] in shown, key
    assert words.explanation(rows["cycle_time_mean"], content.method) in shown
    assert str(CONTROL["independence"]) in shown


def test_the_evidence_bundles_comparison_carries_the_methods() -> None:
    """The comparison document (what the API serves, the bundle signs and ``pilot verify`` recomputes) holds both
    methods' sections, and each target says its method."""
    rng = np.random.default_rng(14)
    chosen = plan(
        devices=["press", "meter", "press-2"],
        control_line=CONTROL,
        targets=[{"kpi": "cycle_time_mean", "direction": "decrease", "change_pct": 5, "method": "control_line"}],
    )
    hours = {
        "press": cell_hours("press", range(5), 30.0, rng, 0.02) + cell_hours("press", range(7, 12), 27.0, rng, 0.02),
        "press-2": cell_hours("press-2", range(5), 40.0, rng, 0.02)
        + cell_hours("press-2", range(7, 12), 40.0, rng, 0.02),
    }
    result = evaluate(chosen, plan_hash(chosen), hours)
    document = comparison_document(Evaluation(1, "press-line", 1, True, chosen, result, "sha256:data", 0, False))
    (effect,) = document.control_line
    assert effect.kpi == "cycle_time_mean" and effect.control_devices == ["press-2"]
    assert effect.relative_interval is not None and effect.relative_interval[1] < -0.05
    (change,) = [k for k in document.kpis if k.kpi == "cycle_time_mean"]
    assert change.target is not None and change.target.method is Method.CONTROL_LINE
    assert change.target.verdict is Verdict.MET
    assert document.adjusted_baseline is None


WEATHER = {
    "variables": ["production_volume", "ambient_temperature"],
    "reason": "energy follows output, and cooling the weather",
    "ambient_sensors": ["env"],
}


def test_ambient_temperature_needs_an_environment_sensor_in_scope() -> None:
    """Refused at plan time, with the reason: no sensor named, a sensor out of scope, a sensor without the variable."""
    energy_target = {
        "kpi": "energy_per_good_unit", "direction": "decrease", "change_pct": 5, "method": "adjusted_baseline"
    }  # fmt: skip
    no_sensor = {"variables": ["production_volume", "ambient_temperature"], "reason": "weather"}
    with pytest.raises(ValidationError, match=r"ambient_temperature needs adjusted_baseline\.ambient_sensors"):
        plan(adjusted_baseline=no_sensor, targets=[energy_target])
    with pytest.raises(ValidationError, match="ambient_sensors must be devices in scope; not in scope: env"):
        plan(adjusted_baseline=WEATHER, targets=[energy_target])
    with pytest.raises(ValidationError, match="ambient_temperature is not a variable"):
        plan(devices=["press", "meter", "env"], adjusted_baseline={**WEATHER, "variables": ["production_volume"]})
    accepted = plan(devices=["press", "meter", "env"], adjusted_baseline=WEATHER, targets=[energy_target])
    assert '"ambient_sensors":["env"]' in canonical_json(accepted)
    # A plan without sensors keeps the canonical text, and so the hash, it had before sensors existed.
    volume = plan(adjusted_baseline={"variables": ["production_volume"], "reason": "output"}, targets=[energy_target])
    assert "ambient_sensors" not in canonical_json(volume)


def sensor_hours(days: range, temperature: Callable[[int, int], float | None]) -> list[DeviceHour]:
    """An environment sensor's hours: a reading a minute, their mean ``temperature(day, hour)`` (None: no mean)."""
    return [
        DeviceHour(
            "env", START_MS + d * DAY_MS + h * HOUR_MS, machine=False, telemetry_points=60, ambient_c=temperature(d, h)
        )
        for d in days
        for h in range(24)
    ]


def weather(day: int, hour: int) -> float:
    """The baseline (days 0–4) warms from 14 to 26 °C; the pilot (days 7–11) stays about 22 °C; a daily swing."""
    trend = 14 + 12 * (day * 24 + hour) / 120 if day < 5 else 22.0
    return trend + 3 * math.sin(2 * math.pi * (hour - 9) / 24)


def cooled(press: list[DeviceHour], rng: np.random.Generator, per_unit_kwh: float) -> list[DeviceHour]:
    """A meter: base load, energy per unit, and cooling of 0.05 kWh per °C of the sensor's ambient."""
    return [
        DeviceHour(
            "meter",
            hour.start_ms,
            machine=False,
            energy_kwh=(
                0.5
                + per_unit_kwh * sum(t.produced for t in hour.production.values())
                + 0.05 * weather((hour.start_ms - START_MS) // DAY_MS, (hour.start_ms - START_MS) % DAY_MS // HOUR_MS)
            )
            * (1 + 0.03 * rng.normal()),
        )
        for hour in press
    ]


def weathered_line() -> dict[str, list[DeviceHour]]:
    """A press whose pilot (days 7–11) saves 10% of the energy per unit, its meter cooling with the weather, and the
    environment sensor reading that weather."""
    rng = np.random.default_rng(21)
    before = cell_hours("press", range(5), 30.0, rng, 0.02)
    after = cell_hours("press", range(7, 12), 30.0, rng, 0.02)
    return {
        "press": before + after,
        "meter": cooled(before, rng, 0.02) + cooled(after, rng, 0.018),
        "env": sensor_hours(range(5), weather) + sensor_hours(range(7, 12), weather),
    }


def weather_plan() -> DemonstrationPlan:
    return plan(
        devices=["press", "meter", "env"],
        adjusted_baseline=WEATHER,
        targets=[
            {"kpi": "energy_per_good_unit", "direction": "decrease", "change_pct": 5, "method": "adjusted_baseline"}
        ],
    )


def test_the_adjusted_baseline_regresses_on_the_ambient_sensors_temperature() -> None:
    """The pilot saves 10% of the energy per unit while its weather differs from the baseline's average: the
    regression on volume and the sensor's hourly temperature finds the cooling slope and the pilot's saving."""
    hours = weathered_line()
    after = hours["press"][5 * 24 :]  # the pilot's days, 7–11
    chosen = weather_plan()
    result = evaluate(chosen, plan_hash(chosen), hours)
    adjusted = result.adjusted
    assert adjusted is not None and not adjusted.refused and adjusted.model is not None and adjusted.model.passes
    assert adjusted.model.variables == ("production_volume", "ambient_temperature")
    assert adjusted.model.coefficients["ambient_temperature"] == pytest.approx(0.05, rel=0.3)
    produced = np.array([sum(t.produced for t in h.production.values()) for h in after])
    cooling = np.array([0.05 * weather(7 + i // 24, i % 24) for i in range(len(after))])
    truth = (0.5 + 0.018 * produced + cooling).sum() / (0.5 + 0.02 * produced + cooling).sum() - 1
    low, high = adjusted.relative_interval or (0.0, 0.0)
    assert low <= truth <= high
    temperature = {c.variable: c for c in adjusted.conditions}["ambient_temperature"]
    assert temperature.baseline_min < 14 and temperature.baseline_max > 26 and temperature.pilot_hours_outside == 0
    assert not [w for w in result.warnings if "ambient sensor" in w]


def test_an_ambient_sensor_without_temperatures_gives_no_verdict_with_the_reason() -> None:
    """Hours of the sensor without a temperature: an inconclusive verdict saying how many, never a number; hours with
    telemetry but no temperature (a sensor without one, or hours kept before temperatures were) are warned of."""
    rng = np.random.default_rng(22)
    before = cell_hours("press", range(5), 30.0, rng, 0.02)
    after = cell_hours("press", range(7, 12), 30.0, rng, 0.02)

    def gaps(day: int, hour: int) -> float | None:
        return None if day == 9 and hour < 6 else weather(day, hour)

    hours = {
        "press": before + after,
        "meter": cooled(before, rng, 0.02) + cooled(after, rng, 0.018),
        "env": sensor_hours(range(5), weather) + sensor_hours(range(7, 12), gaps),
    }
    chosen = weather_plan()
    result = evaluate(chosen, plan_hash(chosen), hours)
    (target,) = result.targets
    assert result.adjusted is not None and result.adjusted.relative_interval is None
    reason = "the independent variable 'ambient_temperature' has no data in 6 of the 120 pilot hours"
    assert result.adjusted.refused == reason and target.check.verdict is Verdict.INCONCLUSIVE
    assert target.check.reason == reason
    assert any(
        w.startswith("ambient sensor env: 6 hours with telemetry but no ambient temperature") for w in result.warnings
    )
    # No sensor hours at all in the baseline: none of its hours has the variable.
    hours["env"] = sensor_hours(range(7, 12), weather)
    silent = evaluate(chosen, plan_hash(chosen), hours)
    assert silent.adjusted is not None
    assert (
        silent.adjusted.refused == "the independent variable 'ambient_temperature' has no data for every baseline hour"
    )


def test_an_evaluation_with_fewer_baseline_hours_than_the_model_needs_is_inconclusive() -> None:
    """Two variables and a constant need 30 baseline hours (10 per parameter): a one-day baseline of 24 gives the
    reason, never a number."""
    start = dt.datetime.fromtimestamp(START_MS / 1000, dt.UTC)

    def window(name: str, phase: str, first_day: int, days: int) -> dict[str, str]:
        begin = start + dt.timedelta(days=first_day)
        end = begin + dt.timedelta(days=days)
        return {"name": name, "phase": phase, "start": begin.isoformat(), "end": end.isoformat()}

    chosen = plan(
        devices=["press", "meter", "env"],
        adjusted_baseline=WEATHER,
        windows=[window("before", "baseline", 0, 1), window("after", "pilot", 7, 5)],
        targets=[
            {"kpi": "energy_per_good_unit", "direction": "decrease", "change_pct": 5, "method": "adjusted_baseline"}
        ],
    )
    rng = np.random.default_rng(23)
    before = cell_hours("press", range(1), 30.0, rng, 0.02)
    after = cell_hours("press", range(7, 12), 30.0, rng, 0.02)
    hours = {
        "press": before + after,
        "meter": cooled(before, rng, 0.02) + cooled(after, rng, 0.018),
        "env": sensor_hours(range(1), weather) + sensor_hours(range(7, 12), weather),
    }
    result = evaluate(chosen, plan_hash(chosen), hours)
    (target,) = result.targets
    assert result.adjusted is not None and result.adjusted.relative_change is None
    assert result.adjusted.refused == "24 baseline hours for a model of 3 parameters: at least 30 are needed"
    assert target.check.verdict is Verdict.INCONCLUSIVE and target.check.reason == result.adjusted.refused
