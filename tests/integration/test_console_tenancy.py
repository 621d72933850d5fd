"""Every role against every console page, as tests/integration/test_tenancy.py does for the API's endpoints.

The same world: a demonstration of startup A shared with a partner startup, the host factory and the evaluators,
and callers of every role inside and outside it. Each signs in to the console (a session, not a key) and asks
every page; the matrix says what each must get. What a caller cannot see is the same 404 page as what does not
exist. Runs on SQLite and PostgreSQL, against the real InfluxDB.
"""

from __future__ import annotations

import re
from collections.abc import Callable

from tests.console_support import csrf_of, session_cookie
from tests.integration.test_tenancy import CALLERS, World, world

__all__ = ["world"]  # the API tenancy test's fixture, shared

READ = "303 200 200 404 200 200 404 200 404 404"
EVERYONE = "303 200 200 200 200 200 200 200 200 200"
# Anonymous callers are sent to sign in (303); the rest as the API answers the same request.
MATRIX: dict[tuple[str, str], str] = {
    ("GET", "/"): "303 303 303 303 303 303 303 303 303 303",
    ("GET", "/sign-in"): "200 303 303 303 303 303 303 303 303 303",
    ("GET", "/demonstrations"): EVERYONE,
    ("GET", "/demonstrations/{ref}"): READ,
    ("GET", "/demonstrations/{ref}/amendments"): READ,
    ("GET", "/demonstrations/{ref}/live"): READ,
    ("GET", "/demonstrations/{draft}/freeze"): "303 200 200 404 403 403 404 200 404 404",
    ("POST", "/demonstrations/{draft}/freeze"): "303 303 303 404 403 403 404 303 404 404",
}
PAGES: dict[tuple[str, str], Callable[[World, str], str]] = {
    ("GET", "/"): lambda w, d: "/",
    ("GET", "/sign-in"): lambda w, d: "/sign-in",
    ("GET", "/demonstrations"): lambda w, d: "/demonstrations",
    ("GET", "/demonstrations/{ref}"): lambda w, d: f"/demonstrations/{w.shared}",
    ("GET", "/demonstrations/{ref}/amendments"): lambda w, d: f"/demonstrations/{w.shared}/amendments",
    ("GET", "/demonstrations/{ref}/live"): lambda w, d: f"/demonstrations/{w.shared}/live",
    ("GET", "/demonstrations/{draft}/freeze"): lambda w, d: f"/demonstrations/{d}/freeze",
    ("POST", "/demonstrations/{draft}/freeze"): lambda w, d: f"/demonstrations/{d}/freeze",
}


def _cookies(world: World, caller: str) -> dict[str, str]:
    if caller not in world.tokens:
        return {}
    return session_cookie(world.client.app, world.tokens[caller])  # type: ignore[arg-type]


def _ask(world: World, caller: str, method: str, path: str) -> int:
    cookies = _cookies(world, caller)
    world.client.cookies.clear()
    world.client.cookies.update(cookies)
    if method == "GET":
        return world.client.get(path, follow_redirects=False).status_code
    # A form needs the session's CSRF token: taken from a page the caller may open.
    page = world.client.get("/sign-in" if not cookies else "/demonstrations", follow_redirects=True)
    data = {"csrf": csrf_of(page.text)}
    if "/freeze" in path:
        data["plan_hash"] = world.client.get(
            path.removesuffix("/freeze").replace("/demonstrations/", "/v1/demonstrations/"),
            headers=world.headers("admin"),
        ).json()["plan_hash"]
    return world.client.post(path, data=data, follow_redirects=False).status_code


def test_every_caller_against_every_page(world: World) -> None:
    failures = []
    draft = world.demonstration(frozen=False)
    for (method, route), expected in MATRIX.items():
        for caller, status in zip(CALLERS, expected.split(), strict=True):
            if method == "POST" and status == "303" and caller != "anonymous":  # a freeze that succeeds uses it up
                draft = world.demonstration(frozen=False)
            path = PAGES[(method, route)](world, draft)
            got = _ask(world, caller, method, path)
            if got != int(status):
                failures.append(f"{caller:>15} {method} {path}: {got}, expected {status}")
    assert not failures, "\n".join(failures)


def test_what_a_caller_cannot_see_is_the_same_page_as_what_does_not_exist(world: World) -> None:
    for caller in ("outsider", "other_factory", "other_evaluator", "scoped"):
        world.client.cookies.clear()
        world.client.cookies.update(_cookies(world, caller))
        for suffix in ("", "/amendments", "/freeze", "/live"):
            hidden = world.client.get(f"/demonstrations/{world.shared}{suffix}")
            missing = world.client.get(f"/demonstrations/no-such-demo{suffix}")
            assert (hidden.status_code, missing.status_code) == (404, 404)

            # The pages differ only in the CSRF token of their forms and the path the language switch returns to.
            def bare(text: str) -> str:
                return re.sub(r'value="[^"]*"', "", text)

            assert bare(hidden.text) == bare(missing.text)
            assert world.shared not in bare(hidden.text)  # only in the path the language switch returns to


def test_the_list_and_the_download_links_hold_only_what_the_caller_may_see(world: World) -> None:
    for caller, sees in (
        ("owner", True),
        ("factory", True),
        ("evaluator", True),
        ("outsider", False),
        ("other_evaluator", False),
    ):
        world.client.cookies.clear()
        world.client.cookies.update(_cookies(world, caller))
        listed = world.client.get("/demonstrations")
        assert (world.shared in listed.text) is sees, caller
        # The session cookie authorises the API's reads (the page's download links) exactly as the caller's key.
        via_cookie = world.client.get(f"/v1/demonstrations/{world.shared}/comparison?format=csv")
        world.client.cookies.clear()  # the key alone
        via_key = world.client.get(
            f"/v1/demonstrations/{world.shared}/comparison?format=csv", headers=world.headers(caller)
        )
        assert via_cookie.status_code == via_key.status_code == (200 if sees else 404), caller
