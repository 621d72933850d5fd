"""The live line through the API, from records that went device → MQTT → collector → InfluxDB today.

The line's zone is chosen so that it is about noon there, whatever time the
test runs: the morning's whole hours make today's OEE, which must be what the
KPI engine gives for a window over the same hours (and the worked numbers).
"""

from __future__ import annotations

import datetime as dt
import json
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo

import pytest

from adapters.influxdb import InfluxClient, InfluxSettings
from adapters.mqtt import MqttSettings
from api.main import create_app
from collector.settings import CollectorSettings
from pilot_core.access import Role
from pilot_core.contract import topic_for
from pilot_core.live import COLLECTOR_HEALTH_MEASUREMENT, DEAD_LETTER_MEASUREMENT, SILENT_AFTER_INTERVALS
from pilot_core.registry import DeviceEntry, DeviceRegistry
from pilot_core.validation import PRODUCTION_MEASUREMENT, STATE_MEASUREMENT
from tests.api_support import admin_client, key_headers
from tests.support import (
    count_points,
    publish_all,
    registered_collector,
    running_collector,
    wait_until,
)

DEVICE = "컨베이어-1"
LINE = "라인 1"


def noon_zone() -> ZoneInfo:
    """A fixed-offset zone where it is now between 12:00 and 13:00."""
    offset = 12 - dt.datetime.now(dt.UTC).hour  # -11 … +12
    return ZoneInfo("Etc/GMT" if offset == 0 else f"Etc/GMT{-offset:+d}")  # POSIX signs: Etc/GMT-9 is UTC+9


@pytest.fixture
def line(
    tmp_path: Path, mqtt_settings: MqttSettings, influx_settings: InfluxSettings, unique_id: str
) -> Iterator[tuple[CollectorSettings, DeviceRegistry, str]]:
    site = f"시화-{unique_id}"
    entry = DeviceEntry(site=site, line=LINE, device=DEVICE, profile="conveyor", organisation="startup-a")
    settings, registry = registered_collector(
        tmp_path, mqtt_settings, influx_settings, f"collector-{unique_id}", [entry], health_interval_s=0.2
    )
    yield settings, registry, site


def plan(site: str, zone: ZoneInfo, day: dt.datetime) -> dict[str, Any]:
    """Shift 01:00–05:00 with no breaks; the pilot window is this morning, the baseline the day before."""
    return {
        "name": "Live line",
        "site": site,
        "line": LINE,
        "devices": [DEVICE],
        "output_devices": [DEVICE],
        "calendar": {
            "timezone": zone.key,
            "workdays": ["mon", "tue", "wed", "thu", "fri", "sat", "sun"],
            "shifts": [{"start": "01:00", "end": "05:00"}],
        },
        "windows": [
            {
                "name": "yesterday",
                "phase": "baseline",
                "start": (day - dt.timedelta(days=1)).isoformat(),
                "end": day.isoformat(),
            },
            {
                "name": "this morning",
                "phase": "pilot",
                "start": day.isoformat(),
                "end": (day + dt.timedelta(hours=6)).isoformat(),
            },
        ],
        "products": [{"id": "BOX", "ideal_cycle_time_s": 6}],
    }


def morning(site: str, day: dt.datetime) -> list[tuple[str, bytes]]:
    """Online at 00:10; running from 00:30 with a fault 02:00–02:30; idle from 05:00, recorded again at 05:30
    with a reason; 50 units every ten minutes from 01:05 to 04:55, 2 of them scrap."""

    def ms(hh: int, mm: int = 0) -> int:
        return int((day + dt.timedelta(hours=hh, minutes=mm)).timestamp() * 1000)

    states = [
        {"ts": ms(0, 30), "state": "running"},
        {"ts": ms(2), "state": "fault", "reason": "E-STOP"},
        {"ts": ms(2, 30), "state": "running"},
        {"ts": ms(5), "state": "idle"},
        {"ts": ms(5, 30), "state": "idle", "reason": "no order"},
    ]
    counts = [{"ts": ms(1, 5 + 10 * i), "product": "BOX", "produced": 50, "good": 48, "scrap": 2} for i in range(24)]
    birth = {"ts": ms(0, 10), "status": "online", "agent_version": "2.1.0", "profile_version": "1.0.0"}
    records = [("status", [birth]), ("state", states), ("production", counts)]
    messages = [
        (topic_for(site, LINE, DEVICE, channel), json.dumps({"seq": n, **record}).encode())
        for channel, listed in records
        for n, record in enumerate(listed, 1)
    ]
    bad_state = {"seq": 99, "ts": ms(5, 40), "state": "daydreaming"}
    messages.append((topic_for(site, LINE, DEVICE, "state"), json.dumps(bad_state).encode()))
    # Another line's refusal is not this line's.
    elsewhere = {"seq": 1, "ts": ms(5, 40), "state": "running"}
    messages.append((topic_for(site, "라인 2", "unknown-01", "state"), json.dumps(elsewhere).encode()))
    return messages


def test_the_live_line_shows_devices_todays_oee_and_the_collectors_health(
    line: tuple[CollectorSettings, DeviceRegistry, str],
) -> None:
    settings, registry, site = line
    zone = noon_zone()
    day = dt.datetime.combine(dt.datetime.now(zone).date(), dt.time(), zone)
    with running_collector(settings, registry) as collector, InfluxClient(settings.influx) as influx:
        publish_all(settings.mqtt, morning(site, day), f"device-{site}")
        where = f"\"site\" = '{site}'"
        wait_until(
            lambda: (
                count_points(influx, STATE_MEASUREMENT, where=where) == 5
                and count_points(influx, PRODUCTION_MEASUREMENT, where=where) == 24
                and count_points(influx, DEAD_LETTER_MEASUREMENT, "count", where=where) == 2
            ),
            what="the morning's records and both dead letters in InfluxDB",
        )
        wait_until(lambda: collector.metrics.totals().rejected == 2, what="both refusals counted")
        wait_until(
            lambda: (
                count_points(influx, COLLECTOR_HEALTH_MEASUREMENT, "backlog", f"\"collector\" = '{settings.client_id}'")
                > 0
            ),
            what="a health point",
        )

        app = create_app(settings)
        with admin_client(app) as api:
            created = api.post("/v1/demonstrations", json=plan(site, zone, day))
            assert created.status_code == 201, created.text
            slug = created.json()["slug"]
            response = api.get(f"/v1/demonstrations/{slug}/live")
            assert response.status_code == 200, response.text
            live = response.json()

            (device,) = live["devices"]
            assert (device["device"], device["online"], device["state"], device["reason"]) == (
                DEVICE,
                True,
                "idle",
                "no order",
            )
            # Recorded again with a reason, the idle state has held since 05:00.
            assert dt.datetime.fromisoformat(device["state_since"]) == day + dt.timedelta(hours=5)
            assert device["state_for_s"] >= 7 * 3600
            assert dt.datetime.fromisoformat(device["last_message_at"]) == day + dt.timedelta(hours=5, minutes=30)
            assert dt.datetime.fromisoformat(device["status_at"]) == day + dt.timedelta(minutes=10)

            today = live["today"]
            assert dt.datetime.fromisoformat(today["start"]) == day
            # The whole hours up to now: 12, or 13 if the clock has just passed 13:00 there.
            assert dt.datetime.fromisoformat(today["end"]) - day in (dt.timedelta(hours=12), dt.timedelta(hours=13))
            # Availability 3.5 h / 4 h; effectiveness 1,200 × 6 s / 3.5 h; quality 1,152 / 1,200.
            assert round(today["kpis"]["availability"], 6) == 0.875
            assert round(today["kpis"]["effectiveness"], 6) == round(7200 / 12600, 6)
            assert round(today["kpis"]["quality_ratio"], 6) == 0.96
            assert (today["produced"], today["good"]) == (1200, 1152)
            # The engine's own window over the same morning gives the very same figures.
            kpis = api.get(f"/v1/demonstrations/{slug}/kpis").json()
            (pilot,) = [w for w in kpis["windows"] if w["name"] == "this morning"]
            assert {k: today["kpis"][k] for k in today["kpis"]} == {k: pilot["kpis"][k] for k in today["kpis"]}

            (health,) = [c for c in live["collectors"] if c["collector"] == settings.client_id]
            assert health["connected"] and health["healthy"] and not health["silent"]
            assert (health["backlog"], health["spool_batches"]) == (0, 0)

            (refused,) = live["dead_letters"]  # the other line's refusal is not shown
            assert (refused["reason"], refused["count"], refused["last_device"]) == ("unknown_state", 1, DEVICE)
            assert "daydreaming" in refused["last_detail"]

            # Tenancy: the line of a demonstration a caller cannot see is answered as one that does not exist.
            outsider = key_headers(app, Role.FACTORY_MANAGER, "factory-2")
            hidden = api.get(f"/v1/demonstrations/{slug}/live", headers=outsider)
            missing = api.get("/v1/demonstrations/no-such-demo/live", headers=outsider)
            assert (hidden.status_code, missing.status_code) == (404, 404)


def test_a_stopped_collector_is_shown_silent(line: tuple[CollectorSettings, DeviceRegistry, str]) -> None:
    settings, registry, site = line
    zone = noon_zone()
    day = dt.datetime.combine(dt.datetime.now(zone).date(), dt.time(), zone)
    with running_collector(settings, registry), InfluxClient(settings.influx) as influx:
        wait_until(
            lambda: (
                count_points(influx, COLLECTOR_HEALTH_MEASUREMENT, "backlog", f"\"collector\" = '{settings.client_id}'")
                > 0
            ),
            what="a health point",
        )
    # Its last report, written as it stopped, grows older than three of its intervals (each counted as 1 s at least).
    time.sleep(SILENT_AFTER_INTERVALS * max(settings.health_interval_s, 1.0) + 0.5)
    with admin_client(create_app(settings)) as api:
        slug = api.post("/v1/demonstrations", json=plan(site, zone, day)).json()["slug"]
        live = api.get(f"/v1/demonstrations/{slug}/live").json()
        (health,) = [c for c in live["collectors"] if c["collector"] == settings.client_id]
        assert health["silent"]
        assert [d["state"] for d in live["devices"]] == [None] and live["dead_letters"] == []
