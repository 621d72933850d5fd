"""10,000 simulated messages from a whole line land exactly: counts and every field value."""

from __future__ import annotations

import json
from collections import defaultdict
from itertools import islice
from pathlib import Path
from typing import Any

from adapters.catalog import load_profiles
from adapters.influxdb import InfluxClient, InfluxSettings
from adapters.mqtt import MqttSettings
from pilot_core.contract import Channel
from pilot_core.influxql import quote_identifier, quote_literal
from pilot_core.profiles import MetricType, ProfileCatalog
from pilot_core.registry import DeviceRegistry
from pilot_core.validation import PRODUCTION_MEASUREMENT, STATE_MEASUREMENT, STATUS_MEASUREMENT
from simulators.line_model import LineModel, SimMessage, render
from simulators.scenario import load_scenario
from tests.support import collector_settings, publish_all, running_collector, wait_until

MESSAGES = 10_000
TAGS = {"site", "line", "device", "product"}


def _expected_rows(
    messages: list[SimMessage], catalog: ProfileCatalog, devices: dict[str, str]
) -> dict[tuple[str, str], list[dict[str, Any]]]:
    """(measurement, device) → the rows InfluxDB must hold, built from the payloads alone."""
    rows: dict[tuple[str, str], list[dict[str, Any]]] = defaultdict(list)
    for message in messages:
        body = json.loads(message.payload)
        profile = catalog[devices[message.device]]
        if message.channel is Channel.TELEMETRY:
            fields = {
                name: float(value) if profile.metric(name).type is MetricType.FLOAT else value  # type: ignore[union-attr]
                for name, value in body["metrics"].items()
            }
            rows[(profile.measurement, message.device)].append({"time": body["ts"], **fields, "seq": body["seq"]})
        elif message.channel is Channel.STATE:
            state = profile.state(body["state"])
            assert state is not None
            row = {"time": body["ts"], "state": body["state"], "time_class": state.time_class.value, "seq": body["seq"]}
            if "reason" in body:
                row["reason"] = body["reason"]
            rows[(STATE_MEASUREMENT, message.device)].append(row)
        elif message.channel is Channel.PRODUCTION:
            row = {k: body[k] for k in ("produced", "good", "scrap", "rework", "seq")}
            if "cycle_time_s" in body:
                row["cycle_time_s"] = float(body["cycle_time_s"])
            rows[(PRODUCTION_MEASUREMENT, message.device)].append(
                {"time": body["ts"], "product": body["product"], **row}
            )
        else:
            rows[(STATUS_MEASUREMENT, message.device)].append(
                {
                    "time": body["ts"],
                    "online": body["status"] == "online",
                    "agent_version": body["agent_version"],
                    "profile_version": body["profile_version"],
                    "seq": body["seq"],
                }
            )
    return rows


def _stored_rows(client: InfluxClient, measurement: str, device: str) -> list[dict[str, Any]]:
    series = client.query(f'SELECT * FROM {quote_identifier(measurement)} WHERE "device" = {quote_literal(device)}')
    assert len(series) <= 1
    stored = []
    for row in series[0].rows() if series else []:
        # SELECT * returns every column of the measurement; a device's row has nulls for other devices' fields.
        stored.append({k: v for k, v in row.items() if v is not None and (k not in TAGS or k == "product")})
    return stored


def test_ten_thousand_simulated_messages_land_exactly(
    mqtt_settings: MqttSettings, influx_settings: InfluxSettings, unique_id: str
) -> None:
    catalog = load_profiles()
    scenario = load_scenario(Path("pangyo_cobot_cell"), catalog)
    period = scenario.period("baseline")
    run = LineModel(scenario, catalog).simulate_period(period.name)
    # One record per message and a sample every 30 s, so that 10,000 messages span several shifts.
    messages = list(islice(render(run, catalog, batch_records=1, telemetry_interval_s=30), MESSAGES))
    assert len(messages) == MESSAGES
    devices = {d.id: d.profile for d in scenario.devices}
    assert len({devices[m.device] for m in messages}) >= 7, "every device type must be in the stream"
    assert {m.channel for m in messages} == set(Channel)

    registry = DeviceRegistry(scenario.registry_entries(), catalog)
    settings = collector_settings(mqtt_settings, influx_settings, f"collector-{unique_id}")
    with running_collector(settings, registry) as collector:
        publish_all(mqtt_settings, [(m.topic, m.payload) for m in messages], f"sim-{unique_id}")
        wait_until(lambda: collector.metrics.totals().points_written >= MESSAGES, 120, "all points written")
        totals = collector.metrics.totals()
    assert totals.received == MESSAGES
    assert totals.rejected == 0
    assert totals.duplicates == 0
    assert totals.points_written == MESSAGES

    expected = _expected_rows(messages, catalog, devices)
    with InfluxClient(influx_settings) as client:
        stored_total = 0
        for (measurement, device), rows in sorted(expected.items()):
            stored = _stored_rows(client, measurement, device)
            stored_total += len(stored)
            assert len(stored) == len(rows), f"{device} {measurement}: {len(stored)} points, expected {len(rows)}"
            assert stored == sorted(rows, key=lambda r: r["time"]), f"{device} {measurement}: values differ"
    assert stored_total == MESSAGES
