"""Examples for the OpenAPI document: the Pangyo cobot cell's plan, as a client would send it.

The plan is the one `pilot simulate pangyo_cobot_cell` stands for, with its
headline target at cycle time −10%. A unit test checks that it validates.
"""

from __future__ import annotations

import copy
from typing import Any

from fastapi.openapi.models import Example

PANGYO_PLAN: dict[str, Any] = {
    "name": "Pangyo cobot assembly cell",
    "name_ko": "판교 협동로봇 조립 셀",
    "site": "판교",
    "line": "조립-1라인",
    "devices": ["cobot-01", "cnc-01", "amr-01", "conveyor-01", "vision-01", "meter-01", "env-01"],
    "output_devices": ["vision-01"],
    "energy_meters": ["meter-01"],
    "calendar": {
        "timezone": "Asia/Seoul",
        "workdays": ["mon", "tue", "wed", "thu", "fri"],
        "shifts": [
            {"name": "주간", "start": "08:00", "end": "17:00"},
            {"name": "야간", "start": "17:00", "end": "23:30"},
        ],
        "breaks": [
            {"name": "점심", "start": "12:00", "end": "13:00"},
            {"name": "저녁", "start": "19:00", "end": "19:30"},
        ],
        "planned_stops": [{"name": "주간 예방정비", "weekdays": ["fri"], "start": "15:00", "end": "16:00"}],
    },
    "windows": [
        {
            "name": "baseline",
            "phase": "baseline",
            "start": "2026-10-05T00:00:00+09:00",
            "end": "2026-10-19T00:00:00+09:00",
        },
        {"name": "pilot", "phase": "pilot", "start": "2026-10-26T00:00:00+09:00", "end": "2026-11-09T00:00:00+09:00"},
    ],
    "products": [
        {
            "id": "BRK-100",
            "name": "Bracket 100",
            "ideal_cycle_time_s": 42.0,
            # Stations quicker than the cobot, which sets the cell's pace.
            "per_device": {"cnc-01": 37.8, "conveyor-01": 33.6, "vision-01": 21.0},
        },
        {
            "id": "BRK-200",
            "name": "Bracket 200",
            "ideal_cycle_time_s": 55.0,
            "per_device": {"cnc-01": 49.5, "conveyor-01": 44.0, "vision-01": 27.5},
        },
    ],
    "targets": [
        {"kpi": "cycle_time_mean", "direction": "decrease", "change_pct": 10},
        {"kpi": "scrap_ratio", "direction": "decrease", "change_pct": 15},
    ],
    "confidence_level": 0.9,
}


def _with_power_cut(plan: dict[str, Any]) -> dict[str, Any]:
    amended = copy.deepcopy(plan)
    amended["exclusions"] = [
        {
            "start": "2026-10-29T13:00:00+09:00",
            "end": "2026-10-29T15:00:00+09:00",
            "reason": "Site-wide power cut (판교 정전), not caused by the pilot",
        }
    ]
    return amended


PANGYO_AMENDMENT: dict[str, Any] = {
    "plan": _with_power_cut(PANGYO_PLAN),
    "reason": "Exclude the power cut of 29 October 13:00–15:00 from every KPI, as agreed with the evaluator",
}

PLAN_EXAMPLES: dict[str, Example] = {
    "pangyo": {
        "summary": "Pangyo cobot cell, two weeks before and two with the pilot",
        "description": "Seven devices, two shifts, two products; the headline target is cycle time −10%.",
        "value": PANGYO_PLAN,
    }
}

AMENDMENT_EXAMPLES: dict[str, Example] = {
    "power-cut": {
        "summary": "Leave a power cut out of the pilot window",
        "value": PANGYO_AMENDMENT,
    }
}
