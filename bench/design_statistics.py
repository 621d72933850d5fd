"""Design before data and product-mix standardisation, by simulation with a known truth (issue 21).

    python -m bench.statistics   (runs these beside the interval coverage)
    python -m bench.design_statistics [--seeds 500] [--out FILE]   (the design alone, by method)

Design: for each seed a baseline of AR(1) hourly cycle times is drawn, the
design (pilot_core.design) is computed from it alone, and a pilot is drawn
whose true change is exactly that design's minimum detectable change (MDE).
The comparison (pilot_core.comparison) should then detect a change, its
interval excluding zero on the better side, in about the stated power (80%)
of seeds; with no true change, in at most 5% (one side of a 90% interval).
A target of 5% with a true change of the design's ``met_needs`` should be
met in about 80% of seeds. The same MDE computed as if hours were
independent shows what ignoring autocorrelation costs. Short pilots (a day
against 300 baseline hours) are where the interval's estimated variance is
least certain: the design allows for it, and the short cases check it.

By method (``run_design_methods``), at a short and a long pilot: a control
line whose hourly cycle times share a plant-wide AR(1) swing with the
treated line's (the pilot period also shifts the whole plant by −8%), judged
by the difference-in-differences (pilot_core.control_line); and hourly
energy = base load + per-unit energy × volume + AR(1) noise, judged by the
adjusted baseline (pilot_core.adjusted_baseline), the pilot's volume drawn as
the baseline's. Each seed's design comes from its baseline alone.

Product mix: two products of different cycle times, each 5% faster in the
pilot, while the mix moves from 80/20 to 30/70. The raw line-level change
reads the mix; the standardised change (pilot_core.product_mix) should
recover the products' own −5%.
"""

from __future__ import annotations

import argparse
import math
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path
from statistics import NormalDist

import numpy as np

from bench.results import write_result
from bench.series import ar1, ar1_around, hourly_units
from pilot_core.adjusted_baseline import adjusted_baseline
from pilot_core.comparison import check_target, compare
from pilot_core.control_line import did
from pilot_core.demonstration import Method
from pilot_core.design import design_target, log_distance_needed
from pilot_core.kpi import COMPONENT_NAMES
from pilot_core.product_mix import PhaseTotals, ProductTotals, standardise

LEVEL = 0.90
POWER = 0.80
TARGET_PCT = 5.0
_CYCLE_TIME = COMPONENT_NAMES.index("output_cycle_time_s")
_CYCLES = COMPONENT_NAMES.index("output_cycles")
DESIGN_CASES = ((0.0, 300, 300), (0.5, 300, 300), (0.8, 300, 300), (0.8, 400, 200), (0.0, 300, 24), (0.5, 300, 24))
METHOD_PILOT_HOURS = (24, 300)  # a short and a long pilot against METHOD_BASELINE_HOURS
METHOD_BASELINE_HOURS = 300
PLANT_SHIFT = -0.08  # the whole plant, both lines, between the periods (control line)
_ENERGY = COMPONENT_NAMES.index("energy_kwh")


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
            # With revision 1's known-variance factor: what the column has always measured.
            iid_mde = math.expm1(-log_distance_needed(LEVEL, POWER, baseline_hours, pilot_hours, iid_se, revision=1))
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


def _lines(rng: np.random.Generator, hours: int, plant_level: float) -> tuple[np.ndarray, np.ndarray]:
    """Hourly mean cycle times of a treated and a control line sharing the plant's AR(1) swing, each with its own."""
    plant = plant_level * ar1_around(rng, hours, 0.7, 1.0, 0.06)
    return (
        30.0 * plant * ar1_around(rng, hours, 0.5, 1.0, 0.03),
        40.0 * plant * ar1_around(rng, hours, 0.5, 1.0, 0.03),
    )


def _energy(rng: np.random.Generator, hours: int) -> tuple[np.ndarray, np.ndarray]:
    """Hourly energy (kWh) of a line: 5 + 0.2 × volume + AR(1) noise; and its volume (Poisson, mean 100)."""
    volume = rng.poisson(100, hours).astype(float)
    return 5 + 0.2 * volume + ar1(rng, hours, 0.5, 0.8), volume


def _energy_units(energy: np.ndarray, volume: np.ndarray) -> np.ndarray:
    units = np.zeros((len(energy), len(COMPONENT_NAMES)))
    for name, values in (("energy_kwh", energy), ("output_produced", volume), ("output_good", volume),
                         ("meter_hours", np.ones(len(energy)))):  # fmt: skip
        units[:, COMPONENT_NAMES.index(name)] = values
    return units


def _control_seed(rng: np.random.Generator, pilot_hours: int) -> tuple[float, Callable[[float], bool]]:
    """One seed of the control line: its design's MDE, and whether a true pilot effect is detected."""
    treated, control = _lines(rng, METHOD_BASELINE_HOURS, 1.0)
    baseline = (hourly_units(treated), hourly_units(control))
    design = design_target(
        "cycle_time_mean", TARGET_PCT, baseline[0], level=LEVEL, power=POWER, planned_pilot_hours=pilot_hours,
        coverage=1.0, method=Method.CONTROL_LINE, control=baseline[1],
    )  # fmt: skip
    assert design.mde is not None, design.note
    pilot_treated, pilot_control = _lines(rng, pilot_hours, 1 + PLANT_SHIFT)

    def detected(effect: float) -> bool:
        estimate = did(
            "cycle_time_mean",
            (baseline[0], hourly_units(pilot_treated * (1 + effect))),
            (baseline[1], hourly_units(pilot_control)),
            LEVEL,
        )
        assert estimate.relative_interval is not None, estimate.note
        return estimate.relative_interval[1] < 0

    return design.mde, detected


def _adjusted_seed(rng: np.random.Generator, pilot_hours: int) -> tuple[float, Callable[[float], bool]]:
    """One seed of the adjusted baseline: its design's MDE, and whether a true saving is detected."""
    energy, volume = _energy(rng, METHOD_BASELINE_HOURS)
    period = (energy, {"production_volume": volume})
    model = adjusted_baseline("energy_kwh", ["production_volume"], period, period, LEVEL)  # on its own hours
    design = design_target(
        "energy_per_good_unit", TARGET_PCT, _energy_units(energy, volume), level=LEVEL, power=POWER,
        planned_pilot_hours=pilot_hours, coverage=1.0, method=Method.ADJUSTED_BASELINE, adjusted=model,
    )  # fmt: skip
    assert design.mde is not None, design.note
    pilot_energy, pilot_volume = _energy(rng, pilot_hours)

    def detected(effect: float) -> bool:
        pilot = (pilot_energy * (1 + effect), {"production_volume": pilot_volume})
        result = adjusted_baseline("energy_kwh", ["production_volume"], period, pilot, LEVEL)
        assert result.relative_interval is not None, result.refused
        return result.relative_interval[1] < 0

    return design.mde, detected


def run_design_methods(seeds: int, progress: bool = True) -> dict[str, object]:
    """Per method and pilot length: how often an effect of the design's MDE is detected, and how often no effect."""
    seed_of = {Method.CONTROL_LINE: _control_seed, Method.ADJUSTED_BASELINE: _adjusted_seed}
    cases = []
    for method, one_seed in seed_of.items():
        for pilot_hours in METHOD_PILOT_HOURS:
            detected = false_alarms = 0
            mdes = []
            for seed in range(seeds):
                mde, detects = one_seed(np.random.default_rng(seed), pilot_hours)
                mdes.append(mde)
                detected += detects(mde)
                false_alarms += detects(0.0)
            cases.append(
                {
                    "method": method.value,
                    "baseline_hours": METHOD_BASELINE_HOURS,
                    "pilot_hours": pilot_hours,
                    "mean_mde": float(np.mean(mdes)),
                    "detected_at_mde": detected / seeds,
                    "detected_with_no_change": false_alarms / seeds,
                }
            )
            if progress:
                print(f"  design {method.value} {METHOD_BASELINE_HOURS}/{pilot_hours} h: {seeds} seeds",
                      file=sys.stderr, flush=True)  # fmt: skip
    return {
        "benchmark": "design before data by method: detection at the MDE, short and long pilots",
        "seeds": seeds,
        "level": LEVEL,
        "power": POWER,
        "standard_error_of_a_rate": math.sqrt(POWER * (1 - POWER) / seeds),
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


def main(argv: list[str] | None = None) -> int:
    """The design alone: before/after cases and each method's, printed as the tables docs/benchmarks.md holds."""
    from bench.report import design_tables  # noqa: PLC0415  (the report's table layout, one copy)

    parser = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0])
    parser.add_argument("--seeds", type=int, default=500, help="seeds per case (default 500)")
    parser.add_argument("--out", type=Path, help="also write the result as JSON here")
    args = parser.parse_args(argv)

    def git(*command: str) -> str:
        return subprocess.run(["git", *command], capture_output=True, text=True, check=False).stdout.strip()

    result = {
        "started": time.strftime("%Y-%m-%dT%H:%M:%S+00:00", time.gmtime()),
        "commit": git("rev-parse", "--short", "HEAD") or "unknown",
        "dirty": bool(git("status", "--porcelain", "--untracked-files=no")),
        "design": run_design(args.seeds),
        "design_methods": run_design_methods(args.seeds),
    }
    print(design_tables(result))
    if args.out:
        write_result(args.out, result)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
