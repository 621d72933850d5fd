"""A line of unlike stations through MQTT, the collector, InfluxDB and the API (issue 17, items 8, 10, 12).

A cobot (42 s cycles), an AMR (208 s trips) and the line's output, a vision
inspection (about 50 s), work two hours a day; a CNC in scope sends nothing.
The line's cycle time must be the output station's, each station's must be its
own (in /kpis, /comparison and the report), percentiles over these few cycles
must be exact, the silent CNC must be warned about, and no effective n may
exceed its n.
"""

from __future__ import annotations

import datetime as dt
import json
import re
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
from pilot_core.validation import PRODUCTION_MEASUREMENT
from tests.api_support import admin_client
from tests.support import (
    count_points,
    publish_all,
    registered_collector,
    running_collector,
    wait_until,
)

SEOUL = dt.timezone(dt.timedelta(hours=9))
BASELINE_DAY = dt.datetime(2026, 11, 9, tzinfo=SEOUL)  # a Monday
PILOT_DAY = BASELINE_DAY + dt.timedelta(days=1)
LINE = "조립-1라인"
# device: (profile, production state, a telemetry metric, cycle seconds on the baseline day, on the pilot day)
STATIONS: dict[str, tuple[str, str, str, float, float]] = {
    "cobot-01": ("cobot_arm", "running", "power", 42.0, 40.0),
    "amr-01": ("amr", "moving", "speed", 208.0, 208.0),
    "vision-01": ("vision_inspection", "inspecting", "inference_ms", 50.372, 49.957),
}
SILENT = "cnc-01"


def at(day: dt.datetime, seconds: float) -> int:
    return int((day + dt.timedelta(hours=8, seconds=seconds)).timestamp() * 1000)


def cycle_times(base_s: float, count: int) -> list[float]:
    """Every cycle differs from the next by a millisecond or two: 50.372, 50.373, 50.374, 50.372, …"""
    return [round(base_s + 0.001 * (i % 3), 3) for i in range(count)]


def station_messages(site: str) -> tuple[list[tuple[str, bytes]], int]:
    """Two hours of each working station on both days; the number of production records."""
    messages: list[tuple[str, bytes]] = []
    records = 0
    for device, (_, state, metric, *cycles) in STATIONS.items():
        seq = {"state": 0, "production": 0, "telemetry": 0}

        def send(channel: str, body: dict[str, Any], device: str = device, seq: dict[str, int] = seq) -> None:
            messages.append(
                (topic_for(site, LINE, device, channel), json.dumps({"seq": seq[channel], **body}).encode())
            )
            seq[channel] += 1

        for day, cycle_s in zip((BASELINE_DAY, PILOT_DAY), cycles, strict=True):
            send("state", {"ts": at(day, 0), "state": state})
            send("state", {"ts": at(day, 7200), "state": "idle"})
            for hour in range(2):
                send("telemetry", {"ts": at(day, hour * 3600 + 30), "metrics": {metric: 1.0}})
            elapsed = 0.0
            for value in cycle_times(cycle_s, int(7200 // cycle_s)):
                elapsed += value
                send(
                    "production",
                    {"ts": at(day, elapsed), "product": "BRK-100", "produced": 1, "good": 1, "cycle_time_s": value},
                )
                records += 1
    return messages, records


def plan(site: str) -> dict[str, Any]:
    return {
        "name": "unlike stations",
        "site": site,
        "line": LINE,
        "devices": [*STATIONS, SILENT],
        "output_devices": ["vision-01"],
        "calendar": {"timezone": "Asia/Seoul", "shifts": [{"start": "08:00", "end": "10:00"}]},
        "windows": [
            {"name": "day 1", "phase": "baseline", "start": BASELINE_DAY.isoformat(), "end": PILOT_DAY.isoformat()},
            {
                "name": "day 2",
                "phase": "pilot",
                "start": PILOT_DAY.isoformat(),
                "end": (PILOT_DAY + dt.timedelta(days=1)).isoformat(),
            },
        ],
        "products": [{"id": "BRK-100", "ideal_cycle_time_s": 40}],
        "targets": [{"kpi": "cycle_time_mean", "direction": "decrease", "change_pct": 5}],
    }


@pytest.fixture
def line(
    tmp_path: Path, mqtt_settings: MqttSettings, influx_settings: InfluxSettings, unique_id: str
) -> Iterator[tuple[CollectorSettings, DeviceRegistry, str]]:
    site = f"판교-{unique_id}"
    entries = [DeviceEntry(site=site, line=LINE, device=d, profile=p[0]) for d, p in STATIONS.items()]
    entries.append(DeviceEntry(site=site, line=LINE, device=SILENT, profile="cnc_machine"))
    settings, registry = registered_collector(
        tmp_path, mqtt_settings, influx_settings, f"collector-{unique_id}", entries
    )
    yield settings, registry, site


def test_a_line_of_unlike_stations_reads_its_cycle_time_at_its_output(
    line: tuple[CollectorSettings, DeviceRegistry, str],
) -> None:
    settings, registry, site = line
    messages, records = station_messages(site)
    with running_collector(settings, registry), InfluxClient(settings.influx) as influx:
        publish_all(settings.mqtt, messages, f"device-{site}")
        where = f"\"site\" = '{site}'"
        wait_until(
            lambda: count_points(influx, PRODUCTION_MEASUREMENT, where=where) == records, what="every cycle stored"
        )

    with admin_client(create_app(settings)) as api:
        created = api.post("/v1/demonstrations", json=plan(site))
        assert created.status_code == 201, created.text
        ref = created.json()["id"]
        kpis = api.get(f"/v1/demonstrations/{ref}/kpis").json()
        comparison = api.get(f"/v1/demonstrations/{ref}/comparison").json()
        report = {
            lang: api.get(f"/v1/demonstrations/{ref}/report", params={"lang": lang}).text for lang in ("en", "ko")
        }

    # Item 12: the line's cycle time is the output station's, not every station's cycles pooled.
    for window, day in zip(kpis["windows"], (0, 1), strict=True):
        vision_s = STATIONS["vision-01"][3:][day]
        vision = cycle_times(vision_s, int(7200 // vision_s))
        assert window["kpis"]["cycle_time_mean"] == pytest.approx(sum(vision) / len(vision), rel=1e-12)
        stations = {s["device"]: s for s in window["stations"]}
        assert set(stations) == set(STATIONS)  # the silent CNC has no cycles
        for device, (*_, baseline_s, pilot_s) in STATIONS.items():
            own = cycle_times((baseline_s, pilot_s)[day], int(7200 // (baseline_s, pilot_s)[day]))
            assert stations[device]["cycles"] == len(own)
            assert stations[device]["cycle_time_mean"] == pytest.approx(sum(own) / len(own), rel=1e-12)
            assert stations[device]["output"] is (device == "vision-01")
        # Item 10: few cycles, so exact percentiles, and the document says how they were found.
        assert window["cycle_time_quantiles"] == {"method": "exact", "relative_accuracy": 0.0}
        assert stations["amr-01"]["cycle_time_p50"] == 208.001
    assert kpis["windows"][0]["kpis"]["cycle_time_p50"] == 50.373
    assert kpis["windows"][1]["kpis"]["cycle_time_p50"] == 49.958
    changes = {s["device"]: s for s in comparison["stations"]}
    assert set(changes) == set(STATIONS)
    assert changes["amr-01"]["relative_change"] == pytest.approx(0.0, abs=1e-9)
    assert changes["cobot-01"]["relative_change"] == pytest.approx(40 / 42 - 1, rel=1e-3)
    line_change = next(k for k in comparison["kpis"] if k["kpi"] == "cycle_time_mean")
    assert changes["vision-01"]["relative_change"] == line_change["relative_change"]

    # Item 8: the silent CNC is named, in /kpis and in the report; no effective n exceeds its n.
    expected = 2 * 3600  # two busy hours at the CNC profile's fastest rate, 1 s
    warnings = [
        f"device '{SILENT}' sent no telemetry in window '{w}' ({expected:,} samples expected, 0 received)"
        for w in ("day 1", "day 2")
    ]
    assert [w for w in kpis["warnings"] if "sent no telemetry" in w] == warnings
    assert (
        f"{SILENT}" in report["en"].split('id="warnings"')[1]
        and f"{expected:,}" in report["ko"].split('id="warnings"')[1]
    )
    assert "텔레메트리가 한 건도 수신되지 않았습니다" in report["ko"]
    for change in [*comparison["kpis"], *comparison["stations"]]:
        for phase in ("baseline", "pilot"):
            estimate = change[phase]
            assert estimate["effective_n"] is None or estimate["effective_n"] <= estimate["n"], change["kpi"]

    # The report gives each station's own cycle time, the output marked.
    for text in report.values():
        rows = re.findall(
            r'<tr data-device="([^"]+)"( class="output")?>', text.split('id="stations-table"')[1].split("</table>")[0]
        )
        assert rows == [("cobot-01", ""), ("amr-01", ""), ("vision-01", ' class="output"')]
