"""The report's words for the design before data and the product-mix standardisation, in English and Korean.

Merged into ``reports.i18n``'s EN and KO: kept apart so that the section's words stay together.
"""

from __future__ import annotations

import re

# The engine's design notes and warning (pilot_core.design, kpi_engine.evaluation), and their keys here.
DESIGN_GAPS: tuple[tuple[re.Pattern[str], str], ...] = (
    (re.compile(r"^no baseline value:"), "design_gap_no_value"),
    (re.compile(r"^a baseline value of zero:"), "design_gap_zero"),
    (re.compile(r"^too few baseline hours \(need (?P<need>\d+), have (?P<have>\d+)\)"), "design_gap_few_hours"),
    (
        re.compile(r"^the planned pilot gives (?P<units>\d+) hourly units; the comparison needs (?P<need>\d+)"),
        "design_gap_short_pilot",
    ),
)
STATED_MDE = re.compile(
    r"^the plan states a minimum detectable effect of (?P<stated>[\d.e+-]+)% for (?P<kpi>\w+);"
    r" the baseline's data give (?P<found>.+)$"
)

DESIGN_EN: dict[str, str] = {
    "section_design": "Design before data",
    "design_intro": "Computed from the frozen plan and the baseline's hours alone, before any pilot hour counts: the"
    " smallest change each target's KPI could show over the planned pilot ({pilot_days} days) at {level}"
    " confidence and {power:.0f}% power, with the baseline's autocorrelation (its effective sample size) taken into"
    " account."
    " The pilot's data cannot move these figures; evidence verification recomputes them.",
    "design_baseline_n": "Baseline hours (effective)",
    "design_mde": "Minimum detectable change",
    "design_met_needs": "True change needed for \u201cmet\u201d",
    "design_days_for_target": "Pilot days to detect the target's size",
    "design_days_for_expected": "Pilot days if the expected change holds",
    "design_unreachable": "not reachable: extend the baseline",
    "design_no_targets": "The plan has no targets, so there is nothing to design.",
    "design_note": "The minimum detectable change is (c·√(1 − b + b²/3) + z)·se: c is the comparison's fixed-b"
    " critical value, √(1 − b + b²/3) the HAC estimator's expected shrinkage at its bandwidth fraction b, z the"
    " normal quantile of the power, and se the standard error of log(pilot / baseline) the planned pilot would"
    " have if it varied as the baseline does, from the baseline's effective n = n(1 − ρ)/(1 + ρ), ρ its lag-1"
    " autocorrelation. A target is shown met at that power only when the true change"
    " reaches the target plus the minimum detectable change. The days assume the baseline's share of hours with"
    " data.",
    "section_mix": "At the baseline's product mix",
    "mix_intro": "When the product mix moves, a line's mean cycle time, throughput and energy per unit change with no"
    " change on any product. Beside the raw figure, each is given at the baseline's mix: each product's own pilot"
    " figure weighted by the baseline's shares. Planned busy time and energy are shared among products by their"
    " share of the output's cycle time.",
    "mix_effectiveness": "Effectiveness (performance) needs no standardisation: each unit counts its own product's"
    " ideal cycle time, so it is already neutral to the mix.",
    "mix_share": "Share of units",
    "mix_raw_change": "Change (raw)",
    "mix_standardised_pilot": "Pilot at the baseline's mix",
    "mix_standardised_change": "Change at the baseline's mix",
    "design_gap_no_value": "No baseline value: nothing can be designed from this baseline yet.",
    "design_gap_zero": "A baseline value of zero: nothing can be designed from it.",
    "design_gap_few_hours": "Too few baseline hours (need {need}, have {have}): nothing can be designed yet.",
    "design_gap_short_pilot": "The planned pilot gives {units} hourly units; the comparison needs {need}.",
    "warning_stated_mde": "The plan states a minimum detectable change of {stated}% for {kpi}; the baseline's data"
    " give {found}.",
}

DESIGN_KO: dict[str, str] = {
    "section_design": "사전 설계 (데이터 이전)",
    "design_intro": "동결된 계획과 기준 기간의 시간 데이터만으로 계산합니다. 계획한 실증 기간({pilot_days}일)"
    " 동안 신뢰수준 {level}, 검정력 {power:.0f}%로 각 목표 KPI가 보여줄 수 있는 가장 작은 변화이며, 기준 기간의"
    " 자기상관(유효 표본 수)을 반영합니다. 실증 데이터는 이 값을 바꿀 수 없으며, 증빙 검증이 다시 계산합니다.",
    "design_baseline_n": "기준 시간 수 (유효)",
    "design_mde": "최소 검출 변화",
    "design_met_needs": "\u201c달성\u201d에 필요한 실제 변화",
    "design_days_for_target": "목표 크기 검출에 필요한 실증 일수",
    "design_days_for_expected": "기대 변화가 맞을 때 필요한 실증 일수",
    "design_unreachable": "도달 불가: 기준 기간을 늘리십시오",
    "design_no_targets": "계획에 목표가 없어 설계할 것이 없습니다.",
    "design_note": "최소 검출 변화는 (c·√(1 − b + b²/3) + z)·se입니다. c는 비교의 fixed-b 임계값,"
    " √(1 − b + b²/3)은 대역폭 비율 b에서 HAC 추정량의 기대 축소, z는 검정력의 정규 분위수, se는 실증이 기준"
    " 기간처럼 변동한다고 볼 때 log(실증 / 기준)의 표준오차로, 기준 기간의 유효 표본 수 n(1 − ρ)/(1 + ρ)"
    "(ρ는 1차 자기상관)에서 구합니다. 실제 변화가 목표에 최소 검출 변화를 더한"
    " 만큼에 이르러야 그 검정력으로 목표 달성이 입증됩니다. 일수는 기준 기간의 데이터가 있는 시간 비율을 가정합니다.",
    "section_mix": "기준 기간 제품 구성 기준",
    "mix_intro": "제품 구성이 바뀌면 어떤 제품도 변하지 않았는데 라인의 평균 사이클 타임, 시간당 생산량, 단위당"
    " 에너지가 바뀝니다. 원래 값 옆에, 각 제품의 실증 값을 기준 기간의 비중으로 가중한 값(기준 구성 기준)을"
    " 함께 보입니다. 계획 가동 시간과 에너지는 출력 설비 사이클 타임 비중으로 제품에 나눕니다.",
    "mix_effectiveness": "성능효율은 표준화가 필요 없습니다: 각 단위가 자기 제품의 이상 사이클 타임으로 계산되므로 이미"
    " 제품 구성에 중립입니다.",
    "mix_share": "수량 비중",
    "mix_raw_change": "변화 (원래)",
    "mix_standardised_pilot": "기준 구성 기준 실증 값",
    "mix_standardised_change": "기준 구성 기준 변화",
    "design_gap_no_value": "기준 기간 값이 없어 아직 설계할 수 없습니다.",
    "design_gap_zero": "기준 기간 값이 0이어서 설계할 수 없습니다.",
    "design_gap_few_hours": "기준 기간 시간 수가 부족합니다(필요 {need}, 현재 {have}): 아직 설계할 수 없습니다.",
    "design_gap_short_pilot": "계획한 실증 기간의 시간 단위가 {units}개뿐입니다. 비교에는 {need}개가 필요합니다.",
    "warning_stated_mde": "계획은 {kpi}의 최소 검출 변화를 {stated}%로 명시했으나 기준 기간 데이터로는 {found}입니다.",
}
