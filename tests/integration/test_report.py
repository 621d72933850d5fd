"""The demonstration report of a real simulated demonstration, through Mosquitto, the collector and InfluxDB.

Its numbers are the API's comparison document and its Pareto adds up to the
downtime in the KPI components; the API serves it in Korean and English, as
HTML and PDF, and refuses clearly; headless Chromium shows the table and the
charts at their sizes and colours with a real Korean font; the PDF's pages are
drawn and its text layer read; and `pilot report` writes the same report.
"""

from __future__ import annotations

import math
from collections.abc import Iterator
from dataclasses import dataclass
from html.parser import HTMLParser
from io import BytesIO
from pathlib import Path

import httpx
import numpy as np
import pypdfium2
import pytest
import yaml
from fastapi import FastAPI
from fastapi.testclient import TestClient
from PIL import Image
from selenium.webdriver.common.by import By
from typer.testing import CliRunner

from adapters import local_services
from api.main import create_app
from collector.settings import CollectorSettings
from pilot.cli import app as cli
from pilot_core.access import Role
from reports.charts import COLOURS
from reports.i18n import EN, KO, Language
from tests.api_support import admin_client, key_headers
from tests.browser import chromium, platform_fonts
from tests.support import backfilled_short_demo

CHARTS = ("cycle_times", "daily_oee", "downtime", "energy")
HEADINGS = ("title", "section_plan", "section_kpis", "section_charts", "section_coverage", "section_method")
LOST = ("asut_s", "adet_s", "adot_s", "unknown_s")


@dataclass
class Demo:
    application: FastAPI
    api: TestClient
    settings: CollectorSettings
    slug: str
    folder: Path

    def report(self, **params: str) -> httpx.Response:
        response = self.api.get(f"/v1/demonstrations/{self.slug}/report", params=params)
        assert response.status_code == 200, response.text
        return response


@pytest.fixture(scope="module")
def demo(
    tmp_path_factory: pytest.TempPathFactory,
    mosquitto: local_services.LocalService,
    influxdb: local_services.InfluxService,
) -> Iterator[Demo]:
    """Two days of baseline and two of pilot of the bundled cobot cell, backfilled through the whole pipeline."""
    folder = tmp_path_factory.mktemp("report")
    result, settings = backfilled_short_demo(folder, mosquitto, influxdb, "report")
    assert result.evaluation is not None
    application = create_app(settings)
    with admin_client(application) as api:
        yield Demo(application, api, settings, result.evaluation.slug, folder)
    application.state.pilot.database.dispose()


@pytest.fixture(scope="module")
def html(demo: Demo) -> dict[Language, str]:
    return {language: demo.report(lang=language.value).text for language in Language}


@pytest.fixture(scope="module")
def pdf(demo: Demo) -> dict[Language, bytes]:
    return {language: demo.report(lang=language.value, format="pdf").content for language in Language}


class _Rows(HTMLParser):
    """The report's data attributes: per table row, the attributes of the row and of each of its cells."""

    def __init__(self) -> None:
        super().__init__()
        self.rows: list[tuple[dict[str, str], list[dict[str, str]]]] = []
        self._table: list[str] = []

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        values = {k: v or "" for k, v in attrs}
        if tag == "table":
            self._table.append(values.get("id", ""))
        elif tag == "tr":
            self.rows.append(({"table": self._table[-1] if self._table else "", **values}, []))
        elif tag in ("td", "th") and self.rows:
            self.rows[-1][1].append(values)

    def handle_endtag(self, tag: str) -> None:
        if tag == "table" and self._table:
            self._table.pop()


def _rows(text: str, table: str) -> list[tuple[dict[str, str], list[dict[str, str]]]]:
    parser = _Rows()
    parser.feed(text)
    return [row for row in parser.rows if row[0]["table"] == table]


def _number(text: str) -> float | None:
    return float(text) if text else None


def test_the_reports_numbers_are_the_apis(demo: Demo, html: dict[Language, str]) -> None:
    comparison = demo.api.get(f"/v1/demonstrations/{demo.slug}/comparison").json()
    kpis = demo.api.get(f"/v1/demonstrations/{demo.slug}/kpis").json()
    expected = {
        k["kpi"]: (k["baseline"]["value"], k["pilot"]["value"], k["relative_change"]) for k in comparison["kpis"]
    }
    for phase in ("baseline", "pilot"):  # the percentiles, which the comparison has per phase only
        for name in ("cycle_time_p50", "cycle_time_p95"):
            assert kpis["phases"][phase]["kpis"][name] is not None
    for language, text in html.items():
        assert comparison["source"]["plan_hash"] in text and 'id="plan-status" class="status-frozen"' in text
        shown = {}
        for row, cells in _rows(text, "kpi-table"):
            if "data-kpi" in row:
                baseline, pilot, change = (_number(c["data-value"]) for c in cells if "data-value" in c)
                shown[row["data-kpi"]] = (baseline, pilot, change)
        for kpi, values in expected.items():
            assert shown[kpi] == values, (language, kpi)
        for name in ("cycle_time_p50", "cycle_time_p95"):
            assert shown[name][:2] == (kpis["phases"]["baseline"]["kpis"][name], kpis["phases"]["pilot"]["kpis"][name])
        targets = {k["kpi"]: k["target"]["verdict"] for k in comparison["kpis"] if k["target"]}
        verdicts = {row["data-kpi"]: row for row, _ in _rows(text, "kpi-table") if row.get("class") == "target"}
        assert set(verdicts) == set(targets)
        for kpi, verdict in targets.items():
            assert f'data-verdict="{verdict}"' in text.split(f'data-kpi="{kpi}"')[1].split("</tr>")[0]

        # The Pareto adds up to the downtime in the KPI components: PBT − APT of each phase.
        pareto = _rows(text, "downtime-table")
        body = [cells for row, cells in pareto if any("data-seconds" in c for c in cells)]
        *causes, total = body  # the tfoot's total; its planned busy time row has no data-seconds
        for index, phase in enumerate(("baseline", "pilot")):
            breakdown = kpis["phases"][phase]["time_breakdown_s"]
            lost = sum(breakdown[name] for name in LOST)
            assert lost == pytest.approx(breakdown["pbt_s"] - breakdown["apt_s"])
            seconds = [float([c for c in cells if "data-seconds" in c][index]["data-seconds"]) for cells in causes]
            assert math.fsum(seconds) == pytest.approx(lost, rel=1e-9)
            assert float([c for c in total if "data-seconds" in c][index]["data-seconds"]) == pytest.approx(lost)
            assert lost > 0

        # Coverage per device and phase, as the comparison document has it (one window per phase here).
        coverage = {
            (row["data-device"], row["data-phase"]): cells
            for row, cells in _rows(text, "coverage-table")
            if "data-device" in row
        }
        for phase, devices in comparison["coverage"].items():
            for device in devices:
                ratio = next(c for c in coverage[(device["device"], phase)] if "data-value" in c)["data-value"]
                assert _number(ratio) == device["telemetry_ratio"]


def test_the_api_serves_both_languages_and_formats(
    demo: Demo, html: dict[Language, str], pdf: dict[Language, bytes]
) -> None:
    for language in Language:
        response = demo.report(lang=language.value)
        assert response.headers["content-type"] == "text/html; charset=utf-8"
        assert response.headers["content-language"] == language.value
        assert f'<html lang="{language.value}">' in html[language]
        assert pdf[language].startswith(b"%PDF-")
    as_pdf = demo.report(lang="ko", format="pdf")
    assert as_pdf.headers["content-type"] == "application/pdf"
    disposition = as_pdf.headers["content-disposition"]
    assert disposition.startswith("attachment; filename=") and "-ko.pdf" in disposition
    # Without parameters, the headers choose: the reader's language, and PDF when asked for.
    korean = demo.api.get(
        f"/v1/demonstrations/{demo.slug}/report", headers={"Accept-Language": "ko-KR,ko;q=0.9,en;q=0.8"}
    )
    assert korean.headers["content-language"] == "ko" and KO["title"] in korean.text
    weighted = demo.api.get(
        f"/v1/demonstrations/{demo.slug}/report", headers={"Accept-Language": "fr, en;q=0.4, ko;q=0.3"}
    )
    assert weighted.headers["content-language"] == "en"
    asked = demo.api.get(f"/v1/demonstrations/{demo.slug}/report", headers={"Accept": "application/pdf"})
    assert asked.headers["content-type"] == "application/pdf"


def test_refusals_are_problem_details(demo: Demo) -> None:
    path = f"/v1/demonstrations/{demo.slug}/report"
    for params in ({"lang": "fr"}, {"format": "docx"}, {"version": "0"}):
        refused = demo.api.get(path, params=params)
        assert refused.status_code == 422, refused.text
        assert refused.headers["content-type"] == "application/problem+json"
        assert refused.json()["errors"][0]["loc"][0] == "query"
    missing = demo.api.get("/v1/demonstrations/no-such-demonstration/report")
    assert missing.status_code == 404 and missing.json()["detail"] == "no demonstration 'no-such-demonstration'"
    no_version = demo.api.get(path, params={"version": 9})
    assert no_version.status_code == 404 and no_version.headers["content-type"] == "application/problem+json"
    anonymous = TestClient(demo.application).get(path)
    assert anonymous.status_code == 401 and anonymous.json()["status"] == 401
    outsider = demo.api.get(path, headers=key_headers(demo.application, Role.EVALUATOR, "elsewhere"))
    assert outsider.status_code == 404 and outsider.json()["type"].endswith("/not-found")


def test_a_drafts_report_says_it_is_a_preview(demo: Demo) -> None:
    plan = demo.api.get(f"/v1/demonstrations/{demo.slug}").json()["plan"]
    created = demo.api.post("/v1/demonstrations", json={**plan, "name": "Pangyo cell, draft"})
    assert created.status_code == 201, created.text
    slug = created.json()["slug"]
    for language, words in ((Language.KO, KO), (Language.EN, EN)):
        response = demo.api.get(f"/v1/demonstrations/{slug}/report", params={"lang": language.value})
        assert 'id="preview-banner"' in response.text and words["draft"] in response.text
        document = demo.api.get(f"/v1/demonstrations/{slug}/report", params={"lang": language.value, "format": "pdf"})
        text = _pdf_text(pypdfium2.PdfDocument(document.content))
        assert words["preview"].split(" — ")[0] in text and words["draft"] in text


def _pixels(image: Image.Image, colour: str, tolerance: int = 40) -> int:
    """How many pixels are within ``tolerance`` (per channel) of ``colour``."""
    wanted = np.array([int(colour[i : i + 2], 16) for i in (1, 3, 5)])
    rgb = np.asarray(image.convert("RGB"), dtype=int)
    return int(np.count_nonzero(np.all(np.abs(rgb - wanted) <= tolerance, axis=-1)))


def _ink(image: Image.Image) -> float:
    """The share of pixels that are not (nearly) white."""
    return float(np.mean(np.asarray(image.convert("L")) < 235))


@pytest.mark.parametrize("language", list(Language))
def test_the_table_and_charts_show_in_a_browser(language: Language, html: dict[Language, str], tmp_path: Path) -> None:
    page = tmp_path / f"report-{language.value}.html"
    page.write_text(html[language], encoding="utf-8")
    with chromium(1280, 1400) as driver:
        driver.get(page.as_uri())
        assert driver.execute_script("return document.fonts.status") == "loaded"
        viewport = driver.execute_script("return [window.innerWidth, window.innerHeight]")
        for element_id in ("kpi-table", *(f"chart-{key}" for key in CHARTS)):
            element = driver.find_element(By.ID, element_id)
            # Scrolled to a whole pixel just above it: the checks below then see it all.
            driver.execute_script(
                "window.scrollBy(0, Math.floor(arguments[0].getBoundingClientRect().top) - 8)", element
            )
            drawn = element if element_id == "kpi-table" else element.find_element(By.TAG_NAME, "svg")
            left, top, width, height = driver.execute_script(
                "const r = arguments[0].getBoundingClientRect(); return [r.left, r.top, r.width, r.height]", drawn
            )
            assert drawn.is_displayed(), element_id
            assert left >= 0 and top >= 0 and left + width <= viewport[0] and top + height <= viewport[1], element_id
            if element_id != "kpi-table":
                expected = (
                    int(element.get_attribute("data-width") or 0),
                    int(element.get_attribute("data-height") or 0),
                )
                assert (round(width), round(height)) == expected, element_id
            shot = Image.open(BytesIO(driver.get_screenshot_as_png()))
            crop = shot.crop((math.ceil(left), math.ceil(top), math.floor(left + width), math.floor(top + height)))
            assert _ink(crop) > 0.02, f"{element_id} looks blank"
            for phase, colour in COLOURS.items():
                assert _pixels(crop, colour) >= (6 if element_id == "kpi-table" else 150), (element_id, phase)

        # Korean is drawn with a real Korean font, not as empty boxes: the title in Korean, the plan's Korean
        # name in English, and a Korean heading of the table.
        checks = ("#report-title", "#kpi-table thead th") if language is Language.KO else ("#plan-title",)
        for selector in checks:
            fonts = platform_fonts(driver, selector)
            assert fonts and all(f["glyphCount"] > 0 for f in fonts), (selector, fonts)
            assert any(f["familyName"].startswith("NanumGothic") for f in fonts), (selector, fonts)
            if language is Language.KO:
                assert all(f["familyName"].startswith("NanumGothic") for f in fonts), (selector, fonts)


def _pdf_text(document: pypdfium2.PdfDocument) -> str:
    return "\n".join(page.get_textpage().get_text_range() for page in document)


@pytest.mark.parametrize("language", list(Language))
def test_the_pdf_pages(language: Language, pdf: dict[Language, bytes], demo: Demo) -> None:
    document = pypdfium2.PdfDocument(pdf[language])
    assert 4 <= len(document) <= 10, len(document)
    words = KO if language is Language.KO else EN
    text = _pdf_text(document)
    for heading in HEADINGS:
        assert words[heading] in text, heading
    for key in CHARTS:
        assert words[f"chart_{key}"] in text, key
    comparison = demo.api.get(f"/v1/demonstrations/{demo.slug}/comparison").json()
    assert comparison["source"]["plan_hash"] in text.replace("\r\n", "").replace("\n", "")
    with_charts = 0
    for index in range(len(document)):
        image = document[index].render(scale=1.5).to_pil()
        assert _ink(image) > 0.005, f"page {index + 1} looks blank"
        if all(_pixels(image, colour) > 2000 for colour in COLOURS.values()):
            with_charts += 1
    assert with_charts >= 2, "the charts are missing from the PDF"


def test_pilot_report_writes_the_same_report(demo: Demo, tmp_path: Path) -> None:
    config = tmp_path / "pilot.yaml"
    config.write_text(
        yaml.safe_dump(
            {
                "influx": {"url": demo.settings.influx.url, "database": demo.settings.influx.database},
                "devices_file": str(demo.settings.devices_file),
                "database_url": demo.settings.database_url,
            }
        ),
        encoding="utf-8",
    )
    runner = CliRunner()
    output = tmp_path / "report.pdf"
    result = runner.invoke(
        cli, ["report", demo.slug, "--lang", "ko", "--format", "pdf", "-o", str(output), "-c", str(config)]
    )
    assert result.exit_code == 0, result.output
    assert f"wrote {output}" in result.output
    text = _pdf_text(pypdfium2.PdfDocument(output.read_bytes()))
    assert KO["title"] in text and KO["section_kpis"] in text
    page = tmp_path / "report.html"
    result = runner.invoke(cli, ["report", demo.slug, "-o", str(page), "-c", str(config)])
    assert result.exit_code == 0, result.output
    assert page.read_text(encoding="utf-8").startswith("<!doctype html>") and EN["title"] in page.read_text()
    missing = runner.invoke(cli, ["report", "no-such-demonstration", "-c", str(config)])
    assert missing.exit_code == 1 and "no demonstration 'no-such-demonstration'" in missing.output
    wrong = runner.invoke(cli, ["report", demo.slug, "--lang", "fr", "-c", str(config)])
    assert wrong.exit_code == 2 and "fr" in wrong.output
