"""A device's item values become the messages in its outbox (no broker: the agent is not started)."""

from __future__ import annotations

import json
import logging
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from adapters.catalog import load_profiles
from adapters.mqtt import MqttSettings
from adapters.sources import ItemValue
from edge_agent.agent import Agent
from edge_agent.sources import DeviceDerivation, SourceMetrics
from pilot_core.source_map import parse_source_map

CATALOG = load_profiles()
TS = 1_793_000_000_000


def derivation_for(tmp_path: Path, device_yaml: str, profile: str) -> DeviceDerivation:
    text = f"devices:\n  - {{site: s, line: l, device: d, profile: {profile},\n{device_yaml}"
    (device,) = parse_source_map(text, "agent.yaml", CATALOG).devices
    agent = Agent(MqttSettings(host="127.0.0.1", port=1), "s", "l", "d", CATALOG[profile], tmp_path / "outbox")
    return DeviceDerivation(device, CATALOG[profile], agent, SourceMetrics())


def messages(derivation: DeviceDerivation, channel: str) -> Iterator[dict[str, Any]]:
    for _, topic, payload in derivation.agent.outbox.after(0, 1000):
        if topic.endswith("/" + channel):
            yield json.loads(payload)


CNC = """\
     opcua: {endpoint: "opc.tcp://127.0.0.1:4840/"},
     items: [{name: state, node: "ns=2;s=S"}, {name: parts, node: "ns=2;s=P"}],
     state: {item: state, map: {1: cutting, 0: idle}},
     production: {product: P, counters: {produced: {item: parts, bits: 16}}}}
"""


def test_a_cycle_profile_gets_one_record_per_part_at_distinct_times_sharing_the_time_since_the_last_count(
    tmp_path: Path,
) -> None:
    derivation = derivation_for(tmp_path, CNC, "cnc_machine")
    derivation.values([ItemValue("parts", 10, TS)])
    derivation.values([ItemValue("parts", 13, TS + 60_000)])
    (batch,) = [m["batch"] for m in messages(derivation, "production")]
    assert [(r["ts"], r["produced"], r["cycle_time_s"]) for r in batch] == [
        (TS + 20_000, 1, 20.0),
        (TS + 40_000, 1, 20.0),
        (TS + 60_000, 1, 20.0),
    ]


def test_a_state_number_the_map_does_not_know_is_logged_once_and_its_return_once(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, logger="pilot.agent.sources")
    derivation = derivation_for(tmp_path, CNC, "cnc_machine")
    for i, number in enumerate([1, 7, 7, 7, 1, 1]):
        derivation.values([ItemValue("state", number, TS + i * 1000)])
    assert [m["state"] for m in messages(derivation, "state")] == ["cutting"]  # 7 kept the state it was in
    logged = [r.getMessage() for r in caplog.records]
    assert sum("item state fails (unmapped_state)" in line for line in logged) == 1
    assert sum("item state reads again" in line for line in logged) == 1


def test_a_signed_16_bit_counter_counting_past_32767_reads_on_as_the_same_count(tmp_path: Path) -> None:
    device = """\
     modbus: {host: 127.0.0.1},
     items: [{name: parts, table: holding, address: 0, type: int16}],
     production: {product: P, counters: {produced: {item: parts}}}}
"""
    derivation = derivation_for(tmp_path, device, "conveyor")
    derivation.values([ItemValue("parts", 32_760, TS)])
    derivation.values([ItemValue("parts", -32_766, TS + 1000)])  # 32,770 in an int16 register
    assert [m["batch"][0]["produced"] for m in messages(derivation, "production")] == [10]
    assert not derivation.faulty


def test_a_lost_source_records_offline_then_online_and_the_state_again(tmp_path: Path) -> None:
    derivation = derivation_for(tmp_path, CNC, "cnc_machine")
    derivation.values([ItemValue("state", 1, TS)])
    derivation.lost("gone")
    derivation.lost("still gone")  # said once
    derivation.values([ItemValue("state", 1, TS + 10_000)])
    assert [m["status"] for m in messages(derivation, "status")] == ["offline", "online"]
    assert [m["state"] for m in messages(derivation, "state")] == ["cutting", "cutting"]


def test_a_source_whose_clock_runs_behind_the_agents_keeps_its_own_timestamps_between_changes(
    tmp_path: Path,
) -> None:
    """OPC UA reports changes only, so the agent ticks on its own clock to let states settle; a tick must not
    move a source that is behind the agent's clock onto the agent's time (docs/agent.md: SourceTimestamp)."""
    derivation = derivation_for(tmp_path, CNC, "cnc_machine")  # TS is weeks behind the agent's clock
    derivation.values([ItemValue("state", 1, TS)])
    derivation.tick(int(time.time() * 1000))
    derivation.values([ItemValue("state", 0, TS + 5_000)])
    derivation.tick(int(time.time() * 1000))
    assert [(m["state"], m["ts"]) for m in messages(derivation, "state")] == [("cutting", TS), ("idle", TS + 5_000)]
