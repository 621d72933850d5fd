"""The table printed on stdout at the end of a run."""

from __future__ import annotations

from typing import Any


def _figure(value: Any, spec: str = ",.0f") -> str:
    return format(value, spec) if isinstance(value, int | float) else "-"


def render_table(results: dict[str, Any]) -> str:
    phases: dict[str, Any] = results["phases"]
    lines = [
        f"{'phase':<26}{'msgs':>9}{'points':>10}{'msg/s median':>14}{'min-max':>17}{'points/s':>10}{'vs bare':>9}"
        f"{'lost':>8}{'peak RSS MB':>13}{'publisher/s':>13}{'CPU s consumer/broker/influx':>31}",
    ]
    for name, summary in phases.items():
        last = summary["rounds"][-1]
        if "error" in last:
            lines.append(f"{name:<26} failed: {last['error']}")
            continue
        rate = summary.get("rate_median")
        baseline = phases.get("bare-live" if name.endswith("-live") else "bare", {}).get("rate_median")
        versus = f"{rate / baseline:.2f}" if rate and baseline and name != "latency" else "-"
        cpu = last.get("cpu_s", {})
        keys = ("consumer", "mosquitto", "influxd")
        cpu_text = "/".join(f"{cpu[k]:.1f}" if isinstance(cpu.get(k), float | int) else "-" for k in keys)
        messages = last.get("processed", last.get("messages"))
        spread = f"{_figure(summary.get('rate_min'))}-{_figure(summary.get('rate_max'))}"
        lines.append(
            f"{name:<26}{_figure(messages):>9}{_figure(last.get('points', messages)):>10}{_figure(rate):>14}"
            f"{spread:>17}{_figure(summary.get('points_rate_median')):>10}{versus:>9}{_figure(summary.get('lost')):>8}"
            f"{_figure(summary.get('peak_rss_mb'), '.1f'):>13}{_figure(summary.get('publisher_rate_median')):>13}"
            f"{cpu_text:>31}"
        )
        if name in {"collector-2", "collector-2-live"}:
            per = ", ".join(f"{p['client_id']} {_figure(p['peak_rss_mb'], '.1f')} MB, received {p['received']:,}"
                            for p in last.get("per_process", []))  # fmt: skip
            lines.append(f"{'':<26}per process: {per}")
        rejected = last.get("rejected_by_reason")
        if rejected:
            lines.append(f"{'':<26}rejected (dead letters) by reason: {rejected}")
    latency = phases.get("latency")
    if latency and latency.get("p50_ms") is not None:
        last = latency["rounds"][-1]
        lines += [
            "",
            f"latency (publish → queryable, collector): p50 {latency['p50_ms']:,.0f} ms,"
            f" p99 {latency['p99_ms']:,.0f} ms"
            f" at {latency['rate']:,.0f} msg/s (half of {last['max_rate']:,.0f}: {last['max_rate_source']});"
            f" poll every {last['poll_interval_s'] * 1000:g} ms, resolution about {last['resolution_ms']:g} ms;"
            f" {last['points_seen']:,} of {last['published']:,} seen",
        ]
    lines.append("")
    for name, ratio in results["ratios"].items():
        target = ratio.get("target")
        verdict = f" (target >= {target:g}: {'met' if ratio['met'] else 'NOT met'})" if target else ""
        lines.append(f"{name:<42}{ratio['median']:>8.3f}{verdict}   rounds: {ratio['rounds']}")
    return "\n".join(lines)
