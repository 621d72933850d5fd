"""Stored device-hours read back the same by the fast decoder and the general reader, and evaluation's numpy
roll-ups (histograms, seq gaps) agree with doing it one hour at a time."""

from __future__ import annotations

import gc
import json

import numpy as np
import orjson
import pytest
from hypothesis import given
from hypothesis import strategies as st

from kpi_engine.evaluation import AccountedDevice, _merged
from pilot_core.contract import TimeClass
from pilot_core.device_hours import HOUR_MS, DeviceHour, SeqSpan, StateEvent
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


histograms = st.lists(
    st.dictionaries(st.integers(-50, 50), st.integers(1, 1000), max_size=30).map(
        lambda counts: LogHistogram(counts=counts)
    ),
    max_size=40,
)


@given(histograms)
def test_histograms_merge_as_one_by_one(parts: list[LogHistogram]) -> None:
    expected = LogHistogram()
    for part in parts:
        expected.merge(part)
    assert _merged(parts) == expected


def test_histograms_of_another_accuracy_are_still_refused() -> None:
    with pytest.raises(ValueError, match="different accuracy"):
        _merged([LogHistogram(), LogHistogram(relative_accuracy=0.01, counts={3: 1})])


spans = st.tuples(st.integers(0, 100), st.integers(0, 1000), st.integers(0, 100)).map(
    lambda t: SeqSpan(t[0], t[1], t[1] + t[2])
)


@given(
    st.lists(st.dictionaries(st.sampled_from(["telemetry", "state", "production"]), spans), min_size=1, max_size=20),
    st.data(),
)
def test_seq_gaps_add_up_as_hour_by_hour(seqs: list[dict[str, SeqSpan]], data: st.DataObject) -> None:
    hours = [DeviceHour("d", START + i * HOUR_MS, seq=seq) for i, seq in enumerate(seqs)]
    chosen = sorted(data.draw(st.sets(st.integers(0, len(hours) - 1))))
    first_last: dict[str, list[int]] = {}
    seen: dict[str, int] = {}
    for index in chosen:  # as evaluation did it before
        for channel, span in hours[index].seq.items():
            low_high = first_last.setdefault(channel, [span.first, span.last])
            low_high[0], low_high[1] = min(low_high[0], span.first), max(low_high[1], span.last)
            seen[channel] = seen.get(channel, 0) + span.received
    expected = sum(max(0, high - low + 1 - seen[ch]) for ch, (low, high) in first_last.items())
    assert AccountedDevice(hours).messages_missing(np.array(chosen, dtype=np.intp)) == expected
