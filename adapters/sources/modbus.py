"""Reading a Modbus TCP server's coils, discrete inputs and registers, item by item.

Each item is its own request, so an exception answer for one (illegal address 0x02, device busy 0x06)
or no answer within ``timeout_s`` (a register behind a slow gateway) is that item's fault and the others
are read as usual. The device is ``SourceUnreachable`` when the connection is lost or cannot be made, or
when no item at all answered in time (a device that hangs with its port still open).
"""

from __future__ import annotations

import struct
import time
from collections.abc import Sequence
from typing import Any

from pymodbus.client import AsyncModbusTcpClient
from pymodbus.exceptions import ConnectionException, ModbusException, ModbusIOException

from adapters.sources import ItemFault, ItemValue, SourceUnreachable
from pilot_core.signals import SignalValue
from pilot_core.source_map import ModbusEndpoint, ModbusItem, ModbusTable, ModbusType

EXCEPTION_NAMES = {
    1: "illegal_function",
    2: "illegal_address",
    3: "illegal_value",
    4: "device_failure",
    6: "device_busy",
    10: "gateway_path_unavailable",
    11: "gateway_target_failed",
}
_STRUCT = {
    ModbusType.INT16: "h",
    ModbusType.UINT16: "H",
    ModbusType.INT32: "i",
    ModbusType.UINT32: "I",
    ModbusType.FLOAT32: "f",
    ModbusType.INT64: "q",
    ModbusType.UINT64: "Q",
    ModbusType.FLOAT64: "d",
}


def decode_registers(words: Sequence[int], data_type: ModbusType, word_order: str, byte_order: str) -> int | float:
    """The value held by consecutive 16-bit registers, as the device's word and byte order say."""
    ordered = list(words) if word_order == "big" else list(reversed(words))
    raw = b"".join(w.to_bytes(2, "big") if byte_order == "big" else w.to_bytes(2, "little") for w in ordered)
    (value,) = struct.unpack(">" + _STRUCT[data_type], raw)
    return value


class ModbusReader:
    def __init__(self, endpoint: ModbusEndpoint, items: Sequence[ModbusItem]) -> None:
        self.endpoint = endpoint
        self.items = list(items)
        self._client: AsyncModbusTcpClient | None = None  # made in the event loop that uses it

    @property
    def address(self) -> str:
        return f"modbus://{self.endpoint.host}:{self.endpoint.port}/{self.endpoint.unit}"

    async def connect(self) -> AsyncModbusTcpClient:
        if self._client is None:
            endpoint = self.endpoint
            # reconnect_delay 0: the agent decides when to connect again, and says so in its log.
            self._client = AsyncModbusTcpClient(
                endpoint.host, port=endpoint.port, timeout=endpoint.timeout_s, retries=0, reconnect_delay=0
            )
        if not self._client.connected and not await self._client.connect():
            raise SourceUnreachable(f"{self.address} does not answer")
        return self._client

    async def read(self) -> tuple[list[ItemValue], list[ItemFault]]:
        """Every item once. Raises SourceUnreachable when the connection is gone, or no item answered in time."""
        client = await self.connect()
        values, faults = [], []
        timed_out = 0
        for item in self.items:
            try:
                answer = await self._request(client, item)
            except ModbusIOException:  # no answer in time: this item's, unless none answers (below)
                timed_out += 1
                faults.append(ItemFault(item.name, "timeout", f"{self._where(item)}: no answer within {self.timeout}"))
                # Start a fresh connection: a late answer must not be taken for the next item's.
                client.close()
                client = await self.connect()
                continue
            except (ConnectionException, ModbusException) as exc:
                client.close()
                raise SourceUnreachable(f"{self.address}: {exc}") from None
            now_ms = int(time.time() * 1000)
            if answer.isError():
                code = getattr(answer, "exception_code", 0)
                reason = EXCEPTION_NAMES.get(code, f"exception_{code}")
                faults.append(ItemFault(item.name, reason, f"{self._where(item)}: Modbus exception {code} ({reason})"))
                continue
            values.append(ItemValue(item.name, self._value(item, answer), now_ms))
        if self.items and timed_out == len(self.items):
            self.close()
            raise SourceUnreachable(f"{self.address}: no item answered within {self.timeout}")
        return values, faults

    @property
    def timeout(self) -> str:
        return f"{self.endpoint.timeout_s:g} s"

    @staticmethod
    def _where(item: ModbusItem) -> str:
        return f"{item.table.value} {item.address}"

    async def _request(self, client: AsyncModbusTcpClient, item: ModbusItem) -> Any:
        unit = self.endpoint.unit
        count = item.count
        match item.table:
            case ModbusTable.COIL:
                return await client.read_coils(item.address, count=count, device_id=unit)
            case ModbusTable.DISCRETE:
                return await client.read_discrete_inputs(item.address, count=count, device_id=unit)
            case ModbusTable.INPUT:
                return await client.read_input_registers(item.address, count=count, device_id=unit)
            case ModbusTable.HOLDING:
                return await client.read_holding_registers(item.address, count=count, device_id=unit)

    @staticmethod
    def _value(item: ModbusItem, answer: Any) -> SignalValue:
        if item.is_bit:
            return bool(answer.bits[0])
        return decode_registers(answer.registers[: item.count], item.data_type, item.word_order, item.byte_order)

    def close(self) -> None:
        if self._client is not None:
            self._client.close()
