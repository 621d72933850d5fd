"""The light install: an edge box runs the agent with the base dependencies and the `agent` extra only."""

from __future__ import annotations

import os
import subprocess
import sys
import tomllib
from pathlib import Path

from adapters import local_services

ROOT = Path(__file__).resolve().parents[2]
# What an edge box must not need: the server's statistics, reports, web API and database drivers.
SERVER_ONLY = (
    "numpy",
    "scipy",
    "statsmodels",
    "matplotlib",
    "weasyprint",
    "sqlalchemy",
    "psycopg",
    "alembic",
    "fastapi",
    "uvicorn",
    "jinja2",
    "msgspec",
    "orjson",
    "grafana_client",
)

BLOCKED_RUN = f"""
import importlib.abc, sys
class ServerOnly(importlib.abc.MetaPathFinder):
    def find_spec(self, name, path=None, target=None):
        if name.split(".")[0] in {SERVER_ONLY!r}:
            raise ImportError(f"{{name}} is not in the agent's install")
        return None
sys.meta_path.insert(0, ServerOnly())
from pilot.agent_cli import main
main()
"""


def project() -> dict[str, object]:
    return tomllib.loads((ROOT / "pyproject.toml").read_text(encoding="utf-8"))["project"]


def names(requirements: object) -> set[str]:
    assert isinstance(requirements, list)
    return {r.split(">")[0].split("<")[0].split("[")[0].split("=")[0].strip().replace("-", "_") for r in requirements}


def test_the_base_set_and_the_agent_extra_hold_nothing_only_the_server_needs() -> None:
    extras = project()["optional-dependencies"]
    assert isinstance(extras, dict)
    light = names(project()["dependencies"]) | names(extras["agent"])
    assert not light & set(SERVER_ONLY)
    assert {"asyncua", "pymodbus", "python_snap7"} <= light
    # What scripts/setup.sh and the README install still installs everything.
    assert "pilot-telemetry[server,agent]" in extras["dev"] and extras["all"] == ["pilot-telemetry[server,agent]"]


def test_pilot_agent_runs_without_any_of_the_servers_packages(tmp_path: Path) -> None:
    example = (ROOT / "examples" / "agent-modbus.yaml").read_text(encoding="utf-8")
    port = local_services.free_port()  # nothing listens there
    (tmp_path / "agent.yaml").write_text(example.replace("port: 5020", f"port: {port}"), encoding="utf-8")
    result = subprocess.run(
        [sys.executable, "-c", BLOCKED_RUN, str(tmp_path / "agent.yaml"), "--check"],
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
        cwd=tmp_path,
        env={**os.environ, "PYTHONPATH": str(ROOT)},
    )
    assert "Traceback" not in result.stderr, result.stderr
    assert result.returncode == 1
    assert f"unreachable: modbus://127.0.0.1:{port}/1 does not answer" in result.stdout
