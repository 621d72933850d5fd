"""The web console in headless Chromium, over a real simulated demonstration (Mosquitto, collector, InfluxDB).

Each role signs in through the form and opens every page it may; on every page axe-core (vendored,
tests/vendor/axe.min.js) finds no serious or critical violation, the browser logs no error, and no request
leaves 127.0.0.1. The before/after table shows the API's numbers; the evaluator freezes a draft after a
confirmation that shows its hash; the downloads arrive; the language switch turns every page Korean, drawn with
the reports' font (NanumGothic), and is remembered.
"""

from __future__ import annotations

import json
import threading
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import urlparse

import httpx
import pytest
import uvicorn
from selenium.webdriver import Chrome as WebDriver
from selenium.webdriver.common.by import By
from selenium.webdriver.support import expected_conditions
from selenium.webdriver.support.wait import WebDriverWait

from adapters import local_services
from adapters.sql import AccessRepository, DemonstrationRepository
from api.main import create_app
from pilot_core.access import Actor, Role
from tests.browser import chromium, platform_fonts
from tests.support import backfilled_short_demo, wait_until

SETUP = Actor.system("test_console_browser")
AXE = Path(__file__).resolve().parents[1] / "vendor" / "axe.min.js"
ROLES = {
    Role.ADMIN: "operator",
    Role.STARTUP: "pangyo-robotics",
    Role.FACTORY_MANAGER: "pangyo-factory",
    Role.EVALUATOR: "gyeonggi-evaluation",
}
CHARTS = ("cycle_times", "daily_oee", "downtime", "energy")
LOCAL = {"127.0.0.1"}
MISSING = "/demonstrations/no-such-demonstration"


@dataclass
class Site:
    url: str
    slug: str  # the demo's frozen demonstration, owned by the operator, shared with every organisation
    draft: str  # a draft of the startup's, shared with the factory and the evaluators
    tokens: dict[Role, str]
    admin: httpx.Client

    def api(self, path: str) -> Any:
        response = self.admin.get(path)
        assert response.status_code == 200, response.text
        return response.json()


@dataclass
class Visit:
    """What the browser did on one page: for the checks every page must pass."""

    url: str
    violations: list[dict[str, Any]] = field(default_factory=list)


@pytest.fixture(scope="module")
def site(
    tmp_path_factory: pytest.TempPathFactory,
    mosquitto: local_services.LocalService,
    influxdb: local_services.InfluxService,
) -> Iterator[Site]:
    """Two days of baseline and two of pilot of the bundled cobot cell, served by `pilot api`'s app on 127.0.0.1."""
    folder = tmp_path_factory.mktemp("console")
    result, settings = backfilled_short_demo(
        folder, mosquitto, influxdb, "console", signing_key_file=folder / "signing.key"
    )
    assert result.evaluation is not None
    app = create_app(settings)
    access = AccessRepository(app.state.pilot.database)
    demonstrations = DemonstrationRepository(app.state.pilot.database)
    tokens = {}
    for role, organisation in ROLES.items():
        if organisation not in {o.slug for o in access.organisations()}:
            access.create_organisation(organisation, organisation, actor=SETUP)
        tokens[role] = access.create_key(f"Console {role.value}", role, organisation, actor=SETUP)[1]
    slug = result.evaluation.slug
    stored = demonstrations.get(slug)
    draft = demonstrations.create(stored.plan, "console-draft", actor=SETUP, owner=ROLES[Role.STARTUP])
    for organisation in (ROLES[Role.STARTUP], ROLES[Role.FACTORY_MANAGER], ROLES[Role.EVALUATOR]):
        demonstrations.add_participant(stored.id, organisation, actor=SETUP)
    for organisation in (ROLES[Role.FACTORY_MANAGER], ROLES[Role.EVALUATOR]):
        demonstrations.add_participant(draft.id, organisation, actor=SETUP)
    port = local_services.free_port()
    server = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=port, log_level="warning"))
    thread = threading.Thread(target=server.run, name="console-server", daemon=True)
    thread.start()
    wait_until(lambda: server.started, 30, "the console's server to start")
    url = f"http://127.0.0.1:{port}"
    with httpx.Client(base_url=url, headers={"Authorization": f"Bearer {tokens[Role.ADMIN]}"}, timeout=120) as admin:
        yield Site(url, slug, draft.slug, tokens, admin)
    server.should_exit = True
    thread.join(30)
    app.state.pilot.database.dispose()


def _wait_for_page(driver: WebDriver) -> None:
    WebDriverWait(driver, 120).until(lambda d: d.execute_script("return document.readyState") == "complete")


def _check_page(driver: WebDriver, visits: list[Visit]) -> Visit:
    """axe-core on the page as it stands (its violations kept for the end of the test)."""
    _wait_for_page(driver)
    driver.execute_script(AXE.read_text(encoding="utf-8"))
    driver.set_script_timeout(120)
    violations = driver.execute_async_script(
        """
        const done = arguments[arguments.length - 1];
        // The whole document; the accessible name of a control must contain its visible text (an opt-in rule).
        axe.run(document, {resultTypes: ['violations'], rules: {'label-content-name-mismatch': {enabled: true}}})
          .then(r => done(r.violations.map(v => ({id: v.id, impact: v.impact, help: v.help,
                                                   nodes: v.nodes.slice(0, 3).map(n => n.target.join(' '))}))))
          .catch(e => done([{id: 'axe-error', impact: 'critical', help: String(e), nodes: []}]));
        """
    )
    visit = Visit(driver.current_url, violations)
    visits.append(visit)
    return visit


def _open(driver: WebDriver, site: Site, path: str, visits: list[Visit]) -> Visit:
    driver.get(site.url + path)
    return _check_page(driver, visits)


def _click(driver: WebDriver, element_id: str, visits: list[Visit]) -> Visit:
    old = driver.find_element(By.TAG_NAME, "html")
    driver.find_element(By.ID, element_id).click()
    WebDriverWait(driver, 120).until(expected_conditions.staleness_of(old))
    return _check_page(driver, visits)


def _sign_in(driver: WebDriver, site: Site, role: Role, visits: list[Visit]) -> None:
    _open(driver, site, "/", visits)
    assert urlparse(driver.current_url).path == "/sign-in"
    driver.find_element(By.ID, "api-key").send_keys(site.tokens[role])
    _click(driver, "sign-in", visits)
    assert urlparse(driver.current_url).path == "/demonstrations"
    assert ROLES[role] in driver.find_element(By.ID, "signed-in-as").text


def _assert_every_page_was_clean(driver: WebDriver, visits: list[Visit], refused: tuple[str, ...] = ()) -> None:
    """``refused``: paths the test opened expecting a 403 page (Chromium logs its status as an error)."""
    serious = [(v.url, x) for v in visits for x in v.violations if x["impact"] in ("serious", "critical")]
    assert not serious, json.dumps(serious, indent=1, ensure_ascii=False)
    asked_for = (MISSING, *refused)  # the 404 and 403s the test asked for
    errors = [
        entry
        for entry in driver.get_log("browser")
        if entry["level"] in ("SEVERE", "ERROR") and not any(path in entry["message"] for path in asked_for)
    ]
    assert not errors, errors
    requested = set()
    for entry in driver.get_log("performance"):
        message = json.loads(entry["message"])["message"]
        if message["method"] == "Network.requestWillBeSent":
            requested.add(message["params"]["request"]["url"])
    assert requested, "the performance log saw no request"
    # Only the network counts: chrome:// and data: URLs are the browser's own (its download shelf, for one).
    network = [u for u in requested if urlparse(u).scheme in ("http", "https", "ws", "wss")]
    assert network, "the performance log saw no request to the console"
    away = [u for u in network if urlparse(u).hostname not in LOCAL]
    assert not away, away


def _shown_kpis(driver: WebDriver) -> dict[str, tuple[float | None, ...]]:
    rows: dict[str, tuple[float | None, ...]] = driver.execute_script(
        """
        const out = {};
        for (const row of document.querySelectorAll('#kpi-table tbody tr')) {
          out[row.dataset.kpi] = [...row.querySelectorAll('td[data-value]')]
            .map(c => c.dataset.value === '' ? null : Number(c.dataset.value));
        }
        return out;
        """
    )
    return {kpi: tuple(values) for kpi, values in rows.items()}


def test_an_admin_reads_the_demonstration_in_both_languages_and_downloads_it(site: Site, tmp_path: Path) -> None:
    visits: list[Visit] = []
    with chromium(1280, 1000, logs=True) as driver:
        driver.execute_cdp_cmd("Browser.setDownloadBehavior", {"behavior": "allow", "downloadPath": str(tmp_path)})
        _sign_in(driver, site, Role.ADMIN, visits)
        row = driver.find_element(By.CSS_SELECTOR, f'#demonstrations-table tr[data-slug="{site.slug}"]')
        comparison = site.api(f"/v1/demonstrations/{site.slug}/comparison")
        targets = [k["target"]["verdict"] for k in comparison["kpis"] if k["target"]]
        glance = {
            v.get_attribute("data-verdict"): int(v.get_attribute("data-count") or 0)
            for v in row.find_elements(By.CSS_SELECTOR, ".verdict")
        }
        assert glance == {verdict: targets.count(verdict) for verdict in set(targets)}
        row.find_element(By.TAG_NAME, "a").click()
        _check_page(driver, visits)

        # The plan's hash and the before/after table are the API's.
        assert driver.find_element(By.ID, "plan-hash").text == comparison["source"]["plan_hash"]
        expected = {
            k["kpi"]: (k["baseline"]["value"], k["pilot"]["value"], k["relative_change"]) for k in comparison["kpis"]
        }
        shown = _shown_kpis(driver)
        for kpi, values in expected.items():
            assert shown[kpi] == values, kpi
        for kpi in (k for k in comparison["kpis"] if k["target"]):
            cell = driver.find_element(By.CSS_SELECTOR, f'#kpi-table tr[data-kpi="{kpi["kpi"]}"] .verdict')
            assert cell.get_attribute("data-verdict") == kpi["target"]["verdict"]
        for key in CHARTS:
            chart = driver.find_element(By.CSS_SELECTOR, f"#chart-{key} svg")
            assert chart.is_displayed() and chart.size["width"] > 300, key
        coverage = driver.find_elements(By.CSS_SELECTOR, "#coverage-table tbody tr")
        assert len(coverage) == sum(len(devices) for devices in comparison["coverage"].values())
        audit = site.api(f"/v1/demonstrations/{site.slug}/audit")["entries"]
        shown_actions = [
            r.get_attribute("data-action") for r in driver.find_elements(By.CSS_SELECTOR, "#audit-table tbody tr")
        ]
        assert shown_actions == [entry["action"] for entry in audit]

        # Every download arrives, authorised by the session cookie alone.
        for link in (
            "download-report-ko",
            "download-report-en",
            "download-comparison-csv",
            "download-kpis-csv",
            "download-evidence",
        ):
            driver.find_element(By.ID, link).click()

        def arrived() -> list[Path]:
            files = [p for p in tmp_path.iterdir() if not p.name.endswith(".crdownload")]
            return files if len(files) == 5 and not list(tmp_path.glob("*.crdownload")) else []

        wait_until(lambda: bool(arrived()), 300, "the five downloads")
        contents = {p.name: p.read_bytes() for p in arrived()}
        assert sum(c.startswith(b"%PDF") for c in contents.values()) == 2, list(contents)
        assert sum(c.startswith(b"PK") for c in contents.values()) == 1, list(contents)
        csv = [c for c in contents.values() if c.startswith(b"demonstration,plan_version,plan_hash,")]
        assert len(csv) == 2 and all(site.slug.encode() in c for c in csv)
        assert any(name.endswith("-ko.pdf") for name in contents) and any(name.endswith("-en.pdf") for name in contents)

        # Korean: the switch turns the page Korean, drawn with the reports' font, and every later page stays so.
        _click(driver, "switch-language", visits)
        assert driver.find_element(By.TAG_NAME, "html").get_attribute("lang") == "ko"
        assert urlparse(driver.current_url).path == f"/demonstrations/{site.slug}"
        assert driver.execute_script("return document.fonts.status") == "loaded"
        for selector in ("#kpis-heading", "#kpi-table thead th", "#plan-title"):
            fonts = platform_fonts(driver, selector)
            assert fonts and all(f["familyName"].startswith("NanumGothic") and f["glyphCount"] > 0 for f in fonts), (
                selector,
                fonts,
            )
        assert _shown_kpis(driver) == shown  # the same numbers in either language
        _open(driver, site, f"/demonstrations/{site.slug}/amendments", visits)
        assert driver.find_element(By.TAG_NAME, "html").get_attribute("lang") == "ko"
        _open(driver, site, f"/demonstrations/{site.slug}/live", visits)
        assert driver.find_element(By.TAG_NAME, "html").get_attribute("lang") == "ko"
        assert driver.find_element(By.ID, "live-title").is_displayed()
        _open(driver, site, "/demonstrations", visits)
        assert driver.find_element(By.TAG_NAME, "h1").text == "실증 목록"
        _click(driver, "switch-language", visits)
        assert driver.find_element(By.TAG_NAME, "html").get_attribute("lang") == "en"
        _click(driver, "sign-out", visits)
        assert urlparse(driver.current_url).path == "/sign-in"
        _open(driver, site, f"/demonstrations/{site.slug}", visits)
        assert urlparse(driver.current_url).path == "/sign-in"
        _assert_every_page_was_clean(driver, visits)


def test_an_evaluator_freezes_a_draft_after_seeing_its_hash(site: Site) -> None:
    visits: list[Visit] = []
    draft = site.api(f"/v1/demonstrations/{site.draft}")
    assert draft["frozen"] is False
    with chromium(1280, 1000, logs=True) as driver:
        _sign_in(driver, site, Role.EVALUATOR, visits)
        _open(driver, site, f"/demonstrations/{site.draft}", visits)
        assert driver.find_element(By.ID, "preview-banner").is_displayed()
        _click(driver, "freeze-link", visits)
        assert driver.find_element(By.ID, "freeze-hash").text == draft["plan_hash"]
        _click(driver, "freeze-confirm", visits)
        assert urlparse(driver.current_url).path == f"/demonstrations/{site.draft}"
        assert draft["plan_hash"] in driver.find_element(By.ID, "frozen-notice").text
        assert not driver.find_elements(By.ID, "freeze-link")
        frozen = site.api(f"/v1/demonstrations/{site.draft}")
        assert frozen["frozen"] is True and frozen["plan_hash"] == draft["plan_hash"]
        trail = site.api(f"/v1/demonstrations/{site.draft}/audit")["entries"]
        assert trail[0]["action"] == "plan.frozen" and trail[0]["actor"]["role"] == "evaluator"
        assert (
            driver.find_element(By.CSS_SELECTOR, "#audit-table tbody tr").get_attribute("data-action") == "plan.frozen"
        )
        _open(driver, site, f"/demonstrations/{site.slug}/amendments", visits)
        versions = site.api(f"/v1/demonstrations/{site.slug}/versions")
        rows = driver.find_elements(By.CSS_SELECTOR, "#amendments-table tbody tr")
        assert [int(r.get_attribute("data-version") or 0) for r in rows] == [v["version"] for v in reversed(versions)]
        _assert_every_page_was_clean(driver, visits)


@pytest.mark.parametrize("role", [Role.FACTORY_MANAGER, Role.STARTUP])
def test_other_roles_read_what_they_may_and_no_more(site: Site, role: Role) -> None:
    visits: list[Visit] = []
    with chromium(1280, 1000, logs=True) as driver:
        _sign_in(driver, site, role, visits)
        listed = {
            r.get_attribute("data-slug")
            for r in driver.find_elements(By.CSS_SELECTOR, "#demonstrations-table tbody tr")
        }
        assert listed == {site.slug, site.draft}
        _open(driver, site, f"/demonstrations/{site.slug}", visits)
        assert driver.find_element(By.ID, "plan-hash").text == site.api(f"/v1/demonstrations/{site.slug}")["plan_hash"]
        assert not driver.find_elements(By.ID, "freeze-link")  # frozen already
        _open(driver, site, f"/demonstrations/{site.slug}/amendments", visits)
        _open(driver, site, f"/demonstrations/{site.draft}", visits)
        may_freeze = role is Role.STARTUP
        assert bool(driver.find_elements(By.ID, "freeze-link")) is (
            may_freeze and not site.api(f"/v1/demonstrations/{site.draft}")["frozen"]
        )
        _open(driver, site, MISSING, visits)
        assert driver.find_element(By.ID, "not-found").is_displayed()
        refused: tuple[str, ...] = ()
        if not may_freeze:  # the freeze page that says why not (403) passes axe too
            refused = (f"/demonstrations/{site.draft}/freeze",)
            _open(driver, site, refused[0], visits)
            assert not driver.find_elements(By.ID, "freeze-confirm")
        _assert_every_page_was_clean(driver, visits, refused)


def test_a_refused_form_and_an_unknown_path_are_console_pages_that_pass_axe_in_both_languages(site: Site) -> None:
    visits: list[Visit] = []
    unknown = f"/demonstrations/{site.slug}/no-such-page"
    with chromium(1280, 1000, logs=True) as driver:
        _sign_in(driver, site, Role.EVALUATOR, visits)
        for lang, not_found in (("en", "Not found"), ("ko", "찾을 수 없음")):
            if lang == "ko":
                _click(driver, "switch-language", visits)
            _open(driver, site, unknown, visits)  # no console route: still the console's 404 page, not JSON
            assert driver.find_element(By.TAG_NAME, "html").get_attribute("lang") == lang
            assert driver.find_element(By.TAG_NAME, "h1").text == not_found
            assert driver.find_element(By.ID, "not-found").is_displayed()
            # A form whose CSRF token is not this session's (a stale tab, another site's forgery): refused, 403.
            driver.execute_script("document.querySelector('#language-form input[name=csrf]').value = 'forged'")
            _click(driver, "switch-language", visits)
            assert urlparse(driver.current_url).path == "/language"
            assert driver.find_element(By.TAG_NAME, "html").get_attribute("lang") == lang
            assert driver.find_element(By.ID, "csrf-refused").is_displayed()
        _assert_every_page_was_clean(driver, visits, refused=(unknown, "/language"))
    # API clients keep problem details, on the console's paths and the API's alike.
    for path, accept in ((unknown, "application/json"), ("/v1/no-such-resource", "text/html")):
        answer = site.admin.get(path, headers={"Accept": accept})
        assert answer.status_code == 404 and answer.headers["content-type"] == "application/problem+json", path
