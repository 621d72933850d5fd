"""The daily KPI components of demonstrations, as a small InfluxDB measurement for dashboards.

A dashboard cannot scan weeks of raw points (InfluxDB 3 Core limits a query to
about 72 hours of files), so the KPI engine publishes what it has condensed:
per demonstration, plan version, local calendar day and phase, the summed KPI
components of the day. Any KPI of any range of days is then a ratio of sums,
exactly as the engine computes it, from one point per day.

Points are never overwritten with different values (InfluxDB 3 resolves that
non-deterministically). A day that changes after it was published (data replayed
late and re-read) is written again under the next ``revision``, with every other
day, and dashboards read the latest revision.
"""

from __future__ import annotations

import datetime as dt
import math
from collections.abc import Iterable, Mapping
from dataclasses import dataclass

from pilot_core.demonstration import Phase
from pilot_core.kpi import COMPONENT_NAMES, Components
from pilot_core.line_protocol import encode_point

MEASUREMENT = "kpi_daily"
PRECISION = "s"
# Every field is a float, always: a field never changes type.
FIELDS = COMPONENT_NAMES
TAGS = ("demonstration", "plan_version", "revision", "phase", "site", "line")
FIRST_REVISION = 1
# A day's point sits at local noon: any UTC-aligned GROUP BY time(1d) bucket then holds it on its own date
# for every zone within ±12 h, and a window that starts in the morning still contains its first day.
POINT_HOUR = 12

DayKey = tuple[dt.date, Phase]


@dataclass(frozen=True, slots=True)
class DailyComponents:
    day: dt.date  # in the plan calendar's zone
    phase: Phase
    components: Components

    @property
    def key(self) -> DayKey:
        return self.day, self.phase


@dataclass(frozen=True, slots=True)
class Publication:
    """What to write: the revision, and the days that are not yet stored in it."""

    revision: int
    days: list[DailyComponents]
    unchanged: int  # days already stored with these values
    changed: list[DayKey]  # days stored in the previous revision with other values (empty unless revised)


def point_time_s(day: dt.date, zone: dt.tzinfo) -> int:
    return int(dt.datetime.combine(day, dt.time(POINT_HOUR), zone).timestamp())


def encode_days(
    days: Iterable[DailyComponents],
    *,
    slug: str,
    plan_version: int,
    revision: int,
    site: str,
    line: str,
    zone: dt.tzinfo,
) -> list[str]:
    """Line protocol at precision ``s``."""
    lines = []
    for item in days:
        tags = (
            ("demonstration", slug),
            ("plan_version", str(plan_version)),
            ("revision", str(revision)),
            ("phase", item.phase.value),
            ("site", site),
            ("line", line),
        )
        fields = [(name, float(value)) for name, value in zip(FIELDS, item.components.as_vector(), strict=True)]
        lines.append(encode_point(MEASUREMENT, tags, fields, point_time_s(item.day, zone)))
    return lines


def same_components(a: Components, b: Components) -> bool:
    """Equal up to float noise: the same hours summed again give the same day."""
    return all(
        math.isclose(x, y, rel_tol=1e-9, abs_tol=1e-9) for x, y in zip(a.as_vector(), b.as_vector(), strict=True)
    )


def plan_publication(
    stored: Mapping[int, Mapping[DayKey, Components]], settled: Iterable[DailyComponents]
) -> Publication:
    """Which revision the settled days go to, given what each stored revision holds.

    Days missing from the latest revision are added to it; if any stored day differs, every settled
    day goes to a new revision, so that no point is ever overwritten with other values.
    """
    days = sorted(settled, key=lambda d: (d.day, list(Phase).index(d.phase)))
    if not stored:
        return Publication(FIRST_REVISION, days, 0, [])
    latest = max(stored)
    held = stored[latest]
    changed = [d.key for d in days if d.key in held and not same_components(held[d.key], d.components)]
    if changed:
        return Publication(latest + 1, days, 0, changed)
    missing = [d for d in days if d.key not in held]
    return Publication(latest, missing, len(days) - len(missing), [])
