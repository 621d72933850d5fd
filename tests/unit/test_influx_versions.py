"""Contract tests: how the client reads the documented answers of InfluxDB 1.x, 2.x and 3.x.

Only 1.6.7 runs here; 2.x and 3.x are covered by their documented responses.
"""

from __future__ import annotations

import threading
from typing import Any

import httpx
import pytest

from adapters.influxdb import InfluxClient, InfluxError, InfluxQueryError, InfluxSettings, WriteOutcome
from collector.metrics import CollectorMetrics
from collector.output import InfluxOutput


def client_answering(handler: httpx.MockTransport | None = None, **settings: Any) -> InfluxClient:
    return InfluxClient(InfluxSettings(url="http://influx.test", database="pilot", **settings), transport=handler)


def test_writes_send_basic_auth_precision_and_database() -> None:
    seen: list[httpx.Request] = []

    def handler(request: httpx.Request) -> httpx.Response:
        seen.append(request)
        return httpx.Response(204)

    client = client_answering(httpx.MockTransport(handler), username="any", password="token-123")
    assert client.write(["m f=1 1"]).outcome is WriteOutcome.WRITTEN
    (request,) = seen
    assert request.url.params["precision"] == "ms"
    assert request.url.params["db"] == "pilot"
    assert request.headers["authorization"].startswith("Basic ")
    with pytest.raises(ValueError):
        client.write(["m f=1 1"], precision="h")


@pytest.mark.parametrize(
    ("status", "body", "outcome", "refused"),
    [
        # 1.x: partial write, valid points stored
        (400, '{"error":"partial write: field type conflict: ... dropped=1"}', WriteOutcome.PARTIAL, []),
        # 2.x: a parse error writes nothing
        (400, '{"code":"invalid","message":"unable to parse \'bad\': missing fields"}', WriteOutcome.PARTIAL, []),
        # 2.x: a type conflict writes the rest
        (
            422,
            '{"code":"unprocessable entity","message":"failure writing points to database: partial write"}',
            WriteOutcome.PARTIAL,
            [],
        ),
        # 3.x: the refused lines are listed
        (
            400,
            '{"error":"partial write of line protocol occurred","data":[{"original_line":"x","line_number":2,'
            '"error_message":"invalid column type"},{"original_line":"y","line_number":4,"error_message":"e"}]}',
            WriteOutcome.PARTIAL,
            [],
        ),
        (413, '{"error":"Request Entity Too Large"}', WriteOutcome.TOO_LARGE, []),
        (503, "", WriteOutcome.RETRY, []),
        (429, "", WriteOutcome.RETRY, []),
    ],
)
def test_write_outcomes(status: int, body: str, outcome: WriteOutcome, refused: list[int]) -> None:
    client = client_answering(httpx.MockTransport(lambda request: httpx.Response(status, text=body)))
    result = client.write(["a f=1 1", "b f=1 1", "c f=1 1", "d f=1 1"])
    assert result.outcome is outcome
    if "line_number" in body:
        assert result.refused_lines == [2, 4]


def test_retry_after_is_read() -> None:
    client = client_answering(httpx.MockTransport(lambda r: httpx.Response(429, headers={"Retry-After": "7"})))
    assert client.write(["m f=1 1"]).retry_after_s == 7.0


def test_unreachable_server_means_retry_not_loss() -> None:
    def refuse(request: httpx.Request) -> httpx.Response:
        raise httpx.ConnectError("connection refused")

    assert client_answering(httpx.MockTransport(refuse)).write(["m f=1 1"]).outcome is WriteOutcome.RETRY


def test_create_database_refused_by_2x_and_3x_is_not_fatal() -> None:
    body = '{"code":"not implemented","message":"CREATE DATABASE is not supported"}'
    client = client_answering(httpx.MockTransport(lambda r: httpx.Response(501, text=body)))
    assert client.ensure_database() is False


def test_wrong_credentials_fail_at_start_instead_of_retrying_forever() -> None:
    body = '{"error":"authorization failed"}'
    client = client_answering(httpx.MockTransport(lambda r: httpx.Response(401, text=body)), username="u", password="x")
    with pytest.raises(InfluxError, match="refused our credentials: authorization failed"):
        client.ensure_database()


def test_a_user_without_admin_rights_may_still_write() -> None:
    body = '{"error":"error authorizing query: writer not authorized to execute statement \'CREATE DATABASE\'"}'
    client = client_answering(httpx.MockTransport(lambda r: httpx.Response(403, text=body)), username="writer")
    assert client.ensure_database() is False


def test_query_errors_are_raised_with_the_server_message() -> None:
    body = '{"results":[{"statement_id":0,"error":"database not found: nope"}]}'
    client = client_answering(httpx.MockTransport(lambda r: httpx.Response(200, text=body)))
    with pytest.raises(InfluxQueryError, match="database not found"):
        client.query("SELECT * FROM m")


class ScriptedServer:
    """Refuses lines containing 'bad'; like 2.x, a refused body stores nothing."""

    def __init__(self, *, list_lines: bool = False, limit: int | None = None, failures_first: int = 0) -> None:
        self.stored: list[str] = []
        self.list_lines = list_lines
        self.limit = limit
        self.failures_first = failures_first
        self.requests = 0

    def __call__(self, request: httpx.Request) -> httpx.Response:
        self.requests += 1
        if self.failures_first:
            self.failures_first -= 1
            return httpx.Response(503, headers={"Retry-After": "0"})
        lines = request.content.decode().split("\n")
        if self.limit is not None and len(lines) > self.limit:
            return httpx.Response(413)
        bad = [n for n, line in enumerate(lines, 1) if "bad" in line]
        if bad:
            if self.list_lines:
                self.stored.extend(line for line in lines if "bad" not in line)
                data = ",".join(f'{{"line_number":{n},"error_message":"conflict"}}' for n in bad)
                return httpx.Response(400, text=f'{{"error":"partial write","data":[{data}]}}')
            return httpx.Response(400, text='{"error":"unable to parse"}')
        self.stored.extend(lines)
        return httpx.Response(204)


def output_for(server: ScriptedServer) -> InfluxOutput:
    return InfluxOutput(client_answering(httpx.MockTransport(server)), CollectorMetrics(), threading.Event())


@pytest.mark.parametrize("list_lines", [False, True])
def test_partial_writes_keep_every_valid_line(list_lines: bool) -> None:
    lines = [f"m f={i}i {i}" if i % 7 else f"m bad={i}i {i}" for i in range(1, 50)]
    server = ScriptedServer(list_lines=list_lines)
    report = output_for(server).write(lines)
    good = [line for line in lines if "bad" not in line]
    assert sorted(set(server.stored)) == sorted(good)
    assert sorted(lines[i] for i, _ in report.refused) == sorted(line for line in lines if "bad" in line)
    assert report.completed


def test_413_splits_the_batch() -> None:
    server = ScriptedServer(limit=8)
    lines = [f"m f={i}i {i}" for i in range(100)]
    report = output_for(server).write(lines)
    assert sorted(server.stored) == sorted(lines)
    assert report.written == 100


def test_transient_failures_are_retried_until_written() -> None:
    server = ScriptedServer(failures_first=3)
    report = output_for(server).write(["m f=1i 1"])
    assert server.stored == ["m f=1i 1"]
    assert report.completed and report.written == 1


def test_last_seen_is_read_from_the_newest_raw_point_not_from_a_selectors_time() -> None:
    """InfluxQL gives an aggregate's row the lower bound of the query's time range (or of its window) as its time,
    and a selector its point's own time only on some versions: last_seen must come from the raw point."""
    from adapters.telemetry_reader import device_activity  # noqa: PLC0415

    newest_ms, since_ms = 1_796_528_593_464, 1_796_270_000_000

    def handler(request: httpx.Request) -> httpx.Response:
        query = request.url.params["q"]
        tags = {"site": "s", "line": "l", "device": "d"}
        if "last(" in query:
            series = {"name": "m", "tags": tags, "columns": ["time", "last"], "values": [[since_ms, 7]]}
        elif "ORDER BY time DESC LIMIT 1" in query and '"online"' not in query:
            series = {"name": "m", "tags": tags, "columns": ["time", "seq"], "values": [[newest_ms, 7]]}
        else:
            return httpx.Response(200, json={"results": [{"statement_id": 0}]})
        return httpx.Response(200, json={"results": [{"statement_id": 0, "series": [series]}]})

    (activity,) = device_activity(client_answering(httpx.MockTransport(handler)), {"telemetry_conveyor"}, since_ms)
    assert activity.last_seen_ms == newest_ms
