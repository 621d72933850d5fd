"""Reading device-hours from the real InfluxDB: days without data are not read, and the hours come out the same."""

from __future__ import annotations

from typing import Any

from adapters.catalog import load_profiles
from adapters.influxdb import InfluxClient, InfluxSettings, Series
from adapters.telemetry_reader import TelemetryReader
from pilot_core.device_hours import HOUR_MS
from pilot_core.device_rows import build_hours
from pilot_core.line_protocol import encode_point
from pilot_core.validation import PRODUCTION_MEASUREMENT, STATE_MEASUREMENT, STATUS_MEASUREMENT

DAY_MS = 24 * HOUR_MS
DAY0 = 1_791_244_800_000  # 2026-10-06 00:00 UTC
SITE, LINE = "site", "line"


class CountingClient:
    """The real client, counting the queries that read points (not the counts per hour)."""

    def __init__(self, client: InfluxClient) -> None:
        self.client = client
        self.reads = 0

    def query(self, influxql: str, **options: Any) -> list[Series]:
        if not influxql.startswith("SELECT count(*)"):
            self.reads += 1
        return self.client.query(influxql, **options)


def _points() -> list[str]:
    cobot = (("site", SITE), ("line", LINE), ("device", "cobot"))
    meter = (("site", SITE), ("line", LINE), ("device", "meter"))
    state = [("time_class", "production")]
    production = [("produced", 1), ("good", 1), ("scrap", 0), ("rework", 0), ("cycle_time_s", 41.5)]
    return [
        # Day 0: the cobot starts running, produces, sends telemetry; then nothing for days.
        encode_point(STATE_MEASUREMENT, cobot, [("state", "running"), *state, ("seq", 1)], DAY0 + 9 * HOUR_MS),
        *(
            encode_point(
                PRODUCTION_MEASUREMENT,
                (*cobot, ("product", "P")),
                [*production, ("seq", 2 + n)],
                DAY0 + 10 * HOUR_MS + n,
            )
            for n in range(5)
        ),
        encode_point("telemetry_cobot_arm", cobot, [("power", 120.0), ("seq", 10)], DAY0 + 11 * HOUR_MS),
        # Day 5: it idles, then its agent's will says it is gone.
        encode_point(
            STATE_MEASUREMENT, cobot, [("state", "idle"), ("time_class", "idle"), ("seq", 11)], DAY0 + 5 * DAY_MS
        ),
        encode_point(STATUS_MEASUREMENT, cobot, [("online", False), ("seq", 12)], DAY0 + 5 * DAY_MS + 3 * HOUR_MS),
        # The meter's register, read twice days apart.
        encode_point("telemetry_energy_meter", meter, [("active_energy_kwh", 100.0), ("seq", 1)], DAY0 + HOUR_MS),
        encode_point(
            "telemetry_energy_meter", meter, [("active_energy_kwh", 130.0), ("seq", 2)], DAY0 + 5 * DAY_MS + 1
        ),
    ]


def test_days_without_data_are_not_read_and_the_hours_are_the_same(influx_settings: InfluxSettings) -> None:
    profiles = load_profiles()
    devices = {"cobot": profiles["cobot_arm"], "meter": profiles["energy_meter"]}
    start, end = DAY0 - 3 * DAY_MS, DAY0 + 8 * DAY_MS  # eleven days
    with InfluxClient(influx_settings) as influx:
        influx.ensure_database()
        assert influx.write(_points()).status == 204
        counting = CountingClient(influx)
        reader = TelemetryReader(counting)  # type: ignore[arg-type]
        measurements = {device: profile.measurement for device, profile in devices.items()}
        with_data = reader.hours_with_data(SITE, LINE, measurements, start, end)
        assert with_data["cobot"] == {DAY0 + h * HOUR_MS for h in (9, 10, 11)} | {
            DAY0 + 5 * DAY_MS,
            DAY0 + 5 * DAY_MS + 3 * HOUR_MS,
        }
        for device, profile in devices.items():
            counting.reads = 0
            every_day = list(reader.device_rows(SITE, LINE, device, profile, start, end))
            read_all = counting.reads
            counting.reads = 0
            skipping = list(reader.device_rows(SITE, LINE, device, profile, start, end, with_data[device]))
            assert skipping == every_day  # the same rows, so the same hours, bit for bit
            assert [h.to_json() for rows in skipping for h in build_hours(rows)] == [
                h.to_json() for rows in every_day for h in build_hours(rows)
            ]
            # Read: the days with data and the two after each (the state in force carries over); not the rest.
            per_day = read_all // 11
            assert read_all == 11 * per_day
            assert counting.reads == 6 * per_day, (device, counting.reads, read_all)
        hours = [
            h
            for rows in reader.device_rows(SITE, LINE, "cobot", devices["cobot"], start, end)
            for h in build_hours(rows)
        ]
        on_day_2, on_day_3 = (next(h for h in hours if h.start_ms == DAY0 + d * DAY_MS) for d in (2, 3))
        assert on_day_2.state_at_start is not None and on_day_2.state_at_start.state == "running"
        assert on_day_3.state_at_start is None  # silent for longer than the lookback: unknown


def test_an_environment_sensors_hours_keep_its_mean_temperature(influx_settings: InfluxSettings) -> None:
    """The ambient an adjusted baseline regresses on: the environment sensor's °C metric, averaged per hour. A
    machine's own temperature (a cobot's motor) is not the ambient, and its hours keep none."""
    profiles = load_profiles()
    sensor = (("site", SITE), ("line", "weather"), ("device", "env"))
    cobot = (("site", SITE), ("line", "weather"), ("device", "cobot"))
    readings = [20.0, 21.0, 25.0]  # three readings in the first hour: mean 22
    points = [
        encode_point("telemetry_environment_sensor", sensor, [("temperature", t), ("humidity", 40.0), ("seq", n)],
                     DAY0 + n * 600_000)
        for n, t in enumerate(readings)
    ] + [
        encode_point("telemetry_environment_sensor", sensor, [("humidity", 41.0), ("seq", 9)], DAY0 + HOUR_MS + 1),
        encode_point("telemetry_cobot_arm", cobot, [("motor_temp", 60.0), ("seq", 1)], DAY0 + 60_000),
    ]  # fmt: skip
    with InfluxClient(influx_settings) as influx:
        influx.ensure_database()
        assert influx.write(points).status == 204
        reader = TelemetryReader(influx)
        first, second, *_ = reader.device_hours(
            SITE, "weather", "env", profiles["environment_sensor"], DAY0, DAY0 + 2 * HOUR_MS
        )
        assert first.ambient_c == 22.0 and first.telemetry_points == 3
        assert second.ambient_c is None and second.telemetry_points == 1  # telemetry, but no temperature in it
        (machine, *_) = reader.device_hours(SITE, "weather", "cobot", profiles["cobot_arm"], DAY0, DAY0 + HOUR_MS)
        assert machine.telemetry_points == 1 and machine.ambient_c is None
