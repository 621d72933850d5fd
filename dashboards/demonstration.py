"""A demonstration's before/after dashboard, read from the daily KPI components the engine publishes.

It never touches raw telemetry: each panel sums one point per day and phase of
``kpi_daily`` and takes the KPI's ratio of the sums, exactly as the KPI engine
rolls up a phase. So a weeks-long demonstration stays a small query.
"""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass

from dashboards.grafana import (
    JSON,
    Panel,
    Query,
    dashboard,
    grafana_unit,
    markdown_table,
    query_variable,
    text_panel,
    uid,
)
from dashboards.queries import chosen, equals, select
from pilot_core.demonstration import DemonstrationPlan
from pilot_core.influxql import quote_identifier
from pilot_core.kpi import KPIS
from pilot_core.kpi_daily import MEASUREMENT

# The KPI engine's formulas (pilot_core.kpi) over summed daily components; a test holds them equal.
KPI_EXPRESSIONS = {
    "oee": 'sum("ideal_s") / sum("pbt_s") * sum("good") / sum("produced")',
    "availability": 'sum("apt_s") / sum("pbt_s")',
    "effectiveness": 'sum("ideal_s") / sum("apt_s")',
    "quality_ratio": 'sum("good") / sum("produced")',
    "cycle_time_mean": 'sum("output_cycle_time_s") / sum("output_cycles")',
    "throughput_rate": 'sum("output_produced") / sum("output_pbt_s") * 3600',
    "energy_per_good_unit": 'sum("energy_kwh") / sum("output_good")',
}
# InfluxQL divides by zero as 0: a KPI whose inputs are missing is kept to the days that have them, so
# that a panel shows no data (as the engine shows null) instead of a 0 that reads as measured.
KPI_CONDITIONS = {"energy_per_good_unit": '"meter_hours" > 0'}
NO_VALUE_NOTES = {"energy_per_good_unit": " No value (no data) where no energy meter in scope measured the day."}
DOWNTIME_HOURS = '(sum("pbt_s") - sum("apt_s")) / 3600'
# Planned busy time lost, by ISO 22400-2 time element; they add up to PBT − APT.
LOST_TIME = {"setup": "asut_s", "delays": "adet_s", "idle": "adot_s", "unknown": "unknown_s"}


@dataclass(frozen=True)
class DemonstrationView:
    """What the dashboard shows of a stored demonstration: a plan version."""

    slug: str
    plan_version: int
    plan_hash: str
    frozen: bool
    plan: DemonstrationPlan


def demonstration_uid(slug: str) -> str:
    return uid("pilot-demo", slug)


def demonstration_dashboard(view: DemonstrationView) -> JSON:
    plan = view.plan
    scope = [
        equals("demonstration", view.slug),
        equals("plan_version", str(view.plan_version)),
        chosen("revision"),
    ]
    revision = query_variable(
        "revision",
        "Publication",
        f"SHOW TAG VALUES FROM {quote_identifier(MEASUREMENT)} WITH KEY = {quote_identifier('revision')}"
        f" WHERE {scope[0]} AND {scope[1]} AND $timeFilter",
        sort=4,  # numerical, descending: the latest revision comes first and is the one shown
    )

    def by_phase(expression: str, name: str) -> Query:
        where = [*scope, *([KPI_CONDITIONS[name]] if name in KPI_CONDITIONS else [])]
        return Query(
            select(f"{expression} AS {quote_identifier(name)}", MEASUREMENT, where, group_by=["phase"]), "$tag_phase"
        )

    def daily(expression: str, name: str) -> Query:
        where = [*scope, *([KPI_CONDITIONS[name]] if name in KPI_CONDITIONS else [])]
        return Query(
            select(
                f"{expression} AS {quote_identifier(name)}", MEASUREMENT, where, per_interval=True, group_by=["phase"]
            ),
            "$tag_phase",
        )

    targets = {t.kpi: t.label for t in plan.targets}
    panels = [text_panel(f"{plan.name} {plan.name_ko}".strip(), _plan_markdown(view), height=9)]
    for kpi, expression in KPI_EXPRESSIONS.items():
        definition = KPIS[kpi]
        panels.append(
            Panel(
                "stat",
                f"{definition.title} · {definition.title_ko}",
                [by_phase(expression, kpi)],
                width=6,
                height=5,
                description=f"{definition.formula}, over the days of each phase in the time range."
                + NO_VALUE_NOTES.get(kpi, "")
                + (f" Target: {targets[kpi]}." if kpi in targets else ""),
                unit=grafana_unit(definition.unit),
                options=_STAT_OPTIONS,
            )
        )
    panels.append(
        Panel(
            "stat",
            "Downtime · 비가동 시간",
            [by_phase(DOWNTIME_HOURS, "downtime_h")],
            width=6,
            height=5,
            description="Planned busy time not spent producing (PBT − APT), in hours.",
            unit="h",
            options=_STAT_OPTIONS,
        )
    )
    daily_panels = [
        ("oee", "Daily OEE", KPI_EXPRESSIONS["oee"], "ratio"),
        ("cycle_time_mean", "Daily mean cycle time", KPI_EXPRESSIONS["cycle_time_mean"], "s"),
        ("throughput_rate", "Daily throughput", KPI_EXPRESSIONS["throughput_rate"], "units/h"),
        ("energy_per_good_unit", "Daily energy per good unit", KPI_EXPRESSIONS["energy_per_good_unit"], "kWh/unit"),
    ]
    for name, title, expression, unit in daily_panels:
        panels.append(
            Panel(
                "timeseries",
                title,
                [daily(expression, name)],
                description="Per day (or longer, when zoomed out) from the summed components of the day."
                + NO_VALUE_NOTES.get(name, ""),
                unit=grafana_unit(unit),
                interval="1d",
                custom={"drawStyle": "bars", "fillOpacity": 70},
            )
        )
    lost = ", ".join(f'sum("{column}") / 3600 AS "{name}"' for name, column in LOST_TIME.items())
    panels.append(
        Panel(
            "timeseries",
            "Daily downtime by time element (hours)",
            [Query(select(lost, MEASUREMENT, scope, per_interval=True, group_by=["phase"]), "$tag_phase $col")],
            width=24,
            description="Setup (ASUT), delays: faults and minor stops (ADET), idle (ADOT) and time with no known"
            " state: together PBT − APT.",
            unit="h",
            interval="1d",
            custom={"drawStyle": "bars", "fillOpacity": 70, "stacking": {"mode": "normal", "group": "A"}},
        )
    )
    start, end = _span(plan)
    return dashboard(
        demonstration_uid(view.slug),
        f"Demonstration: {plan.name} (v{view.plan_version})",
        panels,
        [revision],
        description=f"Baseline against pilot for {plan.name}, plan version {view.plan_version} ({view.plan_hash}).",
        time_from=start,
        time_to=end,
        refresh="",
        tags=["demonstration"],
    )


_STAT_OPTIONS: JSON = {
    "reduceOptions": {"calcs": ["lastNotNull"], "fields": "", "values": False},
    "textMode": "value_and_name",
    "colorMode": "none",
    "graphMode": "none",
    "orientation": "horizontal",
    "justifyMode": "auto",
}


def _span(plan: DemonstrationPlan) -> tuple[str, str]:
    """From the local midnight of the first window's day to the local midnight after the last window ends."""
    zone = plan.calendar.zone
    first = min(w.start for w in plan.windows).astimezone(zone)
    last = max(w.end for w in plan.windows).astimezone(zone)
    start = dt.datetime.combine(first.date(), dt.time(), zone)
    end = dt.datetime.combine(last.date(), dt.time(), zone)
    if end < last:
        end += dt.timedelta(days=1)
    return _iso(start), _iso(end)


def _iso(moment: dt.datetime) -> str:
    return moment.astimezone(dt.UTC).strftime("%Y-%m-%dT%H:%M:%S.000Z")


def _plan_markdown(view: DemonstrationView) -> str:
    plan = view.plan
    status = "frozen" if view.frozen else "draft: a preview, the plan may still change"
    parts = [
        f"Site **{plan.site}**, line **{plan.line}**. Plan version **{view.plan_version}** ({status}),"
        f" hash `{view.plan_hash}`.",
        markdown_table(
            ["window", "phase", "start", "end"],
            [[w.name, w.phase.value, w.start.isoformat(), w.end.isoformat()] for w in plan.windows],
        ),
    ]
    if plan.targets:
        parts.append("Targets: " + ", ".join(t.label for t in plan.targets) + ".")
    parts.append(
        "Numbers are sums of the daily KPI components that `pilot grafana publish` writes for settled days;"
        " a day appears once every hour of it has settled. Verdicts and intervals are in the report and the API."
    )
    return "\n\n".join(parts)
