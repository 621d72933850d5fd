"""Roles and visibility, API key tokens, and the changes an audit entry records."""

from __future__ import annotations

from pilot_core import api_keys
from pilot_core.access import PERMISSIONS, Action, Membership, Principal, Role
from pilot_core.audit import json_changes

SHARED = Membership(7, "startup-a", ("factory", "evaluators", "startup-c"))


def principal(role: Role, organisation: str, demonstration_id: int | None = None) -> Principal:
    return Principal("0123456789ab", "someone", role, organisation, demonstration_id)


def test_each_role_sees_its_own_and_what_it_takes_part_in() -> None:
    assert principal(Role.STARTUP, "startup-a").sees(SHARED)
    assert principal(Role.FACTORY_MANAGER, "factory").sees(SHARED)
    assert not principal(Role.STARTUP, "startup-b").sees(SHARED)
    assert not principal(Role.EVALUATOR, "evaluators-2").sees(SHARED)
    assert principal(Role.ADMIN, "operator").sees(SHARED)
    assert not principal(Role.EVALUATOR, "evaluators", demonstration_id=8).sees(SHARED)
    assert principal(Role.EVALUATOR, "evaluators", demonstration_id=7).sees(SHARED)
    assert not principal(Role.STARTUP, "startup-a").sees(Membership(9, None))  # an admin's own


def test_a_startup_changes_only_what_its_organisation_owns() -> None:
    owner, partner = principal(Role.STARTUP, "startup-a"), principal(Role.STARTUP, "startup-c")
    for action in (Action.REPLACE_DRAFT, Action.FREEZE, Action.AMEND, Action.MANAGE_PARTICIPANTS):
        assert owner.may(action, SHARED) and not partner.may(action, SHARED)
    assert partner.may(Action.READ, SHARED)


def test_an_evaluator_reads_and_freezes_and_nothing_else() -> None:
    evaluator = principal(Role.EVALUATOR, "evaluators")
    assert {a for a in Action if evaluator.may(a, SHARED)} == {Action.READ, Action.FREEZE}
    assert PERMISSIONS[Role.FACTORY_MANAGER] == {Action.READ}
    assert not principal(Role.EVALUATOR, "evaluators-2").may(Action.FREEZE, SHARED)  # cannot see it


def test_a_key_limited_to_one_demonstration_creates_nothing() -> None:
    assert principal(Role.STARTUP, "startup-a").may(Action.CREATE)
    assert not principal(Role.STARTUP, "startup-a", demonstration_id=7).may(Action.CREATE)
    assert principal(Role.ADMIN, "operator").may(Action.ADMINISTER)
    assert not principal(Role.STARTUP, "startup-a").may(Action.ADMINISTER)


def test_tokens_parse_and_only_their_digest_is_kept() -> None:
    new = api_keys.new_key()
    assert api_keys.parse(new.token) == (new.key_id, new.token.split("_", 2)[2])
    assert api_keys.matches(new.token.split("_", 2)[2], new.secret_sha256)
    assert new.token.split("_", 2)[2] not in new.secret_sha256
    assert api_keys.new_key().token != new.token
    for malformed in ("", "pt_", new.token[:-1], new.token + "=", "pt_XYZ" + new.token[6:], f" {new.token}x"):
        assert api_keys.parse(malformed) is None


def test_json_changes_name_every_changed_value_by_its_path() -> None:
    before = {"name": "Cell", "windows": [{"end": 1}, {"end": 2}], "targets": [1], "gone": True}
    after = {"name": "Cell", "windows": [{"end": 1}, {"end": 3}], "targets": [1, 2], "new": "x"}
    assert json_changes(before, after) == [
        {"path": "windows[1].end", "before": 2, "after": 3},
        {"path": "targets", "before": [1], "after": [1, 2]},
        {"path": "gone", "before": True, "after": None},
        {"path": "new", "before": None, "after": "x"},
    ]
    assert json_changes(before, before) == []
    assert json_changes({"x": 1}, {"x": 1.0}) == [{"path": "x", "before": 1, "after": 1.0}]
    large = json_changes({"calendar": list(range(5000))}, {"calendar": []})
    assert large == [{"path": "calendar", "before": "<list of 5000 items>", "after": []}]
