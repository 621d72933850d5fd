"""``bare``: a paho-mqtt 2 subscriber that only counts (the receive ceiling every other system is compared to)."""

from __future__ import annotations

import os
import resource
import threading
import time
from typing import Any

import paho.mqtt.client as paho

from adapters.mqtt import MqttSettings, connect_and_wait, new_client
from bench.ingest.choreography import Context, consume, cpu_delta, cpu_snapshot, phase_services, prime_session
from bench.ingest.measure import proc_status_kb
from bench.ingest.settings import SESSION_EXPIRY_S
from pilot_core.contract import SUBSCRIPTION


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
            "cpu_s": {"consumer": round(result["cpu_s"], 2), **cpu_delta(cpu_before, cpu_snapshot(env))},
            "publisher_rate": round(publish["rate"], 1),
            "publish": publish,
        }
