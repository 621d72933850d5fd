"""`pilot-agent`: the edge agent reading machines, alone, for an edge box with the light install.

    pip install 'pilot-telemetry[agent]'
    pilot-agent agent.yaml --check

It imports nothing of the server (no SciPy, matplotlib, WeasyPrint, database drivers), so it runs where
only the `[agent]` dependencies are installed; `pilot agent --sources` is the same inside the full `pilot`.
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from pilot.sources_cli import run_sources

agent_app = typer.Typer(add_completion=False, no_args_is_help=True)


@agent_app.command()
def agent(
    sources: Annotated[Path, typer.Argument(help="Source map (YAML): the machines to read over OPC UA or Modbus TCP")],
    config: Annotated[
        Path | None, typer.Option("--config", "-c", help="YAML configuration file with the MQTT settings")
    ] = None,
    check: Annotated[bool, typer.Option("--check", help="Check the map, read each item once, and exit")] = False,
    metrics_port: Annotated[
        int, typer.Option(help="Serve Prometheus metrics of the sources on 127.0.0.1:PORT (0: off)")
    ] = 0,
) -> None:
    """Read the machines of a source map and send their telemetry, states and production, never losing any."""
    run_sources(sources, config, check=check, metrics_port=metrics_port)


def main() -> None:
    agent_app()
