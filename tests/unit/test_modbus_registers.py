"""Modbus registers to values: word and byte order, per item, as vendors differ."""

from __future__ import annotations

import struct

import pytest

from adapters.sources.modbus import decode_registers
from pilot_core.source_map import ModbusType


def words(fmt: str, value: float) -> list[int]:
    raw = struct.pack(">" + fmt, value)
    return [int.from_bytes(raw[i : i + 2], "big") for i in range(0, len(raw), 2)]


@pytest.mark.parametrize(
    ("data_type", "fmt", "value"),
    [
        (ModbusType.INT16, "h", -2),
        (ModbusType.UINT16, "H", 65_535),
        (ModbusType.INT32, "i", -70_000),
        (ModbusType.UINT32, "I", 4_000_000_000),
        (ModbusType.FLOAT32, "f", 6.5),
        (ModbusType.INT64, "q", -(2**40)),
        (ModbusType.UINT64, "Q", 2**63 + 5),
        (ModbusType.FLOAT64, "d", 1234.5678),
    ],
)
def test_each_type_in_each_word_and_byte_order(data_type: ModbusType, fmt: str, value: float) -> None:
    big = words(fmt, value)
    assert decode_registers(big, data_type, "big", "big") == value
    assert decode_registers(list(reversed(big)), data_type, "little", "big") == value  # word-swapped
    swapped = [int.from_bytes(w.to_bytes(2, "big"), "little") for w in big]
    assert decode_registers(swapped, data_type, "big", "little") == value  # bytes swapped in each register


def test_a_word_swapped_32_bit_counter_reads_its_low_word_first() -> None:
    assert decode_registers([0x0001, 0x0002], ModbusType.UINT32, "little", "big") == 0x0002_0001
