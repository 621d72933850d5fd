"""`pilot`: the command line for pilot-telemetry."""

from __future__ import annotations

import json
import logging
import signal
import sys
from pathlib import Path
from typing import Annotated

import typer
from rich.console import Console
from rich.table import Table

from adapters.catalog import BUNDLED_PROFILES, load_profiles, load_registry, profile_files
from pilot_core import contract
from pilot_core.profiles import ProfileErrors

app = typer.Typer(no_args_is_help=True, add_completion=False, help="Telemetry and before/after KPIs for physical-AI pilots.")
contract_app = typer.Typer(no_args_is_help=True, help="The device contract (topics and payloads).")
profiles_app = typer.Typer(no_args_is_help=True, help="Device profiles.")
app.add_typer(contract_app, name="contract")
app.add_typer(profiles_app, name="profiles")

console = Console()
errors = Console(stderr=True)

ProfilesDir = Annotated[Path, typer.Option("--dir", help="Folder of device profile YAML files")]
ConfigFile = Annotated[Path | None, typer.Option("--config", "-c", help="YAML configuration file (default ./pilot.yaml)")]


def _setup_logging(level: str) -> None:
    logging.basicConfig(
        level=getattr(logging, level.upper(), logging.INFO),
        format="%(asctime)s %(levelname)-7s %(name)s: %(message)s",
        stream=sys.stderr,
    )


def _fail(message: str) -> typer.Exit:
    errors.print(f"[red]error:[/red] {message}", highlight=False)
    return typer.Exit(1)


@contract_app.command("schema")
def contract_schema(
    output: Annotated[Path | None, typer.Option("--output", "-o", help="Write to this file instead of stdout")] = None,
) -> None:
    """Print the device contract v1 as JSON Schema."""
    text = json.dumps(contract.json_schema(), indent=2, ensure_ascii=False) + "\n"
    if output:
        output.write_text(text, encoding="utf-8")
        errors.print(f"wrote {output}")
    else:
        sys.stdout.write(text)


@profiles_app.command("list")
def profiles_list(directory: ProfilesDir = BUNDLED_PROFILES) -> None:
    """List the device profiles in a folder."""
    try:
        catalog = load_profiles(directory)
    except ProfileErrors as exc:
        raise _fail(f"invalid profiles:\n{exc}") from None
    table = Table(title=f"Device profiles in {directory}")
    for column in ("id", "version", "name", "이름", "metrics", "states", "production"):
        table.add_column(column)
    for profile in catalog:
        table.add_row(
            profile.id,
            profile.version,
            profile.name,
            profile.name_ko,
            str(len(profile.metrics)),
            str(len(profile.states)),
            profile.production.mode.value,
        )
    console.print(table)


@profiles_app.command("validate")
def profiles_validate(
    paths: Annotated[list[Path] | None, typer.Argument(help="Profile files or folders (default: the bundled profiles)")] = None,
    devices: Annotated[Path | None, typer.Option(help="Also check a device registry against the profiles")] = None,
) -> None:
    """Check profiles (and optionally a device registry); errors name file and line."""
    folders = paths or [BUNDLED_PROFILES]
    problems: list[str] = []
    checked = 0
    catalogs = []
    for path in folders:
        try:
            if path.is_dir():
                catalogs.append(load_profiles(path))
                checked += len(profile_files(path))
            else:
                from pilot_core.profiles import ProfileCatalog, parse_profile

                catalogs.append(ProfileCatalog([parse_profile(path.read_text(encoding="utf-8"), str(path))]))
                checked += 1
        except ProfileErrors as exc:
            problems.extend(str(e) for e in exc.errors)
        except OSError as exc:
            problems.append(f"{path}: {exc.strerror}")
    if devices and not problems:
        from pilot_core.profiles import ProfileCatalog

        try:
            load_registry(devices, ProfileCatalog(p for c in catalogs for p in c))
        except (ProfileErrors, ValueError) as exc:
            problems.append(str(exc))
    if problems:
        for problem in problems:
            errors.print(problem, highlight=False, markup=False)
        raise typer.Exit(1)
    console.print(f"[green]ok[/green]: {checked} profile file(s) valid" + (f", {devices} valid" if devices else ""))


@app.command()
def collect(
    config: ConfigFile = None,
    log_level: Annotated[str, typer.Option(help="debug, info, warning or error")] = "info",
) -> None:
    """Run the collector: MQTT → validation → InfluxDB, until SIGINT or SIGTERM."""
    from collector.service import Collector
    from collector.settings import CollectorSettings

    _setup_logging(log_level)
    try:
        settings = CollectorSettings.load(config)
        collector = Collector(settings)
    except (ProfileErrors, ValueError, FileNotFoundError) as exc:
        raise _fail(str(exc)) from None
    try:
        collector.start()
    except Exception as exc:  # a clear one-line error for configuration and reachability problems
        raise _fail(str(exc)) from None
    for sig in (signal.SIGINT, signal.SIGTERM):
        signal.signal(sig, lambda *_: collector.stop())
    collector.run_forever()


def main() -> None:
    app()
