"""Design before data (pilot_core.design): the minimum detectable effect from the baseline alone, checked
against statsmodels and scipy, on simple known cases, and by simulation (an effect of the MDE is detected at
about the stated power)."""

from __future__ import annotations

import math

import numpy as np
import pytest
from scipy import optimize, stats
from statsmodels.tsa.stattools import acf

from bench.series import ar1 as noise
from bench.series import ar1_around, hourly_units
from pilot_core import adjusted_baseline as adjusted_method
from pilot_core.adjusted_baseline import adjusted_baseline
from pilot_core.comparison import compare, critical_value
from pilot_core.demonstration import Method
from pilot_core.design import design_target, detection_power, pilot_units_needed
from pilot_core.kpi import COMPONENT_NAMES

CYCLE_TIME = COMPONENT_NAMES.index("output_cycle_time_s")
CYCLES = COMPONENT_NAMES.index("output_cycles")


def ar1(rng: np.random.Generator, n: int, phi: float, mean: float = 30.0, cv: float = 0.1) -> np.ndarray:
    """A stationary AR(1) series of hourly mean cycle times."""
    return ar1_around(rng, n, phi, mean, cv)


def test_revision_1_the_mde_follows_statsmodels_acf_and_the_fixed_b_critical_value() -> None:
    """Revision 1 (kpi_engine 3, kept to verify its bundles): with a constant number of cycles per hour the
    linearised mean cycle time is the hourly mean itself (less its mean), so the baseline's effective n is
    n(1 − ρ)/(1 + ρ) with ρ statsmodels' lag-1 acf of the hourly means, and the MDE is
    (c·√(1 − b + b²/3) + z of the power) · se · √(1 + n_b / n_p) on the log scale."""
    series = ar1(np.random.default_rng(3), 240, 0.6)
    design = design_target(
        "cycle_time_mean", 10, hourly_units(series), level=0.90, power=0.80, planned_pilot_hours=480, coverage=1.0,
        revision=1,
    )  # fmt: skip
    rho = float(acf(series, nlags=1, fft=False)[1])
    effective_n = 240 * (1 - rho) / (1 + rho)
    relative_se = float(series.std()) / math.sqrt(effective_n) / float(series.mean())
    assert design.baseline_autocorrelation == pytest.approx(rho, rel=1e-6)
    assert design.baseline_effective_n == pytest.approx(effective_n, rel=1e-6) and effective_n < 120
    assert design.baseline_relative_se == pytest.approx(relative_se, rel=1e-6)
    b = max(math.ceil(0.2 * 240) / 240, math.ceil(0.2 * 480) / 480)
    c = critical_value(0.90, b)
    distance = (c * math.sqrt(1 - b + b * b / 3) + stats.norm.ppf(0.80)) * relative_se * math.sqrt(1 + 240 / 480)
    assert design.mde == pytest.approx(math.expm1(-distance), rel=1e-6)  # cycle time: better lower
    assert design.met_needs == pytest.approx(math.expm1(math.log(0.90) - distance), rel=1e-6)
    assert design.planned_pilot_units == 480 and design.baseline_n == 240
    assert design.method is None and design.degrees_of_freedom is None  # revision 1 knew no method


def _satterthwaite_test(level: float, baseline_n: int, pilot_n: int, fraction: float) -> tuple[float, float, float]:
    """The interval's test as the design takes it, built here from scipy alone: (threshold, ν, se scale)."""

    def equivalent_nu(b: float) -> float:
        scaled = critical_value(level, b) * math.sqrt(1 - b + b * b / 3)
        return optimize.brentq(lambda nu: stats.t.ppf((1 + level) / 2, nu) - scaled, 0.05, 1e8, xtol=1e-12)

    b_b = max(2, math.ceil(fraction * baseline_n)) / baseline_n
    b_p = max(2, math.ceil(fraction * pilot_n)) / pilot_n
    expected = [(1 - b + b * b / 3) * v for b, v in ((b_b, 1.0), (b_p, baseline_n / pilot_n))]
    nu = sum(expected) ** 2 / (expected[0] ** 2 / equivalent_nu(b_b) + expected[1] ** 2 / equivalent_nu(b_p))
    total = 1 + baseline_n / pilot_n
    return critical_value(level, max(b_b, b_p)) * math.sqrt(sum(expected) / total), nu, math.sqrt(total)


@pytest.mark.parametrize("pilot_hours", [24, 480])
def test_the_mde_is_where_the_noncentral_t_clears_the_fixed_b_critical_value(pilot_hours: int) -> None:
    """The interval divides by an estimated HAC variance: each period's as a scaled χ² whose degrees of freedom
    put Student's t quantile at the fixed-b critical value on the HAC's expected scale, the two combined by
    Satterthwaite. The MDE is where scipy's noncentral t clears that threshold at the power; the short pilot's
    fewer degrees of freedom cost more than the long one's, against revision 1, which took the variance as known."""
    series = ar1(np.random.default_rng(3), 240, 0.6)
    units = hourly_units(series)
    design = design_target(
        "cycle_time_mean", 10, units, level=0.90, power=0.80, planned_pilot_hours=pilot_hours, coverage=1.0
    )
    old = design_target(
        "cycle_time_mean", 10, units, level=0.90, power=0.80, planned_pilot_hours=pilot_hours, coverage=1.0,
        revision=1,
    )  # fmt: skip
    assert design.mde is not None and old.mde is not None and design.baseline_relative_se is not None
    assert design.baseline_relative_se == old.baseline_relative_se  # the same baseline spread: the test differs
    threshold, nu, scale = _satterthwaite_test(0.90, 240, pilot_hours, 0.2)
    noncentrality = abs(math.log1p(design.mde)) / (design.baseline_relative_se * scale)
    assert stats.nct.sf(threshold, nu, noncentrality) == pytest.approx(0.80, abs=1e-7)
    assert design.degrees_of_freedom == pytest.approx(nu, rel=1e-9)
    assert design.method == "before_after"
    assert detection_power(0.90, 240, pilot_hours, design.baseline_relative_se, design.mde) == pytest.approx(0.80)
    assert abs(design.mde) > abs(old.mde)


def test_a_short_pilot_costs_more_than_a_long_one_against_a_known_variance() -> None:
    units = hourly_units(ar1(np.random.default_rng(4), 300, 0.3))

    def widening(pilot_hours: int) -> float:
        new, old = (
            design_target("cycle_time_mean", 5, units, level=0.90, planned_pilot_hours=pilot_hours, coverage=1.0,
                          revision=revision).mde
            for revision in (2, 1)
        )  # fmt: skip
        assert new is not None and old is not None
        return math.log1p(new) / math.log1p(old)

    assert widening(24) > widening(600) > 1


def _two_lines(rng: np.random.Generator, n: int) -> tuple[np.ndarray, np.ndarray]:
    """Hourly mean cycle times of a treated and a control line that share a strong plant-wide AR(1) swing."""
    plant = ar1(rng, n, 0.7, mean=1.0, cv=0.08)
    return 30.0 * plant * ar1(rng, n, 0.3, 1.0, 0.02), 40.0 * plant * ar1(rng, n, 0.3, 1.0, 0.02)


def test_a_control_line_target_is_designed_from_the_paired_log_gap() -> None:
    """What moves both lines cancels in the difference-in-differences: the design takes the spread of each paired
    hour's contribution to log(treated / control), not the treated line's own, which the plant's swing dominates."""
    treated, control = _two_lines(np.random.default_rng(8), 300)
    design = design_target(
        "cycle_time_mean", 5, hourly_units(treated), level=0.90, planned_pilot_hours=300, coverage=1.0,
        method=Method.CONTROL_LINE, control=hourly_units(control),
    )  # fmt: skip
    alone = design_target(
        "cycle_time_mean", 5, hourly_units(treated), level=0.90, planned_pilot_hours=300, coverage=1.0
    )
    # With constant cycles per hour the linearised log mean cycle time is the hourly mean over the mean, less 1.
    gap = (treated / treated.mean() - 1) - (control / control.mean() - 1)
    rho = float(acf(gap, nlags=1, fft=False)[1])
    effective_n = min(300.0, 300 * (1 - rho) / (1 + rho))
    assert design.method == "control_line" and design.note == ""
    assert design.baseline_autocorrelation == pytest.approx(rho, rel=1e-6)
    assert design.baseline_relative_se == pytest.approx(gap.std() / math.sqrt(effective_n), rel=1e-6)
    assert design.baseline_value == pytest.approx(treated.mean(), rel=1e-9)
    assert design.mde is not None and alone.mde is not None
    assert abs(design.mde) < abs(alone.mde) / 2
    with pytest.raises(ValueError, match="paired baseline hours"):
        design_target("cycle_time_mean", 5, hourly_units(treated), level=0.90, planned_pilot_hours=300,
                      coverage=1.0, method=Method.CONTROL_LINE)  # fmt: skip


def _energy_hours(rng: np.random.Generator, n: int, volume_mean: float = 100.0) -> tuple[np.ndarray, np.ndarray]:
    """Hourly units of a line whose energy is 5 kWh plus 0.2 kWh per unit, with AR(1) noise; and its volume."""
    volume = rng.poisson(volume_mean, n).astype(float)
    energy = 5 + 0.2 * volume + noise(rng, n, 0.5, 0.6)
    units = np.zeros((n, len(COMPONENT_NAMES)))
    for name, values in (("energy_kwh", energy), ("output_produced", volume), ("output_good", volume),
                         ("meter_hours", np.ones(n))):  # fmt: skip
        units[:, COMPONENT_NAMES.index(name)] = values
    return units, volume


def test_an_adjusted_baseline_target_is_designed_from_the_models_residuals() -> None:
    """The model is fitted on the baseline and projected onto the baseline's own hours (the pilot's conditions are
    unknown before it runs): the design takes its CV(RMSE) over √n′, n′ from the residuals' lag-1 autocorrelation
    (Guideline 14 Annex B's ingredients), and the adjusted method's own bandwidth fraction."""
    units, volume = _energy_hours(np.random.default_rng(12), 300)
    energy = units[:, COMPONENT_NAMES.index("energy_kwh")]
    period = (energy, {"production_volume": volume})
    model = adjusted_baseline("energy_kwh", ["production_volume"], period, period, 0.90)
    assert model.model is not None and not model.refused
    design = design_target(
        "energy_per_good_unit", 5, units, level=0.90, planned_pilot_hours=300, coverage=1.0,
        method=Method.ADJUSTED_BASELINE, adjusted=model,
    )  # fmt: skip
    rho = model.model.residual_ar1
    effective_n = min(300.0, 300 * (1 - rho) / (1 + rho))
    assert design.method == "adjusted_baseline"
    assert design.baseline_autocorrelation == rho and design.baseline_effective_n == pytest.approx(effective_n)
    assert design.baseline_relative_se == pytest.approx(model.model.cv_rmse / math.sqrt(effective_n), rel=1e-12)
    assert design.mde is not None and design.mde < 0 and design.baseline_relative_se is not None  # better lower
    threshold, nu, scale = _satterthwaite_test(0.90, 300, 300, adjusted_method.BANDWIDTH_FRACTION)
    noncentrality = abs(math.log1p(design.mde)) / (design.baseline_relative_se * scale)
    assert stats.nct.sf(threshold, nu, noncentrality) == pytest.approx(0.80, abs=1e-7)
    # The variance of energy per unit itself is mostly the volume's, which the model explains away.
    alone = design_target("energy_per_good_unit", 5, units, level=0.90, planned_pilot_hours=300, coverage=1.0)
    assert alone.baseline_relative_se is not None and alone.baseline_relative_se != design.baseline_relative_se


def test_an_adjusted_baseline_the_model_refuses_gives_its_reason_not_a_number() -> None:
    units, _ = _energy_hours(np.random.default_rng(13), 300)
    energy = units[:, COMPONENT_NAMES.index("energy_kwh")]
    period = (energy, {"production_volume": np.full(300, 100.0)})  # no variation: no model
    model = adjusted_baseline("energy_kwh", ["production_volume"], period, period, 0.90)
    assert model.refused
    design = design_target(
        "energy_per_good_unit", 5, units, level=0.90, planned_pilot_hours=300, coverage=1.0,
        method=Method.ADJUSTED_BASELINE, adjusted=model,
    )  # fmt: skip
    assert design.mde is None and design.method == "adjusted_baseline"
    assert design.note.startswith(model.refused) and "nothing can be designed" in design.note


def test_white_noise_gives_the_textbook_mde() -> None:
    """Independent hours: the effective n is about n, and at b → 0 the MDE is the textbook (z_α/2 + z_β)·se."""
    series = ar1(np.random.default_rng(9), 2000, 0.0)
    design = design_target(
        "cycle_time_mean", 10, hourly_units(series), level=0.95, power=0.80, planned_pilot_hours=2000, coverage=1.0
    )
    assert design.baseline_effective_n is not None and design.baseline_effective_n > 1800
    se = float(series.std()) / math.sqrt(2000) / float(series.mean()) * math.sqrt(2)
    textbook = (stats.norm.ppf(0.975) + stats.norm.ppf(0.80)) * se
    assert design.mde is not None
    assert abs(math.log1p(design.mde)) == pytest.approx(textbook, rel=0.25)  # the fixed-b c at b = 0.2 is larger


def test_a_higher_is_better_kpi_gets_a_positive_mde() -> None:
    units = np.zeros((100, len(COMPONENT_NAMES)))
    rng = np.random.default_rng(1)
    units[:, COMPONENT_NAMES.index("output_produced")] = rng.poisson(100, 100)
    units[:, COMPONENT_NAMES.index("output_pbt_s")] = 3600
    design = design_target("throughput_rate", 5, units, level=0.95, planned_pilot_hours=100, coverage=1.0)
    assert design.mde is not None and design.mde > 0
    assert design.met_needs is not None and design.met_needs > 0.05 + design.mde * 0.9


def test_longer_pilots_and_less_autocorrelation_detect_smaller_changes() -> None:
    rng = np.random.default_rng(7)
    white = hourly_units(ar1(rng, 400, 0.0))
    sticky = hourly_units(ar1(rng, 400, 0.8))

    def mde(units: np.ndarray, pilot_hours: float) -> float:
        found = design_target("cycle_time_mean", 5, units, level=0.90, planned_pilot_hours=pilot_hours, coverage=1.0)
        assert found.mde is not None
        return abs(found.mde)

    assert mde(white, 800) < mde(white, 200)
    assert mde(white, 400) < mde(sticky, 400)


def test_the_pilot_length_for_the_target_gives_an_mde_of_the_target() -> None:
    units = hourly_units(ar1(np.random.default_rng(11), 300, 0.5))
    design = design_target("cycle_time_mean", 3, units, level=0.90, planned_pilot_hours=300, coverage=0.5)
    assert design.pilot_hours_for_target is not None
    again = design_target(
        "cycle_time_mean", 3, units, level=0.90, planned_pilot_hours=design.pilot_hours_for_target, coverage=0.5
    )
    assert again.mde is not None
    assert abs(math.log1p(again.mde)) == pytest.approx(-math.log(0.97), rel=0.02)  # hours are whole units


def test_a_baseline_too_noisy_for_any_pilot_says_so() -> None:
    units = hourly_units(ar1(np.random.default_rng(5), 20, 0.9, cv=0.5))
    design = design_target(
        "cycle_time_mean", 1, units, level=0.90, planned_pilot_hours=100, coverage=1.0, expected_change_pct=1.5
    )
    assert design.mde is not None
    assert design.pilot_hours_for_target is None  # extend the baseline instead
    assert design.pilot_hours_for_expected is None
    assert pilot_units_needed(0.90, 0.80, 20, 0.1, 0.0) is None


def test_an_expected_change_short_of_the_target_can_never_be_shown_met() -> None:
    units = hourly_units(ar1(np.random.default_rng(2), 200, 0.3))
    short = design_target(
        "cycle_time_mean", 10, units, level=0.90, planned_pilot_hours=200, coverage=1.0, expected_change_pct=8
    )
    beyond = design_target(
        "cycle_time_mean", 10, units, level=0.90, planned_pilot_hours=200, coverage=1.0, expected_change_pct=14
    )
    assert short.pilot_hours_for_expected is None
    assert beyond.pilot_hours_for_expected is not None and beyond.pilot_hours_for_expected > 0


def test_too_little_baseline_is_a_note_not_a_number() -> None:
    design = design_target("cycle_time_mean", 5, hourly_units(np.full(5, 30.0)), level=0.9, planned_pilot_hours=100,
                           coverage=1.0)  # fmt: skip
    assert design.mde is None and "too few baseline hours" in design.note
    none = design_target("cycle_time_mean", 5, np.zeros((50, len(COMPONENT_NAMES))), level=0.9,
                         planned_pilot_hours=100, coverage=1.0)  # fmt: skip
    assert none.mde is None and "no baseline value" in none.note
    short_pilot = design_target("cycle_time_mean", 5, hourly_units(ar1(np.random.default_rng(0), 50, 0.2)), level=0.9,
                                planned_pilot_hours=4, coverage=1.0)  # fmt: skip
    assert short_pilot.mde is None and "the planned pilot gives 4 hourly units" in short_pilot.note


@pytest.mark.parametrize(("phi", "baseline_hours", "pilot_hours"), [(0.5, 300, 300), (0.8, 300, 300)])
def test_an_effect_of_the_mde_is_detected_at_about_the_stated_power(
    phi: float, baseline_hours: int, pilot_hours: int
) -> None:
    """Over 300 seeds of AR(1) hourly cycle times: each seed's design from its baseline alone, then a pilot whose
    true change is that MDE; the comparison's interval excludes no change in about 80% of seeds (the full
    benchmark, over 1,000 seeds, is bench/statistics.py)."""
    seeds = 300
    detected = 0
    for seed in range(seeds):
        rng = np.random.default_rng(seed)
        baseline = hourly_units(ar1(rng, baseline_hours, phi))
        design = design_target(
            "cycle_time_mean", 5, baseline, level=0.90, power=0.80, planned_pilot_hours=pilot_hours, coverage=1.0
        )
        assert design.mde is not None
        pilot = hourly_units(ar1(rng, pilot_hours, phi, mean=30.0 * (1 + design.mde)))
        interval = compare("cycle_time_mean", baseline, pilot, 0.90).relative_interval
        assert interval is not None
        detected += interval[1] < 0
    # 0.80 ± 0.08: about 3.5 standard errors of a proportion over 300 seeds.
    assert 0.72 <= detected / seeds <= 0.88, detected / seeds
