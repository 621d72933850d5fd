"""docs/benchmarks.md from the JSON results of one ``bench/run``.

Every figure on the page comes from the results folder of that one run, so
the page never mixes runs. The prose around the figures (method, reading,
caveats) is ``bench/benchmarks.template.md``; its ``$name`` placeholders are
filled with the tables below.

    .venv/bin/python -m bench.report --results .pilot/bench/results --out docs/benchmarks.md
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
from collections.abc import Callable, Sequence
from pathlib import Path
from string import Template
from typing import Any

TEMPLATE = Path(__file__).with_name("benchmarks.template.md")

# The targets: (what, the figure, how it is compared).
TARGET_BEST_COLLECTOR_VS_NODE_RED = 1.2
TARGET_COLLECTOR_VS_BARE = 0.9
TARGET_COLLECTOR_VS_NAIVE = 20.0
TARGET_P99_MS = 2000.0
TARGET_COLD_S = 1.0
TARGET_WARM_S = 0.1
TARGET_RSS_MB = 200.0
# Issue 19: one agent process serving 50 Modbus and OPC UA devices at 1 s sampling.
TARGET_AGENT_CPU_SHARE = 0.10
TARGET_AGENT_RSS_MB = 80.0
TARGET_AGENT_INSTALL_MB = 150.0
# Issue 22: the console's pages of the demo's demonstration, warm, server-side.
TARGET_DEMONSTRATION_PAGE_S = 0.300
TARGET_LIVE_PAGE_S = 0.100
# "Bounded" through an outage: memory at the end of the long outage within this factor of the short one's.
BOUNDED_GROWTH = 1.15

DRAIN_PHASES = ("bare", "collector", "collector-2", "naive", "node-red", "node-red-per-message")
LABELS = {
    "bare": "bare paho receiver (baseline)",
    "collector": "**our collector, 1 process**",
    "collector-2": "**our collector, 2 processes ($share)**",
    "naive": "naive collector, one POST per message",
    "node-red": "Node-RED, batched flow",
    "node-red-per-message": "Node-RED, per-message node",
}


class MissingResult(RuntimeError):
    pass


def load(folder: Path, name: str) -> dict[str, Any] | None:
    path = folder / f"{name}.json"
    if not path.is_file():
        return None
    result: dict[str, Any] = json.loads(path.read_text(encoding="utf-8"))
    return result


def number(value: Any, spec: str = ",.0f") -> str:
    return format(value, spec) if isinstance(value, int | float) else "–"


def spread(values: Sequence[float], spec: str = ",.0f") -> str:
    """``median (min–max)`` of the rounds, or the single value."""
    if not values:
        return "–"
    middle = number(statistics.median(values), spec)
    low, high = number(min(values), spec), number(max(values), spec)
    if low == high:
        return middle
    return f"{middle} ({low}–{high})"


def verdict(met: bool | None) -> str:
    return "–" if met is None else ("**met**" if met else "**not met**")


def table(header: Sequence[str], rows: Sequence[Sequence[str]]) -> str:
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    lines += ["| " + " | ".join(row) + " |" for row in rows]
    return "\n".join(lines)


def phase(ingest: dict[str, Any], name: str) -> dict[str, Any] | None:
    found: dict[str, Any] | None = ingest.get("phases", {}).get(name)
    return found if found and found.get("rates") else None


def ratio(ingest: dict[str, Any], name: str) -> dict[str, Any] | None:
    found: dict[str, Any] | None = ingest.get("ratios", {}).get(name)
    return found


def ratio_text(entry: dict[str, Any] | None, spec: str = ".2f") -> str:
    return spread(entry["rounds"], spec) + " ×" if entry else "–"


def zero_loss(ingest: dict[str, Any], *names: str) -> bool:
    found = [phase(ingest, n) for n in names]
    return all(p is not None and p.get("lost") == 0 for p in found)


# --- the sections ---------------------------------------------------------------


def machine_section(run: dict[str, Any], ingest: dict[str, Any]) -> str:
    machine = ingest.get("machine", {})
    versions = run.get("versions", {})
    rows = [
        ("run", f"{run.get('started', '?')} → {run.get('finished', '?')} ({run.get('minutes', '?')} min)"),
        ("commit", f"`{run.get('commit', '?')}`" + (" (with uncommitted changes)" if run.get("dirty") else "")),
        ("command", f"`{run.get('command', 'bench/run')}`"),
        ("machine", f"{machine.get('cores', '?')} cores ({machine.get('cpu_model', '?')}), "
                    f"{machine.get('memory_gb', '?')} GB RAM, Linux {machine.get('kernel', '?')}"),
        ("load average at start", ", ".join(f"{x:.2f}" for x in machine.get("loadavg_at_start", [])) or "–"),
        ("Python", machine.get("python", "?")),
        ("paho-mqtt", machine.get("paho_mqtt", "?")),
        ("Mosquitto", machine.get("mosquitto", "?")),
        ("InfluxDB", machine.get("influxd", "?")),
        ("Node.js", machine.get("node", versions.get("node", "?"))),
        ("Node-RED", machine.get("node_red", versions.get("node_red", "?"))),
        ("node-red-contrib-influxdb", machine.get("node_red_contrib_influxdb", versions.get("influxdb_node", "?"))),
    ]  # fmt: skip
    return table(("", ""), [(k, str(v)) for k, v in rows])


def targets_section(results: dict[str, dict[str, Any] | None]) -> str:
    ingest = results["ingest"] or {}
    rows: list[tuple[str, str, str, str]] = []

    best = ratio(ingest, "best-collector/node-red")
    lossless = zero_loss(ingest, "collector", "collector-2", "node-red") or zero_loss(ingest, "collector", "node-red")
    met = None if best is None else best["median"] >= TARGET_BEST_COLLECTOR_VS_NODE_RED and lossless
    rows.append((
        "QoS 1 backlog drain, our collector (1 or 2 processes, the better per round) / Node-RED batched, zero loss",
        ratio_text(best) + ("" if lossless else " (loss!)"), f"≥ {TARGET_BEST_COLLECTOR_VS_NODE_RED} ×", verdict(met),
    ))  # fmt: skip
    single = ratio(ingest, "collector/bare")
    rows.append((
        "drain, our collector with one process / bare paho receiver",
        ratio_text(single), f"≥ {TARGET_COLLECTOR_VS_BARE} ×",
        verdict(None if single is None else single["median"] >= TARGET_COLLECTOR_VS_BARE),
    ))  # fmt: skip
    naive = ratio(ingest, "collector/naive")
    rows.append((
        "drain, our collector / naive one-POST-per-message collector",
        ratio_text(naive, ".1f"), f"≥ {TARGET_COLLECTOR_VS_NAIVE:.0f} ×",
        verdict(None if naive is None else naive["median"] >= TARGET_COLLECTOR_VS_NAIVE),
    ))  # fmt: skip
    latency = phase(ingest, "latency")
    p99 = latency.get("p99_ms") if latency else None
    rows.append((
        "publish → queryable p99 at half the maximum rate",
        f"{number(p99, ',.0f')} ms" if p99 is not None else "–", f"≤ {TARGET_P99_MS:,.0f} ms",
        verdict(None if p99 is None else p99 <= TARGET_P99_MS),
    ))  # fmt: skip
    comparison = results["comparison"]
    if comparison:
        first, cold, warm = (_seconds(comparison, key) for key in ("first", "cold", "warm"))
        slowest_cold = max(first, cold)
        rows.append((
            "comparison API, 20 devices × 30 days, cold (first request after start, and with no cached result)",
            f"{slowest_cold * 1000:,.0f} ms", f"≤ {TARGET_COLD_S * 1000:,.0f} ms",
            verdict(slowest_cold <= TARGET_COLD_S),
        ))  # fmt: skip
        rows.append((
            "comparison API, same, warm", f"{warm * 1000:,.0f} ms", f"≤ {TARGET_WARM_S * 1000:,.0f} ms",
            verdict(warm <= TARGET_WARM_S),
        ))  # fmt: skip
    peaks = [p["peak_rss_mb"] for n in ("collector", "collector-live", "batched")
             if (p := phase(ingest, n)) and p.get("peak_rss_mb")]  # fmt: skip
    rows.append((
        "collector RSS (process tree) at maximum rate, the highest of its drain, live and batched phases",
        f"{max(peaks):,.0f} MB" if peaks else "–", f"≤ {TARGET_RSS_MB:,.0f} MB",
        verdict(max(peaks) <= TARGET_RSS_MB if peaks else None),
    ))  # fmt: skip
    outage = outage_figures(results)
    if len(outage) >= 2:
        short, long = outage[0], outage[-1]
        growth = long["rss_max"] / short["rss_max"]
        rows.append((
            f"collector RSS through an InfluxDB outage: highest during {long['messages']:,} spooled messages"
            f" / during {short['messages']:,}",
            f"{growth:.2f} × ({short['rss_max']:,.0f} → {long['rss_max']:,.0f} MB)",
            f"bounded (≤ {BOUNDED_GROWTH} ×, and ≤ {TARGET_RSS_MB:,.0f} MB)",
            verdict(growth <= BOUNDED_GROWTH and long["rss_max"] <= TARGET_RSS_MB),
        ))  # fmt: skip
    for full in disk_full_figures(results):
        rows.append((
            f"a spool disk that fills mid-outage and is freed ({full['messages']:,} messages spooled or held):"
            " points in InfluxDB",
            f"{full['stored']:,} of {full['published']:,}, RSS ≤ {full['rss_max']:,.0f} MB",
            f"exactly every one, RSS ≤ {TARGET_RSS_MB:,.0f} MB",
            verdict(full["exact"] and full["rss_max"] <= TARGET_RSS_MB),
        ))  # fmt: skip
    return table(("what the issue asks", "measured: median (rounds' range)", "target", "verdict"), rows)


def _seconds(comparison: dict[str, Any], key: str) -> float:
    value: float = comparison[f"{key}_s"]
    return value


def drain_section(ingest: dict[str, Any], suffix: str = "") -> str:
    baseline = phase(ingest, "bare" + suffix)
    node_red = phase(ingest, "node-red" + suffix)
    rows = []
    for name in DRAIN_PHASES:
        found = phase(ingest, name + suffix)
        if found is None:
            continue
        per_round = _per_round_ratio(ingest, name + suffix, "bare" + suffix) if baseline else []
        vs_node_red = _per_round_ratio(ingest, name + suffix, "node-red" + suffix) if node_red else []
        row = [
            LABELS[name],
            spread(found["rates"]),
            spread(per_round, ".2f") if per_round else "–",
            spread(vs_node_red, ".2f") if vs_node_red else "–",
            number(found.get("lost")),
            number(found.get("peak_rss_mb")),
        ]
        if suffix:
            row.insert(2, number(found.get("publisher_rate_median")))
        rows.append(row)
    header = ["system", "msg/s: median (min–max)", "× bare paho", "× Node-RED batched", "lost", "peak RSS MB"]
    if suffix:
        header.insert(2, "publisher msg/s")
    return table(header, rows) if rows else "_not run_"


def _per_round_ratio(ingest: dict[str, Any], top: str, bottom: str) -> list[float]:
    tops, bottoms = _round_rates(ingest, top), _round_rates(ingest, bottom)
    return [t / b for t, b in zip(tops, bottoms, strict=False) if t is not None and b]


def _round_rates(ingest: dict[str, Any], name: str) -> list[float | None]:
    found = ingest.get("phases", {}).get(name)
    return [r.get("rate") for r in found["rounds"]] if found else []


def batched_section(ingest: dict[str, Any]) -> str:
    batched, single = phase(ingest, "batched"), phase(ingest, "collector")
    if batched is None:
        return "_not run_"
    points = batched.get("points_rates") or []
    vs_single = ratio(ingest, "batched-points/collector")
    per_message = ingest.get("workload", {}).get("batched_records_per_message", "?")
    rows = [
        ("our collector, 1 process, single-record messages (baseline)", spread(single["rates"]) if single else "–",
         spread(single["rates"]) if single else "–", "1.00 ×"),
        (f"our collector, 1 process, {per_message} records per message", spread(batched["rates"]), spread(points),
         ratio_text(vs_single)),
    ]  # fmt: skip
    return table(("workload", "msg/s", "points/s: median (min–max)", "points/s × baseline"), rows)


def latency_section(ingest: dict[str, Any]) -> str:
    latency = phase(ingest, "latency")
    if latency is None:
        return "_not run_"
    rounds = [r for r in latency["rounds"] if "p99_ms" in r]
    rows = [(
        "our collector, 1 process",
        number(latency.get("rate")),
        spread([r["p50_ms"] for r in rounds]),
        spread([r["p99_ms"] for r in rounds]),
        number(latency.get("resolution_ms")),
    )]  # fmt: skip
    return table(("consumer", "paced publish rate, msg/s", "p50 ms", "p99 ms", "poll resolution ms"), rows)


def comparison_section(comparison: dict[str, Any] | None) -> str:
    if comparison is None:
        return "_not run_"
    rows = []
    for key, label in (
        ("decode_only", "decoding the stored hours (baseline)"),
        ("first", "first comparison after the server starts (nothing decoded, nothing cached)"),
        ("cold", "cold comparison: no cached result, in a running server"),
        ("warm", "warm comparison: the cached result"),
    ):
        measured = comparison.get("measurements", {}).get(key, {})
        runs = measured.get("repeats_s") or [comparison[f"{key}_s"]]
        over = comparison[f"{key}_s"] / comparison["decode_only_s"]
        rows.append((label, spread([s * 1000 for s in runs], ",.0f"), f"{over:.2f} ×"))
    return table((f"median of {comparison.get('repeat', '?')}", "ms: median (min–max)", "× decoding"), rows)


def _accounting(run: dict[str, Any]) -> str:
    """The roll-up job's accounting of every device-day of the plan (runs before issue 23's accounted days: none)."""
    if "accounting_s" not in run:
        return "–"
    seconds = spread(run["accounting"]["repeats_s"], ",.1f")
    return f"{seconds} ({run['accounting_us_per_hour']:,.0f}, {run['accounting_per_hour_over_smallest']:.2f} ×)"


def plant_section(plant: dict[str, Any] | None) -> str:
    """The comparison per size and the roll-up job's InfluxDB reads, each per device-hour against the smallest."""
    if plant is None:
        return "_not run_"
    rows = [
        (
            f"{run['devices']} × {run['days']} ({run['device_hours']:,})",
            spread([s * 1000 for s in run["measurements"]["first"]["repeats_s"]]),
            spread([s * 1000 for s in run["measurements"]["cold"]["repeats_s"]]),
            spread([s * 1000 for s in run["measurements"]["warm"]["repeats_s"]], ",.1f"),
            f"{run['first_us_per_hour']:,.1f} ({run['first_per_hour_over_smallest']:.2f} ×)",
            f"{run['cold_us_per_hour']:,.1f} ({run['cold_per_hour_over_smallest']:.2f} ×)",
            _accounting(run),
            number(run.get("comparison_peak_rss_mb")),
            number(run.get("peak_rss_mb")),
        )
        for run in plant.get("scaling", [])
    ]
    header = (
        "devices × days (device-hours)",
        "first, ms",
        "cold, ms",
        "warm, ms",
        "first, µs per device-hour (× smallest)",
        "cold, µs per device-hour (× smallest)",
        "accounting by the roll-up job, s (µs per device-hour, × smallest)",
        "comparisons' peak RSS, MB",
        "process peak RSS (with the decoding baseline), MB",
    )
    reads = [
        (
            f"{read['devices']} × {read['days']} ({read['device_hours']:,}; {read['points']:,} points)",
            spread([s * 1000 for s in read["build_repeats_s"]]),
            f"{read['build_us_per_hour']:,.0f} ({read['build_per_hour_over_smallest']:.2f} ×)",
            spread([s * 1000 for s in read["late_check_repeats_s"]]),
            f"{read['late_check_us_per_hour']:,.0f} ({read['late_check_per_hour_over_smallest']:.2f} ×)",
        )
        for read in plant.get("influx_read", [])
    ]
    read_header = (
        "from InfluxDB: devices × days",
        "build, ms",
        "build, µs per device-hour (× smallest)",
        "late-data pass, ms",
        "late-data pass, µs per device-hour (× smallest)",
    )
    return table(header, rows) + ("\n\n" + table(read_header, reads) if reads else "")


def outage_figures(results: dict[str, dict[str, Any] | None]) -> list[dict[str, Any]]:
    figures = []
    for name, result in sorted(results.items()):
        if not name.startswith("spool") or not result:
            continue
        runs = result.get("runs") or [result]
        figures.append({
            "messages": result["messages_per_phase"],
            "runs": runs,
            "rss_start": statistics.median(r["rss_mb_at_start"] for r in runs),
            "rss_max": max(r["rss_mb_during_outage_max"] for r in runs),
            "spooled_mb": statistics.median(r["spooled_mb"] for r in runs),
            "drain": [r["drain_rate_points_s"] for r in runs],
            "live": [r["baseline_rate_msg_s"] for r in runs],
        })  # fmt: skip
    return sorted(figures, key=lambda f: f["messages"])


def disk_full_figures(results: dict[str, dict[str, Any] | None]) -> list[dict[str, Any]]:
    """The outage runs whose spool disk filled and was freed mid-stream (``bench.spool --disk-full``)."""
    figures = []
    for name, result in sorted(results.items()):
        if not name.startswith("diskfull") or not result:
            continue
        runs = result.get("runs") or [result]
        figures.append({
            "messages": result["messages_per_phase"],
            "runs": len(runs),
            "refused": sum(r["batches_refused_by_full_disk"] for r in runs),
            "stored": min(r["points_in_influxdb"] for r in runs),
            "published": runs[0]["published"],
            "exact": all(r["points_in_influxdb"] == r["published"] for r in runs),
            "rss_start": statistics.median(r["rss_mb_at_start"] for r in runs),
            "rss_max": max(r["rss_mb_during_outage_max"] for r in runs),
        })  # fmt: skip
    return figures


def disk_full_section(results: dict[str, dict[str, Any] | None]) -> str:
    figures = disk_full_figures(results)
    if not figures:
        return "_not run_"
    rows = [
        (
            f"{f['messages']:,} messages ({f['runs']} run{'s' if f['runs'] > 1 else ''})",
            f"{f['refused']:,.0f}",
            f"{f['stored']:,} of {f['published']:,}" + ("" if f["exact"] else " **(not exact)**"),
            f"{f['rss_start']:,.0f} MB",
            f"{f['rss_max']:,.0f} MB ({f['rss_max'] / f['rss_start']:.2f} ×)",
        )
        for f in figures
    ]
    header = ("outage of", "batches refused by the full disk", "points in InfluxDB / published", "RSS at start",
              "highest RSS in the outage")  # fmt: skip
    return table(header, rows)


def outage_section(results: dict[str, dict[str, Any] | None]) -> str:
    figures = outage_figures(results)
    if not figures:
        return "_not run_"
    rows = [
        (
            f"{f['messages']:,} messages",
            f"{f['spooled_mb']:,.1f} MB",
            f"{f['rss_start']:,.0f} MB",
            f"{f['rss_max']:,.0f} MB ({f['rss_max'] / f['rss_start']:.2f} ×)",
            spread(f["live"]),
            spread(f["drain"]),
        )
        for f in figures
    ]
    header = ("outage of", "spooled", "RSS at start", "highest RSS in the outage", "live msg/s (InfluxDB up)",
              "spool drain points/s")  # fmt: skip
    return table(header, rows)


def statistics_section(result: dict[str, Any] | None) -> str:
    if result is None:
        return "_not run_"
    rows = [(r["method"], f"{r['coverage']:.1%}", f"{r['mean_width']:.3f}") for r in result["results"]]
    failures = result.get("failures", {})
    for kpi, coverage in failures.get("coverage", {}).items():
        rows.append((f"{kpi}: engine, hourly units with Poisson faults", f"{coverage:.1%}", "–"))
    text = table((f"method ({result.get('seeds', '?')} seeds, nominal 95%)", "coverage", "mean width"), rows)
    parts = (text, design_tables(result), confounders_section(result.get("confounders")))
    return "\n\n".join(part for part in parts if part)


def confounders_section(result: dict[str, Any] | None) -> str:
    """Issue 21: naive before/after against the control line and the adjusted baseline, under confounders."""
    if result is None:
        return "_confounded scenarios not run_"
    control, adjusted = result["control_line"], result["adjusted_baseline"]
    rows = []
    for label, case in (("no pilot effect", "no_pilot_effect"), ("pilot effect = target", "effect_equals_target")):
        c = control[case]
        scenario = f"plant-wide {control['plant_wide_change']:+.0%}, {label} ({c['true_effect']:+.0%})"
        rows.append((scenario, "naive before/after (treated line)", f"{c['coverage']['naive']:.1%}",
                     f"{c['says_met']['naive']:.1%}", f"{c['mean_bias']['naive']:+.2%}"))  # fmt: skip
        rows.append((scenario, "control line (difference-in-differences)", f"{c['coverage']['did']:.1%}",
                     f"{c['says_met']['did']:.1%} ({c['says_met']['did_with_pre_trend_check']:.1%} with the"
                     f" pre-trend check; parallel in {c['pre_trend_parallel']:.0%})",
                     f"{c['mean_bias']['did']:+.2%}"))  # fmt: skip
    weathers = (
        ("baseline spans the pilot's weather", adjusted),
        ("pilot warmer than every baseline hour", result.get("adjusted_baseline_beyond_range")),
    )
    for weather, run in weathers:
        if run is None:
            continue
        for label, case in (("no pilot effect", "no_pilot_effect"), ("pilot effect = target", "effect_equals_target")):
            a = run[case]
            scenario = f"energy: warmer ({weather}), +volume, +1 shift, {label} ({a['true_effect']:+.0%})"
            rows.append((scenario, "naive energy per good unit", "–",
                         f"{a['says_met']['naive_energy_per_good_unit']:.1%}",
                         f"{a['mean_bias_naive_total_energy']:+.1%} (total energy)"))  # fmt: skip
            refused = a.get("refused_as_extrapolation", 0.0)
            rows.append((scenario, f"adjusted baseline (G14 accepted {a['model_accepted']:.0%}, refused as"
                         f" extrapolation {refused:.0%}, median CV(RMSE) {a['median_cv_rmse']:.1%})",
                         f"{a['coverage_adjusted']:.1%}" if a["model_accepted"] else "–",
                         f"{a['says_met']['adjusted']:.1%}",
                         f"{a['mean_bias_adjusted']:+.2%}" if a["model_accepted"] else "–"))  # fmt: skip
    header = (f"scenario ({control['seeds']} seeds, {control['hours_per_period']} h per period)", "method",
              "coverage of the truth, nominal 95%", "says \"met\" for a 5% target (plan rule, 90%)",
              "mean bias")  # fmt: skip
    return table(header, rows)


def design_tables(result: dict[str, Any]) -> str:
    """Design before data and product-mix standardisation (``bench.design_statistics``), where the run has them."""
    parts = []
    design = result.get("design")
    if design:
        rows = [
            (
                f"φ = {c['phi']:g}, {c['baseline_hours']} / {c['pilot_hours']} h",
                f"{c['mean_mde']:+.1%}",
                f"{c['detected_at_mde']:.1%}",
                f"{c['met_at_met_needs']:.1%}",
                f"{c['detected_with_no_change']:.1%}",
                f"{c['detected_at_iid_mde']:.1%}",
            )
            for c in design["cases"]
        ]
        header = (f"design before data ({design['seeds']} seeds, {design['level']:.0%} level, stated power "
                  f"{design['power']:.0%})", "mean MDE", "detected at the MDE", "target met at met_needs",
                  "detected with no change", "detected at an i.i.d. MDE")  # fmt: skip
        parts.append(table(header, rows))
    methods = result.get("design_methods")
    if methods:
        method_rows = [
            (
                f"{c['method']}, {c['baseline_hours']} / {c['pilot_hours']} h",
                f"{c['mean_mde']:+.1%}",
                f"{c['detected_at_mde']:.1%}",
                f"{c['detected_with_no_change']:.1%}",
            )
            for c in methods["cases"]
        ]
        method_header = (
            f"design by method ({methods['seeds']} seeds, {methods['level']:.0%} level, stated power"
            f" {methods['power']:.0%})",
            "mean MDE",
            "detected at the MDE",
            "detected with no change",
        )
        parts.append(table(method_header, method_rows))
    mix = result.get("product_mix")
    if mix:
        mix_rows = [
            (
                str(k["kpi"]),
                f"{k['true_change']:+.2%}",
                f"{k['mean_raw_change']:+.2%}",
                f"{k['mean_standardised_change']:+.2%}",
                f"{k['rmse_standardised']:.2%}",
            )
            for k in mix["kpis"]
        ]
        mix_header = (f"product mix 80/20 → 30/70 ({mix['seeds']} seeds)", "true change", "raw change (mean)",
                      "standardised change (mean)", "RMSE standardised")  # fmt: skip
        parts.append(table(mix_header, mix_rows))
    return "\n\n".join(parts)


def measured_at(result: dict[str, Any]) -> str:
    """How a benchmark section's note begins: when, and at which commit (and whether the tree had changes)."""
    return f"Measured {result.get('started', '?')} at commit `{result.get('commit', '?')}`" + (
        " (with uncommitted changes)" if result.get("dirty") else ""
    )


def load_average(result: dict[str, Any], key: str, spec: str) -> str:
    """The run's recorded load averages under ``key``, each formatted with ``spec``; "?" if none were recorded."""
    return ", ".join(f"{x:{spec}}" for x in result.get(key, [])) or "?"


def sources_section(result: dict[str, Any] | None) -> str:
    """One agent process reading many machines (``bench.sources``): its own run, named, and its verdicts."""
    if result is None:
        return "_not run_"
    devices = result.get("devices", {})
    cpu, rss, peak = result["cpu_share_of_one_core"], result["rss_mb"], result["peak_rss_mb"]
    install = result.get("agent_install_mb")
    floor = result.get("import_floor_rss_mb")
    system = result.get("cpu_system_share")
    rows = [
        (
            "CPU share of one core (user + system)",
            f"{cpu:.1%}" + (f" ({system:.0%} of it in the kernel)" if system is not None else ""),
            f"≤ {TARGET_AGENT_CPU_SHARE:.0%}",
            verdict(cpu <= TARGET_AGENT_CPU_SHARE),
        ),
        (
            "resident memory (RSS) at the end; its peak",
            f"{rss:,.1f} MB; {peak:,.1f} MB"
            + (f" (the modules alone, before any device: {floor:,.1f} MB)" if floor else ""),
            f"≤ {TARGET_AGENT_RSS_MB:,.0f} MB",
            verdict(peak <= TARGET_AGENT_RSS_MB),
        ),
        (
            "the `[agent]` virtual environment on disk",
            f"{install:,.1f} MB" if install is not None else "–",
            f"< {TARGET_AGENT_INSTALL_MB:,.0f} MB",
            verdict(None if install is None else install < TARGET_AGENT_INSTALL_MB),
        ),
    ]
    load = load_average(result, "loadavg_at_start", ".2f")
    measured = (
        measured_at(result)
        + f": {devices.get('modbus', '?')} Modbus TCP and {devices.get('opcua', '?')} OPC UA devices, sampled every"
        f" {number(result.get('sampling_s'), 'g')} s, over {number(result.get('measured_s'), '.0f')} s;"
        f" {result.get('threads', '?')} threads; load average at start {load}."
    )
    header = ("what issue 19 asks", "measured", "target", "verdict")
    return measured + "\n\n" + table(header, rows)


CONSOLE_ROWS = (
    ("comparison_api", "`GET /v1/demonstrations/{ref}/comparison`, the cached result (baseline)", None),
    ("demonstration_page", "the demonstration page, `/demonstrations/{ref}`", TARGET_DEMONSTRATION_PAGE_S),
    ("live_page", "the live line page, `/demonstrations/{ref}/live`", TARGET_LIVE_PAGE_S),
    ("live_api", "`GET /v1/demonstrations/{ref}/live`, what the live page shows", None),
)


def console_section(result: dict[str, Any] | None) -> str:
    """The console's pages (``bench.console``): first and warm server-side times, ratios, and issue 22's targets."""
    if result is None:
        return "_not run_"
    rows = []
    for key, label, target in CONSOLE_ROWS:
        entry = result.get(key)
        if entry is None:
            continue
        warm = [w * 1000 for w in entry["warm_s"]]
        rows.append((
            label, f"{entry['first_s'] * 1000:,.0f}", spread(warm, ",.1f"),
            f"{entry['ratio_to_baseline']:.2f} ×",
            "–" if target is None else f"≤ {target * 1000:,.0f} ms",
            "–" if target is None else verdict(entry["median_s"] <= target),
        ))  # fmt: skip
    load = load_average(result, "loadavg_at_end", ".1f")
    today = result.get("today_hours")
    measured = (
        measured_at(result) + f": the demo's {result.get('devices', '?')} devices over {result.get('days', '?')} days,"
        f" {result.get('today_messages', 0):,} messages of today so far"
        + (f" ({today:g} whole hours)" if today is not None else " (no whole hour yet)")
        + f"; {result.get('repeat', '?')} warm requests per page; {result.get('cpus', '?')} CPUs,"
        f" load average {load} at the end."
    )
    header = ("request", "first (ms)", "warm (ms): median (range)", "× baseline", "target", "verdict")
    return measured + "\n\n" + table(header, rows)


SPARKPLUG_LABELS = {
    "json": "pilot/v1 JSON, 50 records a message (baseline)",
    "json-single": "pilot/v1 JSON, 1 record a message",
    "sparkplug": "**Sparkplug B DDATA, 1 point a message**",
}


def sparkplug_section(result: dict[str, Any] | None) -> str:
    """Sparkplug B against the JSON contract (``bench.sparkplug``): its own run, named, in points per second."""
    if result is None:
        return "_not run_"
    rows = []
    for form, label in SPARKPLUG_LABELS.items():
        figures = result.get(form)
        if figures is None:
            continue
        rates = [figures["points_per_s_min"], figures["points_per_s_median"], figures["points_per_s_max"]]
        ratio = figures.get("to_json")
        rows.append(
            (
                label,
                f"{figures['messages']:,}",
                f"{figures['points_per_s_median']:,.0f} ({min(rates):,.0f}–{max(rates):,.0f})",
                "1" if ratio is None else f"{ratio['median']:.2f} ({ratio['min']:.2f}–{ratio['max']:.2f})",
            )
        )
    load = load_average(result, "loadavg_at_start", ".2f")
    measured = (
        measured_at(result)
        + f": {result.get('points', 0):,} points of {result.get('metrics_per_point', '?')} metrics per form,"
        f" {result.get('repeat', '?')} repeats; {result.get('cores', '?')} cores, load average at start {load}."
    )
    header = ("form", "messages", "points/s, median (range)", "ratio to batched JSON")
    return measured + "\n\n" + table(header, rows)


SECTIONS: dict[str, Callable[[dict[str, dict[str, Any] | None]], str]] = {
    "machine": lambda r: machine_section(r["run"] or {}, r["ingest"] or {}),
    "targets": targets_section,
    "drain": lambda r: drain_section(r["ingest"] or {}),
    "live": lambda r: drain_section(r["ingest"] or {}, "-live"),
    "batched": lambda r: batched_section(r["ingest"] or {}),
    "latency": lambda r: latency_section(r["ingest"] or {}),
    "comparison": lambda r: comparison_section(r["comparison"]),
    "plant": lambda r: plant_section(r["plant"]),
    "outage": outage_section,
    "disk_full": disk_full_section,
    "statistics": lambda r: statistics_section(r["statistics"]),
    "sources": lambda r: sources_section(r["sources"]),
    "console": lambda r: console_section(r["console"]),
    "sparkplug": lambda r: sparkplug_section(r.get("sparkplug")),
}


def render(folder: Path) -> str:
    names = ["run", "ingest", "comparison", "plant", "statistics", "sources", "sparkplug", "console",
             *sorted(p.stem for p in folder.glob("spool*.json")),
             *sorted(p.stem for p in folder.glob("diskfull*.json"))]  # fmt: skip
    results = {name: load(folder, name) for name in names}
    if results["ingest"] is None:
        raise MissingResult(f"{folder}/ingest.json is missing: run bench/run first")
    ingest = results["ingest"]
    values = {name: build(results) for name, build in SECTIONS.items()}
    values["messages"] = f"{ingest.get('workload', {}).get('messages', 0):,}"
    values["repeat"] = str(max((len(p.get("rounds", [])) for p in ingest.get("phases", {}).values()), default=0))
    values["config"] = "`" + json.dumps(ingest.get("config", {}).get("collector", {}), sort_keys=True) + "`"
    return Template(TEMPLATE.read_text(encoding="utf-8")).substitute(values)


SOURCES_HEADING = "## 8. One agent process reading 50 machines"
SPARKPLUG_HEADING = "## 9. Sparkplug B intake against the JSON contract"
CONSOLE_HEADING = "## 10. Console pages"
# The sections a benchmark of their own may render alone into a page: result name → heading, section.
ALONE_SECTIONS: dict[str, tuple[str, Callable[[dict[str, Any]], str]]] = {
    "sources": (SOURCES_HEADING, sources_section),
    "sparkplug": (SPARKPLUG_HEADING, sparkplug_section),
    "console": (CONSOLE_HEADING, console_section),
}
_ALONE = (
    "_This section was rendered on its own (`python -m bench.report --only {name}`) from a `bench.{name}`"
    " run that is not the run above; the other sections are that run's._"
)


def splice(page: str, folder: Path, name: str) -> str:
    """``page`` with one section rendered from ``folder``'s ``name``.json alone, the rest kept as it is: for a
    benchmark run without the full ``bench/run``. The section says so."""
    heading, section = ALONE_SECTIONS[name]
    result = load(folder, name)
    if result is None:
        raise MissingResult(f"{folder}/{name}.json is missing: run python -m bench.{name} --out it first")
    template = TEMPLATE.read_text(encoding="utf-8")
    start = template.index(heading)
    chunk = template[start : template.index("\n## ", start) + 1]
    chunk = Template(chunk).substitute({name: _ALONE.format(name=name) + "\n\n" + section(result)})
    if heading in page:
        at = page.index(heading)
        return page[:at] + chunk + page[page.index("\n## ", at) + 1 :]
    at = page.index("## How the collector got here")
    return page[:at] + chunk + page[at:]


def splice_sources(page: str, folder: Path) -> str:
    return splice(page, folder, "sources")


def parse_args(argv: Sequence[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="python -m bench.report", description=__doc__.split("\n\n")[0])
    parser.add_argument("--results", type=Path, default=Path(".pilot/bench/results"), help="one run's JSON folder")
    parser.add_argument("--out", type=Path, default=Path("docs/benchmarks.md"))
    parser.add_argument(
        "--only",
        choices=sorted(ALONE_SECTIONS),
        help="render only this section into the page at --out, from a results folder that holds only its JSON",
    )
    return parser.parse_args(argv)


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    try:
        if args.only is not None:
            page = splice(args.out.read_text(encoding="utf-8"), args.results, args.only)
        else:
            page = render(args.results)
    except MissingResult as exc:
        print(f"bench.report: {exc}", file=sys.stderr)
        return 2
    args.out.write_text(page, encoding="utf-8")
    print(f"wrote {args.out}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
