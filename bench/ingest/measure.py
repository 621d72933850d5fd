"""Readings taken around a phase: /proc (peak RSS, CPU), the machine, InfluxDB's point count, the
collector's /metrics, and waiting on a log line or a condition."""

from __future__ import annotations

import contextlib
import json
import os
import platform
import subprocess
import time
from collections.abc import Callable, Sequence
from importlib.metadata import PackageNotFoundError, version
from pathlib import Path
from typing import Any

import httpx
import paho.mqtt.client as paho

from adapters import local_services
from adapters.influxdb import InfluxClient, InfluxQueryError


def proc_status_kb(pid: int, key: str = "VmHWM") -> int | None:
    """A field of /proc/PID/status in kB (VmHWM is the peak resident set size)."""
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith(key + ":"):
                return int(line.split()[1])
    except (OSError, ValueError, IndexError):
        return None
    return None


def proc_cpu_s(pid: int) -> float | None:
    """User + system CPU seconds a process has used so far."""
    try:
        text = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    fields = text[text.rindex(")") + 2 :].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def process_tree(pid: int) -> list[int]:
    """``pid`` and all its descendants (the collector validates in a child process)."""
    tree, index = [pid], 0
    while index < len(tree):
        for task in Path(f"/proc/{tree[index]}/task").glob("*"):
            with contextlib.suppress(OSError, ValueError):
                tree += [int(child) for child in (task / "children").read_text().split()]
        index += 1
    return tree


def tree_rss_kb(pid: int) -> int | None:
    """Peak RSS of a process tree: the sum of each process's own peak (an upper bound)."""
    peaks = [proc_status_kb(p) for p in process_tree(pid)]
    return sum(p for p in peaks if p is not None) or None


def tree_cpu_s(pid: int) -> float | None:
    cpus = [proc_cpu_s(p) for p in process_tree(pid)]
    return sum(c for c in cpus if c is not None) or None


def _command_first_line(command: Sequence[str]) -> str:
    try:
        result = subprocess.run(list(command), capture_output=True, text=True, timeout=10, check=False)
    except (OSError, subprocess.TimeoutExpired) as exc:
        return f"unknown ({exc})"
    text = (result.stdout + result.stderr).strip()
    return text.splitlines()[0].strip() if text else "unknown"


def machine_facts(node_red_dir: Path | None = None) -> dict[str, Any]:
    cpu_model = "unknown"
    with contextlib.suppress(OSError):
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu_model = line.split(":", 1)[1].strip()
                break
    facts: dict[str, Any] = {
        "cores": os.cpu_count(),
        "cpu_model": cpu_model,
        "memory_gb": round(os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES") / 2**30, 1),
        "kernel": platform.release(),
        "python": platform.python_version(),
        "paho_mqtt": getattr(paho, "__version__", None) or _pkg_version("paho-mqtt"),
        "mosquitto": _command_first_line([local_services.find_binary("mosquitto", "/usr/sbin/mosquitto"), "-h"]),
        "influxd": _command_first_line([local_services.find_binary("influxd", "/usr/bin/influxd"), "version"]),
        "loadavg_at_start": os.getloadavg(),
    }
    if node_red_dir is not None:
        package = node_red_dir / "node_modules" / "node-red" / "package.json"
        if package.is_file():
            facts["node_red"] = json.loads(package.read_text())["version"]
            contrib = node_red_dir / "node_modules" / "node-red-contrib-influxdb" / "package.json"
            if contrib.is_file():
                facts["node_red_contrib_influxdb"] = json.loads(contrib.read_text())["version"]
            facts["node"] = _command_first_line(["node", "--version"])
    return facts


def _pkg_version(name: str) -> str:
    try:
        return version(name)
    except PackageNotFoundError:
        return "unknown"


def influx_point_count(client: InfluxClient) -> int:
    """Points in every telemetry measurement, counted by InfluxDB (SELECT count)."""
    try:
        series = client.query('SELECT count("seq") FROM /^telemetry_/')
    except InfluxQueryError as exc:
        if "database not found" in str(exc):
            return 0
        raise
    return sum(int(s.values[0][1]) for s in series if s.values)


def megabytes(kb: int | None) -> float | None:
    return round(kb / 1024, 1) if kb else None


def scrape_metrics(metrics_url: str) -> dict[str, float]:
    """The collector's counters: summed over labels under the bare name, and each labelled series by its full name."""
    values: dict[str, float] = {}
    try:
        text = httpx.get(metrics_url, timeout=2.0).text
    except httpx.HTTPError:
        return values
    for line in text.splitlines():
        if line.startswith("pilot_collector_") and not line.startswith("#"):
            name, _, value = line.rpartition(" ")
            base = name.split("{", 1)[0]
            values[base] = values.get(base, 0.0) + float(value)
            if base != name:
                values[name] = float(value)
    return values


def by_label(metrics: dict[str, float], base: str) -> dict[str, int]:
    """A labelled counter's non-zero series, keyed by their label value: {"seq_regression": 3}."""
    found: dict[str, int] = {}
    for name, value in metrics.items():
        if name.startswith(base + "{") and value:
            label = name[len(base) + 1 : -1].split("=", 1)[-1].strip('"')
            found[label] = found.get(label, 0) + int(value)
    return found


def wait_for_line(path: Path, needle: str, process: subprocess.Popen[bytes], timeout_s: float) -> tuple[str, float]:
    """Tail a log until a line containing ``needle`` appears: (the line, when we saw it)."""
    deadline = time.monotonic() + timeout_s
    offset = 0
    pending = ""
    while time.monotonic() < deadline:
        with path.open("rb") as fh:
            fh.seek(offset)
            chunk = fh.read()
        seen = time.time()
        offset += len(chunk)
        pending += chunk.decode("utf-8", "replace")
        *lines, pending = pending.split("\n")
        for line in lines:
            if needle in line:
                return line, seen
        if process.poll() is not None:
            raise RuntimeError(f"{process.args!r} exited with {process.returncode}; see {path}")
        time.sleep(0.01)
    raise RuntimeError(f"{needle!r} did not appear in {path} within {timeout_s:g} s")


def poll_until(
    condition: Callable[[], bool], timeout_s: float, process: subprocess.Popen[bytes] | None, interval_s: float = 0.05
) -> float | None:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if condition():
            return time.time()
        if process is not None and process.poll() is not None:
            raise RuntimeError(f"{process.args!r} exited early with {process.returncode}")
        time.sleep(interval_s)
    return None
