"""The benchmark scripts without services: imports, options, workload and report helpers."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from adapters.catalog import load_profiles
from bench import comparison, ingest
from pilot_core.contract import SUBSCRIPTION, parse_topic
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
