"""What every part of the ingest benchmark shares: paths, the phases in run order, the workload's
constants, and the progress log on stderr."""

from __future__ import annotations

import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent.parent
DEFAULT_NODE_RED_PEER = REPO.parent / "shared" / "peers" / "node-red"
DEFAULT_NODE_RED_DIR = REPO / ".pilot" / "bench" / "node-red"
# Run in this order whatever order they are asked in: latency paces itself by the collector's drain rate.
PHASES = (
    "bare", "collector", "collector-2", "naive", "node-red", "node-red-per-message", "batched",
    "bare-live", "collector-live", "collector-2-live", "naive-live", "node-red-live", "node-red-per-message-live",
    "latency",
)  # fmt: skip
DEFAULT_PHASES = ("bare", "collector", "naive")
BASE_TS_MS = 1_767_225_600_000  # 2026-01-01T00:00:00Z: every device's seq n is at BASE + n s
SESSION_EXPIRY_S = 7 * 24 * 3600  # what the collector asks for
MAX_PAYLOAD_BYTES = 256 * 1024
DATABASE = "bench"
SITE = "bench-site"
STALL_S = 10.0  # a consumer whose InfluxDB count has not grown for this long has lost the rest


def log(message: str) -> None:
    print(f"[{time.strftime('%H:%M:%S')}] {message}", file=sys.stderr, flush=True)
