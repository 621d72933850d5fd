"""``python -m bench.ingest``: the options, and the table on stdout and JSON in ``--out`` at the end."""

from __future__ import annotations

import argparse
import signal
from collections.abc import Sequence
from pathlib import Path

from bench.ingest.run import run
from bench.ingest.settings import DEFAULT_NODE_RED_PEER, DEFAULT_PHASES, PHASES, REPO, log
from bench.ingest.table import render_table
from bench.results import write_result
from pilot_core.contract import MAX_BATCH_RECORDS


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
