"""``--profile``: one extra collector drain under py-spy, and its raw output summarised per function."""

from __future__ import annotations

import os
import shutil
from pathlib import Path
from typing import Any

from bench.ingest.settings import REPO


def find_py_spy(explicit: str | None) -> str | None:
    for candidate in (explicit, shutil.which("py-spy"), str(REPO / ".pilot" / "bench" / "tools" / "bin" / "py-spy")):
        if candidate and os.path.isfile(candidate) and os.access(candidate, os.X_OK):
            return candidate
    return None


def summarize_py_spy(path: Path, top: int = 15) -> dict[str, Any]:
    """Self and inclusive sample shares per function from py-spy's raw (collapsed) output."""
    self_samples: dict[str, int] = {}
    inclusive: dict[str, int] = {}
    per_thread: dict[str, int] = {}
    total = 0
    for line in path.read_text(errors="replace").splitlines():
        stack, _, number = line.rpartition(" ")
        if not stack or not number.isdigit():
            continue
        samples = int(number)
        total += samples
        frames = stack.split(";")
        per_thread[frames[0]] = per_thread.get(frames[0], 0) + samples
        self_samples[frames[-1]] = self_samples.get(frames[-1], 0) + samples
        for frame in set(frames[1:]):
            inclusive[frame] = inclusive.get(frame, 0) + samples

    def share(table: dict[str, int]) -> list[tuple[str, float]]:
        return [(k, round(100 * v / total, 1)) for k, v in sorted(table.items(), key=lambda kv: -kv[1])[:top]]

    return {"samples": total, "threads_pct": share(per_thread), "self_pct": share(self_samples),
            "inclusive_pct": share(inclusive)}  # fmt: skip


# --- the run ------------------------------------------------------------------------
