"""`pilot grafana`: dashboards as provisioning files or pushed to a running Grafana, and the data they read.

The dashboards are generated from the device profiles in force and from the
demonstrations stored in the configured database. `publish` writes what the
demonstration dashboards read: the daily KPI components of settled days.
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any

import typer

from pilot.output import console, errors, fail
from pilot.stopping import stopped_by_signals

if TYPE_CHECKING:
    from collector.settings import CollectorSettings
    from dashboards.demonstration import DemonstrationView

grafana_app = typer.Typer(no_args_is_help=True, help="Grafana dashboards: export, push, and the data they read.")

ConfigFile = Annotated[
    Path | None, typer.Option("--config", "-c", help="YAML configuration file (default ./pilot.yaml)")
]
# One flag, not --demonstrations/--no-demonstrations: the pair took half of an 80-column help screen.
WithoutDemonstrations = Annotated[
    bool,
    typer.Option(
        "--no-demonstrations",
        help="Only the line overview and the profiles' dashboards: none per demonstration in the database",
    ),
]
DEFAULT_OUT = Path("deploy/grafana")


def _settings(config: Path | None) -> CollectorSettings:
    from collector.settings import CollectorSettings

    try:
        return CollectorSettings.load(config)
    except (ValueError, OSError) as exc:
        raise fail(str(exc)) from None


def _views(settings: CollectorSettings) -> list[DemonstrationView]:
    """The latest plan version of every stored demonstration; none if the SQLite file does not exist yet."""
    from sqlalchemy.engine import make_url
    from sqlalchemy.exc import ArgumentError, SQLAlchemyError

    from adapters.sql import Database, DemonstrationRepository
    from dashboards.demonstration import DemonstrationView

    try:
        url = make_url(settings.database_url)
    except ArgumentError as exc:
        raise fail(f"database_url is not a database URL: {exc}") from None
    file = url.database if url.get_backend_name() == "sqlite" and url.database not in (None, "", ":memory:") else None
    if file is not None and not Path(file).exists():
        errors.print(
            f"[yellow]note:[/yellow] no demonstrations database at {file} (database_url);"
            " only the line and device dashboards are made",
            highlight=False,
        )
        return []
    try:
        with Database(settings.database_url) as database:
            database.upgrade()
            stored = DemonstrationRepository(database).list()
    except SQLAlchemyError as exc:
        raise fail(f"the demonstrations database could not be opened: {exc}") from None
    return [DemonstrationView(d.slug, d.version, d.plan_hash, d.frozen, d.plan) for d in stored]


def _dashboards(settings: CollectorSettings, demonstrations: bool) -> list[dict[str, Any]]:
    from adapters.catalog import load_profiles
    from dashboards.provisioning import all_dashboards
    from pilot_core.profiles import ProfileErrors

    try:
        catalog = load_profiles(settings.profiles_dir)
    except ProfileErrors as exc:
        raise fail(f"invalid profiles:\n{exc}") from None
    return all_dashboards(catalog, _views(settings) if demonstrations else [])


@grafana_app.command()
def export(
    out: Annotated[Path, typer.Option("--out", "-o", help="Folder of the Grafana provisioning layout")] = DEFAULT_OUT,
    no_demonstrations: WithoutDemonstrations = False,
    config: ConfigFile = None,
) -> None:
    """Write the datasource, the dashboard provider and the dashboards as Grafana provisioning files."""
    from dashboards.provisioning import DASHBOARD_DIR, provisioning_files

    files = provisioning_files(_dashboards(_settings(config), not no_demonstrations))
    try:
        for relative, text in files.items():
            target = out / relative
            target.parent.mkdir(parents=True, exist_ok=True)
            target.write_text(text, encoding="utf-8")
    except OSError as exc:
        raise fail(f"could not write {exc.filename}: {exc.strerror}") from None
    written = {out / p for p in files}
    stale = sorted(p.name for p in (out / DASHBOARD_DIR).glob("*.json") if p not in written)
    if stale:  # they may be someone's own: left for the operator to remove
        errors.print(f"[yellow]note:[/yellow] not made by this export, left as they are: {', '.join(stale)}")
    count = sum(1 for p in files if p.parent == DASHBOARD_DIR)
    console.print(
        f"wrote {count} dashboards, the datasource and the dashboard provider to {out}", highlight=False, soft_wrap=True
    )


@grafana_app.command()
def push(
    url: Annotated[str, typer.Option(envvar="PILOT_GRAFANA_URL", help="Grafana's address, e.g. http://grafana:3000")],
    token: Annotated[
        str | None, typer.Option(envvar="PILOT_GRAFANA_TOKEN", help="A service account token (Admin role)")
    ] = None,
    user: Annotated[str | None, typer.Option(help="A Grafana user, instead of a token")] = None,
    password: Annotated[str | None, typer.Option(envvar="PILOT_GRAFANA_PASSWORD", help="The user's password")] = None,
    influx_url: Annotated[
        str | None,
        typer.Option(envvar="PILOT_GRAFANA_INFLUX_URL", help="InfluxDB as Grafana reaches it (default: influx.url)"),
    ] = None,
    influx_database: Annotated[
        str | None,
        typer.Option(envvar="PILOT_GRAFANA_INFLUX_DATABASE", help="The database (default: influx.database)"),
    ] = None,
    influx_token: Annotated[
        str | None,
        typer.Option(
            envvar="PILOT_GRAFANA_INFLUX_TOKEN",
            help="A read token for InfluxDB 2.x/3.x, or user:password for 1.8+ with authentication",
        ),
    ] = None,
    no_demonstrations: WithoutDemonstrations = False,
    config: ConfigFile = None,
) -> None:
    """Send the datasource and the dashboards to a running Grafana (created, or updated in place)."""
    from adapters.grafana import Grafana, GrafanaError
    from dashboards.provisioning import FOLDER_TITLE, FOLDER_UID, datasource_model

    settings = _settings(config)
    dashboards = _dashboards(settings, not no_demonstrations)
    datasource = datasource_model(
        influx_url or settings.influx.url, influx_database or settings.influx.database, influx_token
    )
    try:
        grafana = Grafana(url, token=token, user=user, password=password)
        errors.print(f"Grafana {grafana.version()} at {grafana.url}", highlight=False)
        outcome = grafana.upsert_datasource(datasource)
        errors.print(
            f"  datasource {datasource['uid']} {outcome} ({datasource['url']}, {datasource['jsonData']['dbName']})"
        )
        errors.print(f"  folder {FOLDER_UID} {grafana.ensure_folder(FOLDER_UID, FOLDER_TITLE)}", highlight=False)
        for model in dashboards:
            address = grafana.upsert_dashboard(model, FOLDER_UID)
            errors.print(f"  dashboard {model['title']}: {address}", highlight=False)
    except GrafanaError as exc:
        raise fail(str(exc)) from None
    console.print(
        f"pushed the datasource and {len(dashboards)} dashboards to {grafana.url}", highlight=False, soft_wrap=True
    )


@grafana_app.command()
def publish(
    demonstration: Annotated[
        list[str] | None, typer.Argument(help="Demonstration ids or slugs (default: every stored demonstration)")
    ] = None,
    version: Annotated[int | None, typer.Option(min=1, help="Plan version (default: the latest)")] = None,
    refresh: Annotated[
        bool, typer.Option(help="Re-read every hour from InfluxDB, for data that arrived after its hour had settled")
    ] = False,
    every: Annotated[
        float, typer.Option(min=0, help="Publish again every this many seconds, until Ctrl-C (0: once)")
    ] = 0,
    config: ConfigFile = None,
) -> None:
    """Write the daily KPI components of settled days to InfluxDB, for the before/after dashboards."""
    settings = _settings(config)
    with stopped_by_signals() as stop:
        while True:
            failed = _publish_once(settings, demonstration, version, refresh)
            refresh = False  # re-reading everything once is enough
            if not every or stop.wait(every):
                break
    if failed:
        raise typer.Exit(1)


def _publish_once(settings: CollectorSettings, refs: list[str] | None, version: int | None, refresh: bool) -> int:
    """Publish each demonstration; one that fails is reported and the others still go. Returns the failures."""
    from sqlalchemy.exc import SQLAlchemyError

    from adapters.catalog import load_profiles, load_registry
    from adapters.influxdb import InfluxClient, InfluxError
    from adapters.sql import Database, DemonstrationRepository, NotFound, ResultCache, RollupRepository
    from kpi_engine.publish import publish_daily
    from kpi_engine.service import HourStore, KpiService
    from pilot_core.profiles import ProfileErrors

    try:
        registry = load_registry(settings.devices_file, load_profiles(settings.profiles_dir))
    except (ValueError, OSError) as exc:
        raise fail(str(exc)) from None
    except ProfileErrors as exc:
        raise fail(f"the device registry (what each device's states mean) could not be read:\n{exc}") from None
    failed = 0
    try:
        with Database(settings.database_url) as database, InfluxClient(settings.influx) as influx:
            database.upgrade()
            demonstrations = DemonstrationRepository(database)
            service = KpiService(
                demonstrations, HourStore(RollupRepository(database), influx, registry), ResultCache(database)
            )
            chosen = refs or [d.slug for d in demonstrations.list()]
            if not chosen:
                errors.print("no demonstrations are stored (database_url): nothing to publish")
            for ref in chosen:
                try:
                    done = publish_daily(service, influx, ref, version, refresh=refresh)
                except (NotFound, InfluxError, LookupError) as exc:
                    errors.print(f"[red]error:[/red] {ref}: {exc}", highlight=False)
                    failed += 1
                    continue
                if done.changed:
                    changed = ", ".join(f"{day} {phase.value}" for day, phase in done.changed)
                    errors.print(
                        f"[yellow]note:[/yellow] {done.slug}: days changed since they were published ({changed});"
                        f" every settled day is written again as revision {done.revision}",
                        highlight=False,
                    )
                console.print(
                    f"{done.slug} v{done.plan_version}: {done.written} day(s) written to revision {done.revision},"
                    f" {done.unchanged} unchanged, {done.pending} not settled yet",
                    highlight=False,
                    soft_wrap=True,
                )
    except SQLAlchemyError as exc:
        raise fail(f"the demonstrations database could not be opened: {exc}") from None
    return failed
