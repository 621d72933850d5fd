"""Stored device-hours read back the same by the fast decoder and the general reader."""

from __future__ import annotations

import gc
import json

import orjson
import pytest

from pilot_core.contract import TimeClass
from pilot_core.device_hours import DeviceHour, SeqSpan, StateEvent
from pilot_core.histogram import LogHistogram
from pilot_core.time_accounting import ProductionTotals

START = 1_793_664_000_000


def stored(hour: DeviceHour) -> str:
    """As RollupRepository stores it."""
    return orjson.dumps(hour.to_json(), option=orjson.OPT_SORT_KEYS).decode()


def busy_hour() -> DeviceHour:
    return DeviceHour(
        "프레스-1",
        START,
        state_at_start=StateEvent(START - 5, "running", TimeClass.PRODUCTION),
        events=[
            StateEvent(START + 60_000, "fault", TimeClass.UNPLANNED_DELAY, "E301 유압 저하"),
            StateEvent(START + 90_000, None, None),  # offline
            StateEvent(START + 95_000, "changeover", TimeClass.SETUP, "to P2"),
        ],
        production={"P1": ProductionTotals(5, 4, 1, 0, 240.5, 5), "P2": ProductionTotals(2, 2)},
        cycle_times=LogHistogram.of([48.1, 48.3, 51.0, 0.2, 3000.0]),
        energy_kwh=1.25,
        telemetry_points=3599,
        seq={"telemetry": SeqSpan(3599, 10, 3610), "state": SeqSpan(3, 4, 6)},
    )


@pytest.mark.parametrize(
    "hour",
    [
        busy_hour(),
        DeviceHour("meter", START, machine=False, energy_kwh=3.0, telemetry_points=60),
        DeviceHour("idle", START),  # nothing known, nothing made
    ],
    ids=["busy", "meter", "empty"],
)
def test_the_decoder_reads_what_the_general_reader_reads(hour: DeviceHour) -> None:
    text = stored(hour)
    decoded = DeviceHour.decode(text)
    assert decoded == DeviceHour.from_json(json.loads(text)) == hour
    assert DeviceHour.decode(text.encode()) == hour
    assert stored(decoded) == text  # so the content fingerprint is unchanged


def test_rows_the_fast_decoder_does_not_take_are_read_the_general_way() -> None:
    data = busy_hour().to_json()
    data["events"].append([START + 99_000, "paused", ""])  # an empty time class: none, to the general reader
    data["production"]["P1"][0] = 5.0  # a count stored as a float
    data["energy_kwh"] = 2  # an integer where a float is expected
    hour = DeviceHour.decode(json.dumps(data))
    assert hour == DeviceHour.from_json(data)
    assert hour.events[-1] == StateEvent(START + 99_000, "paused", None)
    with pytest.raises(ValueError):
        DeviceHour.decode(json.dumps({**data, "cycle_times": [[1, 2], [1]]}))


def test_decoded_parts_are_not_tracked_by_the_garbage_collector() -> None:
    hour = DeviceHour.decode(stored(busy_hour()))
    assert not gc.is_tracked(hour.events[0])
    assert not gc.is_tracked(hour.production) and not gc.is_tracked(hour.seq)
