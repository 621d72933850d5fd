"""Issue 23, plant scale: a comparison from stored accounted days equals ``evaluate`` on the device-hours, byte for
byte, whatever the plan asks (exclusions, product mix, control line, adjusted baseline, design, windows cutting
days, exact and histogram percentiles); the days are accounted once, and again only when their hours or the
plan's accounting change; a plan with data corrections is evaluated from its device-hours."""

from __future__ import annotations

import datetime as dt
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import msgspec
import numpy as np
from pydantic import TypeAdapter

from adapters.catalog import load_profiles
from adapters.influxdb import InfluxClient, InfluxSettings
from adapters.sql import Database, DemonstrationRepository, ResultCache, RollupRepository, default_url
from adapters.sql.models import rollup_accounts
from kpi_engine.breakdown import breakdown, stored_breakdown
from kpi_engine.evaluation import DemonstrationResult, evaluate, evaluate_accounted
from kpi_engine.service import HourStore, KpiService, plan_hours
from pilot_core.access import Actor
from pilot_core.accounted_days import (
    account_day,
    day_start,
    decode_day,
    encode,
    packed_vectors,
    unpacked_vectors,
)
from pilot_core.contract import TimeClass
from pilot_core.demonstration import DemonstrationPlan, Phase, plan_hash
from pilot_core.device_hours import HOUR_MS, DeviceHour, DeviceRules, SeqSpan, StateEvent, account_vector
from pilot_core.histogram import LogHistogram
from pilot_core.kpi import COMPONENT_NAMES
from pilot_core.registry import DeviceEntry, DeviceRegistry
from pilot_core.time_accounting import BucketCalendar, ProductionTotals
from tests.unit.test_adjustments import weather_plan, weathered_line

START = dt.datetime(2026, 10, 5, tzinfo=dt.timezone(dt.timedelta(hours=9)))  # a Monday, 00:00 in Seoul
START_MS = int(START.timestamp() * 1000)
DAY_MS = 24 * HOUR_MS
DEVICES = ["press", "press-3", "meter", "press-2"]
RESULT = TypeAdapter(DemonstrationResult)
INTERVALS = {"press": 60.0, "press-3": 60.0, "meter": 10.0, "press-2": 60.0}


def plant_plan(**changes: Any) -> DemonstrationPlan:
    """Every method the engine has, windows that start and end inside a day, an exclusion of part of a day."""
    document: dict[str, Any] = {
        "name": "plant",
        "site": "s",
        "line": "l",
        "devices": DEVICES,
        "output_devices": ["press"],
        "energy_meters": ["meter"],
        "calendar": {"timezone": "Asia/Seoul", "shifts": [{"start": "08:00", "end": "16:00"}]},
        "windows": [
            {
                "name": "before",
                "phase": "baseline",
                "start": START + dt.timedelta(hours=7),
                "end": START + dt.timedelta(days=6, hours=15),
            },
            {
                "name": "after",
                "phase": "pilot",
                "start": START + dt.timedelta(days=7, hours=3),
                "end": START + dt.timedelta(days=13, hours=10),
            },
        ],
        "exclusions": [
            {
                "start": START + dt.timedelta(days=2, hours=9),
                "end": START + dt.timedelta(days=2, hours=11, minutes=30),
                "reason": "power cut",
            },
            {
                "start": START + dt.timedelta(days=8),
                "end": START + dt.timedelta(days=9),
                "reason": "a trial",
                "devices": ["press-3"],
            },
        ],
        "products": [{"id": "P", "ideal_cycle_time_s": 20}],  # Q has none: a warning
        "targets": [
            {"kpi": "cycle_time_mean", "direction": "decrease", "change_pct": 5, "method": "control_line"},
            {"kpi": "energy_per_good_unit", "direction": "decrease", "change_pct": 5, "method": "adjusted_baseline"},
            {"kpi": "throughput_rate", "direction": "increase", "change_pct": 3},
        ],
        "control_line": {
            "devices": ["press-2"],
            "output_devices": ["press-2"],
            "independence": "separate cell, own operators and own material feed",
        },
        "adjusted_baseline": {"variables": ["production_volume", "shift_hours"], "reason": "volume and shifts"},
        "design": {"power": 0.8, "expected_change_pct": {"cycle_time_mean": 6}},
        "product_mix": True,
        "telemetry_interval_s": INTERVALS,
    }
    document.update(changes)
    return DemonstrationPlan.model_validate(document)


def station(device: str, days: range, cycle_s: float, rng: np.random.Generator, exact: bool) -> list[DeviceHour]:
    """A station in shift 08–16 making P and Q, a fault each afternoon, lost messages now and then."""
    hours = []
    seq = 0
    for day in days:
        for hh in range(24):
            start = START_MS + day * DAY_MS + hh * HOUR_MS
            hour = DeviceHour(device, start, state_at_start=StateEvent(start - 1, "running", TimeClass.PRODUCTION))
            if 8 <= hh < 16:
                mean = cycle_s * (1 + 0.03 * rng.normal())
                times = rng.normal(mean, mean * 0.05, int(3600 / mean) - 3)
                split = len(times) * 2 // 3 if day % 2 else len(times) // 3  # the mix moves between days
                hour.production = {
                    "P": ProductionTotals(split, split - 1, 1, 0, float(times[:split].sum()), split),
                    "Q": ProductionTotals(
                        len(times) - split, len(times) - split, 0, 0, float(times[split:].sum()), len(times) - split
                    ),
                }
                hour.cycle_times = LogHistogram.of(times)
                if exact:
                    hour.cycle_time_values = [float(t) for t in times]
                hour.telemetry_points = 60 - (hh % 3)
                skipped = int(rng.integers(0, 2))
                hour.seq = {"production": SeqSpan(len(times), seq + 1, seq + len(times) + skipped)}
                seq += len(times) + skipped
                if hh == 14:
                    hour.events = [
                        StateEvent(start + 600_000, "fault", TimeClass.UNPLANNED_DELAY),
                        StateEvent(start + 900_000, "running", TimeClass.PRODUCTION),
                    ]
            hours.append(hour)
    return hours


def plant_hours(seed: int = 4) -> dict[str, list[DeviceHour]]:
    rng = np.random.default_rng(seed)
    days = range(14)
    return {
        "press": station("press", days, 30.0, rng, exact=True),
        "press-3": station("press-3", days, 45.0, rng, exact=False),
        "press-2": station("press-2", days, 40.0, rng, exact=True),
        "meter": [
            DeviceHour(
                "meter",
                START_MS + d * DAY_MS + h * HOUR_MS,
                machine=False,
                energy_kwh=float(2.0 + rng.normal(0, 0.1)) if 8 <= h < 16 else 0.1,
                telemetry_points=360,
            )
            for d in days
            for h in range(24)
        ],
    }


def hour_store(database: Database, influx: InfluxClient) -> HourStore:
    registry = DeviceRegistry(
        [DeviceEntry(site="s", line="l", device=d, profile="cnc_machine") for d in DEVICES], load_profiles()
    )
    return HourStore(RollupRepository(database), influx, registry)


def stored_plant(store: HourStore, hours: dict[str, list[DeviceHour]]) -> None:
    store.rollups.upsert("s", "l", [h for device_hours in hours.values() for h in device_hours])


@contextmanager
def plant_store(tmp_path: Path, hours: dict[str, list[DeviceHour]]) -> Iterator[tuple[Database, HourStore]]:
    """A new database holding ``hours`` as stored device-hours, and the HourStore over it (InfluxDB never read)."""
    with Database(default_url(tmp_path)) as database, InfluxClient(InfluxSettings()) as unused:
        database.upgrade()
        store = hour_store(database, unused)
        stored_plant(store, hours)
        yield database, store


def both(store: HourStore, plan: DemonstrationPlan, hours: dict[str, list[DeviceHour]]) -> tuple[bytes, bytes]:
    """The result from stored accounted days, and evaluate's on the same device-hours (those of the plan's hours,
    as HourStore.read gives them)."""
    accounted = store.accounted(plan)
    assert accounted is not None
    # Through the server's memo of stations' comparisons: those of unchanged stations come from earlier calls.
    fast = evaluate_accounted(plan, plan_hash(plan), accounted, INTERVALS, store.station_comparisons)
    oracle = evaluate(plan, plan_hash(plan), store.read(plan), INTERVALS)
    return RESULT.dump_json(fast), RESULT.dump_json(oracle)


def accounted_rows(database: Database) -> list[tuple[Any, ...]]:
    with database.engine.connect() as connection:
        query = rollup_accounts.select().order_by(*rollup_accounts.primary_key.columns)
        return [tuple(row) for row in connection.execute(query)]


def test_a_comparison_from_accounted_days_equals_evaluate_byte_for_byte(tmp_path: Path) -> None:
    hours = plant_hours()
    plan = plant_plan()
    with plant_store(tmp_path, hours) as (_database, store):
        fast, oracle = both(store, plan, hours)
        assert fast == oracle
        assert both(store, plan, hours) == (fast, oracle)  # the stations' comparisons from the memo this time
        result = RESULT.validate_json(fast)
        # The plan's every method gave a figure, so the test compares them all, not empty parts.
        assert result.control_lines and result.adjusted is not None and result.design and result.product_mix
        stations = {s.device: s for s in result.phases[Phase.PILOT].stations}
        assert stations["press"].quantiles_exact  # press keeps every value: exact percentiles
        assert stations["press-3"].quantiles_exact is False  # press-3 keeps none: the histogram's rule
        assert any("no ideal cycle time for product 'Q'" in w for w in result.warnings)
        assert sum(r.excluded_hours for r in result.windows) > 0


def test_days_are_accounted_once_and_again_only_when_their_hours_or_the_accounting_change(tmp_path: Path) -> None:
    hours = plant_hours(seed=9)
    plan = plant_plan()
    with plant_store(tmp_path, hours) as (database, store):
        store.account(plan)
        first = accounted_rows(database)
        days = {t - t % DAY_MS for t in plan_hours(plan)}  # UTC days holding the plan's hours
        assert len(first) == len(DEVICES) * len(days)  # every stored day of every device, once
        store.account(plan)
        assert accounted_rows(database) == first  # nothing changed: nothing accounted again
        before, oracle = both(store, plan, hours)  # the stations' comparisons are kept in the memo
        assert before == oracle
        # Late data rewrites one hour of the press: that day alone is accounted again, and the result sees it.
        late = hours["press"][3 * 24 + 10]
        late.production = {**late.production, "P": ProductionTotals(99, 90, 9, 0, 2900.0, 99)}
        store.rollups.upsert("s", "l", [late], late=True)
        store.account(plan)
        again = accounted_rows(database)
        changed = [a for a, b in zip(first, again, strict=True) if a != b]
        assert [(row[2], row[4]) for row in changed] == [("press", late.start_ms - late.start_ms % DAY_MS)]
        fast, oracle = both(store, plan, hours)
        assert fast == oracle != before  # the press's station compared again, from the day as it is now
        # An amendment that changes the rules (a state's time class): accounted anew under its own key.
        amended = plant_plan(state_overrides=[{"state": "fault", "time_class": "setup", "reason": "tool change"}])
        fast, oracle = both(store, amended, hours)
        assert fast == oracle
        assert len(accounted_rows(database)) == 2 * len(first)
        # A plan that changes nothing the accounting depends on (another target) reuses the days.
        targets = [*plant_plan().model_dump(mode="json")["targets"][:2]]
        more = {"kpi": "throughput_rate", "direction": "increase", "change_pct": 4}
        retargeted = plant_plan(targets=[*targets, more])
        fast, oracle = both(store, retargeted, hours)
        assert fast == oracle
        assert len(accounted_rows(database)) == 2 * len(first)


def test_a_plan_with_data_corrections_is_evaluated_from_its_device_hours(tmp_path: Path) -> None:
    corrected = plant_plan(
        corrections=[
            {
                "kind": "counts",
                "device": "press",
                "at": START + dt.timedelta(days=1, hours=9),
                "product": "P",
                "produced": 5,
                "good": 0,
                "scrap": 5,
                "reason": "scrapped at inspection",
            },
        ],
    )
    with plant_store(tmp_path, plant_hours()) as (_database, store):
        assert store.accounted(corrected) is None


def test_one_scan_gives_the_windows_summaries_and_the_days_checks_that_their_own_queries_give(tmp_path: Path) -> None:
    hours = plant_hours(seed=2)
    plan = plant_plan()
    with plant_store(tmp_path, hours) as (_database, store):
        late = hours["press-2"][5 * 24 + 9]
        store.rollups.upsert("s", "l", [late], late=True)  # one hour marked late, later than the others
        each = [
            store.rollups.summary("s", "l", plan.devices, w.start_ms - w.start_ms % HOUR_MS, w.end_ms)
            for w in plan.windows
        ]
        assert store.summaries(plan) == each
        days = {t - t % DAY_MS for t in plan_hours(plan)}
        checks = store.rollups.day_checks("s", "l", plan.devices, min(days), max(days) + DAY_MS)
        assert store._day_checks(plan) == checks


def test_a_device_with_no_stored_hour_reads_as_evaluate_reads_it(tmp_path: Path) -> None:
    hours = plant_hours(seed=3)
    plan = plant_plan(devices=[*DEVICES, "press-9"])  # in scope, never sent anything
    with plant_store(tmp_path, hours) as (_database, store):
        fast, oracle = both(store, plan, hours)
        assert fast == oracle


def test_an_adjusted_baseline_on_ambient_temperature_reads_the_sensors_hours_from_accounted_days(
    tmp_path: Path,
) -> None:
    """The ambient sensor's hourly temperatures are kept in its accounted days: the regression on them gives the
    same result from stored days as from device-hours (without them it would find no temperature, no verdict)."""
    hours = weathered_line()
    plan = weather_plan()
    profiles = {"press": "cnc_machine", "meter": "energy_meter", "env": "environment_sensor"}
    registry = DeviceRegistry(
        [DeviceEntry(site=plan.site, line=plan.line, device=d, profile=p) for d, p in profiles.items()],
        load_profiles(),
    )
    with Database(default_url(tmp_path)) as database, InfluxClient(InfluxSettings()) as unused:
        database.upgrade()
        store = HourStore(RollupRepository(database), unused, registry)
        store.rollups.upsert(plan.site, plan.line, [h for device_hours in hours.values() for h in device_hours])
        accounted = store.accounted(plan)
        assert accounted is not None
        fast = evaluate_accounted(plan, plan_hash(plan), accounted, {})
        assert RESULT.dump_json(fast) == RESULT.dump_json(evaluate(plan, plan_hash(plan), store.read(plan), {}))
        assert fast.adjusted is not None and not fast.adjusted.refused
        assert fast.adjusted.model is not None and "ambient_temperature" in fast.adjusted.model.variables


def with_downtime_causes(hours: dict[str, list[DeviceHour]]) -> dict[str, list[DeviceHour]]:
    """Causes besides the afternoon fault: changeovers with a reason, an offline stretch (unknown), a fault with a
    code on the control line (never the line's downtime), a stop outside the shift (no planned busy time lost)."""
    for day in range(14):
        start = START_MS + day * DAY_MS
        changeover = hours["press-3"][day * 24 + 10]
        changeover.events = [
            StateEvent(start + 10 * HOUR_MS + 300_000, "setup", TimeClass.SETUP, f"changeover to {'PQ'[day % 2]}"),
            StateEvent(start + 10 * HOUR_MS + 1_234_567, "running", TimeClass.PRODUCTION),
        ]
        offline = hours["press"][day * 24 + 9]
        offline.events = [
            StateEvent(start + 9 * HOUR_MS + 60_001, None, None),
            StateEvent(start + 9 * HOUR_MS + 400_003, "idle", TimeClass.IDLE, "no order"),
            StateEvent(start + 9 * HOUR_MS + 700_000, "running", TimeClass.PRODUCTION),
        ]
        hours["press-2"][day * 24 + 11].events = [
            StateEvent(start + 11 * HOUR_MS + 1_000, "fault", TimeClass.UNPLANNED_DELAY, "E42"),
            StateEvent(start + 11 * HOUR_MS + 90_000, "running", TimeClass.PRODUCTION),
        ]
        hours["press"][day * 24 + 20].events = [
            StateEvent(start + 20 * HOUR_MS + 5_000, "fault", TimeClass.UNPLANNED_DELAY, "E7"),
        ]
    return hours


def test_the_charts_breakdown_from_accounted_days_equals_the_one_from_device_hours_byte_for_byte(
    tmp_path: Path,
) -> None:
    """Windows and an exclusion cut days; Seoul's days run across UTC days (as stored); several causes per phase."""
    hours = with_downtime_causes(plant_hours(seed=6))
    plans = [
        plant_plan(),
        plant_plan(state_overrides=[{"state": "fault", "time_class": "setup", "reason": "tool change"}]),
        plant_plan(  # a night shift split at midnight: busy hours on both sides of the local days
            calendar={
                "timezone": "Asia/Seoul",
                "shifts": [{"start": "00:00", "end": "06:00"}, {"start": "13:00", "end": "23:59"}],
            }
        ),
    ]
    with plant_store(tmp_path, hours) as (_database, store):
        causes = []
        for plan in plans:
            accounted = store.accounted(plan)
            assert accounted is not None
            fast = stored_breakdown(plan, accounted)
            oracle = breakdown(plan, store.read(plan))
            assert repr(fast) == repr(oracle)  # every float and every dict's order
            assert fast == oracle
            assert len({d.day for d in fast.days}) >= 12 and len(fast.phases[Phase.PILOT].downtime_s) >= 2
            assert sum(d.components.pbt_s for d in fast.days) > 0
            causes.append(len(fast.phases[Phase.BASELINE].downtime_s))
        assert causes[0] >= 5  # the fault, two changeovers, idle without an order, and unknown (offline)
        # From the days the comparison accounted: the same AccountedHours serves both.
        accounted = store.accounted(plans[0])
        assert accounted is not None
        evaluate_accounted(plans[0], plan_hash(plans[0]), accounted, INTERVALS)
        assert repr(stored_breakdown(plans[0], accounted)) == repr(breakdown(plans[0], store.read(plans[0])))


def test_the_reports_and_the_consoles_charts_decode_no_device_hour(tmp_path: Path) -> None:
    """``evaluate_with_breakdown`` (the report, the console's page) takes the charts from the accounted days the
    comparison read; with data corrections, from the device-hours, as before."""
    hours = with_downtime_causes(plant_hours(seed=8))
    plan = plant_plan()
    actor = Actor.system("test")
    with plant_store(tmp_path, hours) as (database, store):
        demonstrations = DemonstrationRepository(database)
        stored = demonstrations.create(plan, actor=actor)
        service = KpiService(demonstrations, store, ResultCache(database))
        evaluation, charts = service.evaluate_with_breakdown(stored.id)
        assert not store.decoded.snapshot()  # every hour is settled: none was decoded
        assert repr(charts) == repr(breakdown(plan, store.read(plan)))
        assert evaluation.result == service.evaluate(stored.id).result
        # A plan with data corrections: its charts from the corrected device-hours, as breakdown gives them.
        count = {"kind": "counts", "device": "press", "at": START + dt.timedelta(days=1, hours=9), "product": "P"}
        fixed = plant_plan(name="corrected", corrections=[{**count, "produced": 5, "scrap": 5, "reason": "scrap"}])
        _, charts = service.evaluate_with_breakdown(demonstrations.create(fixed, actor=actor).id)
        assert store.decoded.snapshot()
        assert repr(charts) == repr(breakdown(fixed, store.read(fixed)))


def test_packed_vectors_leave_out_only_columns_of_plus_zero_and_give_back_every_bit() -> None:
    rng = np.random.default_rng(4)
    width = len(COMPONENT_NAMES)
    first = np.zeros((24, width))
    first[:, 0] = rng.random(24) * 3600
    first[5, 3] = -0.0  # negative zero: its bits are not zero, so the column is kept
    first[7, 9] = np.nan
    second = np.zeros((3, width))  # another day, other columns (a short day: three stored hours)
    second[:, width - 1] = [1e-300, 2.5, 7.0]
    empty = np.zeros((2, width))  # nothing at all in the day
    days = []
    for vectors in (first, second, empty):
        columns, packed = packed_vectors(vectors)
        assert len(packed) == 8 * len(vectors) * len(columns)
        day = account_day([], DeviceRules.of(plant_plan(), "press"), [], [])[0]
        starts = np.zeros(len(vectors), np.int64).tobytes()
        days.append(msgspec.structs.replace(day, starts=starts, vectors=packed, vector_columns=columns))
    assert list(np.frombuffer(days[0].vector_columns, np.uint8)) == [0, 3, 9]
    assert list(np.frombuffer(days[1].vector_columns, np.uint8)) == [width - 1]
    assert days[2].vectors == b""
    unpacked = unpacked_vectors([days[0], days[1], days[2], days[0]])
    expected = np.concatenate([first, second, empty, first])
    assert unpacked.tobytes() == expected.tobytes()  # bit for bit: -0.0 and NaN as they were
    assert decode_day(encode(days[1])) == days[1]


def test_an_accounted_day_stores_only_the_components_its_device_uses() -> None:
    plan = plant_plan()
    for device, hours in plant_hours().items():
        rules = DeviceRules.of(plan, device)
        day = [h for h in hours if day_start(h.start_ms) == day_start(hours[30].start_ms)]
        shifts = [list(plan.calendar.shifts_between(h.start_ms, h.end_ms)) for h in day]
        calendars = [BucketCalendar.of(h.start_ms, h.end_ms, s) for h, s in zip(day, shifts, strict=True)]
        accounted, _ = account_day(day, rules, calendars, shifts)
        columns = np.frombuffer(accounted.vector_columns, np.uint8)
        assert 0 < len(columns) < len(COMPONENT_NAMES)
        whole = np.array([account_vector(h, rules, c)[0] for h, c in zip(day, calendars, strict=True)])
        assert unpacked_vectors([accounted]).tobytes() == whole.tobytes()
        assert not whole[:, [i for i in range(len(COMPONENT_NAMES)) if i not in columns]].any()
