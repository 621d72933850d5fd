"""The line overview: every device of a site's line at a glance."""

from __future__ import annotations

from dashboards.grafana import JSON, Panel, Query, dashboard, query_variable, state_mappings
from dashboards.queries import chosen, equals, select, tag_values
from pilot_core.contract import TimeClass
from pilot_core.profiles import ProfileCatalog
from pilot_core.validation import PRODUCTION_MEASUREMENT, STATE_MEASUREMENT, STATUS_MEASUREMENT

UID = "pilot-line-overview"
LINE = [chosen("site"), chosen("line")]
FAULTS = equals("time_class", TimeClass.UNPLANNED_DELAY.value)


def line_variables(measurement: str) -> list[JSON]:
    """Site, then the site's lines, from what ``measurement`` holds in the time range."""
    return [
        query_variable("site", "Site", tag_values(measurement, "site")),
        query_variable("line", "Line", tag_values(measurement, "line", [chosen("site")])),
    ]


def line_overview(catalog: ProfileCatalog) -> JSON:
    measurements = [STATUS_MEASUREMENT, STATE_MEASUREMENT, PRODUCTION_MEASUREMENT]
    measurements += [p.measurement for p in catalog if p.metrics]
    panels = [
        Panel(
            "state-timeline",
            "Machine state per device",
            [
                Query(
                    select('last("state")', STATE_MEASUREMENT, LINE, per_interval=True, group_by=["device"]),
                    "$tag_device",
                )
            ],
            width=24,
            height=9,
            description="The last state each device reported in each interval, coloured by its ISO 22400-2 time"
            " class: production green, setup blue, unplanned delay red, minor stop orange, idle yellow,"
            " planned downtime purple.",
            mappings=state_mappings(catalog),
            options={"mergeValues": True, "showValue": "never", "rowHeight": 0.8, "legend": {"showLegend": True}},
            custom={"fillOpacity": 80, "lineWidth": 0},
        ),
        Panel(
            "timeseries",
            "Throughput per device (units/h)",
            [
                Query(
                    select(
                        'sum("produced") * 3600000 / $__interval_ms',
                        PRODUCTION_MEASUREMENT,
                        LINE,
                        per_interval=True,
                        group_by=["device"],
                    ),
                    "$tag_device",
                )
            ],
            description="Units produced per hour in each interval (15 minutes at least), from the devices'"
            " production records.",
            unit="suffix: units/h",
            interval="15m",  # a minute holds a cycle or two: too few for a rate
            minimum=0,
            custom={"drawStyle": "line", "lineInterpolation": "stepAfter", "fillOpacity": 10},
        ),
        Panel(
            "table",
            "Good, scrap and rework per device",
            [
                Query(
                    select(
                        'sum("produced") AS "produced", sum("good") AS "good", sum("scrap") AS "scrap",'
                        ' sum("rework") AS "rework"',
                        PRODUCTION_MEASUREMENT,
                        LINE,
                        group_by=["device"],
                    ),
                    table=True,
                )
            ],
            description="Totals over the time range.",
            transformations=[{"id": "organize", "options": {"excludeByName": {"Time": True}}}],
        ),
        Panel(
            "table",
            "Last seen per device",
            [Query(select('last("seq") AS "seq"', measurements, LINE, group_by=["device"]), table=True)],
            description="When anything last arrived from each device (status, state, production or telemetry)"
            " within the time range.",
            transformations=[
                {"id": "merge", "options": {}},
                {
                    "id": "groupBy",
                    "options": {
                        "fields": {
                            "device": {"aggregations": [], "operation": "groupby"},
                            "Time": {"aggregations": ["max"], "operation": "aggregate"},
                        }
                    },
                },
                {"id": "organize", "options": {"renameByName": {"Time (max)": "last seen"}}},
            ],
            custom={"align": "auto"},
        ),
        Panel(
            "table",
            "Agent status",
            [
                Query(
                    select(
                        'last("online") AS "online", last("agent_version") AS "agent",'
                        ' last("profile_version") AS "profile version"',
                        STATUS_MEASUREMENT,
                        LINE,
                        group_by=["device"],
                    ),
                    table=True,
                )
            ],
            description="Each agent's last birth (online) or last will (offline) in the time range.",
            transformations=[{"id": "organize", "options": {"excludeByName": {"Time": True}}}],
        ),
        Panel(
            "timeseries",
            "Faults started per device",
            [
                Query(
                    select(
                        'count("state")', STATE_MEASUREMENT, [*LINE, FAULTS], per_interval=True, group_by=["device"]
                    ),
                    "$tag_device",
                )
            ],
            description="State changes into an unplanned-delay state (faults, alarms) per interval.",
            unit="none",
            minimum=0,
            custom={"drawStyle": "bars", "fillOpacity": 60, "stacking": {"mode": "normal", "group": "A"}},
        ),
        Panel(
            "table",
            "Recent faults",
            [
                Query(
                    select(
                        '"device", "state", "reason"',
                        STATE_MEASUREMENT,
                        [*LINE, FAULTS],
                        tail="ORDER BY time DESC LIMIT 100",
                    ),
                    table=True,
                )
            ],
            width=24,
            description="The last hundred faults in the time range, with the reason the device gave.",
        ),
    ]
    return dashboard(
        UID,
        "Line overview",
        panels,
        line_variables(STATE_MEASUREMENT),
        description="States, throughput, good and scrap counts, last seen and faults of every device of a line.",
        tags=["line"],
    )
