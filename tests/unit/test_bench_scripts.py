"""The benchmark scripts without services: imports, options, workload and report helpers."""

from __future__ import annotations

import json
import socket
import threading
from pathlib import Path
from typing import Any

import pytest

from adapters import mqtt_packets as wire
from adapters.catalog import load_profiles
from adapters.influxdb import Series
from bench import comparison, ingest, latency, publisher, sources, sparkplug
from collector.processing import Limits, Processor, SparkplugIntake
from pilot_core.contract import SUBSCRIPTION, parse_topic
from pilot_core.source_map import parse_source_map
from pilot_core.validation import Accepted, validate_message


def test_ingest_imports_and_has_a_main() -> None:
    assert callable(ingest.main)
    assert set(ingest.DEFAULT_PHASES) <= set(ingest.PHASES)


def test_defaults() -> None:
    args = ingest.parse_args([])
    assert args.messages == 100_000
    assert args.phases == list(ingest.DEFAULT_PHASES)
    assert args.out is None
    assert args.node_red_dir is None
    assert args.repeat == 1


def test_documented_options_are_accepted(tmp_path: Path) -> None:
    out = tmp_path / "result.json"
    args = ingest.parse_args(
        [
            "--messages", "2000", "--out", str(out), "--phases", "bare,collector,naive,node-red,collector-live",
            "--node-red-dir", str(tmp_path / "nr"), "--naive-messages", "300", "--naive-time-cap", "5",
            "--repeat", "2", "--devices", "10", "--timeout", "60", "--profile", "--keep",
        ]
    )  # fmt: skip
    assert args.messages == 2000
    assert args.out == out
    assert args.phases == ["bare", "collector", "naive", "node-red", "collector-live"]
    assert args.node_red_dir == str(tmp_path / "nr")
    assert (args.naive_messages, args.naive_time_cap, args.repeat, args.devices) == (300, 5.0, 2, 10)
    assert args.profile and args.keep


def test_quick_is_small_and_node_red_dir_adds_the_phase(tmp_path: Path) -> None:
    args = ingest.parse_args(["--quick", "--node-red-dir", str(tmp_path)])
    assert args.messages <= 5000
    assert args.naive_messages <= args.messages
    assert args.repeat == 1
    assert "node-red" in args.phases


@pytest.mark.parametrize("bad", [["--phases", "bare,nonsense"], ["--messages", "0"], ["--messages", "many"]])
def test_bad_options_are_refused(bad: list[str]) -> None:
    with pytest.raises(SystemExit):
        ingest.parse_args(bad)


def test_workload_has_n_valid_messages_over_every_profile() -> None:
    catalog = load_profiles()
    workload = ingest.build_workload(3000, devices=50, seed=7, catalog=catalog)
    assert len(workload.messages) == 3000
    assert len(workload.devices) == 50
    assert {d.profile for d in workload.devices} == {p.id for p in catalog}
    registry = workload.registry(catalog)
    points: set[str] = set()
    for topic, payload in workload.messages:
        result = validate_message(topic, payload, registry, ingest.MAX_PAYLOAD_BYTES)
        assert isinstance(result, Accepted), result
        assert len(result.lines) == 1
        line = result.lines[0]
        points.add(line.split(" ", 1)[0] + " " + line.rsplit(" ", 1)[1])  # series + timestamp
    assert len(points) == 3000, "two messages would overwrite each other's point"


def test_workload_seq_grows_by_one_per_device_and_matches_the_subscription() -> None:
    workload = ingest.build_workload(500, devices=7)
    last: dict[str, int] = {}
    for topic, payload in workload.messages:
        assert SUBSCRIPTION == "pilot/v1/+/+/+/+"
        device = parse_topic(topic).device
        seq = json.loads(payload)["seq"]
        assert seq == last.get(device, -1) + 1
        last[device] = seq
    assert ingest.build_workload(500, devices=7).messages == workload.messages, "deterministic for a seed"


def test_devices_yaml_round_trips(tmp_path: Path) -> None:
    workload = ingest.build_workload(10, devices=5)
    path = tmp_path / "devices.yaml"
    path.write_text(workload.devices_yaml(), encoding="utf-8")
    assert [d.device for d in ingest._load_devices(path)] == [d.device for d in workload.devices]


def test_node_red_flow_is_pointed_at_the_phase_services() -> None:
    peer = [
        {"type": "mqtt-broker", "broker": "127.0.0.1", "port": "18830"},
        {"type": "influxdb", "hostname": "127.0.0.1", "port": "18087", "database": "x"},
        {"type": "mqtt in", "topic": "pilot/+/+/+/telemetry"},
        {"type": "function", "func": "return msg;"},
    ]
    flow = ingest.node_red_flow(peer, 1111, 2222, {"dev-000": "telemetry_amr"})
    assert flow[0]["port"] == "1111"
    assert (flow[1]["port"], flow[1]["database"]) == ("2222", ingest.DATABASE)
    assert flow[2]["topic"] == ingest.NODE_RED_TOPIC
    assert "telemetry_amr" in flow[3]["func"]
    assert peer[0]["port"] == "18830", "the peer's flow is not modified"


def test_ratios_use_the_median_round_and_check_targets() -> None:
    rounds: list[dict[str, dict[str, Any]]] = [
        {"bare": {"rate": 100.0}, "collector": {"rate": 95.0}, "naive": {"rate": 4.0}},
        {"bare": {"rate": 100.0}, "collector": {"rate": 80.0}, "naive": {"rate": 5.0}},
        {"bare": {"rate": 100.0}, "collector": {"rate": 92.0}, "naive": {"error": "x"}},
    ]
    ratios = ingest.compute_ratios(rounds)
    assert ratios["collector/bare"]["median"] == pytest.approx(0.92)
    assert ratios["collector/bare"]["met"] is True
    assert ratios["collector/naive"]["rounds"] == [23.75, 16.0]
    assert "collector/node-red" not in ratios


def test_all_selects_every_phase_in_run_order_and_the_new_options_parse() -> None:
    args = ingest.parse_args(
        [
            "--phases", "all", "--publishers", "2", "--batch-records", "20", "--batched-messages", "300",
            "--latency-rate", "8000", "--latency-duration", "5", "--latency-poll", "0.1",
        ]
    )  # fmt: skip
    assert args.phases == list(ingest.PHASES)
    assert (args.publishers, args.batch_records, args.batched_messages) == (2, 20, 300)
    assert (args.latency_rate, args.latency_duration, args.latency_poll) == (8000.0, 5.0, 0.1)
    assert ingest.PHASES[-1] == "latency", "latency paces itself by a collector drain measured before it"
    assert {"collector-2", "node-red-per-message", "batched", "naive-live", "node-red-per-message-live"} <= set(
        ingest.PHASES
    )


def test_phases_run_in_the_canonical_order_and_batched_defaults_to_a_tenth() -> None:
    args = ingest.parse_args(["--phases", "latency,collector,bare", "--messages", "2000"])
    assert args.phases == ["bare", "collector", "latency"]
    assert args.batched_messages == 200
    assert ingest.parse_args(["--quick"]).latency_duration <= 10


@pytest.mark.parametrize(
    "bad",
    [["--publishers", "0"], ["--batch-records", "0"], ["--batch-records", "10001"], ["--latency-rate", "0"]],
)
def test_bad_new_options_are_refused(bad: list[str]) -> None:
    with pytest.raises(SystemExit):
        ingest.parse_args(bad)


def test_batched_workload_carries_many_valid_records_per_message() -> None:
    catalog = load_profiles()
    workload = ingest.build_workload(140, devices=7, seed=3, catalog=catalog, records_per_message=50)
    registry = workload.registry(catalog)
    points: set[str] = set()
    last: dict[str, int] = {}
    for topic, payload in workload.messages:
        document = json.loads(payload)
        assert len(document["batch"]) == 50
        device = parse_topic(topic).device
        assert document["seq"] == last.get(device, -1) + 1
        last[device] = document["seq"]
        result = validate_message(topic, payload, registry, ingest.MAX_PAYLOAD_BYTES)
        assert isinstance(result, Accepted), result
        points.update(line.split(" ", 1)[0] + " " + line.rsplit(" ", 1)[1] for line in result.lines)
    assert len(points) == 140 * 50, "every record is its own point"


def test_published_packets_decode_to_the_workload_with_wrapping_packet_ids() -> None:
    messages = ingest.build_workload(20, devices=4).messages
    packets = publisher.encode_publishes(messages)
    deliveries, others, used = wire.read_packets(b"".join(packets), 0)
    assert not others and used == sum(len(p) for p in packets)
    assert [(d.topic, d.payload, d.qos) for d in deliveries] == [(t, p, 1) for t, p in messages]
    assert [d.packet_id for d in deliveries] == list(range(1, 21))
    assert (publisher.packet_id(65534), publisher.packet_id(65535)) == (65535, 1)


def test_publishers_split_the_workload_by_device_keeping_each_devices_order() -> None:
    messages = ingest.build_workload(90, devices=9).messages
    shares = [publisher.device_share(messages, share, 2) for share in range(2)]
    assert sorted(shares[0] + shares[1]) == sorted(messages)
    assert not {t for t, _ in shares[0]} & {t for t, _ in shares[1]}
    for share in shares:
        for topic in {t for t, _ in share}:
            assert [p for t, p in share if t == topic] == [p for t, p in messages if t == topic]


class FakeBroker:
    """Just enough of an MQTT 5 broker on a loopback socket: CONNACK, then a PUBACK for every PUBLISH."""

    def __init__(self, receive_maximum: int = 0) -> None:
        self.listener = socket.create_server(("127.0.0.1", 0))
        self.port = self.listener.getsockname()[1]
        self.received: list[wire.Delivery] = []
        self.receive_maximum = receive_maximum
        self.thread = threading.Thread(target=self._serve, daemon=True)
        self.thread.start()

    def _serve(self) -> None:
        connection, _ = self.listener.accept()
        buffer = b""
        while wire.frame_end(buffer) < 0:
            buffer += connection.recv(4096)
        buffer = buffer[wire.frame_end(buffer) :]
        properties = b""
        if self.receive_maximum:
            properties = bytes((wire.PROP_RECEIVE_MAXIMUM,)) + self.receive_maximum.to_bytes(2, "big")
        connection.sendall(bytes((wire.CONNACK, 3 + len(properties), 0, 0, len(properties))) + properties)
        while True:
            chunk = connection.recv(65536)
            if not chunk:
                break
            buffer += chunk
            deliveries, _, used = wire.read_packets(buffer, 0)
            buffer = buffer[used:]
            self.received += deliveries
            if deliveries:
                connection.sendall(wire.pubacks([d.packet_id for d in deliveries if d.qos]))
        connection.close()
        self.listener.close()


def test_the_raw_publisher_waits_for_every_puback_within_its_window() -> None:
    broker = FakeBroker(receive_maximum=100)
    messages = ingest.build_workload(1200, devices=10).messages
    client = publisher.RawPublisher(broker.port, "test-publisher", timeout_s=10)
    assert client.window == 100, "the broker's receive maximum caps the window"
    client.publish_all(publisher.encode_publishes(messages))
    client.close()
    broker.thread.join(10)
    assert (client.acked, client.refused) == (1200, 0)
    assert [(d.topic, d.payload) for d in broker.received] == messages


def test_the_paced_publisher_stamps_each_message_with_its_publish_time(tmp_path: Path) -> None:
    broker = FakeBroker()
    templates = latency.payload_templates(ingest.build_workload(6, devices=3).messages)
    client = publisher.RawPublisher(broker.port, "test-paced", timeout_s=10)

    def make(index: int, packet_id: int) -> bytes:
        topic, metrics = templates[index % len(templates)]
        return wire.publish_packet(topic, b'{"ts": %d, "metrics": %s}' % (index, metrics), 1, packet_id)

    client.publish_paced(make, 300, rate=50_000.0)
    client.close()
    broker.thread.join(10)
    assert [json.loads(d.payload)["ts"] for d in broker.received] == list(range(300))
    assert (
        json.loads(broker.received[0].payload)["metrics"]
        == json.loads(ingest.build_workload(1, devices=3).messages[0][1])["metrics"]
    )


class FakeInflux:
    """Answers the poller's queries from a list of (device, ts, seq) points 'landed' so far."""

    def __init__(self) -> None:
        self.landed: list[tuple[str, int, int]] = []
        self.cursors: list[int] = []

    def query(self, influxql: str, **_: Any) -> list[Series]:
        cursor = int(influxql.split("time > ", 1)[1].split("ms", 1)[0])
        self.cursors.append(cursor)
        by_device: dict[str, list[list[Any]]] = {}
        for device, ts, seq in self.landed:
            if ts > cursor:
                by_device.setdefault(device, []).append([ts, seq])
        return [Series("telemetry_x", ["time", "seq"], rows, {"device": d}) for d, rows in by_device.items()]


def test_the_latency_poller_does_not_skip_the_older_half_of_a_batch_that_shows_late() -> None:
    influx = FakeInflux()
    poller = latency.LatencyPoller(influx, ["a", "b"], interval_s=0.05)  # type: ignore[arg-type]
    batch = [("a", 1000, 0), ("b", 1001, 0), ("a", 1002, 1), ("b", 1003, 1), ("a", 1004, 2), ("b", 1005, 2)]
    influx.landed = batch[4:]  # the newest part of the batch shows first
    assert poller.poll_once() == 2
    assert poller.cursor_ms() == 0, "device a and b still have unseen earlier seqs"
    influx.landed = batch
    assert poller.poll_once() == 4
    assert poller.cursor_ms() == 1004
    assert poller.seen == 6 and len(poller.latencies_ms) == 6
    assert poller.poll_once() == 0, "nothing is counted twice"
    assert influx.cursors[-1] == 1004
    summary = poller.summary()
    assert summary["points_seen"] == 6 and summary["p50_ms"] > 0 and summary["p99_ms"] >= summary["p50_ms"]


def test_payload_templates_keep_topic_and_metrics() -> None:
    messages = ingest.build_workload(4, devices=2).messages
    templates = latency.payload_templates(messages)
    assert [t for t, _ in templates] == [t for t, _ in messages]
    assert json.loads(templates[0][1]) == json.loads(messages[0][1])["metrics"]


def test_node_red_per_message_flow_writes_through_the_out_node_with_a_persistent_session() -> None:
    peer: list[dict[str, Any]] = [
        {"type": "mqtt-broker", "broker": "x", "port": "18830", "cleansession": True},
        {"type": "influxdb", "hostname": "x", "port": "18087", "database": "x"},
        {"type": "mqtt in", "topic": "pilot/+/+/+/telemetry"},
        {"type": "function", "func": "return msg;"},
        {"type": "influxdb out", "measurement": "telemetry"},
    ]
    flow = ingest.node_red_flow(peer, 1111, 2222, {"dev-000": "telemetry_amr"})
    assert flow[0]["cleansession"] is False
    assert "msg.measurement = MEASUREMENTS[p[4]]" in flow[3]["func"] and "time: d.ts" in flow[3]["func"]
    assert peer[0]["cleansession"] is True


def test_node_red_errors_are_counted_by_message() -> None:
    log = (
        "2 Dec 08:02:59 - [error] [influxdb out:out1] Error: No host available\n"
        "2 Dec 08:02:59 - [info] [mqtt-broker:bench] Connected to broker\n"
        "2 Dec 08:03:00 - [error] [influxdb out:out1] Error: No host available\n"
        "2 Dec 08:03:00 - [error] [influxdb out:out1] Error: Internal Server Error\n"
    )
    assert ingest.node_red_errors(log) == {"Error: No host available": 2, "Error: Internal Server Error": 1}


def test_labelled_counters_are_read_by_label() -> None:
    metrics = {
        "pilot_collector_messages_rejected_total": 3.0,
        'pilot_collector_messages_rejected_total{reason="seq_regression"}': 2.0,
        'pilot_collector_messages_rejected_total{reason="schema"}': 1.0,
        'pilot_collector_messages_rejected_total{reason="too_large"}': 0.0,
    }
    assert ingest._by_label(metrics, "pilot_collector_messages_rejected_total") == {"seq_regression": 2, "schema": 1}


def test_ratios_include_the_best_collector_live_pairs_and_batched_points() -> None:
    rounds: list[dict[str, dict[str, Any]]] = [
        {
            "collector": {"rate": 20.0}, "collector-2": {"rate": 30.0}, "node-red": {"rate": 10.0},
            "batched": {"rate": 1.0, "points_rate": 50.0},
            "collector-live": {"rate": 18.0}, "collector-2-live": {"rate": 12.0}, "node-red-live": {"rate": 9.0},
            "naive-live": {"rate": 1.0},
        },
        {"collector": {"rate": 40.0}, "collector-2": {"rate": 20.0}, "node-red": {"rate": 10.0}},
    ]  # fmt: skip
    ratios = ingest.compute_ratios(rounds)
    assert ratios["best-collector/node-red"]["rounds"] == [3.0, 4.0]
    assert ratios["collector-2/node-red"]["rounds"] == [3.0, 2.0]
    assert ratios["best-collector-live/node-red-live"]["rounds"] == [2.0]
    assert ratios["collector-live/naive-live"]["median"] == 18.0
    assert ratios["batched-points/collector"]["rounds"] == [2.5]
    assert "collector/bare" not in ratios


def test_phase_summary_has_the_spread_worst_loss_memory_and_latency() -> None:
    rounds: list[dict[str, Any]] = [
        {"rate": 100.0, "lost": 0, "peak_rss_mb": 130.0, "publisher_rate": 900.0, "points_rate": 5000.0},
        {"rate": 80.0, "lost": 3, "peak_rss_mb": 150.0, "publisher_rate": 700.0, "points_rate": 4000.0},
        {"error": "broker did not start"},
    ]
    summary = ingest.summarize_phase("batched", rounds)
    assert (summary["rate_median"], summary["rate_min"], summary["rate_max"]) == (90.0, 80.0, 100.0)
    assert (summary["lost"], summary["peak_rss_mb"]) == (3, 150.0)
    assert (summary["points_rate_median"], summary["publisher_rate_median"]) == (4500.0, 800.0)
    assert summary["rounds"] == rounds
    latency_rounds = [
        {"rate": 50.0, "p50_ms": 800.0, "p99_ms": 1400.0, "resolution_ms": 60.0, "lost": 0},
        {"rate": 60.0, "p50_ms": 900.0, "p99_ms": 1600.0, "resolution_ms": 62.0, "lost": 0},
    ]
    latency_summary = ingest.summarize_phase("latency", latency_rounds)
    assert (latency_summary["p50_ms"], latency_summary["p99_ms"], latency_summary["rate"]) == (850.0, 1500.0, 55.0)


def test_the_table_shows_every_phase_latency_and_ratio() -> None:
    collector_2: dict[str, Any] = {
        "rate": 19.0, "messages": 100, "lost": 0, "peak_rss_mb": 280.0, "cpu_s": {"consumer": 6.0},
        "per_process": [{"client_id": "bench-collector-1", "peak_rss_mb": 140.0, "received": 50},
                        {"client_id": "bench-collector-2", "peak_rss_mb": 140.0, "received": 50}],
        "rejected_by_reason": {"seq_regression": 2},
    }  # fmt: skip
    latency_round: dict[str, Any] = {
        "rate": 50.0, "messages": 1500, "p50_ms": 800.0, "p99_ms": 1400.0, "max_rate": 100.0, "resolution_ms": 60.0,
        "max_rate_source": "--latency-rate", "poll_interval_s": 0.05, "points_seen": 1500, "published": 1500,
    }  # fmt: skip
    rounds: list[dict[str, dict[str, Any]]] = [
        {
            "bare": {"rate": 10.0, "messages": 100, "lost": 0},
            "collector-2": collector_2,
            "node-red-per-message": {"rate": 1.0, "messages": 100, "lost": 90},
            "latency": latency_round,
            "naive": {"error": "InfluxDB did not start"},
        }
    ]
    results = {
        "phases": {name: ingest.summarize_phase(name, [rounds[0][name]]) for name in rounds[0]},
        "ratios": ingest.compute_ratios(rounds),
    }
    table = ingest.render_table(results)
    for text in ("collector-2", "bench-collector-2", "seq_regression", "node-red-per-message", "p99 1,400 ms",
                 "failed: InfluxDB did not start"):  # fmt: skip
        assert text in table


def test_py_spy_summary(tmp_path: Path) -> None:
    raw = tmp_path / "raw.txt"
    raw.write_text("thread (1): worker;run (a.py:1);work (b.py:2) 3\nthread (2): net;loop (c.py:3) 1\n")
    summary = ingest.summarize_py_spy(raw)
    assert summary["samples"] == 4
    assert summary["self_pct"][0] == ("work (b.py:2)", 75.0)


def test_the_comparison_benchmark_runs_small(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    out = tmp_path / "latency.json"
    monkeypatch.setattr("sys.argv", ["comparison", "--devices", "2", "--days", "4", "--repeat", "1", "--out", str(out)])
    assert comparison.main() == 0
    result = json.loads(out.read_text())
    assert result["device_hours"] == 2 * 4 * 24 and result["warm_s"] > 0 and result["cold_s"] > 0


def test_the_sources_bench_parses_its_options_and_writes_a_valid_source_map() -> None:
    args = sources.parse_args([])
    assert (args.modbus, args.opcua, args.seconds, args.install_size) == (25, 25, 60.0, False)
    args = sources.parse_args(["--modbus", "2", "--opcua", "0", "--seconds", "5", "--install-size"])
    assert (args.modbus, args.opcua, args.seconds, args.install_size) == (2, 0, 5.0, True)
    parsed = parse_source_map(sources.source_map([5020, 5021], [4840]), "bench.yaml", load_profiles())
    assert [device.device for device in parsed.devices] == ["conveyor-000", "conveyor-001", "cnc-000"]
    with pytest.raises(SystemExit):
        sources.parse_args(["--modbus", "0", "--opcua", "0"])


def test_the_console_benchmark_parses_its_options_and_adds_a_period_for_today() -> None:
    import datetime as dt  # noqa: PLC0415 - this test only

    from bench import console  # noqa: PLC0415 - it imports the whole app

    args = console.parse_args(["--repeat", "3", "--out", "x.json", "--profile"])
    assert (args.repeat, args.out, args.profile) == (3, Path("x.json"), True)
    assert console.parse_args([]).repeat == 20
    text = console.today_scenario_text(dt.date(2026, 12, 6))
    assert "  - {name: today, behaviour: pilot, start: 2026-12-06, days: 1}\n" in text
    assert text.index("name: pilot,") < text.index("name: today,")


def test_the_sparkplug_bench_parses_its_options_and_its_three_forms_carry_the_same_points() -> None:
    args = sparkplug.parse_args([])
    assert (args.points, args.repeat, args.out) == (20_000, 3, None)
    lines = {}
    for form in sparkplug.FORMS:
        processor = Processor(sparkplug.registry(), Limits(256 * 1024), sparkplug=SparkplugIntake())
        outcome = processor.process(sparkplug.messages_of(form, 120))
        assert not outcome.rejected, outcome.rejected
        telemetry = [line for line in outcome.lines if line.startswith("telemetry_")]
        lines[form] = sorted(line.split(" ", 1)[1].split(",seq=")[0] + line.rsplit(" ", 1)[1] for line in telemetry)
    assert len(lines["json"]) == 120
    assert lines["json"] == lines["json-single"] == lines["sparkplug"]  # the same 20 fields, point for point
