"""`pilot report`: a demonstration's report as HTML or PDF, in Korean or English, made on the server itself
(see pilot/engine.py for what it reads)."""

from __future__ import annotations

import datetime as dt
import sys
from pathlib import Path
from typing import Annotated

import typer

from pilot.output import errors, fail
from reports.formats import Format
from reports.i18n import Language

ConfigFile = Annotated[
    Path | None, typer.Option("--config", "-c", help="YAML configuration file (default ./pilot.yaml)")
]


def report(
    demonstration: Annotated[str, typer.Argument(help="The demonstration's id or slug")],
    lang: Annotated[Language, typer.Option("--lang", "-l", help="The report's language: ko or en")] = Language.EN,
    format: Annotated[
        Format | None,
        typer.Option("--format", "-f", help="html or pdf (default: the output file's suffix, else html)"),
    ] = None,
    output: Annotated[
        Path | None,
        typer.Option(
            "--output", "-o", help="File to write; - for standard output (default: <slug>-v<version>-<lang>.<format>)"
        ),
    ] = None,
    version: Annotated[int | None, typer.Option(min=1, help="Plan version (default: the latest)")] = None,
    refresh: Annotated[
        bool, typer.Option(help="Re-read every hour from InfluxDB, for data that arrived after its hour had settled")
    ] = False,
    config: ConfigFile = None,
) -> None:
    """Write a demonstration's report: plan, before/after KPIs with verdicts, charts, data coverage, method."""
    from pilot.engine import kpi_engine
    from reports.charts import FontMissing
    from reports.content import report_content
    from reports.render import render

    chosen = format or (Format.PDF if output is not None and output.suffix.lower() == ".pdf" else Format.HTML)
    with kpi_engine(config) as (service, _, _):
        try:
            evaluation, breakdown = service.evaluate_with_breakdown(demonstration, version, refresh=refresh)
            body = render(report_content(evaluation, breakdown, dt.datetime.now(dt.UTC)), lang, chosen)
        except FontMissing as exc:
            raise fail(str(exc)) from None
    if output is not None and str(output) == "-":
        sys.stdout.buffer.write(body)
        sys.stdout.buffer.flush()
        return
    target = output or Path(f"{evaluation.slug}-v{evaluation.plan_version}-{lang.value}.{chosen.value}")
    try:
        target.write_bytes(body)
    except OSError as exc:
        raise fail(f"could not write {target}: {exc.strerror}") from None
    preview = "" if evaluation.frozen else " (a preview: the plan is a draft)"
    errors.print(f"wrote {target}: {evaluation.slug}, plan version {evaluation.plan_version}{preview}", highlight=False)
