"""The rows of an evidence bundle survive CSV exactly: every value, type and float bit."""

from __future__ import annotations

import json

import pytest
from hypothesis import given
from hypothesis import strategies as st

from pilot_core import evidence
from pilot_core.contract import TimeClass
from pilot_core.device_hours import DeviceHour
from pilot_core.device_rows import (
    HOUR_MS,
    DeviceRows,
    ProductionRow,
    StateRow,
    StatusRow,
    TelemetryRow,
    build_hours,
)

ids = st.text(st.characters(blacklist_categories=("Cs", "Cc")), min_size=1, max_size=20)
ts = st.integers(1_700_000_000_000, 1_800_000_000_000)
seqs = st.none() | st.integers(0, 2**63 - 1)
floats = st.floats(allow_nan=False, allow_infinity=False)
states = st.builds(StateRow, ts, ids, st.none() | st.sampled_from(TimeClass), st.none() | ids, seqs)
device_rows = st.builds(
    DeviceRows,
    ids,
    st.booleans(),
    st.just(1_790_000_000_000 - 1_790_000_000_000 % HOUR_MS),
    st.just(1_790_000_000_000 - 1_790_000_000_000 % HOUR_MS + 24 * HOUR_MS),
    state_before=st.none() | states,
    energy_before=st.none() | st.builds(TelemetryRow, ts, floats, st.none(), st.none()),
    states=st.lists(states, max_size=5),
    statuses=st.lists(st.builds(StatusRow, ts, st.none() | st.booleans(), seqs), max_size=3),
    production=st.lists(
        st.builds(ProductionRow, ts, ids, *[st.integers(0, 10**6)] * 4, st.none() | floats, seqs),
        max_size=5,
    ),
    telemetry=st.lists(st.builds(TelemetryRow, ts, st.none() | floats, seqs, st.none() | floats), max_size=5),
)


@given(st.lists(device_rows, max_size=3, unique_by=lambda r: r.device))
def test_rows_round_trip_through_csv(rows: list[DeviceRows]) -> None:
    assert evidence.rows_from_csv(evidence.rows_to_csv(rows)) == rows


def test_a_malformed_data_file_is_named() -> None:
    files = evidence.rows_to_csv([])
    files[evidence.PRODUCTION] = b"device,when\nx,1\n"
    with pytest.raises(evidence.EvidenceError, match=r"data/production\.csv has the columns"):
        evidence.rows_from_csv(files)
    files = evidence.rows_to_csv([])
    files[evidence.STATES] += b"ghost,1,0,5,running,production,,1\n"
    with pytest.raises(evidence.EvidenceError, match=r"names a chunk 1 not in data/chunks\.csv"):
        evidence.rows_from_csv(files)


def test_a_bundle_written_before_ambient_temperatures_reads_the_same() -> None:
    """telemetry.csv gained ambient_c (an environment sensor's temperature): a bundle without the column still
    reads, its points with none, and builds the same hours."""
    start = 1_790_000_000_000 - 1_790_000_000_000 % HOUR_MS
    rows = DeviceRows("meter", False, start, start + HOUR_MS, telemetry=[TelemetryRow(start + 1, 5.0, 1)])
    files = evidence.rows_to_csv([rows])
    header, *lines = files[evidence.TELEMETRY].decode().splitlines()
    assert header.endswith(",seq,ambient_c")
    earlier = "\n".join([header.removesuffix(",ambient_c"), *(line.rsplit(",", 1)[0] for line in lines)]) + "\n"
    assert evidence.rows_from_csv({**files, evidence.TELEMETRY: earlier.encode()}) == [rows]


def test_an_environment_sensors_hour_keeps_the_mean_of_its_temperatures() -> None:
    start = 1_790_000_000_000 - 1_790_000_000_000 % HOUR_MS
    points = [TelemetryRow(start + i * 60_000, None, i, 20.0 + i % 3) for i in range(60)]  # 20, 21, 22, … : mean 21
    points.append(TelemetryRow(start + HOUR_MS + 1, None, 61))  # the next hour: telemetry without a temperature
    first, second = build_hours(DeviceRows("env", False, start, start + 2 * HOUR_MS, telemetry=points))
    assert first.ambient_c == 21.0 and first.telemetry_points == 60
    assert second.ambient_c is None and second.telemetry_points == 1
    stored = json.dumps(first.to_json())
    assert DeviceHour.decode(stored) == first == DeviceHour.from_json(json.loads(stored))
    assert "ambient_c" not in json.dumps(second.to_json())  # an hour without one keeps its text and fingerprint
