"""The collector through a long InfluxDB outage: memory while spooling, and how fast the spool drains.

    .venv/bin/python -m bench.spool [--messages 100000] [--repeat 1] [--disk-full] [--out FILE]

One run, private Mosquitto and InfluxDB, `pilot collect` as its own process:

1. **baseline:** N messages drained with InfluxDB up (the normal write rate);
2. **outage:** InfluxDB stopped, N more messages published; the collector's
   memory (its process tree's RSS) is sampled throughout, and must stay flat
   while the spool grows on disk;
3. **drain:** InfluxDB started again; the time until every spooled point is
   written gives the drain rate, reported as a ratio to the baseline rate.

With ``--disk-full`` the spool sits on a tmpfs (mounted by the run: root)
that a ballast fills so that only about a third of the outage fits: the
spool's disk fills mid-stream, the collector keeps the refused batches
unacknowledged, then the ballast is deleted and InfluxDB started again. The
run then counts the points in InfluxDB: every message exactly once.

Messages are published by ``bench.publisher`` (pre-encoded QoS 1 packets,
faster than the collector), so the baseline is the collector's live rate.
Each repeat is a fresh run with fresh services; the JSON keeps every run.
"""

from __future__ import annotations

import argparse
import multiprocessing as mp
import os
import pickle
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

from adapters import local_services
from adapters.influxdb import InfluxClient, InfluxSettings
from adapters.scratch_disk import fill, small_filesystem
from bench.ingest.measure import influx_point_count, proc_status_kb, process_tree, scrape_metrics, tree_rss_kb
from bench.ingest.settings import DATABASE
from bench.ingest.workload import build_workload
from bench.publisher import publish_worker
from bench.results import write_result

SPOOLED_BYTES_PER_MESSAGE = 500  # about what one message of the workload takes in the spool (47 MB per 100,000)


def rss_mb(pid: int) -> float:
    """Current resident memory of a process tree (VmRSS), in MB."""
    return sum(proc_status_kb(p, "VmRSS") or 0 for p in process_tree(pid)) / 1024


def publish(port: int, workload: Path, count: int, client_id: str) -> None:
    context = mp.get_context("spawn")
    out: Any = context.Queue()
    go = context.Event()
    child = context.Process(target=publish_worker, args=(port, str(workload), count, client_id, 0, 1, go, out))
    child.start()
    try:
        out.get(timeout=120)  # connected, packets encoded
        go.set()
        result = out.get(timeout=600)
    finally:
        child.join(30)
    if result.get("error") or result.get("published") != count:
        raise RuntimeError(f"published {result.get('published')} of {count}: {result.get('error', 'refused')}")


def wait_for(condition: Any, timeout_s: float, what: str) -> float:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if condition():
            return time.time()
        time.sleep(0.1)
    raise RuntimeError(f"timed out waiting for {what}")


def run_once(n: int, disk_full: bool = False) -> dict[str, Any]:
    with tempfile.TemporaryDirectory(prefix="pilot-bench-spool-") as scratch:
        if not disk_full:
            return run_in(Path(scratch), Path(scratch) / "spool", n, disk_full)
        size_mib = 8 + n * SPOOLED_BYTES_PER_MESSAGE // 2**20
        with small_filesystem(size_mib) as disk:
            return run_in(Path(scratch), disk / "spool", n, disk_full)


def run_in(folder: Path, spool_dir: Path, n: int, disk_full: bool) -> dict[str, Any]:  # noqa: PLR0915 - one run
    workload = build_workload(2 * n)
    workload_path = folder / "workload.pickle"
    workload_path.write_bytes(pickle.dumps(workload.messages))
    devices = folder / "devices.yaml"
    devices.write_text(
        "devices:\n" + "".join(f"  - {e.model_dump_json()}\n" for e in workload.devices), encoding="utf-8"
    )
    broker = local_services.mosquitto(folder / "mosquitto")
    influx = local_services.influxdb(folder / "influxdb")
    broker.start()
    influx.start()
    metrics_port = local_services.free_port()
    env = {
        **os.environ,
        "PILOT_MQTT__PORT": str(broker.port),
        "PILOT_INFLUX__URL": influx.url,
        "PILOT_INFLUX__DATABASE": DATABASE,
        "PILOT_DEVICES_FILE": str(devices),
        "PILOT_METRICS_PORT": str(metrics_port),
        "PILOT_SPOOL_DIR": str(spool_dir),
        "PILOT_SPOOL_AFTER_S": "2",
    }
    collector = subprocess.Popen(
        [sys.executable, "-m", "pilot", "collect"], env=env, cwd=folder, stderr=subprocess.DEVNULL
    )
    url = f"http://127.0.0.1:{metrics_port}/metrics"
    try:

        def metric(name: str) -> float:
            return scrape_metrics(url).get(name, 0.0)

        wait_for(lambda: "pilot_collector_mqtt_connected" in scrape_metrics(url), 60, "the collector")
        rss_start = rss_mb(collector.pid)
        print(f"baseline: {n:,} messages with InfluxDB up", file=sys.stderr)
        began = time.time()
        publish(broker.port, workload_path, n, "bench-device")
        ended = wait_for(lambda: metric("pilot_collector_points_written_total") >= n, 600, "the baseline")
        baseline_rate = n / (ended - began)

        print(f"outage: InfluxDB stopped, {n:,} more messages", file=sys.stderr)
        influx.stop()
        samples: list[float] = []
        sampler_stop = [False]

        def sample() -> None:
            while not sampler_stop[0]:
                samples.append(rss_mb(collector.pid))
                time.sleep(0.5)

        sampler = threading.Thread(target=sample)
        sampler.start()
        with open(workload_path, "rb") as fh:
            second = pickle.load(fh)[n:]
        (folder / "second.pickle").write_bytes(pickle.dumps(second))
        disk_refused = disk_failed = 0.0
        if disk_full:
            # Room for about a third of the outage: the spool's disk fills mid-stream.
            ballast = fill(spool_dir.parent, leave_bytes=n * SPOOLED_BYTES_PER_MESSAGE // 3)
            publish(broker.port, folder / "second.pickle", n, "bench-device-2")
            refused = 'pilot_collector_batches_total{outcome="spool_full"}'
            failed = 'pilot_collector_batches_total{outcome="error"}'  # how a collector before issue 16 fared
            wait_for(lambda: metric(refused) + metric(failed) > 0, 600, "the spool's disk to fill")
            time.sleep(5.0)  # full for a while, the rest of the outage held unacknowledged
            disk_refused = metric(refused)
            disk_failed = metric(failed)
            print("disk freed: ballast deleted, InfluxDB still down", file=sys.stderr)
            ballast.unlink()
            time.sleep(2.0)
        else:
            publish(broker.port, folder / "second.pickle", n, "bench-device-2")
            wait_for(lambda: metric("pilot_collector_backlog_messages") == 0, 600, "everything spooled")
        spooled_bytes = metric("pilot_collector_spool_bytes")
        spooled_batches = metric("pilot_collector_spool_batches")

        print("drain: InfluxDB started again", file=sys.stderr)
        influx.start()
        began = time.time()
        drain_rate: float | None = None
        try:
            ended = wait_for(
                lambda: (
                    metric("pilot_collector_points_written_total") >= 2 * n
                    and metric("pilot_collector_spool_batches") == 0
                ),
                120 if disk_full else 600,
                "the spool to drain",
            )
            drain_rate = n / (ended - began)
        except RuntimeError:
            if not disk_full:
                raise
            print("the spool never drained: counting what landed", file=sys.stderr)
        sampler_stop[0] = True
        sampler.join()
        peak = tree_rss_kb(collector.pid) or 0
        if drain_rate is not None:
            wait_for(lambda: metric("pilot_collector_backlog_messages") == 0, 60, "an empty backlog")
        time.sleep(2.0)  # and nothing more lands: a point written twice would be counted once, so count
        with InfluxClient(InfluxSettings(url=influx.url, database=DATABASE)) as client:
            stored = influx_point_count(client)
    finally:
        collector.terminate()
        collector.wait(60)
        influx.stop()
        broker.stop()

    result = {
        "messages_per_phase": n,
        "disk_full": disk_full,
        "published": 2 * n,
        "points_in_influxdb": stored,
        "batches_refused_by_full_disk": disk_refused,
        "batches_failed_on_full_disk": disk_failed,
        "baseline_rate_msg_s": baseline_rate,
        "drain_rate_points_s": drain_rate,
        "drain_over_baseline": drain_rate / baseline_rate if drain_rate is not None else None,
        "spooled_mb": spooled_bytes / 1e6,
        "spooled_batches": spooled_batches,
        "rss_mb_at_start": rss_start,
        "rss_mb_during_outage_max": max(samples) if samples else None,
        "rss_mb_during_outage_last": samples[-1] if samples else None,
        "rss_outage_max_over_start": (max(samples) / rss_start) if samples and rss_start else None,
        "peak_rss_mb_tree": peak / 1024,
    }
    return result


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog="python -m bench.spool", description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--messages", type=int, default=100_000, help="per phase (default 100000)")
    parser.add_argument("--repeat", type=int, default=1, help="fresh runs, each with its own services (default 1)")
    parser.add_argument(
        "--disk-full", action="store_true", help="the spool on a tmpfs that fills mid-outage and is freed (needs root)"
    )
    parser.add_argument("--out", type=Path)
    args = parser.parse_args(argv)
    if args.messages < 1 or args.repeat < 1:
        parser.error("--messages and --repeat must be at least 1")
    return args


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    runs = []
    for number in range(1, args.repeat + 1):
        print(f"run {number}/{args.repeat}", file=sys.stderr)
        runs.append(run_once(args.messages, args.disk_full))
    summary = {
        key: statistics.median(values)
        for key in runs[0]
        if (values := [r[key] for r in runs if isinstance(r[key], int | float) and not isinstance(r[key], bool)])
    }
    summary["rss_mb_during_outage_max"] = max(r["rss_mb_during_outage_max"] or 0 for r in runs)
    result = {
        **summary,
        "messages_per_phase": args.messages,
        "disk_full": args.disk_full,
        "repeat": args.repeat,
        "runs": runs,
    }
    print(f"live rate, InfluxDB up   {summary['baseline_rate_msg_s']:10,.0f} msg/s (median of {args.repeat})")
    if "drain_rate_points_s" in summary:
        print(f"spool drain rate         {summary['drain_rate_points_s']:10,.0f} points/s")
    print(f"spooled                  {summary['spooled_mb']:10,.1f} MB in {summary['spooled_batches']:,.0f} batches")
    print(
        f"collector RSS            start {summary['rss_mb_at_start']:.0f} MB, outage max "
        f"{result['rss_mb_during_outage_max']:.0f} MB"
    )
    exact = all(r["points_in_influxdb"] == r["published"] for r in runs)
    counts = ", ".join(f"{r['points_in_influxdb']:,} of {r['published']:,}" for r in runs)
    print(f"points in InfluxDB       {counts}{'' if exact else '  NOT EXACT'}")
    if args.out:
        write_result(args.out, result)
    return 0 if exact else 1


if __name__ == "__main__":
    sys.exit(main())
