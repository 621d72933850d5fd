"""docs/benchmarks.md is rendered from one run's results: every section, and the verdicts against the targets."""

from __future__ import annotations

import json
import subprocess
from pathlib import Path
from typing import Any

from bench import report, spool


def ingest_phase(rates: list[float], **extra: Any) -> dict[str, Any]:
    return {
        "rates": rates,
        "rate_median": sorted(rates)[len(rates) // 2],
        "rounds": [{"rate": r} for r in rates],
        **extra,
    }


def results_folder(tmp_path: Path, *, node_red_rate: float = 10_000.0) -> Path:
    ingest = {
        "machine": {"cores": 2, "cpu_model": "Test CPU", "memory_gb": 8, "kernel": "6.1", "loadavg_at_start": [0.5]},
        "workload": {"messages": 100_000, "batched_records_per_message": 50},
        "config": {"collector": {"batch_size": 5000}},
        "phases": {
            "bare": ingest_phase([14_000.0, 15_000.0], lost=0, peak_rss_mb=45.0),
            "collector": ingest_phase([25_000.0, 24_000.0], lost=0, peak_rss_mb=150.0),
            "node-red": ingest_phase([node_red_rate, node_red_rate], lost=0, peak_rss_mb=350.0),
            "node-red-per-message-live": ingest_phase([900.0], lost=40_000, publisher_rate_median=30_000.0),
            "latency": ingest_phase([12_000.0], p50_ms=600.0, p99_ms=1100.0, resolution_ms=50.0),
        },
        "ratios": {
            "best-collector/node-red": {"median": 25_000 / node_red_rate, "rounds": [25_000 / node_red_rate] * 2},
            "collector/bare": {"median": 1.7, "rounds": [1.79, 1.6]},
            "collector/naive": {"median": 40.0, "rounds": [40.0, 41.0]},
        },
    }
    spool = {"messages_per_phase": 30_000, "runs": [{"rss_mb_at_start": 118.0, "rss_mb_during_outage_max": 150.0,
             "spooled_mb": 14.0, "drain_rate_points_s": 12_000.0, "baseline_rate_msg_s": 8_000.0}]}  # fmt: skip
    long_spool = json.loads(json.dumps(spool))
    long_spool["messages_per_phase"] = 100_000
    long_spool["runs"][0]["rss_mb_during_outage_max"] = 155.0
    comparison = {"repeat": 5, "decode_only_s": 0.5, "first_s": 0.7, "cold_s": 0.4, "warm_s": 0.015,
                  "measurements": {"first": {"repeats_s": [0.6, 0.7, 0.9]}}}  # fmt: skip
    run = {"started": "2026-12-02T08:00:00+00:00", "finished": "2026-12-02T08:45:00+00:00", "minutes": 45,
           "commit": "abc1234", "dirty": False, "command": "bench/run"}  # fmt: skip
    for name, value in [("ingest", ingest), ("spool-0030000", spool), ("spool-0100000", long_spool),
                        ("comparison", comparison), ("run", run)]:  # fmt: skip
        (tmp_path / f"{name}.json").write_text(json.dumps(value))
    return tmp_path


def test_every_section_is_filled_and_every_target_judged(tmp_path: Path) -> None:
    page = report.render(results_folder(tmp_path))
    assert "$" not in page.replace("$share", "")  # no placeholder left unfilled
    assert "| commit | `abc1234` |" in page
    targets = page.split("## What issue 8 asks")[1].split("## 1.")[0]
    assert targets.count("**met**") == 8 and "not met" not in targets
    assert (
        "| **our collector, 1 process** | 24,500 (24,000–25,000) | 1.69 (1.60–1.79) | 2.45 (2.40–2.50) | 0 | 150 |"
        in page
    )
    assert "| Node-RED, per-message node | 900 | 30,000 | – | – | 40,000 | – |" in page
    assert "| bare paho receiver (baseline) | 14,500 (14,000–15,000) | 1.00 | 1.45 (1.40–1.50) | 0 | 45 |" in page
    assert "1.03 × (150 → 155 MB)" in page
    assert "| 700 (600–900) | 1.40 × |" in page


def test_a_missed_target_says_so(tmp_path: Path) -> None:
    page = report.render(results_folder(tmp_path, node_red_rate=24_000.0))
    targets = page.split("## What issue 8 asks")[1].split("## 1.")[0]
    assert targets.count("**not met**") == 1


def test_without_ingest_results_it_refuses_clearly(tmp_path: Path) -> None:
    assert report.main(["--results", str(tmp_path), "--out", str(tmp_path / "page.md")]) == 2
    assert not (tmp_path / "page.md").exists()


def test_bench_run_parses_and_explains_itself_without_running_anything() -> None:
    script = Path(__file__).resolve().parents[2] / "bench" / "run"
    assert subprocess.run(["bash", "-n", str(script)], check=False).returncode == 0
    shown = subprocess.run([str(script), "--help"], capture_output=True, text=True, check=False)
    assert shown.returncode == 0 and "bench/run --quick" in shown.stdout and "docs/benchmarks.md" in shown.stdout
    refused = subprocess.run([str(script), "--fast"], capture_output=True, text=True, check=False)
    assert refused.returncode == 2 and "unknown option --fast" in refused.stderr


def test_the_report_options_default_to_the_docs_page() -> None:
    args = report.parse_args([])
    assert args.out == Path("docs/benchmarks.md") and args.results == Path(".pilot/bench/results")


def test_the_disk_full_run_is_shown_in_the_outage_section_and_judged(tmp_path: Path) -> None:
    folder = results_folder(tmp_path)
    run = {"published": 60_000, "points_in_influxdb": 60_000, "batches_refused_by_full_disk": 2.0,
           "rss_mb_at_start": 121.0, "rss_mb_during_outage_max": 165.0}  # fmt: skip
    (folder / "diskfull-0030000.json").write_text(json.dumps({"messages_per_phase": 30_000, "runs": [run]}))
    page = report.render(folder)
    assert "| 30,000 messages (1 run) | 2 | 60,000 of 60,000 | 121 MB | 165 MB (1.36 ×) |" in page
    targets = page.split("## What issue 8 asks")[1].split("## 1.")[0]
    assert targets.count("**met**") == 9 and "60,000 of 60,000, RSS ≤ 165 MB" in targets
    run["points_in_influxdb"] = 40_000
    (folder / "diskfull-0030000.json").write_text(json.dumps({"messages_per_phase": 30_000, "runs": [run]}))
    page = report.render(folder)
    assert "40,000 of 60,000 **(not exact)**" in page and "**not met**" in page


def test_bench_spool_takes_the_disk_full_option() -> None:
    assert spool.parse_args(["--disk-full", "--messages", "1000"]).disk_full
    assert not spool.parse_args([]).disk_full


AGENT = {
    "started": "2026-12-06T05:00:00+00:00", "commit": "def5678", "dirty": False, "loadavg_at_start": [0.8, 1.1, 1.2],
    "cores": 2, "devices": {"modbus": 25, "opcua": 25}, "sampling_s": 1.0, "measured_s": 60.0,
    "cpu_share_of_one_core": 0.087, "cpu_system_share": 0.41, "rss_mb": 78.0, "peak_rss_mb": 79.5, "threads": 101,
    "import_floor_rss_mb": 68.0, "agent_install_mb": 115.2,
}  # fmt: skip


def agent_section(page: str) -> str:
    return page.split(report.SOURCES_HEADING)[1].split("\n## ", maxsplit=1)[0]


def test_the_agent_run_is_shown_named_and_judged_against_issue_19s_targets(tmp_path: Path) -> None:
    folder = results_folder(tmp_path)
    assert "_not run_" in agent_section(report.render(folder))
    (folder / "sources.json").write_text(json.dumps(AGENT))
    section = agent_section(report.render(folder))
    assert "Measured 2026-12-06T05:00:00+00:00 at commit `def5678`: 25 Modbus TCP and 25 OPC UA devices" in section
    assert "| CPU share of one core (user + system) | 8.7% (41% of it in the kernel) | ≤ 10% | **met** |" in section
    assert "79.5 MB (the modules alone, before any device: 68.0 MB) | ≤ 80 MB | **met** |" in section
    assert "| 115.2 MB | < 150 MB | **met** |" in section
    (folder / "sources.json").write_text(json.dumps({**AGENT, "cpu_share_of_one_core": 0.137, "peak_rss_mb": 95.6}))
    section = agent_section(report.render(folder))
    assert section.count("**not met**") == 2 and section.count("**met**") == 1


def test_the_agent_section_alone_replaces_only_itself_and_says_it_is_another_run(tmp_path: Path) -> None:
    (tmp_path / "full").mkdir()
    page = report.render(results_folder(tmp_path / "full"))
    before = page[: page.index(report.SOURCES_HEADING)] + page[page.index("## How the collector got here") :]
    out = tmp_path / "benchmarks.md"
    out.write_text(before, encoding="utf-8")  # a page rendered before the agent had its section
    agent = tmp_path / "agent"
    agent.mkdir()
    assert report.main(["--only", "sources", "--results", str(agent), "--out", str(out)]) == 2  # no sources.json
    (agent / "sources.json").write_text(json.dumps(AGENT))
    assert report.main(["--only", "sources", "--results", str(agent), "--out", str(out)]) == 0
    once = out.read_text(encoding="utf-8")
    assert "not the run above" in agent_section(once) and "at commit `def5678`" in agent_section(once)
    assert once.index(report.SOURCES_HEADING) < once.index("## How the collector got here")
    assert report.main(["--only", "sources", "--results", str(agent), "--out", str(out)]) == 0
    assert out.read_text(encoding="utf-8") == once  # rendered again in place, not added twice
    assert once.split(report.SOURCES_HEADING)[0] == out.read_text(encoding="utf-8").split(report.SOURCES_HEADING)[0]
    assert "| commit | `abc1234` |" in once  # the full run's sections are kept as they were


def console_result() -> dict[str, Any]:
    def entry(first: float, warm: list[float], ratio: float) -> dict[str, Any]:
        return {"first_s": first, "warm_s": warm, "median_s": sorted(warm)[len(warm) // 2], "ratio_to_baseline": ratio}

    return {
        "started": "2026-12-06T15:34:51+09:00", "commit": "abc1234", "dirty": False, "devices": 7, "days": 28,
        "today_messages": 6578, "today_hours": 15.0, "repeat": 3, "cpus": 2, "loadavg_at_end": [1.0, 1.0, 1.0],
        "comparison_api": entry(0.1, [0.02, 0.025, 0.03], 1.0),
        "demonstration_page": entry(4.5, [0.09, 0.1, 0.35], 4.0),
        "live_page": entry(0.8, [0.12, 0.11, 0.13], 4.8),
        "live_api": entry(0.1, [0.05, 0.06, 0.07], 2.4),
    }  # fmt: skip


def test_the_console_pages_are_judged_against_issue_22s_targets(tmp_path: Path) -> None:
    folder = results_folder(tmp_path)
    (folder / "console.json").write_text(json.dumps(console_result()))
    section = report.render(folder).split(report.CONSOLE_HEADING)[1].split("\n## ", maxsplit=1)[0]
    assert "the demo's 7 devices over 28 days, 6,578 messages of today so far (15 whole hours)" in section
    assert (
        "| the demonstration page, `/demonstrations/{ref}` | 4,500 | 100.0 (90.0–350.0) | 4.00 × | ≤ 300 ms |"
        in section
    )
    assert "≤ 300 ms | **met** |" in section and "≤ 100 ms | **not met** |" in section


def test_the_console_section_alone_replaces_only_itself(tmp_path: Path) -> None:
    (tmp_path / "run").mkdir()
    page = report.render(results_folder(tmp_path / "run"))
    out = tmp_path / "benchmarks.md"
    out.write_text(page, encoding="utf-8")
    alone = tmp_path / "console"
    alone.mkdir()
    assert report.main(["--only", "console", "--results", str(alone), "--out", str(out)]) == 2  # no console.json
    (alone / "console.json").write_text(json.dumps(console_result()))
    assert report.main(["--only", "console", "--results", str(alone), "--out", str(out)]) == 0
    spliced = out.read_text(encoding="utf-8")
    assert "--only console" in spliced and "6,578 messages" in spliced
    before = page.split(report.CONSOLE_HEADING)
    after = spliced.split(report.CONSOLE_HEADING)
    assert after[0] == before[0] and after[1].split("\n## ", 1)[1] == before[1].split("\n## ", 1)[1]


SPARKPLUG = {
    "started": "2026-12-06T06:50:00+00:00", "commit": "fed4321", "dirty": False, "loadavg_at_start": [3.2],
    "cores": 2, "points": 20_000, "metrics_per_point": 20, "repeat": 3,
    "json": {"points_per_s_median": 10_000.0, "points_per_s_min": 9_000.0, "points_per_s_max": 11_000.0,
             "messages": 400},
    "json-single": {"points_per_s_median": 2_000.0, "points_per_s_min": 1_900.0, "points_per_s_max": 2_100.0,
                    "messages": 20_000, "to_json": {"median": 0.2, "min": 0.18, "max": 0.22}},
    "sparkplug": {"points_per_s_median": 1_500.0, "points_per_s_min": 1_400.0, "points_per_s_max": 1_600.0,
                  "messages": 20_001, "to_json": {"median": 0.15, "min": 0.13, "max": 0.16}},
}  # fmt: skip


def test_the_sparkplug_section_shows_its_run_in_points_per_second_against_batched_json(tmp_path: Path) -> None:
    (tmp_path / "full").mkdir()
    page = report.render(results_folder(tmp_path / "full"))
    assert "_not run_" in page.split(report.SPARKPLUG_HEADING)[1].split("\n## ", maxsplit=1)[0]
    out = tmp_path / "benchmarks.md"
    out.write_text(page, encoding="utf-8")
    alone = tmp_path / "sparkplug"
    alone.mkdir()
    (alone / "sparkplug.json").write_text(json.dumps(SPARKPLUG))
    assert report.main(["--only", "sparkplug", "--results", str(alone), "--out", str(out)]) == 0
    section = out.read_text(encoding="utf-8").split(report.SPARKPLUG_HEADING)[1].split("\n## ", maxsplit=1)[0]
    assert "not the run above" in section and "at commit `fed4321`: 20,000 points of 20 metrics" in section
    assert "| **Sparkplug B DDATA, 1 point a message** | 20,001 | 1,500 (1,400–1,600) | 0.15 (0.13–0.16) |" in section
    assert "| pilot/v1 JSON, 50 records a message (baseline) | 400 | 10,000 (9,000–11,000) | 1 |" in section
