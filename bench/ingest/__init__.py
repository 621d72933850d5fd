"""Ingest benchmark: every ingest system side by side on one machine, in one run.

One run measures, with a fresh broker and a fresh database per phase, the
same pre-generated workload (N valid telemetry messages, one point each,
spread over devices of the bundled profiles):

* ``bare``: a paho-mqtt 2 subscriber that only counts (the receive ceiling);
* ``collector``: ``python -m pilot collect`` end to end, until InfluxDB holds N points;
* ``collector-2``: two collectors sharing ``$share/pilot-bench/…``, until both together wrote N;
* ``naive``: validate each message, one HTTP POST /write per message (on a slice);
* ``node-red`` / ``node-red-per-message``: the peer's batched and per-message Node-RED flows;
* ``batched``: the collector on messages that each carry a batch of records (points/s);
* ``…-live``: each of those with the publisher running at the same time;
* ``latency``: publish → queryable latency through the collector, publisher paced at half its drain rate.

Drain methodology (as in the Node-RED peer's README): the consumer's
persistent session is created first and disconnected, a separate publisher
process (``bench.publisher``: pre-encoded packets over a raw socket) publishes
the whole backlog with QoS 1, then the consumer connects and the drain is
timed from its CONNACK to the last message (bare) or to the last point being
written (the others). Live phases are timed from the first publish.

Where each part lives (one module per system under test, as Telegraf keeps one folder per plugin):

* ``systems/``: ``bare``, ``collector`` (also ``collector-2`` and ``batched``), ``naive``, ``node_red`` (both flows);
* ``phases/``: every phase by name, and ``latency``;
* ``choreography``: services, primed sessions, publishers, child processes and cleanup, shared by all;
* ``workload``, ``measure`` (/proc, /metrics, InfluxDB counts), ``summary`` (medians, ratios), ``table``,
  ``profile`` (py-spy), ``run`` (the rounds and the results document), ``cli`` (options and ``main``).

    python -m bench.ingest --quick
    python -m bench.ingest --phases all --messages 100000 --repeat 3 --node-red-dir .pilot/bench/node-red \\
        --out .pilot/bench/ingest.json
"""

from bench.ingest.cli import main, parse_args
from bench.ingest.measure import by_label, proc_status_kb, process_tree, scrape_metrics, tree_rss_kb
from bench.ingest.profile import summarize_py_spy
from bench.ingest.settings import DATABASE, DEFAULT_PHASES, MAX_PAYLOAD_BYTES, PHASES
from bench.ingest.summary import compute_ratios, summarize_phase
from bench.ingest.systems.node_red import NODE_RED_TOPIC, node_red_errors, node_red_flow
from bench.ingest.table import render_table
from bench.ingest.workload import Workload, build_workload, load_devices

# The names these had when bench.ingest was one file.
_by_label = by_label
_load_devices = load_devices

__all__ = [
    "DATABASE",
    "DEFAULT_PHASES",
    "MAX_PAYLOAD_BYTES",
    "NODE_RED_TOPIC",
    "PHASES",
    "Workload",
    "_by_label",
    "_load_devices",
    "build_workload",
    "by_label",
    "compute_ratios",
    "load_devices",
    "main",
    "node_red_errors",
    "node_red_flow",
    "parse_args",
    "proc_status_kb",
    "process_tree",
    "render_table",
    "scrape_metrics",
    "summarize_phase",
    "summarize_py_spy",
    "tree_rss_kb",
]
