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
    (
        re.compile(r"^too few paired baseline hours \(need (?P<need>\d+), have (?P<have>\d+)\)"),
        "design_gap_few_paired_hours",
    ),
    (re.compile(r"^no positive (?P<kpi>\w+) on the treated or the control line:"), "design_gap_no_positive_pair"),
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
    "design_method": "Method",
    "design_method_none": "treated line (kpi_engine 3)",
    "design_note": "Each target is designed by its own method, from what its interval will vary by: the KPI"
    " linearised per hour (before/after); each paired hour's treated − control log gap, so that what moves the"
    " whole plant cancels (control line); the model's residuals, fitted on the baseline and projected onto its own"
    " conditions, since the pilot's are not known yet (adjusted baseline). From that series' lag-1"
    " autocorrelation ρ comes the baseline's effective n = n(1 − ρ)/(1 + ρ) and the standard error se of"
    " log(pilot / baseline) the planned pilot would have if it varied as the baseline does. The interval divides"
    " by an estimated variance, least certain in a short pilot: the minimum detectable change is the one a"
    " noncentral t of those degrees of freedom detects beyond the method's fixed-b critical value at the stated"
    " power. A target is shown met at that power only when the true change reaches the target plus the minimum"
    " detectable change. The days assume the baseline's share of hours with data.",
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
    "design_gap_few_paired_hours": "Too few paired baseline hours of the treated and the control line (need"
    " {need}, have {have}): nothing can be designed yet.",
    "design_gap_no_positive_pair": "No positive {kpi} on the treated or the control line in the baseline: nothing"
    " can be designed from it.",
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
    "design_method": "방법",
    "design_method_none": "대상 라인 (kpi_engine 3)",
    "design_note": "각 목표는 자기 방법으로, 그 신뢰구간이 변동하는 값에서 설계합니다: 시간별로 선형화한 KPI"
    "(전후 비교), 공장 전체의 변화가 상쇄되도록 같은 시간의 대상 − 대조 로그 차이(대조 라인), 기준 기간에 적합하고"
    " 실증 조건을 아직 모르므로 기준 기간 자신의 조건에 투영한 모형의 잔차(보정 기준선). 그 계열의 1차 자기상관 ρ로"
    " 기준 기간의 유효 표본 수 n(1 − ρ)/(1 + ρ)와, 실증이 기준 기간처럼 변동할 때 log(실증 / 기준)의 표준오차"
    " se를 구합니다. 신뢰구간은 추정한 분산으로 나누며 짧은 실증일수록 그 추정이 불확실합니다: 최소 검출 변화는"
    " 그 자유도의 비중심 t가 방법의 fixed-b 임계값을 넘어 명시한 검정력으로 검출하는 변화입니다. 실제 변화가"
    " 목표에 최소 검출 변화를 더한 만큼에 이르러야 그 검정력으로 목표 달성이 입증됩니다. 일수는 기준 기간의"
    " 데이터가 있는 시간 비율을 가정합니다.",
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
    "design_gap_few_paired_hours": "대상 라인과 대조 라인의 짝지은 기준 시간이 부족합니다(필요 {need}, 현재 {have}):"
    " 아직 설계할 수 없습니다.",
    "design_gap_no_positive_pair": "기준 기간에 대상 또는 대조 라인의 {kpi} 값이 양수가 아니어서 설계할 수 없습니다.",
    "warning_stated_mde": "계획은 {kpi}의 최소 검출 변화를 {stated}%로 명시했으나 기준 기간 데이터로는 {found}입니다.",
}
