"""Which device-hours the KPI service reads from InfluxDB, and when: missing, unsettled, or forced."""

from __future__ import annotations

import datetime as dt
from collections.abc import Iterator, Mapping, Sequence
from pathlib import Path
from typing import Any

import pytest

from adapters.catalog import load_profiles
from adapters.influxdb import InfluxClient, InfluxSettings
from adapters.sql import Database, RollupRepository, default_url
from kpi_engine.service import EvaluationStopped, HourStore
from pilot_core.demonstration import DemonstrationPlan
from pilot_core.device_hours import HOUR_MS, DeviceHour
from pilot_core.device_rows import DeviceRows, chunks
from pilot_core.profiles import DeviceProfile
from pilot_core.registry import DeviceEntry, DeviceRegistry

START = dt.datetime(2026, 11, 2, tzinfo=dt.UTC)
START_MS = int(START.timestamp() * 1000)


class RecordingReader:
    """Stands in for InfluxDB: no points, and a note of every range asked for."""

    def __init__(self) -> None:
        self.asked: list[tuple[int, int]] = []

    def device_rows(
        self,
        site: str,
        line: str,
        device: str,
        profile: DeviceProfile,
        start_ms: int,
        end_ms: int,
        hours_with_data: set[int] | None = None,
    ) -> Iterator[DeviceRows]:
        self.asked.append((start_ms, end_ms))
        return iter([DeviceRows(device, True, start, end) for start, end in chunks(start_ms, end_ms)])

    def hours_with_data(
        self, site: str, line: str, measurements: dict[str, str], start_ms: int, end_ms: int
    ) -> dict[str, set[int]]:
        return {device: set() for device in measurements}

    def values_per_hour(
        self, site: str, line: str, measurements: dict[str, str], start_ms: int, end_ms: int
    ) -> dict[str, dict[int, int]]:
        return {device: {} for device in measurements}


def running_plan() -> DemonstrationPlan:
    return DemonstrationPlan.model_validate(
        {
            "name": "running pilot",
            "site": "s",
            "line": "l",
            "devices": ["press"],
            "output_devices": ["press"],
            "calendar": {"timezone": "UTC", "shifts": [{"start": "08:00", "end": "16:00"}]},
            "windows": [
                {"name": "before", "phase": "baseline", "start": START, "end": START + dt.timedelta(hours=10)},
                {
                    "name": "now",
                    "phase": "pilot",
                    "start": START + dt.timedelta(hours=10),
                    "end": START + dt.timedelta(hours=20),
                },
            ],
            "products": [{"id": "P", "ideal_cycle_time_s": 10}],
        }
    )


def test_hours_are_read_once_when_settled_and_again_only_while_they_may_change(tmp_path: Path) -> None:
    plan = running_plan()
    now = [START_MS / 1000 + 15 * 3600 + 60]  # 15:01 on the day: the pilot window is still running
    registry = DeviceRegistry([DeviceEntry(site="s", line="l", device="press", profile="cnc_machine")], load_profiles())
    with Database(default_url(tmp_path)) as database, InfluxClient(InfluxSettings()) as unused:
        database.upgrade()
        store = HourStore(RollupRepository(database), unused, registry, clock=lambda: now[0])
        reader = RecordingReader()
        store.reader = reader  # type: ignore[assignment]

        def refresh(force: bool = False) -> list[tuple[int, int]]:
            reader.asked.clear()
            store.refresh(plan, store.stamps(plan), force=force)
            return list(reader.asked)

        assert refresh() == [(START_MS, START_MS + 16 * HOUR_MS)]  # every hour begun so far
        assert not store.settled(plan, store.summaries(plan))
        now[0] += 30
        assert refresh() == []  # read half a minute ago: a burst of requests reads once
        now[0] += 60
        # Hours that ended more than two hours before they were stored are settled; the rest are read again.
        assert refresh() == [(START_MS + 13 * HOUR_MS, START_MS + 16 * HOUR_MS)]
        assert refresh(force=True) == [(START_MS, START_MS + 16 * HOUR_MS)]
        now[0] += 24 * 3600
        refresh()
        assert store.settled(plan, store.summaries(plan))
        assert refresh() == []


def test_a_store_that_is_stopping_stops_reading(tmp_path: Path) -> None:
    plan = running_plan()
    stopping = [False]
    registry = DeviceRegistry([DeviceEntry(site="s", line="l", device="press", profile="cnc_machine")], load_profiles())
    with Database(default_url(tmp_path)) as database, InfluxClient(InfluxSettings()) as unused:
        database.upgrade()
        clock = START_MS / 1000 + 15 * 3600
        store = HourStore(
            RollupRepository(database), unused, registry, clock=lambda: clock, stopping=lambda: stopping[0]
        )
        store.reader = RecordingReader()  # type: ignore[assignment]
        stopping[0] = True
        with pytest.raises(EvaluationStopped, match="the server is stopping"):
            store.refresh(plan, store.stamps(plan))
        assert store.summaries(plan) == [{}, {}]  # nothing read, nothing stored
        stopping[0] = False
        assert store.refresh(plan, store.stamps(plan)) == 15  # every hour begun by 15:00


class RecordingRollups(RollupRepository):
    """The real repository, noting the range of every read of stored hours."""

    def __init__(self, database: Database) -> None:
        super().__init__(database)
        self.asked: list[tuple[int, int]] = []

    def read_fingerprinted(
        self,
        site: str,
        line: str,
        devices: Sequence[str],
        start_ms: int,
        end_ms: int,
        known: Mapping[str, DeviceHour] | None = None,
    ) -> list[tuple[str, DeviceHour]]:
        self.asked.append((start_ms, end_ms))
        return super().read_fingerprinted(site, line, devices, start_ms, end_ms, known)


def test_hours_stored_between_windows_far_apart_are_never_read(tmp_path: Path) -> None:
    raw = running_plan().model_dump(mode="json")
    raw["windows"][1].update(start="2027-11-02T00:00:00Z", end="2027-11-02T10:00:00Z")  # a year later
    plan = DemonstrationPlan.model_validate(raw)
    registry = DeviceRegistry([DeviceEntry(site="s", line="l", device="press", profile="cnc_machine")], load_profiles())
    with Database(default_url(tmp_path)) as database, InfluxClient(InfluxSettings()) as unused:
        database.upgrade()
        rollups = RecordingRollups(database)
        # A year of hours of the same device, stored by other plans.
        between = [DeviceHour("press", START_MS + h * HOUR_MS) for h in range(10, 365 * 24)]
        rollups.upsert("s", "l", between)
        store = HourStore(rollups, unused, registry)
        assert store.stamps(plan) == {}
        assert store.read(plan) == {}
        assert rollups.asked == [(w.start_ms, w.end_ms) for w in plan.windows]


def test_the_hours_read_are_listed_again_without_reading_rows_until_the_line_is_written(tmp_path: Path) -> None:
    """Issue 23: a cold evaluation in a running server reads no row of an unchanged line (its roll-up mark has not
    moved), and one hour written since is read, decoded and served."""
    plan = running_plan()
    registry = DeviceRegistry([DeviceEntry(site="s", line="l", device="press", profile="cnc_machine")], load_profiles())
    with Database(default_url(tmp_path)) as database, InfluxClient(InfluxSettings()) as unused:
        database.upgrade()
        rollups = RollupRepository(database)
        rollups.upsert("s", "l", [DeviceHour("press", START_MS + i * HOUR_MS, energy_kwh=1.0) for i in range(20)])
        store = HourStore(rollups, unused, registry)
        first = store.read(plan)["press"]
        calls: list[int] = []
        listing = rollups.read_fingerprinted

        def counted(*args: Any, **kwargs: Any) -> list[tuple[str, DeviceHour]]:
            calls.append(1)
            return listing(*args, **kwargs)

        rollups.read_fingerprinted = counted  # type: ignore[method-assign]
        again = store.read(plan)["press"]
        assert calls == [] and all(a is b for a, b in zip(again, first, strict=True)) and len(again) == 20
        rollups.upsert("s", "l", [DeviceHour("press", START_MS + 5 * HOUR_MS, energy_kwh=2.0)])
        changed = store.read(plan)["press"]
        assert calls and [h.energy_kwh for h in changed] == [1.0] * 5 + [2.0] + [1.0] * 14
