"""KPIs read back through the API from telemetry that went device → MQTT → collector → InfluxDB.

The OEE worked example (a 480-min shift, 60 min of breaks, 47 min down, an
ideal cycle of 1 s, 19,271 parts, 423 rejects) is published as state changes
and production counts, and must come out of the API as A 88.81%, P 86.11%,
Q 97.80% and OEE 74.79%.
"""

from __future__ import annotations

import datetime as dt
import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from adapters.influxdb import InfluxClient, InfluxSettings
from adapters.mqtt import MqttSettings
from api.main import create_app
from collector.settings import CollectorSettings
from pilot_core.contract import topic_for
from pilot_core.registry import DeviceEntry, DeviceRegistry
from pilot_core.validation import PRODUCTION_MEASUREMENT, STATE_MEASUREMENT
from tests.api_support import admin_client
from tests.support import (
    count_points,
    publish_all,
    registered_collector,
    running_collector,
    wait_until,
)

SEOUL = dt.timezone(dt.timedelta(hours=9))
BASELINE_DAY = dt.datetime(2026, 11, 2, tzinfo=SEOUL)  # a Monday
PILOT_DAY = BASELINE_DAY + dt.timedelta(days=1)
DEVICE = "컨베이어-1"


def at(day: dt.datetime, hh: int, mm: int = 0) -> int:
    return int((day + dt.timedelta(hours=hh, minutes=mm)).timestamp() * 1000)


def worked_example_shift(day: dt.datetime) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
    """State changes and production counts of one 08:00–16:00 shift: 47 min down in three faults."""
    states = [{"ts": at(day, 8), "state": "running"}]
    for (h, m), minutes in (((9, 0), 20), ((11, 0), 17), ((15, 0), 10)):
        states += [
            {"ts": at(day, h, m), "state": "fault", "reason": "E-STOP"},
            {"ts": at(day, h, m + minutes), "state": "running"},
        ]
    states.append({"ts": at(day, 16), "state": "idle"})
    produced, scrap = 19_271, 423
    counts = []
    for i in range(48):  # a count every ten minutes
        share = produced // 48 + (1 if i < produced % 48 else 0)
        bad = scrap // 48 + (1 if i < scrap % 48 else 0)
        counts.append(
            {"ts": at(day, 8, 10 * i + 5), "product": "BOX", "produced": share, "good": share - bad, "scrap": bad}
        )
    return states, counts


def plan(site: str, line: str) -> dict[str, Any]:
    window = {"phase": "baseline", "start": BASELINE_DAY.isoformat(), "end": PILOT_DAY.isoformat()}
    return {
        "name": "OEE worked example",
        "name_ko": "설비종합효율 예제",
        "site": site,
        "line": line,
        "devices": [DEVICE],
        "output_devices": [DEVICE],
        "calendar": {
            "timezone": "Asia/Seoul",
            "shifts": [{"start": "08:00", "end": "16:00"}],
            "breaks": [
                {"start": "10:00", "end": "10:15"},
                {"start": "12:00", "end": "12:30"},
                {"start": "14:00", "end": "14:15"},
            ],
        },
        "windows": [
            {**window, "name": "shift 1"},
            {
                "name": "shift 2",
                "phase": "pilot",
                "start": PILOT_DAY.isoformat(),
                "end": (PILOT_DAY + dt.timedelta(days=1)).isoformat(),
            },
        ],
        "products": [{"id": "BOX", "ideal_cycle_time_s": 1}],
        "targets": [{"kpi": "oee", "direction": "increase", "change_pct": 5}],
    }


@pytest.fixture
def api_settings(
    tmp_path: Path, mqtt_settings: MqttSettings, influx_settings: InfluxSettings, unique_id: str
) -> Iterator[tuple[CollectorSettings, DeviceRegistry, str]]:
    site, line = f"시화-{unique_id}", "라인 1"
    entry = DeviceEntry(site=site, line=line, device=DEVICE, profile="conveyor")
    settings, registry = registered_collector(
        tmp_path, mqtt_settings, influx_settings, f"collector-{unique_id}", [entry]
    )
    yield settings, registry, site


def test_the_oee_worked_example_through_mqtt_influxdb_and_the_api(
    api_settings: tuple[CollectorSettings, DeviceRegistry, str],
) -> None:
    settings, registry, site = api_settings
    line = "라인 1"
    messages = []
    seq = {"state": 0, "production": 0}
    for day in (BASELINE_DAY, PILOT_DAY):
        states, counts = worked_example_shift(day)
        for channel, records in (("state", states), ("production", counts)):
            for record in records:
                body = {"seq": seq[channel], **record}
                seq[channel] += 1
                messages.append((topic_for(site, line, DEVICE, channel), json.dumps(body).encode()))
    with running_collector(settings, registry), InfluxClient(settings.influx) as influx:
        publish_all(settings.mqtt, messages, f"device-{site}")
        where = f"\"site\" = '{site}'"
        wait_until(
            lambda: (
                count_points(influx, STATE_MEASUREMENT, where=where) == seq["state"]
                and count_points(influx, PRODUCTION_MEASUREMENT, where=where) == seq["production"]
            ),
            what="the shift's records in InfluxDB",
        )

    with admin_client(create_app(settings)) as api:
        created = api.post("/v1/demonstrations", json=plan(site, line))
        assert created.status_code == 201, created.text
        ref = created.json()["id"]
        response = api.get(f"/v1/demonstrations/{ref}/kpis")
        assert response.status_code == 200, response.text
        document = response.json()
        shift = document["windows"][0]
        assert shift["name"] == "shift 1"
        percent = {
            k: round(shift["kpis"][k] * 100, 2) for k in ("availability", "effectiveness", "quality_ratio", "oee")
        }
        assert percent == {"availability": 88.81, "effectiveness": 86.11, "quality_ratio": 97.80, "oee": 74.79}
        assert shift["time_breakdown_s"]["pbt_s"] == 420 * 60
        assert shift["time_breakdown_s"]["planned_down_s"] == 60 * 60
        assert shift["time_breakdown_s"]["adet_s"] == 47 * 60
        assert (shift["counts"]["produced"], shift["counts"]["scrap"], shift["counts"]["failures"]) == (19_271, 423, 3)
        assert document["source"]["plan_version"] == 1 and document["source"]["plan_hash"].startswith("sha256:")
        assert document["source"]["hours_refreshed"] == 48 and not document["source"]["cached"]

        again = api.get(f"/v1/demonstrations/{ref}/kpis").json()
        assert again["source"]["cached"] and again["source"]["hours_refreshed"] == 0
        assert again["windows"] == document["windows"]
        # A replay (an agent resending its buffer to a collector that remembers nothing) lands on the same
        # series and timestamps: the KPIs count each cycle once.
        with running_collector(settings, registry) as collector:
            publish_all(settings.mqtt, messages, f"device-{site}-replay")
            wait_until(lambda: collector.metrics.totals().points_written == len(messages), what="the replay")
        forced = api.get(f"/v1/demonstrations/{ref}/kpis", params={"refresh": True}).json()
        assert forced["source"]["hours_refreshed"] == 48 and not forced["source"]["cached"]
        assert forced["windows"] == document["windows"]

        paths = api.get("/openapi.json").json()["paths"]
        for endpoint in ("kpis", "comparison"):
            responses = paths[f"/v1/demonstrations/{{ref}}/{endpoint}"]["get"]["responses"]
            assert {"200", "404", "409", "422", "503"} <= set(responses)
            assert (
                "text/csv" in responses["200"]["content"] and "application/problem+json" in responses["404"]["content"]
            )
        assert api.get("/v1/demonstrations/no-such-thing/kpis").headers["content-type"] == "application/problem+json"

        csv_text = api.get(f"/v1/demonstrations/{ref}/kpis", headers={"accept": "text/csv"}).text
        assert "shift 1,baseline" in csv_text and csv_text.startswith("demonstration,plan_version,plan_hash,")


def test_devices_seen_with_their_last_status(api_settings: tuple[CollectorSettings, DeviceRegistry, str]) -> None:
    settings, registry, site = api_settings
    line = "라인 1"
    now_ms = int(dt.datetime.now(dt.UTC).timestamp() * 1000)
    birth = {"seq": 1, "ts": now_ms - 60_000, "status": "online", "agent_version": "2.1.0", "profile_version": "1.0.0"}
    sample = {"seq": 1, "ts": now_ms - 1_000, "metrics": {"belt_speed": 0.8}}
    messages = [
        (topic_for(site, line, DEVICE, "status"), json.dumps(birth).encode()),
        (topic_for(site, line, DEVICE, "telemetry"), json.dumps(sample).encode()),
    ]
    with running_collector(settings, registry) as collector:
        publish_all(settings.mqtt, messages, f"device-{site}")
        wait_until(lambda: collector.metrics.totals().points_written == 2, what="both points")
    with admin_client(create_app(settings)) as api:
        response = api.get("/v1/devices/status")
        assert response.status_code == 200, response.text
        (device,) = [d for d in response.json() if d["site"] == site]
        assert (device["device"], device["profile"], device["online"], device["agent_version"]) == (
            DEVICE,
            "conveyor",
            True,
            "2.1.0",
        )
        assert round(dt.datetime.fromisoformat(device["last_seen"]).timestamp() * 1000) == now_ms - 1_000
        assert round(dt.datetime.fromisoformat(device["status_at"]).timestamp() * 1000) == now_ms - 60_000
        assert api.get("/v1/devices/status", params={"since_hours": 0}).status_code == 422


def publish_worked_example(settings: CollectorSettings, registry: DeviceRegistry, site: str, line: str) -> None:
    """Both days of the worked example, device → MQTT → collector → InfluxDB."""
    messages = []
    seq = {"state": 0, "production": 0}
    for day in (BASELINE_DAY, PILOT_DAY):
        states, counts = worked_example_shift(day)
        for channel, records in (("state", states), ("production", counts)):
            for record in records:
                messages.append((topic_for(site, line, DEVICE, channel), json.dumps({"seq": seq[channel], **record})))
                seq[channel] += 1
    with running_collector(settings, registry), InfluxClient(settings.influx) as influx:
        publish_all(settings.mqtt, [(topic, body.encode()) for topic, body in messages], f"device-{site}")
        where = f"\"site\" = '{site}'"
        wait_until(
            lambda: (
                count_points(influx, STATE_MEASUREMENT, where=where) == seq["state"]
                and count_points(influx, PRODUCTION_MEASUREMENT, where=where) == seq["production"]
            ),
            what="the shifts' records in InfluxDB",
        )


def test_every_kpi_has_its_unit_and_a_kpi_without_input_is_null_with_the_reason(
    api_settings: tuple[CollectorSettings, DeviceRegistry, str],
) -> None:
    """The worked example has no energy meter in scope: energy per good unit is null and says so, in /kpis,
    /comparison and their CSV; every KPI carries its unit; both documents give the same numbers, bit for bit."""
    settings, registry, site = api_settings
    line = "라인 1"
    publish_worked_example(settings, registry, site, line)
    with admin_client(create_app(settings)) as api:
        created = api.post("/v1/demonstrations", json=plan(site, line))
        assert created.status_code == 201, created.text
        ref = created.json()["id"]
        kpis = api.get(f"/v1/demonstrations/{ref}/kpis")
        assert kpis.status_code == 200, kpis.text
        document = kpis.json()
        for window in [*document["windows"], *document["phases"].values()]:
            assert set(window["units"]) == set(window["kpis"]), window["name"]
            assert window["kpis"]["energy_per_good_unit"] is None
            assert window["reasons"]["energy_per_good_unit"] == "no energy meter in scope"
            assert window["reasons"]["mtbf"] if window["kpis"]["mtbf"] is None else "mtbf" not in window["reasons"]
            assert set(window["reasons"]) == {k for k, v in window["kpis"].items() if v is None}
        units = document["phases"]["baseline"]["units"]
        assert (units["mtbf"], units["mttr"], units["availability"], units["throughput_rate"]) == (
            "h",
            "min",
            "ratio",
            "units/h",
        )
        assert units["cycle_time_p50"] == units["cycle_time_p95"] == units["cycle_time_mean"] == "s"

        comparison = api.get(f"/v1/demonstrations/{ref}/comparison").json()
        for change in comparison["kpis"]:
            for phase in ("baseline", "pilot"):
                # JSON floats as written: the same computation gives the same digits.
                assert change[phase]["value"] == document["phases"][phase]["kpis"][change["kpi"]], change["kpi"]
            assert change["unit"] == units[change["kpi"]]
        energy = next(k for k in comparison["kpis"] if k["kpi"] == "energy_per_good_unit")
        assert energy["baseline"]["value"] is None and energy["baseline"]["reason"] == "no energy meter in scope"
        assert "no energy meter in scope" in energy["note"] and "zero" not in energy["note"]

        kpis_csv = api.get(f"/v1/demonstrations/{ref}/kpis", params={"format": "csv"}).text.splitlines()
        assert kpis_csv[0].endswith(",kpi,value,unit,reason")
        assert any(",energy_per_good_unit,,kWh/unit,no energy meter in scope" in row for row in kpis_csv)
        assert any(",mtbf," in row and row.split(",")[-2] == "h" for row in kpis_csv)
        comparison_csv = api.get(f"/v1/demonstrations/{ref}/comparison", params={"format": "csv"}).text
        (energy_row,) = [row for row in comparison_csv.splitlines() if ",energy_per_good_unit," in row]
        assert "no energy meter in scope" in energy_row and ",kWh/unit," in energy_row


def test_last_seen_is_the_newest_points_own_time_to_the_millisecond(
    api_settings: tuple[CollectorSettings, DeviceRegistry, str],
) -> None:
    """Points over three hours on two channels; the newest, on neither hour's edge, is what last_seen says."""
    settings, registry, site = api_settings
    line = "라인 1"
    now_ms = int(dt.datetime.now(dt.UTC).timestamp() * 1000)
    newest = now_ms - 1_234
    samples = [
        {"seq": i, "ts": newest - (3 - i) * 3_600_000 // 2 - 777, "metrics": {"belt_speed": 0.8}} for i in range(3)
    ]
    samples.append({"seq": 3, "ts": newest, "metrics": {"belt_speed": 0.9}})
    states = [{"seq": 0, "ts": newest - 4_000_000, "state": "running"}]
    messages = [(topic_for(site, line, DEVICE, "telemetry"), json.dumps(s).encode()) for s in samples]
    messages += [(topic_for(site, line, DEVICE, "state"), json.dumps(s).encode()) for s in states]
    with running_collector(settings, registry) as collector:
        publish_all(settings.mqtt, messages, f"device-{site}")
        wait_until(lambda: collector.metrics.totals().points_written == len(messages), what="every point")
    with admin_client(create_app(settings)) as api:
        response = api.get("/v1/devices/status", params={"since_hours": 6})
        assert response.status_code == 200, response.text
        (device,) = [d for d in response.json() if d["site"] == site]
        assert dt.datetime.fromisoformat(device["last_seen"]) == dt.datetime.fromtimestamp(newest / 1000, dt.UTC)
