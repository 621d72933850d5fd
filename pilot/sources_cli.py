"""`pilot agent --sources agent.yaml`: one agent process for the machines of a source map."""

from __future__ import annotations

import asyncio
import logging
import signal
from pathlib import Path
from typing import TYPE_CHECKING

from rich.markup import escape

from pilot.output import console, errors, fail
from pilot_core.profiles import ProfileErrors
from pilot_core.source_map import SourceMap, parse_source_map

if TYPE_CHECKING:
    from edge_agent.sources import SourceAgents, SourceCheck


def run_sources(path: Path, config: Path | None, *, check: bool, metrics_port: int) -> None:
    from adapters.catalog import load_profiles
    from edge_agent.settings import AgentSettings
    from edge_agent.sources import SourceAgents, check_sources

    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    try:
        settings = AgentSettings.load(config)
        catalog = load_profiles(settings.profiles_dir)
        source_map = parse_source_map(path.read_text(encoding="utf-8"), str(path), catalog)
    except FileNotFoundError:
        raise fail(f"{path}: no such file") from None
    except (ProfileErrors, ValueError) as exc:
        raise fail(f"invalid source map:\n{exc}") from None
    if check:
        _print_check(source_map, asyncio.run(check_sources(source_map)))
        return
    outbox_root = path.parent / source_map.outbox
    agents = SourceAgents(source_map, catalog, settings.mqtt, outbox_root)
    if metrics_port:
        from prometheus_client import start_http_server

        start_http_server(metrics_port, addr="127.0.0.1", registry=agents.metrics.registry)
    agents.start()
    errors.print(f"agent for {len(source_map.devices)} devices of {path} → {settings.mqtt.address}")
    asyncio.run(_run_until_signalled(agents))
    left = agents.stop()
    errors.print(f"stopped; {left:,} messages still in the outboxes under {outbox_root} for the next start")


async def _run_until_signalled(agents: SourceAgents) -> None:
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop.set)
    await agents.run(stop)


def _print_check(source_map: SourceMap, results: list[SourceCheck]) -> None:
    unreachable = 0
    failing = 0
    for name, values, faults, why in results:
        if why is not None:
            unreachable += 1
            console.print(f"{escape(name)}: [red]unreachable[/red]: {escape(why)}", highlight=False, soft_wrap=True)
            continue
        console.print(f"{escape(name)}: reachable", highlight=False, soft_wrap=True)
        for value in values:
            console.print(f"  {escape(value.item)} = {value.value!r}", highlight=False, soft_wrap=True)
        for fault in faults:
            failing += 1
            line = f"  {escape(fault.item)}: [red]{fault.reason}[/red]: {escape(fault.detail)}"
            console.print(line, highlight=False, soft_wrap=True)
    devices = len(source_map.devices)
    if unreachable or failing:
        raise fail(f"{unreachable} of {devices} sources unreachable, {failing} items failing")
    console.print(f"{devices} sources reachable, every item read")
