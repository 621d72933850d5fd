"""Ingest benchmark: every ingest system side by side on one machine, in one run.

One run measures, with a fresh broker and a fresh database per phase, the
same pre-generated workload (N valid telemetry messages, one point each,
spread over devices of the bundled profiles):

* ``bare``: a paho-mqtt 2 subscriber that only counts (the receive ceiling);
* ``collector``: ``python -m pilot collect`` end to end, until InfluxDB holds N points;
* ``collector-2``: two collectors sharing ``$share/pilot-bench/…``, until both together wrote N;
* ``naive``: validate each message, one HTTP POST /write per message (on a slice);
* ``node-red`` / ``node-red-per-message``: the peer's batched and per-message Node-RED flows;
* ``batched``: the collector on messages that each carry a batch of records (points/s);
* ``…-live``: each of those with the publisher running at the same time;
* ``latency``: publish → queryable latency through the collector, publisher paced at half its drain rate.

Drain methodology (as in the Node-RED peer's README): the consumer's
persistent session is created first and disconnected, a separate publisher
process (``bench.publisher``: pre-encoded packets over a raw socket) publishes
the whole backlog with QoS 1, then the consumer connects and the drain is
timed from its CONNACK to the last message (bare) or to the last point being
written (the others). Live phases are timed from the first publish.

    python -m bench.ingest --quick
    python -m bench.ingest --phases all --messages 100000 --repeat 3 --node-red-dir .pilot/bench/node-red \\
        --out .pilot/bench/ingest.json
"""

from __future__ import annotations

import argparse
import contextlib
import json
import multiprocessing as mp
import os
import pickle
import platform
import queue as queue_module
import random
import re
import resource
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from importlib.metadata import PackageNotFoundError, version
from multiprocessing.process import BaseProcess
from pathlib import Path
from typing import Any

import httpx
import paho.mqtt.client as paho
import yaml
from paho.mqtt.enums import CallbackAPIVersion, MQTTProtocolVersion

from adapters import local_services
from adapters.catalog import load_profiles, load_registry
from adapters.influxdb import InfluxClient, InfluxQueryError, InfluxSettings
from adapters.mqtt import MqttSettings, connect_and_wait, new_client
from bench.latency import LatencyPoller, paced_publish_worker
from bench.publisher import DEFAULT_WINDOW, publish_worker
from bench.results import write_result
from collector.settings import CollectorSettings
from pilot_core.contract import MAX_BATCH_RECORDS, SUBSCRIPTION, Channel, topic_for
from pilot_core.profiles import ProfileCatalog
from pilot_core.registry import DeviceEntry, DeviceRegistry
from pilot_core.validation import Accepted, validate_message
from simulators.values import random_metrics

REPO = Path(__file__).resolve().parent.parent
DEFAULT_NODE_RED_PEER = REPO.parent / "shared" / "peers" / "node-red"
DEFAULT_NODE_RED_DIR = REPO / ".pilot" / "bench" / "node-red"
# Run in this order whatever order they are asked in: latency paces itself by the collector's drain rate.
PHASES = (
    "bare", "collector", "collector-2", "naive", "node-red", "node-red-per-message", "batched",
    "bare-live", "collector-live", "collector-2-live", "naive-live", "node-red-live", "node-red-per-message-live",
    "latency",
)  # fmt: skip
DEFAULT_PHASES = ("bare", "collector", "naive")
# Each Node-RED phase and the peer flow it runs.
NODE_RED_FLOWS = {
    "node-red": "flow-batched-qos1-persistent.json",
    "node-red-per-message": "flow-per-message-qos1.json",
}
TARGET_COLLECTOR_VS_BARE = 0.90
TARGET_COLLECTOR_VS_NAIVE = 20.0
BASE_TS_MS = 1_767_225_600_000  # 2026-01-01T00:00:00Z: every device's seq n is at BASE + n s
SESSION_EXPIRY_S = 7 * 24 * 3600  # what the collector asks for
MAX_PAYLOAD_BYTES = 256 * 1024
DATABASE = "bench"
SITE = "bench-site"
NODE_RED_CLIENT_ID = "bench-nodered"
NODE_RED_TOPIC = "pilot/v1/+/+/+/telemetry"
SHARE_GROUP = "pilot-bench"  # collector-2's shared subscription: $share/pilot-bench/pilot/v1/+/+/+/+
STALL_S = 10.0  # a consumer whose InfluxDB count has not grown for this long has lost the rest
# What the collector phases set, stated rather than inherited: the production defaults, quotas and clock
# bound included (no device here comes near its quota: each sends messages / devices records, 2,000 by default).
COLLECTOR_CONFIG: dict[str, float | int] = {
    "batch_size": 5000,
    "flush_interval_s": 1.0,
    "max_payload_bytes": MAX_PAYLOAD_BYTES,
    "max_clock_skew_s": 600.0,
    "max_record_age_s": 0.0,
    "rate_limit_records_per_s": 5000.0,
    "rate_limit_burst_records": 1_000_000,
}


def log(message: str) -> None:
    print(f"[{time.strftime('%H:%M:%S')}] {message}", file=sys.stderr, flush=True)


# --- workload ----------------------------------------------------------------


@dataclass(frozen=True)
class Workload:
    devices: list[DeviceEntry]
    messages: list[tuple[str, bytes]]

    def registry(self, catalog: ProfileCatalog) -> DeviceRegistry:
        return DeviceRegistry(self.devices, catalog)

    def devices_yaml(self) -> str:
        return yaml.safe_dump({"devices": [d.model_dump(exclude_defaults=True) for d in self.devices]}, sort_keys=False)


def build_workload(
    messages: int,
    devices: int = 50,
    seed: int = 1,
    catalog: ProfileCatalog | None = None,
    records_per_message: int = 1,
) -> Workload:
    """``messages`` valid telemetry messages, round-robin over ``devices``.

    Devices are spread over every bundled profile; each record carries every
    metric of its profile with a value in range, and a timestamp one second
    after its device's previous record, so no two points collide. With one
    record per message the record is inline; with more, the message is the
    contract's ``{"seq": …, "batch": [records…]}``. Each device's seq grows by
    one per message.
    """
    if messages < 0 or devices < 1 or records_per_message < 1:
        raise ValueError("messages must be >= 0, devices and records_per_message >= 1")
    catalog = catalog or load_profiles()
    profiles = list(catalog)
    rng = random.Random(seed)
    entries = [
        DeviceEntry(
            site=SITE,
            line=f"line-{index % 5 + 1}",
            device=f"dev-{index:03d}",
            profile=profiles[index % len(profiles)].id,
        )
        for index in range(devices)
    ]
    topics = [topic_for(e.site, e.line, e.device, Channel.TELEMETRY) for e in entries]
    device_profiles = [catalog[e.profile] for e in entries]
    seqs = [0] * devices
    out: list[tuple[str, bytes]] = []
    for index in range(messages):
        device = index % devices
        seq = seqs[device]
        seqs[device] += 1
        body: dict[str, Any]
        if records_per_message == 1:
            body = {"seq": seq, "ts": BASE_TS_MS + seq * 1000, "metrics": random_metrics(device_profiles[device], rng)}
        else:
            first = seq * records_per_message
            batch = [
                {"ts": BASE_TS_MS + (first + r) * 1000, "metrics": random_metrics(device_profiles[device], rng)}
                for r in range(records_per_message)
            ]
            body = {"seq": seq, "batch": batch}
        out.append((topics[device], json.dumps(body).encode("utf-8")))
    return Workload(entries, out)


# --- small helpers ------------------------------------------------------------


def proc_status_kb(pid: int, key: str = "VmHWM") -> int | None:
    """A field of /proc/PID/status in kB (VmHWM is the peak resident set size)."""
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith(key + ":"):
                return int(line.split()[1])
    except (OSError, ValueError, IndexError):
        return None
    return None


def proc_cpu_s(pid: int) -> float | None:
    """User + system CPU seconds a process has used so far."""
    try:
        text = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    fields = text[text.rindex(")") + 2 :].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def process_tree(pid: int) -> list[int]:
    """``pid`` and all its descendants (the collector validates in a child process)."""
    tree, index = [pid], 0
    while index < len(tree):
        for task in Path(f"/proc/{tree[index]}/task").glob("*"):
            with contextlib.suppress(OSError, ValueError):
                tree += [int(child) for child in (task / "children").read_text().split()]
        index += 1
    return tree


def tree_rss_kb(pid: int) -> int | None:
    """Peak RSS of a process tree: the sum of each process's own peak (an upper bound)."""
    peaks = [proc_status_kb(p) for p in process_tree(pid)]
    return sum(p for p in peaks if p is not None) or None


def tree_cpu_s(pid: int) -> float | None:
    cpus = [proc_cpu_s(p) for p in process_tree(pid)]
    return sum(c for c in cpus if c is not None) or None


def _command_first_line(command: Sequence[str]) -> str:
    try:
        result = subprocess.run(list(command), capture_output=True, text=True, timeout=10, check=False)
    except (OSError, subprocess.TimeoutExpired) as exc:
        return f"unknown ({exc})"
    text = (result.stdout + result.stderr).strip()
    return text.splitlines()[0].strip() if text else "unknown"


def machine_facts(node_red_dir: Path | None = None) -> dict[str, Any]:
    cpu_model = "unknown"
    with contextlib.suppress(OSError):
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu_model = line.split(":", 1)[1].strip()
                break
    facts: dict[str, Any] = {
        "cores": os.cpu_count(),
        "cpu_model": cpu_model,
        "memory_gb": round(os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES") / 2**30, 1),
        "kernel": platform.release(),
        "python": platform.python_version(),
        "paho_mqtt": getattr(paho, "__version__", None) or _pkg_version("paho-mqtt"),
        "mosquitto": _command_first_line([local_services.find_binary("mosquitto", "/usr/sbin/mosquitto"), "-h"]),
        "influxd": _command_first_line([local_services.find_binary("influxd", "/usr/bin/influxd"), "version"]),
        "loadavg_at_start": os.getloadavg(),
    }
    if node_red_dir is not None:
        package = node_red_dir / "node_modules" / "node-red" / "package.json"
        if package.is_file():
            facts["node_red"] = json.loads(package.read_text())["version"]
            contrib = node_red_dir / "node_modules" / "node-red-contrib-influxdb" / "package.json"
            if contrib.is_file():
                facts["node_red_contrib_influxdb"] = json.loads(contrib.read_text())["version"]
            facts["node"] = _command_first_line(["node", "--version"])
    return facts


def _pkg_version(name: str) -> str:
    try:
        return version(name)
    except PackageNotFoundError:
        return "unknown"


def influx_point_count(client: InfluxClient) -> int:
    """Points in every telemetry measurement, counted by InfluxDB (SELECT count)."""
    try:
        series = client.query('SELECT count("seq") FROM /^telemetry_/')
    except InfluxQueryError as exc:
        if "database not found" in str(exc):
            return 0
        raise
    return sum(int(s.values[0][1]) for s in series if s.values)


def prime_session(port: int, client_id: str, topic_filter: str, *, mqtt5: bool = True) -> None:
    """Create the consumer's persistent session (subscribed with QoS 1), then leave it queued."""
    settings = MqttSettings(port=port)
    subscribed = threading.Event()
    if mqtt5:
        client = new_client(settings, client_id)
        client.on_subscribe = lambda *_: subscribed.set()
        connect_and_wait(client, settings, persistent_session_s=SESSION_EXPIRY_S)
    else:  # MQTT 3.1.1 clean_session=false, as Node-RED's mqtt-broker node with cleansession off
        client = paho.Client(
            CallbackAPIVersion.VERSION2, client_id=client_id, protocol=MQTTProtocolVersion.MQTTv311, clean_session=False
        )
        connected = threading.Event()
        client.on_connect = lambda *_: connected.set()
        client.on_subscribe = lambda *_: subscribed.set()
        client.connect("127.0.0.1", port)
        client.loop_start()
        if not connected.wait(10):
            raise RuntimeError("could not connect to prime the MQTT 3.1.1 session")
    client.subscribe(topic_filter, qos=1)
    if not subscribed.wait(10):
        raise RuntimeError(f"no SUBACK for {topic_filter}")
    client.disconnect()
    client.loop_stop()


def count_redelivered(port: int, client_id: str, wait_s: float = 1.5) -> int:
    """Resume a session and count what the broker still holds for it (unacknowledged leftovers)."""
    settings = MqttSettings(port=port)
    count = [0]
    client = new_client(settings, client_id)
    client.on_message = lambda *_: count.__setitem__(0, count[0] + 1)
    connect_and_wait(client, settings, persistent_session_s=60)
    time.sleep(wait_s)
    client.disconnect()
    client.loop_stop()
    return count[0]


# --- child processes (spawned: their own interpreter and GIL) ------------------


def bare_worker(port: int, client_id: str, expected: int, timeout_s: float, out: Any) -> None:
    """Count messages from the persistent session (auto-acknowledged); nothing else."""
    settings = MqttSettings(port=port)
    client = new_client(settings, client_id)
    state = {"count": 0, "first": 0.0, "last": 0.0, "connack": 0.0}
    done = threading.Event()

    def on_connect(c: paho.Client, userdata: object, flags: object, reason: object, props: object) -> None:
        state["connack"] = state["connack"] or time.time()
        c.subscribe(SUBSCRIPTION, qos=1)

    def on_message(c: paho.Client, userdata: object, message: paho.MQTTMessage) -> None:
        state["count"] += 1
        if state["count"] == 1:
            state["first"] = time.time()
        if state["count"] >= expected:
            state["last"] = time.time()
            done.set()

    client.on_connect = on_connect
    client.on_message = on_message
    connect_and_wait(client, settings, persistent_session_s=SESSION_EXPIRY_S, receive_maximum=65535)
    out.put({"event": "connected"})
    done.wait(timeout_s)
    last = state["last"] or time.time()
    time.sleep(0.2)  # let the last PUBACKs go out
    client.disconnect()
    client.loop_stop()
    out.put(
        {
            "event": "done",
            "count": int(state["count"]),
            "connack": state["connack"],
            "first": state["first"],
            "end": last,
            "rss_kb": proc_status_kb(os.getpid()) or 0,  # ru_maxrss would report the parent's peak (kept across exec)
            "cpu_s": sum(resource.getrusage(resource.RUSAGE_SELF)[:2]),
        }
    )


def naive_worker(
    port: int, client_id: str, influx_url: str, devices_file: str, expected: int, time_cap_s: float, out: Any
) -> None:
    """The tutorial collector: validate, then one synchronous HTTP POST /write per message, then ack."""
    registry = load_registry(Path(devices_file), load_profiles())
    http = httpx.Client(base_url=influx_url, timeout=10.0)  # keep-alive, as requests.Session would
    http.post("/query", data={"q": f'CREATE DATABASE "{DATABASE}"'})
    settings = MqttSettings(port=port)
    client = new_client(settings, client_id)
    state = {"count": 0, "written": 0, "failed": 0, "rejected": 0, "connack": 0.0, "end": 0.0}
    done = threading.Event()
    deadline = [0.0]

    def on_connect(c: paho.Client, userdata: object, flags: object, reason: object, props: object) -> None:
        state["connack"] = state["connack"] or time.time()
        deadline[0] = state["connack"] + time_cap_s
        c.subscribe(SUBSCRIPTION, qos=1)

    def on_message(c: paho.Client, userdata: object, message: paho.MQTTMessage) -> None:
        if done.is_set():
            return
        result = validate_message(message.topic, bytes(message.payload), registry, MAX_PAYLOAD_BYTES)
        if isinstance(result, Accepted):
            for line in result.lines:
                response = http.post("/write", params={"db": DATABASE, "precision": "ms"}, content=line.encode("utf-8"))
                state["written" if response.status_code == 204 else "failed"] += 1
        else:
            state["rejected"] += 1
        state["count"] += 1
        if state["count"] >= expected or time.time() >= deadline[0]:
            state["end"] = time.time()
            done.set()

    client.on_connect = on_connect
    client.on_message = on_message
    connect_and_wait(client, settings, persistent_session_s=SESSION_EXPIRY_S, receive_maximum=65535)
    out.put({"event": "connected"})
    done.wait(time_cap_s + 60)
    client.disconnect()
    client.loop_stop()
    http.close()
    out.put(
        {
            "event": "done",
            **state,
            "end": state["end"] or time.time(),
            "rss_kb": proc_status_kb(os.getpid()) or 0,  # ru_maxrss would report the parent's peak (kept across exec)
            "cpu_s": sum(resource.getrusage(resource.RUSAGE_SELF)[:2]),
        }
    )


# --- run bookkeeping ----------------------------------------------------------


@dataclass
class Cleanup:
    """Everything started during the run, stopped on exit (Ctrl-C included)."""

    services: list[local_services.LocalService] = field(default_factory=list)
    popens: list[subprocess.Popen[bytes]] = field(default_factory=list)
    children: list[BaseProcess] = field(default_factory=list)

    def stop_all(self) -> None:
        for child in self.children:
            if child.is_alive():
                child.terminate()
                child.join(5)
                if child.is_alive():
                    child.kill()
        for popen in self.popens:
            if popen.poll() is None:
                with contextlib.suppress(OSError):
                    os.killpg(popen.pid, signal.SIGTERM)
                try:
                    popen.wait(15)
                except subprocess.TimeoutExpired:
                    with contextlib.suppress(OSError):
                        os.killpg(popen.pid, signal.SIGKILL)
                    popen.wait(5)
        for service in reversed(self.services):
            service.stop()
        self.children.clear()
        self.popens.clear()
        self.services.clear()


@dataclass
class Context:
    args: argparse.Namespace
    run_dir: Path
    workload_path: Path
    devices_file: Path
    cleanup: Cleanup
    spawn: Any  # a multiprocessing spawn context
    batched_path: Path | None = None  # the batched phase's workload: messages of many records each
    batched_points: int = 0
    drain_rates: dict[str, list[float]] = field(default_factory=dict)  # phase → rates measured so far


@dataclass
class PhaseEnv:
    folder: Path
    broker: local_services.LocalService
    influx: local_services.InfluxService | None


@contextlib.contextmanager
def phase_services(ctx: Context, name: str, *, influx: bool) -> Iterator[PhaseEnv]:
    folder = Path(tempfile.mkdtemp(prefix=f"{name}-", dir=ctx.run_dir))
    broker = local_services.mosquitto(folder / "mosquitto")
    ctx.cleanup.services.append(broker)
    broker.start()
    database: local_services.InfluxService | None = None
    if influx:
        database = local_services.influxdb(folder / "influxdb")
        ctx.cleanup.services.append(database)
        database.start(timeout_s=60)
    try:
        yield PhaseEnv(folder, broker, database)
    finally:
        for service in (database, broker):
            if service is not None:
                service.stop()
                with contextlib.suppress(ValueError):
                    ctx.cleanup.services.remove(service)
        if not ctx.args.keep:
            shutil.rmtree(folder, ignore_errors=True)


def start_child(ctx: Context, target: Callable[..., None], *args: Any) -> tuple[BaseProcess, Any]:
    queue = ctx.spawn.Queue()
    child = ctx.spawn.Process(target=target, args=(*args, queue), daemon=True)
    child.start()
    ctx.cleanup.children.append(child)
    return child, queue


def wait_child(ctx: Context, child: BaseProcess, queue: Any, timeout_s: float, what: str) -> dict[str, Any]:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        try:
            result: dict[str, Any] = queue.get(timeout=0.5)
            return result
        except queue_module.Empty:
            if not child.is_alive():
                raise RuntimeError(f"{what} exited with {child.exitcode} without a result") from None
    raise RuntimeError(f"{what} gave no result within {timeout_s:g} s")


def finish_child(ctx: Context, child: BaseProcess) -> None:
    child.join(10)
    if child.is_alive():
        child.terminate()
        child.join(5)
    with contextlib.suppress(ValueError):
        ctx.cleanup.children.remove(child)


@dataclass
class Publishers:
    """Publisher processes with their packets encoded and their connections open, waiting for ``go``."""

    children: list[tuple[BaseProcess, Any]]
    go: Any  # a multiprocessing Event
    count: int
    finished: bool = False

    def abandon(self, ctx: Context) -> None:
        """Once done with them, or after a failure: stop whatever still runs."""
        if self.finished:
            return
        for child, _ in self.children:
            if child.is_alive():
                child.terminate()
            finish_child(ctx, child)
        self.finished = True


def start_publishers(ctx: Context, port: int, count: int, workload_path: Path | None = None) -> Publishers:
    """``--publishers`` processes, each with the messages of its share of the devices (so seq stays in order)."""
    shares = ctx.args.publishers
    go = ctx.spawn.Event()
    path = str(workload_path or ctx.workload_path)
    children = [
        start_child(ctx, publish_worker, port, path, count, f"bench-publisher-{share}", share, shares, go)
        for share in range(shares)
    ]
    publishers = Publishers(children, go, count)
    try:
        for child, queue in children:
            wait_child(ctx, child, queue, 120, "publisher")  # ready: encoded and connected
    except RuntimeError:
        publishers.abandon(ctx)
        raise
    return publishers


def finish_publishers(ctx: Context, publishers: Publishers, timeout_s: float) -> dict[str, Any]:
    """Wait for every publisher's result; the figures of all of them together."""
    results = []
    try:
        for child, queue in publishers.children:
            results.append(wait_child(ctx, child, queue, timeout_s, "publisher"))
            finish_child(ctx, child)
    finally:
        publishers.abandon(ctx)
    errors = [r["error"] for r in results if "error" in r]
    if errors:
        raise RuntimeError(f"publisher: {'; '.join(errors)}")
    published = sum(r["published"] for r in results)
    if published != publishers.count:
        raise RuntimeError(f"publisher: only {published} of {publishers.count} acknowledged by the broker")
    started = min(r["started"] for r in results)
    finished = max(r["finished"] for r in results)
    seconds = finished - started
    return {
        "publisher": "bench.publisher (pre-encoded MQTT 5 PUBLISH over a raw socket, QoS 1)",
        "processes": len(results),
        "window": results[0]["window"],
        "published": published,
        "refused": sum(r["refused"] for r in results),
        "started": started,
        "finished": finished,
        "seconds": round(seconds, 3),
        "rate": published / seconds if seconds > 0 else 0.0,
        "rates": [round(r["published"] / max(r["finished"] - r["started"], 1e-9), 1) for r in results],
    }


def publish_backlog(ctx: Context, port: int, count: int, workload_path: Path | None = None) -> dict[str, Any]:
    log(f"  publishing {count:,} QoS 1 messages from {ctx.args.publishers} separate process(es)")
    publishers = start_publishers(ctx, port, count, workload_path)
    publishers.go.set()
    result = finish_publishers(ctx, publishers, max(120.0, count / 500))
    log(f"  published {count:,} in {result['seconds']:.2f} s ({result['rate']:,.0f} msg/s)")
    return result


def _cpu_snapshot(env: PhaseEnv) -> dict[str, float | None]:
    snapshot: dict[str, float | None] = {}
    if env.broker.process is not None:
        snapshot["mosquitto"] = proc_cpu_s(env.broker.process.pid)
    if env.influx is not None and env.influx.process is not None:
        snapshot["influxd"] = proc_cpu_s(env.influx.process.pid)
    return snapshot


def _cpu_delta(before: dict[str, float | None], after: dict[str, float | None]) -> dict[str, float]:
    return {k: round(v - b, 2) for k, v in after.items() if v is not None and (b := before.get(k)) is not None}


def _mb(kb: int | None) -> float | None:
    return round(kb / 1024, 1) if kb else None


# --- phases -----------------------------------------------------------------------


def consume(
    ctx: Context, env: PhaseEnv, count: int, live: bool, what: str, timeout_s: float,
    target: Callable[..., None], *args: Any,
) -> tuple[dict[str, Any], dict[str, Any], dict[str, float | None]]:  # fmt: skip
    """Run a consumer child on a backlog (drain) or with the publishers going (live).

    The result, the publishing report and the CPU snapshot taken before the consumer started.
    """
    publishers = start_publishers(ctx, env.broker.port, count) if live else None
    try:
        publish = None if live else publish_backlog(ctx, env.broker.port, count)
        cpu_before = _cpu_snapshot(env)
        child, queue = start_child(ctx, target, *args)
        wait_child(ctx, child, queue, 60, what)  # connected and subscribed
        if publishers is not None:
            publishers.go.set()
        result = wait_child(ctx, child, queue, timeout_s, what)
        finish_child(ctx, child)
        if publishers is not None:
            publish = finish_publishers(ctx, publishers, 120)
    finally:
        if publishers is not None:
            publishers.abandon(ctx)
    assert publish is not None
    return result, publish, cpu_before


def phase_bare(ctx: Context, count: int, *, live: bool = False) -> dict[str, Any]:
    with phase_services(ctx, "bare", influx=False) as env:
        client_id = "bench-bare"
        prime_session(env.broker.port, client_id, SUBSCRIPTION)
        result, publish, cpu_before = consume(
            ctx, env, count, live, "bare subscriber", ctx.args.timeout + 30,
            bare_worker, env.broker.port, client_id, count, ctx.args.timeout,
        )  # fmt: skip
        start = publish["started"] if live else result["connack"]
        seconds = result["end"] - start
        received = result["count"]
        return {
            "mode": "live" if live else "drain",
            "messages": count,
            "received": received,
            "seconds": round(seconds, 3),
            "rate": received / seconds if seconds > 0 else 0.0,
            "first_message_after_connack_s": round(result["first"] - result["connack"], 3),
            "lost": count - received,
            "peak_rss_mb": round(result["rss_kb"] / 1024, 1),
            "cpu_s": {"consumer": round(result["cpu_s"], 2), **_cpu_delta(cpu_before, _cpu_snapshot(env))},
            "publisher_rate": round(publish["rate"], 1),
            "publish": publish,
        }


_LOG_TIME = re.compile(r"^(\d{4}-\d\d-\d\d \d\d:\d\d:\d\d,\d{3}) ")


def _log_time(line: str) -> float | None:
    match = _LOG_TIME.match(line)
    if not match:
        return None
    return datetime.strptime(match.group(1), "%Y-%m-%d %H:%M:%S,%f").timestamp()


def _scrape(metrics_url: str) -> dict[str, float]:
    """The collector's counters: summed over labels under the bare name, and each labelled series by its full name."""
    values: dict[str, float] = {}
    try:
        text = httpx.get(metrics_url, timeout=2.0).text
    except httpx.HTTPError:
        return values
    for line in text.splitlines():
        if line.startswith("pilot_collector_") and not line.startswith("#"):
            name, _, value = line.rpartition(" ")
            base = name.split("{", 1)[0]
            values[base] = values.get(base, 0.0) + float(value)
            if base != name:
                values[name] = float(value)
    return values


def _by_label(metrics: dict[str, float], base: str) -> dict[str, int]:
    """A labelled counter's non-zero series, keyed by their label value: {"seq_regression": 3}."""
    found: dict[str, int] = {}
    for name, value in metrics.items():
        if name.startswith(base + "{") and value:
            label = name[len(base) + 1 : -1].split("=", 1)[-1].strip('"')
            found[label] = found.get(label, 0) + int(value)
    return found


def _wait_for_line(path: Path, needle: str, process: subprocess.Popen[bytes], timeout_s: float) -> tuple[str, float]:
    """Tail a log until a line containing ``needle`` appears: (the line, when we saw it)."""
    deadline = time.monotonic() + timeout_s
    offset = 0
    pending = ""
    while time.monotonic() < deadline:
        with path.open("rb") as fh:
            fh.seek(offset)
            chunk = fh.read()
        seen = time.time()
        offset += len(chunk)
        pending += chunk.decode("utf-8", "replace")
        *lines, pending = pending.split("\n")
        for line in lines:
            if needle in line:
                return line, seen
        if process.poll() is not None:
            raise RuntimeError(f"{process.args!r} exited with {process.returncode}; see {path}")
        time.sleep(0.01)
    raise RuntimeError(f"{needle!r} did not appear in {path} within {timeout_s:g} s")


@dataclass
class CollectorProcess:
    """One ``python -m pilot collect`` started for a phase."""

    client_id: str
    metrics_url: str
    log_path: Path
    process: subprocess.Popen[bytes]
    profiled: bool
    connack: float = 0.0
    python_pid: int | None = None


def start_collector(
    ctx: Context, env: PhaseEnv, client_id: str, *, share_group: str | None = None, profile_path: Path | None = None
) -> CollectorProcess:
    """Start a collector on this phase's services, configured only through PILOT_* variables."""
    assert env.influx is not None
    metrics_port = local_services.free_port()
    environment = {
        **os.environ,
        "PYTHONPATH": str(REPO),
        "PILOT_MQTT__HOST": "127.0.0.1",
        "PILOT_MQTT__PORT": str(env.broker.port),
        "PILOT_INFLUX__URL": env.influx.url,
        "PILOT_INFLUX__DATABASE": DATABASE,
        "PILOT_DEVICES_FILE": str(ctx.devices_file),
        "PILOT_CLIENT_ID": client_id,
        "PILOT_METRICS_HOST": "127.0.0.1",
        "PILOT_METRICS_PORT": str(metrics_port),
        # Two collectors in one folder must not share a spool.
        "PILOT_SPOOL_DIR": str(env.folder / f"spool-{client_id}"),
        **({"PILOT_SHARE_GROUP": share_group} if share_group else {}),
        **{f"PILOT_{key.upper()}": str(value) for key, value in COLLECTOR_CONFIG.items()},
    }
    command = [sys.executable, "-m", "pilot", "collect", "--log-level", "info"]
    if profile_path is not None:
        py_spy = find_py_spy(ctx.args.py_spy)
        if py_spy is None:
            raise RuntimeError("py-spy not found; pass --py-spy PATH")
        gil = ["--gil"] if ctx.args.profile_gil else []
        command = [py_spy, "record", "--threads", *gil, "--rate", "200", "--format", "raw", "-o", str(profile_path),
                   "--", *command]  # fmt: skip
    log_path = env.folder / f"{client_id}.log"
    with log_path.open("ab") as log_file:
        process = subprocess.Popen(
            command, cwd=env.folder, env=environment, stdout=log_file, stderr=subprocess.STDOUT,
            start_new_session=True,
        )  # fmt: skip
    ctx.cleanup.popens.append(process)
    return CollectorProcess(
        client_id, f"http://127.0.0.1:{metrics_port}/metrics", log_path, process, profiled=profile_path is not None
    )


def wait_collector_connected(collector: CollectorProcess) -> None:
    """CONNACK time from the collector's own log line (ms timestamp)."""
    line, seen = _wait_for_line(collector.log_path, "connected to MQTT broker", collector.process, 60)
    collector.connack = _log_time(line) or seen
    collector.python_pid = _python_pid(collector.process)


def collector_figures(collector: CollectorProcess) -> dict[str, Any]:
    """What one collector says about itself (/metrics) and what its process tree used (peak RSS, CPU)."""
    metrics = _scrape(collector.metrics_url)
    pid = collector.python_pid
    peak_rss_kb = tree_rss_kb(pid) if pid else None
    cpu = tree_cpu_s(pid) if pid else None
    return {
        "client_id": collector.client_id,
        "received": int(metrics.get("pilot_collector_messages_received_total", 0)),
        "points_written": int(metrics.get("pilot_collector_points_written_total", 0)),
        "rejected_metric": int(metrics.get("pilot_collector_messages_rejected_total", 0)),
        "rejected_by_reason": _by_label(metrics, "pilot_collector_messages_rejected_total"),
        "duplicates": int(metrics.get("pilot_collector_messages_duplicate_total", 0)),
        "seq_missing": int(metrics.get("pilot_collector_seq_missing_total", 0)),
        "write_retries": int(metrics.get("pilot_collector_write_retries_total", 0)),
        "batches_written": int(metrics.get("pilot_collector_batches_total", 0)),
        "peak_rss_mb": _mb(peak_rss_kb),
        "cpu_s": round(cpu, 2) if cpu is not None else None,
    }


def stop_collector(ctx: Context, collector: CollectorProcess) -> None:
    process = collector.process
    if process.poll() is None:
        # py-spy writes its profile on SIGINT; the collector flushes and acknowledges on either.
        os.killpg(process.pid, signal.SIGINT if collector.profiled else signal.SIGTERM)
        try:
            process.wait(60 if collector.profiled else 30)
        except subprocess.TimeoutExpired:
            os.killpg(process.pid, signal.SIGKILL)
            process.wait(5)
    with contextlib.suppress(ValueError):
        ctx.cleanup.popens.remove(process)


def _sum_figures(per_process: list[dict[str, Any]]) -> dict[str, Any]:
    """The figures of every collector of a phase, added up (peak RSS: the sum of each tree's peak)."""
    total: dict[str, Any] = {}
    for key in ("received", "points_written", "rejected_metric", "duplicates", "seq_missing", "write_retries",
                "batches_written"):  # fmt: skip
        total[key] = sum(p[key] for p in per_process)
    reasons: dict[str, int] = {}
    for figures in per_process:
        for reason, number in figures["rejected_by_reason"].items():
            reasons[reason] = reasons.get(reason, 0) + number
    total["rejected_by_reason"] = reasons
    rss = [p["peak_rss_mb"] for p in per_process if p["peak_rss_mb"] is not None]
    total["peak_rss_mb"] = round(sum(rss), 1) if rss else None
    cpu = [p["cpu_s"] for p in per_process if p["cpu_s"] is not None]
    total["cpu_s"] = round(sum(cpu), 2) if cpu else None
    return total


def phase_collector(  # noqa: PLR0915
    ctx: Context,
    count: int,
    *,
    live: bool = False,
    profile: bool = False,
    processes: int = 1,
    batched: bool = False,
) -> dict[str, Any]:
    """Collector drain (or live run): ``processes`` collectors over one shared subscription when more than one.

    The end is when the collectors' points_written counters add up to the
    points published; then the InfluxDB count must equal them. With
    ``batched``, the messages are the batched workload's (many records each).
    """
    workload_path = ctx.batched_path if batched else ctx.workload_path
    assert workload_path is not None
    points = ctx.batched_points if batched else count
    name = "batched" if batched else ("collector" if processes == 1 else f"collector-{processes}")
    with phase_services(ctx, name, influx=True) as env:
        assert env.influx is not None
        share_group = SHARE_GROUP if processes > 1 else None
        client_ids = (
            ["bench-collector"] if processes == 1 else [f"bench-collector-{i}" for i in range(1, processes + 1)]
        )
        # The filter the collectors will subscribe to, as their settings make it: each session is primed with it.
        subscription = CollectorSettings.model_construct(share_group=share_group).subscription
        for client_id in client_ids:
            prime_session(env.broker.port, client_id, subscription)
        publishers = start_publishers(ctx, env.broker.port, count, workload_path) if live else None
        collectors: list[CollectorProcess] = []
        dead_letters: DeadLetterCounter | None = None
        try:
            publish = None if live else publish_backlog(ctx, env.broker.port, count, workload_path)
            dead_letters = DeadLetterCounter(env.broker.port)
            profile_path = ctx.run_dir / "collector-py-spy.txt" if profile else None
            cpu_before = _cpu_snapshot(env)
            collectors = [
                start_collector(ctx, env, client_id, share_group=share_group, profile_path=profile_path)
                for client_id in client_ids
            ]
            for collector in collectors:
                wait_collector_connected(collector)
            if publishers is not None:
                publishers.go.set()
            end = _wait_for_points(collectors, points, ctx.args.timeout)
            if publishers is not None:
                publish = finish_publishers(ctx, publishers, 120)
            with InfluxClient(InfluxSettings(url=env.influx.url, database=DATABASE)) as influx:
                stored = influx_point_count(influx)
                if end is not None and stored < points:  # written means stored: should never wait here
                    stop_at = time.monotonic() + 30
                    while stored < points and time.monotonic() < stop_at:
                        time.sleep(0.05)
                        stored = influx_point_count(influx)
                    end = time.time()
            per_process = [collector_figures(c) for c in collectors]
            cpu_after = _cpu_snapshot(env)
        finally:
            for collector in collectors:
                stop_collector(ctx, collector)
            if publishers is not None:
                publishers.abandon(ctx)
            dead = dead_letters.close() if dead_letters is not None else 0
        for figures in per_process:
            figures["unacked_left_in_session"] = count_redelivered(env.broker.port, figures["client_id"])
        if end is None:
            logs = ", ".join(str(c.log_path) for c in collectors)
            raise RuntimeError(f"{name} did not write {points} points within {ctx.args.timeout:g} s; see {logs}")
        assert publish is not None
        start = publish["started"] if live else min(c.connack for c in collectors)
        seconds = end - start
        total = _sum_figures(per_process)
        result: dict[str, Any] = {
            "mode": "live" if live else "drain",
            "messages": count,
            "points": points,
            "stored_points": stored,
            "seconds": round(seconds, 3),
            "rate": count * stored / points / seconds if seconds > 0 else 0.0,  # messages/s (all of them, if stored)
            "lost": points - stored,
            "received": total["received"],
            "rejected_metric": total["rejected_metric"],
            "rejected_by_reason": total["rejected_by_reason"],
            "dead_letters_seen": dead,
            "duplicates": total["duplicates"],
            "seq_missing": total["seq_missing"],
            "write_retries": total["write_retries"],
            "batches_written": total["batches_written"],
            "unacked_left_in_session": sum(p["unacked_left_in_session"] for p in per_process),
            "peak_rss_mb": total["peak_rss_mb"],
            "cpu_s": {"consumer": total["cpu_s"], **_cpu_delta(cpu_before, cpu_after)},
            "publisher_rate": round(publish["rate"], 1),
            "publish": publish,
        }
        if points != count:
            result["points_rate"] = stored / seconds if seconds > 0 else 0.0
            result["records_per_message"] = points // count
        if processes > 1:
            result["subscription"] = subscription
            result["per_process"] = per_process
            result["peak_rss_mb_per_process"] = [p["peak_rss_mb"] for p in per_process]
            # Every message was published while both sessions were offline: reaching N proves the broker
            # queued each member's share for it, and the split says how it shared them out.
            result["received_per_process"] = [p["received"] for p in per_process]
            if not live:
                result["backlog_queued_for_offline_members"] = total["received"] >= count and all(
                    p["received"] > 0 for p in per_process
                )
            # Timed from the first CONNACK: the other process is still starting meanwhile.
            result["connack_spread_s"] = round(max(c.connack for c in collectors) - start, 3) if not live else None
        if profile_path is not None:
            result["profile"] = str(profile_path)
        return result


def _wait_for_points(collectors: list[CollectorProcess], count: int, timeout_s: float) -> float | None:
    """When the collectors' points_written counters add up to ``count``.

    Scraping /metrics costs the collector CPU (py-spy showed 3% at 20 scrapes/s),
    so it is scraped twice a second while more than two batches remain and
    every 50 ms near the end.
    """
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        written = sum(_scrape(c.metrics_url).get("pilot_collector_points_written_total", 0) for c in collectors)
        if written >= count:
            return time.time()
        for collector in collectors:
            if collector.process.poll() is not None:
                raise RuntimeError(f"{collector.process.args!r} exited early with {collector.process.returncode}")
        time.sleep(0.5 if count - written > 10_000 else 0.05)
    return None


def _python_pid(process: subprocess.Popen[bytes]) -> int | None:
    """The collector's Python process: the Popen itself, or py-spy's child when profiling."""
    try:
        children = Path(f"/proc/{process.pid}/task/{process.pid}/children").read_text().split()
    except OSError:
        children = []
    name = Path(f"/proc/{process.pid}/comm").read_text().strip() if Path(f"/proc/{process.pid}/comm").exists() else ""
    if name.startswith("py-spy") and children:
        return int(children[0])
    return process.pid


def _poll_until(
    condition: Callable[[], bool], timeout_s: float, process: subprocess.Popen[bytes] | None, interval_s: float = 0.05
) -> float | None:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if condition():
            return time.time()
        if process is not None and process.poll() is not None:
            raise RuntimeError(f"{process.args!r} exited early with {process.returncode}")
        time.sleep(interval_s)
    return None


class DeadLetterCounter:
    """Counts what the collector republishes on its dead-letter topic during a phase."""

    def __init__(self, port: int) -> None:
        settings = MqttSettings(port=port)
        self.count = 0
        self._client = new_client(settings, "bench-dead-letters")
        subscribed = threading.Event()
        self._client.on_subscribe = lambda *_: subscribed.set()
        self._client.on_message = lambda *_: self._seen()
        connect_and_wait(self._client, settings)
        self._client.subscribe("pilot/deadletter/#", qos=1)
        if not subscribed.wait(10):
            raise RuntimeError("could not subscribe to the dead-letter topic")

    def _seen(self) -> None:
        self.count += 1

    def close(self) -> int:
        time.sleep(0.2)
        self._client.disconnect()
        self._client.loop_stop()
        return self.count


def phase_naive(ctx: Context, count: int, *, live: bool = False) -> dict[str, Any]:
    with phase_services(ctx, "naive", influx=True) as env:
        assert env.influx is not None
        client_id = "bench-naive"
        prime_session(env.broker.port, client_id, SUBSCRIPTION)
        result, publish, cpu_before = consume(
            ctx, env, count, live, "naive collector", ctx.args.naive_time_cap + 90,
            naive_worker, env.broker.port, client_id, env.influx.url, str(ctx.devices_file), count,
            ctx.args.naive_time_cap,
        )  # fmt: skip
        cpu_after = _cpu_snapshot(env)
        with InfluxClient(InfluxSettings(url=env.influx.url, database=DATABASE)) as influx:
            stored = influx_point_count(influx)
        start = publish["started"] if live else result["connack"]
        seconds = result["end"] - start
        return {
            "mode": "live" if live else "drain",
            "messages": count,
            "processed": result["count"],
            "time_capped": result["count"] < count,
            "written": result["written"],
            "failed_writes": result["failed"],
            "rejected": result["rejected"],
            "stored_points": stored,
            "lost": result["count"] - stored,
            "seconds": round(seconds, 3),
            "rate": stored / seconds if seconds > 0 else 0.0,
            "peak_rss_mb": round(result["rss_kb"] / 1024, 1),
            "cpu_s": {"consumer": round(result["cpu_s"], 2), **_cpu_delta(cpu_before, cpu_after)},
            "publisher_rate": round(publish["rate"], 1),
            "publish": publish,
        }


def latency_rate(ctx: Context) -> tuple[float, str]:
    """The maximum the latency phase paces at half of: this run's latest collector drain, else --latency-rate."""
    drained = ctx.drain_rates.get("collector")
    if drained:
        return drained[-1], "collector drain rate measured earlier in this run"
    return float(ctx.args.latency_rate), "--latency-rate"


def phase_latency(ctx: Context) -> dict[str, Any]:
    """Publish → queryable latency through one collector, the publisher paced at half the maximum rate."""
    maximum, source = latency_rate(ctx)
    rate = maximum / 2
    count = max(1, round(rate * ctx.args.latency_duration))
    log(f"  pacing {count:,} messages at {rate:,.0f} msg/s (half of {maximum:,.0f}: {source})")
    with phase_services(ctx, "latency", influx=True) as env:
        assert env.influx is not None
        client_id = "bench-collector"
        prime_session(env.broker.port, client_id, SUBSCRIPTION)
        go = ctx.spawn.Event()
        child, queue = start_child(
            ctx, paced_publish_worker, env.broker.port, str(ctx.workload_path), "bench-paced-publisher", rate, count,
            go,
        )  # fmt: skip
        collector: CollectorProcess | None = None
        dead_letters: DeadLetterCounter | None = None
        influx = InfluxClient(InfluxSettings(url=env.influx.url, database=DATABASE))
        devices = [d.device for d in _load_devices(ctx.devices_file)]
        poller = LatencyPoller(influx, devices, ctx.args.latency_poll)
        try:
            wait_child(ctx, child, queue, 120, "paced publisher")  # ready
            dead_letters = DeadLetterCounter(env.broker.port)
            cpu_before = _cpu_snapshot(env)
            collector = start_collector(ctx, env, client_id)
            wait_collector_connected(collector)
            poller.start()
            go.set()
            publish = wait_child(ctx, child, queue, ctx.args.latency_duration * 3 + 120, "paced publisher")
            finish_child(ctx, child)
            if "error" in publish:
                raise RuntimeError(f"paced publisher: {publish['error']}")
            published = publish["published"]
            progress = {"seen": 0, "changed": time.monotonic()}

            def all_seen() -> bool:
                if poller.seen != progress["seen"]:
                    progress.update(seen=poller.seen, changed=time.monotonic())
                return poller.seen >= published or time.monotonic() - progress["changed"] > STALL_S

            _poll_until(all_seen, ctx.args.timeout, collector.process, interval_s=0.05)
            poller.stop()
            stored = influx_point_count(influx)
            figures = collector_figures(collector)
            cpu_after = _cpu_snapshot(env)
        finally:
            poller.stop()
            influx.close()
            finish_child(ctx, child)
            if collector is not None:
                stop_collector(ctx, collector)
            dead = dead_letters.close() if dead_letters is not None else 0
        seconds = publish["finished"] - publish["started"]
        latency = poller.summary()
        return {
            "mode": "paced",
            "rate": rate,
            "max_rate": round(maximum, 1),
            "max_rate_source": source,
            "messages": count,
            "published": published,
            "stored_points": stored,
            "lost": count - stored,
            "seconds": round(seconds, 3),
            "publisher_rate": round(published / seconds, 1) if seconds > 0 else 0.0,
            **latency,
            "latency_definition": "when the poll's answer arrived − the point's ts (its publish time, epoch ms)",
            "points_not_seen_by_poller": stored - latency["points_seen"],
            "ts_bumped": publish["ts_bumped"],
            "worst_lag_behind_schedule_s": publish["worst_lag_behind_schedule_s"],
            "rejected_metric": figures["rejected_metric"],
            "dead_letters_seen": dead,
            "peak_rss_mb": figures["peak_rss_mb"],
            "cpu_s": {"consumer": figures["cpu_s"], **_cpu_delta(cpu_before, cpu_after)},
            "publish": publish,
        }


# --- Node-RED -----------------------------------------------------------------------


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
    measurements = {d.device: catalog[d.profile].measurement for d in _load_devices(ctx.devices_file)}
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
            cpu_before = _cpu_snapshot(env)
            with log_path.open("ab") as log_file:
                process = subprocess.Popen(
                    [str(node_red), "--userDir", str(user_dir), "--settings", str(user_dir / "settings.js"),
                     str(flow_path)],
                    cwd=env.folder, stdout=log_file, stderr=subprocess.STDOUT, start_new_session=True,
                )  # fmt: skip
            ctx.cleanup.popens.append(process)
            _, connack = _wait_for_line(log_path, "Connected to broker", process, 120)
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

            end = _poll_until(landed, ctx.args.timeout, process, interval_s=0.1)
            if publishers is not None:
                publish = finish_publishers(ctx, publishers, 120)
            stored = influx_point_count(influx)
            if stored < count and end is not None:
                end = progress["changed_wall"]  # when the last point landed
            influx.close()
            peak_rss_kb = proc_status_kb(process.pid)
            consumer_cpu = proc_cpu_s(process.pid)
            cpu_after = _cpu_snapshot(env)
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
            "peak_rss_mb": _mb(peak_rss_kb),
            "cpu_s": {
                "consumer": round(consumer_cpu, 2) if consumer_cpu is not None else None,
                **_cpu_delta(cpu_before, cpu_after),
            },
            "publisher_rate": round(publish["rate"], 1),
            "publish": publish,
        }


def _load_devices(path: Path) -> list[DeviceEntry]:
    document = yaml.safe_load(path.read_text(encoding="utf-8"))
    return [DeviceEntry.model_validate(d) for d in document["devices"]]


def find_py_spy(explicit: str | None) -> str | None:
    for candidate in (explicit, shutil.which("py-spy"), str(REPO / ".pilot" / "bench" / "tools" / "bin" / "py-spy")):
        if candidate and os.path.isfile(candidate) and os.access(candidate, os.X_OK):
            return candidate
    return None


def summarize_py_spy(path: Path, top: int = 15) -> dict[str, Any]:
    """Self and inclusive sample shares per function from py-spy's raw (collapsed) output."""
    self_samples: dict[str, int] = {}
    inclusive: dict[str, int] = {}
    per_thread: dict[str, int] = {}
    total = 0
    for line in path.read_text(errors="replace").splitlines():
        stack, _, number = line.rpartition(" ")
        if not stack or not number.isdigit():
            continue
        samples = int(number)
        total += samples
        frames = stack.split(";")
        per_thread[frames[0]] = per_thread.get(frames[0], 0) + samples
        self_samples[frames[-1]] = self_samples.get(frames[-1], 0) + samples
        for frame in set(frames[1:]):
            inclusive[frame] = inclusive.get(frame, 0) + samples

    def share(table: dict[str, int]) -> list[tuple[str, float]]:
        return [(k, round(100 * v / total, 1)) for k, v in sorted(table.items(), key=lambda kv: -kv[1])[:top]]

    return {"samples": total, "threads_pct": share(per_thread), "self_pct": share(self_samples),
            "inclusive_pct": share(inclusive)}  # fmt: skip


# --- the run ------------------------------------------------------------------------


def parse_args(argv: Sequence[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog="python -m bench.ingest",
        description="MQTT → InfluxDB ingest, side by side: bare subscriber, collector (one and two), naive, "
        "Node-RED (batched and per message), batched messages, live variants, publish → queryable latency.",
    )
    parser.add_argument("--messages", type=int, default=100_000, help="messages in the workload (default 100000)")
    parser.add_argument("--devices", type=int, default=50, help="devices the messages are spread over (default 50)")
    parser.add_argument(
        "--phases",
        default=None,
        help=f"comma-separated, from {', '.join(PHASES)}, or all (default {','.join(DEFAULT_PHASES)}, "
        "plus node-red when --node-red-dir is given); they run in the order listed here",
    )
    parser.add_argument("--naive-messages", type=int, default=5000, help="slice the naive collector drains")
    parser.add_argument("--naive-time-cap", type=float, default=60.0, help="seconds the naive phase may run")
    parser.add_argument("--publishers", type=int, default=1, help="publisher processes, each a share of the devices")
    parser.add_argument("--batch-records", type=int, default=50, help="records per message in the batched phase")
    parser.add_argument(
        "--batched-messages", type=int, default=None, help="messages in the batched phase (default messages / 10)"
    )
    parser.add_argument(
        "--latency-rate",
        type=float,
        default=10_000.0,
        help="the maximum rate latency paces at half of, when no collector drain ran before it (default 10000)",
    )
    parser.add_argument("--latency-duration", type=float, default=30.0, help="seconds of paced publishing")
    parser.add_argument("--latency-poll", type=float, default=0.05, help="seconds between InfluxDB polls")
    parser.add_argument("--repeat", type=int, default=1, help="rounds of every phase; ratios use the median round")
    parser.add_argument("--quick", action="store_true", help="smoke run: 5000 messages, 1000 for naive, one round")
    parser.add_argument("--out", type=Path, default=None, help="write the results as JSON here")
    parser.add_argument("--node-red-dir", default=None, help="npm prefix holding node-red (installed if missing)")
    parser.add_argument("--node-red-peer", default=str(DEFAULT_NODE_RED_PEER), help="folder with the peer flows")
    parser.add_argument("--profile", action="store_true", help="one extra collector drain under py-spy")
    parser.add_argument("--profile-gil", action="store_true", help="py-spy --gil: only sample the GIL holder")
    parser.add_argument("--py-spy", default=None, help="path to py-spy (default: PATH, then .pilot/bench/tools)")
    parser.add_argument("--timeout", type=float, default=300.0, help="seconds a drain may take before failing")
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--work-dir", type=Path, default=REPO / ".pilot" / "bench", help="scratch folder")
    parser.add_argument("--keep", action="store_true", help="keep each phase's broker and database folders")
    args = parser.parse_args(argv)
    if args.quick:
        args.messages = min(args.messages, 5000)
        args.naive_messages = min(args.naive_messages, 1000)
        args.latency_duration = min(args.latency_duration, 10.0)
        args.repeat = 1
    if args.phases is None:
        chosen = list(DEFAULT_PHASES) + (["node-red"] if args.node_red_dir else [])
    else:
        chosen = [p.strip() for p in args.phases.split(",") if p.strip()]
        if "all" in chosen:
            chosen = [p for p in chosen if p != "all"] + list(PHASES)
    unknown = [p for p in chosen if p not in PHASES]
    if unknown:
        parser.error(f"unknown phase(s) {', '.join(unknown)}; choose from {', '.join(PHASES)}, or all")
    args.phases = [p for p in PHASES if p in chosen]
    if args.messages < 1 or args.repeat < 1 or args.naive_messages < 1:
        parser.error("--messages, --naive-messages and --repeat must be at least 1")
    if args.publishers < 1 or args.batch_records < 1:
        parser.error("--publishers and --batch-records must be at least 1")
    if args.batch_records > MAX_BATCH_RECORDS:
        parser.error(f"--batch-records: the contract allows at most {MAX_BATCH_RECORDS} records per message")
    if args.batched_messages is None:
        args.batched_messages = max(1, args.messages // 10)
    if args.batched_messages < 1 or args.latency_rate <= 0 or args.latency_duration <= 0 or args.latency_poll <= 0:
        parser.error("--batched-messages, --latency-rate, --latency-duration and --latency-poll must be positive")
    return args


# name → (numerator, denominator, target). "best-collector" is the faster of collector and collector-2 in
# that round; "batched-points" is the batched phase's points/s.
RATIOS: dict[str, tuple[str, str, float | None]] = {
    "collector/bare": ("collector", "bare", TARGET_COLLECTOR_VS_BARE),
    "collector/naive": ("collector", "naive", TARGET_COLLECTOR_VS_NAIVE),
    "collector/node-red": ("collector", "node-red", None),
    "collector-2/node-red": ("collector-2", "node-red", None),
    "best-collector/node-red": ("best-collector", "node-red", None),
    "collector/node-red-per-message": ("collector", "node-red-per-message", None),
    "collector-2/collector": ("collector-2", "collector", None),
    "node-red/bare": ("node-red", "bare", None),
    "naive/bare": ("naive", "bare", None),
    "batched-points/collector": ("batched-points", "collector", None),
    "collector-live/bare-live": ("collector-live", "bare-live", None),
    "collector-live/naive-live": ("collector-live", "naive-live", None),
    "collector-live/node-red-live": ("collector-live", "node-red-live", None),
    "collector-2-live/node-red-live": ("collector-2-live", "node-red-live", None),
    "best-collector-live/node-red-live": ("best-collector-live", "node-red-live", None),
    "collector-live/node-red-per-message-live": ("collector-live", "node-red-per-message-live", None),
    "collector-2-live/collector-live": ("collector-2-live", "collector-live", None),
    "node-red-live/bare-live": ("node-red-live", "bare-live", None),
}


def round_rate(current: dict[str, dict[str, Any]], name: str) -> float | None:
    """A phase's rate in one round, or a derived one (best-collector…, batched-points); None if it did not run."""
    if name.startswith("best-collector"):
        suffix = name.removeprefix("best-collector")
        rates = [round_rate(current, f"collector{suffix}"), round_rate(current, f"collector-2{suffix}")]
        return max(r for r in rates if r is not None) if None not in rates else None
    if name == "batched-points":
        value = current.get("batched", {}).get("points_rate")
        return float(value) if value else None
    value = current.get(name, {}).get("rate")
    return float(value) if value else None


def compute_ratios(rounds: list[dict[str, dict[str, Any]]]) -> dict[str, Any]:
    """Per-round ratios (phases of one round ran minutes apart), summarised by their median."""
    ratios: dict[str, Any] = {}
    for name, (top, bottom, target) in RATIOS.items():
        values = []
        for current in rounds:
            numerator, denominator = round_rate(current, top), round_rate(current, bottom)
            if numerator is not None and denominator:
                values.append(numerator / denominator)
        if not values:
            continue
        median = statistics.median(values)
        entry: dict[str, Any] = {"median": round(median, 3), "rounds": [round(v, 3) for v in values]}
        if target is not None:
            entry["target"] = target
            entry["met"] = median >= target
        ratios[name] = entry
    return ratios


def _median(values: list[float], digits: int = 1) -> float | None:
    return round(statistics.median(values), digits) if values else None


def summarize_phase(name: str, per_round: list[dict[str, Any]]) -> dict[str, Any]:
    """Median and spread over the rounds that ran, the worst loss and memory, and every round as it was."""
    done = [p for p in per_round if "rate" in p]
    rates = [p["rate"] for p in done]
    summary: dict[str, Any] = {
        "rate_median": _median(rates),
        "rates": [round(r, 1) for r in rates],
        "rate_min": round(min(rates), 1) if rates else None,
        "rate_max": round(max(rates), 1) if rates else None,
    }
    points_rates = [p["points_rate"] for p in done if "points_rate" in p]
    if points_rates:
        summary["points_rate_median"] = _median(points_rates)
        summary["points_rates"] = [round(r, 1) for r in points_rates]
    losses = [p["lost"] for p in done if p.get("lost") is not None]
    summary["lost"] = max(losses) if losses else None
    peaks = [p["peak_rss_mb"] for p in done if p.get("peak_rss_mb") is not None]
    summary["peak_rss_mb"] = max(peaks) if peaks else None
    publisher_rates = [p["publisher_rate"] for p in done if p.get("publisher_rate")]
    if publisher_rates:
        summary["publisher_rate_median"] = _median(publisher_rates)
    if name == "latency":
        summary["p50_ms"] = _median([p["p50_ms"] for p in done if "p50_ms" in p])
        summary["p99_ms"] = _median([p["p99_ms"] for p in done if "p99_ms" in p])
        summary["rate"] = _median(rates)
        summary["resolution_ms"] = _median([p["resolution_ms"] for p in done if "resolution_ms" in p])
    summary["rounds"] = per_round
    return summary


def _figure(value: Any, spec: str = ",.0f") -> str:
    return format(value, spec) if isinstance(value, int | float) else "-"


def render_table(results: dict[str, Any]) -> str:
    phases: dict[str, Any] = results["phases"]
    lines = [
        f"{'phase':<26}{'msgs':>9}{'points':>10}{'msg/s median':>14}{'min-max':>17}{'points/s':>10}{'vs bare':>9}"
        f"{'lost':>8}{'peak RSS MB':>13}{'publisher/s':>13}{'CPU s consumer/broker/influx':>31}",
    ]
    for name, summary in phases.items():
        last = summary["rounds"][-1]
        if "error" in last:
            lines.append(f"{name:<26} failed: {last['error']}")
            continue
        rate = summary.get("rate_median")
        baseline = phases.get("bare-live" if name.endswith("-live") else "bare", {}).get("rate_median")
        versus = f"{rate / baseline:.2f}" if rate and baseline and name != "latency" else "-"
        cpu = last.get("cpu_s", {})
        keys = ("consumer", "mosquitto", "influxd")
        cpu_text = "/".join(f"{cpu[k]:.1f}" if isinstance(cpu.get(k), float | int) else "-" for k in keys)
        messages = last.get("processed", last.get("messages"))
        spread = f"{_figure(summary.get('rate_min'))}-{_figure(summary.get('rate_max'))}"
        lines.append(
            f"{name:<26}{_figure(messages):>9}{_figure(last.get('points', messages)):>10}{_figure(rate):>14}"
            f"{spread:>17}{_figure(summary.get('points_rate_median')):>10}{versus:>9}{_figure(summary.get('lost')):>8}"
            f"{_figure(summary.get('peak_rss_mb'), '.1f'):>13}{_figure(summary.get('publisher_rate_median')):>13}"
            f"{cpu_text:>31}"
        )
        if name in {"collector-2", "collector-2-live"}:
            per = ", ".join(f"{p['client_id']} {_figure(p['peak_rss_mb'], '.1f')} MB, received {p['received']:,}"
                            for p in last.get("per_process", []))  # fmt: skip
            lines.append(f"{'':<26}per process: {per}")
        rejected = last.get("rejected_by_reason")
        if rejected:
            lines.append(f"{'':<26}rejected (dead letters) by reason: {rejected}")
    latency = phases.get("latency")
    if latency and latency.get("p50_ms") is not None:
        last = latency["rounds"][-1]
        lines += [
            "",
            f"latency (publish → queryable, collector): p50 {latency['p50_ms']:,.0f} ms,"
            f" p99 {latency['p99_ms']:,.0f} ms"
            f" at {latency['rate']:,.0f} msg/s (half of {last['max_rate']:,.0f}: {last['max_rate_source']});"
            f" poll every {last['poll_interval_s'] * 1000:g} ms, resolution about {last['resolution_ms']:g} ms;"
            f" {last['points_seen']:,} of {last['published']:,} seen",
        ]
    lines.append("")
    for name, ratio in results["ratios"].items():
        target = ratio.get("target")
        verdict = f" (target >= {target:g}: {'met' if ratio['met'] else 'NOT met'})" if target else ""
        lines.append(f"{name:<42}{ratio['median']:>8.3f}{verdict}   rounds: {ratio['rounds']}")
    return "\n".join(lines)


PhaseRunner = Callable[[Context], dict[str, Any]]


def phase_runners(args: argparse.Namespace) -> dict[str, PhaseRunner]:
    n = args.messages
    naive = min(args.naive_messages, n)
    return {
        "bare": lambda ctx: phase_bare(ctx, n),
        "collector": lambda ctx: phase_collector(ctx, n),
        "collector-2": lambda ctx: phase_collector(ctx, n, processes=2),
        "naive": lambda ctx: phase_naive(ctx, naive),
        "node-red": lambda ctx: phase_node_red(ctx, n),
        "node-red-per-message": lambda ctx: phase_node_red(ctx, n, flow_name="node-red-per-message"),
        "batched": lambda ctx: phase_collector(ctx, args.batched_messages, batched=True),
        "bare-live": lambda ctx: phase_bare(ctx, n, live=True),
        "collector-live": lambda ctx: phase_collector(ctx, n, live=True),
        "collector-2-live": lambda ctx: phase_collector(ctx, n, live=True, processes=2),
        "naive-live": lambda ctx: phase_naive(ctx, naive, live=True),
        "node-red-live": lambda ctx: phase_node_red(ctx, n, live=True),
        "node-red-per-message-live": lambda ctx: phase_node_red(ctx, n, flow_name="node-red-per-message", live=True),
        "latency": phase_latency,
    }


def _check_workload(workload: Workload, registry: DeviceRegistry, what: str) -> None:
    invalid = sum(
        1 for t, p in workload.messages if not isinstance(validate_message(t, p, registry, MAX_PAYLOAD_BYTES), Accepted)
    )
    if invalid:
        raise RuntimeError(f"{invalid} generated {what} messages fail validation")


def run(args: argparse.Namespace) -> dict[str, Any]:  # noqa: PLR0915
    args.work_dir.mkdir(parents=True, exist_ok=True)
    run_dir = Path(tempfile.mkdtemp(prefix="ingest-", dir=args.work_dir))
    uses_node_red = any(p.startswith("node-red") for p in args.phases)
    node_red_dir = Path(args.node_red_dir or DEFAULT_NODE_RED_DIR) if uses_node_red else None
    log(f"ingest benchmark: {args.messages:,} messages over {args.devices} devices, phases {args.phases}, "
        f"{args.repeat} round(s); scratch in {run_dir}")  # fmt: skip
    catalog = load_profiles()
    workload = build_workload(args.messages, args.devices, args.seed, catalog)
    registry = workload.registry(catalog)
    _check_workload(workload, registry, "telemetry")
    workload_path = run_dir / "workload.pickle"
    workload_path.write_bytes(pickle.dumps(workload.messages))
    devices_file = run_dir / "devices.yaml"
    devices_file.write_text(workload.devices_yaml(), encoding="utf-8")
    payload_sizes = [len(p) for _, p in workload.messages]
    ctx = Context(args, run_dir, workload_path, devices_file, Cleanup(), mp.get_context("spawn"))
    workload_facts: dict[str, Any] = {
        "messages": args.messages,
        "devices": args.devices,
        "profiles": sorted({d.profile for d in workload.devices}),
        "points_per_message": 1,
        "payload_bytes_mean": round(statistics.fmean(payload_sizes), 1) if payload_sizes else 0,
        "naive_messages": min(args.naive_messages, args.messages),
        "naive_time_cap_s": args.naive_time_cap,
        "seed": args.seed,
    }
    if "batched" in args.phases:
        batched = build_workload(args.batched_messages, args.devices, args.seed, catalog, args.batch_records)
        _check_workload(batched, registry, "batched")
        ctx.batched_path = run_dir / "batched.pickle"
        ctx.batched_path.write_bytes(pickle.dumps(batched.messages))
        ctx.batched_points = args.batched_messages * args.batch_records
        workload_facts.update(
            batched_messages=args.batched_messages,
            batched_records_per_message=args.batch_records,
            batched_points=ctx.batched_points,
            batched_payload_bytes_mean=round(statistics.fmean(len(p) for _, p in batched.messages), 1),
        )
    runners = phase_runners(args)
    rounds: list[dict[str, dict[str, Any]]] = []
    results: dict[str, Any] = {
        "benchmark": "ingest",
        "started": datetime.now().astimezone().isoformat(timespec="seconds"),
        "command": " ".join(["python -m bench.ingest", *sys.argv[1:]]),
        "machine": machine_facts(node_red_dir),
        "workload": workload_facts,
        "config": {
            "collector": {**COLLECTOR_CONFIG, "receive_maximum": 65535},
            "collector-2": {
                "processes": 2,
                "share_group": SHARE_GROUP,
                "subscription": CollectorSettings.model_construct(share_group=SHARE_GROUP).subscription,
                "set_by": "PILOT_SHARE_GROUP; each process its own PILOT_CLIENT_ID, PILOT_METRICS_PORT and spool",
            },
            "publisher": {
                "kind": "bench.publisher: pre-encoded MQTT 5 QoS 1 PUBLISH packets over a raw socket",
                "window": DEFAULT_WINDOW,
                "processes": args.publishers,
            },
            "latency": {
                "duration_s": args.latency_duration,
                "poll_interval_s": args.latency_poll,
                "paced_at": "half the collector drain rate measured earlier in the run, else --latency-rate",
                "latency_rate_option": args.latency_rate,
            },
            "node_red": {
                "flows": NODE_RED_FLOWS,
                "rewritten": "broker host/port and cleansession false (a persistent session, for the drain), "
                "InfluxDB host/port/database, the mqtt in topic, and the function (the collector's points)",
                "stall_s": STALL_S,
            },
        },
    }
    try:
        for number in range(1, args.repeat + 1):
            current: dict[str, dict[str, Any]] = {}
            for phase in args.phases:
                log(f"round {number}/{args.repeat}: {phase}")
                try:
                    outcome = runners[phase](ctx)
                except (RuntimeError, OSError, local_services.ServiceError, subprocess.SubprocessError) as exc:
                    log(f"  {phase} FAILED: {exc}")
                    outcome = {"error": str(exc)}
                current[phase] = outcome
                if "rate" in outcome:
                    ctx.drain_rates.setdefault(phase, []).append(outcome["rate"])
                    points = f", {outcome['points_rate']:,.0f} points/s" if "points_rate" in outcome else ""
                    latency = f", p50 {outcome['p50_ms']:,.0f} ms, p99 {outcome['p99_ms']:,.0f} ms" \
                        if "p50_ms" in outcome else ""  # fmt: skip
                    publisher = outcome.get("publisher_rate", 0)
                    log(f"  {phase}: {outcome['rate']:,.0f} msg/s over {outcome['seconds']:.2f} s{points}{latency}, "
                        f"lost {outcome.get('lost')}, publisher {publisher:,.0f} msg/s")  # fmt: skip
            rounds.append(current)
        if args.profile:
            log("profiling: one more collector drain under py-spy (not counted)")
            try:
                profiled = phase_collector(ctx, args.messages, profile=True)
                profiled["hotspots"] = summarize_py_spy(Path(profiled["profile"]))
                results["profile"] = profiled
            except (RuntimeError, OSError) as exc:
                results["profile"] = {"error": str(exc)}
    finally:
        ctx.cleanup.stop_all()
    results["phases"] = {
        phase: summarize_phase(phase, [r[phase] for r in rounds if phase in r]) for phase in args.phases
    }
    results["ratios"] = compute_ratios(rounds)
    results["finished"] = datetime.now().astimezone().isoformat(timespec="seconds")
    results["run_dir"] = str(run_dir)
    return results


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)

    def interrupted(signum: int, frame: object) -> None:
        raise KeyboardInterrupt

    signal.signal(signal.SIGTERM, interrupted)
    # Even when started in the background with SIGINT ignored, Ctrl-C/SIGINT must clean up.
    signal.signal(signal.SIGINT, signal.default_int_handler)
    try:
        results = run(args)
    except KeyboardInterrupt:
        log("interrupted: every broker, database and consumer started by this run has been stopped")
        return 130
    table = render_table(results)
    print(table)
    if args.out:
        write_result(args.out, results)
        log(f"wrote {args.out}")
    return 0 if all("error" not in r for p in results["phases"].values() for r in p["rounds"]) else 1


if __name__ == "__main__":
    sys.exit(main())
