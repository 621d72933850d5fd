"""The rows of an evidence bundle survive CSV exactly: every value, type and float bit."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from pilot_core import evidence
from pilot_core.contract import TimeClass
from pilot_core.device_rows import HOUR_MS, DeviceRows, ProductionRow, StateRow, StatusRow, TelemetryRow

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
    energy_before=st.none() | st.builds(TelemetryRow, ts, floats, st.none()),
    states=st.lists(states, max_size=5),
    statuses=st.lists(st.builds(StatusRow, ts, st.none() | st.booleans(), seqs), max_size=3),
    production=st.lists(
        st.builds(ProductionRow, ts, ids, *[st.integers(0, 10**6)] * 4, st.none() | floats, seqs),
        max_size=5,
    ),
    telemetry=st.lists(st.builds(TelemetryRow, ts, st.none() | floats, seqs), max_size=5),
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
