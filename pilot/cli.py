"""`pilot`: the command line for pilot-telemetry."""

from __future__ import annotations

import json
import logging
import signal
import sys
import threading
import time
from collections.abc import Iterable
from pathlib import Path
from typing import TYPE_CHECKING, Annotated

import typer
from rich.console import Console
from rich.table import Table

from adapters.catalog import BUNDLED_PROFILES, load_profiles, load_registry, profile_files
from pilot.access_cli import keys_app, orgs_app
from pilot.devices_cli import devices_app
from pilot.evidence_cli import evidence_app, verify
from pilot.grafana_cli import grafana_app
from pilot.output import console, errors, fail, fit, table
from pilot.report_cli import report
from pilot.stopping import stopped_by_signals
from pilot_core import contract
from pilot_core.profiles import ProfileCatalog, ProfileErrors
from simulators.scenario import Scenario, load_scenario

if TYPE_CHECKING:
    from kpi_engine.evaluation import DemonstrationResult
    from pilot.demo import DemoResult

app = typer.Typer(
    no_args_is_help=True, add_completion=False, help="Telemetry and before/after KPIs for physical-AI pilots."
)
contract_app = typer.Typer(no_args_is_help=True, help="The device contract (topics and payloads).")
profiles_app = typer.Typer(no_args_is_help=True, help="Device profiles.")
app.add_typer(contract_app, name="contract")
app.add_typer(profiles_app, name="profiles")
app.add_typer(orgs_app, name="orgs")
app.add_typer(keys_app, name="keys")
app.add_typer(devices_app, name="devices")
app.add_typer(grafana_app, name="grafana")
app.command()(report)
app.add_typer(evidence_app, name="evidence")
app.command()(verify)

ProfilesDir = Annotated[Path, typer.Option("--dir", help="Folder of device profile YAML files")]
ConfigFile = Annotated[
    Path | None, typer.Option("--config", "-c", help="YAML configuration file (default ./pilot.yaml)")
]


def _setup_logging(level: str) -> None:
    logging.basicConfig(
        level=getattr(logging, level.upper(), logging.INFO),
        format="%(asctime)s %(levelname)-7s %(name)s: %(message)s",
        stream=sys.stderr,
    )


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
        raise fail(f"invalid profiles:\n{exc}") from None
    columns = ("id", "version", "name · 이름", "metrics", "states", "production")
    listed = table(f"Device profiles in {directory}", columns, whole=("id", "version", "production"))
    listed.leading = 1  # a blank line between profiles: their names take two lines or more
    for profile in catalog:
        listed.add_row(
            profile.id,
            profile.version,
            f"{profile.name}\n{profile.name_ko}",
            str(len(profile.metrics)),
            str(len(profile.states)),
            profile.production.mode.value,
        )
    console.print(listed)


@profiles_app.command("validate")
def profiles_validate(
    paths: Annotated[
        list[Path] | None, typer.Argument(help="Profile files or folders (default: the bundled profiles)")
    ] = None,
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
        raise fail(str(exc)) from None
    try:
        collector.start()
    except Exception as exc:  # a clear one-line error for configuration and reachability problems
        raise fail(str(exc)) from None
    for sig in (signal.SIGINT, signal.SIGTERM):
        signal.signal(sig, lambda *_: collector.stop())
    collector.run_forever()


@app.command()
def agent(
    device: Annotated[str | None, typer.Argument(help="The device's id, as registered (not with --sources)")] = None,
    site: Annotated[str | None, typer.Option(help="Site id")] = None,
    line: Annotated[str | None, typer.Option(help="Line id")] = None,
    profile: Annotated[str | None, typer.Option(help="Device profile id (see `pilot profiles list`)")] = None,
    config: ConfigFile = None,
    sources: Annotated[
        Path | None,
        typer.Option(help="Source map (YAML): read these machines over OPC UA or Modbus TCP instead of simulating"),
    ] = None,
    check: Annotated[
        bool, typer.Option("--check", help="With --sources: check the map, read each item once, and exit")
    ] = False,
    outbox: Annotated[Path, typer.Option(help="Folder of the agent's on-disk outbox")] = Path("outbox"),
    quota_mb: Annotated[int, typer.Option(help="Disk the outbox may use")] = 256,
    interval_s: Annotated[
        float | None, typer.Option(help="Seconds between samples (default: the profile's fastest metric)")
    ] = None,
    count: Annotated[int, typer.Option(help="Samples to send, then stop (0: until Ctrl-C)")] = 0,
    seed: Annotated[int, typer.Option(help="Seed of the simulated values")] = 1,
    metrics_port: Annotated[
        int, typer.Option(help="Serve Prometheus metrics of the outbox on 127.0.0.1:PORT (0: off)")
    ] = 0,
) -> None:
    """Run an edge agent for one device, publishing simulated telemetry from its profile; or, with
    --sources, one agent process for every machine of a source map (OPC UA, Modbus TCP).

    It keeps every sample on disk until the broker has it, so a broker outage loses nothing. Your own
    code uses the same agent through the Python SDK: `from edge_agent import Agent`.
    """
    if sources is not None:
        from pilot.sources_cli import run_sources

        if device or site or line or profile:
            raise fail("--sources names its devices itself: give no DEVICE, --site, --line or --profile")
        run_sources(sources, config, check=check, metrics_port=metrics_port)
        return
    if check:
        raise fail("--check checks a source map: give it with --sources")
    if not (device and site and line and profile):
        raise fail("give DEVICE, --site, --line and --profile (or a source map with --sources)")
    import random

    from adapters.catalog import load_profiles
    from collector.settings import CollectorSettings
    from edge_agent import Agent
    from simulators.values import random_metrics

    _setup_logging("info")
    try:
        settings = CollectorSettings.load(config)
        catalog = load_profiles(settings.profiles_dir)
    except (ProfileErrors, ValueError, FileNotFoundError) as exc:
        raise fail(str(exc)) from None
    device_profile = catalog.get(profile)
    if device_profile is None:
        raise fail(f"no device profile {profile!r}; see `pilot profiles list`")
    interval = interval_s or min((m.interval_s for m in device_profile.metrics), default=1.0)
    try:
        edge = Agent(settings.mqtt, site, line, device, device_profile, outbox, quota_mb=quota_mb)
    except (ValueError, OSError) as exc:  # an unusable TLS file, an outbox that cannot be opened
        raise fail(str(exc)) from None
    with stopped_by_signals() as stop:
        if metrics_port:
            edge.serve_metrics("127.0.0.1", metrics_port)
        edge.start()
        rng = random.Random(seed)
        sent = 0
        errors.print(f"agent for {device} ({profile}) → {settings.mqtt.address}, a sample every {interval:g} s")
        while not stop.is_set() and (not count or sent < count):
            edge.telemetry(random_metrics(device_profile, rng))
            sent += 1
            stop.wait(interval)
        left = edge.stop()
    errors.print(f"recorded {sent:,} samples; {left:,} still in the outbox {outbox} for the next start")


ScenarioArg = Annotated[
    Path, typer.Argument(help="Scenario YAML file, or the name of a bundled scenario (e.g. pangyo_cobot_cell)")
]


def _scenario(path: Path) -> tuple[Scenario, ProfileCatalog]:
    try:
        catalog = load_profiles()
        return load_scenario(path, catalog), catalog
    except ProfileErrors as exc:
        raise fail(f"invalid scenario:\n{exc}") from None


@app.command()
def simulate(
    scenario_file: ScenarioArg,
    config: ConfigFile = None,
    period: Annotated[
        list[str] | None, typer.Option("--period", "-p", help="Period to backfill (repeatable; default all)")
    ] = None,
    realtime: Annotated[
        bool, typer.Option(help="Publish from now on at wall-clock pace instead of backfilling")
    ] = False,
    behaviour: Annotated[str, typer.Option(help="Real time only: baseline or pilot")] = "baseline",
    duration: Annotated[float, typer.Option(help="Real time only: minutes to run")] = 60.0,
    speed: Annotated[float, typer.Option(help="Real time only: how many times faster than the wall clock")] = 1.0,
    telemetry_interval: Annotated[
        float | None, typer.Option(help="Seconds between telemetry samples (default: the scenario's)")
    ] = None,
    batch: Annotated[int, typer.Option(help="Records per message when backfilling (1 sends single records)")] = 100,
    devices_out: Annotated[
        Path | None, typer.Option(help="Write the scenario's device registry (devices.yaml) here")
    ] = None,
    truth: Annotated[
        Path | None, typer.Option(help="Write the ground truth of the simulated periods (JSON) here")
    ] = None,
    dry_run: Annotated[bool, typer.Option(help="Count the messages without connecting to a broker")] = False,
) -> None:
    """Publish a scenario's devices over MQTT: backfill its periods, or run in real time."""
    from collector.settings import CollectorSettings
    from simulators.line_model import LineModel, SimMessage, render, render_runs, simulate_periods
    from simulators.publish import PublishError, publish
    from simulators.truth import scenario_truth

    scene, catalog = _scenario(scenario_file)
    if devices_out:
        devices_out.write_text(scene.registry_yaml(), encoding="utf-8")
        errors.print(f"wrote {devices_out}")
    messages: Iterable[SimMessage]
    if realtime:
        if behaviour not in ("baseline", "pilot"):
            raise fail("--behaviour must be baseline or pilot")
        now_ms = int(time.time() * 1000)
        run = LineModel(scene, catalog).simulate(behaviour, now_ms, now_ms + int(duration * 60_000 * speed), "realtime")
        messages = render(run, catalog, batch_records=1, telemetry_interval_s=telemetry_interval or 1.0)
        runs = [run]
    else:
        try:
            runs = simulate_periods(scene, catalog, period)
        except KeyError as exc:
            raise fail(str(exc.args[0])) from None
        messages = render_runs(runs, catalog, batch_records=batch)
    if truth:
        truth.write_text(json.dumps(scenario_truth(runs, catalog), indent=2, ensure_ascii=False), encoding="utf-8")
        errors.print(f"wrote {truth}")
    if dry_run:
        count = records = 0
        for message in messages:
            count += 1
            records += message.records
        console.print(f"{count:,} messages, {records:,} records")
        return
    try:
        mqtt = CollectorSettings.load(config).mqtt
    except (ValueError, FileNotFoundError) as exc:
        raise fail(str(exc)) from None
    stop = threading.Event()
    for sig in (signal.SIGINT, signal.SIGTERM):
        signal.signal(sig, lambda *_: stop.set())
    mode = f"real time ×{speed:g}, {duration:g} min" if realtime else "backfill"
    errors.print(f"publishing {scene.name} to {mqtt.address} ({mode})")
    try:
        report = publish(
            mqtt,
            messages,
            client_id=f"pilot-simulator-{scene.id}",
            realtime=realtime,
            speed=speed,
            stop=stop,
            progress=lambda r: errors.print(f"  {r.messages:,} messages, {r.records:,} records, {r.rate:,.0f} msg/s"),
            progress_every=100 if realtime else 1000,
        )
    except (PublishError, ConnectionError) as exc:
        raise fail(str(exc)) from None
    console.print(f"published {report.messages:,} messages ({report.records:,} records) in {report.seconds:.1f} s")


@app.command()
def demo(
    scenario_file: ScenarioArg = Path("pangyo_cobot_cell"),
    state_dir: Annotated[Path, typer.Option(help="Folder for the private broker's and database's files")] = Path(
        ".pilot/demo"
    ),
    period: Annotated[
        list[str] | None, typer.Option("--period", "-p", help="Period to backfill (repeatable; default all)")
    ] = None,
    serve: Annotated[
        bool, typer.Option(help="Leave the services running and serve the API on them until Ctrl-C")
    ] = True,
    api_port: Annotated[int, typer.Option(help="Port for the API (0: any free port)")] = 8000,
    json_output: Annotated[
        Path | None, typer.Option("--json", help="Also write the landed-per-device table as JSON")
    ] = None,
) -> None:
    """Run the whole pipeline on private services: simulate, collect, store, compare; then serve the API."""
    from adapters.local_services import ServiceError
    from pilot.demo import private_services, result_json, run_demo, verify_command

    scene, catalog = _scenario(scenario_file)
    console.print(f"[bold]{scene.name}[/bold] · {scene.name_ko} · site {scene.site}, line {scene.line}")
    try:
        with private_services(state_dir) as (broker, database):
            console.print(
                f"private Mosquitto on 127.0.0.1:{broker.port}, InfluxDB at {database.url} (files in {state_dir})"
            )
            result = run_demo(scene, catalog, broker, database, state_dir, periods=period, say=errors.print)
            columns = ("device", "profile", "channel", "published", "landed", "")
            landed = table(
                f"What landed in InfluxDB (database {database.url}/pilot)",
                columns,
                whole=columns,
                right=("published", "landed"),
            )
            for row in result.rows:
                mark = "[green]✓[/green]" if row.complete else f"[red]✗ {row.landed - row.published:+,}[/red]"
                landed.add_row(
                    row.device, row.profile, row.channel.value, f"{row.published:,}", f"{row.landed:,}", mark
                )
            console.print(landed)
            if result.evaluation is not None:
                comparison = _before_after_table(result.evaluation.result)
                if console.is_terminal:  # as wide as the terminal: a narrow one gets the table stacked, not cut
                    console.print(fit(comparison, console.width, stack=("지표",)))
                else:  # piped output gets 80 columns by default: too few for this table
                    Console(width=170).print(comparison)
                for line in _design_and_mix_lines(result.evaluation.result):
                    console.print(line, soft_wrap=True)
                for warning in result.evaluation.result.warnings:
                    errors.print(f"[yellow]warning:[/yellow] {warning}")
            console.print(f"ground truth of the simulated periods: {result.truth_file}")
            if result.evidence_file and result.public_key_file:
                console.print(
                    f"signed evidence bundle: {result.evidence_file}; check it anywhere, offline:", soft_wrap=True
                )
                command = verify_command(result.evidence_file, result.public_key_file)
                console.print(f"  {command}", soft_wrap=True, markup=False, highlight=False)
            if json_output:
                json_output.write_text(json.dumps(result_json(result), indent=2, ensure_ascii=False), encoding="utf-8")
            if not result.complete:
                raise fail(f"some records did not land; see the table above and {state_dir / 'collector.log'}")
            console.print(f"[green]all {result.publish.records:,} records landed[/green]")
            if serve:
                _serve_demo_api(result, broker.port, database.url, api_port)
    except ServiceError as exc:
        raise fail(str(exc)) from None


def _port_is_free(port: int) -> bool:
    import socket

    with socket.socket() as probe:
        try:
            probe.bind(("127.0.0.1", port))
        except OSError:
            return False
    return True


def _serve_demo_api(result: DemoResult, mqtt_port: int, influx_url: str, port: int) -> None:
    """The API over the demo's services and database, until Ctrl-C."""
    import uvicorn

    from adapters.local_services import free_port
    from api.log_redaction import uvicorn_log_config
    from api.main import create_app
    from pilot.demo import SIGN_IN_LINK_VALID, admin_key, api_settings

    settings = api_settings(result, mqtt_port, influx_url)
    if port and not _port_is_free(port):
        console.print(f"port {port} is taken; serving on another")
        port = 0
    port = port or free_port()
    application = create_app(settings)  # migrates the database the key goes into
    access = admin_key(result)
    key_file = access.key_file
    base = f"http://127.0.0.1:{port}"
    console.print(
        f"\n[bold]API serving at {base}[/bold]  (OpenAPI docs at {base}/docs; Ctrl-C stops everything)", soft_wrap=True
    )
    minutes = round(SIGN_IN_LINK_VALID.total_seconds() / 60)
    landing = f"&next=/demonstrations/{result.evaluation.slug}" if result.evaluation is not None else ""
    console.print(
        f"open the web console, signed in (a one-time link, for {minutes} minutes):"
        f" [bold]{base}/sign-in/link?token={access.sign_in_token}{landing}[/bold]",
        soft_wrap=True,
        highlight=False,
    )
    console.print(f"an admin API key is in {key_file}; send it as a bearer token:", soft_wrap=True)
    auth = f'-H "Authorization: Bearer $(cat {key_file})"'
    if result.evaluation is not None:
        demonstration = f"{base}/v1/demonstrations/{result.evaluation.slug}"
        console.print(f"  curl {auth} {demonstration}/comparison", soft_wrap=True)
        console.print(f"  curl {auth} '{demonstration}/kpis?format=csv'", soft_wrap=True)
    uvicorn.run(application, host="127.0.0.1", port=port, log_level="warning", log_config=uvicorn_log_config())


def _before_after_table(evaluation: DemonstrationResult) -> Table:
    from pilot_core.demonstration import Phase
    from pilot_core.kpi import KPIS

    level = next(iter(evaluation.comparisons.values())).level
    table = Table(title=f"Before and after (plan {evaluation.plan_hash[:19]}…)", title_justify="left")
    for column in ("KPI", "지표", "baseline", "pilot", "change", f"{level:.0%} interval", "target", "verdict"):
        table.add_column(column, justify="left" if column in ("KPI", "지표", "verdict") else "right", no_wrap=True)
    targets = {t.comparison.kpi: t for t in evaluation.targets}
    for name, comparison in evaluation.comparisons.items():
        definition = KPIS[name]
        interval = comparison.relative_interval
        target = targets.get(name)
        verdict = ""
        if target is not None:
            colour = {"met": "green", "not met": "red"}.get(target.check.verdict.value, "yellow")
            verdict = f"[{colour}]{target.check.verdict.value}[/{colour}]"
            if target.method != "before_after":  # judged by the row of its method, below
                verdict += f" (by {target.method.value.replace('_', ' ')})"
        table.add_row(
            definition.title,
            definition.title_ko,
            _kpi_value(comparison.baseline.value, definition.unit),
            _kpi_value(comparison.pilot.value, definition.unit),
            "" if comparison.relative_change is None else f"{comparison.relative_change:+.1%}",
            "" if interval is None else f"{interval[0]:+.1%} to {interval[1]:+.1%}",
            target.label.split(" ", 1)[1] if target else "",
            verdict,
        )
    # The adjustment methods (issue 21): the change each judged its target on.
    for name, control in evaluation.control_lines.items():
        effect, interval = control.estimate.relative_effect, control.estimate.relative_interval
        flag = "" if control.pre_trend.parallel else " [yellow](pre-trend not parallel)[/yellow]"
        table.add_row(
            f"{KPIS[name].title}, net of the control line{flag}",
            f"{KPIS[name].title_ko}, 대조 라인 보정",
            "",
            "",
            "" if effect is None else f"{effect:+.1%}",
            "" if interval is None else f"{interval[0]:+.1%} to {interval[1]:+.1%}",
        )
    if (adjusted := evaluation.adjusted) is not None:
        interval = adjusted.relative_interval
        table.add_row(
            f"{adjusted.response} against the adjusted baseline"
            + (" [yellow](refused)[/yellow]" if adjusted.refused else ""),
            f"{adjusted.response}, 보정 기준선 대비",
            "" if adjusted.adjusted_baseline is None else f"{adjusted.adjusted_baseline:,.1f}",
            "" if adjusted.pilot is None else f"{adjusted.pilot:,.1f}",
            "" if adjusted.relative_change is None else f"{adjusted.relative_change:+.1%}",
            "" if interval is None else f"{interval[0]:+.1%} to {interval[1]:+.1%}",
        )
    for name, title_ko in (("cycle_time_p50", "사이클 타임 중앙값"), ("cycle_time_p95", "사이클 타임 95%")):
        before = evaluation.phases[Phase.BASELINE].kpis.get(name)
        after = evaluation.phases[Phase.PILOT].kpis.get(name)
        change = f"{after / before - 1:+.1%}" if before and after else ""
        table.add_row(name.replace("_", " "), title_ko, _kpi_value(before, "s"), _kpi_value(after, "s"), change)
    for device, station in evaluation.station_comparisons.items():  # each station's own: the line's is its output's
        interval = station.relative_interval
        table.add_row(
            f"cycle time {device}",
            f"사이클 타임 {device}",
            _kpi_value(station.baseline.value, "s"),
            _kpi_value(station.pilot.value, "s"),
            "" if station.relative_change is None else f"{station.relative_change:+.1%}",
            "" if interval is None else f"{interval[0]:+.1%} to {interval[1]:+.1%}",
        )
    return table


def _design_and_mix_lines(evaluation: DemonstrationResult) -> list[str]:
    """The plan's design before data and the product-mix standardisation (issue 21), a line each."""
    from pilot_core.kpi import KPIS

    lines = []
    if evaluation.design:
        lines.append(
            f"[bold]Design before data[/bold] (사전 설계; the baseline's hours alone,"
            f" power {evaluation.design[0].power:.0%}):"
        )
    for design in evaluation.design:
        name = f"  {KPIS[design.kpi].title} ({KPIS[design.kpi].title_ko})"
        if design.method is not None:
            name += f" by {design.method.replace('_', ' ')}"
        if design.mde is None:
            lines.append(f"{name}: no figures, {design.note}")
            continue
        days = design.pilot_hours_for_target
        reach = "not reachable: extend the baseline" if days is None else f"{days / 24:.1f} pilot days"
        lines.append(
            f"{name}: detectable change {design.mde:+.1%} over the planned pilot"
            f" ({design.planned_pilot_units} hourly units);"
            f" shown met if the true change reaches {design.met_needs:+.1%}; a change the target's size: {reach}"
        )
    mix = evaluation.product_mix
    if mix is not None and not mix.mix_differs:
        lines.append(
            f"[bold]Product mix[/bold] (제품 구성): unchanged (largest share change"
            f" {mix.largest_share_change * 100:.1f} points): the raw figures stand"
        )
    elif mix is not None:
        lines.append(
            f"[bold]At the baseline's product mix[/bold] (기준 제품 구성 기준; largest share change"
            f" {mix.largest_share_change * 100:.1f} points):"
        )
        for kpi in mix.kpis:
            name = f"  {KPIS[kpi.kpi].title} ({KPIS[kpi.kpi].title_ko})"
            raw = "–" if kpi.raw_change is None else f"{kpi.raw_change:+.1%}"
            if kpi.standardised_change is None:
                lines.append(f"{name}: raw {raw}; no standardised figure, {kpi.reason}")
            else:
                lines.append(f"{name}: raw {raw}, at the baseline's mix {kpi.standardised_change:+.1%}")
    return lines


def _kpi_value(value: float | None, unit: str) -> str:
    if value is None:
        return "–"
    if unit == "ratio":
        return f"{value:.2%}"
    return f"{value:,.4g} {unit}"


@app.command()
def rollups(
    demonstration: Annotated[
        list[str] | None, typer.Argument(help="Demonstration ids or slugs (default: every stored demonstration)")
    ] = None,
    every: Annotated[float, typer.Option(min=0, help="Run again every this many seconds, until Ctrl-C (0: once)")] = 0,
    late_days: Annotated[
        float | None,
        typer.Option(
            min=0,
            help="Count the values in InfluxDB of the settled hours of this many last days, and read again those"
            " whose count moved (late data); 0: do not look. Default: the rollup_late_days setting (14)",
        ),
    ] = None,
    config: ConfigFile = None,
) -> None:
    """Build the device-hours of stored demonstrations as time passes (cron, a timer, or --every), so that a
    comparison finds them stored; late data for settled hours is picked up and marked."""
    from collector.settings import ROLLUP_EVERY_MAX_S, ROLLUP_LATE_DAYS_MAX
    from kpi_engine.rollups import roll_up
    from kpi_engine.service import EvaluationStopped
    from pilot.engine import kpi_engine

    # The settings' bounds: beyond them no timer can wait, nor a time be counted back.
    if every > ROLLUP_EVERY_MAX_S:
        raise typer.BadParameter(f"at most {ROLLUP_EVERY_MAX_S:,} seconds (a week)", param_hint="'--every'")
    if late_days is not None and late_days > ROLLUP_LATE_DAYS_MAX:
        raise typer.BadParameter(f"at most {ROLLUP_LATE_DAYS_MAX:,} days", param_hint="'--late-days'")
    failed = 0
    with stopped_by_signals() as stop, kpi_engine(config) as (service, _database, settings):
        looked_back = settings.rollup_late_days if late_days is None else late_days
        service.hours.stopping = stop.is_set
        while True:
            began = time.monotonic()
            try:
                run = roll_up(service.demonstrations, service.hours, demonstration, late_days=looked_back or None)
            except EvaluationStopped:
                break  # Ctrl-C: what was built is stored
            for slug, stored in run.stored.items():
                console.print(f"{slug}: {stored:,} device-hours stored", highlight=False)
            for ref, reason in run.failed.items():
                errors.print(f"[red]error:[/red] {ref}: {reason}", highlight=False)
            failed = len(run.failed)
            console.print(f"took {time.monotonic() - began:.1f} s", highlight=False)
            if not every or stop.wait(every):
                break
    if failed:
        raise typer.Exit(1)


API_SHUTDOWN_S = 5


@app.command()
def api(
    config: ConfigFile = None,
    host: Annotated[str, typer.Option(help="Address to listen on")] = "127.0.0.1",
    port: Annotated[int, typer.Option(help="Port to listen on")] = 8000,
) -> None:
    """Serve the HTTP API (OpenAPI docs at /docs)."""
    import uvicorn
    from sqlalchemy.exc import SQLAlchemyError

    from api.log_redaction import uvicorn_log_config
    from api.main import create_app
    from collector.settings import CollectorSettings

    try:
        application = create_app(CollectorSettings.load(config))
    except (ValueError, OSError) as exc:
        raise fail(str(exc)) from None
    except SQLAlchemyError as exc:  # a malformed database_url, or a database that cannot be reached
        raise fail(f"the demonstrations database could not be opened: {exc}") from None
    # On SIGTERM, requests still running after this long are cancelled and their evaluations stop at their next
    # read, rather than the server waiting on them.
    uvicorn.run(
        application,
        host=host,
        port=port,
        log_config=uvicorn_log_config(),
        timeout_graceful_shutdown=API_SHUTDOWN_S,
    )


def main() -> None:
    app()
