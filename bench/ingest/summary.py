"""Statistics over the rounds: each phase's median and spread, and the ratios between systems (with targets)."""

from __future__ import annotations

import statistics
from typing import Any

TARGET_COLLECTOR_VS_BARE = 0.90
TARGET_COLLECTOR_VS_NAIVE = 20.0

# name → (numerator, denominator, target). "best-collector" is the faster of collector and collector-2 in
# that round; "batched-points" is the batched phase's points/s.
RATIOS: dict[str, tuple[str, str, float | None]] = {
    "collector/bare": ("collector", "bare", TARGET_COLLECTOR_VS_BARE),
    "collector/naive": ("collector", "naive", TARGET_COLLECTOR_VS_NAIVE),
    "collector/node-red": ("collector", "node-red", None),
    "collector-2/node-red": ("collector-2", "node-red", None),
    "best-collector/node-red": ("best-collector", "node-red", None),
    "collector/node-red-per-message": ("collector", "node-red-per-message", None),
    "collector-2/collector": ("collector-2", "collector", None),
    "node-red/bare": ("node-red", "bare", None),
    "naive/bare": ("naive", "bare", None),
    "batched-points/collector": ("batched-points", "collector", None),
    "collector-live/bare-live": ("collector-live", "bare-live", None),
    "collector-live/naive-live": ("collector-live", "naive-live", None),
    "collector-live/node-red-live": ("collector-live", "node-red-live", None),
    "collector-2-live/node-red-live": ("collector-2-live", "node-red-live", None),
    "best-collector-live/node-red-live": ("best-collector-live", "node-red-live", None),
    "collector-live/node-red-per-message-live": ("collector-live", "node-red-per-message-live", None),
    "collector-2-live/collector-live": ("collector-2-live", "collector-live", None),
    "node-red-live/bare-live": ("node-red-live", "bare-live", None),
}


def round_rate(current: dict[str, dict[str, Any]], name: str) -> float | None:
    """A phase's rate in one round, or a derived one (best-collector…, batched-points); None if it did not run."""
    if name.startswith("best-collector"):
        suffix = name.removeprefix("best-collector")
        rates = [round_rate(current, f"collector{suffix}"), round_rate(current, f"collector-2{suffix}")]
        return max(r for r in rates if r is not None) if None not in rates else None
    if name == "batched-points":
        value = current.get("batched", {}).get("points_rate")
        return float(value) if value else None
    value = current.get(name, {}).get("rate")
    return float(value) if value else None


def compute_ratios(rounds: list[dict[str, dict[str, Any]]]) -> dict[str, Any]:
    """Per-round ratios (phases of one round ran minutes apart), summarised by their median."""
    ratios: dict[str, Any] = {}
    for name, (top, bottom, target) in RATIOS.items():
        values = []
        for current in rounds:
            numerator, denominator = round_rate(current, top), round_rate(current, bottom)
            if numerator is not None and denominator:
                values.append(numerator / denominator)
        if not values:
            continue
        median = statistics.median(values)
        entry: dict[str, Any] = {"median": round(median, 3), "rounds": [round(v, 3) for v in values]}
        if target is not None:
            entry["target"] = target
            entry["met"] = median >= target
        ratios[name] = entry
    return ratios


def _median(values: list[float], digits: int = 1) -> float | None:
    return round(statistics.median(values), digits) if values else None


def summarize_phase(name: str, per_round: list[dict[str, Any]]) -> dict[str, Any]:
    """Median and spread over the rounds that ran, the worst loss and memory, and every round as it was."""
    done = [p for p in per_round if "rate" in p]
    rates = [p["rate"] for p in done]
    summary: dict[str, Any] = {
        "rate_median": _median(rates),
        "rates": [round(r, 1) for r in rates],
        "rate_min": round(min(rates), 1) if rates else None,
        "rate_max": round(max(rates), 1) if rates else None,
    }
    points_rates = [p["points_rate"] for p in done if "points_rate" in p]
    if points_rates:
        summary["points_rate_median"] = _median(points_rates)
        summary["points_rates"] = [round(r, 1) for r in points_rates]
    losses = [p["lost"] for p in done if p.get("lost") is not None]
    summary["lost"] = max(losses) if losses else None
    peaks = [p["peak_rss_mb"] for p in done if p.get("peak_rss_mb") is not None]
    summary["peak_rss_mb"] = max(peaks) if peaks else None
    publisher_rates = [p["publisher_rate"] for p in done if p.get("publisher_rate")]
    if publisher_rates:
        summary["publisher_rate_median"] = _median(publisher_rates)
    if name == "latency":
        summary["p50_ms"] = _median([p["p50_ms"] for p in done if "p50_ms" in p])
        summary["p99_ms"] = _median([p["p99_ms"] for p in done if "p99_ms" in p])
        summary["rate"] = _median(rates)
        summary["resolution_ms"] = _median([p["resolution_ms"] for p in done if "resolution_ms" in p])
    summary["rounds"] = per_round
    return summary
