"""``node-red`` and ``node-red-per-message``: the Node-RED peer's batched and per-message flows, pointed at
the phase's broker and database."""

from __future__ import annotations

import contextlib
import json
import os
import re
import shutil
import signal
import subprocess
import time
from pathlib import Path
from typing import Any

from adapters import local_services
from adapters.catalog import load_profiles
from adapters.influxdb import InfluxClient, InfluxSettings
from bench.ingest.choreography import (
    Context,
    cpu_delta,
    cpu_snapshot,
    finish_publishers,
    phase_services,
    prime_session,
    publish_backlog,
    start_publishers,
)
from bench.ingest.measure import (
    influx_point_count,
    megabytes,
    poll_until,
    proc_cpu_s,
    proc_status_kb,
    wait_for_line,
)
from bench.ingest.settings import DATABASE, DEFAULT_NODE_RED_DIR, STALL_S, log
from bench.ingest.workload import load_devices

# Each Node-RED phase and the peer flow it runs.
NODE_RED_FLOWS = {
    "node-red": "flow-batched-qos1-persistent.json",
    "node-red-per-message": "flow-per-message-qos1.json",
}
NODE_RED_CLIENT_ID = "bench-nodered"
NODE_RED_TOPIC = "pilot/v1/+/+/+/telemetry"


def ensure_node_red(directory: Path) -> Path:
    binary = directory / "node_modules" / ".bin" / "node-red"
    if binary.exists():
        return binary
    npm = shutil.which("npm")
    if npm is None:
        raise RuntimeError(f"Node-RED is not installed in {directory} and npm is not available")
    log(f"  installing Node-RED into {directory} (npm install node-red node-red-contrib-influxdb)")
    directory.mkdir(parents=True, exist_ok=True)
    subprocess.run(
        [npm, "install", "--prefix", str(directory), "node-red", "node-red-contrib-influxdb"],
        check=True, stdout=subprocess.DEVNULL, timeout=600,
    )  # fmt: skip
    return binary


# For the `influxdb batch` node: one object per point.
NODE_RED_FUNCTION = """const p = msg.topic.split('/');
const d = msg.payload;
const fields = Object.assign({}, d.metrics, {seq: d.seq});
msg.payload = {measurement: MEASUREMENTS[p[4]], fields: fields,
               tags: {site: p[2], line: p[3], device: p[4]}, timestamp: d.ts};
return msg;"""
# For the per-message `influxdb out` node: [fields with time, tags], measurement on the message.
NODE_RED_FUNCTION_PER_MESSAGE = """const p = msg.topic.split('/');
const d = msg.payload;
msg.measurement = MEASUREMENTS[p[4]];
msg.payload = [Object.assign({}, d.metrics, {seq: d.seq, time: d.ts}),
               {site: p[2], line: p[3], device: p[4]}];
return msg;"""


def node_red_flow(
    peer_flow: list[dict[str, Any]], broker_port: int, influx_port: int, measurements: dict[str, str]
) -> list[dict[str, Any]]:
    """A peer flow, pointed at this phase's broker, database and the v1 topics.

    The shipped flows subscribe to ``pilot/+/+/+/telemetry`` (which no v1
    topic matches) and map fields temp/current/speed/vibration that no bundled
    profile has; the function is rewritten to write the same points as the
    collector (measurement per profile, site/line/device tags, every metric
    and seq), in the form the flow's InfluxDB node takes. The per-message
    flow's broker has a clean session, which would discard the queued
    backlog a drain needs: it gets a persistent one, like the batched flow's.
    """
    flow = json.loads(json.dumps(peer_flow))
    per_message = any(node.get("type") == "influxdb out" for node in flow)
    function = NODE_RED_FUNCTION_PER_MESSAGE if per_message else NODE_RED_FUNCTION
    for node in flow:
        kind = node.get("type")
        if kind == "mqtt-broker":
            node["broker"], node["port"] = "127.0.0.1", str(broker_port)
            node["cleansession"] = False
        elif kind == "influxdb":
            node["hostname"], node["port"], node["database"] = "127.0.0.1", str(influx_port), DATABASE
        elif kind == "mqtt in":
            node["topic"] = NODE_RED_TOPIC
        elif kind == "function":
            node["func"] = f"const MEASUREMENTS = {json.dumps(measurements)};\n{function}"
    return flow


_NODE_RED_ERROR = re.compile(r"\[error\] (?:\[[^\]]*\] )?(.*)$")


def node_red_errors(log_text: str) -> dict[str, int]:
    """Node-RED's logged errors counted by message, e.g. {"Error: No host available": 5441}."""
    counts: dict[str, int] = {}
    for line in log_text.splitlines():
        match = _NODE_RED_ERROR.search(line)
        if match:
            counts[match.group(1)] = counts.get(match.group(1), 0) + 1
    return counts


def phase_node_red(ctx: Context, count: int, *, flow_name: str = "node-red", live: bool = False) -> dict[str, Any]:  # noqa: PLR0915
    """A Node-RED peer flow. The end is InfluxDB's count reaching N, or not growing for STALL_S (messages lost)."""
    peer = Path(ctx.args.node_red_peer)
    node_red = ensure_node_red(Path(ctx.args.node_red_dir or DEFAULT_NODE_RED_DIR).resolve())
    catalog = load_profiles()
    measurements = {d.device: catalog[d.profile].measurement for d in load_devices(ctx.devices_file)}
    with phase_services(ctx, flow_name, influx=True) as env:
        assert env.influx is not None
        with InfluxClient(InfluxSettings(url=env.influx.url, database=DATABASE)) as influx:
            influx.ensure_database()
        flow_file = NODE_RED_FLOWS[flow_name]
        flow = node_red_flow(json.loads((peer / flow_file).read_text()), env.broker.port, env.influx.port, measurements)
        broker_node = next(n for n in flow if n.get("type") == "mqtt-broker")
        client_id = broker_node.get("clientid") or NODE_RED_CLIENT_ID
        user_dir = env.folder / "node-red-data"
        user_dir.mkdir()
        flow_path = user_dir / "flow.json"
        flow_path.write_text(json.dumps(flow, indent=1))
        settings = (peer / "settings.js").read_text()
        settings = re.sub(r"uiPort:\s*\d+", f"uiPort: {local_services.free_port()}", settings)
        (user_dir / "settings.js").write_text(settings)
        prime_session(env.broker.port, client_id, NODE_RED_TOPIC, mqtt5=broker_node.get("protocolVersion") == "5")
        publishers = start_publishers(ctx, env.broker.port, count) if live else None
        process: subprocess.Popen[bytes] | None = None
        try:
            publish = None if live else publish_backlog(ctx, env.broker.port, count)
            log_path = env.folder / "node-red.log"
            cpu_before = cpu_snapshot(env)
            with log_path.open("ab") as log_file:
                process = subprocess.Popen(
                    [str(node_red), "--userDir", str(user_dir), "--settings", str(user_dir / "settings.js"),
                     str(flow_path)],
                    cwd=env.folder, stdout=log_file, stderr=subprocess.STDOUT, start_new_session=True,
                )  # fmt: skip
            ctx.cleanup.popens.append(process)
            _, connack = wait_for_line(log_path, "Connected to broker", process, 120)
            influx = InfluxClient(InfluxSettings(url=env.influx.url, database=DATABASE))
            if publishers is not None:
                publishers.go.set()
            progress = {"stored": 0.0, "changed": time.monotonic(), "changed_wall": time.time()}

            def landed() -> bool:
                stored = influx_point_count(influx)
                if stored != progress["stored"]:
                    progress.update(stored=stored, changed=time.monotonic(), changed_wall=time.time())
                # Stalled short of N: Node-RED lost messages; stop waiting.
                return stored >= count or time.monotonic() - progress["changed"] > STALL_S

            end = poll_until(landed, ctx.args.timeout, process, interval_s=0.1)
            if publishers is not None:
                publish = finish_publishers(ctx, publishers, 120)
            stored = influx_point_count(influx)
            if stored < count and end is not None:
                end = progress["changed_wall"]  # when the last point landed
            influx.close()
            peak_rss_kb = proc_status_kb(process.pid)
            consumer_cpu = proc_cpu_s(process.pid)
            cpu_after = cpu_snapshot(env)
        finally:
            if publishers is not None:
                publishers.abandon(ctx)
            if process is not None:
                if process.poll() is None:
                    os.killpg(process.pid, signal.SIGTERM)
                    try:
                        process.wait(20)
                    except subprocess.TimeoutExpired:
                        os.killpg(process.pid, signal.SIGKILL)
                        process.wait(5)
                with contextlib.suppress(ValueError):
                    ctx.cleanup.popens.remove(process)
        if end is None:
            raise RuntimeError(f"Node-RED did not land {count} points within {ctx.args.timeout:g} s; see {log_path}")
        with InfluxClient(InfluxSettings(url=env.influx.url, database=DATABASE)) as influx:
            # Node-RED stopped: anything that landed after the stall was still in flight, not lost for good.
            stored_after_stop = influx_point_count(influx)
        assert publish is not None
        start = publish["started"] if live else connack
        seconds = end - start
        return {
            "mode": "live" if live else "drain",
            "flow": flow_file,
            "messages": count,
            "stored_points": stored,
            "lost": count - stored,
            "stored_after_stop": stored_after_stop,
            "seconds": round(seconds, 3),
            "rate": stored / seconds if seconds > 0 else 0.0,
            "end_detected_by": f"InfluxDB count polled every 0.1 s: N reached, or no growth for {STALL_S:g} s",
            "errors_logged": node_red_errors(log_path.read_text(errors="replace")),
            "peak_rss_mb": megabytes(peak_rss_kb),
            "cpu_s": {
                "consumer": round(consumer_cpu, 2) if consumer_cpu is not None else None,
                **cpu_delta(cpu_before, cpu_after),
            },
            "publisher_rate": round(publish["rate"], 1),
            "publish": publish,
        }
