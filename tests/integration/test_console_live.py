"""The console's live line and its one-time sign-in link: through the app, and in headless Chromium.

The browser test serves the real app with uvicorn over a line whose records went device → MQTT → collector →
InfluxDB this morning (tests/integration/test_live_line.py), signs in with a one-time link, and checks that the
page shows the API's numbers, refreshes itself without a console error, and passes axe-core. Every role against
the live page: tests/integration/test_console_tenancy.py.
"""

from __future__ import annotations

import datetime as dt
import os
import socket
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import uvicorn
from fastapi import FastAPI
from fastapi.testclient import TestClient
from selenium.webdriver.common.by import By
from selenium.webdriver.support.ui import WebDriverWait

from adapters.catalog import BUNDLED_PROFILES, load_profiles
from adapters.influxdb import InfluxClient
from adapters.sql import AccessRepository
from api.main import create_app
from api.security import SESSION_COOKIE
from collector.settings import CollectorSettings
from pilot.demo import admin_key, api_settings, private_services, run_demo
from pilot_core.access import Role
from pilot_core.live import DEAD_LETTER_MEASUREMENT
from pilot_core.registry import DeviceRegistry
from pilot_core.validation import PRODUCTION_MEASUREMENT
from simulators.scenario import load_scenario
from tests.api_support import OPERATOR, key_headers
from tests.browser import chromium, wait_for_language
from tests.integration.test_cli_demo import short_scenario
from tests.integration.test_live_line import line, morning, noon_zone, plan
from tests.support import count_points, publish_all, running_collector, wait_until

__all__ = ["line"]  # the live line test's fixture, shared

AXE = Path(__file__).resolve().parents[1] / "vendor" / "axe.min.js"


def link_for(app: FastAPI, role: Role = Role.ADMIN, organisation: str = OPERATOR, valid_s: float = 300) -> str:
    access = AccessRepository(app.state.pilot.database)
    key_headers(app, role, organisation)  # makes the organisation too
    key = next(k for k in reversed(access.keys(organisation)) if k.role is role)
    return access.create_sign_in_link(key.key_id, dt.timedelta(seconds=valid_s))


def test_a_sign_in_link_opens_a_session_once(tmp_path: Path) -> None:
    app = create_app(CollectorSettings(database_url=f"sqlite:///{tmp_path / 'pilot.db'}"))
    token = link_for(app, Role.EVALUATOR, "evaluators")
    with TestClient(app) as browser:
        signed = browser.get(f"/sign-in/link?token={token}&next=/demonstrations", follow_redirects=False)
        assert signed.status_code == 303 and signed.headers["location"] == "/demonstrations"
        cookie = signed.headers["set-cookie"].lower()
        assert "httponly" in cookie and "samesite=lax" in cookie and SESSION_COOKIE in cookie
        page = browser.get("/demonstrations")
        assert page.status_code == 200 and "evaluators" in page.text
        # Opened again in the same browser: still signed in, nothing spent.
        assert browser.get(f"/sign-in/link?token={token}", follow_redirects=False).status_code == 303
    with TestClient(app) as other:  # the link forwarded to someone else: spent
        refused = other.get(f"/sign-in/link?token={token}", follow_redirects=False)
        assert refused.status_code == 401 and 'id="sign-in-form"' in refused.text
        assert "used or has expired" in refused.text and SESSION_COOKIE not in other.cookies
        expired = link_for(app, valid_s=-1)
        assert other.get(f"/sign-in/link?token={expired}", follow_redirects=False).status_code == 401
        # Only a path on this server is followed.
        fresh = link_for(app)
        away = other.get(f"/sign-in/link?token={fresh}&next=//example.com/x", follow_redirects=False)
        assert away.status_code == 303 and away.headers["location"] == "/demonstrations"
    with TestClient(app) as garbling:  # a link a mail client or a chat joined to the next words: the same page
        garbled = garbling.get(f"/sign-in/link?token={link_for(app)}{'x' * 200}", follow_redirects=False)
        assert garbled.status_code == 401 and 'id="sign-in-form"' in garbled.text, garbled.text
        assert "used or has expired" in garbled.text and SESSION_COOKIE not in garbling.cookies


def test_guessing_sign_in_links_is_throttled_as_sign_in_is(tmp_path: Path) -> None:
    app = create_app(CollectorSettings(database_url=f"sqlite:///{tmp_path / 'pilot.db'}"))
    with TestClient(app) as client:
        statuses = [client.get(f"/sign-in/link?token={'a' * 43}").status_code for _ in range(12)]
    assert statuses[:10] == [401] * 10 and statuses[10:] == [429, 429]


@contextmanager
def serving(app: FastAPI) -> Iterator[str]:
    """``app`` served by uvicorn on a free port of 127.0.0.1, in a thread; its base URL."""
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    server = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=port, log_level="warning"))
    thread = threading.Thread(target=server.run, name="uvicorn", daemon=True)
    thread.start()
    wait_until(lambda: server.started, timeout_s=30, what="uvicorn")
    try:
        yield f"http://127.0.0.1:{port}"
    finally:
        server.should_exit = True
        thread.join(30)


def test_the_live_page_shows_the_apis_numbers_and_refreshes_itself(
    line: tuple[CollectorSettings, DeviceRegistry, str],
) -> None:
    settings, registry, site = line
    zone = noon_zone()
    day = dt.datetime.combine(dt.datetime.now(zone).date(), dt.time(), zone)
    with running_collector(settings, registry), InfluxClient(settings.influx) as influx:
        publish_all(settings.mqtt, morning(site, day), f"device-{site}")
        where = f"\"site\" = '{site}'"
        wait_until(
            lambda: (
                count_points(influx, PRODUCTION_MEASUREMENT, where=where) == 24
                and count_points(influx, DEAD_LETTER_MEASUREMENT, "count", where=where) == 2
            ),
            what="the morning's records and both dead letters in InfluxDB",
        )
        app = create_app(settings)
        headers = key_headers(app)
        with TestClient(app) as api:
            slug = api.post("/v1/demonstrations", json=plan(site, zone, day), headers=headers).json()["slug"]
        token = link_for(app)
        with serving(app) as base, chromium() as browser:
            browser.get(f"{base}/sign-in/link?token={token}&next=/demonstrations/{slug}/live")
            assert browser.current_url == f"{base}/demonstrations/{slug}/live"
            with TestClient(app) as api:
                live = api.get(f"/v1/demonstrations/{slug}/live", headers=headers).json()

            def text(element_id: str) -> str:
                return browser.find_element(By.ID, element_id).text

            for kpi, value in live["today"]["kpis"].items():
                assert text(f"today-{kpi}") == f"{value:.2%}", kpi
            assert text("today-produced") == "1,200" and text("today-good") == "1,152"
            row = browser.find_element(By.CSS_SELECTOR, '#devices-table tr[data-device="컨베이어-1"]').text
            assert "online" in row and "idle · no order" in row
            assert "05:30" in row  # its last message, in the line's time zone
            health = browser.find_element(By.CSS_SELECTOR, f'tr[data-collector="{settings.client_id}"]').text
            assert "healthy" in health and "connected" in health
            refused = browser.find_element(By.CSS_SELECTOR, 'tr[data-reason="unknown_state"]').text
            assert "daydreaming" in refused and refused.split()[1] == "1"

            # It refreshes by itself (live.js): the #live part is replaced by a fresh one.
            browser.execute_script("document.getElementById('live').dataset.stale = 'yes'")
            WebDriverWait(browser, 30).until(
                lambda b: b.execute_script("return document.getElementById('live').dataset.stale") is None
            )
            assert text("today-oee") == f"{live['today']['kpis']['oee']:.2%}"

            # The Korean page draws the same numbers in Korean.
            browser.find_element(By.ID, "switch-language").click()
            wait_for_language(browser, "ko")
            assert (
                "실시간 라인" in text("live-title") and "정상" in browser.find_element(By.ID, "collectors-table").text
            )

            # The whole document in either language: the layout (language switch, sign-out) as well as the page.
            for lang in ("ko", "en"):
                if lang == "en":
                    browser.find_element(By.ID, "switch-language").click()
                    wait_for_language(browser, "en")
                browser.execute_script(AXE.read_text(encoding="utf-8"))
                violations = browser.execute_async_script(
                    "const done = arguments[arguments.length - 1];"
                    " axe.run(document, {rules: {'label-content-name-mismatch': {enabled: true}}})"
                    "  .then(r => done(r.violations.map(v => [v.id, v.impact])));"
                )
                assert [v for v in violations if v[1] in ("serious", "critical")] == [], lang
            # Every error counts, the browser's own icon request too (the console serves one).
            errors = [e for e in browser.get_log("browser") if e["level"] == "SEVERE"]
            assert errors == []
            requests = browser.execute_script("return performance.getEntriesByType('resource').map(e => e.name)")
            assert all(r.startswith(base) for r in requests), requests


SCREENSHOT = Path(__file__).resolve().parents[2] / "docs" / "images" / "console-demonstration.png"


def test_the_demos_link_opens_its_demonstration_in_a_browser(tmp_path: Path) -> None:
    """The demo's data (two days of each period), its one-time link opened in Chromium: the demonstration page,
    signed in. Its screenshot is the README's: PILOT_UPDATE_SCREENSHOTS=1 writes it to docs/images."""
    catalog = load_profiles(BUNDLED_PROFILES)
    scenario = load_scenario(short_scenario(tmp_path), catalog)
    state_dir = tmp_path / "demo"
    with private_services(state_dir) as (broker, influxdb):
        result = run_demo(scenario, catalog, broker, influxdb, state_dir, say=lambda _: None)
        assert result.complete and result.evaluation is not None
        app = create_app(api_settings(result, broker.port, influxdb.url))
        access = admin_key(result)
        slug = result.evaluation.slug
        with serving(app) as base, chromium(1280, 1500) as browser:
            browser.get(f"{base}/sign-in/link?token={access.sign_in_token}&next=/demonstrations/{slug}")
            assert browser.current_url == f"{base}/demonstrations/{slug}"
            assert browser.find_element(By.ID, "plan-title").text == scenario.name
            assert browser.find_element(By.ID, "plan-hash").text == result.evaluation.result.plan_hash
            png = browser.get_screenshot_as_png()
            assert png.startswith(b"\x89PNG") and len(png) > 50_000
            if os.environ.get("PILOT_UPDATE_SCREENSHOTS") == "1":
                SCREENSHOT.parent.mkdir(parents=True, exist_ok=True)
                SCREENSHOT.write_bytes(png)
            browser.find_element(By.ID, "live-link").click()
            WebDriverWait(browser, 30).until(lambda b: b.current_url.endswith(f"/demonstrations/{slug}/live"))
            # The demo's collector has stopped and its data is weeks old: the page says so, it does not fail.
            assert browser.find_element(By.ID, "live-title").text.endswith("the line, live")
            assert browser.find_elements(By.ID, "live-error") == []


def test_head_is_answered_wherever_get_is_but_never_spends_a_sign_in_link(tmp_path: Path) -> None:
    # HEAD got 405 everywhere (link checkers, `curl -I`, monitors), though reading requests are GET and HEAD.
    app = create_app(CollectorSettings(database_url=f"sqlite:///{tmp_path / 'pilot.db'}"))
    token = link_for(app)
    with TestClient(app) as browser:
        assert browser.head(f"/sign-in/link?token={token}").status_code == 405  # a HEAD must not spend it
        assert browser.get(f"/sign-in/link?token={token}", follow_redirects=False).status_code == 303
        for path in ("/sign-in", "/demonstrations", "/v1/demonstrations", "/health", "/favicon.ico"):
            got, head = browser.get(path, follow_redirects=False), browser.head(path, follow_redirects=False)
            assert head.status_code == got.status_code and got.status_code in (200, 303), (path, head, got)
            assert head.headers.get("content-type") == got.headers.get("content-type"), path
            assert head.content == b"", path
        assert browser.head("/sign-out").status_code == 405  # only where GET is answered
