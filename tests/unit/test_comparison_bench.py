"""bench.comparison's JSON: what a docs generator needs to print "median (min–max)" and ratios to the baseline."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from bench import comparison


def test_each_measurement_has_its_spread_and_its_ratio_to_the_baseline(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    out = tmp_path / "latency.json"
    monkeypatch.setattr("sys.argv", ["comparison", "--devices", "2", "--days", "2", "--repeat", "3", "--out", str(out)])
    assert comparison.main() == 0
    result = json.loads(out.read_text())
    assert result["baseline"] == "decode_only"
    assert set(result["measurements"]) == {"decode_only", "first", "cold", "warm", "charts"}
    for name, measured in result["measurements"].items():
        assert len(measured["repeats_s"]) == len(measured["full_collections"]) == 3
        assert measured["min_s"] <= measured["median_s"] <= measured["max_s"]
        assert measured["median_s"] == result[f"{name}_s"]  # the keys earlier runs wrote stay
        baseline = result["measurements"]["decode_only"]["median_s"]
        assert measured["over_baseline"] == pytest.approx(measured["median_s"] / baseline)
    assert result["measurements"]["decode_only"]["over_baseline"] == 1.0
