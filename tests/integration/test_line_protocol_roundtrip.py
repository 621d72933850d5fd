"""Awkward ids and changing numeric types, through MQTT, line protocol and InfluxQL."""

from __future__ import annotations

import json

import pytest
from pydantic import ValidationError

from adapters.influxdb import InfluxClient, InfluxSettings
from adapters.mqtt import MqttSettings
from pilot_core.contract import topic_for
from pilot_core.ids import InvalidIdError
from pilot_core.influxql import quote_literal
from pilot_core.profiles import ProfileCatalog, parse_profile
from pilot_core.registry import DeviceEntry, DeviceRegistry
from pilot_core.validation import Rejection, RejectReason, validate_message
from tests.support import collector_settings, count_points, publish_all, running_collector, wait_until

PROFILE = """
id: test_sensor
version: "1.0.0"
name: Test sensor
metrics:
  - {name: level, unit: "1", type: float, interval_s: 1}
states:
  - {name: running, time_class: production}
production: {mode: count}
"""
TS = 1_793_577_600_000
AWKWARD = [
    "plain",
    "with space",
    "comma,inside",
    "equals=inside",
    'double"quote',
    "single'quote",
    r"back\slash",
    r"back\,slash-comma",
    r"two\\backslashes",
    "한국어 장비",
    "조립,라인 = 1",
    " leading and trailing ",
]


def test_awkward_ids_round_trip_exactly(
    mqtt_settings: MqttSettings, influx_settings: InfluxSettings, unique_id: str
) -> None:
    catalog = ProfileCatalog([parse_profile(PROFILE, "test_sensor.yaml")])
    site, line = "판교 site,=1", r"line\1 'A'"
    entries = [DeviceEntry(site=site, line=line, device=device, profile="test_sensor") for device in AWKWARD]
    registry = DeviceRegistry(entries, catalog)
    messages = []
    for index, device in enumerate(AWKWARD):
        messages.append(
            (
                topic_for(site, line, device, "telemetry"),
                json.dumps({"seq": 0, "ts": TS, "metrics": {"level": index}}).encode(),
            )
        )
        production = {"seq": 0, "ts": TS, "product": f'SKU "{device}"', "produced": 2, "good": 2}
        messages.append((topic_for(site, line, device, "production"), json.dumps(production).encode()))
    settings = collector_settings(mqtt_settings, influx_settings, f"{unique_id}-collector")
    with running_collector(settings, registry) as collector, InfluxClient(influx_settings) as client:
        publish_all(mqtt_settings, messages, f"{unique_id}-pub")
        wait_until(lambda: count_points(client, "production") == len(AWKWARD), what="production points")
        wait_until(lambda: count_points(client, "telemetry_test_sensor") == len(AWKWARD), what="telemetry points")
        assert collector.metrics.rejected._metrics == {}

        tag_values = client.query('SHOW TAG VALUES FROM "telemetry_test_sensor" WITH KEY = "device"')[0].values
        assert sorted(value for _, value in tag_values) == sorted(AWKWARD)
        for index, device in enumerate(AWKWARD):
            series = client.query(
                f'SELECT "level", "site", "line" FROM "telemetry_test_sensor" WHERE "device" = {quote_literal(device)}'
            )
            assert series, device
            (row,) = series[0].rows()
            assert row["level"] == float(index)
            assert (row["site"], row["line"]) == (site, line)
            product = client.query(
                f'SELECT "good", "product" FROM "production" WHERE "device" = {quote_literal(device)}'
            )
            assert product[0].rows()[0]["product"] == f'SKU "{device}"'


def test_a_newline_in_an_id_is_refused_with_a_clear_error() -> None:
    catalog = ProfileCatalog([parse_profile(PROFILE, "test_sensor.yaml")])
    # Registering such a device, building its topic, and receiving on it all refuse it.
    with pytest.raises(ValidationError, match="newline"):
        DeviceEntry(site="s", line="l", device="bad\nid", profile="test_sensor")
    with pytest.raises(InvalidIdError, match="newline"):
        topic_for("s", "l", "bad\nid", "telemetry")
    registry = DeviceRegistry([DeviceEntry(site="s", line="l", device="ok", profile="test_sensor")], catalog)
    payload = json.dumps({"seq": 0, "ts": TS, "metrics": {"level": 1.0}}).encode()
    # Mosquitto itself drops a publish whose topic has control characters; a
    # broker that let one through would still meet this check in the collector.
    result = validate_message("pilot/v1/s/l/bad\nid/telemetry", payload, registry, 10_000)
    assert isinstance(result, Rejection)
    assert result.reason is RejectReason.BAD_TOPIC
    assert "device id 'bad\\nid' contains a newline" in result.detail


def test_a_metric_sent_as_integer_then_float_has_no_type_conflict(
    mqtt_settings: MqttSettings, influx_settings: InfluxSettings, unique_id: str
) -> None:
    catalog = ProfileCatalog([parse_profile(PROFILE, "test_sensor.yaml")])
    registry = DeviceRegistry([DeviceEntry(site="s", line="l", device="d", profile="test_sensor")], catalog)
    values = [3, 3.5, 4, 0, -2, 1e-3, 7]
    topic = topic_for("s", "l", "d", "telemetry")
    messages = [
        (topic, json.dumps({"seq": seq, "ts": TS + seq, "metrics": {"level": value}}).encode())
        for seq, value in enumerate(values)
    ]
    settings = collector_settings(mqtt_settings, influx_settings, f"{unique_id}-collector")
    with running_collector(settings, registry) as collector, InfluxClient(influx_settings) as client:
        # One message per batch: the integer arrives first and creates the field.
        for message in messages:
            publish_all(mqtt_settings, [message], f"{unique_id}-pub")
            wait_until(lambda: collector.backlog == 0, what="the message to be written")
        wait_until(lambda: count_points(client, "telemetry_test_sensor") == len(values), what="all points")
        rows = client.query('SELECT "level" FROM "telemetry_test_sensor"')[0].rows()
        assert [row["level"] for row in rows] == [float(v) for v in values]
        field_types = client.query('SHOW FIELD KEYS FROM "telemetry_test_sensor"')[0].values
        assert ["level", "float"] in field_types
        assert collector.metrics.rejected._metrics == {}
