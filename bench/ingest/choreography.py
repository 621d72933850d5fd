"""The shared choreography of a phase: fresh services, the consumer's primed session, the publisher
processes (backlog or live), child processes, and cleanup of everything started."""

from __future__ import annotations

import argparse
import contextlib
import os
import queue as queue_module
import shutil
import signal
import subprocess
import tempfile
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from multiprocessing.process import BaseProcess
from pathlib import Path
from typing import Any

import paho.mqtt.client as paho
from paho.mqtt.enums import CallbackAPIVersion, MQTTProtocolVersion

from adapters import local_services
from adapters.mqtt import MqttSettings, connect_and_wait, new_client
from bench.ingest.measure import proc_cpu_s
from bench.ingest.settings import SESSION_EXPIRY_S, log
from bench.publisher import publish_worker


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


def cpu_snapshot(env: PhaseEnv) -> dict[str, float | None]:
    snapshot: dict[str, float | None] = {}
    if env.broker.process is not None:
        snapshot["mosquitto"] = proc_cpu_s(env.broker.process.pid)
    if env.influx is not None and env.influx.process is not None:
        snapshot["influxd"] = proc_cpu_s(env.influx.process.pid)
    return snapshot


def cpu_delta(before: dict[str, float | None], after: dict[str, float | None]) -> dict[str, float]:
    return {k: round(v - b, 2) for k, v in after.items() if v is not None and (b := before.get(k)) is not None}


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
        cpu_before = cpu_snapshot(env)
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
