"""Comparison latency: a 30-day, 20-device demonstration evaluated from stored device-hours.

First: the first request after a server starts: the device-hours are in the
database (the roll-up step has run), but none is decoded yet and no result is
cached. Cold: no cached result (new data came, or a new plan version), in a
running server that has decoded the unchanged hours before, so every hour is
accounted under the plan and compared. Warm: the same request again, answered
from the result cache after checking that no hour changed. Reading InfluxDB is not timed: that happens once
per hour of data, not per request.

The baseline, measured in the same run, is decoding the stored hours alone
(the floor under any cold evaluation); figures are also given in seconds
against the targets (cold ≤ 1 s, warm ≤ 100 ms).

    .venv/bin/python -m bench.comparison [--devices 20] [--days 30] [--repeat 5] [--out FILE]
"""

from __future__ import annotations

import argparse
import datetime as dt
import statistics
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
from sqlalchemy import delete

from adapters.catalog import load_profiles
from adapters.influxdb import InfluxClient, InfluxSettings
from adapters.sql import Database, DemonstrationRepository, ResultCache, RollupRepository, default_url
from adapters.sql.models import CachedResultRecord
from bench.results import write_result
from kpi_engine.service import DecodedHours, HourStore, KpiService
from pilot_core.access import Actor
from pilot_core.contract import TimeClass
from pilot_core.demonstration import DemonstrationPlan
from pilot_core.device_hours import HOUR_MS, DeviceHour, SeqSpan, StateEvent
from pilot_core.histogram import LogHistogram
from pilot_core.registry import DeviceRegistry
from pilot_core.time_accounting import ProductionTotals

BENCH = Actor.system("bench.comparison")

SEOUL = dt.timezone(dt.timedelta(hours=9))
START = dt.datetime(2026, 9, 7, tzinfo=SEOUL)  # a Monday, long settled


def plan(devices: list[str], days: int) -> DemonstrationPlan:
    half = days // 2
    return DemonstrationPlan.model_validate(
        {
            "name": f"{len(devices)} devices, {days} days",
            "site": "시화",
            "line": "L1",
            "devices": devices,
            "output_devices": devices[-1:],
            "energy_meters": devices[:1],
            "calendar": {
                "timezone": "Asia/Seoul",
                "shifts": [{"start": "08:00", "end": "17:00"}, {"start": "17:00", "end": "23:30"}],
                "breaks": [{"start": "12:00", "end": "13:00"}],
            },
            "windows": [
                {"name": "baseline", "phase": "baseline", "start": START, "end": START + dt.timedelta(days=half)},
                {
                    "name": "pilot",
                    "phase": "pilot",
                    "start": START + dt.timedelta(days=half),
                    "end": START + dt.timedelta(days=days),
                },
            ],
            "products": [{"id": "P1", "ideal_cycle_time_s": 40}, {"id": "P2", "ideal_cycle_time_s": 55}],
            "targets": [{"kpi": "cycle_time_mean", "direction": "decrease", "change_pct": 5}],
            "telemetry_interval_s": dict.fromkeys(devices, 60.0),
        }
    )


def device_hours(device: str, days: int, rng: np.random.Generator) -> list[DeviceHour]:
    """Hours like a station's: a few state changes, two products, a cycle-time histogram, telemetry counts."""
    hours = []
    start_ms = int(START.timestamp() * 1000)
    for index in range(days * 24):
        start = start_ms + index * HOUR_MS
        hour = DeviceHour(device, start, state_at_start=StateEvent(start - 1, "running", TimeClass.PRODUCTION))
        hour.events = [
            StateEvent(start + 600_000, "fault", TimeClass.UNPLANNED_DELAY),
            StateEvent(start + 900_000, "running", TimeClass.PRODUCTION),
        ]
        times = rng.normal(48.0, 3.0, 70)
        hour.production = {
            "P1": ProductionTotals(50, 48, 1, 1, float(times[:50].sum()), 50),
            "P2": ProductionTotals(20, 19, 1, 0, float(times[50:].sum()), 20),
        }
        hour.cycle_times = LogHistogram.of(times)
        hour.energy_kwh = 2.0
        hour.telemetry_points = 60
        hour.seq = {"telemetry": SeqSpan(60, index * 60, index * 60 + 59)}
        hours.append(hour)
    return hours


def timed(action: Callable[[], Any], repeat: int) -> list[float]:
    seconds = []
    for _ in range(repeat):
        began = time.perf_counter()
        action()
        seconds.append(time.perf_counter() - began)
    return seconds


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--devices", type=int, default=20)
    parser.add_argument("--days", type=int, default=30)
    parser.add_argument("--repeat", type=int, default=5)
    parser.add_argument("--database-url", help="default: SQLite in a temporary folder")
    parser.add_argument("--out", type=Path)
    args = parser.parse_args()

    devices = [f"station-{i:02d}" for i in range(args.devices)]
    the_plan = plan(devices, args.days)
    rng = np.random.default_rng(1)
    with tempfile.TemporaryDirectory() as folder:
        database = Database(args.database_url or default_url(Path(folder)))
        database.upgrade()
        print(f"storing {args.devices * args.days * 24:,} device-hours in {database.dialect}", file=sys.stderr)
        rollups = RollupRepository(database)
        for device in devices:
            rollups.upsert(the_plan.site, the_plan.line, device_hours(device, args.days, rng))
        demonstrations = DemonstrationRepository(database)
        stored = demonstrations.freeze(demonstrations.create(the_plan, actor=BENCH).id, actor=BENCH)
        registry = DeviceRegistry([], load_profiles())
        with InfluxClient(InfluxSettings()) as unused:  # every hour is settled: InfluxDB is never asked
            service = KpiService(demonstrations, HourStore(rollups, unused, registry), ResultCache(database))

            def clear_cache() -> None:
                with database.engine.begin() as connection:
                    connection.execute(delete(CachedResultRecord))

            def first() -> None:
                clear_cache()
                service.hours.decoded = DecodedHours()
                assert not service.evaluate(stored.id).cached

            def cold() -> None:
                clear_cache()
                assert not service.evaluate(stored.id).cached

            def warm() -> None:
                assert service.evaluate(stored.id).cached

            def decode_only_fresh() -> None:
                service.hours.decoded = DecodedHours()
                service.hours.read(the_plan)

            first()  # imports and first-use costs out of the way
            floor = timed(decode_only_fresh, args.repeat)
            first_s = timed(first, args.repeat)
            cold_s = timed(cold, args.repeat)
            warm_s = timed(warm, args.repeat)
        database.dispose()

    hours = args.devices * args.days * 24
    result = {
        "devices": args.devices,
        "days": args.days,
        "device_hours": hours,
        "repeat": args.repeat,
        "decode_only_s": statistics.median(floor),
        "first_s": statistics.median(first_s),
        "cold_s": statistics.median(cold_s),
        "warm_s": statistics.median(warm_s),
        "first_over_decode": statistics.median(first_s) / statistics.median(floor),
        "cold_over_decode": statistics.median(cold_s) / statistics.median(floor),
        "warm_over_decode": statistics.median(warm_s) / statistics.median(floor),
        "targets": {"cold_s": 1.0, "warm_s": 0.1},
    }
    print(f"{hours:,} device-hours ({args.devices} devices × {args.days} days), median of {args.repeat}:")
    rows = (
        ("decoding the stored hours (baseline)", result["decode_only_s"], 1.0, ""),
        ("first comparison after start", result["first_s"], result["first_over_decode"], ""),
        ("cold comparison (no cached result)", result["cold_s"], result["cold_over_decode"], "target ≤ 1000 ms"),
        ("warm comparison (cached result)", result["warm_s"], result["warm_over_decode"], "target ≤ 100 ms"),
    )
    for label, seconds, ratio, target in rows:
        print(f"  {label:<38} {seconds * 1000:8.1f} ms  {ratio:6.2f}×  {target}")
    if args.out:
        write_result(args.out, result)
    return 0


if __name__ == "__main__":
    sys.exit(main())
