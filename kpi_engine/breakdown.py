"""What a demonstration's charts need from its stored device-hours, accounted exactly as its KPIs are.

Per phase: the summed components (equal to the evaluation's), the merged
cycle-time histogram of the output stations, and the planned busy time lost per downtime cause
(state and reason). Per local calendar day and phase: the summed components,
so that a daily OEE is computed from summed times and counts, never averaged.
Every hour counts once, under the same exclusions and window rules as the KPIs.
"""

from __future__ import annotations

import datetime as dt
from collections import defaultdict
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

from kpi_engine.evaluation import AccountedHours
from pilot_core.demonstration import DemonstrationPlan, Phase
from pilot_core.device_hours import DeviceHour, DeviceRules, DowntimeCause, downtime_by_cause
from pilot_core.histogram import LogHistogram
from pilot_core.kpi import Components, total


@dataclass(frozen=True, slots=True)
class DayComponents:
    day: dt.date  # in the plan calendar's time zone
    phase: Phase
    components: Components  # every device in scope, every included hour of the day in the phase's windows


@dataclass(frozen=True, slots=True)
class PhaseBreakdown:
    components: Components  # the phase's roll-up: the sum of its days
    cycle_times: LogHistogram  # of the line's output stations: other stations' cycles are not the line's
    downtime_s: dict[DowntimeCause, float]  # adds up to PBT − APT of ``components``


@dataclass(frozen=True, slots=True)
class Breakdown:
    days: list[DayComponents]  # by day, baseline before pilot within a day
    phases: dict[Phase, PhaseBreakdown]


def breakdown(plan: DemonstrationPlan, hours: Mapping[str, Sequence[DeviceHour]]) -> Breakdown:
    """``hours`` per device in scope, as ``kpi_engine.evaluation.evaluate`` takes them."""
    accounted = AccountedHours(plan, hours)
    zone = plan.calendar.zone
    rules = {device: DeviceRules.of(plan, device) for device in plan.devices}
    by_day: dict[tuple[dt.date, Phase], list[Components]] = defaultdict(list)
    phases: dict[Phase, PhaseBreakdown] = {}
    treated = set(plan.treated_devices)  # a control line's devices are never the line's days or downtime
    for phase in Phase:
        windows = plan.windows_of(phase)
        histogram = LogHistogram()
        downtime: dict[DowntimeCause, float] = defaultdict(float)
        for window in windows:
            histogram.merge(accounted.cycle_times(window, plan.output_devices).histogram)
            for device, device_hours in accounted.by_device.items():
                if device not in treated:
                    continue
                for index in device_hours.in_window(window):
                    hour = device_hours.hours[index]
                    day = dt.datetime.fromtimestamp(hour.start_ms / 1000, zone).date()
                    by_day[(day, phase)].append(Components.from_vector(device_hours.matrix[index].tolist()))
                    lost = downtime_by_cause(hour, rules[device], accounted.shifts[hour.start_ms])
                    for cause, seconds in lost.items():
                        downtime[cause] += seconds
        phase_days = [parts for (_, p), parts in by_day.items() if p is phase]
        phases[phase] = PhaseBreakdown(total(total(parts) for parts in phase_days), histogram, dict(downtime))
    order = list(Phase)
    days = [
        DayComponents(day, phase, total(parts))
        for (day, phase), parts in sorted(by_day.items(), key=lambda item: (item[0][0], order.index(item[0][1])))
    ]
    return Breakdown(days, phases)
