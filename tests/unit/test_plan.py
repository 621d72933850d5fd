"""DemonstrationPlan: what it refuses, and a hash that names exactly one plan."""

from __future__ import annotations

import copy
import json
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from pydantic import BaseModel, ValidationError
from pydantic_core import to_jsonable_python

from pilot_core.calendar import Calendar, PlannedStop
from pilot_core.demonstration import (
    AdjustedBaselinePlan,
    ControlLinePlan,
    CountCorrection,
    DemonstrationPlan,
    Design,
    Exclusion,
    Product,
    StateCorrection,
    StateOverride,
    Target,
    Window,
    canonical_json,
    plan_hash,
)

Raw = dict[str, Any]


def raw_plan() -> Raw:
    return {
        "name": "Cobot cell pilot",
        "site": "pangyo",
        "line": "line-1",
        "devices": ["press-1", "cobot-1", "meter-1"],
        "output_devices": ["cobot-1"],
        "energy_meters": ["meter-1"],
        "calendar": {"timezone": "Asia/Seoul", "shifts": [{"start": "08:00", "end": "17:00"}]},
        "windows": [
            {
                "name": "before",
                "phase": "baseline",
                "start": "2026-09-07T00:00:00+09:00",
                "end": "2026-09-21T00:00:00+09:00",
            },
            {
                "name": "after",
                "phase": "pilot",
                "start": "2026-10-05T00:00:00+09:00",
                "end": "2026-10-19T00:00:00+09:00",
            },
        ],
        "products": [{"id": "bracket-a", "ideal_cycle_time_s": 42.0}],
        "targets": [{"kpi": "cycle_time_mean", "direction": "decrease", "change_pct": 10}],
        "confidence_level": 0.9,
    }


def test_a_small_plan_is_valid() -> None:
    plan = DemonstrationPlan.model_validate(raw_plan())
    assert plan.output_devices == ["cobot-1"]
    assert [w.name for w in plan.windows] == ["before", "after"]
    assert plan.targets[0].label == "cycle_time_mean −10%"


def test_a_plan_without_a_design_keeps_its_hash_and_a_design_is_hashed_with_the_plan() -> None:
    """Plans frozen before design before data existed keep their hash; a design, once chosen, is hashed with the
    plan, defaults and all."""
    plain = DemonstrationPlan.model_validate(raw_plan())
    assert plain.design is None and "design" not in json.loads(canonical_json(plain))
    assert plan_hash(DemonstrationPlan.model_validate({**raw_plan(), "design": None})) == plan_hash(plain)
    chosen = DemonstrationPlan.model_validate({**raw_plan(), "design": {}})
    assert chosen.design == Design() and plan_hash(chosen) != plan_hash(plain)
    assert plan_hash(DemonstrationPlan.model_validate({**raw_plan(), "product_mix": False})) == plan_hash(plain)
    standardised = DemonstrationPlan.model_validate({**raw_plan(), "product_mix": True})
    assert json.loads(canonical_json(standardised))["product_mix"] is True
    designed = DemonstrationPlan.model_validate(
        {**raw_plan(), "design": {"power": 0.9, "expected_change_pct": {"cycle_time_mean": 15}}}
    )
    assert designed.design == Design(power=0.9, expected_change_pct={"cycle_time_mean": 15})
    assert json.loads(canonical_json(designed))["design"]["power"] == 0.9
    assert plan_hash(designed) != plan_hash(plain)


@pytest.mark.parametrize(
    ("design", "message"),
    [
        ({"expected_change_pct": {"oee": 5}}, "design.expected_change_pct names KPIs without a target: oee"),
        ({"stated_mde_pct": {"scrap_ratio": 3}}, "design.stated_mde_pct names KPIs without a target: scrap_ratio"),
        ({"power": 0.3}, "greater than or equal to 0.5"),
        ({"expected_change_pct": {"cycle_time_mean": 0}}, "greater than 0"),
    ],
)
def test_a_design_that_names_no_target_or_an_impossible_power_is_refused(design: Raw, message: str) -> None:
    with pytest.raises(ValidationError, match=message):
        DemonstrationPlan.model_validate({**raw_plan(), "design": design})


def _naive_window(raw: Raw) -> None:
    raw["windows"][0]["start"] = "2026-09-07T00:00:00"


def _overlapping(raw: Raw) -> None:
    raw["windows"][1]["start"] = "2026-09-20T00:00:00+09:00"


def _no_pilot(raw: Raw) -> None:
    raw["windows"][1]["phase"] = "baseline"


def _output_outside(raw: Raw) -> None:
    raw["output_devices"] = ["packer-9"]


def _worsening_target(raw: Raw) -> None:
    raw["targets"][0]["direction"] = "increase"


def _unknown_kpi(raw: Raw) -> None:
    raw["targets"][0]["kpi"] = "happiness"


def _odd_level(raw: Raw) -> None:
    raw["confidence_level"] = 0.85


def _duplicate_products(raw: Raw) -> None:
    raw["products"].append({"id": "bracket-a", "ideal_cycle_time_s": 30.0})


@pytest.mark.parametrize(
    ("change", "message"),
    [
        (_naive_window, "give a time zone offset"),
        (_overlapping, "windows 'before' and 'after' overlap"),
        (_no_pilot, "at least one baseline and one pilot window"),
        (_output_outside, "output_devices must be devices in scope; not in scope: packer-9"),
        (_worsening_target, "cycle_time_mean is better when lower: a target for it must decrease"),
        (_unknown_kpi, "unknown KPI 'happiness'"),
        (_odd_level, "confidence_level must be one of"),
        (_duplicate_products, "product ids must be unique"),
    ],
)
def test_invalid_plans_are_refused_with_a_reason(change: Callable[[Raw], None], message: str) -> None:
    raw = raw_plan()
    change(raw)
    with pytest.raises(ValidationError, match=message):
        DemonstrationPlan.model_validate(raw)


def test_plan_hash_is_stable() -> None:
    first, second = DemonstrationPlan.model_validate(raw_plan()), DemonstrationPlan.model_validate(raw_plan())
    assert plan_hash(first) == plan_hash(second)
    assert plan_hash(first).startswith("sha256:") and len(plan_hash(first)) == 71
    # Key order in the input does not matter, and the canonical text reads back to the same hash.
    reordered = DemonstrationPlan.model_validate(dict(reversed(list(raw_plan().items()))))
    assert plan_hash(reordered) == plan_hash(first)
    assert plan_hash(DemonstrationPlan.model_validate_json(canonical_json(first))) == plan_hash(first)


def test_the_same_instant_in_another_offset_is_another_plan() -> None:
    # The canonical text keeps the offset as written; say so rather than assume otherwise.
    raw = raw_plan()
    raw["windows"][0]["start"] = "2026-09-06T15:00:00+00:00"
    assert plan_hash(DemonstrationPlan.model_validate(raw)) != plan_hash(DemonstrationPlan.model_validate(raw_plan()))


@pytest.mark.parametrize(
    ("path", "value"),
    [
        (("name",), "Cobot cell pilot 2"),
        (("name_ko",), "협동로봇 셀 실증"),
        (("windows", 1, "end"), "2026-10-20T00:00:00+09:00"),
        (("products", 0, "ideal_cycle_time_s"), 41.5),
        (("targets", 0, "change_pct"), 12),
        (("confidence_level",), 0.95),
        (("calendar", "timezone"), "UTC"),
        (("energy_meters",), []),
    ],
)
def test_plan_hash_changes_with_any_field(path: tuple[str | int, ...], value: object) -> None:
    raw = copy.deepcopy(raw_plan())
    target: Any = raw
    for key in path[:-1]:
        target = target[key]
    target[path[-1]] = value
    assert plan_hash(DemonstrationPlan.model_validate(raw)) != plan_hash(DemonstrationPlan.model_validate(raw_plan()))


@pytest.mark.parametrize(
    "zone",
    [
        "Asia",
        "America",
        "Etc",
        "Europe/",
        "/etc/localtime",
        "../zoneinfo/UTC",
        "x" * 300,
        "é" * 200,
        "localtime",
        "Factory",
        "right/UTC",
        "posix/UTC",
        "posixrules",
        "Asia/Seoul\x00",
        "asia/seoul",
        "",
    ],
)
def test_a_time_zone_must_be_an_iana_name_from_tzdata(zone: str) -> None:
    # Directories of the zone database, names too long for a file name, and names only some hosts have
    # (right/, posix/, localtime, Factory) are each refused with the same clear reason, never an OSError.
    raw = raw_plan()
    raw["calendar"]["timezone"] = zone
    with pytest.raises(ValidationError, match="use an IANA name such as Asia/Seoul"):
        DemonstrationPlan.model_validate(raw)


@pytest.mark.parametrize("zone", ["Asia/Seoul", "UTC", "Etc/GMT-9", "America/Argentina/Buenos_Aires", "US/Pacific"])
def test_iana_zone_names_are_taken(zone: str) -> None:
    raw = raw_plan()
    raw["calendar"]["timezone"] = zone
    assert DemonstrationPlan.model_validate(raw).calendar.zone.key == zone


@pytest.mark.parametrize(
    ("window", "key", "moment"),
    [
        (0, "start", "0001-01-01T00:00:00+00:00"),
        (1, "end", "9999-12-31T00:00:00+00:00"),
        (0, "start", "1999-12-31T23:00:00+00:00"),
    ],
)
def test_a_window_outside_the_years_a_store_can_hold_is_refused(window: int, key: str, moment: str) -> None:
    raw = raw_plan()
    raw["windows"][window][key] = moment
    with pytest.raises(ValidationError, match="within 2000-01-01 and 2100-01-01"):
        DemonstrationPlan.model_validate(raw)


ROOT = Path(__file__).resolve().parents[2]
# Each table of docs/kpis.md's "The plan, field by field", and the model whose fields it lists.
FIELD_TABLES: dict[str, type[BaseModel]] = {
    "The plan": DemonstrationPlan,
    "`calendar`": Calendar,
    "`calendar.shifts[]`, `calendar.breaks[]`, `calendar.planned_stops[]`": PlannedStop,
    "`windows[]`": Window,
    "`products[]`": Product,
    "`state_overrides[]`": StateOverride,
    "`targets[]`": Target,
    "`exclusions[]`": Exclusion,
    "`corrections[]` of kind `state`": StateCorrection,
    "`corrections[]` of kind `counts`": CountCorrection,
    "`adjusted_baseline`": AdjustedBaselinePlan,
    "`control_line`": ControlLinePlan,
    "`design`": Design,
}


def _documented_fields() -> dict[str, dict[str, str]]:
    """Per table heading of the section, field → its default as written."""
    text = (ROOT / "docs" / "kpis.md").read_text(encoding="utf-8")
    section = text.split("\n## The plan, field by field\n", 1)[1].split("\n## ", 1)[0]
    tables: dict[str, dict[str, str]] = {}
    for block in section.split("\n### ")[1:]:
        heading, _, body = block.partition("\n")
        rows = [line.split(" | ") for line in body.splitlines() if line.startswith("| `")]
        tables[heading.strip()] = {row[0].removeprefix("| ").strip("`"): row[1].strip() for row in rows}
    return tables


def test_the_docs_list_every_plan_field_with_its_default() -> None:
    tables = _documented_fields()
    assert set(tables) == set(FIELD_TABLES)
    for heading, model in FIELD_TABLES.items():
        documented = tables[heading]
        assert set(documented) == set(model.model_fields), heading
        for name, field in model.model_fields.items():
            if field.is_required() or name == "kind":  # the discriminator must be sent
                assert documented[name] == "required", (heading, name)
                continue
            default = to_jsonable_python(field.get_default(call_default_factory=True))
            assert json.loads(documented[name].strip("`")) == default, (heading, name)


def _unset_fields(value: object, where: str = "plan") -> Iterator[str]:
    if isinstance(value, BaseModel):
        for name in type(value).model_fields:
            if name not in value.model_fields_set:
                yield f"{where}.{name}"
            yield from _unset_fields(getattr(value, name), f"{where}.{name}")
    elif isinstance(value, list):
        for index, item in enumerate(value):
            yield from _unset_fields(item, f"{where}[{index}]")


def test_the_example_plan_is_valid_and_sets_every_field() -> None:
    plan = DemonstrationPlan.model_validate_json((ROOT / "examples" / "plan.json").read_bytes())
    assert list(_unset_fields(plan)) == []
    assert {type(c) for c in plan.corrections} == {StateCorrection, CountCorrection}
    assert plan.calendar.planned_stops and plan.calendar.breaks and plan.state_overrides and plan.exclusions
    assert plan.telemetry_interval_s and plan.targets
    # What we ship is pre-registered and standardises a moved product mix (issue 21).
    assert plan.design is not None and plan.product_mix
    assert {"design", "product_mix"} <= json.loads(canonical_json(plan)).keys()


def test_workdays_left_out_are_monday_to_friday_and_always_shown() -> None:
    raw = raw_plan()
    assert "workdays" not in raw["calendar"]
    plan = DemonstrationPlan.model_validate(raw)
    assert json.loads(canonical_json(plan))["calendar"]["workdays"] == ["mon", "tue", "wed", "thu", "fri"]
