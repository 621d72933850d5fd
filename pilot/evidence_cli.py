"""`pilot evidence export|key` on the server, and `pilot verify` anywhere: no service needed to verify."""

from __future__ import annotations

import getpass
import json
import sys
from pathlib import Path
from typing import Annotated

import typer

from pilot.output import console, errors, fail

evidence_app = typer.Typer(no_args_is_help=True, help="Evidence bundles that evaluators verify offline.")

ConfigFile = Annotated[
    Path | None, typer.Option("--config", "-c", help="YAML configuration file (default ./pilot.yaml)")
]


@evidence_app.command("export")
def export(
    demonstration: Annotated[str, typer.Argument(help="The demonstration's id or slug")],
    output: Annotated[
        Path | None, typer.Option("--output", "-o", help="Bundle to write (default: <slug>-v<version>-evidence.zip)")
    ] = None,
    version: Annotated[int | None, typer.Option(min=1, help="Plan version (default: the latest)")] = None,
    config: ConfigFile = None,
) -> None:
    """Write a demonstration's signed evidence bundle: plan versions, audit trail, rows, results, manifest."""
    from adapters import bundle_archive
    from adapters.signing import SigningKey, SigningKeyError
    from adapters.sql import AuditLog
    from evidence.export import ExportError
    from evidence.export import export as export_bundle
    from pilot.engine import kpi_engine

    with kpi_engine(config) as (service, database, settings):
        try:
            key = SigningKey.load_or_create(settings.signing_key_file)
            errors.print(f"re-reading {demonstration!r} from InfluxDB for its rows and results", highlight=False)
            bundle = export_bundle(
                service, AuditLog(database), key, demonstration, version, created_by=f"{getpass.getuser()} (pilot)"
            )
        except (SigningKeyError, ExportError) as exc:
            raise fail(str(exc)) from None
    target = output or Path(bundle.name)
    try:
        bundle_archive.write(target, bundle.files)
    except OSError as exc:
        raise fail(f"could not write {target}: {exc.strerror}") from None
    manifest = bundle.manifest
    rows = sum(1 for name in bundle.files if name.startswith("data/"))
    errors.print(
        f"wrote {target}: {manifest.slug}, plan version {manifest.plan_version} ({manifest.plan_hash[:19]}…),"
        f" {len(bundle.files)} files ({rows} of data), signed by {manifest.signing_key}",
        highlight=False,
    )
    errors.print(f"check it anywhere, offline: pilot verify {target}", highlight=False)


@evidence_app.command("key")
def key(config: ConfigFile = None) -> None:
    """Print the deployment's public signing key and its fingerprint, for evaluators; make the key if none exists."""
    from adapters.signing import SigningKey, SigningKeyError
    from collector.settings import CollectorSettings

    try:
        signing_key = SigningKey.load_or_create(CollectorSettings.load(config).signing_key_file)
    except (ValueError, OSError, SigningKeyError) as exc:
        raise fail(str(exc)) from None
    errors.print(f"fingerprint {signing_key.fingerprint}", highlight=False)
    sys.stdout.write(signing_key.public_pem.decode("ascii"))


def verify(
    bundle: Annotated[Path, typer.Argument(help="The evidence bundle (.zip)")],
    public_key: Annotated[
        Path | None,
        typer.Option(help="The deployment's public key (PEM) to trust; default: the one in the bundle, with a warning"),
    ] = None,
    json_output: Annotated[bool, typer.Option("--json", help="Print the report as JSON")] = False,
) -> None:
    """Verify an evidence bundle offline: signature, hashes, plan, and every KPI recomputed from its rows.

    Exits 0 when every check passes, 1 when any fails. Needs no database, broker or InfluxDB.
    """
    from adapters import bundle_archive
    from evidence.verify import verify as verify_bundle

    try:
        files = bundle_archive.read(bundle)
        trusted = public_key.read_bytes() if public_key else None
    except (bundle_archive.BundleArchiveError, OSError) as exc:
        raise fail(str(exc)) from None
    report = verify_bundle(files, trusted)
    if json_output:
        document = {
            "bundle": str(bundle),
            "passed": report.passed,
            "checks": [{"name": c.name, "passed": c.passed, "details": c.details} for c in report.checks],
            "notes": report.notes,
        }
        sys.stdout.write(json.dumps(document, indent=2, ensure_ascii=False) + "\n")
    else:
        for check in report.checks:
            mark = "[green]✓[/green]" if check.passed else "[red]✗[/red]"
            console.print(f"{mark} {check.name}", highlight=False)
            for detail in check.details:
                console.print(f"    {detail}", highlight=False, markup=False, soft_wrap=True)
        for note in report.notes:
            errors.print(f"[yellow]note:[/yellow] {note}", highlight=False)
        verdict = "[green]passed[/green]" if report.passed else "[red]FAILED[/red]"
        console.print(f"{bundle}: {verdict}", highlight=False)
    if not report.passed:
        raise typer.Exit(1)
