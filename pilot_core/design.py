"""Design before data: what a pilot of the planned length can detect, from the baseline alone.

A pre-registered plan states, before any pilot hour exists, the smallest
change each target's KPI could show (the minimum detectable effect, MDE) and
how long a pilot would have to run to decide. Only the baseline's hourly
units go in: the pilot cannot move these figures.

The comparison (pilot_core.comparison) judges log(pilot / baseline) with a
Newey-West HAC standard error and fixed-b critical values. The design needs
the true standard error it will have, so it takes the baseline's KPI
linearised per hour (the delta method, as the comparison does), its lag-1
autocorrelation ρ (statsmodels' acf) and the effective sample size
n′ = n·(1 − ρ)/(1 + ρ) (Reddy and Claridge, as ASHRAE Guideline 14 uses it;
never more than n). The pilot is taken to vary as the baseline does, so its
variance shrinks with the planned pilot length while the baseline's stays:

    se(log Δ) = (sd / √n′) / value · √(1 + n_b / n_p)

and, at two-sided level 1 − α and power 1 − β,

    MDE = expm1(± (c · √(1 − b + b²/3) + z_(1 − β)) · se(log Δ)),

the sign in the KPI's better direction: c is the comparison's fixed-b
critical value at bandwidth fraction b, and √(1 − b + b²/3) the Bartlett HAC
estimator's expected shrinkage at that b (Kiefer and Vogelsang 2002), so that
c · √(…) · se is the half-width the comparison's interval will have. A less
noisy estimate than the HAC itself keeps the stated power honest:
bench/statistics.py measures that an effect of the MDE is detected at about
the stated power on autocorrelated series. A target "improve by T" is shown
met at that power only if the true change reaches T plus the MDE on the log
scale (``met_needs``).
"""

from __future__ import annotations

import math
from dataclasses import dataclass, replace
from statistics import NormalDist

import numpy as np

from pilot_core.comparison import BANDWIDTH_FRACTION, MIN_UNITS, Units, critical_value, linearised, unit_matrix
from pilot_core.kpi import KPIS, Better, Components, compute

DEFAULT_POWER = 0.80
METHOD = (
    "from the baseline's hours alone: the KPI linearised per hour, its lag-1 autocorrelation ρ and effective n"
    " n(1 − ρ)/(1 + ρ), scaled to the planned pilot length; MDE = (fixed-b critical value × √(1 − b + b²/3)"
    " + z of the power) × se of log(pilot / baseline)"
)


@dataclass(frozen=True, slots=True)
class TargetDesign:
    """One target's design: what the planned pilot can detect, and how long a pilot would have to run."""

    kpi: str
    change_pct: float  # the target's size, as the plan states it
    level: float
    power: float
    baseline_value: float | None
    baseline_n: int  # hourly units in the baseline
    baseline_autocorrelation: float | None  # lag-1, of the linearised KPI
    baseline_effective_n: float | None  # n(1 − ρ)/(1 + ρ), at most n
    baseline_relative_se: float | None  # of the baseline's KPI, over its value
    planned_pilot_units: int  # hourly units the planned pilot windows should give, at the baseline's coverage
    mde: float | None = None  # signed relative change detectable (against no change) at ``power``
    met_needs: float | None = None  # signed relative true change with which the target is shown met at ``power``
    pilot_hours_for_target: float | None = None  # window hours for an MDE as large as the target (None: unreachable)
    expected_change_pct: float | None = None  # the effect the plan expects, if it states one
    pilot_hours_for_expected: float | None = None  # window hours to show the target met at ``power`` if it holds
    note: str = ""


@dataclass(frozen=True, slots=True)
class BaselineSpread:
    """How much a baseline's KPI varies, with its autocorrelation."""

    value: float | None
    n: int
    autocorrelation: float | None
    effective_n: float | None
    relative_se: float | None  # None: too few units, or no (or a zero) value


def baseline_spread(kpi: str, units: Units) -> BaselineSpread:
    """The baseline KPI's standard error over its value, from the effective n of its lag-1 autocorrelation."""
    matrix = unit_matrix(units)
    n = len(matrix)
    raw = compute(kpi, Components.from_vector(matrix.sum(axis=0).tolist()))
    value = None if raw is None else float(raw)
    if not value or n < MIN_UNITS:
        return BaselineSpread(value, n, None, None, None)
    z = linearised(kpi, matrix)
    if z is None:
        return BaselineSpread(value, n, None, None, None)
    if not np.any(z):
        return BaselineSpread(value, n, 0.0, float(n), 0.0)
    # Imported here: statsmodels takes seconds to import, and most commands never design.
    from statsmodels.tsa.stattools import acf  # noqa: PLC0415

    rho = float(acf(z, nlags=1, fft=False)[1])
    effective_n = min(float(n), n * (1 - rho) / (1 + rho))  # negative ρ claims no more units than there are
    return BaselineSpread(value, n, rho, effective_n, float(z.std()) / math.sqrt(effective_n) / abs(value))


def _sign(kpi: str) -> int:
    return -1 if KPIS[kpi].better is Better.LOWER else 1


def _fraction(baseline_n: int, pilot_n: float) -> float:
    """The comparison's bandwidth fraction b: the larger of the two periods', as it takes."""

    def fraction(n: float) -> float:
        return max(2, math.ceil(BANDWIDTH_FRACTION * n)) / n

    return max(fraction(baseline_n), fraction(max(pilot_n, 1.0)))


def _factor(level: float, power: float, b: float) -> float:
    """c · √(1 − b + b²/3) + z: the fixed-b critical value on the Bartlett HAC's expected scale, plus the power's
    normal quantile."""
    return critical_value(level, b) * math.sqrt(1 - b + b * b / 3) + NormalDist().inv_cdf(power)


def log_distance_needed(level: float, power: float, baseline_n: int, pilot_n: float, relative_se: float) -> float:
    """How far on the log scale a true change must lie beyond a bound for the interval to clear it at ``power``."""
    return _factor(level, power, _fraction(baseline_n, pilot_n)) * relative_se * math.sqrt(1 + baseline_n / pilot_n)


def pilot_units_needed(
    level: float, power: float, baseline_n: int, relative_se: float, distance: float
) -> float | None:
    """Hourly pilot units for ``log_distance_needed`` to shrink to ``distance``; None if no pilot length would do
    (the baseline's own uncertainty is too large: extend the baseline instead)."""
    if distance <= 0 or relative_se <= 0:
        return None if distance <= 0 else float(MIN_UNITS)
    pilot_n = float(baseline_n)
    # The factor depends on the pilot's length through the bandwidth fraction only, weakly: iterate.
    for _ in range(50):
        k = distance / (_factor(level, power, _fraction(baseline_n, pilot_n)) * relative_se)
        if k <= 1:
            return None
        following = max(float(MIN_UNITS), baseline_n / (k * k - 1))
        if abs(following - pilot_n) < 1e-9 * following:
            break
        pilot_n = following
    return pilot_n


def design_target(
    kpi: str,
    change_pct: float,
    baseline: Units,
    *,
    level: float,
    power: float = DEFAULT_POWER,
    planned_pilot_hours: float,
    coverage: float,
    expected_change_pct: float | None = None,
) -> TargetDesign:
    """The design of one target from the baseline's hourly ``baseline`` units.

    ``planned_pilot_hours``: the pilot windows' length in hours; ``coverage``: the baseline's hourly units per
    baseline window hour (hours with no data at all give no unit), so that the planned pilot is expected to give
    ``planned_pilot_hours · coverage`` units.
    """
    spread = baseline_spread(kpi, baseline)
    planned_units = round(planned_pilot_hours * coverage)
    bare = TargetDesign(
        kpi, change_pct, level, power, spread.value, spread.n, spread.autocorrelation, spread.effective_n,
        spread.relative_se, planned_units, expected_change_pct=expected_change_pct,
    )  # fmt: skip
    relative_se = spread.relative_se
    if relative_se is None:
        if spread.value is None:
            reason = "no baseline value"
        elif not spread.value:
            reason = "a baseline value of zero"
        else:
            reason = f"too few baseline hours (need {MIN_UNITS}, have {spread.n})"
        return replace(bare, note=f"{reason}: nothing can be designed from this baseline yet")
    if planned_units < MIN_UNITS:
        return replace(
            bare, note=f"the planned pilot gives {planned_units} hourly units; the comparison needs {MIN_UNITS}"
        )
    sign = _sign(kpi)
    distance = log_distance_needed(level, power, spread.n, planned_units, relative_se)
    target_log = math.log1p(sign * change_pct / 100)
    hours_for_expected = None
    if expected_change_pct is not None:
        beyond = abs(math.log1p(sign * expected_change_pct / 100)) - abs(target_log)  # past the target, log scale
        hours_for_expected = _hours(pilot_units_needed(level, power, spread.n, relative_se, beyond), coverage)
    return replace(
        bare,
        mde=math.expm1(sign * distance),
        met_needs=math.expm1(target_log + sign * distance),
        pilot_hours_for_target=_hours(
            pilot_units_needed(level, power, spread.n, relative_se, abs(target_log)), coverage
        ),
        pilot_hours_for_expected=hours_for_expected,
    )


def _hours(units: float | None, coverage: float) -> float | None:
    return None if units is None or coverage <= 0 else units / coverage


def detection_power(level: float, baseline_n: int, pilot_n: float, relative_se: float, true_change: float) -> float:
    """The power the design claims for a true relative change against no change: the MDE's inverse."""
    b = _fraction(baseline_n, pilot_n)
    shift = abs(math.log1p(true_change)) / (relative_se * math.sqrt(1 + baseline_n / pilot_n))
    return NormalDist().cdf(shift - critical_value(level, b) * math.sqrt(1 - b + b * b / 3))
