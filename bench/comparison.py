"""Comparison latency: a 30-day, 20-device demonstration evaluated from stored device-hours.

First: the first request after a server starts: the device-hours are in the
database and the roll-up job has accounted them under the plan (``HourStore.account``: one row per device-day
in ``rollup_accounts``), but nothing is in the server's memory and no result is cached. Cold: late data for one
hour of the output station (stored as a re-read marks it), so no cached result, in a running server: that day
is accounted again, every line comparison computed again, and the stations' comparisons of unchanged stations
come from the server's memo (``StationComparisons``). Warm: the same request again, answered from the result
cache after checking that no hour changed. Charts: the cold comparison with what the report's and the console's
charts need (``KpiService.evaluate_with_breakdown``: per local day and phase the components, the output
stations' cycle-time histogram, downtime by cause), after late data as for cold. Accounting (reported beside,
not in ``measurements``): the roll-up job's accounting of every device-day of the plan from nothing, done once per
plan's rules and calendar. Reading InfluxDB is not timed: that happens once per hour of data, not per request.

The baseline, measured in the same run, is decoding the stored hours alone
(the floor under any cold evaluation); figures are also given in seconds
against the targets (cold ≤ 1 s, warm ≤ 100 ms). What a repetition needs
undone first (the cached result deleted, the decoded hours dropped) is done
before its timer starts: a server's first request has nothing to drop. The
garbage collector is left alone: its collections fall where they fall.

--out writes JSON: per measurement the median, min and max over the repeats
and every repeat, in seconds, each median's ratio to the baseline's, and the
garbage collector's full collections in each repeat (each traverses the
whole heap, about 0.1 s here: most of the spread).

    .venv/bin/python -m bench.comparison [--devices 20] [--days 30] [--repeat 5] [--out FILE]

Plant scale (issue 23): ``--sizes 10x30,20x60,40x90`` runs the measurement above once per size (devices ×
days), each in a process of its own so that its peak RSS is its own, and reports every measurement per
device-hour against the smallest size (the baseline): a ratio near 1 at every size is cost that grows
linearly. ``--influx-sizes 2x7,4x7,4x14`` measures what the roll-up job costs: raw points written to a
private InfluxDB 1.x, then the hours built from them (``HourStore.refresh``, InfluxDB read a day per device
per query) and a late-data pass over the settled hours with nothing changed (``refresh(late_days=…)``:
counting queries only), per device-hour against the smallest size. The large sizes are seeded as roll-ups
directly: writing half a year of a plant through InfluxDB is more than this machine does in a run.

    .venv/bin/python -m bench.comparison --sizes 10x30,20x60,40x90 --influx-sizes 2x7,4x7,4x14 [--out FILE]
"""

from __future__ import annotations

import argparse
import datetime as dt
import gc
import json
import resource
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any, NamedTuple

import numpy as np
from sqlalchemy import delete

from adapters import local_services
from adapters.catalog import load_profiles
from adapters.influxdb import InfluxClient, InfluxSettings
from adapters.sql import Database, DemonstrationRepository, ResultCache, RollupRepository, default_url
from adapters.sql.models import CachedResultRecord, rollup_accounts
from adapters.sql.models import rollups as rollups_table
from bench.results import write_result
from kpi_engine.service import DecodedHours, HourStore, KpiService, StationComparisons, StoredSummaries
from pilot_core.access import Actor
from pilot_core.contract import TimeClass
from pilot_core.demonstration import DemonstrationPlan
from pilot_core.device_hours import HOUR_MS, DeviceHour, SeqSpan, StateEvent
from pilot_core.histogram import LogHistogram
from pilot_core.line_protocol import encode_point
from pilot_core.registry import DeviceEntry, DeviceRegistry
from pilot_core.time_accounting import ProductionTotals
from pilot_core.validation import PRODUCTION_MEASUREMENT, STATE_MEASUREMENT

BENCH = Actor.system("bench.comparison")

SEOUL = dt.timezone(dt.timedelta(hours=9))
START = dt.datetime(2026, 3, 2, tzinfo=SEOUL)  # a Monday, long settled: a plant's 180 days end in August


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


class Repeats(NamedTuple):
    seconds: list[float]
    full_collections: list[int]  # the garbage collector's full collections within each repeat


def timed(action: Callable[[], Any], repeat: int, setup: Callable[[], Any] | None = None) -> Repeats:
    """Each of ``repeat`` runs of ``action``, after an untimed ``setup``: its seconds and full collections."""
    repeats = Repeats([], [])
    collections = [0]

    def count(phase: str, info: dict[str, Any]) -> None:
        if phase == "stop" and info["generation"] == 2:
            collections[0] += 1

    gc.callbacks.append(count)
    try:
        for _ in range(repeat):
            if setup is not None:
                setup()
            collections[0] = 0
            began = time.perf_counter()
            action()
            repeats.seconds.append(time.perf_counter() - began)
            repeats.full_collections.append(collections[0])
    finally:
        gc.callbacks.remove(count)
    return repeats


def spread(repeats: Repeats, baseline: Repeats) -> dict[str, Any]:
    """Median, min and max of one measurement's repeats, and its median against the baseline's."""
    seconds = repeats.seconds
    return {
        "median_s": statistics.median(seconds),
        "min_s": min(seconds),
        "max_s": max(seconds),
        "repeats_s": seconds,
        "full_collections": repeats.full_collections,
        "over_baseline": statistics.median(seconds) / statistics.median(baseline.seconds),
    }


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--devices", type=int, default=20)
    parser.add_argument("--days", type=int, default=30)
    parser.add_argument("--repeat", type=int, default=5)
    parser.add_argument("--database-url", help="default: SQLite in a temporary folder")
    parser.add_argument("--sizes", type=_sizes, help="devices x days, comma-separated: the scaling run")
    parser.add_argument("--influx-sizes", type=_sizes, help="devices x days read from InfluxDB by the roll-up job")
    parser.add_argument("--out", type=Path)
    parser.add_argument("--comparisons-of", help=argparse.SUPPRESS)  # measure's server process: a database URL
    args = parser.parse_args()

    if args.comparisons_of:
        write_result(args.out, comparisons(args.comparisons_of, args.devices, args.days, args.repeat))
        return 0

    if args.sizes or args.influx_sizes:
        result = scaling(args.sizes or [], args.influx_sizes or [], args.repeat, args.database_url)
        print_scaling(result)
        if args.out:
            write_result(args.out, result)
        return 0
    with tempfile.TemporaryDirectory() as folder:
        database = Database(args.database_url or default_url(Path(folder)))
        try:
            repeats = measure(database, args.devices, args.days, args.repeat)
        finally:
            database.dispose()
    accounting = repeats.pop("accounting")
    result = summary(args.devices, args.days, args.repeat, repeats)
    result["peak_rss_mb"] = peak_rss_mb()
    # Issue 23: the roll-up job's accounting of the plan's days (once per plan's rules and calendar, and again only
    # for days whose hours changed), and the memory of the process that made the comparisons, as a server would.
    result["accounting"] = spread(accounting, repeats["decode_only"])
    result["accounting_s"] = result["accounting"]["median_s"]
    result["comparison_rss_before_mb"] = resident_mb[0]
    result["comparison_peak_rss_mb"] = resident_mb[1]
    result["charts_peak_rss_mb"] = resident_mb[2]
    print_table(result)
    if args.out:
        write_result(args.out, result)
    return 0


def _sizes(text: str) -> list[tuple[int, int]]:
    try:
        return [(int(d), int(n)) for d, n in (size.lower().split("x") for size in text.split(","))]
    except ValueError:
        raise argparse.ArgumentTypeError(f"sizes are devices x days, comma-separated (10x30,20x60): {text!r}") from None


def peak_rss_mb() -> float:
    """The highest resident memory of this process so far (Linux reports kB)."""
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def rss_mb() -> float:
    """This process's resident memory now."""
    for line in Path("/proc/self/status").read_text(encoding="ascii").splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    raise LookupError("no VmRSS in /proc/self/status")


# The comparisons' server process: its resident memory after one comparison, and its peak (set by ``measure``).
resident_mb = [0.0, 0.0, 0.0]  # before, peak after the comparisons, peak after the charts too


def scaling(
    sizes: list[tuple[int, int]], influx_sizes: list[tuple[int, int]], repeat: int, database_url: str | None
) -> dict[str, Any]:
    """Each size's evaluation in a process of its own, and the roll-up job's InfluxDB reads; per device-hour."""
    runs = []
    for devices, days in sizes:
        with tempfile.TemporaryDirectory() as folder:
            out = Path(folder) / "size.json"
            command = [sys.executable, "-m", "bench.comparison", "--devices", str(devices), "--days", str(days)]
            command += ["--repeat", str(repeat), "--out", str(out)]
            if database_url:
                command += ["--database-url", database_url]
            subprocess.run(command, check=True)
            runs.append(json.loads(out.read_text(encoding="utf-8")))
    for run in runs:
        for name in ("first", "cold", "warm", "charts", "decode_only", "accounting"):
            run[f"{name}_us_per_hour"] = run[f"{name}_s"] / run["device_hours"] * 1e6
            run[f"{name}_per_hour_over_smallest"] = run[f"{name}_us_per_hour"] / runs[0][f"{name}_us_per_hour"]
    reads = influx_reads(influx_sizes, repeat) if influx_sizes else []
    return {"scaling": runs, "influx_read": reads, "repeat": repeat, "baseline": "the smallest size, per device-hour"}


def measure(database: Database, device_count: int, days: int, repeat: int) -> dict[str, Repeats]:
    """Seconds of every repeat of each measurement, the baseline (decode_only) first."""
    devices = [f"station-{i:02d}" for i in range(device_count)]
    the_plan = plan(devices, days)
    rng = np.random.default_rng(1)
    database.upgrade()
    print(f"storing {device_count * days * 24:,} device-hours in {database.dialect}", file=sys.stderr)
    rollups = RollupRepository(database)
    for device in devices:
        rollups.upsert(the_plan.site, the_plan.line, device_hours(device, days, rng))
    demonstrations = DemonstrationRepository(database)
    demonstrations.freeze(demonstrations.create(the_plan, actor=BENCH).id, actor=BENCH)
    registry = DeviceRegistry([], load_profiles())
    with InfluxClient(InfluxSettings()) as unused:  # every hour is settled: InfluxDB is never asked
        service = KpiService(demonstrations, HourStore(rollups, unused, registry), ResultCache(database))

        def forget_everything() -> None:  # as a server that has just started
            with database.engine.begin() as connection:
                connection.execute(delete(CachedResultRecord))
            service.hours.decoded = DecodedHours()

        def decode() -> None:
            service.hours.read(the_plan)

        def forget_accounting() -> None:  # as before the roll-up job accounted the plan's days
            with database.engine.begin() as connection:
                connection.execute(delete(rollup_accounts))

        def account() -> None:
            service.hours.account(the_plan)

        accounting = timed(account, repeat, setup=forget_accounting)
        if database.dialect == "postgresql":
            # What autovacuum does in service after bulk inserts (the test server runs without it): the visibility
            # map that lets the summaries scan read the index alone, and the statistics its plan needs.
            with database.engine.connect().execution_options(isolation_level="AUTOCOMMIT") as connection:
                connection.exec_driver_sql("VACUUM ANALYZE rollups, rollup_accounts")
        # The comparisons in a server of their own (a process that has seeded and accounted holds what it freed).
        measured = comparisons_apart(str(database.engine.url), device_count, days, repeat)
        # Decoding every stored hour (the baseline) last: what it holds is not the comparison's.
        return {"decode_only": timed(decode, repeat, setup=forget_everything), **measured, "accounting": accounting}


def comparisons_apart(url: str, device_count: int, days: int, repeat: int) -> dict[str, Repeats]:
    """``comparisons`` in a process of its own, whose resident memory is the server's (``resident_mb``)."""
    with tempfile.TemporaryDirectory() as folder:
        out = Path(folder) / "comparisons.json"
        command = [sys.executable, "-m", "bench.comparison", "--comparisons-of", url, "--devices", str(device_count)]
        subprocess.run([*command, "--days", str(days), "--repeat", str(repeat), "--out", str(out)], check=True)
        found = json.loads(out.read_text(encoding="utf-8"))
    resident_mb[:] = found["rss_before_mb"], found["peak_rss_mb"], found["charts_peak_rss_mb"]
    return {name: Repeats(*found[name]) for name in ("first", "cold", "warm", "charts")}


def comparisons(url: str, device_count: int, days: int, repeat: int) -> dict[str, Any]:
    """First, cold and warm comparisons of the stored plan (``measure`` stored it and accounted its days), in this
    process, as a running server makes them; with its resident memory after one comparison, and its peak."""
    devices = [f"station-{i:02d}" for i in range(device_count)]
    the_plan = plan(devices, days)
    database = Database(url)
    rollups = RollupRepository(database)
    demonstrations = DemonstrationRepository(database)
    stored = demonstrations.list()[0]
    with database, InfluxClient(InfluxSettings()) as unused:
        store = HourStore(rollups, unused, DeviceRegistry([], load_profiles()))
        service = KpiService(demonstrations, store, ResultCache(database))

        def clear_cache() -> None:
            with database.engine.begin() as connection:
                connection.execute(delete(CachedResultRecord))

        def forget_everything() -> None:  # as a server that has just started
            clear_cache()
            service.hours.decoded = DecodedHours()
            service.hours.stored_summaries = StoredSummaries()
            service.hours.station_comparisons = StationComparisons()

        late = [0]

        def late_data() -> None:  # an hour of the output station read again with data that came late
            late[0] += 1
            hour = device_hours(devices[-1], 1, np.random.default_rng(late[0]))[0]
            rollups.upsert(the_plan.site, the_plan.line, [hour], late=True)
            clear_cache()

        def evaluate_uncached() -> None:
            assert not service.evaluate(stored.id).cached

        def warm() -> None:
            assert service.evaluate(stored.id).cached

        def charts() -> None:
            evaluation, parts = service.evaluate_with_breakdown(stored.id)
            assert not evaluation.cached and parts.days

        forget_everything()
        evaluate_uncached()  # imports and first-use costs out of the way
        before = rss_mb()
        measured = {
            "first": timed(evaluate_uncached, repeat, setup=forget_everything),
            "cold": timed(evaluate_uncached, repeat, setup=late_data),
            "warm": timed(warm, repeat),
        }
        peak = peak_rss_mb()  # the comparisons' alone: the charts come after
        measured["charts"] = timed(charts, repeat, setup=late_data)
    return {
        **{k: list(v) for k, v in measured.items()},
        "rss_before_mb": before,
        "peak_rss_mb": peak,
        "charts_peak_rss_mb": peak_rss_mb(),
    }


def summary(devices: int, days: int, repeat: int, repeats: dict[str, Repeats]) -> dict[str, Any]:
    """The JSON of a run: each measurement's spread, and the medians and ratios under the keys earlier runs used."""
    baseline = repeats["decode_only"]
    measurements = {name: spread(measured, baseline) for name, measured in repeats.items()}
    result: dict[str, Any] = {
        "devices": devices,
        "days": days,
        "device_hours": devices * days * 24,
        "repeat": repeat,
        "baseline": "decode_only",
        "measurements": measurements,
        "targets": {"first_s": 1.0, "cold_s": 1.0, "warm_s": 0.1},
    }
    for name, measured in measurements.items():
        result[f"{name}_s"] = measured["median_s"]
        if name != "decode_only":
            result[f"{name}_over_decode"] = measured["over_baseline"]
    return result


def print_table(result: dict[str, Any]) -> None:
    print(
        f"{result['device_hours']:,} device-hours ({result['devices']} devices × {result['days']} days), "
        f"median (min–max) of {result['repeat']}:"
    )
    rows = (
        ("decoding the stored hours (baseline)", "decode_only"),
        ("first comparison after start", "first"),
        ("cold comparison (no cached result)", "cold"),
        ("warm comparison (cached result)", "warm"),
        ("cold comparison with the charts", "charts"),
    )
    for label, name in rows:
        m = result["measurements"][name]
        figures = f"{m['median_s'] * 1000:8.1f} ms ({m['min_s'] * 1000:.1f}–{m['max_s'] * 1000:.1f})"
        target = result["targets"].get(f"{name}_s")
        wanted = f"target ≤ {target * 1000:.0f} ms" if target else ""
        collections = f"{sum(m['full_collections'])} full GC"
        print(f"  {label:<38} {figures:<28} {m['over_baseline']:6.2f}×  {collections:<10} {wanted}")


def influx_reads(sizes: list[tuple[int, int]], repeat: int) -> list[dict[str, Any]]:
    """Per size: raw points written to a private InfluxDB, the hours built from them (cold, nothing stored),
    and a late-data pass with nothing changed; median seconds of ``repeat`` and per device-hour."""
    profiles = load_profiles()
    profile = profiles["cobot_arm"]
    results: list[dict[str, Any]] = []
    with tempfile.TemporaryDirectory() as folder:
        influx = local_services.influxdb(Path(folder) / "influxdb")
        influx.start()
        try:
            for index, (device_count, days) in enumerate(sizes):
                settings = InfluxSettings(url=influx.url, database=f"bench_{index}")
                devices = [f"station-{i:02d}" for i in range(device_count)]
                the_plan = plan(devices, days)
                registry = DeviceRegistry(
                    [
                        DeviceEntry(site=the_plan.site, line=the_plan.line, device=d, profile="cobot_arm")
                        for d in devices
                    ],
                    profiles,
                )
                with InfluxClient(settings) as client:
                    client.ensure_database()
                    points = write_raw(client, the_plan, profile.measurement, days)
                    builds: list[float] = []
                    late_checks: list[float] = []
                    stored = 0
                    for _ in range(repeat):
                        with Database(default_url(Path(folder) / f"sql-{index}")) as database:
                            database.upgrade()
                            with database.engine.begin() as connection:
                                connection.execute(delete(rollups_table))
                            store = HourStore(RollupRepository(database), client, registry)
                            began = time.perf_counter()
                            stored = store.refresh(the_plan)
                            builds.append(time.perf_counter() - began)
                            began = time.perf_counter()
                            every_day = (time.time() - START.timestamp()) / 86_400 + 1  # look back over all of them
                            assert store.refresh(the_plan, late_days=every_day) == 0  # nothing changed: nothing read
                            late_checks.append(time.perf_counter() - began)
                hours = device_count * days * 24
                results.append(
                    {
                        "devices": device_count,
                        "days": days,
                        "device_hours": hours,
                        "points": points,
                        "hours_stored": stored,
                        "build_s": statistics.median(builds),
                        "build_repeats_s": builds,
                        "late_check_s": statistics.median(late_checks),
                        "late_check_repeats_s": late_checks,
                    }
                )
        finally:
            influx.stop()
    for result in results:
        for name in ("build", "late_check"):
            result[f"{name}_us_per_hour"] = result[f"{name}_s"] / result["device_hours"] * 1e6
            result[f"{name}_per_hour_over_smallest"] = result[f"{name}_us_per_hour"] / results[0][f"{name}_us_per_hour"]
    return results


def write_raw(client: InfluxClient, the_plan: DemonstrationPlan, measurement: str, days: int) -> int:
    """Each device's hours as a station sends them: three state changes, 20 parts of two products, a telemetry
    sample a minute. Returns the points written."""
    start_ms = int(START.timestamp() * 1000)
    written = 0
    for index, device in enumerate(the_plan.devices):
        tags = (("site", the_plan.site), ("line", the_plan.line), ("device", device))
        lines: list[str] = []
        seq = 0
        for hour in range(days * 24):
            at = start_ms + hour * HOUR_MS + index
            for offset, state, time_class in (
                (0, "running", "production"),
                (600_000, "fault", "unplanned_delay"),
                (900_000, "running", "production"),
            ):
                seq += 1
                lines.append(
                    encode_point(
                        STATE_MEASUREMENT,
                        tags,
                        [("state", state), ("time_class", time_class), ("seq", seq)],
                        at + offset,
                    )
                )
            for part in range(20):
                seq += 1
                fields: list[tuple[str, int | float | bool | str]] = [
                    ("produced", 1), ("good", 1), ("scrap", 0), ("rework", 0), ("cycle_time_s", 48.0 + part % 5),
                    ("seq", seq),
                ]  # fmt: skip
                product = "P1" if part < 14 else "P2"
                lines.append(
                    encode_point(
                        PRODUCTION_MEASUREMENT, (*tags, ("product", product)), fields, at + 960_000 + part * 120_000
                    )
                )
            for minute in range(60):
                seq += 1
                lines.append(
                    encode_point(
                        measurement, tags, [("power", 1200.0 + minute), ("seq", seq)], at + minute * 60_000 + 30_000
                    )
                )
            if len(lines) >= 20_000:
                written += _write(client, lines)
                lines = []
        written += _write(client, lines)
    return written


def _write(client: InfluxClient, lines: list[str]) -> int:
    result = client.write(lines)
    if result.status != 204:
        raise RuntimeError(f"InfluxDB refused the benchmark's points: HTTP {result.status}")
    return len(lines)


def print_scaling(result: dict[str, Any]) -> None:
    for run in result["scaling"]:
        print(
            f"{run['devices']:>4} devices × {run['days']:>3} days = {run['device_hours']:>8,} device-hours:"
            f" first {run['first_s']:7.2f} s, cold {run['cold_s']:7.2f} s, warm {run['warm_s'] * 1000:6.1f} ms;"
            f" cold {run['cold_us_per_hour']:6.1f} µs/hour ({run['cold_per_hour_over_smallest']:.2f}×);"
            f" accounting {run['accounting_s']:7.2f} s ({run['accounting_us_per_hour']:6.1f} µs/hour,"
            f" {run['accounting_per_hour_over_smallest']:.2f}×); comparison RSS {run['comparison_rss_before_mb']:,.0f}"
            f" → peak {run['comparison_peak_rss_mb']:,.0f} MB; process peak RSS {run['peak_rss_mb']:,.0f} MB"
        )
        print(
            f"{'':>15} with the charts: cold {run['charts_s']:7.2f} s ({run['charts_us_per_hour']:6.1f} µs/hour,"
            f" {run['charts_per_hour_over_smallest']:.2f}×), peak RSS {run['charts_peak_rss_mb']:,.0f} MB"
        )
    for read in result["influx_read"]:
        print(
            f"{read['devices']:>4} devices × {read['days']:>3} days from InfluxDB ({read['points']:,} points):"
            f" build {read['build_s']:6.2f} s ({read['build_us_per_hour']:,.0f} µs/hour,"
            f" {read['build_per_hour_over_smallest']:.2f}×), late-data pass {read['late_check_s']:5.2f} s"
            f" ({read['late_check_us_per_hour']:,.0f} µs/hour, {read['late_check_per_hour_over_smallest']:.2f}×)"
        )


if __name__ == "__main__":
    sys.exit(main())
