"""The report as one self-contained HTML page (styles and charts inline), and as PDF through WeasyPrint."""

from __future__ import annotations

from importlib import resources
from typing import Any, NoReturn

import jinja2
from markupsafe import Markup

from pilot_core.demonstration import Phase
from pilot_core.kpi import KPIS
from reports.charts import charts, use_korean_font
from reports.content import PhaseTime, ReportContent
from reports.formats import Format
from reports.i18n import Language, Words

_TEMPLATES = jinja2.Environment(
    loader=jinja2.PackageLoader("reports", "templates"),
    autoescape=True,  # plan names, states and reasons are whatever their authors typed
    undefined=jinja2.StrictUndefined,
    trim_blocks=True,
    lstrip_blocks=True,
)


def _keep_words(text: str) -> Markup:
    """Each word unbreakable: WeasyPrint breaks Korean between any two syllables and has no word-break: keep-all."""
    return Markup(" ").join(Markup('<span class="word">{}</span>').format(word) for word in str(text).split(" "))


_TEMPLATES.filters["keep_words"] = _keep_words


def render_html(content: ReportContent, language: Language) -> str:
    words = Words(language)
    plan = content.plan
    korean = language is Language.KO and bool(plan.name_ko)
    title = plan.name_ko if korean else plan.name
    other = plan.name if korean else plan.name_ko
    targets = {t.kpi: words.target(KPIS[t.kpi].better.value, t.change_pct) for t in plan.targets}

    def role(device: str) -> str:
        roles = [
            words[key]
            for key, listed in (("role_output", plan.output_devices), ("role_meter", plan.energy_meters))
            if device in listed
        ]
        return ", ".join(roles) or words["role_station"]

    def percent(value: float | None) -> str:
        return words["not_applicable"] if value is None else f"{value:.1%}"

    def share(phase: PhaseTime) -> float | None:
        return phase.downtime_s / phase.pbt_s if phase.pbt_s > 0 else None

    values: dict[str, Any] = {
        "w": words,
        "c": content,
        "plan": plan,
        "title": title,
        "other_title": other if other != title else "",
        "generated": words.moment(content.generated_at, plan.calendar.zone),
        "running": words.format(
            "footer", slug=content.slug, version=content.plan_version, hash=content.plan_hash[:19] + "…"
        ),
        "zone": plan.calendar.zone,
        "devices": [(device, role(device)) for device in plan.devices],
        "target_text": targets,
        "charts": charts(content, words),
        "baseline": Phase.BASELINE,
        "pilot": Phase.PILOT,
        "percent": percent,
        "share": share,
        "kpi_unit": lambda kpi: KPIS[kpi].unit,
        "kpi_better": lambda kpi: KPIS[kpi].better.value,
        "css": resources.files("reports").joinpath("templates/report.css").read_text(encoding="utf-8"),
    }
    return _TEMPLATES.get_template("report.html").render(values)


def _no_fetching(url: str, *args: object, **kwargs: object) -> NoReturn:
    # The page is self-contained: nothing it names may make the server fetch a file or a URL.
    raise ValueError(f"the report fetches nothing, not {url!r}")


def render_pdf(html: str) -> bytes:
    """The HTML report on A4 pages; its text stays text (searchable, copyable)."""
    from weasyprint import HTML  # noqa: PLC0415  (imported when needed: it loads pango and takes a second)

    use_korean_font()  # WeasyPrint finds NanumGothic through fontconfig: fail clearly if it is missing
    document = HTML(string=html, url_fetcher=_no_fetching).write_pdf()
    assert document is not None  # write_pdf returns bytes when given no target
    return bytes(document)


def render(content: ReportContent, language: Language, format: Format) -> bytes:
    html = render_html(content, language)
    return html.encode("utf-8") if format is Format.HTML else render_pdf(html)
