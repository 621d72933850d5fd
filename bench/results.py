"""Where a benchmark's figures go: a JSON file, for docs/benchmarks.md and later comparison."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any


def write_result(path: Path, result: Any) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(result, indent=2, default=str) + "\n", encoding="utf-8")
