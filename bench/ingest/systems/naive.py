"""``naive``: the tutorial collector: validate, one synchronous HTTP POST /write per message, then ack."""

from __future__ import annotations

import os
import resource
import threading
import time
from pathlib import Path
from typing import Any

import httpx
import paho.mqtt.client as paho

from adapters.catalog import load_profiles, load_registry
from adapters.influxdb import InfluxClient, InfluxSettings
from adapters.mqtt import MqttSettings, connect_and_wait, new_client
from bench.ingest.choreography import Context, consume, cpu_delta, cpu_snapshot, phase_services, prime_session
from bench.ingest.measure import influx_point_count, proc_status_kb
from bench.ingest.settings import DATABASE, MAX_PAYLOAD_BYTES, SESSION_EXPIRY_S
from pilot_core.contract import SUBSCRIPTION
from pilot_core.validation import Accepted, validate_message


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
        cpu_after = cpu_snapshot(env)
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
            "cpu_s": {"consumer": round(result["cpu_s"], 2), **cpu_delta(cpu_before, cpu_after)},
            "publisher_rate": round(publish["rate"], 1),
            "publish": publish,
        }
