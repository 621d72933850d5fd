"""The report's words in Korean and English, and how numbers, units and causes are written in each.

Every label, heading, unit and method note the report shows comes from here;
both languages have every key (tests/unit/test_report_content.py checks it).
Data the devices and the plan supply (names, states, reasons) is shown as given.
"""

from __future__ import annotations

import datetime as dt
import enum
import re
from typing import TYPE_CHECKING

from pilot_core.comparison import Verdict
from pilot_core.contract import TimeClass
from pilot_core.demonstration import Phase
from pilot_core.kpi import KPIS
from reports.i18n_design import DESIGN_EN, DESIGN_GAPS, DESIGN_KO, STATED_MDE

if TYPE_CHECKING:  # the command line imports Language for its options, without the engine behind the content
    from reports.content import DowntimeRow, KpiRow, Method


class Language(enum.StrEnum):
    KO = "ko"
    EN = "en"


EN: dict[str, str] = {
    "title": "Demonstration report",
    "preview": "Preview — this plan is a draft. It is not frozen, so it may still change, and the results below"
    " are not a verdict on the demonstration. Freeze the plan for a report to file.",
    "frozen": "Frozen plan",
    "draft": "Draft (preview)",
    "generated": "Generated",
    "section_plan": "The plan",
    "section_kpis": "Before and after",
    "section_charts": "Charts",
    "section_coverage": "Data coverage",
    "section_method": "Method",
    "section_warnings": "Warnings",
    # The adjustment methods (issue 21): an adjusted baseline and a control line.
    "section_adjustments": "Adjusted comparisons: was it the pilot?",
    "method_before_after": "before/after",
    "method_adjusted_baseline": "adjusted baseline",
    "method_control_line": "control line",
    "explain_by_method": "Judged by the {method}: see “Adjusted comparisons”.",
    "adjusted_title": "Adjusted baseline (IPMVP, ASHRAE Guideline 14)",
    "adjusted_intro": "A regression of the line's hourly {response} on the declared variables, fitted on the baseline"
    " hours and projected onto the pilot's: savings = adjusted baseline − pilot.",
    "adjusted_variables": "Independent variables",
    "adjusted_fit": "Baseline model",
    "adjusted_limits": "limit",
    "adjusted_passes": "passes Guideline 14",
    "adjusted_fails": "fails Guideline 14",
    "adjusted_no_limit": "no limit in Guideline 14",
    "adjusted_totals": "Adjusted baseline / pilot / savings",
    "adjusted_change": "Pilot against the adjusted baseline",
    "adjusted_fsu": "Fractional savings uncertainty (Guideline 14 Annex B, 68%)",
    "adjusted_condition": "{variable}: baseline range / pilot mean / pilot hours outside the range",
    "refused": "No verdict",
    "control_title": "Control line (difference-in-differences)",
    "control_intro": "The treated line's change net of the control's, hour by hour: (pilot ÷ baseline of the"
    " treated) ÷ (pilot ÷ baseline of the control) − 1. Control: {devices}. Why it is independent: {independence}",
    "control_treated": "Treated change",
    "control_control": "Control change",
    "control_effect": "Effect",
    "control_pre_trend": "Pre-trend (placebo)",
    "control_parallel": "parallel",
    "control_not_parallel": "NOT parallel: no verdict",
    "control_unchecked": "not checked",
    "adjustments_note": "Intervals at the plan's level, Newey-West HAC with fixed-b critical values. The plain"
    " before/after row stays in the table above, beside the verdict the method gives.",
    "plan_name": "Name",
    "plan_name_ko": "Name (Korean)",
    "site_line": "Site / line",
    "demonstration": "Demonstration",
    "version": "Plan version",
    "hash": "Plan hash",
    "status": "Status",
    "confidence_level": "Confidence level",
    "time_zone": "Time zone",
    "data_fingerprint": "Data fingerprint",
    "windows": "Windows",
    "window": "Window",
    "phase": "Phase",
    "start": "Start",
    "end": "End",
    "devices": "Devices in scope",
    "device": "Device",
    "role": "Role in the KPIs",
    "role_output": "output station (throughput, energy per unit)",
    "role_meter": "energy meter",
    "role_station": "station",
    "products": "Products",
    "product": "Product",
    "ideal_cycle_time": "Ideal cycle time",
    "targets": "Targets",
    "no_targets": "The plan sets no targets.",
    "exclusions": "Exclusions",
    "exclusion_all_devices": "all devices",
    "state_overrides": "State overrides",
    "reason": "Reason",
    "baseline": "Baseline (before)",
    "pilot": "Pilot (after)",
    "baseline_short": "Baseline",
    "pilot_short": "Pilot",
    "kpi": "KPI",
    "change": "Change",
    "interval": "{level} interval",
    "target": "Target",
    "verdict": "Verdict",
    "target_mark": "★ target",
    "kpi_table_note": "Rows marked ★ carry a target of the plan. The change is pilot / baseline − 1; its interval is"
    " robust to autocorrelation (see Method).",
    "verdict_met": "met",
    "verdict_not_met": "not met",
    "verdict_inconclusive": "inconclusive",
    "explain_met": "The whole interval is beyond the target.",
    "explain_not_met": "The whole interval falls short of the target.",
    "explain_inconclusive_factor": "The interval straddles the target; if the present estimate holds, a pilot"
    " about {factor:.1f}× as long would show it {leaning}.",
    "gap_no_value": "No value in one phase (nothing to divide by).",
    "gap_no_value_because": "No value in one phase: {reason}.",
    "why_no_planned_busy_time": "no planned busy time",
    "why_no_production_time": "no production time (APT is zero)",
    "why_nothing_produced": "nothing produced",
    "why_no_output_busy_time": "no planned busy time at the output stations",
    "why_no_output_good": "no good units at the output stations",
    "why_no_output_cycles": "no cycle times reported at the output stations",
    "why_no_busy_time": "no production, setup or delay time",
    "why_no_failures": "no failures",
    "why_no_energy_meter": "no energy meter in scope",
    "why_not_finite": "not a finite number",
    "gap_too_few_units": "Too few hours for an interval (at least {min_units} per phase).",
    "gap_zero_value": "A value of zero in one phase: only the absolute change has an interval.",
    "gap_baseline_uncertain": "The interval straddles the target, and the baseline's own uncertainty is too large"
    " for a longer pilot to decide.",
    "percentile_note": "At the line's output stations, from merged histograms (within ±{accuracy:.1f}% of the value);"
    " compared by the change only, without an interval.",
    "percentile_note_exact": "At the line's output stations, exact (from every cycle's time); compared by the change"
    " only, without an interval.",
    "section_stations": "Cycle time per station",
    "station": "Station",
    "output_station_mark": "output",
    "station_mean": "Mean",
    "station_p50": "Median",
    "station_p95": "95th pct.",
    "stations_note": "Each station's cycle time from its own cycles; stations are never pooled. The line's cycle time"
    " (in the KPI table) is that of its output stations, marked here. Percentiles marked * come from histograms,"
    " within ±{accuracy:.1f}% of the value; the others are exact.",
    "warning_no_telemetry": "Device {device} sent no telemetry in window {window} ({expected} samples expected,"
    " none received).",
    "chart_cycle_times": "Distribution of cycle times at the line's output",
    "chart_cycle_times_caption": "Cycles of the line's output stations only (each station's own in the table"
    " above). Share of each phase's cycles per cycle-time bin; dashed lines are the phase means."
    " Cycles beyond the drawn range are counted in its first or last bin.",
    "chart_daily_oee": "Daily OEE",
    "chart_daily_oee_caption": "OEE of each day with planned busy time, from the day's summed times and counts;"
    " dashed lines are the phase values.",
    "chart_downtime": "Downtime by state and reason (Pareto)",
    "chart_downtime_caption": "Planned busy time not spent producing, by the state the device reported and the reason"
    " it gave, as a share of each phase's planned busy time, largest first.",
    "chart_energy": "Energy per good unit",
    "chart_energy_caption": "Metered energy per good unit of the output station, per day; dashed lines are the phase"
    " values. Days without output are not drawn; their energy counts in the phase value.",
    "axis_cycle_time": "Cycle time (s)",
    "axis_share_of_cycles": "Share of cycles (%)",
    "axis_day": "Day",
    "axis_oee": "OEE (%)",
    "axis_share_of_pbt": "Share of planned busy time (%)",
    "axis_energy": "kWh per good unit",
    "legend_mean": "mean {value}",
    "legend_phase_value": "{phase}: {value}",
    "no_data": "No data",
    "cause": "Cause",
    "time_class": "Time class",
    "hours_lost": "Hours",
    "share_of_pbt": "Share of PBT",
    "cumulative": "Cumulative",
    "other_causes": "Other causes ({count})",
    "no_reason": "no reason given",
    "reasons": "{count} reasons",
    "unknown_state": "No state known (silent or offline)",
    "downtime_total": "Planned busy time not producing (PBT − APT)",
    "planned_busy_time": "Planned busy time",
    "coverage_note": "Per device and phase. A KPI over a phase where a device was silent is only as good as this"
    " table says.",
    "busy_hours": "Hours with planned busy time",
    "telemetry_expected": "Telemetry samples expected",
    "telemetry_received": "Received",
    "telemetry_ratio": "Telemetry ratio",
    "messages_missing": "Messages missing (by seq)",
    "unknown_time": "Unknown time",
    "not_applicable": "–",
    "footer": "pilot-telemetry · demonstration {slug} · plan version {version} · {hash}",
    "page": "Page",
    "warning_no_ideal_time": "No ideal cycle time for product {product}: its effectiveness and OEE leave it out.",
    "tc_production": "production (APT)",
    "tc_setup": "setup (ASUT)",
    "tc_unplanned_delay": "unplanned delay (ADET)",
    "tc_minor_stop": "minor stop (ADET)",
    "tc_idle": "idle (ADOT)",
    "tc_planned_downtime": "planned downtime",
    "tc_unknown": "unknown",
    "unit_ratio": "%",
    "unit_s": "s",
    "unit_h": "h",
    "unit_min": "min",
    "unit_units/h": "units/h",
    "unit_kWh/unit": "kWh/unit",
    "kpi_cycle_time_p50": "Cycle time (median)",
    "kpi_cycle_time_p95": "Cycle time (95th percentile)",
    "method_time_model": "Time model (ISO 22400-2). Each state a device reports falls in a time class through its"
    " device profile, or the plan's state overrides. Planned busy time (PBT) is the calendar's shifts minus breaks,"
    " planned stops and planned downtime the device reports. Within it: actual production time (APT), setup (ASUT),"
    " delays from faults and minor stops (ADET), idle time (ADOT), and unknown time when no state is known."
    " Availability = APT / PBT; effectiveness = Σ ideal cycle time × produced / APT; quality ratio = good /"
    " produced; OEE = availability × effectiveness × quality ratio.",
    "method_rollups": "Roll-ups sum components, never ratios. Every KPI of a phase or of a day is computed once from"
    " the summed times and counts of all its device-hours; the daily OEE in the chart is computed the same way."
    " A line's cycle time is that of its output stations (the plan's output_devices): pooling a cobot's cycles"
    " with an AMR's trips would mean nothing. Cycle-time percentiles are exact where every hour kept its cycles'"
    " times (up to 360 an hour); otherwise they come from mergeable logarithmic histograms, accurate to"
    " ±{accuracy:.1f}% of the value.",
    "method_units": "Hourly units. The unit of analysis is the hour: each hour's components summed over the devices"
    " in scope. Hours outside the shifts stay in (energy is used and parts finish then), so the hours add up exactly"
    " to the phase totals. This demonstration has {baseline_hours} baseline hours and {pilot_hours} pilot hours.",
    "method_hac": "Intervals robust to autocorrelation. Hours are not independent, so a plain t-test would overstate"
    " confidence. Each KPI is linearised (delta method) and the variance of its mean estimated with a Newey-West"
    " (HAC, Bartlett kernel) estimator whose bandwidth is ⌈{fraction:g}·n⌉ hours ({baseline_bandwidth} baseline,"
    " {pilot_bandwidth} pilot). The critical values are the fixed-b ones of Kiefer and Vogelsang (2005): at"
    " b = {b:.3f} the two-sided {level} value is {critical:.3f}, where a normal interval would use {normal:.3f}.",
    "method_change": "The change. The relative change pilot / baseline − 1 gets its interval on the log scale,"
    " log(pilot / baseline) ± c·√((se_b / b)² + (se_p / p)²), so it is not symmetric; the phases are taken as"
    " independent. A phase with fewer than {min_units} hours gets no interval. The minimum detectable change is"
    " the relative change the data could detect with {power:.0f}% power.",
    "method_decision": "The decision rule. For a target \u201cdecrease by T%\u201d: met when the whole interval of"
    " the relative change lies at or below −T (upper bound ≤ −T); not met when it lies wholly above −T (lower bound"
    " > −T); inconclusive otherwise, or without an interval. For an increase it is mirrored: met when the lower"
    " bound ≥ +T, not met when the upper bound < +T. An inconclusive verdict gives how many times longer the pilot"
    " would need to run, at the same variability and if the present estimate holds, for the interval to clear the"
    " target.",
    "method_downtime": "Downtime and coverage. The Pareto splits the planned busy time not spent producing (setup,"
    " delays, idle and unknown time) by the state the device reported and the reason it gave, accounted exactly as"
    " the KPIs are, so its rows add up to PBT − APT. Reasons are shown as the devices sent them. Coverage counts"
    " telemetry samples received against those the agents' rates promise in hours with planned busy time, messages"
    " missing by gaps in seq, and planned busy time with no known state, which lowers availability.",
}

KO: dict[str, str] = {
    "title": "실증 결과 보고서",
    "preview": "미리보기 — 이 계획은 초안입니다. 아직 동결되지 않아 바뀔 수 있으며, 아래 결과는 실증에 대한"
    " 판정이 아닙니다. 제출용 보고서는 계획을 동결한 뒤 만드십시오.",
    "frozen": "동결된 계획",
    "draft": "초안(미리보기)",
    "generated": "작성 시각",
    "section_plan": "실증 계획",
    "section_kpis": "실증 전후 비교",
    "section_charts": "그래프",
    "section_coverage": "데이터 수집 현황",
    "section_method": "분석 방법",
    "section_warnings": "경고",
    "section_adjustments": "보정 비교: 파일럿 효과인가?",
    "method_before_after": "전후 비교",
    "method_adjusted_baseline": "보정 기준선",
    "method_control_line": "대조 라인",
    "explain_by_method": "{method} 방법으로 판정했습니다. ‘보정 비교’를 보십시오.",
    "adjusted_title": "보정 기준선 (IPMVP, ASHRAE Guideline 14)",
    "adjusted_intro": "라인의 시간별 {response}을(를) 신고한 독립변수로 회귀해 기준 기간 시간으로 적합하고 실증 기간"
    " 조건에 투영했습니다. 절감량 = 보정 기준선 − 실증.",
    "adjusted_variables": "독립변수",
    "adjusted_fit": "기준선 모델",
    "adjusted_limits": "한계",
    "adjusted_passes": "Guideline 14 충족",
    "adjusted_fails": "Guideline 14 미충족",
    "adjusted_no_limit": "Guideline 14 한계 없음",
    "adjusted_totals": "보정 기준선 / 실증 / 절감량",
    "adjusted_change": "보정 기준선 대비 실증",
    "adjusted_fsu": "절감 불확도 비율 (Guideline 14 부록 B, 68%)",
    "adjusted_condition": "{variable}: 기준 기간 범위 / 실증 평균 / 범위 밖 실증 시간 비율",
    "refused": "판정 없음",
    "control_title": "대조 라인 (이중차분)",
    "control_intro": "대상 라인의 변화에서 대조 라인의 변화를 시간 단위로 짝지어 뺀 값: (대상의 실증 ÷ 기준) ÷"
    " (대조의 실증 ÷ 기준) − 1. 대조: {devices}. 독립성 근거: {independence}",
    "control_treated": "대상 변화",
    "control_control": "대조 변화",
    "control_effect": "효과",
    "control_pre_trend": "사전 추세 (위약 검정)",
    "control_parallel": "평행",
    "control_not_parallel": "평행하지 않음: 판정 없음",
    "control_unchecked": "검정 불가",
    "adjustments_note": "신뢰구간은 계획의 신뢰수준, Newey-West HAC와 fixed-b 임계값으로 구했습니다. 위 표의 단순 전후"
    " 비교 행은 방법별 판정과 함께 그대로 둡니다.",
    "plan_name": "이름",
    "plan_name_ko": "이름(한국어)",
    "site_line": "사업장 / 라인",
    "demonstration": "실증",
    "version": "계획 버전",
    "hash": "계획 해시",
    "status": "상태",
    "confidence_level": "신뢰수준",
    "time_zone": "시간대",
    "data_fingerprint": "데이터 지문",
    "windows": "기간",
    "window": "기간 이름",
    "phase": "구분",
    "start": "시작",
    "end": "종료",
    "devices": "대상 설비",
    "device": "설비",
    "role": "지표에서의 역할",
    "role_output": "산출 설비(시간당 생산량, 양품당 에너지)",
    "role_meter": "전력량계",
    "role_station": "공정 설비",
    "products": "제품",
    "product": "제품",
    "ideal_cycle_time": "이상 사이클 타임",
    "targets": "목표",
    "no_targets": "이 계획에는 목표가 없습니다.",
    "exclusions": "제외 구간",
    "exclusion_all_devices": "전체 설비",
    "state_overrides": "상태 재분류",
    "reason": "사유",
    "baseline": "기준 기간(도입 전)",
    "pilot": "실증 기간(도입 후)",
    "baseline_short": "기준",
    "pilot_short": "실증",
    "kpi": "지표",
    "change": "변화율",
    "interval": "{level} 신뢰구간",
    "target": "목표",
    "verdict": "판정",
    "target_mark": "★ 목표",
    "kpi_table_note": "★ 표시 행은 계획의 목표가 걸린 지표입니다. 변화율은 실증 ÷ 기준 − 1이며, 신뢰구간은"
    " 자기상관을 반영합니다(분석 방법 참조).",
    "verdict_met": "달성",
    "verdict_not_met": "미달성",
    "verdict_inconclusive": "판단 유보",
    "explain_met": "신뢰구간 전체가 목표를 넘어섰습니다.",
    "explain_not_met": "신뢰구간 전체가 목표에 미치지 못합니다.",
    "explain_inconclusive_factor": "신뢰구간이 목표에 걸쳐 있습니다. 현재 추정이 유지된다면 약 {factor:.1f}배 길이의"
    " 실증에서 ‘{leaning}’으로 판정됩니다.",
    "gap_no_value": "한 기간에 값이 없습니다(분모가 0).",
    "gap_no_value_because": "한 기간에 값이 없습니다: {reason}.",
    "why_no_planned_busy_time": "계획 가동 시간 없음",
    "why_no_production_time": "실제 생산 시간(APT) 0",
    "why_nothing_produced": "생산 수량 없음",
    "why_no_output_busy_time": "출력 설비의 계획 가동 시간 없음",
    "why_no_output_good": "출력 설비의 양품 없음",
    "why_no_output_cycles": "출력 설비에서 보고된 사이클 타임 없음",
    "why_no_busy_time": "생산·준비교체·지연 시간 없음",
    "why_no_failures": "고장 없음",
    "why_no_energy_meter": "범위 안에 전력량계 없음",
    "why_not_finite": "유한한 수가 아님",
    "gap_too_few_units": "신뢰구간을 내기에 시간 수가 부족합니다(기간마다 {min_units}시간 이상 필요).",
    "gap_zero_value": "한 기간의 값이 0이어서 절대 변화량에만 신뢰구간이 있습니다.",
    "gap_baseline_uncertain": "신뢰구간이 목표에 걸쳐 있고, 기준 기간 자체의 불확실성이 커서 실증을 늘려도"
    " 판정할 수 없습니다.",
    "percentile_note": "라인 출력 공정의 사이클을 병합한 히스토그램에서 구한 값으로(값의 ±{accuracy:.1f}% 이내),"
    " 신뢰구간 없이 변화율만 비교합니다.",
    "percentile_note_exact": "라인 출력 공정의 모든 사이클 타임에서 구한 정확한 값으로, 신뢰구간 없이 변화율만"
    " 비교합니다.",
    "section_stations": "공정별 사이클 타임",
    "station": "공정",
    "output_station_mark": "출력",
    "station_mean": "평균",
    "station_p50": "중앙값",
    "station_p95": "95백분위수",
    "stations_note": "각 공정의 사이클 타임은 그 공정의 사이클로만 구하며, 공정끼리 합치지 않습니다. 지표 표의 라인"
    " 사이클 타임은 여기 표시한 출력 공정의 값입니다. *표시 백분위수는 히스토그램에서 구한 값(값의 ±{accuracy:.1f}%"
    " 이내)이고, 나머지는 정확한 값입니다.",
    "warning_no_telemetry": "구간 {window}에서 설비 {device}의 텔레메트리가 한 건도 수신되지 않았습니다(예상"
    " {expected}건).",
    "chart_cycle_times": "라인 출력 공정의 사이클 타임 분포",
    "chart_cycle_times_caption": "라인 출력 공정의 사이클만 포함합니다(공정별 값은 위 표). 구간별로 각 기간 사이클 중"
    " 차지하는 비율입니다. 점선은 기간 평균입니다."
    " 표시 범위를 벗어난 사이클은 첫 구간이나 마지막 구간에 포함했습니다.",
    "chart_daily_oee": "일별 설비종합효율(OEE)",
    "chart_daily_oee_caption": "계획 가동 시간이 있는 날마다, 그날 합산한 시간과 수량으로 구한 OEE입니다."
    " 점선은 기간 전체의 값입니다.",
    "chart_downtime": "상태·사유별 정지 시간(파레토)",
    "chart_downtime_caption": "생산하지 못한 계획 가동 시간을 설비가 보고한 상태와 사유별로, 각 기간 계획 가동"
    " 시간 대비 비율로 큰 순서대로 나타냈습니다.",
    "chart_energy": "양품당 에너지",
    "chart_energy_caption": "산출 설비의 양품 1개당 계량 에너지(일별)입니다. 점선은 기간 전체의 값입니다."
    " 산출이 없는 날은 표시하지 않았으며, 그날의 에너지는 기간 값에 포함됩니다.",
    "axis_cycle_time": "사이클 타임(초)",
    "axis_share_of_cycles": "사이클 비율(%)",
    "axis_day": "날짜",
    "axis_oee": "설비종합효율 OEE(%)",
    "axis_share_of_pbt": "계획 가동 시간 대비(%)",
    "axis_energy": "양품 1개당 kWh",
    "legend_mean": "평균 {value}",
    "legend_phase_value": "{phase}: {value}",
    "no_data": "데이터 없음",
    "cause": "원인",
    "time_class": "시간 구분",
    "hours_lost": "시간",
    "share_of_pbt": "계획 가동 시간 대비",
    "cumulative": "누적",
    "other_causes": "기타 원인({count}개)",
    "no_reason": "사유 없음",
    "reasons": "사유 {count}가지",
    "unknown_state": "상태 미확인(무응답·오프라인)",
    "downtime_total": "생산하지 못한 계획 가동 시간(PBT − APT)",
    "planned_busy_time": "계획 가동 시간",
    "coverage_note": "설비·기간별 현황입니다. 설비가 데이터를 보내지 않은 기간의 지표는 이 표가 보여주는 만큼만"
    " 믿을 수 있습니다.",
    "busy_hours": "계획 가동 시간이 있는 시간 수",
    "telemetry_expected": "예상 텔레메트리 수",
    "telemetry_received": "수신",
    "telemetry_ratio": "수신율",
    "messages_missing": "누락 메시지(seq 기준)",
    "unknown_time": "상태 미확인 시간",
    "not_applicable": "–",
    "footer": "pilot-telemetry · 실증 {slug} · 계획 버전 {version} · {hash}",
    "page": "쪽",
    "warning_no_ideal_time": "제품 {product}의 이상 사이클 타임이 없어 성능효율과 OEE 계산에서 빠졌습니다.",
    "tc_production": "생산(APT)",
    "tc_setup": "준비교체(ASUT)",
    "tc_unplanned_delay": "비계획 정지(ADET)",
    "tc_minor_stop": "순간 정지(ADET)",
    "tc_idle": "대기(ADOT)",
    "tc_planned_downtime": "계획 정지",
    "tc_unknown": "미확인",
    "unit_ratio": "%",
    "unit_s": "초",
    "unit_h": "시간",
    "unit_min": "분",
    "unit_units/h": "개/시간",
    "unit_kWh/unit": "kWh/개",
    "kpi_cycle_time_p50": "사이클 타임 중앙값",
    "kpi_cycle_time_p95": "사이클 타임 95백분위수",
    "method_time_model": "시간 모델(ISO 22400-2). 설비가 보고하는 각 상태는 설비 프로파일(또는 계획의 상태"
    " 재분류)에 따라 시간 구분에 속합니다. 계획 가동 시간(PBT)은 근무 달력의 교대 시간에서 휴식, 계획 정지, 설비가"
    " 보고한 계획 정지를 뺀 시간입니다. 그 안에서 실제 생산 시간(APT), 준비교체(ASUT), 고장·순간 정지에 의한"
    " 지연(ADET), 대기(ADOT), 상태를 알 수 없는 시간으로 나눕니다. 가용률 = APT ÷ PBT, 성능효율 = Σ(이상 사이클"
    " 타임 × 생산 수량) ÷ APT, 품질률 = 양품 ÷ 생산 수량, OEE = 가용률 × 성능효율 × 품질률입니다.",
    "method_rollups": "합산 원칙. 비율을 평균하지 않고 구성요소를 더합니다. 기간이나 하루의 모든 지표는 해당"
    " 설비-시간들의 시간과 수량을 모두 더한 뒤 한 번 계산하며, 그래프의 일별 OEE도 같은 방식입니다. 사이클 타임"
    " 라인의 사이클 타임은 출력 공정(계획의 output_devices)의 값입니다. 협동로봇의 사이클과 AMR의 운반을 합치면"
    " 의미가 없기 때문입니다. 사이클 타임 백분위수는 모든 시간이 사이클 타임을 보관한 경우(시간당 360개까지)"
    " 정확한 값이고, 그렇지 않으면 병합 가능한 로그 히스토그램에서 구하며 값의 ±{accuracy:.1f}% 이내로 정확합니다.",
    "method_units": "시간 단위 분석. 분석 단위는 1시간이며, 각 시간의 구성요소를 대상 설비 전체에 대해 더합니다."
    " 교대 시간 밖의 시간도 포함하므로(그때도 에너지를 쓰고 부품이 완성됩니다) 시간 단위들의 합이 기간 합계와"
    " 정확히 같습니다. 이 실증은 기준 기간 {baseline_hours}시간, 실증 기간 {pilot_hours}시간입니다.",
    "method_hac": "자기상관을 반영한 신뢰구간. 시간 단위 값은 서로 독립이 아니어서 일반 t-검정은 확신을 과장합니다."
    " 각 지표를 델타 방법으로 선형화하고, 평균의 분산을 Newey-West(HAC, Bartlett 커널) 추정량으로 구합니다."
    " 대역폭은 ⌈{fraction:g}·n⌉시간입니다(기준 {baseline_bandwidth}, 실증 {pilot_bandwidth}). 임계값은 Kiefer와"
    " Vogelsang(2005)의 fixed-b 임계값으로, b = {b:.3f}에서 양측 {level} 임계값은 {critical:.3f}입니다(정규분포"
    " 구간이라면 {normal:.3f}).",
    "method_change": "변화율. 상대 변화율(실증 ÷ 기준 − 1)의 신뢰구간은 로그 척도에서 log(실증 ÷ 기준) ±"
    " c·√((se_b ÷ b)² + (se_p ÷ p)²)로 구하므로 대칭이 아니며, 두 기간은 서로 독립으로 봅니다. 어느 기간이든"
    " {min_units}시간 미만이면 신뢰구간을 내지 않습니다. 최소 검출 변화량은 검정력 {power:.0f}%로 이 데이터가"
    " 검출할 수 있는 상대 변화율입니다.",
    "method_decision": "판정 규칙. \u201cT% 감소\u201d 목표는 상대 변화율의 신뢰구간 전체가 −T 이하이면(상한 ≤ −T)"
    " 달성, 전체가 −T보다 위이면(하한 > −T) 미달성, 그 밖의 경우나 신뢰구간이 없으면 판단 유보입니다. 증가"
    " 목표는 반대로, 하한 ≥ +T이면 달성, 상한 < +T이면 미달성입니다. 판단 유보일 때는 변동성이 같고 현재"
    " 추정이 유지된다는 가정에서 신뢰구간이 목표를 벗어나려면 실증을 몇 배 더 길게 해야 하는지 함께 제시합니다.",
    "method_downtime": "정지 시간과 수집 현황. 파레토는 생산하지 못한 계획 가동 시간(준비교체, 지연, 대기, 상태"
    " 미확인)을 설비가 보고한 상태와 사유별로 지표와 똑같은 방식으로 나누므로, 행의 합이 PBT − APT와 같습니다."
    " 사유는 설비가 보낸 그대로 표시합니다. 수집 현황은 계획 가동 시간이 있는 시간 동안 에이전트 주기로 예상되는"
    " 텔레메트리 수 대비 수신 수, seq 공백으로 본 누락 메시지, 상태를 알 수 없는 계획 가동 시간(가용률을"
    " 낮춥니다)을 보여줍니다.",
}

EN |= DESIGN_EN
KO |= DESIGN_KO
TEXT: dict[Language, dict[str, str]] = {Language.EN: EN, Language.KO: KO}
METHOD_NOTES = (
    "method_time_model",
    "method_rollups",
    "method_units",
    "method_hac",
    "method_change",
    "method_decision",
    "method_downtime",
)
_NO_IDEAL_TIME = re.compile(r"^no ideal cycle time for product '(?P<product>.*)'$")
_NO_TELEMETRY = re.compile(
    r"^device '(?P<device>.*)' sent no telemetry in window '(?P<window>.*)' \((?P<expected>[\d,]+) samples expected"
)


class Words:
    """The report's words and number formats in one language."""

    def __init__(self, language: Language) -> None:
        self.language = language
        self.text = TEXT[language]

    def __getitem__(self, key: str) -> str:
        return self.text[key]

    def format(self, key: str, **values: object) -> str:
        return self.text[key].format(**values)

    def phase(self, phase: Phase, *, short: bool = False) -> str:
        return self.text[f"{phase.value}_short" if short else phase.value]

    def kpi_title(self, kpi: str) -> str:
        definition = KPIS.get(kpi)
        if definition is None:
            return self.text[f"kpi_{kpi}"]
        return definition.title_ko if self.language is Language.KO else definition.title

    def unit(self, unit: str) -> str:
        return self.text[f"unit_{unit}"]

    def value(self, value: float | None, unit: str) -> str:
        """A KPI value with its unit: ratios as percentages."""
        if value is None:
            return self.text["not_applicable"]
        if unit == "ratio":
            return f"{value:.2%}"
        return f"{number(value)} {self.unit(unit)}"

    def change(self, change: float | None) -> str:
        return self.text["not_applicable"] if change is None else signed_percent(change)

    def interval(self, interval: tuple[float, float] | None) -> str:
        if interval is None:
            return self.text["not_applicable"]
        return f"{signed_percent(interval[0])} … {signed_percent(interval[1])}"

    def level(self, level: float) -> str:
        return f"{level:.0%}"

    def verdict(self, verdict: Verdict) -> str:
        return self.text[f"verdict_{verdict.value.replace(' ', '_')}"]

    def target(self, better: str, change_pct: float | None) -> str:
        """A target as the signed change it asks for: −8% for a KPI better lower, +5% for one better higher."""
        if change_pct is None:
            return ""
        return f"{'−' if better == 'lower' else '+'}{change_pct:g}%"

    def explanation(self, row: KpiRow, method: Method) -> str:
        """Why the verdict is what it is, or why the row has no interval."""
        if row.no_value is not None:  # no value in a phase: say which input is missing
            return self.format("gap_no_value_because", reason=self.text[f"why_{row.no_value.name.lower()}"])
        if row.gap is not None:
            return self.format(f"gap_{row.gap.value}", min_units=method.min_units)
        if row.verdict is not None and row.method != "before_after":
            return self.format("explain_by_method", method=self.text[f"method_{row.method}"])
        if row.kpi.startswith("cycle_time_p"):
            if method.quantiles_exact:
                return self.text["percentile_note_exact"]
            return self.format("percentile_note", accuracy=method.histogram_accuracy * 100)
        if row.verdict is Verdict.MET:
            return self.text["explain_met"]
        if row.verdict is Verdict.NOT_MET:
            return self.text["explain_not_met"]
        if row.verdict is Verdict.INCONCLUSIVE and row.pilot_length_factor is not None and row.leaning is not None:
            leaning = self.verdict(row.leaning)
            return self.format("explain_inconclusive_factor", factor=row.pilot_length_factor, leaning=leaning)
        return ""

    def time_class(self, time_class: TimeClass | None) -> str:
        return self.text[f"tc_{time_class.value}" if time_class else "tc_unknown"]

    def cause(self, row: DowntimeRow) -> str:
        if row.cause is None:
            return self.format("other_causes", count=row.causes)
        if row.cause.state is None:
            return self.text["unknown_state"]
        if row.causes > 1:
            return f"{row.cause.state} · {self.format('reasons', count=row.causes)}"
        return f"{row.cause.state} · {row.cause.reason or self.text['no_reason']}"

    def warning(self, warning: str) -> str:
        match = _NO_IDEAL_TIME.match(warning)
        if match:
            return self.format("warning_no_ideal_time", product=match["product"])
        match = _NO_TELEMETRY.match(warning)
        if match:
            return self.format("warning_no_telemetry", **match.groupdict())
        match = STATED_MDE.match(warning)
        if match:
            return self.format("warning_stated_mde", **match.groupdict())
        return warning

    def design_gap(self, note: str) -> str:
        """Why a target has no design, in this language (the engine's note as it is where no key fits)."""
        for pattern, key in DESIGN_GAPS:
            match = pattern.match(note)
            if match:
                return self.format(key, **match.groupdict())
        return note

    def moment(self, moment: dt.datetime, zone: dt.tzinfo) -> str:
        return moment.astimezone(zone).strftime("%Y-%m-%d %H:%M")

    def days(self, hours: float | None) -> str:
        """Window hours as days, or that no length would do."""
        return self.text["design_unreachable"] if hours is None else f"{number(hours / 24)}"

    def hours(self, seconds: float) -> str:
        return f"{number(seconds / 3600)} {self.unit('h')}"

    def method_notes(self, method: Method) -> list[str]:
        values = {
            "accuracy": method.histogram_accuracy * 100,
            "baseline_hours": f"{method.hours[Phase.BASELINE]:,}",
            "pilot_hours": f"{method.hours[Phase.PILOT]:,}",
            "fraction": method.bandwidth_fraction,
            "baseline_bandwidth": method.bandwidth[Phase.BASELINE],
            "pilot_bandwidth": method.bandwidth[Phase.PILOT],
            "b": method.fixed_b,
            "level": self.level(method.level),
            "critical": method.critical_value,
            "normal": method.normal_critical_value,
            "min_units": method.min_units,
            "power": method.power * 100,
        }
        return [self.format(key, **values) for key in METHOD_NOTES]


def number(value: float) -> str:
    """Digits enough to read, never an exponent."""
    magnitude = abs(value)
    if magnitude == 0:
        return "0"
    if magnitude >= 1000:
        return f"{value:,.0f}"
    if magnitude >= 100:
        return f"{value:.1f}"
    if magnitude >= 1:
        return f"{value:.2f}"
    return f"{value:.3f}"


def signed_percent(value: float, digits: int = 1) -> str:
    """+3.2% or −3.2%, with a true minus sign."""
    return f"{value:+.{digits}%}".replace("-", "−")
