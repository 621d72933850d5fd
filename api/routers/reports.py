"""A demonstration's report, in Korean or English, as HTML or PDF."""

from __future__ import annotations

import datetime as dt
from typing import Annotated
from urllib.parse import quote

from fastapi import APIRouter, HTTPException, Query, Request
from fastapi.responses import Response

from api.problems import AUTH_ERRORS, problem_responses
from api.routers.demonstrations import INVALID, NOT_FOUND, Ref
from api.routers.kpis import Refresh, Service, Version, engine_errors
from reports.charts import FontMissing
from reports.content import report_content
from reports.formats import MEDIA_TYPES, Format
from reports.i18n import Language
from reports.render import render

router = APIRouter(prefix="/demonstrations", tags=["reports"])

_DOCUMENTS = {
    "content": {
        "text/html": {"schema": {"type": "string"}},
        "application/pdf": {"schema": {"type": "string", "format": "binary"}},
    },
    "description": "The report: one self-contained HTML page (styles and charts inline), or an A4 PDF",
}
_ERRORS = problem_responses(
    AUTH_ERRORS
    | NOT_FOUND
    | INVALID
    | {
        409: "The plan names a device that is not in the device registry, or there is no registry",
        503: "InfluxDB could not be read, or the server lacks the Korean font the report is drawn with",
    }
)
Lang = Annotated[
    Language | None, Query(description="ko or en; default: the Accept-Language header's first of them, else en")
]
ReportFormat = Annotated[
    Format | None, Query(description="html or pdf; default: pdf if the Accept header asks for it, else html")
]


def preferred_language(request: Request, lang: Language | None = None) -> Language:
    """``lang`` if given, else the first of ko and en the Accept-Language header ranks highest, else en."""
    if lang is not None:
        return lang
    ranked = []
    for position, part in enumerate(request.headers.get("accept-language", "").split(",")):
        tag, _, params = part.strip().partition(";")
        try:
            weight = float(params.strip()[2:]) if params.strip().startswith("q=") else 1.0
        except ValueError:
            weight = 0.0  # a malformed weight ranks last rather than failing the request
        ranked.append((-weight, position, tag.split("-")[0].lower()))
    known = {language.value: language for language in Language}
    return next((known[tag] for _, _, tag in sorted(ranked) if tag in known), Language.EN)


def _format(request: Request, format: Format | None) -> Format:
    if format is not None:
        return format
    return Format.PDF if "application/pdf" in request.headers.get("accept", "") else Format.HTML


@router.get("/{ref}/report", response_class=Response, responses={200: _DOCUMENTS, **_ERRORS})
def demonstration_report(
    ref: Ref,
    request: Request,
    service: Service,
    lang: Lang = None,
    format: ReportFormat = None,
    version: Version = None,
    refresh: Refresh = False,
) -> Response:
    """The demonstration report: plan, before/after KPIs with verdicts, charts, data coverage and method notes.

    A draft plan's report says on its first page that it is a preview.
    """
    language, chosen = preferred_language(request, lang), _format(request, format)
    try:
        with engine_errors():
            evaluation, breakdown = service.evaluate_with_breakdown(ref, version, refresh=refresh)
        body = render(report_content(evaluation, breakdown, dt.datetime.now(dt.UTC)), language, chosen)
    except FontMissing as exc:
        raise HTTPException(503, str(exc)) from None
    headers = {"Content-Language": language.value, "Vary": "Accept, Accept-Language"}
    if chosen is Format.PDF:
        name = f"{evaluation.slug}-v{evaluation.plan_version}-{language.value}.pdf"
        headers["Content-Disposition"] = (
            f'attachment; filename="demonstration-{evaluation.demonstration_id}-{language.value}.pdf";'
            f" filename*=UTF-8''{quote(name)}"
        )
    return Response(body, media_type=MEDIA_TYPES[chosen], headers=headers)
