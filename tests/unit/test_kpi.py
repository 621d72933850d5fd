"""The KPI engine's pure core: ISO 22400-2 formulas, roll-ups, percentiles and comparisons."""

from __future__ import annotations

import math
import random
import re
from pathlib import Path

import numpy as np
import pytest

from pilot_core.comparison import LEVELS, Verdict, check_target, compare, critical_value, estimate
from pilot_core.histogram import LogHistogram
from pilot_core.kpi import KPIS, Components, NoValue, compute, compute_all, no_value_reason, total

# The public worked example: a 480-minute shift with 60 minutes of planned
# breaks, 47 minutes down, an ideal cycle of 1 s, 19,271 parts, 423 rejects.
SHIFT = Components(
    pbt_s=(480 - 60) * 60,
    apt_s=(480 - 60 - 47) * 60,
    adet_s=47 * 60,
    planned_down_s=60 * 60,
    produced=19_271,
    good=19_271 - 423,
    scrap=423,
    ideal_s=19_271 * 1.0,
    output_produced=19_271,
    output_good=19_271 - 423,
    output_pbt_s=(480 - 60) * 60,
    failures=3,
    repair_s=47 * 60,
    energy_kwh=1_200.0,
    meter_hours=8,  # the 1,200 kWh were metered: one energy meter in scope over the 8-hour shift
)


def pct(value: float | None) -> float:
    assert value is not None
    return round(value * 100, 2)


def test_oee_worked_example() -> None:
    assert pct(compute("availability", SHIFT)) == 88.81
    assert pct(compute("effectiveness", SHIFT)) == 86.11
    assert pct(compute("quality_ratio", SHIFT)) == 97.80
    assert pct(compute("oee", SHIFT)) == 74.79


def test_other_kpis_of_the_worked_example() -> None:
    values = compute_all(SHIFT)
    assert values["throughput_rate"] == pytest.approx(19_271 / 7)
    assert values["scrap_ratio"] == pytest.approx(423 / 19_271)
    assert values["technical_efficiency"] == pytest.approx(373 / 420)
    assert values["mttr"] == pytest.approx(47 / 3)
    assert values["mtbf"] == pytest.approx(373 / 60 / 3)
    assert values["energy_per_good_unit"] == pytest.approx(1_200 / 18_848)
    assert values["cycle_time_mean"] is None  # no cycle times reported: nothing to divide by
    assert set(values) == set(KPIS)


def test_roll_ups_sum_components_and_never_average_ratios() -> None:
    busy = Components(pbt_s=1000, apt_s=900, produced=90, good=90, ideal_s=810)
    quiet = Components(pbt_s=100, apt_s=10, produced=1, good=0, scrap=1, ideal_s=9)
    rolled = total([busy, quiet])
    assert compute("availability", rolled) == pytest.approx(910 / 1100)
    mean_of_ratios = (compute("availability", busy) + compute("availability", quiet)) / 2  # type: ignore[operator]
    assert compute("availability", rolled) != pytest.approx(mean_of_ratios)
    assert compute("quality_ratio", rolled) == pytest.approx(90 / 91)


def test_effectiveness_above_one_is_reported_raw() -> None:
    assert compute("effectiveness", Components(apt_s=100, ideal_s=120)) == pytest.approx(1.2)


def test_unknown_kpi_is_a_clear_error() -> None:
    with pytest.raises(ValueError, match="unknown KPI 'oae'"):
        compute("oae", SHIFT)


def test_histogram_quantiles_are_within_their_relative_accuracy_and_merge() -> None:
    rng = random.Random(4)
    values = [rng.lognormvariate(3, 0.3) for _ in range(20_000)]
    first, second = LogHistogram.of(values[:7_000]), LogHistogram.of(values[7_000:])
    first.merge(LogHistogram.from_counts({str(k): v for k, v in second.counts.items()}))
    assert first.total == len(values)
    for q in (0.5, 0.95):
        exact = float(np.quantile(values, q))
        assert first.quantile(q) == pytest.approx(exact, rel=0.01)
    assert LogHistogram().quantile(0.5) is None
    with pytest.raises(ValueError, match="positive"):
        first.add(0.0)


def ar1(rng: np.random.Generator, n: int, phi: float, mean: float, sd: float) -> np.ndarray:
    noise = rng.normal(0, sd * math.sqrt(1 - phi**2), n + 100)
    x = np.empty_like(noise)
    x[0] = noise[0]
    for i in range(1, len(x)):
        x[i] = phi * x[i - 1] + noise[i]
    return mean + x[100:]


def cycles(values: np.ndarray) -> list[Components]:
    """Cycles of the line's output station: its cycle time is the line's."""
    return [Components(cycle_time_s=float(v), cycles=1, output_cycle_time_s=float(v), output_cycles=1) for v in values]


def test_autocorrelation_shrinks_the_effective_n() -> None:
    rng = np.random.default_rng(1)
    independent = estimate("cycle_time_mean", cycles(ar1(rng, 2_000, 0.0, 30, 3)))
    correlated = estimate("cycle_time_mean", cycles(ar1(rng, 2_000, 0.7, 30, 3)))
    assert independent.effective_n is not None and correlated.effective_n is not None
    assert independent.effective_n > 1_500
    # AR(1) with φ = 0.7: n(1 - φ)/(1 + φ) ≈ 350
    assert 200 < correlated.effective_n < 600


def test_the_effective_n_never_exceeds_n() -> None:
    """Issue 17 item 8: hours that alternate (a slow hour, then a catch-up) give a HAC variance below the
    i.i.d. one (193.6 effective units from 24 hours), which is no reason to claim more units than there are."""
    rng = np.random.default_rng(3)
    alternating = 30 + 3 * (-1.0) ** np.arange(24) + rng.normal(0, 0.3, 24)
    hourly = estimate("cycle_time_mean", cycles(alternating))
    assert hourly.effective_n is not None and hourly.std_error is not None
    assert hourly.effective_n == hourly.n == 24


def test_verdicts_follow_the_interval() -> None:
    rng = np.random.default_rng(2)
    baseline = cycles(ar1(rng, 400, 0.7, 30, 3))
    faster = cycles(ar1(rng, 400, 0.7, 24, 2.4))  # 20% faster
    same = cycles(ar1(rng, 400, 0.7, 30, 3))
    strong = compare("cycle_time_mean", baseline, faster)
    assert strong.relative_interval is not None and strong.relative_change is not None
    assert strong.relative_interval[0] < strong.relative_change < strong.relative_interval[1]
    assert strong.relative_change == pytest.approx(-0.2, abs=0.03)
    assert check_target(strong, 10).verdict is Verdict.MET
    assert check_target(strong, 30).verdict is Verdict.NOT_MET
    none = compare("cycle_time_mean", baseline, same)
    check = check_target(none, 2)
    assert check.verdict in (Verdict.NOT_MET, Verdict.INCONCLUSIVE)
    assert check_target(none, 10).verdict is Verdict.NOT_MET
    assert none.minimum_detectable_change is not None and 0 < none.minimum_detectable_change < 0.2


def test_an_inconclusive_verdict_says_how_much_longer_to_run() -> None:
    rng = np.random.default_rng(3)
    baseline = cycles(ar1(rng, 400, 0.7, 30, 3))
    pilot = cycles(ar1(rng, 80, 0.7, 26.4, 2.64))  # a short pilot, 12% faster
    check = check_target(compare("cycle_time_mean", baseline, pilot), 9)
    assert check.verdict is Verdict.INCONCLUSIVE
    assert check.pilot_length_factor is not None and 1 < check.pilot_length_factor < 5
    assert "as long would show it met" in check.reason


def test_higher_is_better_targets_and_too_little_data() -> None:
    base = [Components(pbt_s=3600, apt_s=3000 + 10 * (i % 3)) for i in range(50)]
    better = [Components(pbt_s=3600, apt_s=3400 + 10 * (i % 3)) for i in range(50)]
    result = compare("availability", base, better)
    assert check_target(result, 5).verdict is Verdict.MET
    few = compare("availability", base[:5], better[:5])
    assert few.relative_interval is None and "too few units" in few.note
    assert check_target(few, 5).verdict is Verdict.INCONCLUSIVE


def test_zero_in_a_period_keeps_the_absolute_interval() -> None:
    base = [Components(produced=100, scrap=2 + i % 2, good=98 - i % 2) for i in range(30)]
    clean = [Components(produced=100, good=100) for _ in range(30)]
    result = compare("scrap_ratio", base, clean)
    assert result.relative_change == pytest.approx(-1.0)
    assert result.absolute_interval is not None and result.relative_interval is None


def test_confidence_levels_and_critical_values() -> None:
    assert LEVELS == (0.8, 0.9, 0.95, 0.98)
    assert critical_value(0.95, 0.0) == pytest.approx(1.96)
    assert critical_value(0.95, 0.2) > critical_value(0.95, 0.1) > 1.96
    with pytest.raises(ValueError, match="confidence level must be one of"):
        critical_value(0.99, 0.1)
    with pytest.raises(ValueError, match="size of the improvement"):
        check_target(compare("availability", [SHIFT] * 10, [SHIFT] * 10), -5)


def test_a_kpi_whose_input_is_missing_has_no_value_and_a_reason() -> None:
    unmetered = Components(
        pbt_s=SHIFT.pbt_s, apt_s=SHIFT.apt_s, produced=SHIFT.produced, good=SHIFT.good, output_good=SHIFT.good
    )
    # No energy meter in scope: no energy figure, not zero kWh per unit.
    assert compute("energy_per_good_unit", unmetered) is None
    assert no_value_reason("energy_per_good_unit", unmetered) is NoValue.NO_ENERGY_METER
    # A meter in scope that measured nothing is a measurement of zero.
    assert compute("energy_per_good_unit", unmetered + Components(meter_hours=8)) == 0.0
    assert no_value_reason("energy_per_good_unit", unmetered + Components(meter_hours=8)) is None
    assert no_value_reason("mtbf", unmetered) is NoValue.NO_FAILURES
    assert no_value_reason("cycle_time_mean", unmetered) is NoValue.NO_OUTPUT_CYCLES
    assert no_value_reason("availability", Components()) is NoValue.NO_PLANNED_BUSY_TIME
    assert no_value_reason("oee", Components(pbt_s=10)) is NoValue.NO_PRODUCTION_TIME
    for name in KPIS:  # every KPI says why it has no value when nothing at all was recorded
        assert no_value_reason(name, Components()) not in (None, NoValue.NOT_FINITE), name


def test_a_comparison_without_an_energy_meter_says_so_and_not_zero() -> None:
    hour = Components(pbt_s=3600, apt_s=3000, produced=100, good=98, output_good=98, output_pbt_s=3600)
    comparison = compare("energy_per_good_unit", [hour] * 12, [hour] * 12)
    assert comparison.baseline.value is None and comparison.pilot.value is None
    assert comparison.note == (
        "no value in the baseline: no energy meter in scope; no value in the pilot: no energy meter in scope"
    )


def test_docs_list_every_kpi_with_the_engines_formula_and_unit() -> None:
    """docs/kpis.md's KPI table: every KPI id a result carries, with the formula string and unit of the code."""
    from kpi_engine.evaluation import PERCENTILES, kpi_unit  # noqa: PLC0415 (the engine, above the pure core)

    docs = (Path(__file__).parents[2] / "docs" / "kpis.md").read_text(encoding="utf-8")
    rows = {}
    for line in docs.splitlines():
        cells = [cell.strip() for cell in line.strip().strip("|").split("|")]
        if len(cells) == 4 and re.fullmatch(r"`[a-z0-9_]+`", cells[0]) and cells[3].startswith("`"):
            rows[cells[0].strip("`")] = (cells[2], cells[3].strip("`"))
    assert set(rows) == {*KPIS, *PERCENTILES}
    for name, (formula, unit) in rows.items():
        assert unit == kpi_unit(name), name
        if name in KPIS:
            assert formula == f"`{KPIS[name].formula}`", name
    # ISO 22400-2: the throughput rate counts produced units (PQ), not good ones.
    assert KPIS["throughput_rate"].formula.startswith("output PQ /")
    assert compute("throughput_rate", SHIFT) == pytest.approx(SHIFT.output_produced / 7)
