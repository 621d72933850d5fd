"""The agent's source map: parsed, checked against the profiles, every error naming its file, line and item."""

from __future__ import annotations

from pathlib import Path

import pytest

from adapters.catalog import load_profiles
from pilot_core.profiles import MetricType, ProfileErrors
from pilot_core.signals import CounterRole
from pilot_core.source_map import (
    ModbusDevice,
    ModbusType,
    OpcUaDevice,
    S7Device,
    counter_spec,
    parse_source_map,
    scaled,
)

EXAMPLES = Path(__file__).resolve().parents[2] / "examples"
CATALOG = load_profiles()

MODBUS_DEVICE = """\
devices:
  - site: s1
    line: l1
    device: press-1
    profile: conveyor
    modbus: {host: 127.0.0.1, port: 5020}
    items:
      - {name: current, table: input, address: 0, type: float32, metric: motor_current}
      - {name: parts, table: holding, address: 10}
"""


def errors_of(text: str) -> list[str]:
    with pytest.raises(ProfileErrors) as caught:
        parse_source_map(text, "agent.yaml", CATALOG)
    return [str(error) for error in caught.value.errors]


@pytest.mark.parametrize("name", ["agent-modbus.yaml", "agent-opcua.yaml", "agent-s7.yaml"])
def test_the_example_source_maps_are_valid(name: str) -> None:
    path = EXAMPLES / name
    parsed = parse_source_map(path.read_text(encoding="utf-8"), str(path), CATALOG)
    assert len(parsed.devices) == 1


def test_a_modbus_device_reads_its_defaults_and_counter_width_from_the_register() -> None:
    text = MODBUS_DEVICE + "    production: {product: P1, counters: {produced: {item: parts}}}\n"
    (device,) = parse_source_map(text, "agent.yaml", CATALOG).devices
    assert isinstance(device, ModbusDevice)
    assert device.modbus.unit == 1 and device.modbus.poll_s == 1.0
    current, parts = device.items
    assert (current.count, parts.data_type, parts.count) == (2, ModbusType.UINT16, 1)
    assert device.production is not None
    assert counter_spec(device, device.production.counters[CounterRole.PRODUCED]).bits == 16


def test_an_opcua_counter_has_no_width_unless_the_map_gives_one() -> None:
    path = EXAMPLES / "agent-opcua.yaml"
    text = path.read_text(encoding="utf-8").replace("{item: part_count, bits: 32}", "{item: part_count}")
    (device,) = parse_source_map(text, "agent.yaml", CATALOG).devices
    assert isinstance(device, OpcUaDevice) and device.production is not None
    assert counter_spec(device, device.production.counters[CounterRole.PRODUCED]).bits is None


def test_an_unknown_profile_metric_names_the_file_line_and_item() -> None:
    text = MODBUS_DEVICE.replace("metric: motor_current", "metric: spindle_speed")
    (error,) = errors_of(text)
    assert error.startswith("agent.yaml:8: devices[0] (s1/l1/press-1).items[0] (current).metric: ")
    assert "profile conveyor has no metric 'spindle_speed'" in error


def test_a_register_beyond_the_last_address_is_refused_with_its_line() -> None:
    text = MODBUS_DEVICE.replace("address: 10}", "address: 65535, type: uint32}")
    (error,) = errors_of(text)
    assert error.startswith("agent.yaml:9: devices[0] (s1/l1/press-1).items[1] (parts):")
    assert "uint32 at address 65535 spans to 65536, beyond the last address 65535" in error


def test_a_device_listed_twice_is_refused() -> None:
    text = MODBUS_DEVICE + MODBUS_DEVICE.removeprefix("devices:\n")
    (error,) = errors_of(text)
    assert error.startswith("agent.yaml:12: devices[1] (s1/l1/press-1).device: device s1/l1/press-1 is also devices[0]")


def test_states_and_counters_must_name_the_profile_and_the_device_items() -> None:
    text = MODBUS_DEVICE + (
        "    state:\n"
        "      rules:\n"
        "        - {state: cutting, when: {current: {above: 4}}}\n"
        "        - {state: idle, when: {amps: {below: 0.5}}}\n"
        "    production: {product: P1, counters: {produced: {item: current}}}\n"
    )
    errors = errors_of(text)
    assert errors[0].startswith("agent.yaml:12: devices[0] (s1/l1/press-1).state.rules[0].state: profile conveyor")
    assert "has no state 'cutting' (it has: running, jammed, fault, starved, idle, planned_stop)" in errors[0]
    where = "agent.yaml:13: devices[0] (s1/l1/press-1).state.rules[1].when"
    assert errors[1] == f"{where}: no item named 'amps' in this device"
    assert errors[2].startswith("agent.yaml:14: devices[0] (s1/l1/press-1).production.counters.produced: ")
    assert "item 'current' is float32; a counter is an integer" in errors[2]


def test_shape_errors_name_their_line_and_a_device_needs_exactly_one_source() -> None:
    text = MODBUS_DEVICE.replace("table: input", "table: inputs")
    (error,) = errors_of(text)
    assert error.startswith("agent.yaml:8: devices[0] (s1/l1/press-1).items[0] (current).table: Input should be")
    (error,) = errors_of(MODBUS_DEVICE.replace("    modbus: {host: 127.0.0.1, port: 5020}\n", ""))
    assert error.startswith("agent.yaml:2: devices[0] (s1/l1/press-1): a device has exactly one source")
    (error,) = errors_of("devices:\n  - {site: s, line: l, device: d, profile: conveyor,\n     modbus: {host: h}}\n")
    assert "items: Field required" in error


def test_a_bit_read_from_a_register_and_a_secured_endpoint_without_its_certificate_are_refused() -> None:
    (error,) = errors_of(MODBUS_DEVICE.replace("address: 10", "address: 10, type: bool"))
    assert "read bits from coils or discrete inputs" in error
    text = (EXAMPLES / "agent-opcua.yaml").read_text(encoding="utf-8")
    (error,) = errors_of(text.replace("security_mode: None", "security_mode: SignAndEncrypt"))
    assert "security_mode SignAndEncrypt needs security_policy, certificate and private_key" in error


def test_an_opcua_identity_is_a_username_or_a_user_certificate_with_its_key() -> None:
    text = (EXAMPLES / "agent-opcua.yaml").read_text(encoding="utf-8")
    (error,) = errors_of(text.replace("security_mode: None", "security_mode: None\n      user_certificate: u.der"))
    assert "user_certificate and user_private_key go together" in error
    both = "security_mode: None\n      user_certificate: u.der\n      user_private_key: u.pem\n      username: op"
    (error,) = errors_of(text.replace("security_mode: None", both))
    assert "one identity: a username or a user_certificate, not both" in error


def test_a_reading_is_scaled_and_typed_as_its_metric() -> None:
    (device,) = parse_source_map(
        MODBUS_DEVICE.replace("type: float32, metric: motor_current", "metric: motor_current, scale: 0.1"),
        "agent.yaml",
        CATALOG,
    ).devices
    item = device.source_items[0]
    assert scaled(item, 123, MetricType.FLOAT) == pytest.approx(12.3)
    assert scaled(item, 1, MetricType.BOOL) is True
    with pytest.raises(ValueError, match="not a whole number"):
        scaled(item, 5, MetricType.INT)


def test_an_s7_item_is_a_data_block_offset_and_type_and_a_bool_needs_its_bit() -> None:
    path = EXAMPLES / "agent-s7.yaml"
    text = path.read_text(encoding="utf-8")
    (device,) = parse_source_map(text, "agent.yaml", CATALOG).devices
    assert isinstance(device, S7Device) and device.production is not None
    assert counter_spec(device, device.production.counters[CounterRole.PRODUCED]).bits == 32
    (error,) = errors_of(text.replace("type: bool, bit: 1,", "type: bool,"))
    assert error.startswith("agent.yaml:15: devices[0] (판교/프레스-1라인/press-02).items[0] (jam):")
    assert "a bool item needs its bit (0-7)" in error
    (error,) = errors_of(text.replace("{item: strokes}", "{item: motor_amps}"))
    assert "item 'motor_amps' is real; a counter is an integer" in error
