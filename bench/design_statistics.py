"""Design before data and product-mix standardisation, by simulation with a known truth (issue 21).

    python -m bench.statistics   (runs these beside the interval coverage)

Design: for each seed a baseline of AR(1) hourly cycle times is drawn, the
design (pilot_core.design) is computed from it alone, and a pilot is drawn
whose true change is exactly that design's minimum detectable change (MDE).
The comparison (pilot_core.comparison) should then detect a change, its
interval excluding zero on the better side, in about the stated power (80%)
of seeds; with no true change, in at most 5% (one side of a 90% interval).
A target of 5% with a true change of the design's ``met_needs`` should be
met in about 80% of seeds. The same MDE computed as if hours were
independent shows what ignoring autocorrelation costs.

Product mix: two products of different cycle times, each 5% faster in the
pilot, while the mix moves from 80/20 to 30/70. The raw line-level change
reads the mix; the standardised change (pilot_core.product_mix) should
recover the products' own −5%.
"""

from __future__ import annotations

import math
import sys
from statistics import NormalDist

import numpy as np

from bench.series import ar1_around, hourly_units
from pilot_core.comparison import check_target, compare
from pilot_core.design import design_target, log_distance_needed
from pilot_core.kpi import COMPONENT_NAMES
from pilot_core.product_mix import PhaseTotals, ProductTotals, standardise

LEVEL = 0.90
POWER = 0.80
TARGET_PCT = 5.0
_CYCLE_TIME = COMPONENT_NAMES.index("output_cycle_time_s")
_CYCLES = COMPONENT_NAMES.index("output_cycles")
DESIGN_CASES = ((0.0, 300, 300), (0.5, 300, 300), (0.8, 300, 300), (0.8, 400, 200))


def run_design(seeds: int, progress: bool = True) -> dict[str, object]:
    """Per case (φ, baseline hours, pilot hours): how often an effect of the MDE is detected, how often no effect
    is, how often the target is met at ``met_needs``, and the detection an i.i.d. MDE would get."""
    cases = []
    for phi, baseline_hours, pilot_hours in DESIGN_CASES:
        detected = false_alarms = met = iid_detected = 0
        mdes = []
        for seed in range(seeds):
            rng = np.random.default_rng(seed)
            baseline = hourly_units(ar1_around(rng, baseline_hours, phi, 30.0, 0.1))
            design = design_target(
                "cycle_time_mean", TARGET_PCT, baseline, level=LEVEL, power=POWER,
                planned_pilot_hours=pilot_hours, coverage=1.0,
            )  # fmt: skip
            assert design.mde is not None and design.met_needs is not None and design.baseline_relative_se
            mdes.append(design.mde)
            noise = ar1_around(rng, pilot_hours, phi, 30.0, 0.1) - 30.0  # one draw, shifted to each true change
            for change, kind in ((design.mde, "mde"), (0.0, "none"), (design.met_needs, "met")):
                comparison = compare("cycle_time_mean", baseline, hourly_units(30.0 * (1 + change) + noise), LEVEL)
                assert comparison.relative_interval is not None
                if kind == "mde":
                    detected += comparison.relative_interval[1] < 0
                elif kind == "none":
                    false_alarms += comparison.relative_interval[1] < 0
                else:
                    met += check_target(comparison, TARGET_PCT).verdict.value == "met"
            # The MDE as if the hours were independent: the i.i.d. standard error of the hourly means.
            hourly = baseline[:, _CYCLE_TIME] / baseline[:, _CYCLES]
            iid_se = float(hourly.std(ddof=1) / math.sqrt(baseline_hours) / hourly.mean())
            iid_mde = math.expm1(-log_distance_needed(LEVEL, POWER, baseline_hours, pilot_hours, iid_se))
            comparison = compare("cycle_time_mean", baseline, hourly_units(30.0 * (1 + iid_mde) + noise), LEVEL)
            assert comparison.relative_interval is not None
            iid_detected += comparison.relative_interval[1] < 0
        cases.append(
            {
                "phi": phi,
                "baseline_hours": baseline_hours,
                "pilot_hours": pilot_hours,
                "mean_mde": float(np.mean(mdes)),
                "detected_at_mde": detected / seeds,
                "detected_with_no_change": false_alarms / seeds,
                "met_at_met_needs": met / seeds,
                "detected_at_iid_mde": iid_detected / seeds,
            }
        )
        if progress:
            print(f"  design φ={phi} {baseline_hours}/{pilot_hours} h: {seeds} seeds", file=sys.stderr, flush=True)
    return {
        "benchmark": "design before data: detection at the MDE on AR(1) hourly cycle times",
        "seeds": seeds,
        "level": LEVEL,
        "power": POWER,
        "target_pct": TARGET_PCT,
        "standard_error_of_a_rate": math.sqrt(POWER * (1 - POWER) / seeds),
        "z_power": NormalDist().inv_cdf(POWER),
        "cases": cases,
    }


def _mix_phase(rng: np.random.Generator, hours: int, share_a: float, speedup: float) -> PhaseTotals:
    """Hourly production of two products (A 30 s, B 60 s ideal), one product per hour as campaigns run, cycle
    times AR(1)-noisy; energy 20 kWh per hour of run time plus noise; the line busy 85% of its planned time."""
    means = {"A": 30.0 * (1 + speedup), "B": 60.0 * (1 + speedup)}
    totals = {"A": ProductTotals(), "B": ProductTotals()}
    noise = ar1_around(rng, hours, 0.6, 1.0, 0.05)
    kwh = 0.0
    pbt = 0.0
    for hour in range(hours):
        product = "A" if rng.random() < share_a else "B"
        run_s = 3600 * 0.85
        cycle = means[product] * noise[hour]
        units = run_s / cycle
        totals[product] = totals[product] + ProductTotals(units, units, run_s, units)
        kwh += 20 * run_s / 3600 * rng.normal(1.0, 0.03)
        pbt += 3600
    return PhaseTotals(totals, pbt, kwh, True)


def run_product_mix(seeds: int, hours: int = 300, progress: bool = True) -> dict[str, object]:
    true_change = -0.05
    raw: dict[str, list[float]] = {}
    standardised: dict[str, list[float]] = {}
    for seed in range(seeds):
        rng = np.random.default_rng(seed)
        result = standardise(_mix_phase(rng, hours, 0.8, 0.0), _mix_phase(rng, hours, 0.3, true_change))
        for k in result.kpis:
            assert k.raw_change is not None and k.standardised_change is not None
            raw.setdefault(k.kpi, []).append(k.raw_change)
            standardised.setdefault(k.kpi, []).append(k.standardised_change)
    if progress:
        print(f"  product mix: {seeds} seeds", file=sys.stderr, flush=True)
    truths = {"cycle_time_mean": true_change, "throughput_rate": 1 / (1 + true_change) - 1,
              "energy_per_good_unit": true_change}  # fmt: skip
    return {
        "benchmark": "product-mix standardisation: two products each 5% faster while the mix moves 80/20 → 30/70",
        "seeds": seeds,
        "hours_per_period": hours,
        "kpis": [
            {
                "kpi": kpi,
                "true_change": truths[kpi],
                "mean_raw_change": float(np.mean(raw[kpi])),
                "mean_standardised_change": float(np.mean(standardised[kpi])),
                "rmse_standardised": float(np.sqrt(np.mean((np.array(standardised[kpi]) - truths[kpi]) ** 2))),
            }
            for kpi in truths
        ],
    }
