"""The report's PDF rendering (WeasyPrint, with the Korean font the report needs): each anchor once."""

from __future__ import annotations

import collections
import logging
import re

import pytest

from reports.i18n import Language
from reports.render import render_html, render_pdf
from tests.unit.test_evaluation import plan
from tests.unit.test_report_content import content_of, faulty_hours


@pytest.mark.parametrize("language", list(Language))
def test_every_id_is_defined_once_so_the_pdf_defines_no_anchor_twice(
    language: Language, caplog: pytest.LogCaptureFixture
) -> None:
    html = render_html(content_of(plan(), faulty_hours(6)), language)
    ids = collections.Counter(re.findall(r'\bid="([^"]+)"', html))
    assert [name for name, count in ids.items() if count > 1] == []  # the four inline charts' SVG ids among them
    with caplog.at_level(logging.WARNING, "weasyprint"):
        assert render_pdf(html).startswith(b"%PDF-")
    # WeasyPrint also reads the SVG's style attributes as HTML CSS ("Ignored `fill: …`"): noise, not this test's.
    assert [r.getMessage() for r in caplog.records if "Anchor defined twice" in r.getMessage()] == []
