"""``latency``: publish → queryable latency through one collector, the publisher paced at half its drain rate."""

from __future__ import annotations

import time
from typing import Any

from adapters.influxdb import InfluxClient, InfluxSettings
from bench.ingest.choreography import (
    Context,
    DeadLetterCounter,
    cpu_delta,
    cpu_snapshot,
    finish_child,
    phase_services,
    prime_session,
    start_child,
    wait_child,
)
from bench.ingest.measure import influx_point_count, poll_until
from bench.ingest.settings import DATABASE, STALL_S, log
from bench.ingest.systems.collector import (
    CollectorProcess,
    collector_figures,
    start_collector,
    stop_collector,
    wait_collector_connected,
)
from bench.ingest.workload import load_devices
from bench.latency import LatencyPoller, paced_publish_worker
from pilot_core.contract import SUBSCRIPTION


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
        devices = [d.device for d in load_devices(ctx.devices_file)]
        poller = LatencyPoller(influx, devices, ctx.args.latency_poll)
        try:
            wait_child(ctx, child, queue, 120, "paced publisher")  # ready
            dead_letters = DeadLetterCounter(env.broker.port)
            cpu_before = cpu_snapshot(env)
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

            poll_until(all_seen, ctx.args.timeout, collector.process, interval_s=0.05)
            poller.stop()
            stored = influx_point_count(influx)
            figures = collector_figures(collector)
            cpu_after = cpu_snapshot(env)
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
            "cpu_s": {"consumer": figures["cpu_s"], **cpu_delta(cpu_before, cpu_after)},
            "publish": publish,
        }


# --- Node-RED -----------------------------------------------------------------------
