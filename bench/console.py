"""Console page latency, server-side: the demo's demonstration page and its live line.

The demo's scenario (7 devices, 28 days) goes device → MQTT → collector → InfluxDB as `pilot demo` runs it, and
its plan is stored frozen and evaluated. Then a collector runs, as on a running line, and today's part of the
scenario's pilot behaviour (from local midnight to now) is published through it, so that the live line has
devices with fresh messages, states and today's hours to account, and a collector reporting its health.

Each page is asked for through the real app, in process, with a console session (the one-time link's); the time
is the app's own, from the request reaching it to the last byte of its response (an ASGI wrapper), so it is the
server side only. First: the first request (nothing decoded, drawn or cached); warm: the median of the following
ones. The baseline, measured in the same run, is the API's warm ``/comparison`` of the same demonstration (a
cached result checked against the stored hours), so the pages' figures are also given as ratios to it. Targets
(issue 22): the demonstration page ≤ 300 ms warm, the live page ≤ 100 ms warm.

    .venv/bin/python -m bench.console [--repeat 20] [--out FILE]
"""

from __future__ import annotations

import argparse
import cProfile
import datetime as dt
import json
import os
import pstats
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from fastapi.testclient import TestClient
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from adapters.catalog import BUNDLED_PROFILES, load_profiles
from adapters.mqtt import MqttSettings
from api.main import create_app
from api.routers.live import live_line
from bench.results import write_result
from collector.service import Collector
from collector.settings import CollectorSettings
from pilot.demo import admin_key, api_settings, private_services, run_demo
from simulators.line_model import render_runs, simulate_periods
from simulators.publish import publish
from simulators.scenario import BUNDLED_SCENARIOS, load_scenario

TARGET_DEMONSTRATION_S = 0.300
TARGET_LIVE_S = 0.100
SCENARIO = BUNDLED_SCENARIOS / "pangyo_cobot_cell.yaml"


class ServerTimes:
    """Wraps an ASGI app: the seconds from each HTTP request's arrival to its response's last byte."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app
        self.last_s = 0.0

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        started = time.perf_counter()

        async def timed_send(message: Message) -> None:
            await send(message)
            if message["type"] == "http.response.body" and not message.get("more_body", False):
                self.last_s = time.perf_counter() - started

        await self.app(scope, receive, timed_send)


def today_scenario_text(today: dt.date) -> str:
    """The demo's scenario with one more period, today, behaving as the pilot does."""
    text = SCENARIO.read_text(encoding="utf-8")
    marker = "  - {name: pilot, behaviour: pilot,"
    at = text.index(marker)
    line_end = text.index("\n", at) + 1
    return (
        text[:line_end]
        + f"  - {{name: today, behaviour: pilot, start: {today.isoformat()}, days: 1}}\n"
        + text[line_end:]
    )


@contextmanager
def running(collector: Collector) -> Iterator[Collector]:
    collector.start()
    try:
        yield collector
    finally:
        collector.stop()


def measure(client: TestClient, times: ServerTimes, path: str, repeat: int, **kwargs: Any) -> dict[str, Any]:
    def one() -> float:
        response = client.get(path, **kwargs)
        if response.status_code != 200:
            raise RuntimeError(f"{path} answered {response.status_code}: {response.text[:300]}")
        return times.last_s

    first = one()
    warm = [one() for _ in range(repeat)]
    return {"path": path, "first_s": first, "warm_s": warm, "median_s": statistics.median(warm)}


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    say: Callable[[str], None] = lambda text: print(text, file=sys.stderr)  # noqa: E731 - progress only
    catalog = load_profiles(BUNDLED_PROFILES)
    with tempfile.TemporaryDirectory(prefix="pilot-bench-console-") as work:
        folder = Path(work)
        with private_services(folder / "demo") as (broker, influxdb):
            scenario_file = folder / "scenario.yaml"
            scenario = load_scenario(SCENARIO, catalog)
            zone = scenario.calendar.zone
            now = dt.datetime.now(zone)
            scenario_file.write_text(today_scenario_text(now.date()), encoding="utf-8")
            with_today = load_scenario(scenario_file, catalog)
            result = run_demo(scenario, catalog, broker, influxdb, folder / "demo", say=say)
            if not result.complete or result.evaluation is None:
                raise RuntimeError("the demo did not land every record")
            settings = api_settings(result, broker.port, influxdb.url)
            line = CollectorSettings(
                mqtt=MqttSettings(host="127.0.0.1", port=broker.port),
                influx=settings.influx,
                client_id="pilot-bench-line",
                devices_file=settings.devices_file,
                metrics_port=0,
                spool_dir=folder / "line-spool",
            )
            with running(Collector(line)):
                now_ms = int(time.time() * 1000)
                runs = simulate_periods(with_today, catalog, ["today"])
                messages = [m for m in render_runs(runs, catalog, batch_records=1) if m.ts_ms <= now_ms]
                say(f"publishing today's {len(messages):,} messages so far through a running collector")
                publish(line.mqtt, iter(messages), client_id="pilot-bench-today")
                time.sleep(3)  # the last batch written and a health report made
                times = ServerTimes(create_app(settings))
                access = admin_key(result)
                slug = result.evaluation.slug
                with TestClient(times) as client:
                    signed = client.get(f"/sign-in/link?token={access.sign_in_token}", follow_redirects=False)
                    if signed.status_code != 303:
                        raise RuntimeError(f"the one-time link did not sign in: {signed.status_code}")
                    key = {"Authorization": f"Bearer {access.key_file.read_text(encoding='ascii').strip()}"}
                    figures = {
                        "comparison_api": measure(
                            client, times, f"/v1/demonstrations/{slug}/comparison", args.repeat, headers=key
                        ),
                        "demonstration_page": measure(client, times, f"/demonstrations/{slug}", args.repeat),
                        "live_page": measure(client, times, f"/demonstrations/{slug}/live", args.repeat),
                        "live_api": measure(client, times, f"/v1/demonstrations/{slug}/live", args.repeat, headers=key),
                    }
                    live = client.get(f"/v1/demonstrations/{slug}/live", headers=key).json()
                    if args.profile:
                        state = times.app.state.pilot  # type: ignore[attr-defined]
                        stored = state.demonstrations().get(slug)
                        _profile(lambda: live_line(state, stored), args.repeat)
    baseline = figures["comparison_api"]["median_s"]
    for entry in figures.values():
        entry["ratio_to_baseline"] = entry["median_s"] / baseline
    report = {
        "started": now.isoformat(),
        "commit": _git("rev-parse", "--short", "HEAD"),
        "dirty": bool(_git("status", "--porcelain", "--untracked-files=no")),
        "devices": len(scenario.devices),
        "days": sum(p.days for p in scenario.periods),
        "today_messages": len(messages),
        "today_hours": None if live["today"] is None else _hours(live["today"]["start"], live["today"]["end"]),
        "repeat": args.repeat,
        "cpus": os.cpu_count(),
        "loadavg_at_end": list(os.getloadavg()),
        "targets_s": {"demonstration_page": TARGET_DEMONSTRATION_S, "live_page": TARGET_LIVE_S},
        **figures,
    }
    print(json.dumps({k: v for k, v in report.items() if not isinstance(v, dict)} | _summary(figures), indent=2))
    if args.out:
        write_result(args.out, report)
    return 0


def _profile(request: Callable[[], Any], repeat: int) -> None:
    """Where the live line's warm time goes: cProfile over ``repeat`` requests, to stderr."""
    profiler = cProfile.Profile()
    profiler.enable()
    for _ in range(repeat):
        request()
    profiler.disable()
    pstats.Stats(profiler, stream=sys.stderr).sort_stats("cumulative").print_stats(60)


def _summary(figures: dict[str, dict[str, Any]]) -> dict[str, str]:
    return {
        name: f"first {entry['first_s'] * 1000:.0f} ms, warm {entry['median_s'] * 1000:.1f} ms"
        f" ({entry['ratio_to_baseline']:.2f}× the warm comparison)"
        for name, entry in figures.items()
    }


def _hours(start: str, end: str) -> float:
    return (dt.datetime.fromisoformat(end) - dt.datetime.fromisoformat(start)).total_seconds() / 3600


def _git(*args: str) -> str:
    try:
        return subprocess.run(["git", *args], capture_output=True, text=True, check=True).stdout.strip()
    except (OSError, subprocess.CalledProcessError):
        return "unknown"


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog="python -m bench.console", description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--repeat", type=int, default=20, help="warm requests per page, after the first")
    parser.add_argument("--out", type=Path, help="JSON results")
    parser.add_argument("--profile", action="store_true", help="also profile the live line's warm requests (stderr)")
    return parser.parse_args(argv)


if __name__ == "__main__":
    sys.exit(main())
