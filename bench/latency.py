"""Publish → queryable latency: a paced publisher stamping real publish times, and an InfluxDB poller.

Each message's ``ts`` is the moment it is sent (epoch ms), so a point's own
timestamp says when it was published. The poller asks InfluxDB (InfluxQL
over /query) every ``interval_s`` for the points past a cursor, and takes,
for each point it has not seen before, latency = when the answer arrived −
the point's timestamp. The figure is therefore exact to within one poll
interval plus one query's duration, both of which are reported.

The cursor is the newest moment up to which every device's points have all
been seen (each device's seq has no gap up to there). It cannot simply be
the newest point seen: InfluxDB makes a large write visible in parts, so
the older points of a batch may show after its newer ones.
"""

from __future__ import annotations

import json
import pickle
import statistics
import threading
import time
from collections.abc import Sequence
from typing import Any

from adapters import mqtt_packets as wire
from adapters.influxdb import InfluxClient, InfluxQueryError
from bench.publisher import PublishError, RawPublisher


def payload_templates(messages: Sequence[tuple[str, bytes]]) -> list[tuple[str, bytes]]:
    """(topic, metrics as JSON) of each workload message, to be sent again with a new seq and ts."""
    templates = []
    for topic, payload in messages:
        document = json.loads(payload)
        templates.append((topic, json.dumps(document["metrics"]).encode("utf-8")))
    return templates


def paced_publish_worker(
    port: int, workload_path: str, client_id: str, rate: float, count: int, go: Any, out: Any
) -> None:
    """Publish ``count`` telemetry messages at ``rate``/s, each with ``ts`` = the time it is sent.

    Topics and metric values cycle through the workload; each device's seq
    grows by one per message. Two messages of one device sent within the
    same millisecond would be the same point, so a device's ts is bumped to
    one ms after its previous one when needed (counted in ``ts_bumped``).
    """
    with open(workload_path, "rb") as fh:
        templates = payload_templates(pickle.load(fh))
    seqs: dict[str, int] = {}
    last_ts: dict[str, int] = {}
    bumped = [0]

    def make_packet(index: int, packet_id: int) -> bytes:
        topic, metrics = templates[index % len(templates)]
        seq = seqs.get(topic, 0)
        seqs[topic] = seq + 1
        ts = int(time.time() * 1000)
        previous = last_ts.get(topic, 0)
        if ts <= previous:
            ts = previous + 1
            bumped[0] += 1
        last_ts[topic] = ts
        payload = b'{"seq": %d, "ts": %d, "metrics": %s}' % (seq, ts, metrics)
        return wire.publish_packet(topic, payload, 1, packet_id)

    publisher = RawPublisher(port, client_id, timeout_s=60)
    out.put({"event": "ready"})
    if not go.wait(120):
        publisher.close()
        out.put({"event": "done", "error": "never told to start"})
        return
    started = time.time()
    error: str | None = None
    worst_lag = 0.0
    try:
        worst_lag = publisher.publish_paced(make_packet, count, rate)
    except (PublishError, OSError) as exc:
        error = str(exc)
    finished = time.time()
    publisher.close()
    out.put(
        {
            "event": "done",
            "messages": count,
            "published": publisher.acked - publisher.refused,
            "refused": publisher.refused,
            "started": started,
            "finished": finished,
            "ts_bumped": bumped[0],
            "worst_lag_behind_schedule_s": round(worst_lag, 4),
            **({"error": error} if error else {}),
        }
    )


class LatencyPoller:
    """Polls InfluxDB in a thread for new telemetry points and records each one's latency."""

    def __init__(self, client: InfluxClient, devices: Sequence[str], interval_s: float = 0.05) -> None:
        self.client = client
        self.interval_s = interval_s
        self.latencies_ms: list[float] = []
        self.query_ms: list[float] = []
        self.poll_gaps_ms: list[float] = []
        self.rows_per_poll: list[int] = []
        self.errors = 0
        self._seen: set[tuple[str, int]] = set()
        # Per device: the next seq not seen yet, the ts of the last one before it, and seqs seen past a gap.
        self._next_seq = dict.fromkeys(devices, 0)
        self._settled_ts: dict[str, int] = {}
        self._ahead: dict[str, dict[int, int]] = {device: {} for device in devices}
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="bench-latency-poller", daemon=True)

    @property
    def seen(self) -> int:
        return len(self._seen)

    def start(self) -> None:
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        if self._thread.is_alive():
            self._thread.join(10)

    def cursor_ms(self) -> int:
        """Every point at or before this has been seen (0 until every device has shown its first)."""
        if len(self._settled_ts) < len(self._next_seq):
            return 0
        return min(self._settled_ts.values())

    def _settle(self, device: str, seq: int, ts: int) -> None:
        expected = self._next_seq.get(device)
        if expected is None:
            return  # not one of ours
        if seq != expected:
            if seq > expected:
                self._ahead[device][seq] = ts
            return
        ahead = self._ahead[device]
        while True:
            self._settled_ts[device] = ts
            seq += 1
            if seq not in ahead:
                break
            ts = ahead.pop(seq)
        self._next_seq[device] = seq

    def poll_once(self) -> int:
        """One query; returns how many points it saw for the first time."""
        cursor = self.cursor_ms()
        sent = time.time()
        try:
            series = self.client.query(f'SELECT "seq" FROM /^telemetry_/ WHERE time > {cursor}ms GROUP BY "device"')
        except InfluxQueryError as exc:
            if "database not found" not in str(exc):
                self.errors += 1
            return 0
        answered = time.time()
        self.query_ms.append((answered - sent) * 1000)
        answered_ms = answered * 1000
        new = rows = 0
        for item in series:
            device = item.tags.get("device", "")
            rows += len(item.values)
            for ts, seq in item.values:
                key = (device, int(ts))
                if key in self._seen:
                    continue
                self._seen.add(key)
                self.latencies_ms.append(answered_ms - key[1])
                self._settle(device, int(seq), key[1])
                new += 1
        self.rows_per_poll.append(rows)
        return new

    def _run(self) -> None:
        previous = 0.0
        while not self._stop.is_set():
            began = time.monotonic()
            if previous:
                self.poll_gaps_ms.append((began - previous) * 1000)
            previous = began
            self.poll_once()
            self._stop.wait(max(0.0, self.interval_s - (time.monotonic() - began)))

    def summary(self) -> dict[str, Any]:
        latencies = self.latencies_ms
        result: dict[str, Any] = {
            "points_seen": len(latencies),
            "poll_interval_s": self.interval_s,
            "poll_gap_ms_median": round(statistics.median(self.poll_gaps_ms), 1) if self.poll_gaps_ms else None,
            "poll_query_ms_median": round(statistics.median(self.query_ms), 1) if self.query_ms else None,
            "poll_query_ms_max": round(max(self.query_ms), 1) if self.query_ms else None,
            "poll_rows_median": statistics.median(self.rows_per_poll) if self.rows_per_poll else None,
            "poll_errors": self.errors,
        }
        if len(latencies) >= 2:
            cuts = statistics.quantiles(latencies, n=100, method="inclusive")
            result.update(
                p50_ms=round(cuts[49], 1),
                p90_ms=round(cuts[89], 1),
                p99_ms=round(cuts[98], 1),
                max_ms=round(max(latencies), 1),
                min_ms=round(min(latencies), 1),
                mean_ms=round(statistics.fmean(latencies), 1),
            )
        # How finely a latency is known: a point may land just after one poll and show at the next.
        gap = result["poll_gap_ms_median"] or self.interval_s * 1000
        result["resolution_ms"] = round(gap + (result["poll_query_ms_median"] or 0.0), 1)
        return result
