"""Sparkplug B intake against the pilot/v1 JSON contract: a queued backlog drained, in points per second.

    .venv/bin/python -m bench.sparkplug [--points 20000] [--repeat 3] [--out FILE]

One run, private Mosquitto and InfluxDB, the collector in this process (its validation runs in its own
child process, as always). For each form a backlog is queued for the collector's persistent session
while it is away, then the collector starts and the time until every point is in InfluxDB is taken:

- **json**: pilot/v1 telemetry in its batched form, 50 records of 20 metrics a message (the baseline);
- **json-single**: pilot/v1 telemetry, one record of 20 metrics a message;
- **sparkplug**: Sparkplug B DDATA, one message per point of 20 metrics sent by alias, as edge nodes
  send them (after one NBIRTH and DBIRTH).

Every point has the same 20 float fields in every form, so points per second compare the intakes; the
ratios to the batched JSON of the same run are the figures docs/benchmarks.md reports. Sparkplug sends a
message per point: against batched JSON the ratio says what that costs; against json-single, what the
Sparkplug host's work (protobuf, aliases, seq) costs beside the contract's JSON for the same messages.
"""

from __future__ import annotations

import argparse
import json
import statistics
import tempfile
import time
from pathlib import Path
from typing import Any

from adapters import local_services
from adapters.influxdb import InfluxClient, InfluxSettings
from adapters.mqtt import MqttSettings, connect_and_wait, new_client
from adapters.sparkplug import sparkplug_b_pb2 as pb
from bench.results import write_result
from bench.sources import provenance
from collector.service import Collector
from collector.settings import CollectorSettings
from pilot_core.contract import topic_for
from pilot_core.profiles import ProfileCatalog, parse_profile
from pilot_core.registry import DeviceEntry, DeviceRegistry
from pilot_core.sparkplug import DataType

METRICS = 20
JSON_BATCH = 50
GROUP, NODE, DEVICE = "bench", "line1", "cell1"
T0 = 1_793_577_600_000
PROFILE = "id: bench20\nversion: 1.0.0\nname: Twenty floats\nmetrics:\n" + "".join(
    f"  - {{name: m{i:02d}, unit: '1', type: float, interval_s: 1}}\n" for i in range(METRICS)
)


def registry() -> DeviceRegistry:
    catalog = ProfileCatalog([parse_profile(PROFILE, "bench20.yaml")])
    return DeviceRegistry([DeviceEntry(site=GROUP, line=NODE, device=DEVICE, profile="bench20")], catalog)


FORMS = ("json", "json-single", "sparkplug")


def json_messages(points: int, per_message: int = JSON_BATCH) -> list[tuple[str, bytes]]:
    topic = topic_for(GROUP, NODE, DEVICE, "telemetry")
    messages = []
    for seq, start in enumerate(range(0, points, per_message), 1):
        batch = [
            {"ts": T0 + n, "metrics": {f"m{i:02d}": n + i / 10 for i in range(METRICS)}}
            for n in range(start, min(start + per_message, points))
        ]
        body = {"seq": seq, "batch": batch} if per_message > 1 else {"seq": seq, **batch[0]}
        messages.append((topic, json.dumps(body).encode()))
    return messages


def messages_of(form: str, points: int) -> list[tuple[str, bytes]]:
    if form == "sparkplug":
        return sparkplug_messages(points)
    return json_messages(points, JSON_BATCH if form == "json" else 1)


def sparkplug_messages(points: int) -> list[tuple[str, bytes]]:
    base = f"spBv1.0/{GROUP}"
    nbirth = pb.Payload(timestamp=T0, seq=0)
    nbirth.metrics.add(name="bdSeq", datatype=DataType.INT64, long_value=0)
    dbirth = pb.Payload(timestamp=T0, seq=1)  # the birth carries the first point's values
    for i in range(METRICS):
        dbirth.metrics.add(name=f"m{i:02d}", alias=i + 1, datatype=DataType.DOUBLE, double_value=i / 10)
    messages = [
        (f"{base}/NBIRTH/{NODE}", nbirth.SerializeToString()),
        (f"{base}/DBIRTH/{NODE}/{DEVICE}", dbirth.SerializeToString()),
    ]
    for n in range(1, points):
        data = pb.Payload(timestamp=T0 + n, seq=(n + 1) % 256)
        for i in range(METRICS):
            data.metrics.add(alias=i + 1, double_value=n + i / 10)
        messages.append((f"{base}/DDATA/{NODE}/{DEVICE}", data.SerializeToString()))
    return messages


def publish(mqtt: MqttSettings, messages: list[tuple[str, bytes]]) -> None:
    client = new_client(mqtt, "bench-publisher")
    client.max_inflight_messages_set(1000)
    connect_and_wait(client, mqtt)
    infos = [client.publish(topic, payload, qos=1) for topic, payload in messages]
    for info in infos:
        info.wait_for_publish(120)
    client.disconnect()
    client.loop_stop()


def drain(form: str, points: int, folder: Path, mqtt: MqttSettings, influx: InfluxSettings) -> dict[str, Any]:
    settings = CollectorSettings(
        mqtt=mqtt,
        influx=influx,
        client_id=f"bench-{form}",
        metrics_port=0,
        spool_dir=folder / f"spool-{form}",
        rate_limit_records_per_s=0,
        sparkplug={"enabled": form == "sparkplug", "host_id": "bench"},  # type: ignore[arg-type]
    )
    first = Collector(settings, registry())  # makes the persistent session, then goes away
    first.start()
    first.stop()
    messages = messages_of(form, points)
    publish(mqtt, messages)
    collector = Collector(settings, registry())
    collector.start()  # its validation child is up before the broker delivers: the clock starts here
    began = time.monotonic()
    try:
        while collector.metrics.points_written._value.get() < points:
            time.sleep(0.02)
        seconds = time.monotonic() - began
    finally:
        collector.stop()
    return {
        "form": form,
        "points": points,
        "messages": len(messages),
        "bytes": sum(len(p) for _, p in messages),
        "seconds": seconds,
        "points_per_s": points / seconds,
    }


def run_once(points: int) -> dict[str, Any]:
    with tempfile.TemporaryDirectory(prefix="pilot-bench-sparkplug-") as scratch:
        folder = Path(scratch)
        broker = local_services.mosquitto(folder / "mosquitto")
        influx_service = local_services.influxdb(folder / "influxdb")
        broker.start()
        influx_service.start()
        try:
            mqtt = MqttSettings(host="127.0.0.1", port=broker.port)
            results = {}
            for form in FORMS:
                influx = InfluxSettings(url=influx_service.url, database=f"bench_{form.replace('-', '_')}")
                with InfluxClient(influx) as client:
                    client.ensure_database()
                results[form] = drain(form, points, folder, mqtt, influx)
            return results
        finally:
            broker.stop()
            influx_service.stop()


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog="python -m bench.sparkplug", description=__doc__.splitlines()[0] if __doc__ else None
    )
    parser.add_argument("--points", type=int, default=20_000, help="points of 20 metrics per form")
    parser.add_argument("--repeat", type=int, default=3, help="fresh services per repeat; medians reported")
    parser.add_argument("--out", type=Path, default=None, help="write the results as JSON here")
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    measured = provenance()  # the code, the time and the machine's load, before the run
    runs = [run_once(args.points) for _ in range(args.repeat)]
    summary: dict[str, Any] = {
        **measured,
        "points": args.points,
        "metrics_per_point": METRICS,
        "json_batch": JSON_BATCH,
        "repeat": args.repeat,
    }
    for form in FORMS:
        rates = [run[form]["points_per_s"] for run in runs]
        summary[form] = {
            "points_per_s_median": statistics.median(rates),
            "points_per_s_min": min(rates),
            "points_per_s_max": max(rates),
            "messages": runs[0][form]["messages"],
            "bytes": runs[0][form]["bytes"],
        }
    for form in FORMS[1:]:
        ratios = [run[form]["points_per_s"] / run["json"]["points_per_s"] for run in runs]
        summary[form]["to_json"] = {"median": statistics.median(ratios), "min": min(ratios), "max": max(ratios)}
    summary["runs"] = runs
    print(json.dumps({k: v for k, v in summary.items() if k != "runs"}, indent=2))
    if args.out:
        write_result(args.out, summary)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
