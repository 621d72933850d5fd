"""A deterministic model of a production line, and the messages its devices publish.

Pure: no clock, no network. For a scenario, a behaviour and a time span it
builds each station's state timeline and cycles (shift calendar, setups,
faults, minor stops, autocorrelated cycle times, scrap and rework, energy),
then renders what the devices would publish under contract v1. The same
seed gives the same messages, byte for byte.
"""

from __future__ import annotations

import bisect
import datetime as dt
import heapq
import json
import math
import zlib
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field
from itertools import islice
from typing import Any

import numpy as np

from pilot_core.calendar import Calendar
from pilot_core.contract import Channel, TimeClass, topic_for
from pilot_core.profiles import DeviceProfile, Metric, MetricType, ProductionMode, ProfileCatalog
from simulators.scenario import AMBIENT_C, Behaviour, Period, Product, Role, Scenario, ScenarioDevice, role_of

AGENT_VERSION = "pilot-sim/1"
_MS_PER_S = 1000
_MS_PER_MIN = 60_000


@dataclass(frozen=True, slots=True)
class StateInterval:
    start_ms: int
    end_ms: int
    state: str
    time_class: TimeClass
    reason: str | None = None


@dataclass(frozen=True, slots=True)
class Cycle:
    end_ms: int
    product: str
    produced: int
    good: int
    scrap: int
    rework: int
    cycle_time_s: float | None
    ideal_time_s: float  # PRU × produced, for effectiveness


@dataclass
class StationRun:
    """What one station did over a span: the ground truth its messages describe."""

    device: ScenarioDevice
    profile: DeviceProfile
    behaviour: Behaviour
    intervals: list[StateInterval] = field(default_factory=list)
    cycles: list[Cycle] = field(default_factory=list)
    faults: int = 0
    minor_stops: int = 0
    setups: int = 0

    def time_by_class(self) -> dict[str, int]:
        totals = {c.value: 0 for c in TimeClass}
        for interval in self.intervals:
            totals[interval.time_class.value] += interval.end_ms - interval.start_ms
        return totals

    def power_kw(self, interval: StateInterval) -> float:
        if interval.time_class is TimeClass.PRODUCTION:
            return self.behaviour.running_kw
        if interval.time_class is TimeClass.PLANNED_DOWNTIME:
            return self.behaviour.off_kw
        return self.behaviour.idle_kw

    def energy_kwh_until(self, t_ms: int) -> float:
        """Energy drawn from the start of the run until ``t_ms``."""
        starts = self._starts()
        index = bisect.bisect_right(starts, t_ms) - 1
        if index < 0:
            return 0.0
        cumulative = self._cumulative()
        interval = self.intervals[index]
        partial_h = (min(t_ms, interval.end_ms) - interval.start_ms) / 3_600_000
        return cumulative[index] + self.power_kw(interval) * partial_h

    def interval_at(self, t_ms: int) -> StateInterval | None:
        index = bisect.bisect_right(self._starts(), t_ms) - 1
        return self.intervals[index] if index >= 0 and t_ms < self.intervals[index].end_ms else None

    def _starts(self) -> list[int]:
        cached: list[int] | None = self.__dict__.get("_starts_cache")
        if cached is None or len(cached) != len(self.intervals):
            cached = [i.start_ms for i in self.intervals]
            self.__dict__["_starts_cache"] = cached
        return cached

    def _cumulative(self) -> list[float]:
        cached: list[float] | None = self.__dict__.get("_energy_cache")
        if cached is None or len(cached) != len(self.intervals):
            cached, total = [], 0.0
            for interval in self.intervals:
                cached.append(total)
                total += self.power_kw(interval) * (interval.end_ms - interval.start_ms) / 3_600_000
            self.__dict__["_energy_cache"] = cached
        return cached


@dataclass
class LineRun:
    """A simulated span of the whole line."""

    scenario: Scenario
    period: str
    behaviour_name: str
    start_ms: int
    end_ms: int
    stations: dict[str, StationRun]

    def metered(self, control: bool = False) -> list[StationRun]:
        """The stations a meter meters: the line's, or the control line's (a meter among the control devices)."""
        chosen = set(self.scenario.control_devices)
        return [s for device, s in self.stations.items() if (device in chosen) is control]

    def line_energy_kwh(self, t_ms: int | None = None, control: bool = False) -> float:
        t = self.end_ms if t_ms is None else t_ms
        stations = self.metered(control)
        total = sum(s.energy_kwh_until(t) for s in stations)
        cooling = sum(s.behaviour.cooling_kw_per_c for s in stations)
        return total + cooling * self._weather_kwh_until(t) if cooling else total

    def line_power_kw(self, t_ms: int, control: bool = False) -> float:
        total = 0.0
        for station in self.metered(control):
            interval = station.interval_at(t_ms)
            if interval is not None:
                total += station.power_kw(interval)
            total += station.behaviour.cooling_kw_per_c * self._weather_kw(t_ms)
        return total

    @property
    def period_spec(self) -> Period | None:
        return next((p for p in self.scenario.periods if p.name == self.period), None)

    def ambient_c_at(self, t_ms: int) -> float:
        """The ambient temperature at ``t_ms``: the period's, with its ramp and daily swing."""
        period = self.period_spec
        if period is None:
            return AMBIENT_C
        if not period.weather_varies:
            return period.ambient_c
        local = dt.datetime.fromtimestamp(t_ms / 1000, self.scenario.calendar.zone)
        fraction = (t_ms - self.start_ms) / (self.end_ms - self.start_ms)
        return period.ambient_at(fraction, local.hour + local.minute / 60 + local.second / 3600)

    def _weather_kw(self, t_ms: int) -> float:
        """Cooling per kW/°C beyond what the period's behaviour already draws at its ambient_c: the weather's
        ramp and swing (a station draws cooling_kw_per_c per °C above 22 °C)."""
        period = self.period_spec
        if period is None or not period.weather_varies:
            return 0.0
        return max(0.0, self.ambient_c_at(t_ms) - AMBIENT_C) - max(0.0, period.ambient_c - AMBIENT_C)

    def _weather_kwh_until(self, t_ms: int) -> float:
        """The integral of ``_weather_kw`` from the start, on a minute grid (the meter and truth.json both read it)."""
        period = self.period_spec
        if period is None or not period.weather_varies or t_ms <= self.start_ms:
            return 0.0
        cumulative: np.ndarray | None = self.__dict__.get("_weather_cache")
        if cumulative is None:
            minutes = range(self.start_ms, self.end_ms, _MS_PER_MIN)
            power = np.array([self._weather_kw(t + _MS_PER_MIN // 2) for t in minutes])
            cumulative = np.concatenate([[0.0], np.cumsum(power) / 60])
            self.__dict__["_weather_cache"] = cumulative
        elapsed = (min(t_ms, self.end_ms) - self.start_ms) / _MS_PER_MIN
        whole = min(int(elapsed), len(cumulative) - 1)
        partial = cumulative[min(whole + 1, len(cumulative) - 1)] - cumulative[whole]
        return float(cumulative[whole] + partial * (elapsed - whole))

    def running_share(self, t_ms: int) -> float:
        if not self.stations:
            return 0.0
        running = sum(
            1
            for s in self.stations.values()
            if (i := s.interval_at(t_ms)) is not None and i.time_class is TimeClass.PRODUCTION
        )
        return running / len(self.stations)


def stable_seed(*parts: object) -> list[int]:
    """Seed material that is the same on every run and machine (hash() is salted per process)."""
    return [zlib.crc32(str(part).encode("utf-8")) for part in parts]


def to_ms(moment: dt.datetime) -> int:
    return int(moment.timestamp() * 1000)


class LineModel:
    def __init__(self, scenario: Scenario, catalog: ProfileCatalog) -> None:
        self.scenario = scenario
        self.catalog = catalog

    def simulate_period(self, period_name: str) -> LineRun:
        period = self.scenario.period(period_name)
        zone = self.scenario.calendar.zone
        start = to_ms(dt.datetime.combine(period.start, dt.time(), zone))
        end = to_ms(dt.datetime.combine(period.end, dt.time(), zone))
        return self.simulate(period.behaviour, start, end, period_name)

    def simulate(self, behaviour_name: str, start_ms: int, end_ms: int, period_name: str = "") -> LineRun:
        if end_ms <= start_ms:
            raise ValueError("the span to simulate must end after it starts")
        period = next((p for p in self.scenario.periods if p.name == period_name), None)
        windows = list(self._shift_windows(start_ms, end_ms, period.calendar if period else None))
        # One product per shift for the whole line, as a serial cell runs: every station works the same order.
        rng = np.random.default_rng(stable_seed(self.scenario.seed, period_name or start_ms, "products"))
        mix = self.scenario.products_in(period)
        products = [_pick_product(mix, rng) for _ in windows]

        def loaded_until(w0: int, w1: int) -> int:
            """Where a busy window's orders run out: the period's demand there (the line idles after)."""
            if period is None or (period.demand == 1 and period.demand_ramp_pct <= 0):
                return w1
            return w0 + round(period.demand_at((w0 - start_ms) / (end_ms - start_ms)) * (w1 - w0))

        stations = {}
        for device in self.scenario.devices:
            if role_of(device, self.catalog) is Role.STATION:
                rng = np.random.default_rng(
                    stable_seed(self.scenario.seed, device.id, period_name or start_ms, "station")
                )
                stations[device.id] = _simulate_station(
                    device,
                    self.catalog[device.profile],
                    self.scenario.behaviour_of(device.id, behaviour_name, period),
                    products,
                    windows,
                    start_ms,
                    end_ms,
                    rng,
                    loaded_until,
                )
        return LineRun(self.scenario, period_name, behaviour_name, start_ms, end_ms, stations)

    def _shift_windows(
        self, start_ms: int, end_ms: int, calendar: Calendar | None = None
    ) -> Iterator[tuple[int, list[tuple[int, int]]]]:
        """Per shift: its start and its planned busy windows (shift minus breaks and planned stops), by the
        period's calendar where it has one."""
        for shift in (calendar or self.scenario.calendar).shifts_between(start_ms, end_ms):
            if shift.busy:
                yield shift.scheduled_start_ms, shift.busy


def _state_for(profile: DeviceProfile, time_class: TimeClass, rng: np.random.Generator | None = None) -> str | None:
    names = [s.name for s in profile.states if s.time_class is time_class]
    if not names:
        return None
    return names[int(rng.integers(len(names)))] if rng is not None and len(names) > 1 else names[0]


def _pick_product(products: list[Product], rng: np.random.Generator) -> Product:
    weights = np.array([p.share for p in products])
    return products[int(rng.choice(len(products), p=weights / weights.sum()))]


def _simulate_station(
    device: ScenarioDevice,
    profile: DeviceProfile,
    behaviour: Behaviour,
    products: list[Product],  # each shift's
    shifts: list[tuple[int, list[tuple[int, int]]]],
    start_ms: int,
    end_ms: int,
    rng: np.random.Generator,
    loaded_until: Callable[[int, int], int] = lambda w0, w1: w1,
) -> StationRun:
    simulator = _StationSimulator(StationRun(device, profile, behaviour), rng, start_ms)
    for product, (shift_start, windows) in zip(products, shifts, strict=True):
        for index, (w0, w1) in enumerate(windows):
            loaded = loaded_until(w0, w1)
            simulator.work(product, w0, w1, changeover=index == 0 and w0 == shift_start, loaded_until=loaded)
    simulator.add(simulator.t, end_ms, simulator.off_state)
    run = simulator.run
    if profile.production.mode is ProductionMode.COUNT:
        run.cycles = _counts(run.cycles, device.count_interval_s, start_ms, end_ms)
    return run


class _StationSimulator:
    """Walks one station through its planned busy windows, cycle by cycle."""

    def __init__(self, run: StationRun, rng: np.random.Generator, start_ms: int) -> None:
        profile, behaviour = run.profile, run.behaviour
        self.run, self.rng, self.t = run, rng, start_ms
        off_state = _state_for(profile, TimeClass.PLANNED_DOWNTIME) or _state_for(profile, TimeClass.IDLE)
        running = _state_for(profile, TimeClass.PRODUCTION)
        if off_state is None or running is None:
            raise ValueError(f"profile {profile.id} needs a production state and a planned-downtime or idle state")
        self.off_state, self.running = off_state, running
        self.idle = _state_for(profile, TimeClass.IDLE) or off_state
        self.setup_state = _state_for(profile, TimeClass.SETUP)
        self.fault_state = _state_for(profile, TimeClass.UNPLANNED_DELAY)
        self.sigma = math.sqrt(math.log(1 + behaviour.cycle_time_cv**2))
        self.noise = 0.0
        rate = behaviour.minor_stops_per_hour
        self.minor_gap_min = 60 / rate if rate else math.inf
        # Faults and minor stops arrive in running time, not wall time: an idle machine does not wear.
        self.until_fault_ms = rng.exponential(behaviour.mtbf_min) * _MS_PER_MIN
        self.until_minor_ms = rng.exponential(self.minor_gap_min) * _MS_PER_MIN

    def add(self, start: int, end: int, state: str, reason: str | None = None) -> None:
        if end <= start:
            return
        time_class = self.run.profile.state(state).time_class  # type: ignore[union-attr]
        intervals = self.run.intervals
        last = intervals[-1] if intervals else None
        if last is not None and last.state == state and last.reason == reason and last.end_ms == start:
            intervals[-1] = StateInterval(last.start_ms, end, state, time_class, reason)
        else:
            intervals.append(StateInterval(start, end, state, time_class, reason))

    def hold(self, duration_ms: int, until: int, state: str, reason: str | None = None) -> None:
        end = min(until, self.t + duration_ms)
        self.add(self.t, end, state, reason)
        self.t = end

    def work(self, product: Product, w0: int, w1: int, *, changeover: bool, loaded_until: int | None = None) -> None:
        """Work a busy window: orders until ``loaded_until`` (default: the whole window), then idle for want of them."""
        behaviour, rng = self.run.behaviour, self.rng
        loaded = w1 if loaded_until is None else min(w1, loaded_until)
        self.add(self.t, w0, self.off_state)
        self.t = w0
        if changeover and self.setup_state and behaviour.setup_min:
            self.hold(round(behaviour.setup_min * _MS_PER_MIN), w1, self.setup_state, f"changeover to {product.id}")
            self.run.setups += 1
        while self.t < loaded:
            if self.until_fault_ms <= 0 and self.fault_state:
                repair = max(_MS_PER_MIN, round(rng.exponential(behaviour.mttr_min) * _MS_PER_MIN))
                self.hold(repair, w1, self.fault_state, f"E{int(rng.integers(100, 999))}")
                self.run.faults += 1
                self.until_fault_ms = rng.exponential(behaviour.mtbf_min) * _MS_PER_MIN
            elif self.until_minor_ms <= 0:
                stop = max(_MS_PER_S, round(rng.exponential(behaviour.minor_stop_s) * _MS_PER_S))
                self.hold(stop, w1, _state_for(self.run.profile, TimeClass.MINOR_STOP, rng) or self.idle)
                self.run.minor_stops += 1
                self.until_minor_ms = rng.exponential(self.minor_gap_min) * _MS_PER_MIN
            elif not self.cycle(product, w1):
                self.hold(w1 - self.t, w1, self.idle, "no time to finish a cycle before the stop")
        if self.t < w1:
            self.hold(w1 - self.t, w1, self.idle, "no orders")

    def cycle(self, product: Product, w1: int) -> bool:
        """Run one cycle if it can finish before ``w1``."""
        behaviour, device, rng = self.run.behaviour, self.run.device, self.rng
        ideal_s = product.ideal_cycle_time_s * device.ideal_cycle_factor
        # AR(1) noise on log cycle time, mean-corrected so the mean stays ideal × speed factor.
        phi = behaviour.cycle_time_ar1
        self.noise = phi * self.noise + math.sqrt(1 - phi**2) * self.sigma * rng.standard_normal()
        cycle_ms = max(
            1, round(ideal_s * behaviour.speed_factor * _MS_PER_S * math.exp(self.noise - self.sigma**2 / 2))
        )
        if self.t + cycle_ms > w1:
            return False
        self.add(self.t, self.t + cycle_ms, self.running)
        self.t += cycle_ms
        self.until_fault_ms -= cycle_ms
        self.until_minor_ms -= cycle_ms
        units = device.units_per_cycle
        good_rate = 1 - behaviour.scrap_rate - behaviour.rework_rate
        scrap, rework, good = (
            int(x) for x in rng.multinomial(units, [behaviour.scrap_rate, behaviour.rework_rate, good_rate])
        )
        count_mode = self.run.profile.production.mode is ProductionMode.COUNT
        cycle_time_s = None if count_mode else cycle_ms / _MS_PER_S
        # ideal_s is the ideal time of the whole cycle, however many units it makes.
        self.run.cycles.append(Cycle(self.t, product.id, units, good, scrap, rework, cycle_time_s, ideal_s))
        return True


def _counts(cycles: list[Cycle], interval_s: float, start_ms: int, end_ms: int) -> list[Cycle]:
    """Count-mode devices report totals per interval, stamped at the interval's end."""
    step = round(interval_s * _MS_PER_S)
    buckets: dict[tuple[int, str], list[Cycle]] = {}
    for cycle in cycles:
        bucket_end = min(end_ms, start_ms + ((cycle.end_ms - start_ms - 1) // step + 1) * step)
        buckets.setdefault((bucket_end, cycle.product), []).append(cycle)
    return [
        Cycle(
            end,
            product,
            sum(c.produced for c in group),
            sum(c.good for c in group),
            sum(c.scrap for c in group),
            sum(c.rework for c in group),
            None,
            sum(c.ideal_time_s for c in group),
        )
        for (end, product), group in sorted(buckets.items())
    ]


# --- rendering messages --------------------------------------------------------


@dataclass(frozen=True, slots=True)
class SimMessage:
    topic: str
    payload: bytes
    ts_ms: int  # the first record's time: publishing order in real time
    device: str
    channel: Channel
    records: int


class SeqCounters:
    """Per (device, channel) seq, carried across spans so that a device's seq keeps growing."""

    def __init__(self) -> None:
        self._next: dict[tuple[str, Channel], int] = {}

    def take(self, device: str, channel: Channel) -> int:
        key = (device, channel)
        value = self._next.get(key, 0)
        self._next[key] = value + 1
        return value


def render(
    run: LineRun,
    catalog: ProfileCatalog,
    *,
    batch_records: int = 100,
    telemetry_interval_s: float | None = None,
    seqs: SeqCounters | None = None,
) -> Iterator[SimMessage]:
    """Every message the line's devices publish over the run, in time order.

    ``batch_records`` > 1 packs consecutive records of one device and channel
    into batch messages, as an agent backfilling a buffer would.
    ``telemetry_interval_s`` None uses the scenario's interval.
    """
    scenario = run.scenario
    counters = seqs or SeqCounters()
    interval_ms = round((telemetry_interval_s or scenario.telemetry_interval_s) * _MS_PER_S)
    streams: list[Iterator[SimMessage]] = []
    for device in scenario.devices:
        profile = catalog[device.profile]
        role = role_of(device, catalog)
        station = run.stations.get(device.id)
        rng = np.random.default_rng(stable_seed(scenario.seed, device.id, run.period or run.start_ms, "telemetry"))
        records: dict[Channel, Iterable[tuple[int, dict[str, Any]]]] = {
            Channel.STATUS: [(run.start_ms, _status_record(profile, run.start_ms))],
            Channel.TELEMETRY: _telemetry(run, device, profile, role, station, interval_ms, rng),
        }
        if station is not None:
            records[Channel.STATE] = _state_records(station)
            records[Channel.PRODUCTION] = _production_records(station)
        for channel, stream in records.items():
            topic = topic_for(scenario.site, scenario.line, device.id, channel)
            streams.append(_messages(topic, device.id, channel, stream, batch_records, counters))
    return heapq.merge(*streams, key=lambda m: m.ts_ms)


def _messages(
    topic: str,
    device: str,
    channel: Channel,
    records: Iterable[tuple[int, dict[str, Any]]],
    batch_records: int,
    counters: SeqCounters,
) -> Iterator[SimMessage]:
    iterator = iter(records)
    while chunk := list(islice(iterator, batch_records)):
        seq = counters.take(device, channel)
        if len(chunk) == 1:
            body: dict[str, Any] = {"seq": seq, **chunk[0][1]}
        else:
            body = {"seq": seq, "batch": [record for _, record in chunk]}
        payload = json.dumps(body, ensure_ascii=False, separators=(",", ":")).encode("utf-8")
        yield SimMessage(topic, payload, chunk[0][0], device, channel, len(chunk))


def _status_record(profile: DeviceProfile, ts_ms: int) -> dict[str, Any]:
    return {
        "ts": ts_ms,
        "status": "online",
        "agent_version": AGENT_VERSION,
        "profile": profile.id,
        "profile_version": profile.version,
    }


def _state_records(station: StationRun) -> Iterator[tuple[int, dict[str, Any]]]:
    for interval in station.intervals:
        record: dict[str, Any] = {"ts": interval.start_ms, "state": interval.state}
        if interval.reason:
            record["reason"] = interval.reason
        yield interval.start_ms, record


def _production_records(station: StationRun) -> Iterator[tuple[int, dict[str, Any]]]:
    for cycle in station.cycles:
        record: dict[str, Any] = {
            "ts": cycle.end_ms,
            "product": cycle.product,
            "produced": cycle.produced,
            "good": cycle.good,
            "scrap": cycle.scrap,
            "rework": cycle.rework,
        }
        if cycle.cycle_time_s is not None:
            record["cycle_time_s"] = cycle.cycle_time_s
        yield cycle.end_ms, record


_LEVEL = {
    TimeClass.PRODUCTION: 0.6,
    TimeClass.SETUP: 0.2,
    TimeClass.MINOR_STOP: 0.1,
    TimeClass.IDLE: 0.1,
    TimeClass.UNPLANNED_DELAY: 0.05,
    TimeClass.PLANNED_DOWNTIME: 0.0,
}


def _telemetry(
    run: LineRun,
    device: ScenarioDevice,
    profile: DeviceProfile,
    role: Role,
    station: StationRun | None,
    interval_ms: int,
    rng: np.random.Generator,
) -> Iterator[tuple[int, dict[str, Any]]]:
    constants = {m.name: int(rng.integers(1, 50)) for m in profile.metrics if m.type is MetricType.INT}
    minor_stop_starts = (
        [i.start_ms for i in station.intervals if i.time_class is TimeClass.MINOR_STOP] if station else []
    )
    register_kwh = float(rng.integers(10_000, 90_000))
    for t in range(run.start_ms, run.end_ms, interval_ms):
        if role is Role.METER:
            values = _meter_values(run, t, register_kwh, rng, control=device.id in run.scenario.control_devices)
        else:
            if station is not None:
                interval = station.interval_at(t)
                time_class = interval.time_class if interval else TimeClass.PLANNED_DOWNTIME
                level = _LEVEL[time_class]
            else:
                time_class, level = TimeClass.PRODUCTION, 0.2 + 0.6 * run.running_share(t)
            stops = bisect.bisect_right(minor_stop_starts, t)
            values = {
                m.name: _metric_value(m, level, time_class, constants.get(m.name, 0), stops, rng, run.ambient_c_at(t))
                for m in profile.metrics
            }
        yield t, {"ts": t, "metrics": values}


def _metric_value(
    metric: Metric,
    level: float,
    time_class: TimeClass,
    constant: int,
    stops_so_far: int,
    rng: np.random.Generator,
    ambient_c: float = AMBIENT_C,
) -> bool | int | float:
    if metric.type is MetricType.BOOL:
        return time_class is TimeClass.MINOR_STOP
    if metric.type is MetricType.INT:
        # An int without a maximum is a counter (e.g. obstacle stops); the others are settings such as a program number.
        return constant + stops_so_far if metric.max is None else min(constant, int(metric.max))
    low = metric.min if metric.min is not None else 0.0
    high = metric.max if metric.max is not None else low + 100.0
    if metric.unit == "°C":
        value = ambient_c + 18.0 * level + rng.normal(0, 0.4)
    elif metric.unit in {"%RH"}:
        value = 45.0 + rng.normal(0, 2)
    else:
        value = low + (high - low) * level * (1 + rng.normal(0, 0.03))
    return round(min(high, max(low, float(value))), 3)


def _meter_values(
    run: LineRun, t_ms: int, register_kwh: float, rng: np.random.Generator, control: bool = False
) -> dict[str, bool | int | float]:
    power_kw = run.line_power_kw(t_ms, control)
    voltage = 380.0 + rng.normal(0, 1.5)
    power_factor = min(1.0, 0.92 + rng.normal(0, 0.01))
    current = power_kw * 1000 / (math.sqrt(3) * voltage * power_factor)
    return {
        # The register holds the exact integral of the stations' power: KPI work reads energy from it.
        "active_energy_kwh": round(register_kwh + run.line_energy_kwh(t_ms, control), 6),
        "active_power_kw": round(power_kw, 4),
        "voltage_v": round(voltage, 2),
        "current_a": round(current, 3),
        "power_factor": round(power_factor, 4),
    }


def simulate_periods(
    scenario: Scenario, catalog: ProfileCatalog, periods: Iterable[str] | None = None
) -> list[LineRun]:
    """The scenario's periods (all of them by default), simulated in order."""
    model = LineModel(scenario, catalog)
    names = list(periods) if periods is not None else [p.name for p in scenario.periods]
    return [model.simulate_period(name) for name in names]


def render_runs(runs: Iterable[LineRun], catalog: ProfileCatalog, *, batch_records: int = 100) -> Iterator[SimMessage]:
    """The messages of consecutive runs, seq continuing from one run to the next."""
    seqs = SeqCounters()
    for run in runs:
        yield from render(run, catalog, batch_records=batch_records, seqs=seqs)
