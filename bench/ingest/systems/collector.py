"""``collector``, ``collector-2`` and ``batched``: ``python -m pilot collect`` end to end, one process or
two sharing ``$share/pilot-bench/…``, on one-record or batched messages, until InfluxDB holds every point."""

from __future__ import annotations

import contextlib
import os
import re
import signal
import subprocess
import sys
import time
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Any

from adapters import local_services
from adapters.influxdb import InfluxClient, InfluxSettings
from bench.ingest.choreography import (
    Context,
    DeadLetterCounter,
    PhaseEnv,
    count_redelivered,
    cpu_delta,
    cpu_snapshot,
    finish_publishers,
    phase_services,
    prime_session,
    publish_backlog,
    start_publishers,
)
from bench.ingest.measure import (
    by_label,
    influx_point_count,
    megabytes,
    scrape_metrics,
    tree_cpu_s,
    tree_rss_kb,
    wait_for_line,
)
from bench.ingest.profile import find_py_spy
from bench.ingest.settings import DATABASE, MAX_PAYLOAD_BYTES, REPO
from collector.settings import CollectorSettings

SHARE_GROUP = "pilot-bench"  # collector-2's shared subscription: $share/pilot-bench/pilot/v1/+/+/+/+
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
_LOG_TIME = re.compile(r"^(\d{4}-\d\d-\d\d \d\d:\d\d:\d\d,\d{3}) ")


def _log_time(line: str) -> float | None:
    match = _LOG_TIME.match(line)
    if not match:
        return None
    return datetime.strptime(match.group(1), "%Y-%m-%d %H:%M:%S,%f").timestamp()


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
    line, seen = wait_for_line(collector.log_path, "connected to MQTT broker", collector.process, 60)
    collector.connack = _log_time(line) or seen
    collector.python_pid = _python_pid(collector.process)


def collector_figures(collector: CollectorProcess) -> dict[str, Any]:
    """What one collector says about itself (/metrics) and what its process tree used (peak RSS, CPU)."""
    metrics = scrape_metrics(collector.metrics_url)
    pid = collector.python_pid
    peak_rss_kb = tree_rss_kb(pid) if pid else None
    cpu = tree_cpu_s(pid) if pid else None
    return {
        "client_id": collector.client_id,
        "received": int(metrics.get("pilot_collector_messages_received_total", 0)),
        "points_written": int(metrics.get("pilot_collector_points_written_total", 0)),
        "rejected_metric": int(metrics.get("pilot_collector_messages_rejected_total", 0)),
        "rejected_by_reason": by_label(metrics, "pilot_collector_messages_rejected_total"),
        "duplicates": int(metrics.get("pilot_collector_messages_duplicate_total", 0)),
        "seq_missing": int(metrics.get("pilot_collector_seq_missing_total", 0)),
        "write_retries": int(metrics.get("pilot_collector_write_retries_total", 0)),
        "batches_written": int(metrics.get("pilot_collector_batches_total", 0)),
        "peak_rss_mb": megabytes(peak_rss_kb),
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
            cpu_before = cpu_snapshot(env)
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
            cpu_after = cpu_snapshot(env)
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
            "cpu_s": {"consumer": total["cpu_s"], **cpu_delta(cpu_before, cpu_after)},
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
        written = sum(scrape_metrics(c.metrics_url).get("pilot_collector_points_written_total", 0) for c in collectors)
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
