"""Confounded before/after comparisons: the naive estimate against the control line and the adjusted baseline.

    python -m bench.confounders [--seeds 2000] [--hours 336] [--out FILE]

Each seed simulates hourly units as the scenario model makes them (simulators/scenario.py: a plant-wide change,
a demand ramp, an added shift, a warmer season), at the level of the pure maths so that hundreds of seeds run in
minutes, and counts how often each method's nominal 95% interval covers the true pilot effect and how often the
plan's decision rule (at its 90% level) says "met".

- Control line: the whole plant improves 8% (treated and control alike); the pilot adds nothing. The naive
  before/after on the treated line reads "met" for a 5% target; the difference-in-differences must not. Run
  again with a true pilot effect of exactly the target: "met" at most 5% of the time.
- Adjusted baseline: energy with a base load, per-unit energy, a temperature term and an added shift; the pilot
  period is warmer, runs more volume and a third shift, and the pilot's true effect on energy at equal
  conditions is −5% or 0. Twice: with a baseline whose spring weather reaches the pilot's (the model may be
  used), and with a cooler one that never does (the engine must refuse to extrapolate).
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import numpy as np

from bench.results import write_result
from bench.series import ar1
from pilot_core.adjusted_baseline import adjusted_baseline
from pilot_core.comparison import compare, judge_interval
from pilot_core.control_line import did, pre_trend
from pilot_core.kpi import COMPONENT_NAMES

NOMINAL = 0.95
PLAN_LEVEL = 0.90  # the decision rule's two-sided level (one-sided 5%)
TARGET_PCT = 5.0
HOURS = 336  # per period: two weeks
COLUMN = {name: i for i, name in enumerate(COMPONENT_NAMES)}


def cycle_hours(mean_s: np.ndarray, cycles: np.ndarray) -> np.ndarray:
    """Hourly units of an output station: its cycles and their summed cycle time."""
    units = np.zeros((len(mean_s), len(COMPONENT_NAMES)))
    units[:, COLUMN["output_cycle_time_s"]] = mean_s * cycles
    units[:, COLUMN["output_cycles"]] = cycles
    return units


def two_lines(
    rng: np.random.Generator, hours: int, plant: float, effect: float
) -> tuple[tuple[np.ndarray, np.ndarray], tuple[np.ndarray, np.ndarray]]:
    """Treated and control lines' hourly cycle times, baseline then pilot. Both share the plant's hourly
    conditions (material, staffing: a common AR(1) shock); in the pilot the plant changes by ``plant`` and the
    treated line by ``effect`` on top."""
    periods: list[list[np.ndarray]] = [[], []]
    for factor_t, factor_c in ((1.0, 1.0), ((1 + plant) * (1 + effect), 1 + plant)):
        common = ar1(rng, hours, 0.7, 0.04, burn_in=100)
        for line, (mean, factor) in enumerate(((30.0, factor_t), (42.0, factor_c))):
            own = ar1(rng, hours, 0.6, 0.05, burn_in=100)
            seconds = mean * factor * (1 + common + own)
            cycles = rng.poisson(3600 / seconds)
            periods[line].append(cycle_hours(seconds, cycles))
    treated, control = periods
    return (treated[0], treated[1]), (control[0], control[1])


def run_control_line(seeds: int, hours: int, progress: bool = True) -> dict[str, object]:
    plant = -0.08
    out: dict[str, object] = {
        "benchmark": "control line (difference-in-differences) under a plant-wide change",
        "seeds": seeds,
        "hours_per_period": hours,
        "plant_wide_change": plant,
        "target": f"cycle_time_mean −{TARGET_PCT:g}%",
    }
    for label, effect in (("no_pilot_effect", 0.0), ("effect_equals_target", -TARGET_PCT / 100)):
        covered = {"naive": 0, "did": 0}
        met = {"naive": 0, "did": 0, "did_with_pre_trend_check": 0}
        parallel = 0
        bias = {"naive": 0.0, "did": 0.0}
        for seed in range(seeds):
            rng = np.random.default_rng(seed)
            treated, control = two_lines(rng, hours, plant, effect)
            naive_nominal = compare("cycle_time_mean", treated[0], treated[1], NOMINAL).relative_interval
            naive_plan = compare("cycle_time_mean", treated[0], treated[1], PLAN_LEVEL)
            did_nominal = did("cycle_time_mean", treated, control, NOMINAL)
            did_plan = did("cycle_time_mean", treated, control, PLAN_LEVEL)
            assert naive_nominal and did_nominal.relative_interval and did_plan.relative_interval
            assert naive_plan.relative_change is not None and did_nominal.relative_effect is not None
            covered["naive"] += naive_nominal[0] <= effect <= naive_nominal[1]
            covered["did"] += did_nominal.relative_interval[0] <= effect <= did_nominal.relative_interval[1]
            met["naive"] += judge_interval("cycle_time_mean", naive_plan.relative_interval, TARGET_PCT).verdict == "met"
            did_met = judge_interval("cycle_time_mean", did_plan.relative_interval, TARGET_PCT).verdict == "met"
            bias["naive"] += naive_plan.relative_change - effect
            bias["did"] += did_nominal.relative_effect - effect
            # The engine gives no verdict when the pre-trend check fails (kpi_engine.evaluation): met only then.
            is_parallel = bool(pre_trend("cycle_time_mean", treated[0], control[0], PLAN_LEVEL).parallel)
            met["did"] += did_met
            met["did_with_pre_trend_check"] += did_met and is_parallel
            parallel += is_parallel
            if progress and (seed + 1) % max(1, seeds // 5) == 0:
                print(f"  control line, {label}: {seed + 1}/{seeds} seeds", file=sys.stderr, flush=True)
        out[label] = {
            "true_effect": effect,
            "coverage": {k: v / seeds for k, v in covered.items()},
            "says_met": {k: v / seeds for k, v in met.items()},
            "mean_bias": {k: v / seeds for k, v in bias.items()},
            "pre_trend_parallel": parallel / seeds,
        }
    return out


# The baseline's weather, as the mean temperature at its start and at its end (°C); the pilot's is PILOT_C.
# SPANNING: spring warms over the baseline up to the pilot's weather, so the model has seen it (IPMVP asks this).
# BEYOND: a flat, cooler baseline; the pilot's mean lies above every baseline hour, and the model would extrapolate.
SPANNING, BEYOND = (10.0, 25.0), (15.0, 15.0)
PILOT_C = 25.0


def energy_hours(
    rng: np.random.Generator,
    hours: int,
    pilot: bool,
    effect: float,
    baseline_weather: tuple[float, float] = SPANNING,
) -> tuple[np.ndarray, dict[str, np.ndarray], np.ndarray]:
    """Hourly energy (kWh), its conditions, and the output's good units. The pilot period is warmer than the
    baseline on average (25 °C), ramps demand up to +20% and adds a night shift; its energy at equal conditions
    changes by ``effect``."""
    hour_of_day = np.arange(hours) % 24
    night_shift = pilot  # the added shift
    in_shift = ((hour_of_day >= 8) & (hour_of_day < 24)) | (night_shift & (hour_of_day < 8))
    shift = in_shift.astype(float)
    ramp = 1 + (0.2 * np.arange(hours) / hours if pilot else 0.0)
    rate = 80 * ramp * (1 + ar1(rng, hours, 0.5, 0.08, burn_in=100))
    volume = np.round(shift * np.maximum(rate, 0))
    start, end = (PILOT_C, PILOT_C) if pilot else baseline_weather
    temperature = (
        np.linspace(start, end, hours)
        + 4 * np.sin(2 * np.pi * (hour_of_day - 9) / 24)
        + ar1(rng, hours, 0.9, 2, burn_in=100)
    )
    counterfactual = 6.0 + 0.12 * volume + 0.25 * temperature + 5.0 * shift
    energy = counterfactual * (1 + ar1(rng, hours, 0.6, 0.06, burn_in=100)) * (1 + effect if pilot else 1.0)
    return energy, {"production_volume": volume, "ambient_temperature": temperature, "shift_hours": shift}, volume


def energy_units(energy: np.ndarray, good: np.ndarray) -> np.ndarray:
    units = np.zeros((len(energy), len(COMPONENT_NAMES)))
    units[:, COLUMN["energy_kwh"]] = energy
    units[:, COLUMN["output_good"]] = good
    units[:, COLUMN["meter_hours"]] = 1.0
    return units


def run_adjusted(
    seeds: int, hours: int, progress: bool = True, baseline_weather: tuple[float, float] = SPANNING
) -> dict[str, object]:
    variables = ("production_volume", "ambient_temperature", "shift_hours")
    out: dict[str, object] = {
        "benchmark": "adjusted baseline (IPMVP, ASHRAE Guideline 14) under volume, temperature and shift changes",
        "seeds": seeds,
        "hours_per_period": hours,
        "variables": list(variables),
        "baseline_weather_c": list(baseline_weather),
        "pilot_weather_c": PILOT_C,
        "target": f"energy at equal conditions −{TARGET_PCT:g}%",
    }
    for label, effect in (("no_pilot_effect", 0.0), ("effect_equals_target", -TARGET_PCT / 100)):
        covered = met_adjusted = met_naive_epu = accepted = beyond_range = 0
        bias_adjusted = bias_naive_energy = 0.0
        cv_rmse = []
        for seed in range(seeds):
            rng = np.random.default_rng(seed)
            e_b, x_b, good_b = energy_hours(rng, hours, False, 0.0, baseline_weather)
            e_p, x_p, good_p = energy_hours(rng, hours, True, effect, baseline_weather)
            nominal = adjusted_baseline("energy_kwh", variables, (e_b, x_b), (e_p, x_p), NOMINAL)
            plan = adjusted_baseline("energy_kwh", variables, (e_b, x_b), (e_p, x_p), PLAN_LEVEL)
            assert nominal.model is not None
            cv_rmse.append(nominal.model.cv_rmse)
            accepted += not nominal.refused
            beyond_range += "outside the baseline's" in nominal.refused
            if nominal.relative_interval and nominal.relative_change is not None:
                covered += nominal.relative_interval[0] <= effect <= nominal.relative_interval[1]
                bias_adjusted += nominal.relative_change - effect
            met_adjusted += judge_interval("energy_per_good_unit", plan.relative_interval, TARGET_PCT).verdict == "met"
            naive = compare("energy_per_good_unit", energy_units(e_b, good_b), energy_units(e_p, good_p), PLAN_LEVEL)
            met_naive_epu += (
                judge_interval("energy_per_good_unit", naive.relative_interval, TARGET_PCT).verdict == "met"
            )
            bias_naive_energy += float(e_p.sum() / e_b.sum() - 1) - effect
            if progress and (seed + 1) % max(1, seeds // 5) == 0:
                print(f"  adjusted baseline, {label}: {seed + 1}/{seeds} seeds", file=sys.stderr, flush=True)
        out[label] = {
            "true_effect": effect,
            "model_accepted": accepted / seeds,
            "refused_as_extrapolation": beyond_range / seeds,
            "median_cv_rmse": float(np.median(cv_rmse)),
            "coverage_adjusted": covered / max(accepted, 1),
            "mean_bias_adjusted": bias_adjusted / max(accepted, 1),
            "mean_bias_naive_total_energy": bias_naive_energy / seeds,
            "says_met": {"adjusted": met_adjusted / seeds, "naive_energy_per_good_unit": met_naive_epu / seeds},
        }
    return out


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="python -m bench.confounders", description=__doc__.split("\n\n")[0])
    parser.add_argument("--seeds", type=int, default=2000, help="simulated demonstrations per scenario (default 2000)")
    parser.add_argument("--hours", type=int, default=HOURS, help="hours per period (default 336: two weeks)")
    parser.add_argument("--out", type=Path, help="also write the result as JSON here")
    return parser.parse_args(argv)


def report(seeds: int, hours: int) -> dict[str, object]:
    started = time.perf_counter()
    result = {
        "control_line": run_control_line(seeds, hours),
        "adjusted_baseline": run_adjusted(seeds, hours),
        "adjusted_baseline_beyond_range": run_adjusted(seeds, hours, baseline_weather=BEYOND),
    }
    return {**result, "seconds": time.perf_counter() - started}


def print_report(result: dict[str, object]) -> None:
    for name in ("control_line", "adjusted_baseline", "adjusted_baseline_beyond_range"):
        print(name)
        for key, value in result[name].items():  # type: ignore[attr-defined]
            print(f"  {key}: {value}")


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    result = report(args.seeds, args.hours)
    print_report(result)
    if args.out:
        write_result(args.out, result)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
