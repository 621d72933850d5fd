"""Console sessions shared by `pilot api` replicas on one PostgreSQL (issue 23), and kept across a restart.

Behind a load balancer without cookie affinity a browser's requests land on either replica: signed in on one, it
is signed in on the other, its forms' CSRF tokens are accepted there, and signing out on one signs it out
everywhere. Real `pilot api` processes (tests/integration/test_replicas.py's), on the test PostgreSQL.
"""

from __future__ import annotations

from pathlib import Path

import httpx

from adapters.influxdb import InfluxSettings
from adapters.sql import AccessRepository, Database
from api.security import SESSION_COOKIE
from pilot_core.access import Actor, Role
from tests.console_support import csrf_of
from tests.integration.test_replicas import empty_url, replicas, shared_url

__all__ = ["empty_url", "shared_url"]  # test_replicas' fixtures, shared

SETUP = Actor.system("test_console_replicas")


def _evaluator_key(url: str) -> str:
    with Database(url) as database:
        access = AccessRepository(database)
        access.create_organisation("evaluators", "Evaluators", actor=SETUP)
        return access.create_key("Kim Evaluator", Role.EVALUATOR, "evaluators", actor=SETUP)[1]


def _sign_in(base: str, key: str) -> str:
    """Sign in through the form on ``base``; the session cookie's value."""
    with httpx.Client(base_url=base) as browser:
        form = browser.get("/sign-in")
        signed = browser.post("/sign-in", data={"csrf": csrf_of(form.text), "api_key": key, "next": "/demonstrations"})
        assert signed.status_code == 303, signed.text
        return signed.cookies[SESSION_COOKIE]


def _page(base: str, cookie: str, path: str = "/demonstrations") -> httpx.Response:
    return httpx.get(base + path, cookies={SESSION_COOKIE: cookie}, follow_redirects=False)


def _post(base: str, cookie: str, path: str, form: dict[str, str]) -> httpx.Response:
    return httpx.post(base + path, data=form, cookies={SESSION_COOKIE: cookie}, follow_redirects=False)


def test_a_session_opened_on_one_replica_works_and_ends_on_the_other(
    shared_url: str, influx_settings: InfluxSettings, tmp_path: Path
) -> None:
    key = _evaluator_key(shared_url)
    with replicas(shared_url, influx_settings, tmp_path) as (first, second):
        cookie = _sign_in(first, key)
        page = _page(second, cookie)
        assert page.status_code == 200 and "Kim Evaluator" in page.text
        csrf = csrf_of(page.text)
        # A form posted to the other replica with the session's CSRF token is accepted; a forged one is not.
        switched = _post(second, cookie, "/language", {"csrf": csrf, "lang": "ko", "next": "/demonstrations"})
        assert switched.status_code == 303 and switched.headers["location"] == "/demonstrations"
        forged = _post(first, cookie, "/language", {"csrf": "x" * 64, "lang": "ko", "next": "/demonstrations"})
        assert forged.status_code == 403
        assert csrf_of(_page(first, cookie).text) == csrf  # one session, one token, whichever replica answers
        signed_out = _post(second, cookie, "/sign-out", {"csrf": csrf})
        assert signed_out.status_code == 303 and signed_out.headers["location"] == "/sign-in"
        for base in (first, second):
            refused = _page(base, cookie)
            assert refused.status_code == 303 and refused.headers["location"].startswith("/sign-in"), base
            assert httpx.get(f"{base}/v1/demonstrations", cookies={SESSION_COOKIE: cookie}).status_code == 401


def test_a_restart_keeps_the_session(shared_url: str, influx_settings: InfluxSettings, tmp_path: Path) -> None:
    key = _evaluator_key(shared_url)
    with replicas(shared_url, influx_settings, tmp_path, count=1) as (before,):
        cookie = _sign_in(before, key)
        assert _page(before, cookie).status_code == 200
    with replicas(shared_url, influx_settings, tmp_path, count=1) as (after,):
        page = _page(after, cookie)
        assert page.status_code == 200 and "Kim Evaluator" in page.text
