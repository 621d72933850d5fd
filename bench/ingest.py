"""Ingest benchmark: how fast a queued QoS 1 backlog drains into InfluxDB.

One run measures, on the same machine and with a fresh broker and a fresh
database per phase, the same pre-generated workload (N valid telemetry
messages, one point each, spread over devices of the bundled profiles):

* ``bare``: a paho-mqtt 2 subscriber that only counts (the receive ceiling);
* ``collector``: ``python -m pilot collect`` end to end, until InfluxDB holds N points;
* ``naive``: validate each message, one HTTP POST /write per message (on a slice);
* ``node-red``: the batched Node-RED flow from ``shared/peers/node-red`` (optional);
* ``bare-live`` / ``collector-live``: consumer and publisher run at the same time.

Drain methodology (as in the Node-RED peer's README): the consumer's
persistent session is created first and disconnected, a separate publisher
process publishes the whole backlog with QoS 1 at full speed, then the
consumer connects and the drain is timed from its CONNACK to the last message
(bare) or to the last point being written (collector, naive, node-red).

    python -m bench.ingest --quick
    python -m bench.ingest --messages 100000 --repeat 3 --out .pilot/bench/ingest.json
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
from bench.results import write_result
from pilot_core.contract import SUBSCRIPTION, Channel, topic_for
from pilot_core.profiles import ProfileCatalog
from pilot_core.registry import DeviceEntry, DeviceRegistry
from pilot_core.validation import Accepted, validate_message
from simulators.values import random_metrics

REPO = Path(__file__).resolve().parent.parent
DEFAULT_NODE_RED_PEER = REPO.parent / "shared" / "peers" / "node-red"
DEFAULT_NODE_RED_DIR = REPO / ".pilot" / "bench" / "node-red"
PHASES = ("bare", "collector", "naive", "node-red", "bare-live", "collector-live")
DEFAULT_PHASES = ("bare", "collector", "naive")
TARGET_COLLECTOR_VS_BARE = 0.90
TARGET_COLLECTOR_VS_NAIVE = 20.0
BASE_TS_MS = 1_767_225_600_000  # 2026-01-01T00:00:00Z: every device's seq n is at BASE + n s
SESSION_EXPIRY_S = 7 * 24 * 3600  # what the collector asks for
MAX_PAYLOAD_BYTES = 256 * 1024
DATABASE = "bench"
SITE = "bench-site"
NODE_RED_CLIENT_ID = "bench-nodered"
NODE_RED_TOPIC = "pilot/v1/+/+/+/telemetry"
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


def build_workload(messages: int, devices: int = 50, seed: int = 1, catalog: ProfileCatalog | None = None) -> Workload:
    """``messages`` valid telemetry messages, one record (one point) each, round-robin over ``devices``.

    Devices are spread over every bundled profile; each message carries every
    metric of its profile with a value in range, its device's next seq and a
    timestamp one second after the previous one, so no two points collide.
    """
    if messages < 0 or devices < 1:
        raise ValueError("messages must be >= 0 and devices >= 1")
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
        body = {"seq": seq, "ts": BASE_TS_MS + seq * 1000, "metrics": random_metrics(device_profiles[device], rng)}
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


def publish_worker(port: int, workload_path: str, count: int, client_id: str, out: Any) -> None:
    """Publish the first ``count`` messages of the workload with QoS 1 as fast as the broker acknowledges.

    A window of unacknowledged messages (as simulators.publish keeps) bounds
    paho's queue: without it paho refuses publishes with ERR_QUEUE_SIZE.
    """
    with open(workload_path, "rb") as fh:
        messages: list[tuple[str, bytes]] = pickle.load(fh)[:count]
    window = 1000
    settings = MqttSettings(port=port)
    client = new_client(settings, client_id)
    client.max_inflight_messages_set(window)
    client.max_queued_messages_set(0)
    slots = threading.Semaphore(window)
    acked = [0]

    def on_publish(*_: object) -> None:
        acked[0] += 1
        slots.release()

    client.on_publish = on_publish
    connect_and_wait(client, settings)
    started = time.time()
    for topic, payload in messages:
        if not slots.acquire(timeout=60):
            break
        info = client.publish(topic, payload, qos=1)
        if info.rc != paho.MQTT_ERR_SUCCESS:
            break
    for _ in range(window):
        if not slots.acquire(timeout=60):
            break
    finished = time.time()
    client.disconnect()
    client.loop_stop()
    out.put({"published": acked[0], "started": started, "finished": finished})


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


def publish_backlog(ctx: Context, port: int, count: int) -> dict[str, Any]:
    log(f"  publishing {count:,} QoS 1 messages from a separate process")
    child, queue = start_child(ctx, publish_worker, port, str(ctx.workload_path), count, "bench-publisher")
    result = wait_child(ctx, child, queue, max(120.0, count / 500), "publisher")
    finish_child(ctx, child)
    seconds = result["finished"] - result["started"]
    result["seconds"] = seconds
    result["rate"] = result["published"] / seconds if seconds > 0 else 0.0
    if result["published"] != count:
        raise RuntimeError(f"publisher: only {result['published']} of {count} acknowledged by the broker")
    log(f"  published {count:,} in {seconds:.2f} s ({result['rate']:,.0f} msg/s)")
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


# --- phases -----------------------------------------------------------------------


def phase_bare(ctx: Context, count: int, *, live: bool = False) -> dict[str, Any]:
    with phase_services(ctx, "bare", influx=False) as env:
        client_id = "bench-bare"
        prime_session(env.broker.port, client_id, SUBSCRIPTION)
        publish: dict[str, Any] | None = None
        if not live:
            publish = publish_backlog(ctx, env.broker.port, count)
        cpu_before = _cpu_snapshot(env)
        child, queue = start_child(ctx, bare_worker, env.broker.port, client_id, count, ctx.args.timeout)
        wait_child(ctx, child, queue, 60, "bare subscriber")
        publisher: tuple[BaseProcess, Any] | None = None
        if live:
            publisher = start_child(ctx, publish_worker, env.broker.port, str(ctx.workload_path), count, "bench-pub")
        result = wait_child(ctx, child, queue, ctx.args.timeout + 30, "bare subscriber")
        finish_child(ctx, child)
        if publisher is not None:
            publish = wait_child(ctx, *publisher, 120, "publisher")
            finish_child(ctx, publisher[0])
        start = publish["started"] if live and publish else result["connack"]
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
            "publish": publish,
        }


_LOG_TIME = re.compile(r"^(\d{4}-\d\d-\d\d \d\d:\d\d:\d\d,\d{3}) ")


def _log_time(line: str) -> float | None:
    match = _LOG_TIME.match(line)
    if not match:
        return None
    return datetime.strptime(match.group(1), "%Y-%m-%d %H:%M:%S,%f").timestamp()


def _scrape(metrics_url: str) -> dict[str, float]:
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
    return values


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


def phase_collector(  # noqa: PLR0915
    ctx: Context, count: int, *, live: bool = False, profile: bool = False
) -> dict[str, Any]:
    with phase_services(ctx, "collector", influx=True) as env:
        assert env.influx is not None
        client_id = "bench-collector"
        prime_session(env.broker.port, client_id, SUBSCRIPTION)
        publish: dict[str, Any] | None = None
        if not live:
            publish = publish_backlog(ctx, env.broker.port, count)
        dead_letters = DeadLetterCounter(env.broker.port)
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
            **{f"PILOT_{key.upper()}": str(value) for key, value in COLLECTOR_CONFIG.items()},
        }
        command = [sys.executable, "-m", "pilot", "collect", "--log-level", "info"]
        profile_path: Path | None = None
        if profile:
            py_spy = find_py_spy(ctx.args.py_spy)
            if py_spy is None:
                raise RuntimeError("py-spy not found; pass --py-spy PATH")
            profile_path = ctx.run_dir / "collector-py-spy.txt"
            gil = ["--gil"] if ctx.args.profile_gil else []
            command = [py_spy, "record", "--threads", *gil, "--rate", "200", "--format", "raw", "-o", str(profile_path),
                       "--", *command]  # fmt: skip
        log_path = env.folder / "collector.log"
        cpu_before = _cpu_snapshot(env)
        with log_path.open("ab") as log_file:
            process = subprocess.Popen(
                command, cwd=env.folder, env=environment, stdout=log_file, stderr=subprocess.STDOUT,
                start_new_session=True,
            )  # fmt: skip
        ctx.cleanup.popens.append(process)
        metrics_url = f"http://127.0.0.1:{metrics_port}/metrics"
        try:
            line, seen = _wait_for_line(log_path, "connected to MQTT broker", process, 60)
            connack = _log_time(line) or seen
            publisher: tuple[BaseProcess, Any] | None = None
            if live:
                publisher = start_child(
                    ctx, publish_worker, env.broker.port, str(ctx.workload_path), count, "bench-pub"
                )
            collector_pid = _python_pid(process)
            end = _wait_for_points(metrics_url, count, ctx.args.timeout, process)
            if publisher is not None:
                publish = wait_child(ctx, *publisher, 120, "publisher")
                finish_child(ctx, publisher[0])
            with InfluxClient(InfluxSettings(url=env.influx.url, database=DATABASE)) as influx:
                stored = influx_point_count(influx)
                if end is not None and stored < count:  # written means stored: should never wait here
                    stop_at = time.monotonic() + 30
                    while stored < count and time.monotonic() < stop_at:
                        time.sleep(0.05)
                        stored = influx_point_count(influx)
                    end = time.time()
            metrics = _scrape(metrics_url)
            peak_rss_kb = tree_rss_kb(collector_pid) if collector_pid else None
            consumer_cpu = tree_cpu_s(collector_pid) if collector_pid else None
            cpu_after = _cpu_snapshot(env)
        finally:
            if process.poll() is None:
                os.killpg(process.pid, signal.SIGINT if profile else signal.SIGTERM)
                try:
                    process.wait(60 if profile else 30)
                except subprocess.TimeoutExpired:
                    os.killpg(process.pid, signal.SIGKILL)
                    process.wait(5)
            with contextlib.suppress(ValueError):
                ctx.cleanup.popens.remove(process)
        dead = dead_letters.close()
        leftovers = count_redelivered(env.broker.port, client_id)
        if end is None:
            raise RuntimeError(f"collector did not write {count} points within {ctx.args.timeout:g} s; see {log_path}")
        start = publish["started"] if live and publish else connack
        seconds = end - start
        rejected = int(metrics.get("pilot_collector_messages_rejected_total", 0))
        result: dict[str, Any] = {
            "mode": "live" if live else "drain",
            "messages": count,
            "stored_points": stored,
            "seconds": round(seconds, 3),
            "rate": stored / seconds if seconds > 0 else 0.0,
            "lost": count - stored,
            "received": int(metrics.get("pilot_collector_messages_received_total", 0)),
            "rejected_metric": rejected,
            "dead_letters_seen": dead,
            "duplicates": int(metrics.get("pilot_collector_messages_duplicate_total", 0)),
            "write_retries": int(metrics.get("pilot_collector_write_retries_total", 0)),
            "batches_written": int(metrics.get("pilot_collector_batches_total", 0)),
            "unacked_left_in_session": leftovers,
            "peak_rss_mb": round(peak_rss_kb / 1024, 1) if peak_rss_kb else None,
            "cpu_s": {
                "consumer": round(consumer_cpu, 2) if consumer_cpu is not None else None,
                **_cpu_delta(cpu_before, cpu_after),
            },
            "publish": publish,
        }
        if profile_path is not None:
            result["profile"] = str(profile_path)
        return result


def _wait_for_points(metrics_url: str, count: int, timeout_s: float, process: subprocess.Popen[bytes]) -> float | None:
    """When the collector's points_written counter reaches ``count``.

    Scraping /metrics costs the collector CPU (py-spy showed 3% at 20 scrapes/s),
    so it is scraped twice a second while more than two batches remain and
    every 50 ms near the end.
    """
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        written = _scrape(metrics_url).get("pilot_collector_points_written_total", 0)
        if written >= count:
            return time.time()
        if process.poll() is not None:
            raise RuntimeError(f"{process.args!r} exited early with {process.returncode}")
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


def phase_naive(ctx: Context, count: int) -> dict[str, Any]:
    with phase_services(ctx, "naive", influx=True) as env:
        assert env.influx is not None
        client_id = "bench-naive"
        prime_session(env.broker.port, client_id, SUBSCRIPTION)
        publish = publish_backlog(ctx, env.broker.port, count)
        cpu_before = _cpu_snapshot(env)
        child, queue = start_child(
            ctx, naive_worker, env.broker.port, client_id, env.influx.url, str(ctx.devices_file), count,
            ctx.args.naive_time_cap,
        )  # fmt: skip
        wait_child(ctx, child, queue, 60, "naive collector")
        result = wait_child(ctx, child, queue, ctx.args.naive_time_cap + 90, "naive collector")
        finish_child(ctx, child)
        cpu_after = _cpu_snapshot(env)
        with InfluxClient(InfluxSettings(url=env.influx.url, database=DATABASE)) as influx:
            stored = influx_point_count(influx)
        seconds = result["end"] - result["connack"]
        return {
            "mode": "drain",
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


NODE_RED_FUNCTION = """const p = msg.topic.split('/');
const d = msg.payload;
const fields = Object.assign({}, d.metrics, {seq: d.seq});
msg.payload = {measurement: MEASUREMENTS[p[4]], fields: fields,
               tags: {site: p[2], line: p[3], device: p[4]}, timestamp: d.ts};
return msg;"""


def node_red_flow(
    peer_flow: list[dict[str, Any]], broker_port: int, influx_port: int, measurements: dict[str, str]
) -> list[dict[str, Any]]:
    """The peer's batched flow, pointed at this phase's broker, database and the v1 topics.

    The shipped flow subscribes to ``pilot/+/+/+/telemetry`` (which no v1 topic
    matches) and maps fields temp/current/speed/vibration that no bundled
    profile has; the function is rewritten to write the same points as the
    collector (measurement per profile, site/line/device tags, every metric and seq).
    """
    flow = json.loads(json.dumps(peer_flow))
    for node in flow:
        kind = node.get("type")
        if kind == "mqtt-broker":
            node["broker"], node["port"] = "127.0.0.1", str(broker_port)
        elif kind == "influxdb":
            node["hostname"], node["port"], node["database"] = "127.0.0.1", str(influx_port), DATABASE
        elif kind == "mqtt in":
            node["topic"] = NODE_RED_TOPIC
        elif kind == "function":
            node["func"] = f"const MEASUREMENTS = {json.dumps(measurements)};\n{NODE_RED_FUNCTION}"
    return flow


def phase_node_red(ctx: Context, count: int) -> dict[str, Any]:  # noqa: PLR0915
    peer = Path(ctx.args.node_red_peer)
    node_red = ensure_node_red(Path(ctx.args.node_red_dir or DEFAULT_NODE_RED_DIR).resolve())
    catalog = load_profiles()
    measurements = {d.device: catalog[d.profile].measurement for d in _load_devices(ctx.devices_file)}
    with phase_services(ctx, "node-red", influx=True) as env:
        assert env.influx is not None
        with InfluxClient(InfluxSettings(url=env.influx.url, database=DATABASE)) as influx:
            influx.ensure_database()
        flow_in = json.loads((peer / "flow-batched-qos1-persistent.json").read_text())
        broker_node = next(n for n in flow_in if n.get("type") == "mqtt-broker")
        client_id = broker_node.get("clientid") or NODE_RED_CLIENT_ID
        flow = node_red_flow(flow_in, env.broker.port, env.influx.port, measurements)
        user_dir = env.folder / "node-red-data"
        user_dir.mkdir()
        flow_path = user_dir / "flow.json"
        flow_path.write_text(json.dumps(flow, indent=1))
        settings = (peer / "settings.js").read_text()
        settings = re.sub(r"uiPort:\s*\d+", f"uiPort: {local_services.free_port()}", settings)
        (user_dir / "settings.js").write_text(settings)
        prime_session(env.broker.port, client_id, NODE_RED_TOPIC, mqtt5=broker_node.get("protocolVersion") == "5")
        publish = publish_backlog(ctx, env.broker.port, count)
        log_path = env.folder / "node-red.log"
        cpu_before = _cpu_snapshot(env)
        with log_path.open("ab") as log_file:
            process = subprocess.Popen(
                [str(node_red), "--userDir", str(user_dir), "--settings", str(user_dir / "settings.js"),
                 str(flow_path)],
                cwd=env.folder, stdout=log_file, stderr=subprocess.STDOUT, start_new_session=True,
            )  # fmt: skip
        ctx.cleanup.popens.append(process)
        try:
            _, connack = _wait_for_line(log_path, "Connected to broker", process, 120)
            influx = InfluxClient(InfluxSettings(url=env.influx.url, database=DATABASE))
            progress = {"stored": 0.0, "changed": time.monotonic(), "changed_wall": time.time()}

            def landed() -> bool:
                stored = influx_point_count(influx)
                if stored != progress["stored"]:
                    progress.update(stored=stored, changed=time.monotonic(), changed_wall=time.time())
                # Stalled for 10 s short of N: Node-RED lost messages; stop waiting.
                return stored >= count or time.monotonic() - progress["changed"] > 10

            end = _poll_until(landed, ctx.args.timeout, process, interval_s=0.1)
            stored = influx_point_count(influx)
            if stored < count and end is not None:
                end = progress["changed_wall"]  # when the last point landed
            influx.close()
            peak_rss_kb = proc_status_kb(process.pid)
            consumer_cpu = proc_cpu_s(process.pid)
            cpu_after = _cpu_snapshot(env)
        finally:
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
        seconds = end - connack
        return {
            "mode": "drain",
            "messages": count,
            "stored_points": stored,
            "lost": count - stored,
            "seconds": round(seconds, 3),
            "rate": stored / seconds if seconds > 0 else 0.0,
            "end_detected_by": "InfluxDB count polled every 0.1 s",
            "peak_rss_mb": round(peak_rss_kb / 1024, 1) if peak_rss_kb else None,
            "cpu_s": {
                "consumer": round(consumer_cpu, 2) if consumer_cpu is not None else None,
                **_cpu_delta(cpu_before, cpu_after),
            },
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
        description="Drain a queued QoS 1 backlog into InfluxDB: bare subscriber, collector, naive, Node-RED.",
    )
    parser.add_argument("--messages", type=int, default=100_000, help="messages in the workload (default 100000)")
    parser.add_argument("--devices", type=int, default=50, help="devices the messages are spread over (default 50)")
    parser.add_argument(
        "--phases",
        default=None,
        help=f"comma-separated, from {', '.join(PHASES)} (default {','.join(DEFAULT_PHASES)}, "
        "plus node-red when --node-red-dir is given)",
    )
    parser.add_argument("--naive-messages", type=int, default=5000, help="slice the naive collector drains")
    parser.add_argument("--naive-time-cap", type=float, default=60.0, help="seconds the naive phase may run")
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
        args.repeat = 1
    if args.phases is None:
        chosen = list(DEFAULT_PHASES) + (["node-red"] if args.node_red_dir else [])
    else:
        chosen = [p.strip() for p in args.phases.split(",") if p.strip()]
    unknown = [p for p in chosen if p not in PHASES]
    if unknown:
        parser.error(f"unknown phase(s) {', '.join(unknown)}; choose from {', '.join(PHASES)}")
    args.phases = chosen
    if args.messages < 1 or args.repeat < 1 or args.naive_messages < 1:
        parser.error("--messages, --naive-messages and --repeat must be at least 1")
    return args


def compute_ratios(rounds: list[dict[str, dict[str, Any]]]) -> dict[str, Any]:
    """Per-round ratios (phases of one round ran minutes apart), summarised by their median."""
    pairs = {
        "collector/bare": ("collector", "bare", TARGET_COLLECTOR_VS_BARE),
        "collector/naive": ("collector", "naive", TARGET_COLLECTOR_VS_NAIVE),
        "collector/node-red": ("collector", "node-red", None),
        "node-red/bare": ("node-red", "bare", None),
        "naive/bare": ("naive", "bare", None),
        "collector-live/bare-live": ("collector-live", "bare-live", None),
    }
    ratios: dict[str, Any] = {}
    for name, (top, bottom, target) in pairs.items():
        values = [
            r[top]["rate"] / r[bottom]["rate"]
            for r in rounds
            if top in r and bottom in r and "rate" in r[top] and r[bottom].get("rate")
        ]
        if not values:
            continue
        median = statistics.median(values)
        entry: dict[str, Any] = {"median": round(median, 3), "rounds": [round(v, 3) for v in values]}
        if target is not None:
            entry["target"] = target
            entry["met"] = median >= target
        ratios[name] = entry
    return ratios


def render_table(results: dict[str, Any]) -> str:
    phases: dict[str, Any] = results["phases"]
    bare = phases.get("bare", {}).get("rate_median")
    lines = [
        f"{'phase':<16}{'msgs':>9}{'msgs/s (median)':>17}{'vs bare':>9}{'lost':>6}{'peak RSS MB':>13}"
        f"{'CPU s consumer/broker/influx':>31}",
    ]
    for name, summary in phases.items():
        last = summary["rounds"][-1]
        if "error" in last:
            lines.append(f"{name:<16} failed: {last['error']}")
            continue
        rate = summary.get("rate_median") or 0.0
        versus = f"{rate / bare:.2f}" if bare else "-"
        cpu = last.get("cpu_s", {})
        keys = ("consumer", "mosquitto", "influxd")
        cpu_text = "/".join(f"{cpu[k]:.1f}" if isinstance(cpu.get(k), float | int) else "-" for k in keys)
        messages = last.get("processed", last.get("messages"))
        lines.append(
            f"{name:<16}{messages:>9,}{rate:>17,.0f}{versus:>9}{last.get('lost', 0):>6}"
            f"{last.get('peak_rss_mb') or '-':>13}{cpu_text:>31}"
        )
    lines.append("")
    for name, ratio in results["ratios"].items():
        target = ratio.get("target")
        verdict = f" (target >= {target:g}: {'met' if ratio['met'] else 'NOT met'})" if target else ""
        lines.append(f"{name:<26}{ratio['median']:>8.3f}{verdict}   rounds: {ratio['rounds']}")
    return "\n".join(lines)


PhaseRunner = Callable[[Context], dict[str, Any]]


def phase_runners(args: argparse.Namespace) -> dict[str, PhaseRunner]:
    n = args.messages
    return {
        "bare": lambda ctx: phase_bare(ctx, n),
        "collector": lambda ctx: phase_collector(ctx, n),
        "naive": lambda ctx: phase_naive(ctx, min(args.naive_messages, n)),
        "node-red": lambda ctx: phase_node_red(ctx, n),
        "bare-live": lambda ctx: phase_bare(ctx, n, live=True),
        "collector-live": lambda ctx: phase_collector(ctx, n, live=True),
    }


def run(args: argparse.Namespace) -> dict[str, Any]:
    args.work_dir.mkdir(parents=True, exist_ok=True)
    run_dir = Path(tempfile.mkdtemp(prefix="ingest-", dir=args.work_dir))
    node_red_dir = Path(args.node_red_dir or DEFAULT_NODE_RED_DIR) if "node-red" in args.phases else None
    log(f"ingest benchmark: {args.messages:,} messages over {args.devices} devices, phases {args.phases}, "
        f"{args.repeat} round(s); scratch in {run_dir}")  # fmt: skip
    catalog = load_profiles()
    workload = build_workload(args.messages, args.devices, args.seed, catalog)
    registry = workload.registry(catalog)
    invalid = sum(
        1 for t, p in workload.messages if not isinstance(validate_message(t, p, registry, MAX_PAYLOAD_BYTES), Accepted)
    )
    if invalid:
        raise RuntimeError(f"{invalid} generated messages fail validation")
    workload_path = run_dir / "workload.pickle"
    workload_path.write_bytes(pickle.dumps(workload.messages))
    devices_file = run_dir / "devices.yaml"
    devices_file.write_text(workload.devices_yaml(), encoding="utf-8")
    payload_sizes = [len(p) for _, p in workload.messages]
    ctx = Context(args, run_dir, workload_path, devices_file, Cleanup(), mp.get_context("spawn"))
    runners = phase_runners(args)
    rounds: list[dict[str, dict[str, Any]]] = []
    results: dict[str, Any] = {
        "benchmark": "ingest",
        "started": datetime.now().astimezone().isoformat(timespec="seconds"),
        "command": " ".join(["python -m bench.ingest", *sys.argv[1:]]),
        "machine": machine_facts(node_red_dir),
        "workload": {
            "messages": args.messages,
            "devices": args.devices,
            "profiles": sorted({d.profile for d in workload.devices}),
            "points_per_message": 1,
            "payload_bytes_mean": round(statistics.fmean(payload_sizes), 1) if payload_sizes else 0,
            "naive_messages": min(args.naive_messages, args.messages),
            "naive_time_cap_s": args.naive_time_cap,
            "seed": args.seed,
        },
        "config": {"collector": {**COLLECTOR_CONFIG, "receive_maximum": 65535}},
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
                    log(f"  {phase}: {outcome['rate']:,.0f} msg/s over {outcome['seconds']:.2f} s, "
                        f"lost {outcome.get('lost')}")  # fmt: skip
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
    phases: dict[str, Any] = {}
    for phase in args.phases:
        per_round = [r[phase] for r in rounds if phase in r]
        rates = [p["rate"] for p in per_round if "rate" in p]
        phases[phase] = {
            "rate_median": round(statistics.median(rates), 1) if rates else None,
            "rates": [round(r, 1) for r in rates],
            "rounds": per_round,
        }
    results["phases"] = phases
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
