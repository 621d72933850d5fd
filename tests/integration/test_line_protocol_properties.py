"""The encoder's round trip through the real InfluxDB: generated points written, read back with InfluxQL, equal.

Fewer examples than the pure property (tests/unit/test_line_protocol_properties.py), each a
whole batch of points in a database of its own.
"""

from __future__ import annotations

import itertools

from hypothesis import given, settings
from hypothesis import strategies as st

from adapters import local_services
from adapters.influxdb import InfluxClient, InfluxSettings, WriteOutcome
from pilot_core.influxql import quote_identifier
from pilot_core.line_protocol import encode_point
from tests.strategies import PointSpec, points

_databases = itertools.count()
# One measurement per point: fields of one measurement keep one type, and tags never share a name with fields.
batches = st.lists(points(), min_size=1, max_size=30, unique_by=lambda point: point.measurement)


@settings(max_examples=max(5, settings().max_examples // 8))
@given(batch=batches)
def test_points_written_to_influxdb_read_back_equal(
    influxdb: local_services.InfluxService, batch: list[PointSpec]
) -> None:
    database = f"lp_property_{next(_databases)}"
    with InfluxClient(InfluxSettings(url=influxdb.url, database=database)) as client:
        client.ensure_database()
        try:
            lines = [encode_point(p.measurement, p.tags.items(), p.fields.items(), p.timestamp) for p in batch]
            result = client.write(lines, precision="ms")
            assert result.outcome is WriteOutcome.WRITTEN, (result.message, lines)
            for point in batch:
                assert_stored(client, point)
        finally:
            client.query(f"DROP DATABASE {quote_identifier(database)}", method="POST", database=None)


def assert_stored(client: InfluxClient, point: PointSpec) -> None:
    measurement = quote_identifier(point.measurement)
    (series,) = client.query(f"SELECT * FROM {measurement}")
    (row,) = series.rows()
    assert row.pop("time") == point.timestamp
    assert {key: row.pop(key) for key in point.tags} == point.tags
    types = dict(map(tuple, client.query(f"SHOW FIELD KEYS FROM {measurement}")[0].values))
    for key, sent in point.fields.items():
        stored = row.pop(key)
        # The declared type, from InfluxDB itself: JSON writes the float 3.0 as 3.
        expected = {bool: "boolean", int: "integer", float: "float", str: "string"}[type(sent)]
        assert types[key] == expected, (key, sent)
        assert (float(stored) if expected == "float" else stored) == sent, (key, sent, stored)
    assert row == {}, row  # nothing more came back


def test_a_field_key_with_a_backslash_before_a_quote_reads_back_as_written(
    influxdb: local_services.InfluxService,
) -> None:
    """InfluxDB 1.6 reads backslash-quote in a field key as a quote (found by the property above)."""
    key = 'a\\"b'
    database = f"lp_property_{next(_databases)}"
    with InfluxClient(InfluxSettings(url=influxdb.url, database=database)) as client:
        client.ensure_database()
        try:
            point = PointSpec("m", {"t": key}, {key: 1, "plain": 2}, 10**12)
            line = encode_point(point.measurement, point.tags.items(), point.fields.items(), point.timestamp)
            assert client.write([line], precision="ms").outcome is WriteOutcome.WRITTEN
            assert_stored(client, point)
        finally:
            client.query(f"DROP DATABASE {quote_identifier(database)}", method="POST", database=None)
