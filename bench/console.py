"""The web console's pages, timed in the server: the demo's demonstration (7 devices, 28 days) as `pilot api`
serves it.

The demo is run first as `scripts/demo.sh` runs it (its bundled scenario backfilled through private Mosquitto,
the collector and InfluxDB), then the API's app answers in this process, with no network between: what is timed
is the server's work for one request (routing, session, evaluation from the result cache, template), not a
browser's. Warm: the page again once its result is cached and its charts drawn (a server that has shown it
once). First: the first time the page is asked for (its charts drawn; the result already cached, as the demo
leaves it). The baseline, measured in the same run, is the API's own warm comparison of the same demonstration
(`GET /v1/demonstrations/{ref}/comparison`): the page's ratio to it is what the page adds.

    .venv/bin/python -m bench.console [--repeat 30] [--days 14] [--out FILE]
"""

from __future__ import annotations

import argparse
import gc
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from fastapi.testclient import TestClient

from adapters import local_services
from adapters.catalog import load_profiles
from adapters.influxdb import InfluxSettings
from adapters.mqtt import MqttSettings
from adapters.sql import AccessRepository
from api.main import create_app
from api.security import SESSION_COOKIE
from bench.results import write_result
from collector.settings import CollectorSettings
from pilot.demo import run_demo
from pilot_core.access import Actor, Role
from simulators.scenario import BUNDLED_SCENARIOS, load_scenario

BENCH = Actor.system("bench.console")
TARGET_DEMONSTRATION_PAGE_S = 0.3
SCENARIO = BUNDLED_SCENARIOS / "pangyo_cobot_cell.yaml"


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="python -m bench.console", description=__doc__.split("\n\n")[0])
    parser.add_argument("--repeat", type=int, default=30, help="timed requests per page, after one untimed")
    parser.add_argument("--days", type=int, default=14, help="days of baseline and of pilot (the demo's: 14)")
    parser.add_argument("--out", type=Path, help="write the results as JSON here")
    return parser.parse_args(argv)


def timed(request: Callable[[], Any], repeat: int) -> dict[str, Any]:
    runs = []
    for _ in range(repeat):
        started = time.perf_counter()
        response = request()
        runs.append(time.perf_counter() - started)
        assert response.status_code == 200, response.text[:500]
    return {"median_s": statistics.median(runs), "min_s": min(runs), "max_s": max(runs), "repeats_s": runs}


def scenario_file(folder: Path, days: int) -> Path:
    text = SCENARIO.read_text(encoding="utf-8")
    if days != 14:
        text = text.replace("days: 14", f"days: {days}")
    path = folder / "scenario.yaml"
    path.write_text(text, encoding="utf-8")
    return path


def measure(args: argparse.Namespace, folder: Path) -> dict[str, Any]:
    broker = local_services.mosquitto(folder / "mosquitto")
    influx = local_services.influxdb(folder / "influxdb")
    broker.start()
    influx.start()
    try:
        catalog = load_profiles()
        scenario = load_scenario(scenario_file(folder, args.days), catalog)
        (folder / "demo").mkdir()
        demo = run_demo(scenario, catalog, broker, influx, folder / "demo", say=lambda _: None)
        assert demo.evaluation is not None, "the demo made no demonstration"
        settings = CollectorSettings(
            mqtt=MqttSettings(host="127.0.0.1", port=broker.port),
            influx=InfluxSettings(url=influx.url, database="pilot"),
            devices_file=folder / "demo" / "devices.yaml",
            database_url=demo.database_url,
            signing_key_file=folder / "demo" / "signing.key",
            metrics_port=0,
        )
        app = create_app(settings)
        state = app.state.pilot
        token = AccessRepository(state.database).create_key("bench", Role.ADMIN, "operator", actor=BENCH)[1]
        principal = state.access().authenticate(token)
        slug, plan = demo.evaluation.slug, demo.evaluation.plan
        with TestClient(app) as client:
            client.cookies.set(SESSION_COOKIE, state.sessions.open(principal).token)
            key = {"Authorization": f"Bearer {token}"}
            comparison = f"/v1/demonstrations/{slug}/comparison"
            page = f"/demonstrations/{slug}"
            client.get(comparison, headers=key)  # the result cached, as the demo leaves it
            gc.collect()
            first = timed(lambda: client.get(page), 1)
            measurements = {
                "api_comparison_warm": timed(lambda: client.get(comparison, headers=key), args.repeat),
                "demonstration_page_first": first,
                "demonstration_page_warm": timed(lambda: client.get(page), args.repeat),
                "demonstrations_list_warm": timed(lambda: client.get("/demonstrations"), args.repeat),
            }
            size = len(client.get(page).content)
        baseline = measurements["api_comparison_warm"]["median_s"]
        for measured in measurements.values():
            measured["over_baseline"] = measured["median_s"] / baseline
        return {
            "started": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
            "commit": _commit(),
            "devices": len(plan.devices),
            "days": round(sum(w.days for w in plan.windows)),
            "repeat": args.repeat,
            "page_bytes": size,
            "baseline": "api_comparison_warm",
            "measurements": measurements,
            "targets": {"demonstration_page_warm_s": TARGET_DEMONSTRATION_PAGE_S},
        }
    finally:
        influx.stop()
        broker.stop()


def _commit() -> str:
    found = subprocess.run(["git", "rev-parse", "--short", "HEAD"], capture_output=True, text=True, check=False)
    return found.stdout.strip() or "unknown"


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    with tempfile.TemporaryDirectory(prefix="pilot-bench-console-") as folder:
        result = measure(args, Path(folder))
    print(f"{result['devices']} devices × {result['days']} days, median (min–max) of {result['repeat']}:")
    for name, m in result["measurements"].items():
        print(
            f"  {name:<28} {m['median_s'] * 1000:8.1f} ms ({m['min_s'] * 1000:.1f}–{m['max_s'] * 1000:.1f})"
            f"  {m['over_baseline']:6.2f}× the API's comparison"
        )
    if args.out:
        write_result(args.out, result)
    return 0


if __name__ == "__main__":
    sys.exit(main())
