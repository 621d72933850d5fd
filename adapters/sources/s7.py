"""Reading values from an S7 PLC's data blocks over S7comm (python-snap7), item by item.

S7-1200/1500 answer only with PUT/GET access enabled and "optimized block access" off for the data blocks
read by offset. A read the PLC refuses (no such data block, an offset beyond its end) is that item's fault;
a lost connection is ``SourceUnreachable``. The client is synchronous: reads run in a worker thread.
"""

from __future__ import annotations

import asyncio
import contextlib
import struct
import time
from collections.abc import Sequence

from snap7.client import Client
from snap7.error import S7Error, S7ProtocolError

from adapters.sources import ItemFault, ItemValue, SourceUnreachable
from pilot_core.signals import SignalValue
from pilot_core.source_map import S7Endpoint, S7Item, S7Type

_STRUCT = {
    S7Type.BYTE: "B",
    S7Type.INT: "h",
    S7Type.WORD: "H",
    S7Type.DINT: "i",
    S7Type.DWORD: "I",
    S7Type.REAL: "f",
    S7Type.LREAL: "d",
}


def decode_s7(data: bytes | bytearray, item: S7Item) -> SignalValue:
    """A data block's bytes as the item's value: S7 stores numbers big-endian."""
    if item.type is S7Type.BOOL:
        assert item.bit is not None
        return bool(data[0] >> item.bit & 1)
    (value,) = struct.unpack(">" + _STRUCT[item.type], bytes(data[: item.size]))
    return value


class S7Reader:
    def __init__(self, endpoint: S7Endpoint, items: Sequence[S7Item]) -> None:
        self.endpoint = endpoint
        self.items = list(items)
        self._client = Client()

    @property
    def address(self) -> str:
        return f"s7://{self.endpoint.host}:{self.endpoint.port}/{self.endpoint.rack}/{self.endpoint.slot}"

    async def read(self) -> tuple[list[ItemValue], list[ItemFault]]:
        """Every item once. Raises SourceUnreachable when the PLC cannot be reached."""
        return await asyncio.to_thread(self._read)

    def _read(self) -> tuple[list[ItemValue], list[ItemFault]]:
        endpoint = self.endpoint
        values, faults = [], []
        try:
            if not self._client.get_connected():
                self._client.connect(endpoint.host, endpoint.rack, endpoint.slot, tcp_port=endpoint.port)
            for item in self.items:
                where = f"DB{item.db} offset {item.offset}"
                try:
                    data = self._client.db_read(item.db, item.offset, item.size)
                except S7ProtocolError as exc:
                    faults.append(ItemFault(item.name, "illegal_address", f"{where}: {exc}"))
                    continue
                values.append(ItemValue(item.name, decode_s7(data, item), int(time.time() * 1000)))
        except (S7Error, OSError, RuntimeError) as exc:  # the connection, not one item
            self.close()
            raise SourceUnreachable(f"{self.address}: {exc}") from None
        return values, faults

    def close(self) -> None:
        with contextlib.suppress(S7Error, OSError, RuntimeError):  # already gone: nothing to close
            self._client.disconnect()
