"""The roll-up job: every stored demonstration's device-hours built as time passes, not when first asked for.

Run on a schedule (``pilot rollups --every 600``) or inside the API (``rollup_every_s``), it reads each hour
once it has begun and again until it has settled, so that the first comparison after a pilot ends finds
every hour stored and reads nothing from InfluxDB. It also counts the values InfluxDB holds for every settled
hour of the last ``late_days`` (the ``rollup_late_days`` setting, two weeks): an hour whose count moved took
in late data, and is read again and marked (results say so). Each demonstration's hours are then accounted under
its latest plan, a day of a device at a time (``HourStore.account``), so that a comparison reads accounted days
rather than accounting every device-hour. Replicas and the job share the per-device build locks of
``RollupRepository.building``: an hour is built, and a day accounted, once.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from adapters.influxdb import InfluxError
from adapters.sql import DemonstrationRepository, NotFound
from kpi_engine.service import EvaluationStopped, HourStore, Progress


@dataclass
class RollupRun:
    """What one pass did: hours stored per demonstration (slug), and the demonstrations that failed, with why."""

    stored: dict[str, int] = field(default_factory=dict)
    failed: dict[str, str] = field(default_factory=dict)


def roll_up(
    demonstrations: DemonstrationRepository,
    hours: HourStore,
    refs: list[str] | None = None,
    *,
    late_days: float | None = None,
    progress: Progress | None = None,
) -> RollupRun:
    """One pass over ``refs`` (default: every stored demonstration), under each one's latest plan version;
    late data is looked for in the settled hours of the last ``late_days`` (None: not looked for).

    A demonstration that cannot be rolled up (a device not in the registry, InfluxDB down) is noted and the
    others still go; a process that is stopping stops.
    """
    run = RollupRun()
    for ref in refs if refs is not None else [d.slug for d in demonstrations.list()]:
        try:
            stored = demonstrations.get(ref)
            run.stored[stored.slug] = hours.refresh(stored.plan, late_days=late_days, progress=progress)
            if not stored.plan.corrections:  # a plan with corrections is evaluated from its device-hours
                hours.account(stored.plan)  # and the plan's accounting of the hours, so a comparison reads days
        except EvaluationStopped:
            raise
        except (NotFound, InfluxError, LookupError) as exc:
            run.failed[ref] = str(exc)
    return run
