"""The agent reading real protocol servers (pymodbus's, asyncua's): states and production derived from their
signals reach InfluxDB through the real broker and collector, exactly, through wraps, resets and outages."""

from __future__ import annotations

import asyncio
import datetime as dt
import logging
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
import yaml
from typer.testing import CliRunner

from adapters import local_services
from adapters.catalog import load_profiles
from adapters.influxdb import InfluxClient, InfluxSettings
from adapters.mqtt import MqttSettings
from adapters.telemetry_reader import TelemetryReader
from api.main import create_app
from collector.settings import CollectorSettings
from edge_agent.sources import DeviceDerivation, SourceAgents, check_sources
from pilot.cli import app
from pilot_core.registry import DeviceEntry, DeviceRegistry
from pilot_core.source_map import parse_source_map
from tests.api_support import admin_client
from tests.protocol_servers import (
    COIL,
    HOLDING,
    INPUT,
    ModbusServer,
    OpcUaSecurity,
    OpcUaServer,
    S7Server,
    make_opcua_security,
)
from tests.support import collector_settings, count_points, running_collector, wait_until

CATALOG = load_profiles()
OUTAGE_S = 30.0  # issue 19: the Modbus server down for 30 s, the broker down for 30 s


@contextmanager
def running_sources(source_map_text: str, mqtt: MqttSettings, outbox: Path) -> Iterator[SourceAgents]:
    """The agent process of ``pilot agent --sources``, in a thread: its event loop, its devices' agents."""
    source_map = parse_source_map(source_map_text, "agent.yaml", CATALOG)
    agents = SourceAgents(source_map, CATALOG, mqtt, outbox)
    agents.start()
    loop = asyncio.new_event_loop()
    stop = asyncio.Event()
    thread = threading.Thread(target=lambda: loop.run_until_complete(agents.run(stop)), daemon=True)
    thread.start()
    try:
        yield agents
    finally:
        loop.call_soon_threadsafe(stop.set)
        thread.join(30)
        loop.close()
        assert agents.stop() == 0


def produced(client: InfluxClient, device: str) -> int:
    series = client.query(f'SELECT sum("produced") FROM "production" WHERE "device" = \'{device}\'')
    return int(series[0].values[0][1]) if series else 0


def states(client: InfluxClient, device: str) -> list[str]:
    series = client.query(f'SELECT "state" FROM "state" WHERE "device" = \'{device}\'')
    return [row[1] for row in series[0].values] if series else []


def statuses(client: InfluxClient, device: str) -> list[bool]:
    series = client.query(f'SELECT "online" FROM "status" WHERE "device" = \'{device}\'')
    return [row[1] for row in series[0].values] if series else []


def fault_count(agents: SourceAgents, device: str, item: str, reason: str) -> float:
    labels = {"site": "판교", "line": "L1", "device": device, "item": item, "reason": reason}
    return agents.metrics.registry.get_sample_value("pilot_agent_item_faults_total", labels) or 0.0


@pytest.fixture
def pipeline(
    tmp_path: Path, mqtt_settings: MqttSettings, influx_settings: InfluxSettings, unique_id: str
) -> Iterator[tuple[InfluxClient, str]]:
    """The broker and the collector, with two registered devices: a conveyor and a CNC machine."""
    entries = [
        DeviceEntry(site="판교", line="L1", device=f"{unique_id}-conveyor", profile="conveyor"),
        DeviceEntry(site="판교", line="L1", device=f"{unique_id}-cnc", profile="cnc_machine"),
    ]
    settings = collector_settings(mqtt_settings, influx_settings, f"{unique_id}-collector")
    with running_collector(settings, DeviceRegistry(entries, CATALOG)), InfluxClient(influx_settings) as client:
        yield client, unique_id


def modbus_map(device: str, port: int) -> str:
    return f"""
devices:
  - site: 판교
    line: L1
    device: {device}
    profile: conveyor
    modbus: {{host: 127.0.0.1, port: {port}, unit: 1, poll_s: 0.1, timeout_s: 1}}
    items:
      - {{name: clamp_current, table: input, address: 0, type: float32, metric: motor_current}}
      - {{name: box_counter, table: holding, address: 10, type: uint16}}
      - {{name: broken, table: holding, address: 100}}  # beyond the device's registers: illegal address
    state:
      rules:
        - {{state: running, when: {{clamp_current: {{above: 4.0}}}}, for_s: 0.5}}
        - {{state: idle, when: {{clamp_current: {{below: 0.5}}}}, for_s: 0.5}}
    production:
      product: BOX-S
      counters: {{produced: {{item: box_counter}}}}
"""


def test_a_retrofit_current_clamp_and_a_wrapping_16_bit_counter_over_modbus_land_exactly_through_an_outage(
    pipeline: tuple[InfluxClient, str], mqtt_settings: MqttSettings, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    client, unique_id = pipeline
    device = f"{unique_id}-conveyor"
    began_ms = int(time.time() * 1000)
    server = ModbusServer()
    server.set_float32(INPUT, 0, 6.2)  # amperes: the motor runs
    server.set(HOLDING, 10, [65_530])  # the counter, near the top of its 16 bits
    server.start()
    caplog.set_level(logging.INFO, logger="pilot.agent.sources")
    try:
        with running_sources(modbus_map(device, server.port), mqtt_settings, tmp_path / "outbox") as agents:
            wait_until(lambda: states(client, device) == ["running"], what="running after 0.5 s above 4 A")
            server.set(HOLDING, 10, [65_535])
            wait_until(lambda: produced(client, device) == 5, what="5 boxes")
            server.set(HOLDING, 10, [4])  # wrapped: 65535 → 0 → 4
            wait_until(lambda: produced(client, device) == 10, what="10 boxes across the wrap")
            server.set_float32(INPUT, 0, 2.0)  # between the thresholds: still running (hysteresis)
            server.set_float32(INPUT, 0, 0.1)
            wait_until(lambda: states(client, device) == ["running", "idle"], what="idle below 0.5 A")

            outage_began = time.monotonic()
            server.stop()  # the Modbus device drops off the network for 30 s
            wait_until(lambda: statuses(client, device)[-1:] == [False], what="the device offline")
            server.set(HOLDING, 10, [20])  # it went on counting meanwhile: 16 more boxes
            time.sleep(max(0.0, OUTAGE_S - (time.monotonic() - outage_began)))
            server.start()
            wait_until(lambda: produced(client, device) == 26, what="the boxes counted during the outage")
            wait_until(lambda: states(client, device) == ["running", "idle", "idle"], what="idle again after it")
            server.set(HOLDING, 10, [0])  # an operator resets the counter, and 3 more boxes follow
            server.set(HOLDING, 10, [3])
            wait_until(lambda: produced(client, device) == 29, what="3 boxes after the reset")
            assert fault_count(agents, device, "broken", "illegal_address") > 1  # read, and failed, at every poll
        assert statuses(client, device)[-2:] == [False, True]  # offline during the outage, then online
        assert count_points(client, "telemetry_conveyor", "motor_current", f"\"device\" = '{device}'") > 5
        # What the KPI engine reads: the outage is unknown time (a None state) until the state is derived again.
        hours = list(
            TelemetryReader(client).device_hours(
                "판교", "L1", device, CATALOG["conveyor"], began_ms, int(time.time() * 1000)
            )
        )
        events = [event for hour in hours for event in hour.events]
        assert [event.state for event in events] == ["running", "idle", None, "idle"]
        assert events[3].ts_ms - events[2].ts_ms > OUTAGE_S * 1000 - 5000  # the outage's time is unknown time
        assert sum(totals.produced for hour in hours for totals in hour.production.values()) == 29
        warnings = [r.getMessage() for r in caplog.records if "item broken fails" in r.getMessage()]
        assert len(warnings) == 1 and "illegal_address" in warnings[0]  # logged once, not at every poll
    finally:
        server.close()


def test_a_modbus_item_that_times_out_fails_alone_and_a_device_that_hangs_is_offline(
    pipeline: tuple[InfluxClient, str], mqtt_settings: MqttSettings, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """A register that never answers in time is that item's fault (metric, one log line): the device stays
    online and its other items are read. Only when no item answers is the device offline."""
    client, unique_id = pipeline
    device = f"{unique_id}-conveyor"
    server = ModbusServer()
    server.set_float32(INPUT, 0, 6.2)
    server.set(HOLDING, 10, [100])
    server.slow[(HOLDING, 20)] = 5.0  # the map's timeout is 1 s
    server.start()
    source_map = modbus_map(device, server.port).replace(
        "      - {name: broken", "      - {name: slow_register, table: holding, address: 20}\n      - {name: broken"
    )
    caplog.set_level(logging.INFO, logger="pilot.agent.sources")
    try:
        with running_sources(source_map, mqtt_settings, tmp_path / "outbox") as agents:
            wait_until(lambda: states(client, device) == ["running"], what="running, the slow item notwithstanding")
            server.set(HOLDING, 10, [105])
            wait_until(lambda: produced(client, device) == 5, what="5 boxes counted by the other items")
            wait_until(
                lambda: fault_count(agents, device, "slow_register", "timeout") >= 2, what="the timeouts counted"
            )
            assert fault_count(agents, device, "broken", "illegal_address") >= 1
            assert statuses(client, device) == [True]  # its birth; never offline for one slow item

            server.slow_all = 5.0  # the device hangs: its port is open, nothing answers
            wait_until(lambda: statuses(client, device)[-1:] == [False], what="offline when no item answers")
            server.set(HOLDING, 10, [108])
            server.slow_all = 0.0
            wait_until(lambda: statuses(client, device)[-1:] == [True], what="online once it answers again")
            wait_until(lambda: produced(client, device) == 8, what="the 3 boxes made while it hung")
        assert statuses(client, device) == [True, False, True]
        warnings = [r.getMessage() for r in caplog.records if "item slow_register fails" in r.getMessage()]
        assert len(warnings) == 1 and "timeout" in warnings[0]  # logged once, not at every poll
    finally:
        server.close()


def opcua_map(device: str, endpoint: str) -> str:
    return f"""
devices:
  - site: 판교
    line: L1
    device: {device}
    profile: cnc_machine
    opcua: {{endpoint: "{endpoint}", publishing_interval_ms: 100, sampling_interval_ms: 50, timeout_s: 2}}
    items:
      - {{name: run_state, browse_path: "2:CNC/2:RunState"}}
      - {{name: part_count, node: "ns=2;s=CNC.PartCount"}}
      - {{name: spindle, node: "ns=2;s=CNC.SpindleSpeed", metric: spindle_speed, deadband: 1.0}}
    state:
      item: run_state
      map: {{0: idle, 1: cutting, 3: alarm}}
    production:
      product: SHAFT-20
      counters: {{produced: {{item: part_count, bits: 32}}}}
"""


def test_a_cnc_over_opcua_restarted_with_a_node_gone_is_resubscribed_and_the_vanished_node_reported(
    pipeline: tuple[InfluxClient, str], mqtt_settings: MqttSettings, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    client, unique_id = pipeline
    device = f"{unique_id}-cnc"
    server = OpcUaServer()
    server.values["PartCount"].Value = 100
    server.start()
    caplog.set_level(logging.INFO, logger="pilot.agent.sources")
    try:
        with running_sources(opcua_map(device, server.endpoint), mqtt_settings, tmp_path / "outbox") as agents:
            wait_until(lambda: states(client, device) == ["idle"], what="idle from state number 0")
            server.set("RunState", 1)
            server.set("SpindleSpeed", 8000.0)
            wait_until(lambda: states(client, device) == ["idle", "cutting"], what="cutting")
            for part in (1, 2, 3):
                server.set("PartCount", 100 + part)
                wait_until(lambda: produced(client, device) == part, what=f"part {part}")  # noqa: B023 - waited here

            server.stop()  # the controller restarts: its session and our subscription are gone
            wait_until(lambda: statuses(client, device)[-1:] == [False], what="the device offline")
            server.set("RunState", 3)
            server.start(with_part_count=False)  # ... and comes back without the part counter node
            wait_until(lambda: states(client, device)[-1:] == ["alarm"], what="alarm, over a new subscription")
            wait_until(
                lambda: fault_count(agents, device, "part_count", "bad_node_id") >= 1, what="the vanished node reported"
            )
            server.set("SpindleSpeed", 1200.0)
            spindle = f'"device" = \'{device}\' AND "spindle_speed" = 1200'
            wait_until(
                lambda: count_points(client, "telemetry_cnc_machine", "spindle_speed", spindle) >= 1,
                what="the other items still read",
            )
        assert produced(client, device) == 3
        assert statuses(client, device)[-2:] == [False, True]
        (cycles,) = client.query(f'SELECT "produced", "cycle_time_s" FROM "production" WHERE "device" = \'{device}\'')
        assert [row[1] for row in cycles.values] == [1, 1, 1] and all(row[2] > 0 for row in cycles.values)
        assert any("item part_count fails (bad_node_id)" in r.getMessage() for r in caplog.records)
    finally:
        server.close()


def secured_cnc(name: str, endpoint: str, security: OpcUaSecurity, mode: str, identity: str) -> str:
    """A device of a source map reading the secured server over Basic256Sha256 (``mode`` None: unsecured)."""
    secured = (
        f"\n      security_policy: Basic256Sha256"
        f'\n      certificate: "{security.agent_certificate}"'
        f'\n      private_key: "{security.agent_key}"'
    )
    return f"""
  - site: 판교
    line: L1
    device: {name}
    profile: cnc_machine
    opcua:
      endpoint: "{endpoint}"
      security_mode: {mode}{secured if mode != "None" else ""}
      {identity}
      publishing_interval_ms: 100
      sampling_interval_ms: 50
      timeout_s: 5
    items:
      - {{name: run_state, node: "ns=2;s=CNC.RunState"}}
      - {{name: part_count, node: "ns=2;s=CNC.PartCount"}}
    state: {{item: run_state, map: {{0: idle, 1: cutting}}}}
"""


def test_opcua_sign_and_sign_and_encrypt_with_a_user_and_password_or_a_user_certificate(
    tmp_path: Path, mqtt_settings: MqttSettings, monkeypatch: pytest.MonkeyPatch
) -> None:
    """asyncua's server offering only Basic256Sha256 Sign and SignAndEncrypt, to one user (its password or its
    certificate): the agent reads and subscribes over each; a wrong password or no security is refused, clearly."""
    security = make_opcua_security(tmp_path / "pki")
    server = OpcUaServer(security)
    server.values["PartCount"].Value = 7
    server.start()
    monkeypatch.setenv("CNC_PASSWORD", security.password)
    monkeypatch.setenv("WRONG_PASSWORD", "guess")
    user = "username: operator\n      password_env: CNC_PASSWORD"
    certificate = f'user_certificate: "{security.user_certificate}"\n      user_private_key: "{security.user_key}"'
    devices = {
        "signed-user": ("Sign", user),
        "encrypted-user": ("SignAndEncrypt", user),
        "encrypted-certificate": ("SignAndEncrypt", certificate),
        "wrong-password": ("SignAndEncrypt", "username: operator\n      password_env: WRONG_PASSWORD"),
        "unsecured": ("None", user),
    }
    text = "devices:" + "".join(secured_cnc(name, server.endpoint, security, *how) for name, how in devices.items())
    try:
        results = {
            name.rsplit("/", 1)[1]: (values, why)
            for name, values, _, why in asyncio.run(check_sources(parse_source_map(text, "agent.yaml", CATALOG)))
        }
        for name in ("signed-user", "encrypted-user", "encrypted-certificate"):
            values, why = results[name]
            assert why is None and {v.item: v.value for v in values} == {"run_state": 0, "part_count": 7}, name
        assert "BadUserAccessDenied" in str(results["wrong-password"][1])
        assert results["unsecured"][1] is not None  # the server offers no unsecured endpoint

        subscribed = "devices:" + secured_cnc(
            "encrypted-certificate", server.endpoint, security, *devices["encrypted-certificate"]
        )
        with running_sources(subscribed, mqtt_settings, tmp_path / "outbox") as agents:
            (derivation,) = agents.derivations
            wait_until(lambda: derivation.state == "idle", what="idle over an encrypted subscription")
            server.set("RunState", 1)
            wait_until(lambda: derivation.state == "cutting", what="the change delivered over it")
    finally:
        server.close()


def test_an_agent_restarted_resumes_from_the_kept_counter_reading_counting_nothing_twice(
    pipeline: tuple[InfluxClient, str], mqtt_settings: MqttSettings, tmp_path: Path
) -> None:
    client, unique_id = pipeline
    device = f"{unique_id}-conveyor"
    server = ModbusServer()
    server.set(HOLDING, 10, [1_000])
    server.start()
    source_map = modbus_map(device, server.port)
    try:
        with running_sources(source_map, mqtt_settings, tmp_path / "outbox"):
            wait_until(lambda: count_points(client, "status", "online", f"\"device\" = '{device}'") >= 1, what="birth")
            server.set(HOLDING, 10, [1_007])
            wait_until(lambda: produced(client, device) == 7, what="7 boxes")
        server.set(HOLDING, 10, [1_012])  # 5 boxes while the agent is stopped (an update, a reboot)
        with running_sources(source_map, mqtt_settings, tmp_path / "outbox"):
            wait_until(lambda: produced(client, device) == 12, what="the 5 boxes made while the agent was down")
            server.set(HOLDING, 10, [1_013])
            wait_until(lambda: produced(client, device) == 13, what="one more")
        assert produced(client, device) == 13
    finally:
        server.close()


def test_pilot_agent_check_reads_each_item_once_and_names_what_fails(tmp_path: Path, unique_id: str) -> None:
    server = ModbusServer()
    server.set_float32(INPUT, 0, 6.5)
    server.set(HOLDING, 10, [42])
    server.start()
    agent_yaml = tmp_path / "agent.yaml"
    try:
        agent_yaml.write_text(modbus_map("press-1", server.port), encoding="utf-8")
        result = CliRunner().invoke(app, ["agent", "--sources", str(agent_yaml), "--check"])
        assert result.exit_code == 1
        assert "판교/L1/press-1: reachable" in result.stdout
        assert "clamp_current = 6.5" in result.stdout and "box_counter = 42" in result.stdout
        assert "broken: illegal_address: holding 100: Modbus exception 2" in result.stdout
        assert "0 of 1 sources unreachable, 1 items failing" in result.stderr

        agent_yaml.write_text(modbus_map("press-1", server.port).replace("      - {name: broken", "#"), "utf-8")
        result = CliRunner().invoke(app, ["agent", "--sources", str(agent_yaml), "--check"])
        assert result.exit_code == 0, result.output
        assert "1 sources reachable, every item read" in result.stdout
    finally:
        server.close()
    # The server is gone: an unreachable endpoint is a clear error at check time.
    result = CliRunner().invoke(app, ["agent", "--sources", str(agent_yaml), "--check"])
    assert result.exit_code == 1
    assert f"판교/L1/press-1: unreachable: modbus://127.0.0.1:{server.port}/1 does not answer" in result.stdout
    assert "1 of 1 sources unreachable" in result.stderr


def test_pilot_agent_refuses_a_source_map_naming_its_file_line_and_item(tmp_path: Path) -> None:
    agent_yaml = tmp_path / "agent.yaml"
    agent_yaml.write_text(modbus_map("press-1", 502).replace("metric: motor_current", "metric: torque"), "utf-8")
    result = CliRunner().invoke(app, ["agent", "--sources", str(agent_yaml), "--check"])
    assert result.exit_code == 1
    assert f"{agent_yaml}:9: devices[0] (판교/L1/press-1).items[0] (clamp_current).metric:" in result.stderr
    assert "profile conveyor has no metric 'torque'" in result.stderr


def test_a_broker_outage_loses_nothing_the_agent_derived_from_its_sources(
    tmp_path: Path, influx_settings: InfluxSettings, unique_id: str
) -> None:
    device = f"{unique_id}-conveyor"
    entry = DeviceEntry(site="판교", line="L1", device=device, profile="conveyor")
    broker = local_services.mosquitto(tmp_path / "mosquitto")
    broker.start()
    mqtt = MqttSettings(host="127.0.0.1", port=broker.port)
    settings = collector_settings(mqtt, influx_settings, f"{unique_id}-collector", spool_dir=tmp_path / "spool")
    server = ModbusServer()
    server.set_float32(INPUT, 0, 6.0)
    server.set(HOLDING, 10, [65_520])
    server.start()
    try:
        with (
            running_collector(settings, DeviceRegistry([entry], CATALOG)),
            InfluxClient(influx_settings) as client,
            running_sources(modbus_map(device, server.port), mqtt, tmp_path / "outbox") as agents,
        ):
            (derivation,) = agents.derivations
            wait_until(lambda: states(client, device) == ["running"], what="running")
            outage_began = time.monotonic()
            broker.stop()  # the plant network to the broker drops for 30 s; the machine goes on
            server.set(HOLDING, 10, [65_535])
            wait_until(lambda: derivation.agent.pending >= 1, what="15 boxes recorded in the outbox")
            server.set(HOLDING, 10, [24])  # wrapped while the broker was away: 40 boxes in all
            server.set_float32(INPUT, 0, 0.2)
            wait_until(lambda: derivation.state == "idle", what="idle derived while cut off")
            server.set_float32(INPUT, 0, 6.0)
            wait_until(lambda: derivation.state == "running", what="running again while cut off")
            server.set(HOLDING, 10, [31])  # 7 more: 47 in all
            time.sleep(max(0.0, OUTAGE_S - (time.monotonic() - outage_began)))
            assert produced(client, device) == 0 and states(client, device) == ["running"]
            broker.start()
            wait_until(lambda: produced(client, device) == 47, what="the 47 boxes once the broker is back")
            # The states derived while cut off, then the last one stated again with the reconnection's birth (the
            # broker published the agent's will: without it the device would be unknown until its next change).
            wait_until(
                lambda: states(client, device) == ["running", "idle", "running", "running"],
                what="the states once it is back",
            )
            assert statuses(client, device).count(True) == 2  # a birth per connection to the broker
            (births,) = client.query(f'SELECT "online" FROM "status" WHERE "device" = \'{device}\' AND "online" = true')
            (stated,) = client.query(f'SELECT "state" FROM "state" WHERE "device" = \'{device}\'')
            assert stated.values[-1][0] == births.values[-1][0]  # stored with the birth
    finally:
        server.close()
        broker.stop()


EXAMPLES = Path(__file__).resolve().parents[2] / "examples"


def test_the_documented_example_source_maps_read_every_item_of_real_servers(tmp_path: Path) -> None:
    """docs/agent.md's examples, pointed at pymodbus's, asyncua's and python-snap7's servers, not the plant's."""
    modbus, opcua, plc = ModbusServer(), OpcUaServer(), S7Server()
    modbus.set_float32(INPUT, 0, 5.5)
    modbus.set(INPUT, 2, [150])
    modbus.set(HOLDING, 10, [65_535])
    modbus.start()
    opcua.start()
    try:
        example = (EXAMPLES / "agent-modbus.yaml").read_text(encoding="utf-8")
        (tmp_path / "modbus.yaml").write_text(example.replace("port: 5020", f"port: {modbus.port}"), "utf-8")
        result = CliRunner().invoke(app, ["agent", "--sources", str(tmp_path / "modbus.yaml"), "--check"])
        assert result.exit_code == 0, result.output
        for line in ("clamp_current = 5.5", "belt_speed_raw = 150", "jam_switch = False", "box_counter = 65535"):
            assert line in result.stdout

        example = (EXAMPLES / "agent-opcua.yaml").read_text(encoding="utf-8")
        example = example.replace("opc.tcp://127.0.0.1:4840/pilot/", opcua.endpoint)
        (tmp_path / "opcua.yaml").write_text(example, "utf-8")
        result = CliRunner().invoke(app, ["agent", "--sources", str(tmp_path / "opcua.yaml"), "--check"])
        assert result.exit_code == 0, result.output
        for line in ("run_state = 0", "part_count = 0", "spindle = 0.0"):
            assert line in result.stdout

        plc.set(0, "B", 0b10)  # DB10.DBX0.1
        plc.set(4, "f", 0.25)
        plc.set(8, "I", 4_000_000_000)
        plc.start()
        example = (EXAMPLES / "agent-s7.yaml").read_text(encoding="utf-8")
        (tmp_path / "s7.yaml").write_text(example.replace("port: 102", f"port: {plc.port}"), "utf-8")
        result = CliRunner().invoke(app, ["agent", "--sources", str(tmp_path / "s7.yaml"), "--check"])
        assert result.exit_code == 0, result.output
        for line in ("jam = True", "motor_amps = 0.25", "strokes = 4000000000"):
            assert line in result.stdout
    finally:
        modbus.close()
        opcua.close()
        plc.stop()


def s7_map(device: str, port: int) -> str:
    return f"""
devices:
  - site: 판교
    line: L1
    device: {device}
    profile: conveyor
    s7: {{host: 127.0.0.1, port: {port}, rack: 0, slot: 1, poll_s: 0.1}}
    items:
      - {{name: jam, db: 10, offset: 0, type: bool, bit: 1, metric: jam_detected}}
      - {{name: current, db: 10, offset: 4, type: real, metric: motor_current}}  # DB10.DBD4 REAL
      - {{name: boxes, db: 10, offset: 8, type: word}}  # DB10.DBW8, 16 bits
      - {{name: missing, db: 11, offset: 0, type: word}}  # no DB11 in this PLC
    state:
      rules:
        - {{state: running, when: {{current: {{above: 4.0}}}}, for_s: 0.5}}
        - {{state: idle, when: {{current: {{below: 0.5}}}}, for_s: 0.5}}
    production:
      product: BOX-S
      counters: {{produced: {{item: boxes}}}}
"""


def test_an_s7_plc_data_block_wrapping_counter_and_an_outage_land_exactly(
    pipeline: tuple[InfluxClient, str], mqtt_settings: MqttSettings, tmp_path: Path
) -> None:
    client, unique_id = pipeline
    device = f"{unique_id}-conveyor"
    plc = S7Server()
    plc.set(4, "f", 6.0)
    plc.set(8, "H", 65_530)
    plc.start()
    try:
        with running_sources(s7_map(device, plc.port), mqtt_settings, tmp_path / "outbox") as agents:
            wait_until(lambda: states(client, device) == ["running"], what="running above 4 A")
            plc.set(8, "H", 65_535)
            wait_until(lambda: produced(client, device) == 5, what="5 boxes")
            plc.set(8, "H", 2)  # wrapped
            wait_until(lambda: produced(client, device) == 8, what="8 boxes across the wrap")
            wait_until(lambda: fault_count(agents, device, "missing", "illegal_address") >= 1, what="DB11 reported")
            plc.stop()
            wait_until(lambda: statuses(client, device)[-1:] == [False], what="the PLC offline")
            plc.set(8, "H", 12)  # 10 more boxes while the network was down
            plc.start()
            wait_until(lambda: produced(client, device) == 18, what="the boxes counted during the outage")
            wait_until(lambda: statuses(client, device)[-1:] == [True], what="the PLC online again")
        assert produced(client, device) == 18
    finally:
        plc.stop()


def conveyor_scenario_map(device: str, port: int) -> str:
    return f"""
devices:
  - site: 판교
    line: L1
    device: {device}
    profile: conveyor
    modbus: {{host: 127.0.0.1, port: {port}, unit: 1, poll_s: 0.1, timeout_s: 1}}
    items:
      - {{name: clamp_current, table: input, address: 0, type: float32, metric: motor_current}}
      - {{name: jam_switch, table: coil, address: 0, metric: jam_detected}}
      - {{name: box_counter, table: holding, address: 10, type: uint16}}
    state:
      rules:
        - {{state: jammed, when: {{jam_switch: {{equals: true}}}}}}
        - {{state: running, when: {{clamp_current: {{above: 4.0}}}}, for_s: 0.5}}
        - {{state: idle, when: {{clamp_current: {{below: 0.5}}}}, for_s: 0.5}}
    production:
      product: BOX-S
      counters: {{produced: {{item: box_counter}}}}
"""


def at(seconds: float) -> dt.datetime:
    return dt.datetime.fromtimestamp(seconds, dt.UTC)


SHIFT_S = 12
Step = tuple[int, Callable[[], None], str | None]  # seconds into the shift, a change on the device, the state due


@dataclass
class PlayedShift:
    """A scripted shift as it happened: when it started and ended, each state change's time, and the slack."""

    start: float
    end: float
    changes: list[tuple[float, str]]  # (when the test changed the device, the state it calls for)
    slack_s: float  # Σ over the changes of how late the agent may have dated them: the tolerance of the times

    def truth(self, first_state: str, element: dict[str, str]) -> dict[str, float]:
        """Seconds of each ISO 22400 time element in the shift, from the states' true intervals."""
        seconds = dict.fromkeys(element.values(), 0.0)
        intervals = zip([(self.start, first_state), *self.changes], [*self.changes, (self.end, "")], strict=True)
        for (since, state), (until, _) in intervals:
            seconds[element[state]] += until - since
        return seconds


def play_shift(derivation: DeviceDerivation, steps: list[Step], for_s: dict[str, float]) -> PlayedShift:
    """Make the steps' changes on time and wait, after each, until the agent has derived the state it calls for.

    A change is dated no earlier than the test made it (a read's or a notification's time is taken after the
    server has the value) and no later than when the agent had derived it, less the state's minimum duration
    (the change is dated when it started): that bracket, measured, is each change's slack.
    """
    start = float(int(time.time()) + 1)
    if time.gmtime(start).tm_yday != time.gmtime(start + SHIFT_S).tm_yday:  # a shift cannot span midnight
        start = float(int(start) // 86_400 * 86_400 + 86_400)
    changes: list[tuple[float, str]] = []
    slack_s = 0.0
    for offset, change, state in steps:
        time.sleep(max(0.0, start + offset - time.time()))
        changed = time.time()
        change()
        if state is not None:
            while derivation.state != state:
                time.sleep(0.005)
            slack_s += max(0.0, time.time() - for_s[state] - changed)
            changes.append((changed, state))
    end = start + SHIFT_S
    time.sleep(max(0.0, end - time.time()))
    return PlayedShift(start, end, changes, slack_s)


def api_settings(
    tmp_path: Path, mqtt: MqttSettings, influx: InfluxSettings, unique_id: str, entry: DeviceEntry
) -> CollectorSettings:
    """The collector's and the API's settings, with the device registered in their devices file."""
    devices_file = tmp_path / "devices.yaml"
    devices_file.write_text(yaml.safe_dump({"devices": [entry.model_dump()]}, allow_unicode=True), encoding="utf-8")
    return collector_settings(
        mqtt,
        influx,
        f"{unique_id}-collector",
        devices_file=devices_file,
        database_url=f"sqlite:///{tmp_path / 'pilot.db'}",
    )


def shift_kpis(settings: CollectorSettings, entry: DeviceEntry, shift: PlayedShift, product: str) -> dict[str, Any]:
    """The API's KPIs of a demonstration whose only shift is the played one (the window: its whole hours)."""
    hour_s = 3600
    window_start = int(shift.start) // hour_s * hour_s
    window_end = (int(shift.end) // hour_s + 1) * hour_s
    plan = {
        "name": "scripted shift",
        "site": entry.site,
        "line": entry.line,
        "devices": [entry.device],
        "output_devices": [entry.device],
        "calendar": {
            "timezone": "UTC",
            "workdays": ["mon", "tue", "wed", "thu", "fri", "sat", "sun"],
            "shifts": [{"start": f"{at(shift.start):%H:%M:%S}", "end": f"{at(shift.end):%H:%M:%S}"}],
        },
        "windows": [
            {
                "name": "shift",
                "phase": "baseline",
                "start": at(window_start).isoformat(),
                "end": at(window_end).isoformat(),
            },
            {
                "name": "after",
                "phase": "pilot",
                "start": at(window_end).isoformat(),
                "end": at(window_end + hour_s).isoformat(),
            },
        ],
        "products": [{"id": product, "ideal_cycle_time_s": IDEAL_CYCLE_S}],
    }
    with admin_client(create_app(settings)) as api:
        created = api.post("/v1/demonstrations", json=plan)
        assert created.status_code == 201, created.text
        response = api.get(f"/v1/demonstrations/{created.json()['id']}/kpis")
        assert response.status_code == 200, response.text
    window: dict[str, Any] = response.json()["windows"][0]
    return window


IDEAL_CYCLE_S = 0.25


def assert_the_truth(window: dict[str, Any], truth: dict[str, float], shift: PlayedShift, parts: int) -> None:
    times, counts, kpis = window["time_breakdown_s"], window["counts"], window["kpis"]
    assert times["pbt_s"] == SHIFT_S and times["unknown_s"] == 0 and times["planned_down_s"] == 0
    assert sum(times[name] for name in truth) == pytest.approx(SHIFT_S, abs=0.002)  # every ms of the shift
    for name, seconds in truth.items():  # 0.002 s: InfluxDB keeps ms
        assert times[name] == pytest.approx(seconds, abs=shift.slack_s + 0.002), (name, times, truth, shift)
    assert (counts["produced"], counts["good"], counts["scrap"]) == (parts, parts, 0)
    assert kpis["availability"] == pytest.approx(truth["apt_s"] / SHIFT_S, abs=(shift.slack_s + 0.002) / SHIFT_S)
    assert kpis["effectiveness"] == pytest.approx(parts * IDEAL_CYCLE_S / times["apt_s"])
    assert kpis["quality_ratio"] == 1.0


def play_through_the_pipeline(
    settings: CollectorSettings,
    entry: DeviceEntry,
    source_map: str,
    tmp_path: Path,
    steps: list[Step],
    for_s: dict[str, float],
    states_due: list[str],
    parts: int,
) -> PlayedShift:
    """The agent reading ``source_map`` while ``steps`` play, through the real broker and collector into
    InfluxDB, until every part and every state due is stored."""
    with (
        running_collector(settings, DeviceRegistry([entry], CATALOG)),
        InfluxClient(settings.influx) as client,
        running_sources(source_map, settings.mqtt, tmp_path / "outbox") as agents,
    ):
        (derivation,) = agents.derivations
        wait_until(lambda: derivation.state == states_due[0], what=f"{states_due[0]} before the shift starts")
        shift = play_shift(derivation, steps, for_s)
        wait_until(lambda: produced(client, entry.device) == parts, what=f"the {parts} parts in InfluxDB")
        wait_until(lambda: states(client, entry.device) == states_due, what="the states in InfluxDB")
    return shift


def test_the_kpis_the_api_returns_for_a_scripted_modbus_scenario_equal_its_truth(
    tmp_path: Path, mqtt_settings: MqttSettings, influx_settings: InfluxSettings, unique_id: str
) -> None:
    """A retrofit clamp, a jam switch and a wrapping 16-bit counter on pymodbus's server, scripted second by
    second over a 12 s shift: the agent → broker → collector → InfluxDB → KPI engine → API, against the truth.

    Counts are exact; the time elements equal the truth to within the slack the test measures for each state
    change (``play_shift``): about a poll interval, 0.1 s, each.
    """
    entry = DeviceEntry(site=f"판교-{unique_id}", line="L1", device=f"{unique_id}-conveyor", profile="conveyor")
    settings = api_settings(tmp_path, mqtt_settings, influx_settings, unique_id, entry)
    server = ModbusServer()
    server.set_float32(INPUT, 0, 6.2)  # the motor runs
    server.set(HOLDING, 10, [65_530])
    server.start()
    source_map = conveyor_scenario_map(entry.device, server.port).replace("site: 판교", f"site: {entry.site}")
    steps: list[Step] = [
        (1, lambda: server.set(HOLDING, 10, [65_535]), None),  # 5 boxes
        (3, lambda: server.set_float32(INPUT, 0, 0.1), "idle"),
        (5, lambda: server.set_float32(INPUT, 0, 6.2), "running"),
        (6, lambda: server.set(HOLDING, 10, [3]), None),  # 65535 → 0 → 3: 4 boxes across the wrap
        (8, lambda: server.set(COIL, 0, [True]), "jammed"),
        (10, lambda: server.set(COIL, 0, [False]), "running"),
        (11, lambda: server.set(HOLDING, 10, [10]), None),  # 7 boxes
    ]
    try:
        derived = ["running", "idle", "running", "jammed", "running"]
        for_s = {"idle": 0.5, "running": 0.5, "jammed": 0.0}
        shift = play_through_the_pipeline(settings, entry, source_map, tmp_path, steps, for_s, derived, parts=16)
        truth = shift.truth("running", {"running": "apt_s", "idle": "adot_s", "jammed": "adet_s"})
        assert_the_truth(shift_kpis(settings, entry, shift, "BOX-S"), truth, shift, parts=16)
    finally:
        server.close()


def test_the_kpis_the_api_returns_for_a_scripted_opcua_cnc_equal_its_truth(
    tmp_path: Path, mqtt_settings: MqttSettings, influx_settings: InfluxSettings, unique_id: str
) -> None:
    """A CNC controller on asyncua's server, its state number and a 16-bit part counter that wraps, scripted over
    a 12 s shift; one record per part (a cycle profile). Same truth, same tolerance as the Modbus scenario."""
    entry = DeviceEntry(site=f"판교-{unique_id}", line="L1", device=f"{unique_id}-cnc", profile="cnc_machine")
    settings = api_settings(tmp_path, mqtt_settings, influx_settings, unique_id, entry)
    server = OpcUaServer()
    server.values["RunState"].Value = 1  # cutting
    server.values["PartCount"].Value = 65_530
    server.start()
    source_map = opcua_map(entry.device, server.endpoint).replace("site: 판교", f"site: {entry.site}")
    source_map = source_map.replace("item: part_count, bits: 32", "item: part_count, bits: 16")
    steps: list[Step] = [
        (1, lambda: server.set("PartCount", 65_535), None),  # 5 parts
        (3, lambda: server.set("RunState", 0), "idle"),
        (5, lambda: server.set("RunState", 1), "cutting"),
        (6, lambda: server.set("PartCount", 3), None),  # 65535 → 0 → 3: 4 parts across the wrap
        (8, lambda: server.set("RunState", 3), "alarm"),
        (10, lambda: server.set("RunState", 1), "cutting"),
        (11, lambda: server.set("PartCount", 10), None),  # 7 parts
    ]
    try:
        derived = ["cutting", "idle", "cutting", "alarm", "cutting"]
        for_s = {"idle": 0.0, "cutting": 0.0, "alarm": 0.0}
        shift = play_through_the_pipeline(settings, entry, source_map, tmp_path, steps, for_s, derived, parts=16)
        truth = shift.truth("cutting", {"cutting": "apt_s", "idle": "adot_s", "alarm": "adet_s"})
        window = shift_kpis(settings, entry, shift, "SHAFT-20")
        assert_the_truth(window, truth, shift, parts=16)
        assert window["counts"]["failures"] == 1  # the alarm: an unplanned delay begun in the shift
    finally:
        server.close()
