"""One run: the workload written once, every phase round after round, the results document."""

from __future__ import annotations

import argparse
import multiprocessing as mp
import pickle
import statistics
import subprocess
import sys
import tempfile
from datetime import datetime
from pathlib import Path
from typing import Any

from adapters import local_services
from adapters.catalog import load_profiles
from bench.ingest.choreography import Cleanup, Context
from bench.ingest.measure import machine_facts
from bench.ingest.phases import phase_runners
from bench.ingest.profile import summarize_py_spy
from bench.ingest.settings import DEFAULT_NODE_RED_DIR, STALL_S, log
from bench.ingest.summary import compute_ratios, summarize_phase
from bench.ingest.systems.collector import COLLECTOR_CONFIG, SHARE_GROUP, phase_collector
from bench.ingest.systems.node_red import NODE_RED_FLOWS
from bench.ingest.workload import build_workload, check_workload
from bench.publisher import DEFAULT_WINDOW
from collector.settings import CollectorSettings


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
    check_workload(workload, registry, "telemetry")
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
        check_workload(batched, registry, "batched")
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
