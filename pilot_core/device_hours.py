"""What one device did in one hour, condensed from its stored points.

A device-hour keeps only what KPIs need and no plan decisions: the state
changes (few per hour), production summed per product, a cycle-time
histogram, the energy used, and the counts that show coverage. Hours are
built once from InfluxDB and stored; any plan version can then be applied
to them (``account``) without reading raw points again.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, NamedTuple

import msgspec

from pilot_core.calendar import Shift
from pilot_core.contract import TimeClass
from pilot_core.demonstration import CountCorrection, DemonstrationPlan, StateCorrection
from pilot_core.histogram import LogHistogram
from pilot_core.kpi import Components
from pilot_core.time_accounting import (
    NO_SHIFTS,
    BucketAccount,
    BucketCalendar,
    ProductionTotals,
    StateChange,
    account_bucket,
    bucket_vector,
)

HOUR_MS = 3_600_000
# An hour with at most this many cycles (one per 10 s) keeps every cycle's time, so percentiles over few cycles
# are exact; beyond it only the histogram is kept (accurate to its relative accuracy), as hours stay small.
EXACT_CYCLE_TIMES_PER_HOUR = 360
# The state of a corrected stretch: not a name a profile can give (they are lower-case words), so no plan
# override applies to it: the correction says its time class.
CORRECTED_STATE = "(corrected)"


# Device-hours and their parts are structs the garbage collector does not track (nothing in them leads back to
# them, so they are never in a cycle): a server keeps tens of thousands of decoded hours, and each full
# collection traverses every tracked object again, about as long as decoding them took. array_like: stored, and
# decoded, as the array of their fields.
class StateEvent(msgspec.Struct, array_like=True, frozen=True, order=True, gc=False):
    ts_ms: int
    state: str | None  # None: the device went offline, so its state is unknown
    time_class: TimeClass | None  # as the device's profile mapped it when stored
    reason: str | None = None  # why, as the device said (a fault code, a changeover's product)


class SeqSpan(msgspec.Struct, array_like=True, frozen=True, gc=False):
    """Messages seen on one channel and the range of their seq: the gaps are the difference."""

    received: int
    first: int
    last: int


class DeviceHour(msgspec.Struct, gc=False):
    device: str
    start_ms: int
    machine: bool = True  # False for meters and sensors: no states, so no share of the time model
    state_at_start: StateEvent | None = None
    events: list[StateEvent] = msgspec.field(default_factory=list)
    production: dict[str, ProductionTotals] = msgspec.field(default_factory=dict)
    cycle_times: LogHistogram = msgspec.field(default_factory=LogHistogram)
    energy_kwh: float = 0.0
    telemetry_points: int = 0
    seq: dict[str, SeqSpan] = msgspec.field(default_factory=dict)
    # Every positive cycle time, in arrival order, when the hour had at most EXACT_CYCLE_TIMES_PER_HOUR of them
    # (then as many as the histogram counts); empty otherwise.
    cycle_time_values: list[float] = msgspec.field(default_factory=list)
    ambient_c: float | None = None  # on an environment sensor: the mean of the hour's ambient temperatures (°C)

    @property
    def has_exact_cycle_times(self) -> bool:
        return len(self.cycle_time_values) == self.cycle_times.total

    @property
    def end_ms(self) -> int:
        return self.start_ms + HOUR_MS

    def to_json(self) -> dict[str, Any]:
        """Plain JSON, compact: a month of a line is tens of thousands of these, decoded per evaluation."""
        histogram = sorted(self.cycle_times.counts.items())
        return {
            "device": self.device,
            "start_ms": self.start_ms,
            "machine": self.machine,
            "state_at_start": _event_json(self.state_at_start),
            "events": [_event_json(e) for e in self.events],
            "production": {
                k: [v.produced, v.good, v.scrap, v.rework, v.cycle_time_s, v.cycles] for k, v in self.production.items()
            },
            "cycle_times": [[i for i, _ in histogram], [c for _, c in histogram]],
            "energy_kwh": self.energy_kwh,
            "telemetry_points": self.telemetry_points,
            "seq": {k: [v.received, v.first, v.last] for k, v in self.seq.items()},
            # Only when there are some: an hour without them keeps the JSON, and the fingerprint, it had before.
            **({"cycle_time_values": self.cycle_time_values} if self.cycle_time_values else {}),
            **({"ambient_c": self.ambient_c} if self.ambient_c is not None else {}),  # likewise
        }

    @classmethod
    def decode(cls, text: str | bytes) -> DeviceHour:
        """The hour from its stored text (``to_json`` as JSON), as ``from_json`` reads it, but decoded straight
        into typed values, with no dicts and lists in between. Text not of exactly that form goes the general way."""
        try:
            stored = _STORED_HOUR.decode(text)
        except msgspec.ValidationError:
            return cls.from_json(msgspec.json.decode(text))
        indices, counts = stored.cycle_times
        return cls(
            stored.device,
            stored.start_ms,
            stored.machine,
            stored.state_at_start,
            stored.events,
            stored.production,
            LogHistogram(counts=dict(zip(indices, counts, strict=True))),
            stored.energy_kwh,
            stored.telemetry_points,
            stored.seq,
            stored.cycle_time_values,
            stored.ambient_c,
        )

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> DeviceHour:
        indices, counts = data["cycle_times"]
        return cls(
            device=data["device"],
            start_ms=data["start_ms"],
            machine=data["machine"],
            state_at_start=_event(data["state_at_start"]),
            events=[e for e in map(_event, data["events"]) if e is not None],
            production={k: ProductionTotals(*v) for k, v in data["production"].items()},
            cycle_times=LogHistogram(counts=dict(zip(indices, counts, strict=True))),
            energy_kwh=data["energy_kwh"],
            telemetry_points=data["telemetry_points"],
            seq={k: SeqSpan(*v) for k, v in data["seq"].items()},
            cycle_time_values=[float(v) for v in data.get("cycle_time_values", [])],
            ambient_c=None if data.get("ambient_c") is None else float(data["ambient_c"]),
        )


class _StoredHour(msgspec.Struct, gc=False):
    """``DeviceHour.to_json`` as stored; a time class must be a known one (the general reader also takes an empty
    one as none), counts must be integers. Energy and cycle-time sums stored as integers read as floats."""

    device: str
    start_ms: int
    machine: bool
    state_at_start: StateEvent | None
    events: list[StateEvent]
    production: dict[str, ProductionTotals]
    cycle_times: tuple[list[int], list[int]]
    energy_kwh: float
    telemetry_points: int
    seq: dict[str, SeqSpan]
    cycle_time_values: list[float] = []
    ambient_c: float | None = None


_STORED_HOUR = msgspec.json.Decoder(_StoredHour)


def _event_json(event: StateEvent | None) -> list[Any] | None:
    if event is None:
        return None
    stored = [event.ts_ms, event.state, event.time_class.value if event.time_class else None]
    # The reason only when there is one: an hour without reasons keeps the JSON, and so the
    # content fingerprint, it had before reasons were read.
    return stored if event.reason is None else [*stored, event.reason]


_TIME_CLASSES = {c.value: c for c in TimeClass}


def _event(data: list[Any] | None) -> StateEvent | None:
    if data is None:
        return None
    ts, state, time_class, *reason = data
    return StateEvent(ts, state, _TIME_CLASSES[time_class] if time_class else None, *reason)


@dataclass(frozen=True, slots=True)
class DeviceRules:
    """What a plan decides for one device, worked out once rather than per hour."""

    device: str
    overrides: dict[str, TimeClass]  # state → the time class the plan gives it instead of the profile's
    ideal_cycle_time_s: dict[str, float]
    is_meter: bool
    is_output: bool

    @classmethod
    def of(cls, plan: DemonstrationPlan, device: str) -> DeviceRules:
        overrides: dict[str, TimeClass] = {}
        for override in plan.state_overrides:
            if override.device in (None, device):
                overrides.setdefault(override.state, override.time_class)  # the first that matches wins
        # A control line's meters and output stations are accounted as such too; its sums stay apart from the line's.
        control = plan.control_line
        return cls(
            device,
            overrides,
            plan.ideal_cycle_times(device),
            device in plan.energy_meters or (control is not None and device in control.energy_meters),
            device in plan.output_devices or (control is not None and device in control.output_devices),
        )

    def key(self) -> tuple[Any, ...]:
        """Everything accounting an hour depends on in these rules, hashable: equal keys account alike."""
        return (
            self.device,
            tuple(self.overrides.items()),
            tuple(self.ideal_cycle_time_s.items()),
            self.is_meter,
            self.is_output,
        )

    def time_class(self, event: StateEvent | None) -> TimeClass | None:
        if event is None or event.state is None or event.time_class is None:
            return None
        if event.state == CORRECTED_STATE:
            return event.time_class
        return self.overrides.get(event.state, event.time_class)


class CorrectionOutOfRange(ValueError):
    """A count correction takes its hour's count below zero: it was put in the wrong hour, device or product."""


def corrected(hour: DeviceHour, corrections: Sequence[StateCorrection | CountCorrection]) -> DeviceHour:
    """The hour as the plan's data corrections for its device say it was; ``hour`` itself is not changed.

    A state correction replaces the recorded states over its stretch with one of its own (state
    ``CORRECTED_STATE``, its reason as the reason) and puts back, where it ends, the state recorded then. A
    count correction adds its counts to the hour that holds its moment.
    """
    events, at_start, production = hour.events, hour.state_at_start, hour.production
    for correction in corrections:
        if isinstance(correction, CountCorrection):
            at = int(correction.at.timestamp() * 1000)
            if hour.start_ms <= at < hour.end_ms:
                before = production.get(correction.product, ProductionTotals())
                after = ProductionTotals(
                    before.produced + correction.produced,
                    before.good + correction.good,
                    before.scrap + correction.scrap,
                    before.rework + correction.rework,
                    before.cycle_time_s,
                    before.cycles,
                )
                _check_counts(hour, correction, after)
                production = {**production, correction.product: after}
            continue
        low = max(int(correction.start.timestamp() * 1000), hour.start_ms)
        high = min(int(correction.end.timestamp() * 1000), hour.end_ms)
        if low >= high:
            continue
        mark = StateEvent(low, CORRECTED_STATE, correction.time_class, correction.reason)
        in_force_at_high = at_start
        for event in events:
            if event.ts_ms <= high:
                in_force_at_high = event
        kept = [e for e in events if not low <= e.ts_ms < high]
        if low == hour.start_ms:
            at_start, added = mark, []
        else:
            added = [mark]
        if high < hour.end_ms and not any(e.ts_ms == high for e in kept):
            # Unknown before the stretch stays unknown after it.
            restored = in_force_at_high or StateEvent(high, None, None)
            added.append(msgspec.structs.replace(restored, ts_ms=high))
        events = sorted([*kept, *added], key=lambda e: e.ts_ms)
    if events is hour.events and at_start is hour.state_at_start and production is hour.production:
        return hour
    return msgspec.structs.replace(hour, state_at_start=at_start, events=events, production=production)


def _check_counts(hour: DeviceHour, correction: CountCorrection, after: ProductionTotals) -> None:
    for name in ("produced", "good", "scrap", "rework"):
        count = getattr(after, name)
        if count < 0:
            raise CorrectionOutOfRange(
                f"the count correction {correction.reason!r} of device {hour.device!r} at {correction.at.isoformat()}"
                f" takes the {name} count of product {correction.product!r} below zero ({count:,}) in the hour it"
                f" falls in, which recorded {count - getattr(correction, name):,}: a correction changes the units"
                " its hour recorded; check its at, device and product"
            )


def account(hour: DeviceHour, rules: DeviceRules, shifts: Sequence[Shift]) -> BucketAccount:
    """The hour's KPI components under a plan's rules for its device: calendar, states, ideal times, roles."""
    vector, missing = account_vector(hour, rules, BucketCalendar.of(hour.start_ms, hour.end_ms, shifts))
    return BucketAccount(Components(*vector), missing)


def account_vector(
    hour: DeviceHour, rules: DeviceRules, calendar: BucketCalendar
) -> tuple[tuple[float, ...], set[str]]:
    """``account`` as a vector in ``COMPONENT_NAMES`` order, and the products without an ideal cycle time;
    ``calendar`` is the hour's (``BucketCalendar.of`` its shifts), shared by every device."""
    time_class = rules.time_class
    return bucket_vector(
        hour.start_ms,
        hour.end_ms,
        calendar if hour.machine else NO_SHIFTS,
        time_class(hour.state_at_start),
        [(e.ts_ms, time_class(e)) for e in hour.events],
        hour.production,
        rules.ideal_cycle_time_s,
        energy_kwh=hour.energy_kwh if rules.is_meter else 0.0,
        is_output=rules.is_output,
        is_meter=rules.is_meter,
    )


class DowntimeCause(NamedTuple):
    """Where planned busy time went instead of production: a time class, and the state and reason the device gave."""

    time_class: TimeClass | None  # None: no state was known (the device was silent or offline)
    state: str | None
    reason: str | None


# Planned busy time in these classes is time not producing; planned downtime is not busy time at all.
DOWNTIME_CLASSES = frozenset({TimeClass.SETUP, TimeClass.UNPLANNED_DELAY, TimeClass.MINOR_STOP, TimeClass.IDLE})
UNKNOWN_CAUSE = DowntimeCause(None, None, None)


def downtime_by_cause(hour: DeviceHour, rules: DeviceRules, shifts: Sequence[Shift]) -> dict[DowntimeCause, float]:
    """Seconds of the hour's planned busy time not spent producing, by cause.

    They add up to PBT − APT of ``account`` (setup + delays + idle + unknown): each cause's time is
    measured by the same accounting, with that cause as the only state that is not production.
    """
    if not hour.machine:
        return {}
    time_class = rules.time_class

    def cause_of(event: StateEvent | None) -> DowntimeCause | None:
        found = time_class(event)
        if found is None or event is None:
            return UNKNOWN_CAUSE
        return DowntimeCause(found, event.state, event.reason) if found in DOWNTIME_CLASSES else None

    unknown_s = account(hour, rules, shifts).components.unknown_s
    lost = {UNKNOWN_CAUSE: unknown_s} if unknown_s > 0 else {}
    events = [hour.state_at_start, *hour.events]
    causes = [cause_of(e) for e in events]
    for cause in dict.fromkeys(c for c in causes if c is not None and c != UNKNOWN_CAUSE):
        # The cause's own time shows as the only delay; every other known state counts as production.
        marked = [
            None if c == UNKNOWN_CAUSE else TimeClass.UNPLANNED_DELAY if c == cause else TimeClass.PRODUCTION
            for c in causes
        ]
        seconds = account_bucket(
            hour.start_ms,
            hour.end_ms,
            shifts,
            marked[0],
            [StateChange(e.ts_ms, m) for e, m in zip(hour.events, marked[1:], strict=True)],
            {},
            {},
        ).components.adet_s
        if seconds > 0:
            lost[cause] = seconds
    return lost
