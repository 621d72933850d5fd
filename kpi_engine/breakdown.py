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

import numpy as np

from kpi_engine.evaluation import AccountedHours, StoredDevice
from pilot_core.demonstration import DemonstrationPlan, Phase
from pilot_core.device_hours import DeviceHour, DeviceRules, DowntimeCause, downtime_by_cause
from pilot_core.histogram import LogHistogram
from pilot_core.kpi import COMPONENT_NAMES, Components, total


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


def stored_breakdown(plan: DemonstrationPlan, accounted: AccountedHours) -> Breakdown:
    """``breakdown`` from hours accounted from stored days (``AccountedHours.of_stored``), no device-hour decoded:
    the same Breakdown to the last bit. Every sum adds the same numbers in the same order as ``breakdown``'s
    (np.add.at adds its rows one after the other), and dicts are filled in the order it fills them."""
    treated = set(plan.treated_devices)
    devices: list[StoredDevice] = []
    for device, hours in accounted.by_device.items():  # in the order breakdown goes through them
        if device in treated:
            if not isinstance(hours, StoredDevice):
                raise TypeError("stored_breakdown takes hours accounted from stored days; breakdown takes the others")
            devices.append(hours)
    # Each hour's local calendar day, worked out once per hour start rather than per device-hour.
    every = np.unique(np.concatenate([np.zeros(0, dtype=np.int64), *(d.starts for d in devices)]))
    zone = plan.calendar.zone
    local = [dt.datetime.fromtimestamp(start / 1000, zone).date() for start in every.tolist()]
    dates = sorted(set(local))
    day_of = np.array(_positions(local, dates), dtype=np.intp)
    causes: dict[DowntimeCause, int] = {}  # every device's causes, numbered alike
    cause_numbers = [
        np.array([causes.setdefault(c, len(causes)) for c in d.downtime.causes], dtype=np.intp) for d in devices
    ]
    cause_list = list(causes)
    phases: dict[Phase, PhaseBreakdown] = {}
    days: list[tuple[dt.date, int, Components]] = []
    for order, phase in enumerate(Phase):
        histogram = LogHistogram()
        sums = np.zeros((len(dates), len(COMPONENT_NAMES)))
        seen: list[np.ndarray] = [np.zeros(0, dtype=np.intp)]  # the days in the order hours fall in them
        lost: list[np.ndarray] = [np.zeros(0, dtype=np.intp)]
        lost_s: list[np.ndarray] = [np.zeros(0)]
        for window in plan.windows_of(phase):
            histogram.merge(accounted.cycle_times(window, plan.output_devices).histogram)
            for hours, numbers in zip(devices, cause_numbers, strict=True):
                rows = hours.in_window(window)
                day = day_of[np.searchsorted(every, hours.starts[rows])]
                np.add.at(sums, day, hours.matrix[rows])
                seen.append(day)
                picked = np.isin(hours.downtime.rows, rows)  # in the order of the hours, each hour's in its order
                lost.append(numbers[hours.downtime.cause[picked]])
                lost_s.append(hours.downtime.seconds[picked])
        phase_days = _first_seen(np.concatenate(seen))
        day_components = {d: Components.from_vector(sums[d].tolist()) for d in phase_days}
        days.extend((dates[d], order, c) for d, c in day_components.items())
        lost_by_cause = np.zeros(len(cause_list))
        every_lost = np.concatenate(lost)
        np.add.at(lost_by_cause, every_lost, np.concatenate(lost_s))
        downtime = {cause_list[c]: float(lost_by_cause[c]) for c in _first_seen(every_lost)}
        phases[phase] = PhaseBreakdown(total(day_components.values()), histogram, downtime)
    days.sort(key=lambda item: (item[0], item[1]))
    order_of = list(Phase)
    return Breakdown([DayComponents(day, order_of[order], c) for day, order, c in days], phases)


def _positions(values: list[dt.date], ordered: list[dt.date]) -> list[int]:
    position = {value: index for index, value in enumerate(ordered)}
    return [position[v] for v in values]


def _first_seen(values: np.ndarray) -> list[int]:
    """The distinct values in the order they first occur."""
    distinct, first = np.unique(values, return_index=True)
    return distinct[np.argsort(first, kind="stable")].tolist()
