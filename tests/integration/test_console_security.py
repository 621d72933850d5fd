"""The console's security: keys exchanged for session cookies (never in a URL), CSRF tokens on every form, a
Content-Security-Policy without inline script, rate-limited sign-in, sessions that end with their key, and
redirects that stay on this server. Through the real app on a real SQLite database; no browser needed."""

from __future__ import annotations

import re
from collections.abc import Iterator
from dataclasses import dataclass
from html.parser import HTMLParser
from pathlib import Path

import pytest
from fastapi.testclient import TestClient

from adapters.sql import AccessRepository, DemonstrationRepository, default_url
from api.console.web import SIGN_IN_LIMIT
from api.examples import PANGYO_PLAN
from api.main import create_app
from api.security import SESSION_COOKIE
from collector.settings import CollectorSettings
from pilot_core.access import Actor, Role
from pilot_core.demonstration import DemonstrationPlan
from tests.console_support import csrf_of, sign_in

SETUP = Actor.system("test_console_security")


@dataclass
class Console:
    client: TestClient
    token: str  # an evaluator's key
    draft: str  # slug of a draft the evaluator may freeze
    access: AccessRepository


@pytest.fixture
def console(tmp_path: Path) -> Iterator[Console]:
    settings = CollectorSettings(
        database_url=default_url(tmp_path), devices_file=tmp_path / "devices.yaml", signing_key_file=tmp_path / "key"
    )
    app = create_app(settings)
    access = AccessRepository(app.state.pilot.database)
    access.create_organisation("evaluators", "Evaluators", actor=SETUP)
    _, token = access.create_key("Kim Evaluator", Role.EVALUATOR, "evaluators", actor=SETUP)
    demonstrations = DemonstrationRepository(app.state.pilot.database)
    draft = demonstrations.create(DemonstrationPlan.model_validate(PANGYO_PLAN), actor=SETUP)
    demonstrations.add_participant(draft.id, "evaluators", actor=SETUP)
    with TestClient(app) as client:
        yield Console(client, token, draft.slug, access)
    app.state.pilot.database.dispose()


def _set_cookies(response_headers: list[tuple[str, str]]) -> dict[str, str]:
    return {value.split("=", 1)[0]: value for name, value in response_headers if name.lower() == "set-cookie"}


@pytest.mark.parametrize("scheme", ["http", "https"])
def test_a_key_is_exchanged_for_a_session_cookie(console: Console, scheme: str) -> None:
    client = TestClient(console.client.app, base_url=f"{scheme}://testserver")
    form = client.get("/sign-in")
    response = client.post(
        "/sign-in",
        data={"csrf": csrf_of(form.text), "api_key": console.token, "next": "/demonstrations"},
        follow_redirects=False,
    )
    assert response.status_code == 303 and response.headers["location"] == "/demonstrations"
    cookie = _set_cookies(response.headers.multi_items())[SESSION_COOKIE]
    flags = {part.strip().split("=")[0].lower() for part in cookie.split(";")}
    assert {"httponly", "path", "max-age"} <= flags and "samesite=lax" in cookie.lower()
    assert ("secure" in flags) is (scheme == "https")
    # The key is nowhere the browser keeps or shows: not in a cookie, a header or the page.
    assert console.token not in str(response.headers) and console.token not in response.text
    page = client.get("/demonstrations")
    assert page.status_code == 200 and console.token not in page.text and "Kim Evaluator" in page.text


def test_a_key_in_a_url_signs_nobody_in(console: Console) -> None:
    form = console.client.get(f"/sign-in?api_key={console.token}", follow_redirects=False)
    assert form.status_code == 200 and 'id="sign-in-form"' in form.text
    page = console.client.get(f"/demonstrations?api_key={console.token}", follow_redirects=False)
    assert page.status_code == 303 and page.headers["location"].startswith("/sign-in?")
    for response in (form, page):
        assert SESSION_COOKIE not in _set_cookies(response.headers.multi_items())


def test_every_form_needs_this_browsers_csrf_token(console: Console) -> None:
    client = console.client
    # Before signing in: the sign-in and language forms.
    assert client.post("/sign-in", data={"api_key": console.token}).status_code == 403
    assert client.post("/sign-in", data={"api_key": console.token, "csrf": "x" * 43}).status_code == 403
    assert client.post("/language", data={"lang": "ko", "next": "/sign-in"}).status_code == 403
    sign_in(client, console.token)
    token = csrf_of(client.get("/demonstrations").text)
    # Another session's token is no good either.
    other = TestClient(client.app)
    sign_in(other, console.token)
    foreign = csrf_of(other.get("/demonstrations").text)
    assert foreign != token
    for data in ({}, {"csrf": foreign}, {"csrf": ""}):
        freeze = client.post(f"/demonstrations/{console.draft}/freeze", data=data, follow_redirects=False)
        assert freeze.status_code == 403
        assert client.post("/language", data={**data, "lang": "ko"}).status_code == 403
        assert client.post("/sign-out", data=data).status_code == 403
    assert client.get(f"/v1/demonstrations/{console.draft}").json()["frozen"] is False
    # A cookie never authorises a change through the API itself: that needs a key.
    assert client.post(f"/v1/demonstrations/{console.draft}/freeze").status_code == 401
    assert client.get(f"/v1/demonstrations/{console.draft}").json()["frozen"] is False
    # With its token, the form works.
    hash_ = client.get(f"/v1/demonstrations/{console.draft}").json()["plan_hash"]
    frozen = client.post(
        f"/demonstrations/{console.draft}/freeze", data={"csrf": token, "plan_hash": hash_}, follow_redirects=False
    )
    assert frozen.status_code == 303
    assert client.get(f"/v1/demonstrations/{console.draft}").json()["frozen"] is True


def test_freezing_needs_the_hash_that_was_shown(console: Console) -> None:
    client = console.client
    sign_in(client, console.token)
    confirmation = client.get(f"/demonstrations/{console.draft}/freeze")
    hash_ = client.get(f"/v1/demonstrations/{console.draft}").json()["plan_hash"]
    assert f'id="freeze-hash">{hash_}<' in confirmation.text
    stale = client.post(
        f"/demonstrations/{console.draft}/freeze",
        data={"csrf": csrf_of(confirmation.text), "plan_hash": "sha256:" + "0" * 64},
    )
    assert stale.status_code == 409 and 'id="message"' in stale.text
    assert client.get(f"/v1/demonstrations/{console.draft}").json()["frozen"] is False


def test_sign_in_is_rate_limited(console: Console) -> None:
    client = console.client
    csrf = csrf_of(client.get("/sign-in").text)
    attempts = [
        client.post("/sign-in", data={"csrf": csrf, "api_key": f"pt_{'0' * 12}_wrong{n}"}).status_code
        for n in range(int(SIGN_IN_LIMIT.burst))
    ]
    assert attempts == [401] * int(SIGN_IN_LIMIT.burst)
    refused = client.post("/sign-in", data={"csrf": csrf, "api_key": console.token}, follow_redirects=False)
    assert refused.status_code == 429 and int(refused.headers["retry-after"]) >= 1
    assert SESSION_COOKIE not in client.cookies


def test_a_revoked_key_ends_its_sessions_and_signing_out_ends_one(console: Console) -> None:
    client = console.client
    sign_in(client, console.token)
    assert client.get("/demonstrations", follow_redirects=False).status_code == 200
    csrf = csrf_of(client.get("/demonstrations").text)
    assert client.post("/sign-out", data={"csrf": csrf}, follow_redirects=False).status_code == 303
    assert client.get("/demonstrations", follow_redirects=False).status_code == 303
    sign_in(client, console.token)
    key_id = console.token.split("_")[1]
    console.access.revoke_key(key_id, actor=SETUP)
    gone = client.get("/demonstrations", follow_redirects=False)
    assert gone.status_code == 303 and gone.headers["location"] == "/sign-in?next=/demonstrations"
    assert client.get(f"/v1/demonstrations/{console.draft}").status_code == 401


class _Scripts(HTMLParser):
    def __init__(self) -> None:
        super().__init__()
        self.inline: list[str] = []

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        names = dict(attrs)
        if tag == "script" and not names.get("src"):
            self.inline.append(f"<script> without src in {tag}")
        self.inline += [f"{tag} {name}=" for name in names if name.startswith("on")]
        self.inline += [
            f"{tag} {name}" for name, value in attrs if (value or "").strip().lower().startswith("javascript:")
        ]


def test_every_page_has_a_policy_without_inline_script(console: Console) -> None:
    client = console.client
    anonymous = [client.get("/sign-in")]
    sign_in(client, console.token)
    pages = [
        *anonymous,
        client.get("/demonstrations"),
        client.get(f"/demonstrations/{console.draft}"),
        client.get(f"/demonstrations/{console.draft}/freeze"),
        client.get(f"/demonstrations/{console.draft}/amendments"),
        client.get(f"/demonstrations/{console.draft}/live"),
        client.get("/demonstrations/no-such-demo"),
    ]
    for response in pages:
        assert response.headers["content-type"].startswith("text/html"), response.url
        policy = dict(
            part.strip().split(" ", 1)
            for part in response.headers["content-security-policy"].split(";")
            if part.strip()
        )
        assert policy["script-src"] == "'self'" and policy["default-src"] == "'self'", response.url
        assert policy["object-src"] == "'none'" and policy["frame-ancestors"] == "'none'"
        assert response.headers["x-frame-options"] == "DENY" and response.headers["cache-control"] == "no-store"
        parser = _Scripts()
        parser.feed(response.text)
        assert parser.inline == [], (response.url, parser.inline)
        assert not re.search(
            r"https?://(?!127\.0\.0\.1|testserver)", re.sub(r'xmlns(:\w+)?="[^"]*"', "", response.text)
        )


def test_redirects_stay_on_this_server_and_the_language_is_remembered(console: Console) -> None:
    client = console.client
    for elsewhere in ("//evil.example/x", "https://evil.example/", "/\\evil.example", "javascript:alert(1)"):
        client.cookies.clear()
        form = client.get("/sign-in")
        response = client.post(
            "/sign-in",
            data={"csrf": csrf_of(form.text), "api_key": console.token, "next": elsewhere},
            follow_redirects=False,
        )
        assert response.headers["location"] == "/demonstrations", elsewhere
    csrf = csrf_of(client.get("/demonstrations").text)
    switched = client.post("/language", data={"csrf": csrf, "lang": "ko", "next": "/demonstrations"})
    assert switched.status_code == 200 and '<html lang="ko">' in switched.text and "실증 목록" in switched.text
    again = client.get(f"/demonstrations/{console.draft}/amendments")
    assert '<html lang="ko">' in again.text  # remembered for every later page
    client.cookies.delete("pilot_lang")
    assert '<html lang="ko">' in client.get("/demonstrations", headers={"Accept-Language": "ko-KR,ko;q=0.9"}).text
    assert '<html lang="en">' in client.get("/demonstrations", headers={"Accept-Language": "en-GB"}).text


def test_the_console_serves_its_own_icon_so_browsers_log_no_404(console: Console) -> None:
    page = console.client.get("/sign-in")
    linked = re.search(r'<link rel="icon" href="([^"]+)"', page.text)
    assert linked is not None and linked.group(1).startswith("/static/"), "the layout links a vendored icon"
    for path in (linked.group(1), "/favicon.ico"):  # the latter: where Chromium looks unasked
        icon = console.client.get(path)
        assert icon.status_code == 200 and icon.headers["content-type"].startswith("image/svg+xml"), path
        assert icon.content.startswith(b"<svg") and b"<script" not in icon.content


BROWSER_ACCEPT = "text/html,application/xhtml+xml,application/xml;q=0.9,image/avif,image/webp,*/*;q=0.8"


@pytest.mark.parametrize("lang", ["en", "ko"])
def test_an_unknown_console_path_is_the_console_s_404_page_and_api_clients_keep_problem_details(
    console: Console, lang: str
) -> None:
    client = console.client
    sign_in(client, console.token)
    client.cookies.set("pilot_lang", lang)
    words = {"en": "Not found", "ko": "찾을 수 없음"}[lang]
    for path in (f"/demonstrations/{console.draft}/no-such-page", "/demonstrations/a/b/c", "/no-such-page"):
        page = client.get(path, headers={"Accept": BROWSER_ACCEPT})
        assert page.status_code == 404 and page.headers["content-type"].startswith("text/html"), path
        assert f'<html lang="{lang}">' in page.text and f"<h1>{words}</h1>" in page.text, path
        assert "content-security-policy" in page.headers, path  # the console's headers, as on every page
        for headers in ({"Accept": "application/json"}, {"Accept": "*/*"}, {}):
            answer = client.get(path, headers=headers)
            assert answer.status_code == 404 and answer.headers["content-type"] == "application/problem+json", path
    for path in ("/v1/no-such-resource", f"/v1/demonstrations/{console.draft}/no-such-page"):
        answer = client.get(path, headers={"Accept": BROWSER_ACCEPT})  # the API is the API, whoever asks
        assert answer.status_code == 404 and answer.headers["content-type"] == "application/problem+json", path
