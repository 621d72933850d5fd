"""Coverage of the comparison interval on autocorrelated cycle times.

    python -m bench.statistics [--seeds 1000] [--cycles 400] [--phi 0.7] [--out FILE]

Simulates many baseline/pilot pairs of AR(1) cycle times with a known change
and counts how often each method's nominal 95% interval covers it: the
engine's (pilot_core.comparison) beside a naive Welch interval that treats
cycles as independent. It also runs bench.design_statistics: an effect of
the design's minimum detectable change detected at about the stated power,
and product-mix standardisation recovering a per-product effect. Coverage is a property of the method, not of the
machine, so these figures are exact for a given seed list.
"""

from __future__ import annotations

import argparse
import sys
import time
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
from scipy import stats

from bench import confounders
from bench.design_statistics import run_design, run_design_methods, run_product_mix
from bench.results import write_result
from bench.series import ar1_around
from pilot_core.comparison import METHOD, compare
from pilot_core.kpi import COMPONENT_NAMES, Components, compute

NOMINAL = 0.95


@dataclass
class MethodResult:
    method: str
    coverage: float
    mean_width: float  # of the relative-change interval


def welch_relative(baseline: np.ndarray, pilot: np.ndarray, level: float) -> tuple[float, float]:
    """The textbook interval: Welch's t on cycles, divided by the baseline mean."""
    low, high = stats.ttest_ind(pilot, baseline, equal_var=False).confidence_interval(level)
    return float(low) / float(baseline.mean()), float(high) / float(baseline.mean())


def run(seeds: int, cycles: int, phi: float, change: float, progress: bool = True) -> dict[str, object]:
    hits = {"engine": 0, "welch": 0}
    widths = {"engine": 0.0, "welch": 0.0}
    started = time.perf_counter()
    for seed in range(seeds):
        rng = np.random.default_rng(seed)
        baseline = ar1_around(rng, cycles, phi, 30.0, 0.1)
        pilot = ar1_around(rng, cycles, phi, 30.0 * (1 + change), 0.1)
        result = compare(
            "cycle_time_mean",
            [Components(output_cycle_time_s=float(v), output_cycles=1) for v in baseline],
            [Components(output_cycle_time_s=float(v), output_cycles=1) for v in pilot],
            level=NOMINAL,
        )
        assert result.relative_interval is not None
        for name, (low, high) in (
            ("engine", result.relative_interval),
            ("welch", welch_relative(baseline, pilot, NOMINAL)),
        ):
            hits[name] += low <= change <= high
            widths[name] += high - low
        if progress and (seed + 1) % max(1, seeds // 10) == 0:
            print(f"  {seed + 1}/{seeds} seeds", file=sys.stderr, flush=True)
    elapsed = time.perf_counter() - started
    results = [
        MethodResult(METHOD, hits["engine"] / seeds, widths["engine"] / seeds),
        MethodResult("Welch t on cycles (independence assumed)", hits["welch"] / seeds, widths["welch"] / seeds),
    ]
    return {
        "benchmark": "interval coverage on AR(1) cycle times",
        "nominal": NOMINAL,
        "seeds": seeds,
        "cycles_per_period": cycles,
        "phi": phi,
        "true_change": change,
        "target_coverage": 0.93,
        "results": [asdict(r) for r in results],
        "width_ratio_engine_to_welch": results[0].mean_width / results[1].mean_width,
        "seconds_per_comparison": elapsed / seeds,
    }


def failure_hours(rng: np.random.Generator, hours: int, rate: float, repair_s: float) -> np.ndarray:
    """Hourly units of a machine with Poisson faults (``rate`` per hour) and exponential repairs, as vectors."""
    failures = rng.poisson(rate, hours)
    repair = np.array([rng.exponential(repair_s, k).sum() for k in failures])
    repair = np.minimum(repair, 3600.0)  # an hour holds at most an hour of repair
    units = np.zeros((hours, len(COMPONENT_NAMES)))
    units[:, COMPONENT_NAMES.index("pbt_s")] = 3600.0
    units[:, COMPONENT_NAMES.index("apt_s")] = 3600.0 - repair
    units[:, COMPONENT_NAMES.index("adet_s")] = repair
    units[:, COMPONENT_NAMES.index("repair_s")] = repair
    units[:, COMPONENT_NAMES.index("failures")] = failures
    return units


def run_failures(seeds: int, hours: int, progress: bool = True) -> dict[str, object]:
    """Coverage for the rare-event KPIs, MTBF and MTTR: faults 40% less often in the pilot, repairs unchanged."""
    baseline_rate, pilot_rate, repair_s = 0.3, 0.18, 1200.0
    # The true KPIs, from one very long run of each behaviour (MTTR's change is 0 by construction).
    truth_rng = np.random.default_rng(10**6)
    truth_b = failure_hours(truth_rng, 400_000, baseline_rate, repair_s).sum(axis=0)
    truth_p = failure_hours(truth_rng, 400_000, pilot_rate, repair_s).sum(axis=0)
    truths = {}
    for kpi in ("mtbf", "mttr"):
        b = compute(kpi, Components.from_vector(truth_b.tolist()))
        p = compute(kpi, Components.from_vector(truth_p.tolist()))
        assert b and p
        truths[kpi] = p / b - 1
    hits = dict.fromkeys(truths, 0)
    for seed in range(seeds):
        rng = np.random.default_rng(seed)
        baseline = failure_hours(rng, hours, baseline_rate, repair_s)
        pilot = failure_hours(rng, hours, pilot_rate, repair_s)
        for kpi, change in truths.items():
            interval = compare(kpi, baseline, pilot, level=NOMINAL).relative_interval
            assert interval is not None
            hits[kpi] += interval[0] <= change <= interval[1]
        if progress and (seed + 1) % max(1, seeds // 10) == 0:
            print(f"  {seed + 1}/{seeds} seeds (MTBF, MTTR)", file=sys.stderr, flush=True)
    return {
        "benchmark": "interval coverage for MTBF and MTTR on hourly units with Poisson faults",
        "nominal": NOMINAL,
        "seeds": seeds,
        "hours_per_period": hours,
        "true_change": truths,
        "coverage": {kpi: hits[kpi] / seeds for kpi in truths},
    }


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="python -m bench.statistics", description=__doc__.split("\n\n")[0])
    parser.add_argument("--seeds", type=int, default=1000, help="simulated demonstrations (default 1000)")
    parser.add_argument("--cycles", type=int, default=400, help="cycles per period (default 400)")
    parser.add_argument("--phi", type=float, default=0.7, help="AR(1) coefficient (default 0.7)")
    parser.add_argument("--change", type=float, default=-0.10, help="true relative change (default -0.10)")
    parser.add_argument("--hours", type=int, default=300, help="hourly units per period, MTBF/MTTR (default 300)")
    parser.add_argument(
        "--confounder-seeds", type=int, default=2000, help="seeds per confounded scenario (bench.confounders; 2000)"
    )
    parser.add_argument("--out", type=Path, help="also write the result as JSON here")
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    report = run(args.seeds, args.cycles, args.phi, args.change)
    for result in report["results"]:  # type: ignore[attr-defined]
        print(f"{result['coverage']:7.1%} coverage, mean width {result['mean_width']:.4f}  {result['method']}")
    print(f"target: ≥ 93% for a nominal {NOMINAL:.0%} interval")
    failures = run_failures(args.seeds, args.hours)
    for kpi, coverage in failures["coverage"].items():  # type: ignore[attr-defined]
        change = failures["true_change"][kpi]  # type: ignore[index]
        print(f"{coverage:7.1%} coverage of {kpi} (true change {change:+.1%}), {args.hours} hours per period")
    confounded = confounders.report(args.confounder_seeds, confounders.HOURS)
    confounders.print_report(confounded)
    design = run_design(args.seeds)
    for case in design["cases"]:  # type: ignore[attr-defined]
        print(
            f"design φ={case['phi']} {case['baseline_hours']}/{case['pilot_hours']} h: detected at the MDE"
            f" {case['detected_at_mde']:.1%} (stated {design['power']:.0%}), with no change"
            f" {case['detected_with_no_change']:.1%}, met at met_needs {case['met_at_met_needs']:.1%},"
            f" at an i.i.d. MDE {case['detected_at_iid_mde']:.1%}"
        )
    methods = run_design_methods(min(args.seeds, args.confounder_seeds))
    for case in methods["cases"]:  # type: ignore[attr-defined]
        print(
            f"design {case['method']} {case['baseline_hours']}/{case['pilot_hours']} h: detected at the MDE"
            f" {case['detected_at_mde']:.1%} (stated {methods['power']:.0%}), with no change"
            f" {case['detected_with_no_change']:.1%}"
        )
    mix = run_product_mix(args.seeds)
    for row in mix["kpis"]:  # type: ignore[attr-defined]
        print(
            f"product mix {row['kpi']}: true {row['true_change']:+.2%}, raw {row['mean_raw_change']:+.2%},"
            f" standardised {row['mean_standardised_change']:+.2%}"
        )
    if args.out:
        results = {"failures": failures, "design": design, "design_methods": methods, "product_mix": mix,
                   "confounders": confounded}  # fmt: skip
        write_result(args.out, {**report, **results})
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
