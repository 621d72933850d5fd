"""Readers of the factory's own machines: one module per protocol, each only reads and reports.

A reader gives item values, or for one item a fault (an illegal address, a node id that vanished) that
leaves the others unaffected; ``SourceUnreachable`` means the whole source is gone (down, unplugged,
restarted) and the caller connects again. What the values mean is ``pilot_core.signals``' job.
"""

from __future__ import annotations

from dataclasses import dataclass

from pilot_core.signals import SignalValue


class SourceUnreachable(Exception):
    """The source cannot be reached at all: connect again later."""


@dataclass(frozen=True, slots=True)
class ItemValue:
    item: str
    value: SignalValue
    ts_ms: int  # the source's timestamp where it gives one, else when the agent read it


@dataclass(frozen=True, slots=True)
class ItemFault:
    item: str
    reason: str  # short and stable: the metric's label (illegal_address, bad_node_id, ...)
    detail: str
