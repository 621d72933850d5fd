"""Every phase by name: a system under test, drained or live, plus ``batched`` and ``latency``.

The drain and live choreography is in ``bench.ingest.choreography``; each system's own steps are in
``bench.ingest.systems``."""

from __future__ import annotations

import argparse
from collections.abc import Callable
from typing import Any

from bench.ingest.choreography import Context
from bench.ingest.phases.latency import phase_latency
from bench.ingest.systems.bare import phase_bare
from bench.ingest.systems.collector import phase_collector
from bench.ingest.systems.naive import phase_naive
from bench.ingest.systems.node_red import phase_node_red

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
