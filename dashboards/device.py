"""A dashboard per device profile: every metric with its unit, the state history, the production."""

from __future__ import annotations

from dashboards.grafana import (
    BOOL_MAPPINGS,
    JSON,
    Panel,
    Query,
    dashboard,
    grafana_unit,
    markdown_table,
    query_variable,
    state_mappings,
    text_panel,
    uid,
)
from dashboards.line_overview import line_variables
from dashboards.queries import chosen, field, select, tag_values
from pilot_core.profiles import DeviceProfile, Metric, MetricType, ProductionMode
from pilot_core.validation import PRODUCTION_MEASUREMENT, STATE_MEASUREMENT

DEVICE = [chosen("site"), chosen("line"), chosen("device")]


def device_uid(profile: DeviceProfile) -> str:
    return uid("pilot-device", profile.id)


def device_dashboard(profile: DeviceProfile) -> JSON:
    # The profile's own measurement names its devices; a profile without metrics is known by its states.
    home = profile.measurement if profile.metrics else STATE_MEASUREMENT
    variables = [
        *line_variables(home),
        query_variable("device", "Device", tag_values(home, "device", [chosen("site"), chosen("line")])),
    ]
    panels = [text_panel(f"{profile.name} {profile.name_ko}".strip(), _profile_markdown(profile), height=7)]
    if profile.states:
        panels.append(
            Panel(
                "state-timeline",
                "State history",
                [Query(select('last("state")', STATE_MEASUREMENT, DEVICE, per_interval=True), "state")],
                width=24,
                height=5,
                description="The last state reported in each interval, coloured by its time class.",
                mappings=state_mappings([profile]),
                options={"mergeValues": True, "showValue": "auto", "legend": {"showLegend": True}},
                custom={"fillOpacity": 80, "lineWidth": 0},
            )
        )
    panels += _production_panels(profile)
    panels += [_metric_panel(profile, metric) for metric in profile.metrics]
    return dashboard(
        device_uid(profile),
        f"Device: {profile.name} ({profile.id})",
        panels,
        variables,
        description=f"Profile {profile.id} {profile.version}: {profile.description}".strip(),
        tags=["device", profile.id],
    )


def _profile_markdown(profile: DeviceProfile) -> str:
    parts = [f"Profile **{profile.id}** version {profile.version}. {profile.description}".strip()]
    if profile.metrics:
        parts.append(
            markdown_table(
                ["metric", "unit", "type", "range", "every", "meaning"],
                [
                    [
                        m.name,
                        m.unit,
                        m.type.value,
                        _range(m),
                        f"{m.interval_s:g} s",
                        m.description,
                    ]
                    for m in profile.metrics
                ],
            )
        )
    if profile.states:
        parts.append(
            markdown_table(
                ["state", "time class", "meaning"],
                [[s.name, s.time_class.value, s.description] for s in profile.states],
            )
        )
    parts.append(f"Production: {profile.production.mode.value} (one unit is a {profile.production.unit}).")
    return "\n\n".join(parts)


def _range(metric: Metric) -> str:
    if metric.min is None and metric.max is None:
        return ""
    low = "" if metric.min is None else f"{metric.min:g}"
    high = "" if metric.max is None else f"{metric.max:g}"
    return f"{low} … {high}"


def _production_panels(profile: DeviceProfile) -> list[Panel]:
    if profile.production.mode is ProductionMode.NONE:
        return []
    unit = profile.production.unit
    panels = [
        Panel(
            "timeseries",
            f"Production ({unit}s per interval)",
            [
                Query(
                    select(
                        'sum("produced") AS "produced", sum("good") AS "good", sum("scrap") AS "scrap",'
                        ' sum("rework") AS "rework"',
                        PRODUCTION_MEASUREMENT,
                        DEVICE,
                        per_interval=True,
                    ),
                    "$col",
                )
            ],
            width=24 if profile.production.mode is ProductionMode.COUNT else 12,
            unit="none",
            minimum=0,
            custom={"drawStyle": "bars", "fillOpacity": 60},
        )
    ]
    if profile.production.mode is ProductionMode.CYCLE:
        panels.append(
            Panel(
                "timeseries",
                "Cycle time",
                [
                    Query(
                        select(
                            'mean("cycle_time_s") AS "mean", max("cycle_time_s") AS "max"',
                            PRODUCTION_MEASUREMENT,
                            DEVICE,
                            per_interval=True,
                        ),
                        "$col",
                    )
                ],
                description="Mean and longest reported cycle time per interval.",
                unit="s",
                minimum=0,
            )
        )
    return panels


def _metric_panel(profile: DeviceProfile, metric: Metric) -> Panel:
    title = f"{metric.name} ({metric.unit})" if metric.unit != "1" else metric.name
    description = metric.description or f"{metric.type.value}, sampled every {metric.interval_s:g} s"
    if metric.type is MetricType.BOOL:
        # A flag: a mean would be meaningless (and InfluxQL refuses it), its last value per interval is not.
        return Panel(
            "state-timeline",
            title,
            [Query(select(f"last({field(metric.name)})", profile.measurement, DEVICE, per_interval=True), metric.name)],
            height=5,
            description=description,
            mappings=BOOL_MAPPINGS,
            options={"mergeValues": True, "showValue": "never"},
        )
    # Integers are codes or counters (program number, tool, stops since power-on): their last value, stepped.
    aggregate = "mean" if metric.type is MetricType.FLOAT else "last"
    return Panel(
        "timeseries",
        title,
        [
            Query(
                select(f"{aggregate}({field(metric.name)})", profile.measurement, DEVICE, per_interval=True),
                metric.name,
            )
        ],
        description=description,
        unit=grafana_unit(metric.unit),
        minimum=metric.min,
        maximum=metric.max,
        custom={"lineInterpolation": "linear" if metric.type is MetricType.FLOAT else "stepAfter", "spanNulls": True},
    )
